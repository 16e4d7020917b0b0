//! `sluice loadgen`: drives an OTLP endpoint with realistic traffic and reports what it got.
//!
//! ```text
//! sluice loadgen traces --endpoint 127.0.0.1:4317 --duration 30s [--rate 100000]
//!                       [--protocol grpc|http] [--spans-per-trace 8] [--error-rate 0.01]
//! sluice loadgen metrics|logs ...
//! ```
//!
//! Requests are generated up front into a pool of encoded bodies (`--pool`, default 64) and
//! sent round-robin by `--concurrency` workers, so the generator's own cost per request is a
//! buffer clone and a send: its ceiling must be far above the rates it measures (measure it
//! against a sink that does nothing: a sluice whose pipeline ends in the `nop` exporter). Ids
//! repeat every `pool` requests, which is fine for throughput work; tail-sampling tests want a
//! pool at least as large as the traces in flight.
//!
//! The report: items and requests sent, accepted (OK) vs refused (any error status, by
//! status), achieved items/s, and request latency percentiles.

pub mod shapes;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::{Args, Subcommand, ValueEnum};
use http_body_util::{BodyExt, Full};
use prost::Message;
use sluice_engine::Signal;
use sluice_engine::config_types::parse_duration;

use shapes::{Rng, Shape};

#[derive(Subcommand, Debug)]
pub enum LoadgenCommand {
    /// Send traces.
    Traces(GenArgs),
    /// Send metrics (counters, histograms, gauges).
    Metrics(GenArgs),
    /// Send logs.
    Logs(GenArgs),
}

#[derive(Copy, Clone, Debug, ValueEnum, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    Http,
}

#[derive(Args, Debug, Clone)]
pub struct GenArgs {
    /// host:port of the OTLP receiver (gRPC default 127.0.0.1:4317, HTTP 127.0.0.1:4318).
    #[arg(long)]
    pub endpoint: Option<String>,
    #[arg(long, value_enum, default_value_t = Protocol::Grpc)]
    pub protocol: Protocol,
    /// How long to send (Go duration: 30s, 2m). Ignored when --count is reached first.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Stop after this many items (spans, data points, log records).
    #[arg(long)]
    pub count: Option<u64>,
    /// Target items per second over all workers; 0 = as fast as possible.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Items per request.
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Concurrent senders.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Distinct pre-generated requests.
    #[arg(long, default_value_t = 64)]
    pub pool: usize,
    #[arg(long, default_value_t = 8)]
    pub spans_per_trace: usize,
    #[arg(long, default_value_t = 5)]
    pub services: usize,
    /// Share of traces (or log records) with an error.
    #[arg(long, default_value_t = 0.01)]
    pub error_rate: f64,
    /// Share of spans that are lone health-probe spans (what the gateway's filter drops).
    #[arg(long, default_value_t = 0.05)]
    pub noise_rate: f64,
    /// Median span duration in milliseconds (log-normal).
    #[arg(long, default_value_t = 50.0)]
    pub latency_ms: f64,
    /// No progress bar (for scripts and CI logs).
    #[arg(long)]
    pub quiet: bool,
}

/// What a run achieved.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub items_sent: u64,
    pub items_accepted: u64,
    pub requests: u64,
    pub refused_by_status: BTreeMap<String, u64>,
    pub elapsed: Duration,
    pub latencies_us: Vec<u64>,
}

