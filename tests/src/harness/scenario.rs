//! Scenarios: a filter configuration, a scripted shim and a list of steps
//! (requests with their expected verdicts, time passing, identity changes),
//! run against the proxy-wasm host with a fixed clock.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::abi::Headers;
use super::world::{ShimScript, Signer, World};

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
    /// An existing provisioning root to use (default: a fresh one with
    /// `api`, `orders`, `billing` and `research`).
    #[serde(default)]
    pub root: Option<std::path::PathBuf>,
    /// How the shim behaves.
    #[serde(default)]
    pub shim: ShimScript,
    /// Worker VMs of the proxy-wasm build (Envoy's `--concurrency`); the
    /// requests go to them in turn. The component host runs one instance.
    #[serde(default = "one")]
    pub workers: usize,
    /// The crypto foreign functions the proxy-wasm host offers (default
    /// none); the component host offers none.
    #[serde(default)]
    pub host_crypto: super::foreign::HostCrypto,
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
fn one() -> usize {
    1
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
        /// The upstream cluster Envoy routed to (`xds.cluster_name`).
        #[serde(default)]
        cluster: Option<String>,
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
    /// Headers of the local reply (value, or `null` for absent).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reply_headers: BTreeMap<String, Option<String>>,
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
    /// The local reply's headers.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub reply_headers: BTreeMap<String, String>,
    /// Calls to the shim other than identity polls.
    pub calls: Vec<String>,
    /// Ledger events.
    pub ledger: Vec<String>,
}

/// Drives one build of the filter through a scenario.
pub trait Driver {
    /// Whether the plugin accepted its configuration.
    fn configured(&self) -> bool;
    /// The world around the filter.
    fn world(&self) -> &World;
    /// The world, mutable.
    fn world_mut(&mut self) -> &mut World;
    /// The host clock, Unix milliseconds.
    fn now_ms(&self) -> u64;
    /// Lets simulated time pass.
    fn advance(&mut self, ms: u64) -> Result<(), String>;
    /// Sends one request (headers expanded; routed to `cluster`) and lets
    /// it finish.
    fn request(
        &mut self,
        headers: Headers,
        cluster: Option<&str>,
        app_status: u16,
    ) -> Result<Verdict, String>;
    /// The filter's log lines so far.
    fn logs(&self) -> Vec<String>;
}

