//! Where the gate's state lives: grant uses, seen `jti`s and remembered
//! denials. In this shim's memory by default; in Redis when replicas must
//! share it (`state: { redis: … }`), with the same rules.

mod redis;

use std::sync::Mutex;

use ephemera_core::secrets::grants::EnforcementOptions;
use ephemera_core::secrets::{Gate, GateRequest, Plan, ResolveError, SecretsConfig};

pub use self::redis::{RedisGate, RedisSetupError};

/// The enforcement state of one tenant.
pub enum GateState {
    /// This shim's memory.
    Local(Mutex<Gate>),
    /// Redis, shared by every replica.
    Redis(Box<RedisGate>),
}

impl GateState {
    /// The state `config` asks for.
    pub fn for_config(
        config: &SecretsConfig,
        tenant: &str,
        options: EnforcementOptions,
    ) -> Result<Self, RedisSetupError> {
        Ok(match &config.state {
            None => Self::Local(Mutex::new(Gate::new(tenant, options))),
            Some(state) => Self::Redis(Box::new(RedisGate::new(
                &state.redis,
                config,
                tenant,
                options,
            )?)),
        })
    }

    /// Decides one read (see [`Gate::decide`]).
    pub async fn decide(
        &self,
        config: &SecretsConfig,
        read: &GateRequest<'_>,
    ) -> Result<Plan, ResolveError> {
        match self {
            Self::Local(gate) => lock(gate).decide(config, read),
            Self::Redis(gate) => gate.decide(config, read).await,
        }
    }

    /// Gives back what a decided read spent (see [`Gate::refund`]).
    pub async fn refund(&self, config: &SecretsConfig, read: &GateRequest<'_>) {
        match self {
            Self::Local(gate) => lock(gate).refund(config, read),
            Self::Redis(gate) => gate.refund(config, read).await,
        }
    }
}

fn lock(gate: &Mutex<Gate>) -> std::sync::MutexGuard<'_, Gate> {
    gate.lock().unwrap_or_else(|p| p.into_inner())
}