impl Report {
    pub fn items_per_sec(&self) -> f64 {
        self.items_accepted as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    fn percentile(&self, p: f64) -> Duration {
        if self.latencies_us.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies_us.len() - 1) as f64 * p).round() as usize;
        Duration::from_micros(self.latencies_us[i])
    }
    pub fn print(&self, signal: Signal) {
        let noun = signal.item_noun().replace('_', " ");
        println!(
            "sent {} {noun} in {} requests over {:.2}s: {:.0} {noun}/s accepted",
            self.items_sent,
            self.requests,
            self.elapsed.as_secs_f64(),
            self.items_per_sec()
        );
        println!(
            "accepted {} {noun}; refused {} ({})",
            self.items_accepted,
            self.items_sent - self.items_accepted,
            if self.refused_by_status.is_empty() {
                "none".to_string()
            } else {
                self.refused_by_status
                    .iter()
                    .map(|(k, v)| format!("{k}: {v} requests"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
        println!(
            "request latency p50 {:?}  p90 {:?}  p99 {:?}  max {:?}",
            self.percentile(0.5),
            self.percentile(0.9),
            self.percentile(0.99),
            self.percentile(1.0)
        );
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Encoded request bodies, each of `batch` items.
fn pool(signal: Signal, a: &GenArgs) -> Vec<Bytes> {
    let shape = Shape {
        spans_per_trace: a.spans_per_trace,
        services: a.services,
        error_rate: a.error_rate,
        noise_rate: a.noise_rate,
        latency_ms: a.latency_ms,
    };
    let now = now_ns();
    (0..a.pool.max(1))
        .map(|k| {
            let mut r = Rng(0x5eed ^ (k as u64).wrapping_mul(0x9e37_79b9));
            let body = match signal {
                Signal::Traces => shapes::traces(a.batch, &shape, &mut r, now).encode_to_vec(),
                Signal::Metrics => shapes::metrics(a.batch, &shape, &mut r, now).encode_to_vec(),
                Signal::Logs => shapes::logs(a.batch, &shape, &mut r, now).encode_to_vec(),
            };
            Bytes::from(body)
        })
        .collect()
}

enum Client {
    Grpc(tonic::transport::Channel),
    // Boxed: the HTTP client is much larger than a gRPC channel handle.
    Http(Box<HttpClient>, http::Uri),
}

type HttpClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

impl Client {
    async fn new(signal: Signal, a: &GenArgs) -> anyhow::Result<Client> {
        Ok(match a.protocol {
            Protocol::Grpc => {
                let ep = a
                    .endpoint
                    .clone()
                    .unwrap_or_else(|| "127.0.0.1:4317".into());
                let url = if ep.contains("://") {
                    ep
                } else {
                    format!("http://{ep}")
                };
                let channel = tonic::transport::Endpoint::from_shared(url.clone())?
                    .connect()
                    .await
                    .with_context(|| format!("cannot connect to {url}"))?;
                Client::Grpc(channel)
            }
            Protocol::Http => {
                let ep = a
                    .endpoint
                    .clone()
                    .unwrap_or_else(|| "127.0.0.1:4318".into());
                let base = if ep.contains("://") {
                    ep
                } else {
                    format!("http://{ep}")
                };
                let path = match signal {
                    Signal::Traces => "/v1/traces",
                    Signal::Metrics => "/v1/metrics",
                    Signal::Logs => "/v1/logs",
                };
                let uri: http::Uri = format!("{}{path}", base.trim_end_matches('/')).parse()?;
                let client = hyper_util::client::legacy::Client::builder(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .build_http::<Full<Bytes>>();
                Client::Http(Box::new(client), uri)
            }
        })
    }

    /// Sends one request; `Err` carries the status name for the report.
    async fn send(&self, signal: Signal, body: Bytes) -> Result<(), String> {
        match self {
            Client::Grpc(channel) => {
                let mut grpc = tonic::client::Grpc::new(channel.clone());
                grpc.ready().await.map_err(|e| format!("connect: {e}"))?;
                let path = http::uri::PathAndQuery::from_static(match signal {
                    Signal::Traces => "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                    Signal::Metrics => {
                        "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
                    }
                    Signal::Logs => "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
                });
                grpc.unary(
                    tonic::Request::new(body),
                    path,
                    sluice_egress::otlp::BytesCodec,
                )
                .await
                .map(|_| ())
                .map_err(|s| format!("{:?}", s.code()))
            }
            Client::Http(client, uri) => {
                let req = http::Request::post(uri.clone())
                    .header(http::header::CONTENT_TYPE, "application/x-protobuf")
                    .body(Full::new(body))
                    .map_err(|e| e.to_string())?;
                let resp = client
                    .request(req)
                    .await
                    .map_err(|e| format!("connect: {e}"))?;
                let status = resp.status();
                let _ = resp.into_body().collect().await;
                if status.is_success() {
                    Ok(())
                } else {
                    Err(format!("HTTP {}", status.as_u16()))
                }
            }
        }
    }
}

/// Runs the load and returns the report.
pub async fn run(signal: Signal, a: GenArgs) -> anyhow::Result<Report> {
    let bodies = Arc::new(pool(signal, &a));
    let client = Arc::new(Client::new(signal, &a).await?);
    let per_request = a.batch.max(1) as u64;
    let limit = a.count.unwrap_or(u64::MAX);
    let claimed = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let refused: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<u64>>> = Arc::default();
    let started = Instant::now();
    let deadline = started + a.duration;
    let workers = a.concurrency.max(1);
    // Each worker paces itself to its share of --rate.
    let interval = (a.rate > 0)
        .then(|| Duration::from_secs_f64(per_request as f64 * workers as f64 / a.rate as f64));

    let progress = if a.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        let pb = indicatif::ProgressBar::new(a.duration.as_secs().max(1));
        pb.set_style(
            indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        pb
    };

    let mut tasks = Vec::new();
    for w in 0..workers {
        let (bodies, client) = (bodies.clone(), client.clone());
        let (claimed, accepted, requests) = (claimed.clone(), accepted.clone(), requests.clone());
        let (refused, latencies) = (refused.clone(), latencies.clone());
        tasks.push(tokio::spawn(async move {
            let mut tick = interval.map(|i| {
                let mut t = tokio::time::interval(i);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                t
            });
            let mut k = w;
            let mut local_lat = Vec::new();
            loop {
                if Instant::now() >= deadline {
                    break;
                }
                if claimed.fetch_add(per_request, Ordering::Relaxed) >= limit {
                    claimed.fetch_sub(per_request, Ordering::Relaxed);
                    break;
                }
                if let Some(t) = tick.as_mut() {
                    t.tick().await;
                }
                let body = bodies[k % bodies.len()].clone();
                k += workers;
                let t0 = Instant::now();
                let result = client.send(signal, body).await;
                local_lat.push(t0.elapsed().as_micros() as u64);
                requests.fetch_add(1, Ordering::Relaxed);
                match result {
                    Ok(()) => {
                        accepted.fetch_add(per_request, Ordering::Relaxed);
                    }
                    Err(status) => {
                        *refused
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .entry(status)
                            .or_default() += 1
                    }
                }
            }
            latencies
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(local_lat);
        }));
    }
    let ticker = {
        let (progress, accepted) = (progress.clone(), accepted.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let secs = started.elapsed().as_secs_f64();
                progress.set_position(secs as u64);
                progress.set_message(format!(
                    "{} accepted, {:.0}/s",
                    accepted.load(Ordering::Relaxed),
                    accepted.load(Ordering::Relaxed) as f64 / secs.max(1e-9)
                ));
            }
        })
    };
    for t in tasks {
        t.await?;
    }
    ticker.abort();
    progress.finish_and_clear();
    let mut latencies_us =
        std::mem::take(&mut *latencies.lock().unwrap_or_else(|e| e.into_inner()));
    latencies_us.sort_unstable();
    let refused_by_status = std::mem::take(&mut *refused.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(Report {
        items_sent: claimed.load(Ordering::Relaxed),
        items_accepted: accepted.load(Ordering::Relaxed),
        requests: requests.load(Ordering::Relaxed),
        refused_by_status,
        elapsed: started.elapsed(),
        latencies_us,
    })
}
