//! `sluice replay`: captured OTLP through a config's pipelines, offline, on a virtual clock,
//! with a what-if report. The model (what the clock follows, when timeouts fire, what "late"
//! means) is in this folder's README.md.
//!
//! A reader thread reads and decodes the capture ([`reader`]) into a small bounded channel;
//! the driver moves the virtual clock, lets components do what is due
//! ([`Service::on_virtual_time`]) and hands each payload to the pipelines the config's
//! receivers feed ([`wiring`]). The report's counts are the self-telemetry registry the live
//! process serves ([`report`]).

pub mod html;
pub mod reader;
pub mod report;
#[cfg(test)]
mod tests;
pub mod wiring;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sluice_egress::file_storage::FileStorageConfig;
use sluice_engine::Payload;
use sluice_engine::clock::{Clock, VirtualClock};
use sluice_engine::component::{ConsumerRef, Kind};
use sluice_engine::config::{Config, Registry};
use sluice_engine::health::Health;
use sluice_engine::memory::{Held, Holder, ProcessMemory, RefusedRequests};
use sluice_engine::processors::tail_sampling::config::{PolicyConfig, TailSamplingConfig};
use sluice_engine::schema::Signal;
use sluice_engine::service::Service;
use sluice_engine::telemetry::{ReceiverMetrics, Telemetry};

use crate::process_memory::LinuxProcess;

use self::reader::{Capture, CaptureError};
use self::report::{Report, RunInfo, Timeline};
use self::wiring::{TraceWatch, Wiring};

/// How time passes in a replay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClockMode {
    /// Time is the data's: the newest timestamp read so far; as fast as the CPU allows.
    Data,
    /// The same virtual time, paced on the wall clock at `--speed` times real time.
    Wall,
}

#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    /// Capture files (the `file` exporter's OTLP/JSON lines or length-prefixed protobuf,
    /// OTLP/JSON arrays; plain, gzip or zstd), replayed in the order given; a directory
    /// stands for its files in name order.
    #[arg(required = true, value_name = "CAPTURE")]
    pub captures: Vec<PathBuf>,
    /// `data`: virtual time follows the items' timestamps, as fast as possible; `wall`: the
    /// same virtual time paced at `--speed` times real time.
    #[arg(long, value_enum, default_value = "data")]
    pub clock: ClockMode,
    /// With `--clock wall` (implied): how many times faster than real time.
    #[arg(long, value_name = "N")]
    pub speed: Option<f64>,
    /// Replace every exporter with a counting sink: nothing leaves the machine.
    #[arg(long)]
    pub dry_run: bool,
    /// A second config to replay the same capture through (sources merged like `--config`:
    /// FILE, yaml:TEXT, env:VAR; `--set` applies to the first config only); the report puts
    /// both side by side. Implies `--dry-run` for both.
    #[arg(long, value_name = "SOURCE")]
    pub compare: Vec<String>,
    /// Write the report: `.json` (the schema is `src/replay/report.schema.json`) or `.html`
    /// (self-contained, with charts). Repeatable.
    #[arg(long, value_name = "FILE")]
    pub report: Vec<PathBuf>,
    /// Go on past bad records (counted by reason, named in the report) instead of stopping.
    #[arg(long)]
    pub skip_bad: bool,
    /// The receivers whose place the capture takes (default: every `otlp` receiver, or every
    /// receiver if there is none).
    #[arg(long, value_name = "ID")]
    pub receiver: Vec<String>,
    /// Data time between two points of the report's timeline.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_step)]
    pub timeline_step: Duration,
    /// A trace is "slow" in the report when a span lasts at least this long (default: the
    /// lowest `latency` policy threshold of the config, else 2000).
    #[arg(long, value_name = "MS")]
    pub slow_ms: Option<u64>,
    /// No progress bar (it is drawn only on a terminal anyway).
    #[arg(long)]
    pub quiet: bool,
}

fn parse_step(s: &str) -> Result<Duration, String> {
    let d = sluice_engine::config_types::parse_duration(s)?;
    if d.is_zero() {
        return Err("must be more than 0".into());
    }
    Ok(d)
}

/// How a replay ended, for the exit status.
pub enum Outcome {
    Complete,
    /// Ctrl-C: a partial report was written.
    Interrupted,
}

