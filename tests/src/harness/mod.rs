//! Runs the filter without Envoy: a proxy-wasm host on wasmtime that loads
//! the release `ephemera_envoy.wasm`, a component host that runs
//! `ephemera_component.wasm`, a scripted shim, and scenario tables that
//! both builds must pass.

pub mod abi;
pub mod component;
pub mod foreign;
pub mod proxy_wasm;
pub mod proxy_wasm_driver;
pub mod scenario;
pub mod world;
