//! ephemera's Envoy filter: a thin proxy-wasm adapter over `ephemera-core`.
//!
//! Each stream feeds its events to the core's exchange and carries out the
//! steps it returns; the root context fetches the identity from the host
//! shim over an Envoy cluster (each worker its own copy, never through
//! shared data), resumes streams that waited for it, and sends the closes
//! of ended streams. WIMSE proof `jti`s are the one thing in shared data
//! (hashed), so every worker refuses a replay.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![expect(
    missing_docs,
    reason = "proxy_wasm::main! generates the undocumented _initialize export"
)]

mod host;
mod native_crypto;
mod protobuf;
mod replay;
mod root;
mod stats;
mod stream;
mod worker;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    std::panic::set_hook(Box::new(|info| {
        let _ = proxy_wasm::hostcalls::log(
            proxy_wasm::types::LogLevel::Critical,
            &format!("ephemera: panic: {info}"),
        );
    }));
    proxy_wasm::set_root_context(|context_id| Box::new(root::Root::new(context_id)));
}}
