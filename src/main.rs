//! `sluice`: run an OpenTelemetry Collector config on sluice's Arrow engine.
//!
//! - `sluice [--config FILE]...` runs (no `--config`: the embedded default gateway config);
//!   SIGHUP reloads the files, as the Collector does: a valid new config replaces the running
//!   pipelines (the old ones shut down first, draining as at exit), an invalid one is refused
//!   and the running one kept;
//! - `sluice validate --config FILE...` checks a config and exits non-zero on any error;
//! - `sluice components` lists what is built in;
//! - `sluice loadgen traces|metrics|logs --endpoint ...` drives an OTLP endpoint and reports.

mod health_check;
mod loadgen;
mod telemetry_server;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sluice_engine::clock::WallClock;
use sluice_engine::component::{Factory, Kind};
use sluice_engine::config::{self, Config, DEFAULT_CONFIG, DEFAULT_CONFIG_NAME, Registry, Source};
use sluice_engine::health::Health;
use sluice_engine::schema::Signal;
use sluice_engine::service::Service;
use sluice_engine::telemetry::{Telemetry, register_process_metrics};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "OpenTelemetry agent and gateway on Apache Arrow"
)]
struct Cli {
    /// Collector YAML config file(s); several are merged in order, later ones win.
    /// `file:PATH` is accepted as the Collector spells it.
    #[arg(long = "config", global = true, value_name = "FILE")]
    config: Vec<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the pipelines (the default).
    Run,
    /// Check the config and exit: 0 if valid, 1 with every error otherwise.
    Validate,
    /// List the receivers, processors, exporters and extensions built in.
    Components,
    /// Send realistic OTLP load to an endpoint and report rate, refusals and latency.
    #[command(subcommand)]
    Loadgen(loadgen::LoadgenCommand),
}

fn registry() -> Registry {
    let mut factories: Vec<Arc<dyn Factory>> = Vec::new();
    factories.extend(sluice_ingest::factories());
    factories.extend(sluice_engine::processors::factories());
    factories.extend(sluice_engine::connectors::factories());
    factories.extend(sluice_egress::factories());
    factories.extend(sluice_k8s::factories());
    factories.push(Arc::new(health_check::HealthCheckFactory));
    Registry::new(factories)
}

fn read_sources(files: &[String]) -> anyhow::Result<Vec<Source>> {
    if files.is_empty() {
        return Ok(vec![Source {
            name: DEFAULT_CONFIG_NAME.into(),
            text: DEFAULT_CONFIG.into(),
        }]);
    }
    files
        .iter()
        .map(|f| {
            let path = f.strip_prefix("file:").unwrap_or(f);
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {path}"))?;
            Ok(Source {
                name: path.to_string(),
                text,
            })
        })
        .collect()
}

/// Loads and checks the config; prints every error.
fn load(files: &[String], registry: &Registry) -> Option<Config> {
    let sources = match read_sources(files) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e:#}");
            return None;
        }
    };
    let env = |name: &str| std::env::var(name).ok();
    match config::load(&sources, &env, registry) {
        Ok(c) => Some(c),
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
    let cli = Cli::parse();
    let registry = registry();
    match cli.command.unwrap_or(Command::Run) {
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
        Command::Validate => match load(&cli.config, &registry) {
            Some(c) => {
                println!(
                    "configuration is valid: {} pipeline(s), {} component(s)",
                    c.pipelines.len(),
                    c.components.len()
                );
                ExitCode::SUCCESS
            }
            None => ExitCode::FAILURE,
        },
        Command::Run => {
            let Some(config) = load(&cli.config, &registry) else {
                return ExitCode::FAILURE;
            };
            init_logging(&config);
            let Some(runtime) = runtime() else {
                return ExitCode::FAILURE;
            };
            match runtime.block_on(run(config, cli.config.clone(), registry)) {
                Ok(Stopped::Clean) => ExitCode::SUCCESS,
                Ok(Stopped::Dropped) => ExitCode::from(EXIT_DROPPED_AT_SHUTDOWN),
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
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
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// The exit status of a run that stopped on a signal but could not deliver everything it had
/// accepted before the exporters' drain deadlines (`sending_queue.drain_timeout`): 0 would
/// tell Kubernetes and supervisors that nothing was lost.
const EXIT_DROPPED_AT_SHUTDOWN: u8 = 3;

/// How a run that was asked to stop ended.
enum Stopped {
    /// Everything accepted was delivered (or is an earlier failure, counted when it happened).
    Clean,
    /// Items were still undelivered at a drain deadline and were dropped (counted, logged).
    Dropped,
}

async fn run(config: Config, files: Vec<String>, registry: Registry) -> anyhow::Result<Stopped> {
    let telemetry = Telemetry::new();
    register_process_metrics(&telemetry, std::time::Instant::now());
    let telemetry_stop = match config.telemetry.metrics.listen_address() {
        Some(addr) => Some(telemetry_server::start(&addr, telemetry.clone()).await?),
        None => None,
    };
    let mut signals = Signals::new()?;
    let mut service = start_service(&config, &registry, &telemetry).await?;
    loop {
        match signals.next().await {
            Received::Stop => break,
            Received::Reload => {
                tracing::info!("SIGHUP received: reloading the configuration");
                let Some(next) = load(&files, &registry) else {
                    tracing::error!(
                        "the reloaded configuration is invalid (errors above); keeping the running one"
                    );
                    continue;
                };
                if next.telemetry.metrics.listen_address()
                    != config.telemetry.metrics.listen_address()
                {
                    tracing::warn!(
                        "service.telemetry.metrics changed: it takes effect at the next start"
                    );
                }
                service.shutdown().await;
                service = start_service(&next, &registry, &telemetry).await?;
                tracing::info!("configuration reloaded");
            }
        }
    }
    tracing::info!("shutting down: no new data accepted; flushing batches and queues");
    service.shutdown().await;
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
    if dropped.is_empty() {
        return Ok(Stopped::Clean);
    }
    tracing::error!(
        "stopped with data loss: {} still undelivered at the exporters' drain deadline (sending_queue.drain_timeout) were dropped; exit status {EXIT_DROPPED_AT_SHUTDOWN}",
        dropped.join(", ")
    );
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
        service.shutdown().await;
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
