//! A proxy-wasm host on wasmtime: loads the very `.wasm` Envoy loads and
//! drives it as Envoy would (start-up, configure, streams, call responses,
//! ticks), with a fixed clock, seeded randomness and every effect recorded.
//! The host offers no shared data and no queues: the filter keeps nothing
//! there (other plugins could read it), so a use would trap.

mod host;
mod memory;
mod state;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use wasmtime::{Engine, Instance, Linker, Module, Store, TypedFunc};

use super::abi::Headers;
use super::foreign::HostCrypto;
pub use state::{DispatchedCall, HostState, LocalReply};

/// A compiled plugin, shared by every VM started from it.
#[derive(Clone)]
pub struct Plugin {
    engine: Engine,
    module: Module,
}

impl Plugin {
    /// Compiles the module at `path`.
    pub fn load(path: &Path) -> wasmtime::Result<Self> {
        let engine = Engine::default();
        let module = Module::from_file(&engine, path)?;
        Ok(Self { engine, module })
    }
}

/// Options of a VM.
#[derive(Debug, Clone)]
pub struct VmOptions {
    /// Start of the host clock, Unix milliseconds.
    pub start_ms: u64,
    /// Seed of the randomness the plugin gets.
    pub seed: u64,
    /// Clusters `dispatch_http_call` may use.
    pub clusters: Vec<String>,
    /// Properties by path (segments joined with `.`).
    pub properties: BTreeMap<String, String>,
    /// The crypto foreign functions the host offers.
    pub crypto: HostCrypto,
}

impl Default for VmOptions {
    fn default() -> Self {
        Self {
            start_ms: 1_900_000_000_000,
            seed: 7,
            clusters: vec!["ephemera_shim".into()],
            properties: BTreeMap::new(),
            crypto: HostCrypto::Absent,
        }
    }
}

/// One running plugin VM with its root context.
pub struct Vm {
    store: Store<HostState>,
    instance: Instance,
    root_id: u32,
    next_id: u32,
}

impl Vm {
    /// Instantiates `plugin`, creates the root context and configures it.
    /// Returns the VM and whether `proxy_on_configure` accepted the config.
    pub fn start(
        plugin: &Plugin,
        config: &[u8],
        options: &VmOptions,
    ) -> wasmtime::Result<(Self, bool)> {
        let state = HostState {
            now_ms: options.start_ms,
            rng: options.seed,
            logs: Vec::new(),
            effective: 0,
            contexts: HashSet::new(),
            plugin_config: config.to_vec(),
            request_headers: HashMap::new(),
            response_headers: HashMap::new(),
            replies: HashMap::new(),
            resumed: HashSet::new(),
            crypto: options.crypto,
            tick_ms: 0,
            next_token: 1,
            pending: Vec::new(),
            dispatched: Vec::new(),
            clusters: options.clusters.iter().cloned().collect(),
            delivering: None,
            metrics: BTreeMap::new(),
            metric_ids: Vec::new(),
            properties: options
                .properties
                .iter()
                .map(|(k, v)| (k.replace('.', "\0"), v.clone().into_bytes()))
                .collect(),
        };
        let mut store = Store::new(&plugin.engine, state);
        let mut linker = Linker::new(&plugin.engine);
        host::define(&mut linker)?;
        // Anything else the module imports exists, and traps by name.
        linker.define_unknown_imports_as_traps(&plugin.module)?;
        let instance = linker.instantiate(&mut store, &plugin.module)?;
        if let Ok(init) = instance.get_typed_func::<(), ()>(&mut store, "_initialize") {
            init.call(&mut store, ())?;
        }
        let mut vm = Self {
            store,
            instance,
            root_id: 1,
            next_id: 2,
        };
        vm.store.data_mut().contexts.insert(1);
        vm.with_context(1, |vm| {
            vm.func::<(i32, i32), ()>("proxy_on_context_create")?
                .call(&mut vm.store, (1, 0))
        })?;
        let started = vm.with_context(1, |vm| {
            vm.func::<(i32, i32), i32>("proxy_on_vm_start")?
                .call(&mut vm.store, (1, 0))
        })?;
        let size = i32::try_from(config.len()).unwrap_or(i32::MAX);
        let configured = vm.with_context(1, |vm| {
            vm.func::<(i32, i32), i32>("proxy_on_configure")?
                .call(&mut vm.store, (1, size))
        })?;
        Ok((vm, started != 0 && configured != 0))
    }

    fn func<P: wasmtime::WasmParams, R: wasmtime::WasmResults>(
        &mut self,
        name: &str,
    ) -> wasmtime::Result<TypedFunc<P, R>> {
        self.instance.get_typed_func::<P, R>(&mut self.store, name)
    }

    fn with_context<T>(
        &mut self,
        id: u32,
        f: impl FnOnce(&mut Self) -> wasmtime::Result<T>,
    ) -> wasmtime::Result<T> {
        self.store.data_mut().effective = id;
        f(self)
    }

    /// The host state (clock, logs, calls, replies, metrics).
    pub fn state(&self) -> &HostState {
        self.store.data()
    }

    /// Mutable host state.
    pub fn state_mut(&mut self) -> &mut HostState {
        self.store.data_mut()
    }

