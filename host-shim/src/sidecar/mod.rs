//! Running a workload's sidecar: the sidecar configuration, the Envoy
//! bootstrap rendered from `envoy/sidecar.yaml`, and the process supervision.

pub mod bootstrap;
pub mod config;
pub mod http_probe;
