//! The gate's state in Redis, shared by every replica of a workload. Each
//! read is decided by one Lua script — check and spend in one atomic step,
//! no read-modify-write races — under the rules of the in-memory gate.
//!
//! - Redis unreachable: a read that needs the state (a presented `jti`, a
//!   grant) is not decided (503); one that needs none is decided by policy
//!   alone; it recovers by itself when Redis returns.
//! - Redis that forgot (restarted without persistence, or a failover to a
//!   replica without the epoch key): every shim writes and checks an epoch
//!   key; a shim that finds it gone or changed sets a quarantine key, and
//!   while it lives — the replay window plus the longest grant lifetime —
//!   every shim refuses the reads that need the state.
//! - Redis that went back in time (a failover to a lagging replica, a
//!   restore of an older copy): every decision increments a counter and
//!   each shim remembers the highest value it was given; a counter below it
//!   means writes this shim saw were lost, and is handled as a loss.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use ephemera_core::secrets::grants::{EnforcementOptions, GrantError, GrantKey, SenderBinding};
use ephemera_core::secrets::{
    GateRequest, Keys, Plan, RedisState, ResolveError, SecretsConfig, Verdict, judge,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands as _, IntoConnectionInfo as _, Script};
use sha2::{Digest, Sha256};

/// Decides one read; answers the outcome and the decision counter. KEYS:
/// epoch, quarantine, refusal denial, jti, grant, grant denial, counter.
/// ARGV: our epoch, verdict (refused | plain | grant), jti presented (1/0),
/// replay window ms, refusal denial ms, grant lifetime ms, grant uses,
/// sender (a new grant is bound to it; a standing one compared), grant
/// denial ms, the highest counter this shim was given.
const DECIDE: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'epoch', 0} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {'quarantine', 0} end
local n = redis.call('INCR', KEYS[7])
if n <= tonumber(ARGV[10]) then return {'behind', n} end
if redis.call('EXISTS', KEYS[3]) == 1 then return {'negative', n} end
local jti = ARGV[3] == '1'
if jti and redis.call('EXISTS', KEYS[4]) == 1 then return {'replay', n} end
if ARGV[2] == 'refused' then
  redis.call('SET', KEYS[3], '1', 'PX', ARGV[5])
  return {'refused', n}
end
if ARGV[2] == 'grant' then
  if redis.call('EXISTS', KEYS[5]) == 0 then
    redis.call('HSET', KEYS[5], 'uses', ARGV[7], 'binding', ARGV[8])
    redis.call('PEXPIRE', KEYS[5], ARGV[6])
    redis.call('DEL', KEYS[6])
  end
  if redis.call('EXISTS', KEYS[6]) == 1 then return {'negative', n} end
  local binding = redis.call('HGET', KEYS[5], 'binding')
  if binding ~= '' and binding ~= ARGV[8] then return {'drift', n} end
  if tonumber(redis.call('HGET', KEYS[5], 'uses')) <= 0 then
    redis.call('SET', KEYS[6], '1', 'PX', ARGV[9])
    return {'exhausted', n}
  end
  redis.call('HINCRBY', KEYS[5], 'uses', -1)
end
if jti then redis.call('SET', KEYS[4], '1', 'PX', ARGV[4]) end
return {'ok', n}
";

/// Gives back a use and forgets a `jti`. KEYS: grant, jti. ARGV: jti presented.
const REFUND: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HINCRBY', KEYS[1], 'uses', 1) end
if ARGV[1] == '1' then redis.call('DEL', KEYS[2]) end
return 1
";

