//! A proxy-wasm host on wasmtime: loads the very `.wasm` Envoy loads and
//! drives it as Envoy would (start-up, configure, streams, call responses,
//! ticks), with a fixed clock, seeded randomness and every effect recorded.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use wasmtime::{Caller, Engine, Extern, Instance, Linker, Module, Store, TypedFunc};

use super::abi::{Headers, Status, buffer, decode_map, encode_map, map};
use super::foreign::HostCrypto;

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

/// A call the filter dispatched.
#[derive(Debug, Clone)]
pub struct DispatchedCall {
    /// The token the host gave it.
    pub token: u32,
    /// The context that dispatched it (gets the response).
    pub context_id: u32,
    /// The cluster.
    pub cluster: String,
    /// Request headers.
    pub headers: Headers,
    /// Request body.
    pub body: Vec<u8>,
    /// Timeout, milliseconds.
    pub timeout_ms: u64,
    /// When it was dispatched (host clock, ms).
    pub at_ms: u64,
}

impl DispatchedCall {
    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

/// A local reply the filter sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    /// Status.
    pub status: u32,
    /// Body.
    pub body: String,
    /// Headers.
    pub headers: Headers,
}

/// What every worker VM of one plugin shares, as in Envoy: shared data
/// with CAS versions, and shared queues with their pending notifications.
#[derive(Debug, Default)]
pub struct SharedHost {
    data: HashMap<String, (Vec<u8>, u32)>,
    queues: Vec<SharedQueue>,
    /// Notifications not yet delivered: (worker, context, queue id).
    ready: Vec<(usize, u32, u32)>,
}

impl SharedHost {
    /// Every shared-data entry: what any plugin in the same Envoy could read.
    pub fn data(&self) -> Vec<(String, Vec<u8>)> {
        self.data
            .iter()
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect()
    }
}

/// A shared queue: its name, the worker and root context that registered
/// it (and are told of new items), and its items.
#[derive(Debug)]
struct SharedQueue {
    name: String,
    worker: usize,
    context: u32,
    items: VecDeque<Vec<u8>>,
}

/// A handle on the state worker VMs share.
pub type Shared = Arc<Mutex<SharedHost>>;

/// Everything the host keeps for one VM.
pub struct HostState {
    /// Host clock, Unix milliseconds (moves only when told to).
    pub now_ms: u64,
    rng: u64,
    /// Log lines (level, message), WASI stdout/stderr included.
    pub logs: Vec<(i32, String)>,
    effective: u32,
    contexts: HashSet<u32>,
    plugin_config: Vec<u8>,
    request_headers: HashMap<u32, Headers>,
    response_headers: HashMap<u32, Headers>,
    /// Local replies by stream.
    pub replies: HashMap<u32, LocalReply>,
    /// Streams the filter resumed.
    pub resumed: HashSet<u32>,
    worker: usize,
    shared: Shared,
    crypto: HostCrypto,
    /// The tick period the root asked for, ms (0: none).
    pub tick_ms: u64,
    next_token: u32,
    /// Calls dispatched and not answered yet.
    pub pending: Vec<DispatchedCall>,
    /// Every call dispatched, in order.
    pub dispatched: Vec<DispatchedCall>,
    clusters: HashSet<String>,
    delivering: Option<(Headers, Vec<u8>)>,
    /// Metrics by name.
    pub metrics: BTreeMap<String, i64>,
    metric_ids: Vec<String>,
    properties: HashMap<String, Vec<u8>>,
}

impl HostState {
    fn next_random(&mut self) -> u64 {
        // splitmix64: reproducible, not for secrets outside this harness.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn shared(&self) -> MutexGuard<'_, SharedHost> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
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
    /// Which worker this VM is (Envoy runs one VM per worker thread).
    pub worker: usize,
    /// The state this VM shares with the plugin's other workers.
    pub shared: Shared,
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
            worker: 0,
            shared: Shared::default(),
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
            worker: options.worker,
            shared: Arc::clone(&options.shared),
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
        define_host(&mut linker)?;
        // Anything else the module imports exists, and traps by name.
        for import in plugin.module.imports() {
            let (module, name) = (import.module().to_owned(), import.name().to_owned());
            if linker.get(&mut store, &module, &name).is_err()
                && let Some(ty) = import.ty().func().cloned()
            {
                let label = format!("{module}.{name}");
                linker.func_new(&module, &name, ty, move |_, _, _| {
                    Err(wasmtime::Error::msg(format!(
                        "the plugin called {label}, which this host does not implement"
                    )))
                })?;
            }
        }
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
        let out = f(self);
        self.deliver_queue_notifications()?;
        out
    }

