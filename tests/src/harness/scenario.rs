//! Scenarios: a filter configuration, a scripted shim and a list of steps
//! (requests with their expected verdicts, time passing, identity changes),
//! run against the proxy-wasm host with a fixed clock.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::abi::Headers;
use super::proxy_wasm::{Plugin, Vm, VmOptions};
use super::world::{Answer, ShimScript, World};

/// One scenario of the table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// What it proves.
    pub name: String,
    /// The plugin configuration (as Envoy would pass it, JSON).
    pub config: serde_json::Value,
    /// The workload's service name (default `api`).
    #[serde(default = "api")]
    pub workload: String,
    /// How the shim behaves.
    #[serde(default)]
    pub shim: ShimScript,
    /// Simulated time before the first step, ms (the identity loads).
    #[serde(default = "warmup")]
    pub warmup_ms: u64,
    /// Whether the plugin accepts its configuration (default true).
    #[serde(default = "yes")]
    pub configures: bool,
    /// The steps.
    #[serde(default)]
    pub steps: Vec<Step>,
}

fn api() -> String {
    "api".into()
}
fn warmup() -> u64 {
    500
}
fn yes() -> bool {
    true
}

/// One step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Step {
    /// A request and what must come of it.
    Request {
        /// Request headers; values may hold `{token:CALLER}` and friends.
        headers: BTreeMap<String, String>,
        /// The status the upstream app answers (default 200).
        #[serde(default = "ok_status")]
        app_status: u16,
        /// The expected verdict (none: the verdict is only reported).
        #[serde(default)]
        expect: Option<Expectation>,
    },
    /// Simulated time passes (ticks and call answers happen).
    AdvanceMs(u64),
    /// The shim's mode changes.
    Shim(ShimScript),
    /// An identity change: `{rotate: NAME}`, `{remove: NAME}`, `{add: NAME}`.
    Identity(BTreeMap<String, String>),
}

fn ok_status() -> u16 {
    200
}

/// The expected verdict of a request. Unset fields are not checked.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// Status the client gets (the app's when forwarded).
    pub status: u16,
    /// Headers the app sees: a value, `null` for absent, `"*"` for any,
    /// `"$svid AUDIENCE"` for a JWT-SVID from the workload to AUDIENCE
    /// (`Bearer ` prefixed).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub app_headers: BTreeMap<String, Option<String>>,
    /// Text the local reply's body contains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_contains: Option<String>,
    /// Calls to the shim other than identity polls (`METHOD path`, ids as `{id}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calls: Option<Vec<String>>,
    /// Ledger events this request caused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger: Option<Vec<String>>,
}

/// What happened to a request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Status the client got (0: the filter never decided).
    pub status: u16,
    /// Headers the app saw (forwarded requests only).
    pub app_headers: BTreeMap<String, String>,
    /// The local reply's body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Calls to the shim other than identity polls.
    pub calls: Vec<String>,
    /// Ledger events.
    pub ledger: Vec<String>,
}

/// A call's answer, decided when the call was made: (token, due ms, answer).
type Scheduled = (u32, u64, Option<(u16, Headers, Vec<u8>)>);

/// Longest a paused request may wait, simulated ms.
const PATIENCE_MS: u64 = 30_000;

/// A scenario in progress.
pub struct Run {
    vm: Vm,
    world: World,
    scheduled: Vec<Scheduled>,
    next_tick_ms: u64,
    /// Whether the plugin accepted its configuration.
    pub configured: bool,
}

