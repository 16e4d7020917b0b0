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
//! copy of the body and a send: its ceiling must be far above the rates it measures (measure it
//! against `sluice loadgen sink`, which answers without decoding; see [`sink`]). Every trace
//! (and log record) sent gets a trace id of its own for the whole run: the ids are rewritten
//! from a run-wide counter as the body is copied out ([`ids`]), so reusing the pool never
//! repeats a trace.
//!
//! The report: items and requests sent, accepted (OK) vs refused (any error status, by
//! status), achieved items/s, request latency percentiles and, for traces, how many traces,
//! probe (noise) spans and error traces were accepted: what a gateway's filter and tail
//! sampling should then count. `--json` prints it as one JSON object.

pub mod ids;
pub mod shapes;
pub mod sink;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use clap::{Args, Subcommand, ValueEnum};
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use sluice_engine::Signal;
use sluice_engine::config_types::parse_duration;

use ids::{IdSlots, TraceIds};
use shapes::{Rng, Shape};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

#[derive(Subcommand, Debug)]
pub enum LoadgenCommand {
    /// Send traces.
    Traces(GenArgs),
    /// Send metrics (counters, histograms, gauges).
    Metrics(GenArgs),
    /// Send logs.
    Logs(GenArgs),
    /// Answer OTLP/gRPC and OTLP/HTTP without decoding (the generator's ceiling).
    Sink(sink::SinkArgs),
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
    /// OTLP over gRPC, or over HTTP (protobuf bodies to /v1/traces, /v1/metrics, /v1/logs).
    #[arg(long, value_enum, default_value_t = Protocol::Grpc)]
    pub protocol: Protocol,
    /// How long to send (Go duration: 30s, 2m). Ignored when --count is reached first.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// How long one request may wait for its answer before it counts as failed ("no answer"),
    /// so a peer that never answers cannot hang the run (Go duration).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Stop after this many items (spans, data points, log records).
    #[arg(long)]
    pub count: Option<u64>,
    /// Target items per second over all senders, held over the whole run (requests leave on
    /// a fixed schedule, so the count sent over --duration is rate × duration); 0 = as fast as
    /// possible.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// After a refusal the OTLP specification calls retryable (gRPC UNAVAILABLE or
    /// RESOURCE_EXHAUSTED, HTTP 429, 502, 503 or 504), wait this long and send the same
    /// request again (same trace ids), as an SDK's exporter retries, until it is accepted,
    /// refused otherwise, or the run's --duration is over (Go duration: 50ms). Without it a
    /// refused request is counted and the sender goes on to the next.
    #[arg(long, value_parser = parse_duration, value_name = "WAIT")]
    pub retry_refused: Option<Duration>,
    /// Items per request.
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Concurrent senders (requests in flight at once).
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Distinct pre-generated requests, sent round-robin (each send gets fresh trace ids).
    #[arg(long, default_value_t = 64)]
    pub pool: usize,
    /// Spans in each generated trace (a root span and its descendants across services).
    #[arg(long, default_value_t = 8)]
    pub spans_per_trace: usize,
    /// Distinct services (service.name) the traces, metrics and logs come from.
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
    /// Resource attributes: `enriched` (k8s.*, host, cloud: what a gateway receives from
    /// agents) or `app` (service and SDK only: what an application sends to its agent).
    #[arg(long, value_enum, default_value_t = shapes::Resources::Enriched)]
    pub resources: shapes::Resources,
    /// No progress bar (for scripts and CI logs).
    #[arg(long)]
    pub quiet: bool,
    /// Print the report as one JSON object (for scripts).
    #[arg(long)]
    pub json: bool,
    /// Send nothing: write `--count` items to FILE as a capture for `sluice replay` (the
    /// `file` exporter's `format: proto`), every request generated anew with its timestamps
    /// moved as if sent at `--rate` items/s (default 100000), so data time advances as it
    /// would in live traffic; the pods are those of `--pool` requests, as in a live run.
    #[arg(long, value_name = "FILE")]
    pub capture: Option<std::path::PathBuf>,
}