    /// Tells this VM's root contexts of items queued for them (by any
    /// worker), as Envoy posts `on_queue_ready` to the registering worker.
    pub fn deliver_queue_notifications(&mut self) -> wasmtime::Result<()> {
        loop {
            let worker = self.store.data().worker;
            let next = {
                let mut shared = self.store.data().shared();
                let mine = shared.ready.iter().position(|(w, _, _)| *w == worker);
                mine.map(|i| shared.ready.remove(i))
            };
            let Some((_, context, queue)) = next else {
                return Ok(());
            };
            self.store.data_mut().effective = context;
            self.func::<(i32, i32), ()>("proxy_on_queue_ready")?
                .call(&mut self.store, (context as i32, queue as i32))?;
        }
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

// ---- host functions -------------------------------------------------------

type Cx<'a> = Caller<'a, HostState>;

fn memory(caller: &mut Cx<'_>) -> wasmtime::Result<wasmtime::Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => Ok(m),
        _ => Err(wasmtime::Error::msg("the plugin exports no memory")),
    }
}

fn read(caller: &mut Cx<'_>, ptr: i32, len: i32) -> wasmtime::Result<Vec<u8>> {
    let m = memory(caller)?;
    let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
    let data = m.data(&caller);
    data.get(ptr..ptr + len)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| wasmtime::Error::msg("the plugin passed memory out of bounds"))
}

fn text(caller: &mut Cx<'_>, ptr: i32, len: i32) -> wasmtime::Result<String> {
    Ok(String::from_utf8_lossy(&read(caller, ptr, len)?).into_owned())
}

fn write(caller: &mut Cx<'_>, ptr: i32, bytes: &[u8]) -> wasmtime::Result<()> {
    let m = memory(caller)?;
    m.write(caller, ptr as u32 as usize, bytes)
        .map_err(|_| wasmtime::Error::msg("the plugin passed an output pointer out of bounds"))
}

fn write_u32(caller: &mut Cx<'_>, ptr: i32, v: u32) -> wasmtime::Result<()> {
    write(caller, ptr, &v.to_le_bytes())
}

/// Hands `bytes` to the module: allocated by its own allocator, then
/// `(ptr, len)` written to the two output pointers.
fn give(caller: &mut Cx<'_>, bytes: &[u8], ptr_out: i32, len_out: i32) -> wasmtime::Result<()> {
    let alloc = match caller.get_export("proxy_on_memory_allocate") {
        Some(Extern::Func(f)) => f.typed::<i32, i32>(&caller)?,
        _ => return Err(wasmtime::Error::msg("no proxy_on_memory_allocate export")),
    };
    let len = i32::try_from(bytes.len()).map_err(wasmtime::Error::msg)?;
    let ptr = alloc.call(&mut *caller, len)?;
    write(caller, ptr, bytes)?;
    write_u32(caller, ptr_out, ptr as u32)?;
    write_u32(caller, len_out, len as u32)
}

/// Hands over `value`, or answers NotFound.
fn give_found(
    caller: &mut Cx<'_>,
    value: Option<Vec<u8>>,
    ptr_out: i32,
    len_out: i32,
) -> wasmtime::Result<i32> {
    match value {
        Some(v) => {
            give(caller, &v, ptr_out, len_out)?;
            Ok(OK)
        }
        None => Ok(NOT_FOUND),
    }
}

fn headers_of(state: &HostState, map_type: i32) -> Option<&Headers> {
    match map_type {
        map::REQUEST_HEADERS => state.request_headers.get(&state.effective),
        map::RESPONSE_HEADERS => state.response_headers.get(&state.effective),
        map::CALL_RESPONSE_HEADERS => state.delivering.as_ref().map(|(h, _)| h),
        _ => None,
    }
}

fn headers_of_mut(state: &mut HostState, map_type: i32) -> Option<&mut Headers> {
    let id = state.effective;
    match map_type {
        map::REQUEST_HEADERS => Some(state.request_headers.entry(id).or_default()),
        map::RESPONSE_HEADERS => Some(state.response_headers.entry(id).or_default()),
        _ => None,
    }
}