/// Why the Redis state cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum RedisSetupError {
    /// The URL is not a Redis URL.
    #[error("state.redis.url: {0}")]
    Url(String),
    /// The CA certificates cannot be used.
    #[error("state.redis.ca_file: {0}")]
    Tls(String),
    /// A file named by the configuration cannot be read.
    #[error("state.redis.{field}: {path}: {reason}")]
    File {
        /// The field.
        field: &'static str,
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// Why one exchange with Redis failed.
#[derive(Debug, thiserror::Error)]
enum Unavailable {
    #[error("unreachable: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("no answer within {0} ms")]
    Timeout(u64),
    #[error("no randomness for an epoch")]
    NoRandomness,
    #[error("unreachable at the last attempt; the next one is due shortly")]
    Backoff,
}

/// How long after a failed connection attempt reads fail at once.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// The connection, or when the next attempt to make one is due.
enum Connection {
    Up(ConnectionManager),
    Down { retry_at: Option<Instant> },
}

/// The gate's state in Redis.
pub struct RedisGate {
    client: redis::Client,
    connection: tokio::sync::Mutex<Connection>,
    prefix: String,
    tenant: String,
    options: EnforcementOptions,
    /// How long reads that need the state are refused after a loss.
    quarantine_ms: u64,
    timeout_ms: u64,
    /// The epoch this shim adopted.
    epoch: Mutex<String>,
    /// The highest decision counter Redis gave this shim.
    seen: AtomicI64,
    decide: Script,
    refund: Script,
}

fn read_file(field: &'static str, path: &str) -> Result<Vec<u8>, RedisSetupError> {
    std::fs::read(path).map_err(|e| RedisSetupError::File {
        field,
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// The PEM file at `path`, which must hold at least one certificate (the
/// client reads it only when it connects).
fn pem_certificates(path: &str) -> Result<Vec<u8>, RedisSetupError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let pem = read_file("ca_file", path)?;
    let certificates: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&pem).collect();
    match certificates {
        Ok(certificates) if !certificates.is_empty() => Ok(pem),
        _ => Err(RedisSetupError::Tls(format!("{path}: no PEM certificate"))),
    }
}

impl RedisGate {
    /// A gate on the Redis `state` names, for `tenant` of `config`. Nothing
    /// is connected yet: the first read connects.
    pub fn new(
        state: &RedisState,
        config: &SecretsConfig,
        tenant: &str,
        options: EnforcementOptions,
    ) -> Result<Self, RedisSetupError> {
        let mut info = state
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| RedisSetupError::Url(e.to_string()))?;
        let mut settings = info.redis_settings().clone();
        if let Some(user) = &state.username {
            settings = settings.set_username(user);
        }
        if let Some(path) = &state.password_file {
            let password = read_file("password_file", path)?;
            let password = String::from_utf8(password).map_err(|_| RedisSetupError::File {
                field: "password_file",
                path: path.clone(),
                reason: "not UTF-8".into(),
            })?;
            settings = settings.set_password(password.trim_end_matches(['\n', '\r']));
        }
        info = info.set_redis_settings(settings);
        let client = match &state.ca_file {
            Some(path) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem_certificates(path)?),
                },
            )
            .map_err(|e| RedisSetupError::Tls(e.to_string()))?,
            None => redis::Client::open(info).map_err(|e| RedisSetupError::Url(e.to_string()))?,
        };
        let longest_grant_ms = config
            .policies
            .values()
            .filter_map(|p| p.grant.as_ref())
            .map(|g| g.ttl_secs.saturating_mul(1000))
            .max()
            .unwrap_or(0);
        Ok(Self {
            client,
            connection: tokio::sync::Mutex::new(Connection::Down { retry_at: None }),
            prefix: state.key_prefix.clone(),
            tenant: tenant.to_owned(),
            options,
            quarantine_ms: options.replay_window_ms.saturating_add(longest_grant_ms),
            timeout_ms: state.timeout_ms,
            epoch: Mutex::new(String::new()),
            seen: AtomicI64::new(0),
            decide: Script::new(DECIDE),
            refund: Script::new(REFUND),
        })
    }

    /// Decides one read under the rules of [`ephemera_core::secrets::Gate`].
    pub async fn decide(
        &self,
        config: &SecretsConfig,
        r: &GateRequest<'_>,
    ) -> Result<Plan, ResolveError> {
        let verdict = judge(config, r)?;
        let needs_state = verdict.needs_state(r.jti);
        let unavailable = |why: String| {
            if needs_state {
                Err(ResolveError::StateUnavailable(why))
            } else {
                // Decided by policy alone: the state would only have cached.
                match verdict.clone() {
                    Verdict::Refused(denied) => Err(denied),
                    Verdict::Plain(plan) | Verdict::Grant { plan, .. } => Ok(plan),
                }
            }
        };
        let mut answer = self.run_decide(config, r, &verdict).await;
        // A connection Redis dropped (a restart) is replaced by the
        // manager: one more try. Should the first have run after all, the
        // second sees its `jti` or spent use: it refuses, never grants more.
        if matches!(&answer, Err(Unavailable::Redis(e)) if e.is_connection_dropped() || e.is_io_error())
        {
            answer = self.run_decide(config, r, &verdict).await;
        }
        let (answer, counter) = match answer {
            Ok(answer) => answer,
            Err(e) => return unavailable(e.to_string()),
        };
        if answer == "behind" {
            // Start over from Redis's count once the loss is recorded.
            self.seen.store(counter, Ordering::Relaxed);
            self.lost("its decision counter went back").await;
            return unavailable(
                "it lost recent writes: reads that need it are refused for a while".into(),
            );
        }
        self.seen.fetch_max(counter, Ordering::Relaxed);
        match answer.as_str() {
            "ok" => match verdict {
                Verdict::Plain(plan) | Verdict::Grant { plan, .. } => Ok(plan),
                Verdict::Refused(denied) => Err(denied),
            },
            "refused" => match verdict {
                Verdict::Refused(denied) => Err(denied),
                _ => unavailable("unexpected answer".into()),
            },
            "negative" => Err(GrantError::NegativelyCached.into()),
            "replay" => Err(GrantError::Replay.into()),
            "drift" => Err(GrantError::BindingDrift.into()),
            "exhausted" => Err(GrantError::Exhausted.into()),
            "epoch" => {
                self.lost("its epoch key is gone or changed").await;
                unavailable("it lost its state: reads that need it are refused for a while".into())
            }
            "quarantine" => unavailable(
                "it lost its state recently: reads that need it are refused for a while".into(),
            ),
            other => unavailable(format!("unexpected answer {other:?}")),
        }
    }

    /// Gives back the use a decided read spent and forgets its `jti`.
    pub async fn refund(&self, config: &SecretsConfig, r: &GateRequest<'_>) {
        let keys = Keys::of(&self.tenant, config, r);
        let result = async {
            let mut connection = self.connection().await?;
            let mut call = self.refund.prepare_invoke();
            call.key(self.key("grant", &key_bytes(&keys.grant)))
                .key(self.key("jti", r.jti.unwrap_or_default().as_bytes()))
                .arg(if r.jti.is_some() { "1" } else { "0" });
            self.bounded(call.invoke_async::<i64>(&mut connection))
                .await
        }
        .await;
        if let Err(e) = result {
            tracing::warn!("secrets state: a refund was not recorded: {e}");
        }
    }

    async fn run_decide(
        &self,
        config: &SecretsConfig,
        r: &GateRequest<'_>,
        verdict: &Verdict,
    ) -> Result<(String, i64), Unavailable> {
        let mut connection = self.connection().await?;
        let keys = Keys::of(&self.tenant, config, r);
        let (mode, ttl_ms, max_uses) = match verdict {
            Verdict::Refused(_) => ("refused", 0, 0),
            Verdict::Plain(_) => ("plain", 0, 0),
            Verdict::Grant {
                ttl_ms, max_uses, ..
            } => ("grant", *ttl_ms, (*max_uses).max(1)),
        };
        let epoch = self.epoch.lock().map(|e| e.clone()).unwrap_or_default();
        let mut call = self.decide.prepare_invoke();
        call.key(format!("{}epoch", self.prefix))
            .key(format!("{}quarantine", self.prefix))
            .key(self.key("deny", &key_bytes(&keys.refusal)))
            .key(self.key("jti", r.jti.unwrap_or_default().as_bytes()))
            .key(self.key("grant", &key_bytes(&keys.grant)))
            .key(self.key("deny", &key_bytes(&keys.grant)))
            .key(format!("{}decisions", self.prefix))
            .arg(epoch)
            .arg(mode)
            .arg(if r.jti.is_some() { "1" } else { "0" })
            .arg(self.options.replay_window_ms)
            .arg(self.options.denial_ms(&keys.refusal))
            .arg(ttl_ms.max(1))
            .arg(max_uses)
            .arg(binding(r.sender))
            .arg(self.options.denial_ms(&keys.grant))
            .arg(self.seen.load(Ordering::Relaxed));
        self.bounded(call.invoke_async::<(String, i64)>(&mut connection))
            .await
    }

    /// Redis lost its state (`why`): quarantine every shim for the replay
    /// window plus the longest grant lifetime, and adopt the epoch now in
    /// force.
    async fn lost(&self, why: &str) {
        tracing::error!(
            "secrets state: Redis lost its state ({why}); reads that need replay or grant \
             state are refused for {} ms",
            self.quarantine_ms
        );
        let result = async {
            let mut connection = self.connection().await?;
            let quarantine: redis::Cmd = redis::cmd("SET")
                .arg(format!("{}quarantine", self.prefix))
                .arg("1")
                .arg("PX")
                .arg(self.quarantine_ms.max(1))
                .arg("NX")
                .to_owned();
            self.bounded(quarantine.query_async::<Option<String>>(&mut connection))
                .await?;
            self.adopt_epoch(&mut connection).await
        }
        .await;
        if let Err(e) = result {
            tracing::warn!("secrets state: cannot record the loss yet: {e}");
        }
    }

    /// Writes an epoch if there is none and adopts the one in force.
    async fn adopt_epoch(&self, connection: &mut ConnectionManager) -> Result<(), Unavailable> {
        let key = format!("{}epoch", self.prefix);
        let mut fresh = [0u8; 16];
        getrandom::fill(&mut fresh).map_err(|_| Unavailable::NoRandomness)?;
        let set: redis::Cmd = redis::cmd("SET")
            .arg(&key)
            .arg(hex::encode(fresh))
            .arg("NX")
            .to_owned();
        self.bounded(set.query_async::<Option<String>>(connection))
            .await?;
        let epoch: Option<String> = self.bounded(connection.get(&key)).await?;
        if let Ok(mut adopted) = self.epoch.lock() {
            let epoch = epoch.unwrap_or_default();
            if *adopted != epoch {
                // A new epoch starts a new count of decisions.
                self.seen.store(0, Ordering::Relaxed);
            }
            *adopted = epoch;
        }
        Ok(())
    }

    /// The connection, connecting (and adopting the epoch) the first time.
    /// Once up, the connection manager reconnects by itself; until then a
    /// failed attempt makes reads fail at once for [`RETRY_AFTER`].
    async fn connection(&self) -> Result<ConnectionManager, Unavailable> {
        let mut slot = self.connection.lock().await;
        match &*slot {
            Connection::Up(connection) => return Ok(connection.clone()),
            Connection::Down { retry_at: Some(at) } if Instant::now() < *at => {
                return Err(Unavailable::Backoff);
            }
            Connection::Down { .. } => {}
        }
        let timeout = Duration::from_millis(self.timeout_ms);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let attempt = async {
            let mut connection = self
                .bounded(ConnectionManager::new_with_config(
                    self.client.clone(),
                    config,
                ))
                .await?;
            self.adopt_epoch(&mut connection).await?;
            Ok(connection)
        };
        match attempt.await {
            Ok(connection) => {
                *slot = Connection::Up(connection.clone());
                Ok(connection)
            }
            Err(e) => {
                *slot = Connection::Down {
                    retry_at: Some(Instant::now() + RETRY_AFTER),
                };
                Err(e)
            }
        }
    }

    async fn bounded<T>(
        &self,
        future: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, Unavailable> {
        match tokio::time::timeout(Duration::from_millis(self.timeout_ms), future).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(Unavailable::Timeout(self.timeout_ms)),
        }
    }

    /// `<prefix><kind>:<hex SHA-256 of the parts>`: bounded keys that name
    /// no caller, secret or token.
    fn key(&self, kind: &str, parts: &[u8]) -> String {
        let mut hash = Sha256::new();
        hash.update((self.tenant.len() as u64).to_le_bytes());
        hash.update(self.tenant.as_bytes());
        hash.update(parts);
        format!("{}{kind}:{}", self.prefix, hex::encode(hash.finalize()))
    }
}

/// A grant key as unambiguous bytes (each part length-prefixed).
fn key_bytes(key: &GrantKey) -> Vec<u8> {
    let mut out = Vec::new();
    for part in [
        key.subject.as_str(),
        key.tenant.as_str(),
        key.secret.as_str(),
        key.purpose.as_str(),
    ] {
        out.extend_from_slice(&(part.len() as u64).to_le_bytes());
        out.extend_from_slice(part.as_bytes());
    }
    out
}

/// A sender binding as the script compares it ("" for none).
fn binding(sender: Option<&SenderBinding>) -> String {
    match sender {
        None => String::new(),
        Some(SenderBinding::JwkThumbprint(t)) => format!("jkt:{t}"),
        Some(SenderBinding::MtlsThumbprint(t)) => format!("mtls:{t}"),
    }
}
