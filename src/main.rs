//! `sluice`: run an OpenTelemetry Collector config on sluice's Arrow engine.
//!
//! - `sluice [--config SOURCE]... [--set KEY=VALUE]...` runs (no `--config`: the embedded default
//!   gateway config); a source is a file, `yaml:TEXT` or `env:VAR`, as the Collector's. SIGHUP
//!   reloads the sources, as the Collector does: a valid new config replaces the running
//!   pipelines (the old ones shut down first, draining as at exit), an invalid one is refused
//!   and the running one kept;
//! - `sluice validate --config SOURCE...` checks a config and exits non-zero on any error;
//! - `sluice components` lists what is built in;
//! - `sluice loadgen traces|metrics|logs --endpoint ...` drives an OTLP endpoint and reports;
//! - `sluice replay --config FILE CAPTURE...` runs captured OTLP through the config offline, on
//!   a virtual clock, and reports what it did (`src/replay/README.md`).

mod loadgen;
mod process_memory;
mod replay;
mod telemetry_push;
mod telemetry_server;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use sluice_engine::clock::WallClock;
use sluice_engine::component::Kind;
use sluice_engine::config::{
    self, Config, DEFAULT_CONFIG, DEFAULT_CONFIG_NAME, LogEncoding, Registry, Source,
};
use sluice_engine::health::Health;
use sluice_engine::schema::Signal;
use sluice_engine::service::Service;
use sluice_engine::telemetry::{Telemetry, register_process_metrics};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ABOUT: &str = "OpenTelemetry agent and gateway on Apache Arrow";

const LONG_ABOUT: &str = "OpenTelemetry agent and gateway on Apache Arrow.

sluice runs an OpenTelemetry Collector config. Without --config it runs its embedded default: \
OTLP in on localhost:4317 (gRPC) and localhost:4318 (HTTP), traces and logs printed by the \
debug exporter (a line per span or log record), metrics for Prometheus on \
localhost:8889/metrics, self-telemetry on localhost:8888/metrics, health on localhost:13133.";

const AFTER_HELP: &str =
    "Config sources, as the Collector's (repeat --config to merge several; later ones win):
  --config gateway.yaml                        a file (also file:gateway.yaml)
  --config 'yaml:exporters::debug::verbosity: detailed'   inline YAML (:: separates levels)
  --config env:SLUICE_CONFIG                   the whole config from an environment variable
  --set processors.batch.timeout=2s            one value (applied after every --config)
