//! Secret resolution by name: refs → stores → policies, with the caller's
//! principal derived from its verified SPIFFE ID, and every authorization
//! decision taken before any backend is touched.

pub mod audience;
pub mod config;
pub mod gate;
pub mod grants;
pub mod presenter;
pub mod resolve;
pub mod uri;
pub mod wire;

pub use audience::secrets_audience;
pub use config::{
    CheckpointConfig, ConfigProblem, GrantPolicy, RedisState, SecretsConfig, StateConfig,
};
pub use gate::{Gate, GateRequest, Keys, Verdict, judge};
pub use presenter::{Presented, Presenter, PresenterError, present};
pub use resolve::{Location, Plan, ResolveError};
