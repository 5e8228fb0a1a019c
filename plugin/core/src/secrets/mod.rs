//! Secret resolution by name: refs → stores → policies, with the caller's
//! principal derived from its verified SPIFFE ID, and every authorization
//! decision taken before any backend is touched.

pub mod config;
pub mod resolve;

pub use config::{ConfigProblem, SecretsConfig};
pub use resolve::{Location, Plan, ResolveError};
