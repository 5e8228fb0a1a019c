//! Into a service mesh: the Kubernetes objects that add ephemera to a
//! workload's proxy (render), and the pods that carry the shim (inject).

pub mod inject;
pub mod render;
pub mod webhook;

pub use inject::{InjectError, Options, Transactions, inject};
pub use render::{Image, Mesh, RenderError, WebhookTarget, Workload, render};
