//! The secrets a workload may resolve: every read passes the gate
//! (negative cache, `jti` anti-replay, policy, grant) before any backend is
//! read, and is audited before it is released.

use std::sync::Arc;

use ephemera_core::SpiffeId;
use ephemera_core::secrets::grants::EnforcementOptions;
use ephemera_core::secrets::{GateRequest, Plan, ResolveError, SecretsConfig};

use super::audit::{Audit, AuditError};
use super::cache::ValueCache;
use super::state::{GateState, RedisSetupError};
use super::store;
use crate::identity::IdentitySource;
use crate::sensitive::Sensitive;

/// Plans, reads and audits one resolution (the operator's path: policy
/// only, no grants, no cache).
pub async fn resolve_audited(
    config: &SecretsConfig,
    audit: Option<&Audit>,
    name: &str,
    caller: &SpiffeId,
) -> Result<(Sensitive, Plan), ResolveError> {
    release(config, audit, None, config.plan(name, caller), name, caller).await
}

/// Reads what a decision allows (from `cache` when the ref permits it) and
/// audits the outcome; a read that cannot be audited is not released.
async fn release(
    config: &SecretsConfig,
    audit: Option<&Audit>,
    cache: Option<&ValueCache>,
    decision: Result<Plan, ResolveError>,
    name: &str,
    caller: &SpiffeId,
) -> Result<(Sensitive, Plan), ResolveError> {
    let result = match decision {
        Ok(plan) => read(cache, &plan).await.map(|v| (v, plan)),
        Err(e) => Err(e),
    };
    if let Some(audit) = audit {
        let outcome = result.as_ref().map(drop);
        audit.record(config, name, caller, outcome).await?;
    }
    result
}

async fn read(cache: Option<&ValueCache>, plan: &Plan) -> Result<Sensitive, ResolveError> {
    let ttl = plan.cache_ttl_secs.filter(|t| *t > 0);
    let (Some(cache), Some(ttl)) = (cache, ttl) else {
        return store::read(&plan.location).await;
    };
    if let Some(value) = cache.get(&plan.reference) {
        return Ok(value);
    }
    let value = store::read(&plan.location).await?;
    cache.put(&plan.reference, &value, ttl);
    Ok(value)
}

/// Why the secrets service cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceSetupError {
    /// The audit ledger cannot be opened.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The shared state is misconfigured.
    #[error(transparent)]
    State(#[from] RedisSetupError),
}

/// The secrets a workload may resolve for itself.
pub struct SecretsService {
    config: SecretsConfig,
    audit: Option<Audit>,
    identity: Arc<IdentitySource>,
    state: GateState,
    options: EnforcementOptions,
    cache: ValueCache,
}

impl SecretsService {
    /// A service over a validated configuration.
    pub fn new(
        config: SecretsConfig,
        identity: Arc<IdentitySource>,
        unkeyed_ledger: bool,
    ) -> Result<Self, ServiceSetupError> {
        let audit = Audit::open(&config, unkeyed_ledger)?;
        let tenant = config
            .audit
            .as_ref()
            .map_or("default", |a| a.tenant.as_str());
        let options = EnforcementOptions::default();
        let state = GateState::for_config(&config, tenant, options)?;
        Ok(Self {
            config,
            audit,
            identity,
            state,
            options,
            cache: ValueCache::default(),
        })
    }

    /// The workload's identity source.
    pub fn identity(&self) -> &IdentitySource {
        &self.identity
    }

    /// How long a presented `jti` is remembered, milliseconds.
    pub fn replay_window_ms(&self) -> u64 {
        self.options.replay_window_ms
    }

    /// Decides, reads and audits one request. A read that failed in the
    /// store spent nothing: its use and `jti` are refunded. A read that
    /// could not be audited stays spent (`AuditUnavailable`), so a failing
    /// audit cannot let one token read again and again.
    pub async fn resolve(&self, read: &GateRequest<'_>) -> Result<(Sensitive, Plan), ResolveError> {
        let decision = self.state.decide(&self.config, read).await;
        let admitted = decision.is_ok();
        let result = release(
            &self.config,
            self.audit.as_ref(),
            Some(&self.cache),
            decision,
            read.name,
            read.caller,
        )
        .await;
        if admitted && matches!(result, Err(ResolveError::StoreUnavailable(_))) {
            self.state.refund(&self.config, read).await;
        }
        result
    }

    /// Checkpoints the audit ledger's head now (at shutdown).
    pub async fn flush_audit(&self) {
        if let Some(audit) = &self.audit {
            audit.flush().await;
        }
    }
}
