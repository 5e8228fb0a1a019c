//! The checks behind ephemera's fuzz targets, as plain functions. Each takes
//! any bytes and either returns or panics on a finding: a panic in a parser
//! or a decision, or a differential check that fails. cargo-fuzz (`fuzz/`,
//! `tests/fuzz.sh`) runs them on generated inputs; `tests/corpora.rs` runs
//! them on every committed corpus and crash input in the test suite.

mod admission;
mod configs;
mod fixtures;
mod json;
mod tokens;
mod wimse;

pub use admission::admission_review;
pub use configs::{
    bundle_parse, filter_config, path_template, secret_uri, shim_bodies, shim_configs,
};
pub use json::strict_json;
pub use tokens::{token_signed, token_verify};
pub use wimse::wimse_tokens;

/// A check: any bytes in, a panic on a finding.
pub type Check = fn(&[u8]);

/// Every check, by the name of its fuzz target and corpus folder.
pub const TARGETS: &[(&str, Check)] = &[
    ("admission_review", admission_review),
    ("bundle_parse", bundle_parse),
    ("filter_config", filter_config),
    ("path_template", path_template),
    ("secret_uri", secret_uri),
    ("shim_bodies", shim_bodies),
    ("shim_configs", shim_configs),
    ("strict_json", strict_json),
    ("token_signed", token_signed),
    ("token_verify", token_verify),
    ("wimse_tokens", wimse_tokens),
];
