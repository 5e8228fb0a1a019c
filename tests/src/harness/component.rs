//! The component host: runs `ephemera_component.wasm` (the `ephemera:filter`
//! world) on wasmtime. Its imports are the shim's API, answered by the same
//! scripted shim the proxy-wasm host calls over HTTP: each typed request is
//! sent as the core's wire type, each answer read back as one. Host calls
//! are synchronous: a late answer moves the clock, a missing one costs the
//! shim timeout.

use ephemera_core::SpiffeId;
use ephemera_core::filter::workload_identity::{BundleFormatName, IdentityDocument};
use ephemera_core::ipt::{
    Action, CloseRequest, OpenRequest, OpenResponse, Resource, StreamEnd, TransactionId, WimseProof,
};
use ephemera_core::secrets::wire::{ResolveRequest, ResolveResponse};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::abi::Headers;
use super::scenario::{Driver, Verdict};
use super::world::{Answer, World};

/// Host bindings generated from `wit/filter.wit`.
#[allow(missing_docs)]
mod bindings {
    wasmtime::component::bindgen!({ world: "filter", path: "../wit" });
}

use bindings::Filter;
use bindings::ephemera::filter::{identity, secrets, transactions};
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
    identity: Option<IdentityDocument>,
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

/// An answer of the scripted shim: status (`None`: none in time) and body.
type Http = (Option<u16>, Vec<u8>);

impl HostState {
    /// Sends `method path` with `body` to the scripted shim; time passes
    /// as the answer's delay, or the whole timeout when none comes in time.
    fn send(&mut self, method: &str, path: &str, body: Vec<u8>) -> Http {
        let headers: Headers = vec![
            (":method".into(), method.as_bytes().to_vec()),
            (":path".into(), path.as_bytes().to_vec()),
        ];
        match self.world.answer(&headers, &body, self.now_ms) {
            Answer::After(delay, status, _, body) if delay < self.timeout_ms => {
                self.now_ms += delay;
                (Some(status), body)
            }
            _ => {
                self.now_ms += self.timeout_ms;
                (None, Vec::new())
            }
        }
    }

    /// Fetches the identity; the last good one stays when the shim fails.
    fn refresh_identity(&mut self) {
        if let (Some(200), body) = self.send("GET", "/v1/identity", Vec::new())
            && let Ok(doc) = serde_json::from_slice::<IdentityDocument>(&body)
        {
            self.identity = Some(doc);
        }
    }
}

impl bindings::ephemera::filter::types::Host for HostState {}

impl identity::Host for HostState {
    fn current(&mut self) -> Option<identity::IdentityDocument> {
        if self.identity.is_none() {
            self.refresh_identity();
        }
        let doc = self.identity.clone()?;
        Some(identity::IdentityDocument {
            version: doc.version,
            generation: doc.generation,
            spiffe_id: doc.spiffe_id.to_string(),
            bundle_format: format(doc.bundle_format),
            bundle: doc.bundle,
            key_pem: doc.key_pem,
            federated: doc
                .federated
                .into_iter()
                .map(|f| identity::FederatedBundle {
                    trust_domain: f.trust_domain,
                    bundle_format: format(f.bundle_format),
                    bundle: f.bundle,
                })
                .collect(),
            wit_issuers: doc.wit_issuers,
            wit: doc.wit,
            wit_key_pem: doc.wit_key_pem,
        })
    }
}

fn format(name: BundleFormatName) -> identity::BundleFormat {
    match name {
        BundleFormatName::Spiffile => identity::BundleFormat::Spiffile,
        BundleFormatName::SpiffeJwks => identity::BundleFormat::SpiffeJwks,
    }
}

/// A scripted answer that is not a success, as the world's error variants.
fn refusal(status: Option<u16>) -> Result<u16, Option<u16>> {
    match status {
        Some(s) if (400..500).contains(&s) => Ok(s),
        other => Err(other),
    }
}

impl transactions::Host for HostState {
    fn open(
        &mut self,
        request: transactions::OpenRequest,
    ) -> Result<transactions::OpenResponse, transactions::OpenError> {
        self.calls.push("POST /v1/transactions".into());
        // Typed as the shim's wire: a field the filter got wrong fails here.
        let typed = || -> Option<OpenRequest> {
            Some(OpenRequest {
                transaction_id: TransactionId::parse(&request.transaction_id).ok()?,
                token: request.token.clone(),
                resource: Resource::parse(&request.resource).ok()?,
                action: Action::parse(&request.action).ok()?,
                broker: request.broker.clone(),
                audience: match &request.audience {
                    Some(a) => Some(SpiffeId::parse(a).ok()?),
                    None => None,
                },
                wimse: request.wimse.as_ref().map(|w| {
                    Box::new(WimseProof {
                        wit: w.wit.clone(),
                        wpt: w.wpt.clone(),
                        target: w.target.clone(),
                        access_token: w.access_token.clone(),
                        txn_token: w.txn_token.clone(),
                        other: w.other.iter().cloned().collect(),
                    })
                }),
            })
        };
        let open = typed().ok_or(transactions::OpenError::Refused(400))?;
        let body = serde_json::to_vec(&open).unwrap_or_default();
        let (status, body) = self.send("POST", "/v1/transactions", body);
        if status != Some(200) {
            return Err(match refusal(status) {
                Ok(s) => transactions::OpenError::Refused(s),
                Err(s) => transactions::OpenError::Failed(s),
            });
        }
        let opened: OpenResponse = serde_json::from_slice(&body)
            .map_err(|_| transactions::OpenError::Failed(Some(200)))?;
        Ok(transactions::OpenResponse {
            transaction_id: opened.transaction_id.to_string(),
            credential: opened.credential.into_iter().collect(),
            expires_at: opened.expires_at,
            scope: opened.scope,
            blast_radius: opened.blast_radius,
        })
    }

    fn close(&mut self, transaction_id: String, outcome: transactions::StreamEnd) {
        self.calls.push("POST /v1/transactions/{id}/close".into());
        let outcome = match outcome {
            transactions::StreamEnd::Responded(status) => StreamEnd::Responded { status },
            transactions::StreamEnd::Aborted => StreamEnd::Aborted,
        };
        let body = serde_json::to_vec(&CloseRequest { outcome }).unwrap_or_default();
        let path = format!("/v1/transactions/{transaction_id}/close");
        self.send("POST", &path, body);
    }
}

impl secrets::Host for HostState {
    fn resolve(
        &mut self,
        request: secrets::ResolveRequest,
    ) -> Result<secrets::ResolveResponse, secrets::ResolveError> {
        self.calls.push("POST /v1/secrets/resolve".into());
        let resolve = ResolveRequest {
            name: request.name,
            purpose: request.purpose,
        };
        let body = serde_json::to_vec(&resolve).unwrap_or_default();
        let (status, body) = self.send("POST", "/v1/secrets/resolve", body);
        if status != Some(200) {
            return Err(match refusal(status) {
                Ok(s) => secrets::ResolveError::Refused(s),
                Err(s) => secrets::ResolveError::Failed(s),
            });
        }
        let resolved: ResolveResponse =
            serde_json::from_slice(&body).map_err(|_| secrets::ResolveError::Failed(Some(200)))?;
        Ok(secrets::ResolveResponse {
            value: resolved.value,
            cache_ttl_secs: resolved.cache_ttl_secs,
        })
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
        let now_ms = self.store.data().now_ms;
        let decided = hooks
            .call_on_request(&mut self.store, stream, &request, now_ms)
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