/// Runs the replay (and the comparison), prints the table, writes the reports.
pub async fn run(
    args: ReplayArgs,
    config: Config,
    config_names: Vec<String>,
    other: Option<(Config, Vec<String>)>,
    live: &Registry,
) -> anyhow::Result<Outcome> {
    if let Some(speed) = args.speed
        && !(speed.is_finite() && speed > 0.0)
    {
        bail!("--speed must be a number above 0, got {speed}");
    }
    for r in &args.report {
        report::OutputKind::of(r)?;
    }
    let captures = expand_captures(&args.captures)?;
    let dry_run = args.dry_run || other.is_some();
    let mut runs = Vec::new();
    let mut interrupted = false;
    let mut configs = vec![(config, config_names)];
    configs.extend(other);
    for (config, names) in configs {
        let r = replay_one(&args, &captures, &config, names, live, dry_run).await?;
        interrupted |= r.info.interrupted;
        runs.push(r);
        if interrupted {
            break;
        }
    }
    let full = report::FullReport::new(runs);
    print!("{}", full.table());
    for path in &args.report {
        full.write(path)
            .with_context(|| format!("cannot write the report {}", path.display()))?;
        eprintln!("report written to {}", path.display());
    }
    if let Some(bad) = full.runs.first().map(|r| r.info.bad_records)
        && bad > 0
    {
        eprintln!("{bad} bad record(s) skipped (--skip-bad); see the report's bad_records");
    }
    Ok(if interrupted {
        Outcome::Interrupted
    } else {
        Outcome::Complete
    })
}

/// Files first as given; a directory's files in name order.
fn expand_captures(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("cannot list {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            files.sort();
            out.extend(files);
        } else if p.exists() {
            out.push(p.clone());
        } else {
            bail!("{}: no such capture file", p.display());
        }
    }
    if out.is_empty() {
        bail!("no capture files");
    }
    Ok(out)
}

/// The lowest latency threshold of the config's tail-sampling policies (sub-policies too).
fn latency_threshold_ms(config: &Config) -> Option<u64> {
    fn walk(p: &PolicyConfig, out: &mut Vec<i64>) {
        if p.policy_type == "latency" {
            out.push(p.latency.threshold_ms);
        }
        for sub in p
            .and
            .and_sub_policy
            .iter()
            .chain(&p.drop.drop_sub_policy)
            .chain(&p.composite.composite_sub_policy)
        {
            walk(sub, out);
        }
    }
    let mut found = Vec::new();
    for ((kind, id), parsed) in &config.components {
        if *kind == Kind::Processor
            && id.type_name == "tail_sampling"
            && let Some(ts) = parsed.downcast_ref::<TailSamplingConfig>()
        {
            ts.policies.iter().for_each(|p| walk(p, &mut found));
        }
    }
    found.into_iter().filter(|t| *t > 0).min().map(|t| t as u64)
}

/// What one record from the reader thread is.
// Nearly every item is a record: boxing it would add an allocation per record for nothing.
#[allow(clippy::large_enum_variant)]
enum Item {
    Record {
        payload: Payload,
        bytes: usize,
        read_bytes: u64,
    },
    Bad(CaptureError),
}

fn spawn_reader(paths: Vec<PathBuf>) -> tokio::sync::mpsc::Receiver<Item> {
    // A few records in flight: decoding on one core while the pipelines run on the other,
    // with memory bounded by the channel whatever the capture's size.
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    std::thread::Builder::new()
        .name("replay-reader".into())
        .spawn(move || {
            let mut capture = Capture::new(paths);
            while let Some(r) = capture.next_record() {
                let item = match r {
                    Ok(rec) => Item::Record {
                        payload: rec.payload,
                        bytes: rec.bytes,
                        read_bytes: capture.disk_bytes_read(),
                    },
                    Err(e) => Item::Bad(e),
                };
                if tx.blocking_send(item).is_err() {
                    return; // the replay stopped (Ctrl-C or a fatal error)
                }
            }
        })
        .ok();
    rx
}

/// Where the capture's items of one signal enter: the pipelines a receiver feeds, counted and
/// admitted as that receiver would count and admit them live.
struct Feed {
    signal: Signal,
    consumer: ConsumerRef,
    metrics: ReceiverMetrics,
    /// The receiver's in-flight share of the memory account
    /// (`sluice_memory_held_bytes{component="<receiver>",kind="in_flight"}`).
    in_flight: Holder,
    /// Whether the pipelines start with a `memory_limiter`: then a payload is admitted (its
    /// bytes reserved under the soft limit) before it enters, as a live receiver admits a
    /// request before decoding it.
    limited: bool,
    /// Records the memory limiter never admitted, by reason, as live requests are counted:
    /// `sluice_memory_refused_requests_total{receiver,transport="replay",reason}`.
    memory_refused: RefusedRequests,
}

