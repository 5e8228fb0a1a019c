//! Into a service mesh: the Kubernetes objects that add ephemera to a
//! workload's proxy.

pub mod render;

pub use render::{Image, Mesh, RenderError, Workload, render};