/// What one pre-generated request holds, counted when it is generated.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct BodyStats {
    items: u64,
    /// Distinct traces (lone probe spans are traces of one span); log records for logs.
    traces: u64,
    /// Health-probe spans: what the gateway's `filter/noise` drops.
    noise_spans: u64,
    /// Traces with a span whose status is ERROR: what a `status_code: [ERROR]` policy keeps.
    error_traces: u64,
}

struct PooledRequest {
    body: Bytes,
    slots: IdSlots,
    stats: BodyStats,
}

/// The pre-encoded requests and the run's trace id sequence.
struct Pool {
    requests: Vec<PooledRequest>,
    ids: TraceIds,
}

fn trace_stats(req: &ExportTraceServiceRequest) -> BodyStats {
    use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
    let spans = || {
        req.resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
    };
    let traces: HashSet<&[u8]> = spans().map(|s| s.trace_id.as_slice()).collect();
    let failed: HashSet<&[u8]> = spans()
        .filter(|s| {
            s.status
                .as_ref()
                .is_some_and(|st| st.code == StatusCode::Error as i32)
        })
        .map(|s| s.trace_id.as_slice())
        .collect();
    BodyStats {
        items: spans().count() as u64,
        traces: traces.len() as u64,
        noise_spans: spans()
            .filter(|s| s.name == shapes::PROBE_SPAN_NAME)
            .count() as u64,
        error_traces: failed.len() as u64,
    }
}

impl GenArgs {
    /// The shape of the generated data these arguments ask for.
    fn shape(&self) -> Shape {
        Shape {
            spans_per_trace: self.spans_per_trace,
            services: self.services,
            error_rate: self.error_rate,
            noise_rate: self.noise_rate,
            latency_ms: self.latency_ms,
            resources: self.resources,
        }
    }
}

