//! The component host: runs `ephemera_component.wasm` (the `ephemera:filter`
//! world) on wasmtime, with the world's identity, broker, ledger and
//! secrets behind the imports. Host calls are synchronous: a late answer
//! moves the clock, a missing one costs the shim timeout.

use std::sync::Arc;

use ephemera_core::filter::WorkloadIdentity;
use ephemera_core::ipt::wire::OpenRequest;
use ephemera_core::token::{TokenVerifier, VerifyOptions};
use ephemera_core::{InvalidToken, RustCrypto, SpiffeId, VerifyError};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::abi::Headers;
use super::scenario::{Driver, Verdict};
use super::world::{Mode, World};

/// Host bindings generated from `wit/filter.wit`.
#[allow(missing_docs)]
mod bindings {
    wasmtime::component::bindgen!({ world: "filter", path: "../wit" });
}

use bindings::Filter;
use bindings::ephemera::filter::{broker, identity, ledger, secrets};
use bindings::exports::ephemera::filter::http_filter::{Request, Verdict as WitVerdict};

/// A compiled component, shared by every instance.
#[derive(Clone)]
pub struct ComponentPlugin {
    engine: Engine,
    component: Component,
}

impl ComponentPlugin {
    /// Compiles the component at `path`.
    pub fn load(path: &std::path::Path) -> wasmtime::Result<Self> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        let engine = Engine::new(&config)?;
        let component = Component::from_file(&engine, path)?;
        Ok(Self { engine, component })
    }
}

/// The host side of one instance.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    world: World,
    now_ms: u64,
    timeout_ms: u64,
    identity: Option<Arc<WorkloadIdentity>>,
    calls: Vec<String>,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl HostState {
    /// Whether the shim endpoint at `path` answers (time passes either way).
    fn reach(&mut self, path: &str) -> bool {
        match self.world.mode_for(path) {
            Mode::Ok => true,
            Mode::Late(ms) if ms < self.timeout_ms => {
                self.now_ms += ms;
                true
            }
            Mode::Late(_) | Mode::Silent => {
                self.now_ms += self.timeout_ms;
                false
            }
            Mode::Error(_) => false,
        }
    }

    /// Fetches the identity; the last good one stays when the shim fails.
    fn refresh_identity(&mut self) {
        if self.reach("/v1/identity")
            && let Some(identity) = self.world.served_identity()
        {
            self.identity = Some(identity);
        }
    }

    fn identity(&mut self) -> Option<Arc<WorkloadIdentity>> {
        if self.identity.is_none() {
            self.refresh_identity();
        }
        self.identity.clone()
    }
}

impl bindings::ephemera::filter::types::Host for HostState {}

impl identity::Host for HostState {
    fn verify(
        &mut self,
        token: String,
        audience: String,
    ) -> Result<identity::Caller, identity::Rejection> {
        let Some(id) = self.identity() else {
            return Err(identity::Rejection::Unavailable(
                "no identity loaded".into(),
            ));
        };
        let audience = SpiffeId::parse(&audience)
            .map_err(|e| identity::Rejection::Unavailable(format!("audience: {e}")))?;
        match TokenVerifier::new(audience, VerifyOptions::default()).verify(
            &token,
            &id.bundle,
            self.now_ms / 1000,
            &RustCrypto,
        ) {
            Ok(v) => Ok(identity::Caller {
                id: v.caller.to_string(),
                expires_at: v.expires_at,
            }),
            Err(VerifyError::Crypto(e)) => Err(identity::Rejection::Unavailable(e.to_string())),
            Err(VerifyError::Invalid(InvalidToken::Expired | InvalidToken::NotYetValid)) => {
                Err(identity::Rejection::Expired)
            }
            Err(VerifyError::Invalid(InvalidToken::AudienceMismatch)) => {
                Err(identity::Rejection::WrongAudience)
            }
            Err(
                e @ (VerifyError::UnknownIdentity(_)
                | VerifyError::Invalid(InvalidToken::SignatureMismatch)),
            ) => Err(identity::Rejection::Untrusted(e.to_string())),
            Err(e) => Err(identity::Rejection::Malformed(e.to_string())),
        }
    }

