//! Scenarios on the proxy-wasm host: the shim's answers are delivered as
//! Envoy delivers them (after their delay, or as a failure at the call's
//! timeout), and ticks run at the period the root asked for.

use super::abi::Headers;
use super::proxy_wasm::{Plugin, Vm, VmOptions};
use super::scenario::{Driver, Verdict};
use super::world::{Answer, World};

/// A call's answer, decided when the call was made: (token, due ms, answer).
type Scheduled = (u32, u64, Option<(u16, Headers, Vec<u8>)>);

/// Longest a paused request may wait, simulated ms.
const PATIENCE_MS: u64 = 30_000;

/// The release filter in a proxy-wasm VM, with its world.
pub struct ProxyWasmDriver {
    vm: Vm,
    world: World,
    scheduled: Vec<Scheduled>,
    next_tick_ms: u64,
    configured: bool,
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
    /// Starts a VM of `plugin` configured with `config`.
    pub fn start(plugin: &Plugin, config: &[u8], world: World) -> Result<Self, String> {
        let (vm, configured) =
            Vm::start(plugin, config, &VmOptions::default()).map_err(|e| format!("{e:#}"))?;
        let next_tick_ms = vm.state().now_ms;
        Ok(Self {
            vm,
            world,
            scheduled: Vec::new(),
            next_tick_ms,
            configured,
        })
    }

    /// Runs simulated time up to `until_ms`, or until stream `stop` is
    /// decided: ticks at the root's period, call answers when due.
    fn pump(&mut self, until_ms: u64, stop: Option<u32>) -> Result<(), String> {
        loop {
            // The shim decides each new call's answer when it arrives.
            let fresh: Vec<_> = self
                .vm
                .state()
                .pending
                .iter()
                .filter(|c| !self.scheduled.iter().any(|(t, _, _)| *t == c.token))
                .cloned()
                .collect();
            for call in fresh {
                let deadline = call.at_ms + call.timeout_ms;
                let (due, answer) = match self.world.answer(&call.headers, &call.body, call.at_ms) {
                    Answer::After(delay, status, h, b) if call.at_ms + delay < deadline => {
                        (call.at_ms + delay, Some((status, h, b)))
                    }
                    _ => (deadline, None),
                };
                self.scheduled.push((call.token, due, answer));
            }
            if let Some(id) = stop
                && (self.vm.state().replies.contains_key(&id)
                    || self.vm.state().resumed.contains(&id))
            {
                return Ok(());
            }
            let now = self.vm.state().now_ms;
            if let Some(i) = self.scheduled.iter().position(|(_, due, _)| *due <= now) {
                let (token, _, answer) = self.scheduled.remove(i);
                self.vm
                    .answer(token, answer)
                    .map_err(|e| format!("{e:#}"))?;
                continue;
            }
            let tick = self.vm.state().tick_ms;
            if tick > 0 && self.next_tick_ms <= now {
                self.vm.tick().map_err(|e| format!("{e:#}"))?;
                self.next_tick_ms = now + tick;
                continue;
            }
            let next_answer = self.scheduled.iter().map(|(_, due, _)| *due).min();
            let next_tick_at = (tick > 0).then_some(self.next_tick_ms);
            match [next_answer, next_tick_at].into_iter().flatten().min() {
                Some(t) if t <= until_ms => self.vm.state_mut().now_ms = t.max(now),
                _ => {
                    self.vm.state_mut().now_ms = until_ms.max(now);
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
        self.vm.state().now_ms
    }

    fn advance(&mut self, ms: u64) -> Result<(), String> {
        let until = self.vm.state().now_ms + ms;
        self.pump(until, None)
    }

    fn request(
        &mut self,
        headers: Headers,
        cluster: Option<&str>,
        app_status: u16,
    ) -> Result<Verdict, String> {
        self.vm.set_property("xds.cluster_name", cluster);
        let calls_before = self.vm.state().dispatched.len();
        let ledger_before = self.world.ledger.len();
        let (id, continued) = self.vm.request(headers).map_err(|e| format!("{e:#}"))?;
        if !continued && !self.vm.state().replies.contains_key(&id) {
            let until = self.vm.state().now_ms + PATIENCE_MS;
            self.pump(until, Some(id))?;
        }
        let reply = self.vm.state().replies.get(&id).cloned();
        let forwarded = reply.is_none() && (continued || self.vm.state().resumed.contains(&id));
        let mut verdict = Verdict::default();
        if let Some(reply) = &reply {
            verdict.status = u16::try_from(reply.status).unwrap_or(0);
            verdict.body = Some(reply.body.clone());
            verdict.reply_headers = reply
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
                .collect();
            self.vm.end(id).map_err(|e| format!("{e:#}"))?;
        } else if forwarded {
            verdict.status = app_status;
            verdict.app_headers = self
                .vm
                .request_headers(id)
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                .collect();
            self.vm
                .respond_and_end(id, app_status)
                .map_err(|e| format!("{e:#}"))?;
        } else {
            self.vm.end(id).map_err(|e| format!("{e:#}"))?;
        }
        // Closes go out on the next ticks.
        self.advance(1000)?;
        verdict.calls = self.vm.state().dispatched[calls_before..]
            .iter()
            .map(|c| call_line(&c.headers))
            .filter(|l| l != "GET /v1/identity")
            .collect();
        verdict.ledger = self.world.ledger[ledger_before..].to_vec();
        Ok(verdict)
    }

    fn logs(&self) -> Vec<String> {
        self.vm
            .state()
            .logs
            .iter()
            .map(|(_, l)| l.clone())
            .collect()
    }
}