impl Pool {
    fn generate(signal: Signal, a: &GenArgs, ids: TraceIds) -> anyhow::Result<Pool> {
        let shape = a.shape();
        let now = now_ns();
        let batch = a.batch.max(1);
        let requests = (0..a.pool.max(1))
            .map(|k| {
                let mut r = Rng(0x5eed ^ (k as u64).wrapping_mul(0x9e37_79b9));
                let (body, mut stats) = match signal {
                    Signal::Traces => {
                        let req = shapes::traces(batch, &shape, &mut r, now);
                        (req.encode_to_vec(), trace_stats(&req))
                    }
                    Signal::Metrics => (
                        shapes::metrics(batch, &shape, &mut r, now).encode_to_vec(),
                        BodyStats::default(),
                    ),
                    Signal::Logs => (
                        shapes::logs(batch, &shape, &mut r, now).encode_to_vec(),
                        BodyStats::default(),
                    ),
                };
                let slots = IdSlots::find(signal, &body)
                    .context("the generator's own request does not parse")?;
                if signal != Signal::Traces {
                    stats.items = batch as u64;
                    stats.traces = slots.traces();
                }
                Ok(PooledRequest {
                    body: Bytes::from(body),
                    slots,
                    stats,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Pool { requests, ids })
    }

    /// Request `index`'s body with its traces numbered from `first`, as one buffer.
    fn fresh_body(&self, index: usize, first: u64) -> Bytes {
        let r = &self.requests[index];
        if r.slots.traces() == 0 {
            return r.body.clone();
        }
        let mut out = BytesMut::with_capacity(r.body.len());
        r.slots.write_fresh(&r.body, &self.ids, first, &mut out);
        out.freeze()
    }
}

/// A request on its way out over gRPC: the ids are rewritten as tonic's encoder copies the
/// body into the frame buffer, so fresh ids cost no extra copy.
struct Outgoing {
    pool: Arc<Pool>,
    index: usize,
    first: u64,
}

#[derive(Clone, Copy, Default)]
struct FreshIdsCodec;

impl Codec for FreshIdsCodec {
    type Encode = Outgoing;
    type Decode = Bytes;
    type Encoder = FreshIdsCodec;
    type Decoder = FreshIdsCodec;
    fn encoder(&mut self) -> Self::Encoder {
        FreshIdsCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        FreshIdsCodec
    }
}

impl Encoder for FreshIdsCodec {
    type Item = Outgoing;
    type Error = tonic::Status;
    fn encode(&mut self, item: Outgoing, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        let r = &item.pool.requests[item.index];
        dst.reserve(r.body.len());
        r.slots
            .write_fresh(&r.body, &item.pool.ids, item.first, dst);
        Ok(())
    }
}

impl Decoder for FreshIdsCodec {
    type Item = Bytes;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// What a run achieved.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub items_sent: u64,
    pub items_accepted: u64,
    pub requests: u64,
    pub refused_by_status: BTreeMap<String, u64>,
    /// Refusals answered by sending the same request again (`--retry-refused`); a request
    /// finally accepted counts once in the items accepted.
    pub resent: u64,
    pub elapsed: Duration,
    pub latencies_us: Vec<u64>,
    /// Encoded request bytes of the accepted requests.
    pub bytes_accepted: u64,
    /// In the accepted requests: distinct traces (each with an id of its own), probe spans and
    /// traces with an error span (traces only; log records count as traces for logs).
    pub traces_accepted: u64,
    pub noise_spans_accepted: u64,
    pub error_traces_accepted: u64,
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
        if self.resent > 0 {
            println!("resent {} refused requests (--retry-refused)", self.resent);
        }
        if signal == Signal::Traces {
            println!(
                "accepted {} traces (each its own trace id), {} of them with an error; {} probe spans",
                self.traces_accepted, self.error_traces_accepted, self.noise_spans_accepted
            );
        }
        println!(
            "request latency p50 {:?}  p90 {:?}  p99 {:?}  max {:?}",
            self.percentile(0.5),
            self.percentile(0.9),
            self.percentile(0.99),
            self.percentile(1.0)
        );
    }

    pub fn to_json(&self, signal: Signal) -> serde_json::Value {
        let us = |p| self.percentile(p).as_micros() as u64;
        serde_json::json!({
            "signal": signal.as_str(),
            "items_sent": self.items_sent,
            "items_accepted": self.items_accepted,
            "requests": self.requests,
            "refused_by_status": self.refused_by_status,
            "resent": self.resent,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "items_per_s": self.items_per_sec(),
            "bytes_accepted": self.bytes_accepted,
            "traces_accepted": self.traces_accepted,
            "noise_spans_accepted": self.noise_spans_accepted,
            "error_traces_accepted": self.error_traces_accepted,
            "latency_us": {"p50": us(0.5), "p90": us(0.9), "p99": us(0.99), "max": us(1.0)},
        })
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
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
                    .tcp_nodelay(true)
                    .connect()
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!("cannot connect to {url}: {}", failure::describe(&e))
                    })?;
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
                // Without TCP_NODELAY a request whose headers and body go out in two writes
                // waits for the server's delayed ACK (~40 ms) before the body leaves.
                let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
                connector.set_nodelay(true);
                let client = hyper_util::client::legacy::Client::builder(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .build(connector);
                Client::Http(Box::new(client), uri)
            }
        })
    }

    /// Sends request `index` of the pool with its traces numbered from `first`; `Err` carries
    /// the status name for the report.
    async fn send(
        &self,
        signal: Signal,
        pool: &Arc<Pool>,
        index: usize,
        first: u64,
    ) -> Result<(), String> {
        match self {
            Client::Grpc(channel) => {
                let mut grpc = tonic::client::Grpc::new(channel.clone());
                grpc.ready().await.map_err(|e| failure::describe(&e))?;
                let path = http::uri::PathAndQuery::from_static(match signal {
                    Signal::Traces => "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                    Signal::Metrics => {
                        "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
                    }
                    Signal::Logs => "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
                });
                let outgoing = Outgoing {
                    pool: pool.clone(),
                    index,
                    first,
                };
                grpc.unary(tonic::Request::new(outgoing), path, FreshIdsCodec)
                    .await
                    .map(|_| ())
                    .map_err(|s| failure::grpc_status(&s))
            }
            Client::Http(client, uri) => {
                let req = http::Request::post(uri.clone())
                    .header(http::header::CONTENT_TYPE, "application/x-protobuf")
                    .body(Full::new(pool.fresh_body(index, first)))
                    .map_err(|e| e.to_string())?;
                let resp = client.request(req).await.map_err(|e| failure::http(&e))?;
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

/// Why a request failed, in words: the report groups failed requests by these texts, so they
/// are short and stable (no counters, no addresses), and say what probably happened.
mod failure {
    use std::error::Error;

    /// An error and its sources, each said once (`transport error: tcp connect error:
    /// Connection refused`, where tonic repeats "tcp connect error" two levels deep).
    pub fn chain(e: &(dyn Error + 'static)) -> String {
        let mut parts: Vec<String> = Vec::new();
        let mut next = Some(e);
        while let Some(err) = next {
            let text = err.to_string();
            if !parts.last().is_some_and(|last| last.contains(&text)) {
                parts.push(text);
            }
            next = err.source();
        }
        parts.join(": ")
    }

    /// The first error of type `T` in `e`'s chain.
    fn find<'a, T: Error + 'static>(e: &'a (dyn Error + 'static)) -> Option<&'a T> {
        let mut next = Some(e);
        while let Some(err) = next {
            if let Some(t) = err.downcast_ref::<T>() {
                return Some(t);
            }
            next = err.source();
        }
        None
    }

    /// A failure to connect or to exchange bytes, by its I/O cause where there is one.
    pub fn describe(e: &(dyn Error + 'static)) -> String {
        use std::io::ErrorKind;
        match find::<std::io::Error>(e).map(std::io::Error::kind) {
            Some(ErrorKind::ConnectionRefused) => {
                "connection refused (nothing listens on the endpoint)".into()
            }
            Some(ErrorKind::ConnectionReset) => "the connection was reset by the server".into(),
            Some(ErrorKind::TimedOut) => "connecting timed out".into(),
            _ => chain(e),
        }
    }

    /// A failed OTLP/HTTP request (no HTTP status came back).
    pub fn http(e: &hyper_util::client::legacy::Error) -> String {
        let not_http = find::<hyper::Error>(e).is_some_and(|h| {
            h.is_parse()
                || h.is_incomplete_message()
                || h.to_string().contains("unexpected message")
        });
        if not_http {
            return "the server did not answer in HTTP/1.1 (a gRPC port? try --protocol grpc)"
                .into();
        }
        if find::<hyper::Error>(e).is_some_and(hyper::Error::is_canceled) {
            return "the connection closed before the request was answered".into();
        }
        describe(e)
    }

    /// Whether a failure (as [`grpc_status`] and the HTTP client word it) is one the OTLP
    /// specification says to retry: the server is overloaded or unavailable for now.
    pub fn is_retryable(failure: &str) -> bool {
        matches!(
            failure,
            "ResourceExhausted" | "Unavailable" | "HTTP 429" | "HTTP 502" | "HTTP 503" | "HTTP 504"
        )
    }

    /// A failed OTLP/gRPC call: its status code (as the Collector's logs name them), or, when
    /// the peer is not a gRPC server at all, that.
    pub fn grpc_status(s: &tonic::Status) -> String {
        // tonic's words for an answer that is plain HTTP: "... while receiving response with
        // status: 404 Not Found" (a body came back), "grpc-status header missing, mapped from
        // HTTP status code 404" (none did).
        let m = s.message();
        let http = m
            .split_once("while receiving response with status: ")
            .or_else(|| m.split_once("mapped from HTTP status code "));
        if let Some((_, http)) = http {
            return format!(
                "the server answered HTTP {http}, not gRPC (an OTLP/HTTP port? try --protocol http)"
            );
        }
        if s.code() == tonic::Code::Unavailable
            && let Some(source) = std::error::Error::source(s)
        {
            return format!("Unavailable: {}", describe(source));
        }
        format!("{:?}", s.code())
    }
}

/// Totals of the accepted requests, shared by the workers.
#[derive(Default)]
struct Accepted {
    items: AtomicU64,
    bytes: AtomicU64,
    traces: AtomicU64,
    noise_spans: AtomicU64,
    error_traces: AtomicU64,
}

impl Accepted {
    fn add(&self, request: &PooledRequest) {
        let s = &request.stats;
        self.items.fetch_add(s.items, Ordering::Relaxed);
        self.bytes
            .fetch_add(request.body.len() as u64, Ordering::Relaxed);
        self.traces.fetch_add(s.traces, Ordering::Relaxed);
        self.noise_spans.fetch_add(s.noise_spans, Ordering::Relaxed);
        self.error_traces
            .fetch_add(s.error_traces, Ordering::Relaxed);
    }
}

/// Runs the load and returns the report.
pub async fn run(signal: Signal, a: GenArgs) -> anyhow::Result<Report> {
    if let Some(path) = a.capture.clone() {
        return write_capture(signal, &a, &path);
    }
    run_with_ids(signal, a, TraceIds::for_this_run()).await
}

/// `--capture`: the requests written to a file instead of sent (see [`GenArgs::capture`]).
fn write_capture(signal: Signal, a: &GenArgs, path: &std::path::Path) -> anyhow::Result<Report> {
    use std::io::Write as _;
    let count = a
        .count
        .context("--capture needs --count (how many items to write)")?;
    let rate = if a.rate == 0 { 100_000 } else { a.rate };
    let shape = a.shape();
    let batch = a.batch.max(1);
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let started = Instant::now();
    let t0 = now_ns();
    let mut report = Report::default();
    let mut k = 0u64;
    while report.items_sent < count {
        let n = batch.min((count - report.items_sent) as usize);
        // Data time as if this request was sent at `rate` items/s.
        let now = t0 + (report.items_sent as f64 * 1e9 / rate as f64) as u64;
        // Each request's generator seeded by a hash of its index: seeds that differ by a
        // multiple of the generator's increment (as `k * increment` did) replay shifted copies
        // of one sequence, repeating trace ids across requests.
        let mut r = Rng(Rng(0x5eed_u64.wrapping_add(k)).next());
        // The pods come from a fleet of `--pool` requests' worth, as in a live run.
        let slot = k % a.pool.max(1) as u64;
        let fleet = |res: &mut Option<_>| shapes::fleet_resource(res, shape.resources, slot);
        let (body, stats) = match signal {
            Signal::Traces => {
                let mut req = shapes::traces(n, &shape, &mut r, now);
                req.resource_spans
                    .iter_mut()
                    .for_each(|rs| fleet(&mut rs.resource));
                (req.encode_to_vec(), trace_stats(&req))
            }
            Signal::Metrics => {
                let mut req = shapes::metrics(n, &shape, &mut r, now);
                req.resource_metrics
                    .iter_mut()
                    .for_each(|rm| fleet(&mut rm.resource));
                let stats = BodyStats {
                    items: n as u64,
                    ..BodyStats::default()
                };
                (req.encode_to_vec(), stats)
            }
            Signal::Logs => {
                let mut req = shapes::logs(n, &shape, &mut r, now);
                req.resource_logs
                    .iter_mut()
                    .for_each(|rl| fleet(&mut rl.resource));
                let stats = BodyStats {
                    items: n as u64,
                    ..BodyStats::default()
                };
                (req.encode_to_vec(), stats)
            }
        };
        out.write_all(&(body.len() as u32).to_be_bytes())?;
        out.write_all(&body)?;
        report.items_sent += stats.items;
        report.items_accepted += stats.items;
        report.requests += 1;
        report.bytes_accepted += body.len() as u64 + 4;
        report.traces_accepted += stats.traces;
        report.noise_spans_accepted += stats.noise_spans;
        report.error_traces_accepted += stats.error_traces;
        k += 1;
    }
    out.flush()?;
    report.elapsed = started.elapsed();
    Ok(report)
}

/// [`run`] with a given trace id sequence (tests pin it).
async fn run_with_ids(signal: Signal, a: GenArgs, ids: TraceIds) -> anyhow::Result<Report> {
    let pool = Arc::new(Pool::generate(signal, &a, ids)?);
    let client = Arc::new(Client::new(signal, &a).await?);
    let per_request = a.batch.max(1) as u64;
    let limit = a.count.unwrap_or(u64::MAX);
    let claimed = Arc::new(AtomicU64::new(0));
    // The next trace number: each send takes as many as its body has traces.
    let next_trace = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(Accepted::default());
    let requests = Arc::new(AtomicU64::new(0));
    let resent = Arc::new(AtomicU64::new(0));
    let retry_refused = a.retry_refused;
    let refused: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<u64>>> = Arc::default();
    let started = Instant::now();
    let deadline = started + a.duration;
    let workers = a.concurrency.max(1);
    let timeout = a.timeout;
    // With --rate, request n (counted over all workers) is due at `started + n × period`: the
    // rate holds over the run however the workers interleave, and a worker that falls behind
    // (a slow answer) sends at once, keeping the schedule rather than restarting it. The run
    // sends exactly the requests due before the deadline.
    let period = (a.rate > 0).then(|| per_request as f64 / a.rate as f64);
    let next_slot = Arc::new(AtomicU64::new(0));

    let progress = if a.quiet || a.json {
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
        let (pool, client, next_trace) = (pool.clone(), client.clone(), next_trace.clone());
        let (claimed, accepted, requests) = (claimed.clone(), accepted.clone(), requests.clone());
        let (refused, latencies, next_slot, resent) = (
            refused.clone(),
            latencies.clone(),
            next_slot.clone(),
            resent.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut k = w;
            let mut local_lat = Vec::new();
            loop {
                let due = match period {
                    Some(p) => {
                        let n = next_slot.fetch_add(1, Ordering::Relaxed);
                        let due = started + Duration::from_secs_f64(n as f64 * p);
                        if due >= deadline {
                            break;
                        }
                        Some(due)
                    }
                    None if Instant::now() >= deadline => break,
                    None => None,
                };
                if claimed.fetch_add(per_request, Ordering::Relaxed) >= limit {
                    claimed.fetch_sub(per_request, Ordering::Relaxed);
                    break;
                }
                if let Some(due) = due {
                    tokio::time::sleep_until(due.into()).await;
                }
                let index = k % pool.requests.len();
                k += workers;
                let first =
                    next_trace.fetch_add(pool.requests[index].slots.traces(), Ordering::Relaxed);
                let result = loop {
                    let t0 = Instant::now();
                    let result = match tokio::time::timeout(
                        timeout,
                        client.send(signal, &pool, index, first),
                    )
                    .await
                    {
                        Ok(r) => r,
                        Err(_) => Err(format!("no answer within {timeout:?}")),
                    };
                    local_lat.push(t0.elapsed().as_micros() as u64);
                    requests.fetch_add(1, Ordering::Relaxed);
                    match (&result, retry_refused) {
                        (Err(status), Some(wait))
                            if failure::is_retryable(status)
                                && Instant::now() + wait < deadline =>
                        {
                            resent.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(wait).await;
                        }
                        _ => break result,
                    }
                };
                match result {
                    Ok(()) => accepted.add(&pool.requests[index]),
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
                let items = accepted.items.load(Ordering::Relaxed);
                progress.set_position(secs as u64);
                progress.set_message(format!(
                    "{items} accepted, {:.0}/s",
                    items as f64 / secs.max(1e-9)
                ));
            }
        })
    };
    for t in tasks {
        t.await?;
    }
    // A paced run's window is its schedule: the requests sent, a period each (what the
    // rate is held over), or longer if the sends fell behind.
    let sent_requests = claimed.load(Ordering::Relaxed) / per_request;
    let elapsed = match period {
        Some(p) => started
            .elapsed()
            .max(Duration::from_secs_f64(sent_requests as f64 * p)),
        None => started.elapsed(),
    };
    ticker.abort();
    progress.finish_and_clear();
    let mut latencies_us =
        std::mem::take(&mut *latencies.lock().unwrap_or_else(|e| e.into_inner()));
    latencies_us.sort_unstable();
    let refused_by_status = std::mem::take(&mut *refused.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(Report {
        items_sent: claimed.load(Ordering::Relaxed),
        items_accepted: accepted.items.load(Ordering::Relaxed),
        requests: requests.load(Ordering::Relaxed),
        refused_by_status,
        resent: resent.load(Ordering::Relaxed),
        elapsed,
        latencies_us,
        bytes_accepted: accepted.bytes.load(Ordering::Relaxed),
        traces_accepted: accepted.traces.load(Ordering::Relaxed),
        noise_spans_accepted: accepted.noise_spans.load(Ordering::Relaxed),
        error_traces_accepted: accepted.error_traces.load(Ordering::Relaxed),
    })
}

#[cfg(test)]
mod tests;