    fn mint(&mut self, audience: String, ttl_secs: u32) -> Result<String, String> {
        let id = self.identity().ok_or("no identity loaded")?;
        let audience = SpiffeId::parse(&audience).map_err(|e| e.to_string())?;
        id.minter
            .mint(
                &audience,
                self.now_ms / 1000,
                u64::from(ttl_secs),
                None,
                &RustCrypto,
            )
            .map_err(|e| e.to_string())
    }

    fn workload(&mut self) -> Option<String> {
        self.identity().map(|i| i.id().to_string())
    }
}

impl broker::Host for HostState {
    fn issue(
        &mut self,
        transaction: String,
        caller_token: String,
        scope: broker::Scope,
    ) -> Result<broker::Credential, broker::BrokerError> {
        self.calls.push("POST /v1/transactions".into());
        if !self.reach("/v1/transactions") {
            return Err(broker::BrokerError::Unavailable(
                "broker unreachable".into(),
            ));
        }
        let open = serde_json::json!({
            "transaction_id": transaction,
            "token": caller_token,
            "resource": scope.resource,
            "action": scope.action,
            "broker": scope.broker,
        });
        let open: OpenRequest = serde_json::from_value(open)
            .map_err(|e| broker::BrokerError::Denied(format!("scope: {e}")))?;
        let issued = self.world.issue(&open, self.now_ms);
        Ok(broker::Credential {
            fields: issued.credential.into_iter().collect(),
            expires_at: issued.expires_at,
            blast_radius: issued.blast_radius,
        })
    }

    fn revoke(&mut self, _transaction: String) {
        self.calls.push("POST /v1/transactions/{id}/close".into());
        self.reach("/v1/transactions");
    }
}

impl ledger::Host for HostState {
    fn append(&mut self, event: ledger::Event) -> Result<(), String> {
        let line = match event.kind {
            ledger::Kind::Open => format!("open {}", event.scope.unwrap_or_default()),
            ledger::Kind::Close => "close".into(),
            ledger::Kind::Fail => "fail".into(),
        };
        self.world.record(line);
        Ok(())
    }
}

impl secrets::Host for HostState {
    fn resolve(&mut self, name: String) -> Result<secrets::Resolved, secrets::SecretError> {
        self.calls.push("POST /v1/secrets/resolve".into());
        if !self.reach("/v1/secrets/resolve") {
            return Err(secrets::SecretError::Unavailable(
                "resolver unreachable".into(),
            ));
        }
        let (status, body) = self.world.secret_answer(&name);
        let error = body["error"].as_str().unwrap_or_default().to_owned();
        match status {
            200 => Ok(secrets::Resolved {
                value: body["value"].as_str().unwrap_or_default().to_owned(),
                cache_ttl_secs: body["cache_ttl_secs"].as_u64(),
            }),
            403 => Err(secrets::SecretError::NotAuthorized(error)),
            404 => Err(secrets::SecretError::Unknown(error)),
            _ => Err(secrets::SecretError::Unavailable(error)),
        }
    }
}

/// The component with its world.
pub struct ComponentDriver {
    store: Store<HostState>,
    filter: Filter,
    configured: bool,
    next_stream: u64,
}