/// The builds a scenario runs against.
#[derive(Clone, Copy)]
pub enum Build<'a> {
    /// `ephemera_envoy.wasm` on the proxy-wasm host.
    ProxyWasm(&'a super::proxy_wasm::Plugin),
    /// `ephemera_component.wasm` on the component host.
    Component(&'a super::component::ComponentPlugin),
}

/// A scenario in progress.
pub struct Run {
    driver: Box<dyn Driver>,
}

impl Run {
    /// Starts `build` with the scenario's config and lets `warmup_ms` pass.
    pub fn start(build: Build<'_>, scenario: &Scenario) -> Result<Self, String> {
        let mut world = match &scenario.root {
            Some(root) => World::existing(root, &scenario.workload)?,
            None => {
                let mut peers = vec!["orders", "billing", "research"];
                peers.retain(|p| *p != scenario.workload);
                World::new(&scenario.workload, &peers)?
            }
        };
        world.script = scenario.shim.clone();
        let config = serde_json::to_vec(&scenario.config).map_err(|e| e.to_string())?;
        let mut driver: Box<dyn Driver> = match build {
            Build::ProxyWasm(plugin) => Box::new(super::proxy_wasm_driver::ProxyWasmDriver::start(
                plugin,
                &config,
                world,
                scenario.workers,
                scenario.host_crypto,
            )?),
            Build::Component(_) if scenario.workers != 1 => {
                return Err("the component host runs one instance (workers: 1)".into());
            }
            Build::Component(_) if scenario.host_crypto != super::foreign::HostCrypto::Absent => {
                return Err("the component host offers no foreign functions".into());
            }
            Build::Component(plugin) => Box::new(super::component::ComponentDriver::start(
                plugin, &config, world,
            )?),
        };
        if driver.configured() {
            driver.advance(scenario.warmup_ms)?;
        }
        Ok(Self { driver })
    }

    /// Whether the plugin accepted its configuration.
    pub fn configured(&self) -> bool {
        self.driver.configured()
    }

    /// The host clock, Unix seconds.
    pub fn now(&self) -> u64 {
        self.driver.now_ms() / 1000
    }

    /// Expands `{token:CALLER}`, `{token:CALLER@AUDIENCE}`,
    /// `{expired-token:CALLER}`, `{retired-token:CALLER}` (the key before
    /// its last rotation), `{forged-token:CALLER}` (another service's key)
    /// and `{stranger-token:CALLER}` (a key no bundle has).
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
            None => (arg, self.driver.world().id(workload)?),
        };
        let now = self.now();
        let world = self.driver.world();
        let (signer, now, ttl) = match kind {
            "token" => (Signer::Current(caller), now, 300),
            "expired-token" => (Signer::Current(caller), now - 3600, 60),
            "retired-token" => (Signer::Retired(caller), now, 300),
            "forged-token" => {
                let other = if caller == "billing" {
                    "research"
                } else {
                    "billing"
                };
                (Signer::Current(other), now, 300)
            }
            "stranger-token" => (Signer::Stranger, now, 300),
            other => return Err(format!("unknown placeholder {other:?}")),
        };
        let token = world.token(caller, signer, &audience, now, ttl)?;
        Ok(format!("{}{token}{}", &value[..start], &value[end + 1..]))
    }

    /// Sends one request through the filter and lets it finish.
    pub fn request(
        &mut self,
        headers: &BTreeMap<String, String>,
        cluster: Option<&str>,
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
        self.driver.request(sent, cluster, app_status)
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
                            .driver
                            .world()
                            .verify_minted(token, &aud, self.now())
                            .is_ok_and(|sub| Ok(sub) == self.driver.world().id(workload)),
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
        for (name, want) in &expect.reply_headers {
            let got = verdict.reply_headers.get(&name.to_ascii_lowercase());
            if got != want.as_ref() {
                problems.push(format!("reply header {name}: {got:?} (expected {want:?})"));
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
        // Problems quote what the filter did: never a secret or a token.
        problems.iter().map(|p| self.redact(p)).collect()
    }

    /// Applies a non-request step.
    fn step(&mut self, step: &Step) -> Result<(), String> {
        match step {
            Step::AdvanceMs(ms) => self.driver.advance(*ms),
            Step::Shim(script) => {
                self.driver.world_mut().script = script.clone();
                Ok(())
            }
            Step::Identity(changes) => {
                for (op, name) in changes {
                    self.driver.world_mut().change(op, name)?;
                }
                Ok(())
            }
            Step::Request { .. } => Err("requests go through Run::request".into()),
        }
    }

    /// Plays one step: a request gives its verdict, any other step none.
    pub fn play(&mut self, step: &Step, workload: &str) -> Result<Option<Verdict>, String> {
        match step {
            Step::Request {
                headers,
                cluster,
                app_status,
                ..
            } => self
                .request(headers, cluster.as_deref(), *app_status, workload)
                .map(Some),
            other => self.step(other).map(|()| None),
        }
    }

    /// `text` with every secret value and credential the shim handed out
    /// replaced by its label (see [`World::redact`]).
    pub fn redact(&self, text: &str) -> String {
        self.driver.world().redact(text)
    }

    /// `verdict` with its text redacted as [`Run::redact`] does.
    pub fn redacted(&self, verdict: Verdict) -> Verdict {
        let map = |m: BTreeMap<String, String>| {
            m.into_iter().map(|(k, v)| (k, self.redact(&v))).collect()
        };
        Verdict {
            status: verdict.status,
            app_headers: map(verdict.app_headers),
            body: verdict.body.map(|b| self.redact(&b)),
            reply_headers: map(verdict.reply_headers),
            calls: verdict.calls,
            ledger: verdict.ledger.iter().map(|l| self.redact(l)).collect(),
        }
    }

    /// The filter's log lines.
    pub fn logs(&self) -> Vec<String> {
        self.driver.logs()
    }
}

/// Runs a whole scenario; `Err` lists every failed expectation.
pub fn run_scenario(build: Build<'_>, scenario: &Scenario) -> Result<(), Vec<String>> {
    let mut run = Run::start(build, scenario).map_err(|e| vec![e])?;
    if run.configured() != scenario.configures {
        return Err(vec![format!(
            "configure returned {} (expected {})",
            run.configured(),
            scenario.configures
        )]);
    }
    let mut problems = Vec::new();
    for (i, step) in scenario.steps.iter().enumerate() {
        match run.play(step, &scenario.workload) {
            Ok(Some(verdict)) => {
                if let Step::Request {
                    expect: Some(expect),
                    ..
                } = step
                {
                    let found = run.check(&verdict, expect, &scenario.workload);
                    problems.extend(found.into_iter().map(|p| format!("step {i}: {p}")));
                }
            }
            Ok(None) => {}
            Err(e) => problems.push(format!("step {i}: {e}")),
        }
    }
    // The filter never logs a secret value, a credential or a token.
    for line in run.logs() {
        let shown = run.redact(&line);
        if shown != line {
            problems.push(format!("the filter logged a secret or token: {shown}"));
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

/// The verdicts of every request of a scenario, unchecked.
pub fn verdicts(build: Build<'_>, scenario: &Scenario) -> Result<Vec<Verdict>, String> {
    let mut run = Run::start(build, scenario)?;
    let mut out = Vec::new();
    if !run.configured() {
        return Ok(out);
    }
    for step in &scenario.steps {
        if let Some(verdict) = run.play(step, &scenario.workload)? {
            out.push(verdict);
        }
    }
    Ok(out)
}
