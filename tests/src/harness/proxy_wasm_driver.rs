//! Scenarios on the proxy-wasm host: one VM per worker, as Envoy runs one
//! per worker thread; requests go to the workers in turn; the
//! shim's answers are delivered as Envoy delivers them (after their delay,
//! or as a failure at the call's timeout), and each root ticks at the
//! period it asked for.

use super::abi::Headers;
use super::foreign::HostCrypto;
use super::proxy_wasm::{Plugin, Vm, VmOptions};
use super::scenario::{Driver, Verdict};
use super::world::{Answer, World};

/// A call's answer, decided when the call was made.
struct Scheduled {
    worker: usize,
    token: u32,
    due_ms: u64,
    answer: Option<(u16, Headers, Vec<u8>)>,
}

/// Longest a paused request may wait, simulated ms.
const PATIENCE_MS: u64 = 30_000;

/// One worker: its VM, when it ticks next, and how many of its log lines
/// were collected.
struct Worker {
    vm: Vm,
    next_tick_ms: u64,
    logs_seen: usize,
}

/// The release filter in one VM per worker, with its world.
pub struct ProxyWasmDriver {
    workers: Vec<Worker>,
    world: World,
    scheduled: Vec<Scheduled>,
    turn: usize,
    configured: bool,
    logs: Vec<String>,
}

/// A call in the shim's vocabulary: `METHOD path`, ids as `{id}`.
pub fn call_line(headers: &Headers) -> String {
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    };
    let path = get(":path");
    // Transaction ids are random: show their place, not their value.
    let path = match path.strip_prefix("/v1/transactions/") {
        Some(rest) => match rest.split_once('/') {
            Some((_, tail)) => format!("/v1/transactions/{{id}}/{tail}"),
            None => path.clone(),
        },
        None => path,
    };
    format!("{} {}", get(":method"), path)
}

impl ProxyWasmDriver {
    /// Starts `workers` VMs of `plugin` (at least one), each configured with
    /// `config`, on a host offering `crypto`.
    pub fn start(
        plugin: &Plugin,
        config: &[u8],
        world: World,
        workers: usize,
        crypto: HostCrypto,
    ) -> Result<Self, String> {
        let base = VmOptions::default();
        let mut configured = true;
        let mut started = Vec::new();
        for worker in 0..workers.max(1) {
            let options = VmOptions {
                // Workers draw different randomness, as real ones do.
                seed: base.seed + worker as u64,
                crypto,
                ..base.clone()
            };
            let (vm, ok) = Vm::start(plugin, config, &options).map_err(|e| format!("{e:#}"))?;
            configured &= ok;
            // The first tick comes one period after start-up, as in Envoy.
            started.push(Worker {
                next_tick_ms: vm.state().now_ms + vm.state().tick_ms,
                vm,
                logs_seen: 0,
            });
        }
        let mut driver = Self {
            workers: started,
            world,
            scheduled: Vec::new(),
            turn: 0,
            configured,
            logs: Vec::new(),
        };
        driver.collect_logs();
        Ok(driver)
    }

    /// The shim calls each worker made, in the shim's vocabulary.
    pub fn calls_by_worker(&self) -> Vec<Vec<String>> {
        self.workers
            .iter()
            .map(|w| {
                w.vm.state()
                    .dispatched
                    .iter()
                    .map(|c| call_line(&c.headers))
                    .collect()
            })
            .collect()
    }

    /// A client that sends `headers` to worker 0 and leaves before anything
    /// is answered: the stream ends at once, its calls are cancelled as
    /// Envoy cancels them. Returns the calls the request made.
    pub fn leave_at_once(&mut self, headers: Headers) -> Result<Vec<String>, String> {
        let vm = &mut self.workers[0].vm;
        let before = vm.state().dispatched.len();
        let (id, _) = vm.request(headers).map_err(|e| format!("{e:#}"))?;
        vm.end(id).map_err(|e| format!("{e:#}"))?;
        Ok(vm.state().dispatched[before..]
            .iter()
            .map(|c| call_line(&c.headers))
            .collect())
    }

    fn now(&self) -> u64 {
        self.workers[0].vm.state().now_ms
    }

    fn set_now(&mut self, ms: u64) {
        for w in &mut self.workers {
            w.vm.state_mut().now_ms = ms;
        }
    }

    /// Moves new log lines of every worker to the driver's log, marked
    /// with their worker when there are several.
    fn collect_logs(&mut self) {
        let several = self.workers.len() > 1;
        for (i, w) in self.workers.iter_mut().enumerate() {
            let lines = &w.vm.state().logs[w.logs_seen..];
            self.logs.extend(lines.iter().map(|(_, l)| {
                if several {
                    format!("[worker {i}] {l}")
                } else {
                    l.clone()
                }
            }));
            w.logs_seen += lines.len();
        }
    }