impl ComponentDriver {
    /// Instantiates `plugin` and configures it with `config`.
    pub fn start(plugin: &ComponentPlugin, config: &[u8], world: World) -> Result<Self, String> {
        if world.script.live.is_some() {
            return Err("a live shim answers the proxy-wasm host only".into());
        }
        let text = String::from_utf8_lossy(config).into_owned();
        let timeout_ms = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["shim"]["timeout_ms"].as_u64())
            .unwrap_or(1000);
        let state = HostState {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            world,
            now_ms: super::proxy_wasm::VmOptions::default().start_ms,
            timeout_ms,
            identity: None,
            calls: Vec::new(),
        };
        let mut store = Store::new(&plugin.engine, state);
        let mut linker: Linker<HostState> = Linker::new(&plugin.engine);
        let fail = |e: wasmtime::Error| format!("{e:#}");
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(fail)?;
        Filter::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |s| s)
            .map_err(fail)?;
        let filter = Filter::instantiate(&mut store, &plugin.component, &linker).map_err(fail)?;
        let configured = filter
            .ephemera_filter_http_filter()
            .call_configure(&mut store, &text)
            .map_err(fail)?
            .is_ok();
        Ok(Self {
            store,
            filter,
            configured,
            next_stream: 1,
        })
    }
}

impl Driver for ComponentDriver {
    fn configured(&self) -> bool {
        self.configured
    }

    fn world(&self) -> &World {
        &self.store.data().world
    }

    fn world_mut(&mut self) -> &mut World {
        &mut self.store.data_mut().world
    }

    fn now_ms(&self) -> u64 {
        self.store.data().now_ms
    }

    fn advance(&mut self, ms: u64) -> Result<(), String> {
        let state = self.store.data_mut();
        let until = state.now_ms + ms;
        state.refresh_identity();
        state.now_ms = state.now_ms.max(until);
        Ok(())
    }

    fn request(
        &mut self,
        headers: Headers,
        cluster: Option<&str>,
        app_status: u16,
    ) -> Result<Verdict, String> {
        let stream = self.next_stream;
        self.next_stream += 1;
        let text: Vec<(String, String)> = headers
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect();
        let pseudo = |name: &str| text.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let request = Request {
            method: pseudo(":method").unwrap_or_default(),
            path: pseudo(":path").unwrap_or_default(),
            authority: pseudo(":authority"),
            cluster: cluster.map(str::to_owned),
            headers: text
                .iter()
                .filter(|(k, _)| !k.starts_with(':'))
                .cloned()
                .collect(),
        };
        let calls_before = self.store.data().calls.len();
        let ledger_before = self.store.data().world.ledger.len();
        let hooks = self.filter.ephemera_filter_http_filter();
        let fail = |e: wasmtime::Error| format!("{e:#}");
        let decided = hooks
            .call_on_request(&mut self.store, stream, &request)
            .map_err(fail)?;
        let mut verdict = Verdict::default();
        match decided {
            WitVerdict::Forward(changes) => {
                let mut seen = text;
                seen.retain(|(k, _)| !changes.remove.contains(k));
                for (k, v) in changes.set {
                    seen.retain(|(name, _)| *name != k);
                    seen.push((k, v));
                }
                verdict.status = app_status;
                verdict.app_headers = seen.into_iter().collect();
                hooks
                    .call_on_response(&mut self.store, stream, app_status)
                    .map_err(fail)?;
            }
            WitVerdict::Reply(reply) => {
                verdict.status = reply.status;
                verdict.body = Some(reply.body);
                verdict.reply_headers = reply.headers.into_iter().collect();
            }
        }
        hooks.call_on_end(&mut self.store, stream).map_err(fail)?;
        let state = self.store.data();
        verdict.calls = state.calls[calls_before..].to_vec();
        verdict.ledger = state.world.ledger[ledger_before..].to_vec();
        Ok(verdict)
    }

    fn logs(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Where the built component is: `$EPHEMERA_COMPONENT`, else the release build.
pub fn component_path() -> std::path::PathBuf {
    std::env::var_os("EPHEMERA_COMPONENT").map_or_else(
        || {
            crate::target_dir()
                .join("wasm32-wasip2")
                .join("release")
                .join("ephemera_component.wasm")
        },
        std::path::PathBuf::from,
    )
}
