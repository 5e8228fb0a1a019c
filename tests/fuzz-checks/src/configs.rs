//! Configurations, bundles, templates, secret URIs and API bodies: parsed
//! or refused, never a panic; what ephemera writes, it reads back.

use std::path::Path;

use ephemera_core::filter::{Filter, FilterConfig, WorkloadIdentity};
use ephemera_core::ipt::{CloseRequest, OpenRequest, PathTemplate};
use ephemera_core::secrets::SecretsConfig;
use ephemera_core::secrets::uri::SecretUri;
use ephemera_core::secrets::wire::ResolveRequest;
use ephemera_core::wimse::WitIssuers;
use ephemera_core::{Bundle, BundleDocument, RustCrypto};
use ephemera_shim::sidecar::config::SidecarConfig;
use ephemera_shim::transactions::config::IptConfig;

/// Any bytes as a spiffile bundle, a standard SPIFFE bundle, a WIT issuers
/// document or an identity document; a bundle document written back parses.
pub fn bundle_parse(data: &[u8]) {
    if let Ok(bundle) = Bundle::parse_spiffile(data) {
        let _ = bundle.warnings();
        let _ = bundle.refresh_hint();
    }
    let _ = Bundle::parse_central_issuer(data, "example.org");
    if let Ok(doc) = BundleDocument::parse(data) {
        let written = doc.to_json();
        assert!(
            BundleDocument::parse(written.as_bytes()).is_ok(),
            "{written}"
        );
    }
    let _ = WitIssuers::parse(data);
    let _ = WorkloadIdentity::from_json(data);
}

/// Any bytes as the filter's plugin configuration; a parsed one builds a
/// filter.
pub fn filter_config(data: &[u8]) {
    if let Ok(config) = FilterConfig::parse(data) {
        let _ = Filter::new(config, &RustCrypto);
    }
}

/// Any text as the sidecar, IPT or secrets configuration.
pub fn shim_configs(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = SidecarConfig::parse(text, "fuzz.yaml") {
        let _ = (config.inbound_plugin(), config.outbound_plugin());
    }
    let _ = IptConfig::parse(text, Path::new("fuzz.yaml"));
    if let Ok(config) = serde_yaml_ng::from_str::<SecretsConfig>(text) {
        let _ = config.problems();
    }
}

/// `template\npath`: a template parses or is refused, matching answers,
/// and captured values are checked, never a panic.
pub fn path_template(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (template, path) = text.split_once('\n').unwrap_or((text, "/"));
    let Ok(template) = PathTemplate::parse(template) else {
        return;
    };
    for fold in [false, true] {
        if let Some(Ok(values)) = template.captures_folding(path, fold) {
            for value in values.values() {
                let _ = ephemera_core::ipt::template::check_value(value);
            }
        }
    }
}

/// Any text as a secret URI; the canonical form of a parsed URI is a fixed
/// point: parse(canonical(x)) = canonical(x).
pub fn secret_uri(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(uri) = SecretUri::parse(text, None) else {
        return;
    };
    let canonical = uri.to_string();
    let again = SecretUri::parse(&canonical, None)
        .unwrap_or_else(|e| panic!("canonical form {canonical:?} of {text:?} refused: {e}"));
    assert_eq!(
        again.to_string(),
        canonical,
        "canonical form of {text:?} moves"
    );
}

/// Any bytes as a body of the shim's API: transaction open and close,
/// secret resolve.
pub fn shim_bodies(data: &[u8]) {
    let _ = serde_json::from_slice::<OpenRequest>(data);
    let _ = serde_json::from_slice::<CloseRequest>(data);
    let _ = serde_json::from_slice::<ResolveRequest>(data);
}
