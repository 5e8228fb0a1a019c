//! Runs the filter without Envoy: a proxy-wasm host on wasmtime that loads
//! the release `ephemera_envoy.wasm`, a scripted shim, and scenario tables.

pub mod abi;
pub mod proxy_wasm;
pub mod scenario;
pub mod world;