In values, ${env:VAR} expands (${env:VAR:-default} when VAR is unset; $$ is a literal $).";

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP
)]
struct Cli {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Where the config comes from: for running, validating and replaying.
#[derive(Args, Clone, Debug, Default)]
struct ConfigArgs {
    /// A config source: a file (FILE or file:FILE), inline YAML (yaml:TEXT) or an environment
    /// variable holding the config (env:VAR). Repeat to merge several, later ones win. Without
    /// --config, the embedded default config runs.
    #[arg(long = "config", value_name = "SOURCE")]
    config: Vec<String>,
    /// Set one value, as the Collector's --set: KEY is a dotted path, VALUE is YAML
    /// (--set exporters.debug.verbosity=detailed). Applied after every --config.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

impl ConfigArgs {
    fn is_empty(&self) -> bool {
        self.config.is_empty() && self.set.is_empty()
    }
    /// These arguments followed by `more` (given after the subcommand).
    fn and(mut self, more: ConfigArgs) -> ConfigArgs {
        self.config.extend(more.config);
        self.set.extend(more.set);
        self
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the pipelines (the default).
    Run(ConfigArgs),
    /// Check the config and exit: 0 if valid, 1 with every error otherwise.
    Validate(ConfigArgs),
    /// List the receivers, processors, exporters and extensions built in.
    Components,
    /// Send realistic OTLP load to an endpoint and report rate, refusals and latency.
    #[command(subcommand)]
    Loadgen(loadgen::LoadgenCommand),
    /// Replay captured OTLP through the config, offline, on a virtual clock; report what
    /// each component did (and, with --compare, what another config would have done).
    Replay(ReplayCommand),
}

/// `sluice replay`'s arguments: the config, as for running, and the replay's own.
#[derive(Args)]
struct ReplayCommand {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    replay: replay::ReplayArgs,
}

/// The config sources named on the command line, in merge order: each `--config`, then each
/// `--set`; the embedded default when there is no `--config`.
fn read_sources(args: &ConfigArgs) -> anyhow::Result<Vec<Source>> {
    let mut sources = Vec::new();
    if args.config.is_empty() {
        sources.push(Source {
            name: DEFAULT_CONFIG_NAME.into(),
            text: DEFAULT_CONFIG.into(),
        });
    }
    for c in &args.config {
        sources.push(read_source(c)?);
    }
    for s in &args.set {
        let (key, value) = s
            .split_once('=')
            .with_context(|| format!("--set {s}: missing `=` (expected --set KEY=VALUE)"))?;
        // The Collector's translation: dots separate levels, the value is YAML.
        sources.push(Source {
            name: format!("--set {s}"),
            text: format!("{}: {}", key.trim().replace('.', "::"), value.trim()),
        });
    }
    Ok(sources)
}

/// One `--config` source: `file:PATH` (or a plain path), `yaml:TEXT`, `env:VAR`.
fn read_source(spec: &str) -> anyhow::Result<Source> {
    if let Some(text) = spec.strip_prefix("yaml:") {
        return Ok(Source {
            name: spec.to_string(),
            text: text.to_string(),
        });
    }
    if let Some(var) = spec.strip_prefix("env:") {
        let text = std::env::var(var).map_err(|e| match e {
            std::env::VarError::NotPresent => {
                anyhow::anyhow!("--config {spec}: environment variable {var} is not set")
            }
            std::env::VarError::NotUnicode(_) => {
                anyhow::anyhow!("--config {spec}: environment variable {var} is not valid UTF-8")
            }
        })?;
        return Ok(Source {
            name: spec.to_string(),
            text,
        });
    }
    let path = match spec.split_once(':') {
        Some(("file", path)) => path,
        // A URI scheme (two characters at least, so a Windows drive letter is a path).
        Some((scheme, _))
            if scheme.len() > 1
                && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-')) =>
        {
            anyhow::bail!(
                "--config {spec}: config source {scheme:?} is not supported; use a file \
                 (FILE or file:FILE), yaml:TEXT or env:VAR"
            )
        }
        _ => spec,
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read config file {path}"))?;
    Ok(Source {
        name: path.to_string(),
        text,
    })
}

/// Loads and checks the config; prints every error. Returns the config and its sources' names.
fn load(args: &ConfigArgs, registry: &Registry) -> Option<(Config, Vec<String>)> {
    let sources = match read_sources(args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e:#}");
            return None;
        }
    };
    let env = |name: &str| std::env::var(name).ok();
    match config::load(&sources, &env, registry) {
        Ok(c) => Some((c, sources.into_iter().map(|s| s.name).collect())),
        Err(errors) => {
            eprintln!(
                "invalid configuration ({} error{}):",
                errors.len(),
                if errors.len() == 1 { "" } else { "s" }
            );
            for e in errors {
                eprintln!("  {e}");
            }
            None
        }
    }
}

fn main() -> ExitCode {
    process_memory::configure_allocator();
    let cli = Cli::parse();
    let registry = sluice::registry();
    let command = cli.command.unwrap_or(Command::Run(ConfigArgs::default()));
    if !cli.config.is_empty()
        && !matches!(
            command,
            Command::Run(_) | Command::Validate(_) | Command::Replay(_)
        )
    {
        eprintln!(
            "error: --config and --set apply to running, `sluice validate` and `sluice replay` only"
        );
        return ExitCode::FAILURE;
    }
    match command {
        Command::Components => {
            for kind in [
                Kind::Receiver,
                Kind::Processor,
                Kind::Exporter,
                Kind::Connector,
                Kind::Extension,
            ] {
                let of_kind: Vec<_> = registry.list().filter(|f| f.kind() == kind).collect();
                println!("{}:", kind.section());
                if of_kind.is_empty() {
                    println!("  (none yet)");
                }
                for f in of_kind {
                    let signals: Vec<&str> = f.signals().iter().map(|s| s.as_str()).collect();
                    let signals = if signals.is_empty() {
                        String::new()
                    } else {
                        format!(" [{}]", signals.join(", "))
                    };
                    println!("  {}{signals}: {}", f.type_name(), f.description());
                }
            }
            ExitCode::SUCCESS
        }
        Command::Loadgen(cmd) => {
            let Some(runtime) = runtime() else {
                return ExitCode::FAILURE;
            };
            let (signal, args) = match cmd {
                loadgen::LoadgenCommand::Traces(a) => (sluice_engine::Signal::Traces, a),
                loadgen::LoadgenCommand::Metrics(a) => (sluice_engine::Signal::Metrics, a),
                loadgen::LoadgenCommand::Logs(a) => (sluice_engine::Signal::Logs, a),
                loadgen::LoadgenCommand::Sink(a) => {
                    return match runtime.block_on(loadgen::sink::run(a)) {
                        Ok(counts) => {
                            println!("{counts}");
                            ExitCode::SUCCESS
                        }
                        Err(e) => {
                            eprintln!("error: {e:#}");
                            ExitCode::FAILURE
                        }
                    };
                }
            };
            let json = args.json;
            match runtime.block_on(loadgen::run(signal, args)) {
                Ok(report) => {
                    if json {
                        println!("{}", report.to_json(signal));
                    } else {
                        report.print(signal);
                    }
                    if report.items_accepted > 0 {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Replay(ReplayCommand { config, replay }) => {
            let Some((config, names)) = load(&cli.config.and(config), &registry) else {
                return ExitCode::FAILURE;
            };
            let other = if replay.compare.is_empty() {
                None
            } else {
                let sources = ConfigArgs {
                    config: replay.compare.clone(),
                    set: Vec::new(),
                };
                match load(&sources, &registry) {
                    Some(c) => Some(c),
                    None => return ExitCode::FAILURE,
                }
            };
            for c in std::iter::once(&config).chain(other.as_ref().map(|(c, _)| c)) {
                for w in &c.warnings {
                    eprintln!("warning: {w}");
                }
            }
            // Warnings and errors only: the progress bar and the report are the output.
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .try_init();
            let Some(runtime) = runtime() else {
                return ExitCode::FAILURE;
            };
            match runtime.block_on(replay::run(replay, config, names, other, &registry)) {
                Ok(replay::Outcome::Complete) => ExitCode::SUCCESS,
                Ok(replay::Outcome::Interrupted) => ExitCode::from(EXIT_INTERRUPTED),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Validate(args) => match load(&cli.config.and(args), &registry) {
            Some((c, _)) => {
                for w in &c.warnings {
                    eprintln!("warning: {w}");
                }
                println!(
                    "configuration is valid: {} pipeline(s), {} component(s)",
                    c.pipelines.len(),
                    c.components.len()
                );
                ExitCode::SUCCESS
            }
            None => ExitCode::FAILURE,
        },
        Command::Run(args) => {
            let args = cli.config.and(args);
            let Some((config, sources)) = load(&args, &registry) else {
                return ExitCode::FAILURE;
            };
            init_logging(&config);
            if sources.iter().any(|s| s == DEFAULT_CONFIG_NAME) {
                tracing::info!(
                    "running the embedded default config (no --config given): OTLP in on \
                     localhost:4317 (gRPC) and localhost:4318 (HTTP), traces and logs printed \
                     here; `sluice --help` says how to run your own"
                );
            } else {
                tracing::info!(config = %sources.join(", "), "running");
            }
            for w in &config.warnings {
                tracing::warn!("{w}");
            }
            let Some(runtime) = runtime() else {
                return ExitCode::FAILURE;
            };
            match runtime.block_on(run(config, args, registry)) {
                Ok(Stopped::Clean) => ExitCode::SUCCESS,
                Ok(Stopped::Dropped) => ExitCode::from(EXIT_DROPPED_AT_SHUTDOWN),
                Err(e) => {
                    // Logged once (stderr is where the log goes).
                    tracing::error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Workers give their free allocator pages back when a purge was asked for.
        .on_thread_park(process_memory::on_worker_park)
        .build()
    {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            None
        }
    }
}

fn init_logging(config: &Config) {
    let level = config
        .telemetry
        .logs
        .level
        .clone()
        .unwrap_or_else(|| "info".into());
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.telemetry.logs.encoding {
        // One object per line: `timestamp`, `level`, `message`, the event's fields, `target`
        // (the module that logged).
        LogEncoding::Json => {
            let _ = builder.json().flatten_event(true).try_init();
        }
        LogEncoding::Console => {
            // Colours only for a person at a terminal: a log file or `kubectl logs` gets
            // plain text.
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            let _ = builder.with_ansi(colour).try_init();
        }
    }
}

/// The exit status of a run that stopped on a signal but could not deliver everything it had
/// accepted before the exporters' drain deadlines (`sending_queue.drain_timeout`): 0 would
/// tell Kubernetes and supervisors that nothing was lost.
const EXIT_DROPPED_AT_SHUTDOWN: u8 = 3;

/// `sluice replay` stopped by Ctrl-C (after writing its partial report): 128 + SIGINT, as a
/// shell reports a command interrupted.
const EXIT_INTERRUPTED: u8 = 130;

/// How a run that was asked to stop ended.
enum Stopped {
    /// Everything accepted was delivered (or is an earlier failure, counted when it happened).
    Clean,
    /// Items were still undelivered at a drain deadline and were dropped (counted, logged), or
    /// an exporter's shutdown failed (panicked or ran past its bound) with what it held.
    Dropped,
}

async fn run(config: Config, sources: ConfigArgs, registry: Registry) -> anyhow::Result<Stopped> {
    let telemetry = Telemetry::new();
    telemetry
        .memory()
        .set_process(Arc::new(process_memory::LinuxProcess));
    register_process_metrics(&telemetry, std::time::Instant::now());
    let telemetry_stop = match config.telemetry.metrics.listen_address() {
        Some(addr) => Some(telemetry_server::start(&addr, telemetry.clone()).await?),
        None => None,
    };
    let pushers = telemetry_push::start(&config.telemetry, &telemetry).await?;
    let mut signals = Signals::new()?;
    let mut service = start_service(&config, &registry, &telemetry).await?;
    let mut unfinished = Vec::new();
    loop {
        match signals.next().await {
            Received::Stop => break,
            Received::Reload => {
                tracing::info!("SIGHUP received: reloading the configuration");
                // The same sources as at start, read again (files and variables may have changed).
                let Some((next, _)) = load(&sources, &registry) else {
                    tracing::error!(
                        "the reloaded configuration is invalid (errors above); keeping the running one"
                    );
                    continue;
                };
                if next.telemetry.metrics.listen_address()
                    != config.telemetry.metrics.listen_address()
                    || next.telemetry.metrics.readers != config.telemetry.metrics.readers
                {
                    tracing::warn!(
                        "service.telemetry.metrics changed: it takes effect at the next start"
                    );
                }
                // An exporter whose shutdown failed (logged) may have lost what it held: the
                // final exit status says so too.
                unfinished.extend(service.shutdown().await);
                service = start_service(&next, &registry, &telemetry).await?;
                tracing::info!("configuration reloaded");
            }
        }
    }
    tracing::info!("shutting down: no new data accepted; flushing batches and queues");
    unfinished.extend(service.shutdown().await);
    // The last push carries the pipelines' final counts.
    pushers.stop().await;
    if let Some(stop) = telemetry_stop {
        let _ = stop.send(());
    }
    let dropped: Vec<String> = Signal::ALL
        .into_iter()
        .filter_map(|s| {
            let name = format!("otelcol_exporter_send_failed_{}", s.item_noun());
            let n = telemetry.sum(&name, &[("error_type", "shutdown")])?;
            (n > 0.0).then(|| format!("{n} {}", s.item_noun().replace('_', " ")))
        })
        .collect();
    if !unfinished.is_empty() {
        let names: Vec<String> = unfinished.iter().map(|id| id.to_string()).collect();
        tracing::error!(
            "stopped with possible data loss: the shutdown of exporter(s) {} did not finish (errors above), so what they still held may be lost; exit status {EXIT_DROPPED_AT_SHUTDOWN}",
            names.join(", ")
        );
    }
    if dropped.is_empty() && unfinished.is_empty() {
        return Ok(Stopped::Clean);
    }
    if !dropped.is_empty() {
        tracing::error!(
            "stopped with data loss: {} still undelivered at the exporters' drain deadline (sending_queue.drain_timeout) were dropped; exit status {EXIT_DROPPED_AT_SHUTDOWN}",
            dropped.join(", ")
        );
    }
    Ok(Stopped::Dropped)
}

/// Builds and starts the pipelines of `config` (a failed start shuts down what started).
async fn start_service(
    config: &Config,
    registry: &Registry,
    telemetry: &Telemetry,
) -> anyhow::Result<Service> {
    let service = Service::build(
        config,
        registry,
        telemetry,
        Arc::new(WallClock),
        Health::default(),
    )?;
    if let Err(e) = service.start().await {
        let _ = service.shutdown().await;
        return Err(e.into());
    }
    Ok(service)
}

enum Received {
    Stop,
    Reload,
}

/// SIGTERM and SIGINT stop; SIGHUP reloads.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
            hup: signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?,
        })
    }

    async fn next(&mut self) -> Received {
        tokio::select! {
            _ = self.term.recv() => {
                tracing::info!("SIGTERM received");
                Received::Stop
            }
            _ = self.int.recv() => {
                tracing::info!("SIGINT received");
                Received::Stop
            }
            _ = self.hup.recv() => Received::Reload,
        }
    }
}
