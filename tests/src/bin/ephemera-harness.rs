//! `ephemera-harness`: runs the ephemera filter without Envoy. `dry-run`
//! shows what the filter would do with a plugin configuration and a
//! request; `table` runs a scenario table.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ephemera_tests::harness::component::{ComponentPlugin, component_path};
use ephemera_tests::harness::proxy_wasm::Plugin;
use ephemera_tests::harness::scenario::{Build, Run, Scenario, Step, parse_table, run_scenario};
use ephemera_tests::harness::world::{ShimScript, plugin_path, require};

#[derive(Parser)]
#[command(
    name = "ephemera-harness",
    about = "Run the ephemera filter without Envoy"
)]
struct Cli {
    /// Which build runs: the proxy-wasm module Envoy loads, or the component.
    #[arg(long, global = true, value_enum, default_value = "proxy-wasm")]
    host: HostKind,
    /// The build to load (default: the release build, or $EPHEMERA_WASM /
    /// $EPHEMERA_COMPONENT).
    #[arg(long, global = true)]
    wasm: Option<PathBuf>,
    /// Worker VMs of the proxy-wasm build, sharing data as Envoy's workers
    /// do; requests go to them in turn (default: 1, or each scenario's own).
    #[arg(long, global = true)]
    workers: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum HostKind {
    /// `ephemera_envoy.wasm` on the proxy-wasm host.
    ProxyWasm,
    /// `ephemera_component.wasm` on the component host.
    Component,
}

#[derive(Subcommand)]
enum Command {
    /// Print what the filter does with each request (status, headers the
    /// app sees, calls to the shim, ledger events, the filter's log).
    DryRun(DryRun),
    /// Run a scenario table; exit 1 if any scenario fails.
    Table {
        /// The table (YAML or JSON).
        file: PathBuf,
    },
}

fn read_value(path: &PathBuf) -> Result<serde_json::Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_yaml_ng::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn steps_of(value: serde_json::Value) -> Result<Vec<Step>, String> {
    let steps = if value.is_array() {
        value
    } else {
        serde_json::json!([{ "request": value }])
    };
    serde_json::from_value(steps).map_err(|e| format!("request: {e}"))
}

/// What a dry run is given.
#[derive(clap::Args)]
struct DryRun {
    /// The plugin configuration (YAML or JSON), as given to Envoy.
    #[arg(long)]
    config: PathBuf,
    /// A request `{headers, app_status}`, or a list of steps as in a
    /// scenario table.
    #[arg(long)]
    request: PathBuf,
    /// How the scripted shim answers (YAML or JSON; default: at once).
    #[arg(long)]
    shim: Option<PathBuf>,
    /// The workload's service name.
    #[arg(long, default_value = "api")]
    workload: String,
    /// A provisioning root to mint test tokens from and serve identity
    /// of (default: a fresh one with api, orders, billing, research).
    #[arg(long)]
    root: Option<PathBuf>,
    /// Send the filter's calls to a real shim on this Unix socket
    /// (`ephemera serve --listen unix:PATH`) instead of the scripted one
    /// (proxy-wasm host).
    #[arg(long)]
    shim_socket: Option<PathBuf>,
}

fn dry_run(build: Build<'_>, d: &DryRun, workers: Option<usize>) -> Result<bool, String> {
    let mut shim: ShimScript = match &d.shim {
        Some(path) => serde_json::from_value(read_value(path)?)
            .map_err(|e| format!("{}: {e}", path.display()))?,
        None => ShimScript::default(),
    };
    shim.live = d.shim_socket.clone().or(shim.live);
    let scenario = Scenario {
        name: "dry run".into(),
        config: read_value(&d.config)?,
        workload: d.workload.clone(),
        root: d.root.clone(),
        shim,
        workers: workers.unwrap_or(1),
        host_crypto: Default::default(),
        warmup_ms: 500,
        configures: true,
        steps: steps_of(read_value(&d.request)?)?,
    };
    let mut run = Run::start(build, &scenario).map_err(|e| e.to_string())?;
    if !run.configured() {
        println!("configuration: refused");
        for line in run.logs() {
            println!("  log: {}", run.redact(line.trim_end()));
        }
        return Ok(false);
    }
    let mut logs_seen = run.logs().len();
    for step in &scenario.steps {
        let Some(verdict) = run.play(step, &scenario.workload)? else {
            continue;
        };
        let shown =
            serde_yaml_ng::to_string(&run.redacted(verdict.clone())).map_err(|e| e.to_string())?;
        println!("---\n{}", shown.trim_end());
        let logs = run.logs();
        for line in &logs[logs_seen..] {
            println!("# log: {}", run.redact(line.trim_end()));
        }
        logs_seen = logs.len();
        if let Step::Request {
            expect: Some(expect),
            ..
        } = step
        {
            let problems = run.check(&verdict, expect, &scenario.workload);
            for p in &problems {
                println!("# not as expected: {p}");
            }
            if !problems.is_empty() {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

fn table(build: Build<'_>, file: &PathBuf, workers: Option<usize>) -> Result<bool, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut scenarios = parse_table(&text).map_err(|e| format!("{}: {e}", file.display()))?;
    if let Some(n) = workers {
        scenarios.iter_mut().for_each(|s| s.workers = n);
    }
    let started = std::time::Instant::now();
    let mut failed = 0;
    for s in &scenarios {
        match run_scenario(build, s) {
            Ok(()) => println!("ok    {}", s.name),
            Err(problems) => {
                failed += 1;
                println!("FAIL  {}", s.name);
                for p in problems {
                    println!("        {p}");
                }
            }
        }
    }
    println!(
        "{} scenarios, {failed} failed, {:.2?}",
        scenarios.len(),
        started.elapsed()
    );
    Ok(failed == 0)
}

/// Compiles the build at `given`, else at the default path.
fn load<T>(
    given: Option<&PathBuf>,
    default: fn() -> PathBuf,
    compile: fn(&std::path::Path) -> wasmtime::Result<T>,
) -> Result<T, String> {
    let path = given.cloned().unwrap_or_else(default);
    require(&path)?;
    compile(&path).map_err(|e| format!("{}: {e:#}", path.display()))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.host {
        HostKind::ProxyWasm => load(cli.wasm.as_ref(), plugin_path, Plugin::load)
            .and_then(|p| run(&cli, Build::ProxyWasm(&p))),
        HostKind::Component if cli.workers.is_some_and(|n| n != 1) => Err(
            "--workers applies to the proxy-wasm host; the component host runs one instance".into(),
        ),
        HostKind::Component => load(cli.wasm.as_ref(), component_path, ComponentPlugin::load)
            .and_then(|p| run(&cli, Build::Component(&p))),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("ephemera-harness: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: &Cli, build: Build<'_>) -> Result<bool, String> {
    match &cli.command {
        Command::DryRun(d) => dry_run(build, d, cli.workers),
        Command::Table { file } => table(build, file, cli.workers),
    }
}
