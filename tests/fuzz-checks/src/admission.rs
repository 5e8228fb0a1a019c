//! The injection webhook and `ephemera inject`.

use base64::Engine as _;
use ephemera_shim::mesh::{Mesh, Options, Transactions, inject, webhook};

fn options(mesh: Mesh, transactions: bool) -> Options {
    Options {
        mesh,
        shim_image: "registry.example/ephemera:1".into(),
        envoy_image: "envoyproxy/envoy:v1.40.0".into(),
        plugin_image: "registry.example/ephemera-filter:1".into(),
        inbound_port: 15006,
        rewrite_services: true,
        transactions: transactions.then(|| Transactions {
            config_map: "ipt".into(),
            key_secret: "ledger-key".into(),
            ledger_claim: "ledger".into(),
        }),
    }
}

/// A selector byte (mesh or not, transactions or not), then any bytes as
/// an AdmissionReview and as a manifest: an answer or a refusal, never a
/// panic; an answer's patch is base64 JSON.
pub fn admission_review(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let mesh = if selector & 1 == 0 {
        Mesh::Istio
    } else {
        Mesh::None
    };
    let options = options(mesh, selector & 2 != 0);
    if let Ok(answer) = webhook::review(body, &options)
        && let Some(patch) = answer["response"]["patch"].as_str()
    {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(patch)
            .expect("the patch is base64");
        serde_json::from_slice::<serde_json::Value>(&bytes).expect("the patch is JSON");
    }
    if let Ok(text) = std::str::from_utf8(body) {
        let _ = inject(text, &options);
    }
}