fn call_line(headers: &Headers) -> String {
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

impl Run {
    /// Starts the plugin with the scenario's config and lets `warmup_ms` pass.
    pub fn start(plugin: &Plugin, scenario: &Scenario) -> Result<Self, String> {
        let mut peers = vec!["orders", "billing", "research"];
        peers.retain(|p| *p != scenario.workload);
        let mut world = World::new(&scenario.workload, &peers)?;
        world.script = scenario.shim.clone();
        let config = serde_json::to_vec(&scenario.config).map_err(|e| e.to_string())?;
        let (vm, configured) =
            Vm::start(plugin, &config, &VmOptions::default()).map_err(|e| format!("{e:#}"))?;
        let next_tick_ms = vm.state().now_ms;
        let mut run = Self {
            vm,
            world,
            scheduled: Vec::new(),
            next_tick_ms,
            configured,
        };
        if configured {
            let until = run.vm.state().now_ms + scenario.warmup_ms;
            run.pump(until, None)?;
        }
        Ok(run)
    }

    /// The host clock, Unix seconds.
    pub fn now(&self) -> u64 {
        self.vm.state().now_ms / 1000
    }

    /// Runs simulated time up to `until_ms`, or until stream `stop` is
    /// decided: ticks at the root's period, call answers when due.
    fn pump(&mut self, until_ms: u64, stop: Option<u32>) -> Result<(), String> {
        loop {
            // Answer new calls (the shim decides at dispatch time).
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
            let next = [next_answer, next_tick_at].into_iter().flatten().min();
            match next {
                Some(t) if t <= until_ms => self.vm.state_mut().now_ms = t.max(now),
                _ => {
                    self.vm.state_mut().now_ms = until_ms.max(now);
                    return Ok(());
                }
            }
        }
    }

    /// Expands `{token:CALLER}`, `{token:CALLER@AUDIENCE}`,
    /// `{expired-token:CALLER}`, `{forged-token:CALLER}` (another
    /// service's key) and `{stranger-token:CALLER}` (a key no bundle has).
    fn expand(&self, value: &str, workload: &str) -> Result<String, String> {
        let Some(start) = value.find('{') else {
            return Ok(value.to_owned());
        };
        let end = value[start..].find('}').ok_or("unclosed {")? + start;
        let (kind, arg) = value[start + 1..end]
            .split_once(':')
            .ok_or("expected {kind:arg}")?;
        let (caller, audience) = match arg.split_once('@') {
            Some((c, a)) => (
                c,
                ephemera_core::SpiffeId::parse(a).map_err(|e| e.to_string())?,
            ),
            None => (arg, World::id(workload)),
        };
        let now = self.now();
        let token = match kind {
            "token" => self
                .world
                .token(caller, Some(caller), &audience, now, 300)?,
            "expired-token" => self
                .world
                .token(caller, Some(caller), &audience, now - 3600, 60)?,
            "forged-token" => {
                let other = if caller == "billing" {
                    "research"
                } else {
                    "billing"
                };
                self.world.token(caller, Some(other), &audience, now, 300)?
            }
            "stranger-token" => self.world.token(caller, None, &audience, now, 300)?,
            other => return Err(format!("unknown placeholder {other:?}")),
        };
        Ok(format!("{}{token}{}", &value[..start], &value[end + 1..]))
    }

    /// Sends one request through the filter and lets it finish.
    pub fn request(
        &mut self,
        headers: &BTreeMap<String, String>,
        app_status: u16,
        workload: &str,
    ) -> Result<Verdict, String> {
        let mut sent: Headers = Vec::new();
        for (k, v) in headers {
            sent.push((
                k.to_ascii_lowercase(),
                self.expand(v, workload)?.into_bytes(),
            ));
        }
        let calls_before = self.vm.state().dispatched.len();
        let ledger_before = self.world.ledger.len();
        let (id, continued) = self.vm.request(sent).map_err(|e| format!("{e:#}"))?;
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
        let until = self.vm.state().now_ms + 1000;
        self.pump(until, None)?;
        verdict.calls = self.vm.state().dispatched[calls_before..]
            .iter()
            .map(|c| call_line(&c.headers))
            .filter(|l| l != "GET /v1/identity")
            .collect();
        verdict.ledger = self.world.ledger[ledger_before..].to_vec();
        Ok(verdict)
    }

    /// Checks a verdict against an expectation; every mismatch is listed.
    pub fn check(&self, verdict: &Verdict, expect: &Expectation, workload: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if verdict.status != expect.status {
            problems.push(format!(
                "status {} (expected {})",
                verdict.status, expect.status
            ));
        }
        for (name, want) in &expect.app_headers {
            let got = verdict.app_headers.get(&name.to_ascii_lowercase());
            let ok = match (want.as_deref(), got) {
                (None, None) => true,
                (None, Some(_)) | (Some(_), None) => false,
                (Some("*"), Some(_)) => true,
                (Some(w), Some(g)) if w.starts_with("$svid ") => {
                    let audience = ephemera_core::SpiffeId::parse(&w["$svid ".len()..]);
                    match (audience, g.strip_prefix("Bearer ")) {
                        (Ok(aud), Some(token)) => self
                            .world
                            .verify_minted(token, &aud, self.now())
                            .is_ok_and(|sub| sub == World::id(workload)),
                        _ => false,
                    }
                }
                (Some(w), Some(g)) => w == g,
            };
            if !ok {
                problems.push(format!(
                    "app header {name}: {} (expected {})",
                    got.map_or("absent".into(), |g| format!("{g:?}")),
                    want.as_deref()
                        .map_or("absent".into(), |w| format!("{w:?}"))
                ));
            }
        }
        if let Some(needle) = &expect.body_contains
            && !verdict
                .body
                .as_deref()
                .unwrap_or_default()
                .contains(needle.as_str())
        {
            problems.push(format!("reply body {:?} lacks {needle:?}", verdict.body));
        }
        if let Some(calls) = &expect.calls
            && *calls != verdict.calls
        {
            problems.push(format!(
                "shim calls {:?} (expected {calls:?})",
                verdict.calls
            ));
        }
        if let Some(ledger) = &expect.ledger
            && *ledger != verdict.ledger
        {
            problems.push(format!("ledger {:?} (expected {ledger:?})", verdict.ledger));
        }
        problems
    }

    /// Applies a non-request step.
    pub fn step(&mut self, step: &Step) -> Result<(), String> {
        match step {
            Step::AdvanceMs(ms) => {
                let until = self.vm.state().now_ms + ms;
                self.pump(until, None)
            }
            Step::Shim(script) => {
                self.world.script = script.clone();
                Ok(())
            }
            Step::Identity(changes) => {
                for (op, name) in changes {
                    self.world.change(op, name)?;
                }
                Ok(())
            }
            Step::Request { .. } => Err("requests go through Run::request".into()),
        }
    }

    /// The VM's log lines.
    pub fn logs(&self) -> Vec<String> {
        self.vm
            .state()
            .logs
            .iter()
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// The VM's metrics.
    pub fn metrics(&self) -> &BTreeMap<String, i64> {
        &self.vm.state().metrics
    }
}

/// Runs a whole scenario; `Err` lists every failed expectation.
pub fn run_scenario(plugin: &Plugin, scenario: &Scenario) -> Result<(), Vec<String>> {
    let mut run = Run::start(plugin, scenario).map_err(|e| vec![e])?;
    if run.configured != scenario.configures {
        return Err(vec![format!(
            "configure returned {} (expected {})",
            run.configured, scenario.configures
        )]);
    }
    let mut problems = Vec::new();
    for (i, step) in scenario.steps.iter().enumerate() {
        match step {
            Step::Request {
                headers,
                app_status,
                expect,
            } => match run.request(headers, *app_status, &scenario.workload) {
                Ok(verdict) => {
                    if let Some(expect) = expect {
                        problems.extend(
                            run.check(&verdict, expect, &scenario.workload)
                                .into_iter()
                                .map(|p| format!("step {i}: {p}")),
                        );
                    }
                }
                Err(e) => problems.push(format!("step {i}: {e}")),
            },
            other => {
                if let Err(e) = run.step(other) {
                    problems.push(format!("step {i}: {e}"));
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Parses a scenario table (YAML or JSON; `{step: …}` maps as in the file).
pub fn parse_table(text: &str) -> Result<Vec<Scenario>, String> {
    let value: serde_json::Value = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    serde_json::from_value(value).map_err(|e| e.to_string())
}