    /// Starts a stream with `headers`; returns its context id and whether
    /// the filter let it continue at once.
    pub fn request(&mut self, headers: Headers) -> wasmtime::Result<(u32, bool)> {
        let id = self.next_id;
        self.next_id += 1;
        let count = i32::try_from(headers.len()).unwrap_or(i32::MAX);
        self.store.data_mut().contexts.insert(id);
        self.store.data_mut().request_headers.insert(id, headers);
        let root = self.root_id as i32;
        self.with_context(id, |vm| {
            vm.func::<(i32, i32), ()>("proxy_on_context_create")?
                .call(&mut vm.store, (id as i32, root))
        })?;
        let on_headers = self.func::<(i32, i32, i32), i32>("proxy_on_request_headers")?;
        let action = self.with_context(id, |vm| {
            on_headers.call(&mut vm.store, (id as i32, count, 1))
        })?;
        Ok((id, action == 0))
    }

    /// Sets (or, with `None`, removes) a property, path segments joined by `.`.
    pub fn set_property(&mut self, path: &str, value: Option<&str>) {
        let key = path.replace('.', "\0");
        let properties = &mut self.store.data_mut().properties;
        match value {
            Some(v) => properties.insert(key, v.as_bytes().to_vec()),
            None => properties.remove(&key),
        };
    }

    /// The request headers of stream `id` as the filter left them.
    pub fn request_headers(&self, id: u32) -> Headers {
        self.store
            .data()
            .request_headers
            .get(&id)
            .cloned()
            .unwrap_or_default()
    }

    /// Delivers the upstream's response headers, then ends the stream.
    pub fn respond_and_end(&mut self, id: u32, status: u16) -> wasmtime::Result<()> {
        let headers = vec![(":status".to_owned(), status.to_string().into_bytes())];
        self.store.data_mut().response_headers.insert(id, headers);
        self.with_context(id, |vm| {
            vm.func::<(i32, i32, i32), i32>("proxy_on_response_headers")?
                .call(&mut vm.store, (id as i32, 1, 1))
        })?;
        self.end(id)
    }

    /// Ends stream `id` (log, done, delete), as after a local reply or a
    /// reset. Calls it dispatched and not yet answered are cancelled, as
    /// Envoy cancels a deleted context's calls: no answer ever reaches it.
    pub fn end(&mut self, id: u32) -> wasmtime::Result<()> {
        self.with_context(id, |vm| {
            vm.func::<i32, ()>("proxy_on_log")?
                .call(&mut vm.store, id as i32)
        })?;
        self.with_context(id, |vm| {
            vm.func::<i32, i32>("proxy_on_done")?
                .call(&mut vm.store, id as i32)
        })?;
        self.with_context(id, |vm| {
            vm.func::<i32, ()>("proxy_on_delete")?
                .call(&mut vm.store, id as i32)
        })?;
        let state = self.store.data_mut();
        state.contexts.remove(&id);
        state.pending.retain(|c| c.context_id != id);
        Ok(())
    }

    /// Calls the root's `proxy_on_tick`.
    pub fn tick(&mut self) -> wasmtime::Result<()> {
        let root = self.root_id;
        self.with_context(root, |vm| {
            vm.func::<i32, ()>("proxy_on_tick")?
                .call(&mut vm.store, root as i32)
        })
    }

    /// Delivers the answer to a dispatched call: `Some((status, headers,
    /// body))`, or `None` for a failed call (reset, timeout), which Envoy
    /// reports with no headers.
    pub fn answer(
        &mut self,
        token: u32,
        answer: Option<(u16, Headers, Vec<u8>)>,
    ) -> wasmtime::Result<()> {
        let Some(i) = self
            .store
            .data()
            .pending
            .iter()
            .position(|c| c.token == token)
        else {
            return Ok(());
        };
        let call = self.store.data_mut().pending.remove(i);
        let (headers, body) = match answer {
            Some((status, mut headers, body)) => {
                headers.insert(0, (":status".into(), status.to_string().into_bytes()));
                (headers, body)
            }
            None => (Vec::new(), Vec::new()),
        };
        let (h, b) = (
            i32::try_from(headers.len()).unwrap_or(0),
            i32::try_from(body.len()).unwrap_or(0),
        );
        self.store.data_mut().delivering = Some((headers, body));
        let context = call.context_id;
        let out = self.with_context(context, |vm| {
            vm.func::<(i32, i32, i32, i32, i32), ()>("proxy_on_http_call_response")?
                .call(&mut vm.store, (context as i32, token as i32, h, b, 0))
        });
        self.store.data_mut().delivering = None;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A module importing `env.proxy_mystery` and calling it from `_initialize`.
    const CALLS_AN_UNKNOWN_IMPORT: &[u8] = &[
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
        0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type 0: func() -> ()
        0x02, 0x15, 0x01, 0x03, b'e', b'n', b'v', 0x0d, b'p', b'r', b'o', b'x', b'y', b'_', b'm',
        b'y', b's', b't', b'e', b'r', b'y', 0x00, 0x00, // import env.proxy_mystery
        0x03, 0x02, 0x01, 0x00, // function 1: type 0
        0x07, 0x0f, 0x01, 0x0b, b'_', b'i', b'n', b'i', b't', b'i', b'a', b'l', b'i', b'z', b'e',
        0x00, 0x01, // export _initialize = function 1
        0x0a, 0x06, 0x01, 0x04, 0x00, 0x10, 0x00, 0x0b, // body: call 0
    ];

    #[test]
    fn an_import_the_host_lacks_traps_with_its_name() {
        let engine = Engine::default();
        let module = Module::new(&engine, CALLS_AN_UNKNOWN_IMPORT).unwrap();
        let plugin = Plugin { engine, module };
        let error = Vm::start(&plugin, b"{}", &VmOptions::default())
            .err()
            .expect("the call traps");
        let text = format!("{error:#}");
        assert!(
            text.contains("unknown import: `env::proxy_mystery` has not been defined"),
            "{text}"
        );
    }
}