const OK: i32 = Status::Ok as i32;
const NOT_FOUND: i32 = Status::NotFound as i32;
const BAD_ARGUMENT: i32 = Status::BadArgument as i32;

fn define_host(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let env = "env";
    l.func_wrap(
        env,
        "proxy_log",
        |mut c: Cx<'_>, level: i32, p: i32, n: i32| {
            let message = text(&mut c, p, n)?;
            c.data_mut().logs.push((level, message));
            Ok(OK)
        },
    )?;
    l.func_wrap(env, "proxy_get_log_level", |mut c: Cx<'_>, out: i32| {
        write_u32(&mut c, out, 0)?;
        Ok(OK)
    })?;
    l.func_wrap(
        env,
        "proxy_get_current_time_nanoseconds",
        |mut c: Cx<'_>, out: i32| {
            let ns = c.data().now_ms.saturating_mul(1_000_000);
            write(&mut c, out, &ns.to_le_bytes())?;
            Ok(OK)
        },
    )?;
    l.func_wrap(
        env,
        "proxy_set_tick_period_milliseconds",
        |mut c: Cx<'_>, ms: i32| {
            c.data_mut().tick_ms = u64::from(ms as u32);
            Ok(OK)
        },
    )?;
    l.func_wrap(
        env,
        "proxy_get_buffer_bytes",
        |mut c: Cx<'_>, kind: i32, start: i32, max: i32, ptr_out: i32, len_out: i32| {
            let data = match kind {
                buffer::PLUGIN_CONFIGURATION => c.data().plugin_config.clone(),
                buffer::VM_CONFIGURATION => Vec::new(),
                buffer::CALL_RESPONSE_BODY => match &c.data().delivering {
                    Some((_, body)) => body.clone(),
                    None => return Ok(NOT_FOUND),
                },
                _ => return Ok(NOT_FOUND),
            };
            let start = (start as u32 as usize).min(data.len());
            let end = start.saturating_add(max as u32 as usize).min(data.len());
            give(&mut c, &data[start..end], ptr_out, len_out)?;
            Ok(OK)
        },
    )?;
    l.func_wrap(
        env,
        "proxy_set_buffer_bytes",
        |_: Cx<'_>, _: i32, _: i32, _: i32, _: i32, _: i32| Ok(BAD_ARGUMENT),
    )?;
    l.func_wrap(
        env,
        "proxy_get_header_map_pairs",
        |mut c: Cx<'_>, kind: i32, ptr_out: i32, len_out: i32| {
            let bytes = encode_map(headers_of(c.data(), kind).unwrap_or(&Vec::new()));
            give(&mut c, &bytes, ptr_out, len_out)?;
            Ok(OK)
        },
    )?;
    l.func_wrap(
        env,
        "proxy_set_header_map_pairs",
        |mut c: Cx<'_>, kind: i32, p: i32, n: i32| {
            let Some(new) = decode_map(&read(&mut c, p, n)?) else {
                return Ok(BAD_ARGUMENT);
            };
            match headers_of_mut(c.data_mut(), kind) {
                Some(h) => {
                    *h = new;
                    Ok(OK)
                }
                None => Ok(BAD_ARGUMENT),
            }
        },
    )?;
    l.func_wrap(
        env,
        "proxy_get_header_map_value",
        |mut c: Cx<'_>, kind: i32, kp: i32, kn: i32, ptr_out: i32, len_out: i32| {
            let key = text(&mut c, kp, kn)?.to_ascii_lowercase();
            let value = headers_of(c.data(), kind)
                .and_then(|h| h.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone()));
            give_found(&mut c, value, ptr_out, len_out)
        },
    )?;
    l.func_wrap(
        env,
        "proxy_replace_header_map_value",
        |mut c: Cx<'_>, kind: i32, kp: i32, kn: i32, vp: i32, vn: i32| {
            let key = text(&mut c, kp, kn)?.to_ascii_lowercase();
            let value = read(&mut c, vp, vn)?;
            let Some(h) = headers_of_mut(c.data_mut(), kind) else {
                return Ok(BAD_ARGUMENT);
            };
            h.retain(|(k, _)| *k != key);
            h.push((key, value));
            Ok(OK)
        },
    )?;
    l.func_wrap(
        env,
        "proxy_add_header_map_value",
        |mut c: Cx<'_>, kind: i32, kp: i32, kn: i32, vp: i32, vn: i32| {
            let key = text(&mut c, kp, kn)?.to_ascii_lowercase();
            let value = read(&mut c, vp, vn)?;
            let Some(h) = headers_of_mut(c.data_mut(), kind) else {
                return Ok(BAD_ARGUMENT);
            };
            h.push((key, value));
            Ok(OK)
        },
    )?;
    l.func_wrap(
        env,
        "proxy_remove_header_map_value",
        |mut c: Cx<'_>, kind: i32, kp: i32, kn: i32| {
            let key = text(&mut c, kp, kn)?.to_ascii_lowercase();
            let Some(h) = headers_of_mut(c.data_mut(), kind) else {
                return Ok(BAD_ARGUMENT);
            };
            h.retain(|(k, _)| *k != key);
            Ok(OK)
        },
    )?;
    l.func_wrap(
        env,
        "proxy_get_property",
        |mut c: Cx<'_>, p: i32, n: i32, ptr_out: i32, len_out: i32| {
            let path = text(&mut c, p, n)?;
            let path = path.trim_end_matches('\0').to_owned();
            let value = c.data().properties.get(&path).cloned();
            give_found(&mut c, value, ptr_out, len_out)
        },
    )?;
    l.func_wrap(
        env,
        "proxy_set_property",
        |mut c: Cx<'_>, p: i32, n: i32, vp: i32, vn: i32| {
            let path = text(&mut c, p, n)?;
            let value = read(&mut c, vp, vn)?;
            c.data_mut().properties.insert(path, value);
            Ok(OK)
        },
    )?;
    l.func_wrap(
        env,
        "proxy_get_shared_data",
        |mut c: Cx<'_>, kp: i32, kn: i32, ptr_out: i32, len_out: i32, cas_out: i32| {
            let key = text(&mut c, kp, kn)?;
            let found = c.data().shared().data.get(&key).cloned();
            match found {
                Some((value, cas)) => {
                    give(&mut c, &value, ptr_out, len_out)?;
                    write_u32(&mut c, cas_out, cas)?;
                    Ok(OK)
                }
                None => Ok(NOT_FOUND),
            }
        },
    )?;
    l.func_wrap(
        env,
        "proxy_set_shared_data",
        |mut c: Cx<'_>, kp: i32, kn: i32, vp: i32, vn: i32, cas: i32| {
            let key = text(&mut c, kp, kn)?;
            let value = read(&mut c, vp, vn)?;
            let mut shared = c.data().shared();
            let current = shared.data.get(&key).map_or(0, |(_, cas)| *cas);
            // A CAS is checked against a value that exists; setting a
            // missing key always succeeds, as in proxy-wasm-cpp-host.
            if cas != 0 && current != 0 && cas as u32 != current {
                return Ok(Status::CasMismatch as i32);
            }
            shared
                .data
                .insert(key, (value, current.wrapping_add(1).max(1)));
            Ok(OK)
        },
    )?;
    l.func_wrap(
        env,
        "proxy_register_shared_queue",
        |mut c: Cx<'_>, p: i32, n: i32, id_out: i32| {
            let name = text(&mut c, p, n)?;
            let (worker, context) = (c.data().worker, c.data().effective);
            let id = {
                let queues = &mut c.data().shared().queues;
                match queues.iter().position(|q| q.name == name) {
                    // Registering again moves the notifications here.
                    Some(i) => {
                        (queues[i].worker, queues[i].context) = (worker, context);
                        i
                    }
                    None => {
                        queues.push(SharedQueue {
                            name,
                            worker,
                            context,
                            items: VecDeque::new(),
                        });
                        queues.len() - 1
                    }
                }
            };
            write_u32(&mut c, id_out, id as u32 + 1)?;
            Ok(OK)
        },
    )?;
    l.func_wrap(
        env,
        "proxy_resolve_shared_queue",
        |mut c: Cx<'_>, _vp: i32, _vn: i32, p: i32, n: i32, id_out: i32| {
            let name = text(&mut c, p, n)?;
            let found = c.data().shared().queues.iter().position(|q| q.name == name);
            match found {
                Some(i) => {
                    write_u32(&mut c, id_out, i as u32 + 1)?;
                    Ok(OK)
                }
                None => Ok(NOT_FOUND),
            }
        },
    )?;
    l.func_wrap(
        env,
        "proxy_enqueue_shared_queue",
        |mut c: Cx<'_>, id: i32, p: i32, n: i32| {
            let value = read(&mut c, p, n)?;
            let mut shared = c.data().shared();
            let Some(q) = shared.queues.get_mut((id as usize).wrapping_sub(1)) else {
                return Ok(NOT_FOUND);
            };
            q.items.push_back(value);
            let (worker, context) = (q.worker, q.context);
            shared.ready.push((worker, context, id as u32));
            Ok(OK)
        },
    )?;
    l.func_wrap(
        env,
        "proxy_dequeue_shared_queue",
        |mut c: Cx<'_>, id: i32, ptr_out: i32, len_out: i32| {
            let item = match c
                .data()
                .shared()
                .queues
                .get_mut((id as usize).wrapping_sub(1))
            {
                Some(q) => q.items.pop_front(),
                None => return Ok(NOT_FOUND),
            };
            match item {
                Some(v) => {
                    give(&mut c, &v, ptr_out, len_out)?;
                    Ok(OK)
                }
                None => Ok(Status::Empty as i32),
            }
        },
    )?;
    l.func_wrap(env, "proxy_continue_stream", |mut c: Cx<'_>, _kind: i32| {
        let id = c.data().effective;
        c.data_mut().resumed.insert(id);
        Ok(OK)
    })?;
    l.func_wrap(env, "proxy_close_stream", |_: Cx<'_>, _kind: i32| Ok(OK))?;
    l.func_wrap(
        env,
        "proxy_send_local_response",
        |mut c: Cx<'_>,
         status: i32,
         _dp: i32,
         _dn: i32,
         bp: i32,
         bn: i32,
         hp: i32,
         hn: i32,
         _grpc: i32| {
            let body = text(&mut c, bp, bn)?;
            let headers = decode_map(&read(&mut c, hp, hn)?).unwrap_or_default();
            let id = c.data().effective;
            c.data_mut().replies.insert(
                id,
                LocalReply {
                    status: status as u32,
                    body,
                    headers,
                },
            );
            Ok(OK)
        },
    )?;
    l.func_wrap(
        env,
        "proxy_http_call",
        |mut c: Cx<'_>,
         up: i32,
         un: i32,
         hp: i32,
         hn: i32,
         bp: i32,
         bn: i32,
         _tp: i32,
         _tn: i32,
         timeout: i32,
         token_out: i32| {
            let cluster = text(&mut c, up, un)?;
            let Some(headers) = decode_map(&read(&mut c, hp, hn)?) else {
                return Ok(BAD_ARGUMENT);
            };
            let body = read(&mut c, bp, bn)?;
            if !c.data().clusters.contains(&cluster) {
                return Ok(BAD_ARGUMENT);
            }
            let state = c.data_mut();
            let token = state.next_token;
            state.next_token += 1;
            let call = DispatchedCall {
                token,
                context_id: state.effective,
                cluster,
                headers,
                body,
                timeout_ms: u64::from(timeout as u32),
                at_ms: state.now_ms,
            };
            state.dispatched.push(call.clone());
            state.pending.push(call);
            write_u32(&mut c, token_out, token)?;
            Ok(OK)
        },
    )?;
    l.func_wrap(
        env,
        "proxy_set_effective_context",
        |mut c: Cx<'_>, id: i32| {
            if c.data().contexts.contains(&(id as u32)) {
                c.data_mut().effective = id as u32;
                Ok(OK)
            } else {
                Ok(BAD_ARGUMENT)
            }
        },
    )?;
    l.func_wrap(env, "proxy_done", |_: Cx<'_>| Ok(OK))?;
    l.func_wrap(
        env,
        "proxy_call_foreign_function",
        |mut c: Cx<'_>, np: i32, nn: i32, ap: i32, an: i32, ptr_out: i32, len_out: i32| {
            let name = text(&mut c, np, nn)?;
            let args = read(&mut c, ap, an)?;
            let reply = c.data().crypto.call(&name, &args);
            give_found(&mut c, reply, ptr_out, len_out)
        },
    )?;
    l.func_wrap(
        env,
        "proxy_get_status",
        |mut c: Cx<'_>, code_out: i32, _p: i32, _n: i32| {
            write_u32(&mut c, code_out, 0)?;
            Ok(NOT_FOUND)
        },
    )?;
    l.func_wrap(
        env,
        "proxy_define_metric",
        |mut c: Cx<'_>, _kind: i32, p: i32, n: i32, id_out: i32| {
            let name = text(&mut c, p, n)?;
            let ids = &mut c.data_mut().metric_ids;
            let id = ids.iter().position(|m| *m == name).unwrap_or_else(|| {
                ids.push(name.clone());
                ids.len() - 1
            });
            c.data_mut().metrics.entry(name).or_insert(0);
            write_u32(&mut c, id_out, id as u32)?;
            Ok(OK)
        },
    )?;
    l.func_wrap(
        env,
        "proxy_increment_metric",
        |mut c: Cx<'_>, id: i32, by: i64| {
            let state = c.data_mut();
            let Some(name) = state.metric_ids.get(id as usize).cloned() else {
                return Ok(NOT_FOUND);
            };
            *state.metrics.entry(name).or_insert(0) += by;
            Ok(OK)
        },
    )?;
    l.func_wrap(
        env,
        "proxy_record_metric",
        |mut c: Cx<'_>, id: i32, value: i64| {
            let state = c.data_mut();
            let Some(name) = state.metric_ids.get(id as usize).cloned() else {
                return Ok(NOT_FOUND);
            };
            state.metrics.insert(name, value);
            Ok(OK)
        },
    )?;
    l.func_wrap(
        env,
        "proxy_get_metric",
        |mut c: Cx<'_>, id: i32, out: i32| {
            let Some(name) = c.data().metric_ids.get(id as usize).cloned() else {
                return Ok(NOT_FOUND);
            };
            let value = c.data().metrics.get(&name).copied().unwrap_or(0);
            write(&mut c, out, &value.to_le_bytes())?;
            Ok(OK)
        },
    )?;

    // WASI preview 1, as much as the filter uses.
    let wasi = "wasi_snapshot_preview1";
    l.func_wrap(
        wasi,
        "fd_write",
        |mut c: Cx<'_>, fd: i32, iovs: i32, count: i32, written_out: i32| {
            let mut out = Vec::new();
            for i in 0..count {
                let iov = read(&mut c, iovs + i * 8, 8)?;
                let ptr = i32::from_le_bytes(iov[0..4].try_into().unwrap_or_default());
                let len = i32::from_le_bytes(iov[4..8].try_into().unwrap_or_default());
                out.extend(read(&mut c, ptr, len)?);
            }
            let n = out.len() as u32;
            let level = if fd == 2 { 4 } else { 2 };
            c.data_mut()
                .logs
                .push((level, String::from_utf8_lossy(&out).into_owned()));
            write_u32(&mut c, written_out, n)?;
            Ok(0)
        },
    )?;
    l.func_wrap(
        wasi,
        "environ_sizes_get",
        |mut c: Cx<'_>, count: i32, size: i32| {
            write_u32(&mut c, count, 0)?;
            write_u32(&mut c, size, 0)?;
            Ok(0)
        },
    )?;
    l.func_wrap(wasi, "environ_get", |_: Cx<'_>, _: i32, _: i32| Ok(0))?;
    l.func_wrap(
        wasi,
        "proc_exit",
        |_: Cx<'_>, code: i32| -> wasmtime::Result<()> {
            Err(wasmtime::Error::msg(format!(
                "the plugin exited with {code}"
            )))
        },
    )?;
    l.func_wrap(
        wasi,
        "clock_time_get",
        |mut c: Cx<'_>, _id: i32, _precision: i64, out: i32| {
            let ns = c.data().now_ms.saturating_mul(1_000_000);
            write(&mut c, out, &ns.to_le_bytes())?;
            Ok(0)
        },
    )?;
    l.func_wrap(wasi, "random_get", |mut c: Cx<'_>, p: i32, n: i32| {
        let mut bytes = Vec::with_capacity(n as u32 as usize + 8);
        while bytes.len() < n as u32 as usize {
            let word = c.data_mut().next_random();
            bytes.extend_from_slice(&word.to_le_bytes());
        }
        bytes.truncate(n as u32 as usize);
        write(&mut c, p, &bytes)?;
        Ok(0)
    })?;
    Ok(())
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
            text.contains("env.proxy_mystery, which this host does not implement"),
            "{text}"
        );
    }
}