    /// Runs simulated time up to `until_ms`, or until stream `stop` of
    /// worker `stop.0` is decided: ticks at each root's period, call
    /// answers when due.
    fn pump(&mut self, until_ms: u64, stop: Option<(usize, u32)>) -> Result<(), String> {
        loop {
            // The shim decides each new call's answer when it arrives.
            for (worker, w) in self.workers.iter().enumerate() {
                for call in &w.vm.state().pending {
                    if self
                        .scheduled
                        .iter()
                        .any(|s| s.worker == worker && s.token == call.token)
                    {
                        continue;
                    }
                    let deadline = call.at_ms + call.timeout_ms;
                    let (due_ms, answer) =
                        match self.world.answer(&call.headers, &call.body, call.at_ms) {
                            Answer::After(delay, status, h, b) if call.at_ms + delay < deadline => {
                                (call.at_ms + delay, Some((status, h, b)))
                            }
                            _ => (deadline, None),
                        };
                    self.scheduled.push(Scheduled {
                        worker,
                        token: call.token,
                        due_ms,
                        answer,
                    });
                }
            }
            if let Some((worker, id)) = stop {
                let state = self.workers[worker].vm.state();
                if state.replies.contains_key(&id) || state.resumed.contains(&id) {
                    return Ok(());
                }
            }
            let now = self.now();
            if let Some(i) = self.scheduled.iter().position(|s| s.due_ms <= now) {
                let s = self.scheduled.remove(i);
                self.workers[s.worker]
                    .vm
                    .answer(s.token, s.answer)
                    .map_err(|e| format!("{e:#}"))?;
                continue;
            }
            if let Some(w) = self.workers.iter_mut().find(|w| {
                let tick = w.vm.state().tick_ms;
                tick > 0 && w.next_tick_ms <= now
            }) {
                w.vm.tick().map_err(|e| format!("{e:#}"))?;
                w.next_tick_ms = now + w.vm.state().tick_ms;
                continue;
            }
            let next_answer = self.scheduled.iter().map(|s| s.due_ms).min();
            let next_tick = self
                .workers
                .iter()
                .filter(|w| w.vm.state().tick_ms > 0)
                .map(|w| w.next_tick_ms)
                .min();
            match [next_answer, next_tick].into_iter().flatten().min() {
                Some(t) if t <= until_ms => self.set_now(t.max(now)),
                _ => {
                    self.set_now(until_ms.max(now));
                    return Ok(());
                }
            }
        }
    }
}

impl Driver for ProxyWasmDriver {
    fn configured(&self) -> bool {
        self.configured
    }

    fn world(&self) -> &World {
        &self.world
    }

    fn world_mut(&mut self) -> &mut World {
        &mut self.world
    }

    fn now_ms(&self) -> u64 {
        self.now()
    }

    fn advance(&mut self, ms: u64) -> Result<(), String> {
        let until = self.now() + ms;
        let out = self.pump(until, None);
        self.collect_logs();
        out
    }

    fn request(
        &mut self,
        headers: Headers,
        cluster: Option<&str>,
        app_status: u16,
    ) -> Result<Verdict, String> {
        let worker = self.turn % self.workers.len();
        self.turn += 1;
        let calls_before: Vec<usize> = self
            .workers
            .iter()
            .map(|w| w.vm.state().dispatched.len())
            .collect();
        let ledger_before = self.world.ledger.len();
        let vm = &mut self.workers[worker].vm;
        vm.set_property("xds.cluster_name", cluster);
        let (id, continued) = vm.request(headers).map_err(|e| format!("{e:#}"))?;
        if !continued && !vm.state().replies.contains_key(&id) {
            let until = self.now() + PATIENCE_MS;
            self.pump(until, Some((worker, id)))?;
        }
        let vm = &mut self.workers[worker].vm;
        let reply = vm.state().replies.get(&id).cloned();
        let forwarded = reply.is_none() && (continued || vm.state().resumed.contains(&id));
        let mut verdict = Verdict::default();
        if let Some(reply) = &reply {
            verdict.status = u16::try_from(reply.status).unwrap_or(0);
            verdict.body = Some(reply.body.clone());
            verdict.reply_headers = reply
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
                .collect();
            vm.end(id).map_err(|e| format!("{e:#}"))?;
        } else if forwarded {
            verdict.status = app_status;
            verdict.app_headers = vm
                .request_headers(id)
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                .collect();
            vm.respond_and_end(id, app_status)
                .map_err(|e| format!("{e:#}"))?;
        } else {
            vm.end(id).map_err(|e| format!("{e:#}"))?;
        }
        // Closes go out on the next ticks.
        self.advance(1000)?;
        let mut calls: Vec<_> = self
            .workers
            .iter()
            .zip(calls_before)
            .flat_map(|(w, before)| &w.vm.state().dispatched[before..])
            .collect();
        calls.sort_by_key(|c| c.at_ms);
        verdict.calls = calls
            .into_iter()
            .map(|c| call_line(&c.headers))
            .filter(|l| l != "GET /v1/identity")
            .collect();
        verdict.ledger = self.world.ledger[ledger_before..].to_vec();
        Ok(verdict)
    }

    fn logs(&self) -> Vec<String> {
        self.logs.clone()
    }
}