impl Feed {
    /// Hands `payload` to the pipelines, holding its bytes in flight until they return, as a
    /// live receiver does; a refusal that may pass later (memory above the soft limit, a
    /// full queue) is retried for [`REFUSED_RETRY`], as a client's retries would.
    async fn deliver(&self, payload: Payload) -> Result<(), String> {
        let give_up = Instant::now() + REFUSED_RETRY;
        let size = payload.memory_size();
        loop {
            let held: Held = if self.limited {
                match self.in_flight.admit(size) {
                    Ok(h) => h,
                    Err(r) if r.is_retryable() && Instant::now() < give_up => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                    Err(r) => {
                        self.memory_refused.count(&r);
                        return Err(r.to_string());
                    }
                }
            } else {
                self.in_flight.hold(size)
            };
            let result = self.consumer.consume(payload.clone()).await;
            // Whoever keeps the data now (a batch buffer, a queue) holds its bytes itself.
            drop(held);
            match result {
                Ok(()) => return Ok(()),
                Err(e) if e.is_retryable() && Instant::now() < give_up => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

/// The replay's memory figures for the memory account: total memory as live (the machine's,
/// or the cgroup's limit), so `limit_percentage` means what it means live; no resident size,
/// so memory in use is what the pipelines hold. The replay process's own RSS (the reader, the
/// report) is not the gateway's, and would make refusals depend on the machine, not the data.
struct HeldBytesOnly;

impl ProcessMemory for HeldBytesOnly {
    fn resident(&self) -> Option<u64> {
        None
    }
    fn total(&self) -> Option<u64> {
        LinuxProcess.total()
    }
}

/// `config` with every `file_storage` extension pointed at a fresh directory of this replay
/// (removed when the replay ends): a replay's persistent sending queues work as live ones
/// (written, synced, deleted once delivered) but never open a live sluice's queue directory,
/// whose stored data they would send again at start and delete once delivered.
fn with_replay_storage(config: &Config) -> anyhow::Result<(Config, Option<tempfile::TempDir>)> {
    let mut config = config.clone();
    let mut root: Option<tempfile::TempDir> = None;
    for ((kind, id), parsed) in config.components.iter_mut() {
        if *kind != Kind::Extension {
            continue;
        }
        let Ok(storage) = parsed.clone().downcast::<FileStorageConfig>() else {
            continue;
        };
        let root = match &mut root {
            Some(r) => r,
            None => root.insert(
                tempfile::Builder::new()
                    .prefix("sluice-replay-queues-")
                    .tempdir()
                    .context("cannot create a directory for the replay's persistent queues")?,
            ),
        };
        let mut storage = (*storage).clone();
        storage.directory = root.path().join(id.to_string().replace('/', "_"));
        storage.create_directory = true;
        storage.recreate = false;
        *parsed = Arc::new(storage);
    }
    Ok((config, root))
}

/// The pipelines the capture feeds, by signal.
fn feeds(wiring: &Wiring, wanted: &[String], telemetry: &Telemetry) -> anyhow::Result<Vec<Feed>> {
    let built = wiring
        .receivers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let chosen: Vec<_> = if wanted.is_empty() {
        let otlp: Vec<_> = built
            .iter()
            .filter(|(id, _)| id.type_name == "otlp")
            .cloned()
            .collect();
        if otlp.is_empty() { built.clone() } else { otlp }
    } else {
        let mut v = Vec::new();
        for w in wanted {
            match built.iter().find(|(id, _)| id.to_string() == *w) {
                Some(x) => v.push(x.clone()),
                None => bail!(
                    "--receiver {w}: no such receiver in the config's pipelines (there are: {})",
                    built
                        .iter()
                        .map(|(id, _)| id.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        }
        v
    };
    let mut out = Vec::new();
    for s in Signal::ALL {
        // One receiver per signal: two receivers feeding the same pipeline would replay the
        // capture twice.
        if let Some((id, consumers)) = chosen.iter().find(|(_, c)| c.contains_key(&s)) {
            let consumer = consumers[&s].clone();
            let receiver = id.to_string();
            let memory_refused = RefusedRequests::new(telemetry, &receiver, "replay");
            out.push(Feed {
                memory_refused,
                signal: s,
                limited: consumer.memory_limited(),
                consumer,
                metrics: ReceiverMetrics::new(telemetry, id, "replay"),
                in_flight: telemetry.memory().holder(telemetry, &receiver, "in_flight"),
            });
        }
    }
    Ok(out)
}

/// Moves the virtual clock, the timeline and (with `--speed`) the wall pacing together.
struct Driver<'a> {
    clock: Arc<VirtualClock>,
    service: &'a Service,
    telemetry: &'a Telemetry,
    timeline: Timeline,
    /// `--speed`: (wall start, data start, speed).
    pacing: Option<(Instant, u64, f64)>,
    stuck_warned: bool,
    /// Turns true on Ctrl-C: a paced wait ends at once.
    stop: tokio::sync::watch::Receiver<bool>,
}

impl Driver<'_> {
    async fn step_to(&mut self, t: u64) {
        if t <= self.clock.now_unix_nanos() {
            return;
        }
        if let Some((wall0, data0, speed)) = self.pacing {
            let due = wall0 + Duration::from_secs_f64((t - data0) as f64 / 1e9 / speed);
            let mut stop = self.stop.clone();
            tokio::select! {
                _ = tokio::time::sleep_until(due.into()) => {}
                _ = stop.wait_for(|stopped| *stopped) => {}
            }
        }
        self.timeline.before_advance(t, self.telemetry);
        self.clock.advance_to(t);
    }

    /// Fires every deadline up to `target` in order, then moves the clock to `target`.
    async fn advance(&mut self, target: u64) {
        while let Some(d) = self.service.next_virtual_deadline() {
            if d > target {
                break;
            }
            if *self.stop.borrow() {
                break; // Ctrl-C: shutdown decides what is left
            }
            self.step_to(d).await;
            self.service.on_virtual_time().await;
            if self
                .service
                .next_virtual_deadline()
                .is_some_and(|again| again <= d)
            {
                // A component that says it is due but does nothing would loop forever.
                if !self.stuck_warned {
                    tracing::warn!(
                        "a component keeps a deadline it does not act on; moving the clock on"
                    );
                    self.stuck_warned = true;
                }
                break;
            }
        }
        if target != u64::MAX {
            self.step_to(target).await;
        }
    }
}

/// How long a refused payload is retried (a memory limiter over its limit) before it counts
/// as refused, as a client's retries would.
const REFUSED_RETRY: Duration = Duration::from_secs(5);

async fn replay_one(
    args: &ReplayArgs,
    captures: &[PathBuf],
    config: &Config,
    config_names: Vec<String>,
    live: &Registry,
    dry_run: bool,
) -> anyhow::Result<Report> {
    let started = Instant::now();
    let slow_ms = args
        .slow_ms
        .or_else(|| latency_threshold_ms(config))
        .unwrap_or(2000);
    let wiring = Arc::new(Wiring {
        watch: Arc::new(TraceWatch::new(slow_ms.saturating_mul(1_000_000))),
        ..Wiring::default()
    });
    let registry = wiring::registry(live, &wiring, dry_run);
    let telemetry = Telemetry::new();
    telemetry.memory().set_process(Arc::new(HeldBytesOnly));
    let mut rx = spawn_reader(captures.to_vec());

    // The first record sets the clock's start: components built now (span metrics' first
    // interval) start at the data's time, not at 1970.
    let mut pending: Option<Item> = rx.recv().await;
    let start = match &pending {
        Some(Item::Record { payload, .. }) => payload.newest_time(),
        _ => None,
    }
    .unwrap_or(0);
    let clock = VirtualClock::new(start);
    // Removed when this run ends (after the service has shut down).
    let (config, _queues) = with_replay_storage(config)?;
    let config = &config;
    let service = Service::build(
        config,
        &registry,
        &telemetry,
        clock.clone(),
        Health::default(),
    )
    .context("cannot build the pipelines")?;
    let feeds = feeds(&wiring, &args.receiver, &telemetry)?;
    service
        .start()
        .await
        .context("cannot start the pipelines")?;

    let speed = match (args.clock, args.speed) {
        (_, Some(s)) => Some(s),
        (ClockMode::Wall, None) => Some(1.0),
        (ClockMode::Data, None) => None,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let ctrl_c = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = stop_tx.send(true);
        }
    });
    let mut stopped = stop_rx.clone();
    let mut driver = Driver {
        clock: clock.clone(),
        service: &service,
        telemetry: &telemetry,
        timeline: Timeline::new(start, args.timeline_step),
        pacing: speed.map(|s| (Instant::now(), start, s)),
        stuck_warned: false,
        stop: stop_rx,
    };
    let capture_size = captures
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let progress = report::Progress::new(args.quiet, capture_size);
    let bad_counter = |reason: &str| {
        telemetry.counter(
            "sluice_replay_bad_records",
            "Capture records that could not be read, by reason (--skip-bad)",
            &[("reason", reason)],
        )
    };
    let mut records = 0u64;
    let mut capture_bytes = 0u64;
    let mut bad_records = Vec::new();
    let mut interrupted = false;
    let mut fatal: Option<CaptureError> = None;
    let mut newest = start;
    loop {
        if *stopped.borrow() {
            interrupted = true;
            break;
        }
        let item = match pending.take() {
            Some(i) => Some(i),
            None => tokio::select! {
                biased;
                _ = stopped.wait_for(|s| *s) => None,
                i = rx.recv() => i,
            },
        };
        let Some(item) = item else {
            interrupted = *stopped.borrow();
            break;
        };
        match item {
            Item::Bad(e) => {
                if !args.skip_bad {
                    fatal = Some(e);
                    break;
                }
                let reason = if e.is_fatal() {
                    "unreadable_rest_of_file"
                } else {
                    "undecodable_record"
                };
                bad_counter(reason).add(1);
                progress.println(&format!("skipped: {e}"));
                bad_records.push(e.to_string());
            }
            Item::Record {
                payload,
                bytes,
                read_bytes,
            } => {
                records += 1;
                capture_bytes += bytes as u64;
                let t = payload.newest_time().unwrap_or(newest);
                driver.advance(t).await;
                newest = newest.max(t);
                let signal = payload.signal();
                let n = payload.item_count();
                match feeds.iter().find(|f| f.signal == signal) {
                    Some(feed) => {
                        wiring.watch.seen(&payload);
                        match feed.deliver(payload).await {
                            Ok(()) => feed.metrics.accepted(signal, n),
                            Err(e) => {
                                feed.metrics.refused(signal, n);
                                tracing::debug!(error = %e, items = n, "replay: refused");
                            }
                        }
                    }
                    None => telemetry
                        .counter(
                            "sluice_replay_items_without_pipeline",
                            "Captured items of a signal no replayed receiver feeds",
                            &[("otel_signal", signal.as_str())],
                        )
                        .add(n as u64),
                }
                progress.update(n, read_bytes, clock.now_unix_nanos());
            }
        }
    }
    drop(rx); // stops the reader thread
    ctrl_c.abort(); // a second run (--compare) listens anew
    if !interrupted {
        // The capture ended: time runs on until nothing waits on it (every trace decided at
        // its decision time, the last batch and span-metrics flush), as if the traffic had
        // stopped and the gateway kept running.
        driver.advance(u64::MAX).await;
    }
    let unfinished = service.shutdown().await;
    progress.finish();
    let end = clock.now_unix_nanos();
    driver.timeline.finish(&telemetry);
    if let Some(e) = fatal {
        bail!(
            "{e}\n(use --skip-bad to go on past bad records; nothing after this point was replayed)"
        );
    }
    if !unfinished.is_empty() {
        let names: Vec<String> = unfinished.iter().map(|id| id.to_string()).collect();
        bail!(
            "the shutdown of exporter(s) {} did not finish (errors above): a report would not account for what they held",
            names.join(", ")
        );
    }
    let prometheus = wiring
        .prometheus
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(id, e)| report::PrometheusScrape::of(id, &e.scrape_now()))
        .collect();
    let info = RunInfo {
        configs: config_names,
        captures: captures.iter().map(|p| p.display().to_string()).collect(),
        clock: args.clock,
        speed,
        dry_run,
        interrupted,
        data_start_unix_nano: start,
        data_end_unix_nano: end,
        wall_seconds: started.elapsed().as_secs_f64(),
        records,
        capture_bytes,
        bad_records: bad_records.len() as u64,
        bad_record_errors: bad_records,
        slow_threshold_ms: slow_ms,
    };
    Ok(Report::build(
        info,
        &telemetry,
        wiring.watch.counts(),
        prometheus,
        driver.timeline,
        config,
    ))
}
