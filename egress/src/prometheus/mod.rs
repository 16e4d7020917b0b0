//! The `prometheus` exporter: serves the metrics it receives on `endpoint` + `/metrics` for a
//! Prometheus server to scrape, as the Collector's `prometheusexporter` does, with the same
//! config, names, labels, values and accumulation rules.
//!
//! ```yaml
//! exporters:
//!   prometheus:
//!     endpoint: 0.0.0.0:8889              # required; bound exactly as written
//!     namespace: ""                       # prefix of every metric name
//!     const_labels: {}                    # labels on every series
//!     send_timestamps: false              # write data point timestamps
//!     metric_expiration: 5m               # series not updated for this long disappear
//!     enable_open_metrics: false          # serve OpenMetrics (with exemplars) when asked
//!     add_metric_suffixes: true           # _total, _seconds, _bytes, _ratio, ...
//!     translation_strategy: ""            # UnderscoreEscapingWith[out]Suffixes; wins over the above
//!     without_scope_info: false           # no otel_scope_* labels
//!     resource_to_telemetry_conversion:
//!       enabled: false                    # every resource attribute becomes a label
//!       exclude_service_attributes: false # ... except service.name/namespace/instance.id
//!     tls: {cert_file: .., key_file: ..}  # serve HTTPS (the Collector's configtls; see sluice_tls)
//! ```
//!
//! Modules: [`config`], [`naming`] (metric and label names, the translator's rules),
//! [`labels`] (attribute values and label text), [`store`] (series state and the
//! accumulation rules), [`ingest`] (Arrow payload -> store), [`encode`] (the vectorized
//! text / OpenMetrics writer), [`gofmt`] (numbers as Go writes them).
//!
//! A scrape asks for a format with `Accept`: OpenMetrics 1.0.0 when `enable_open_metrics` is
//! on and the scraper accepts it (Prometheus does), else text 0.0.4; protobuf requests get
//! text. `Accept-Encoding: gzip` gets a gzip body. Counted in self-telemetry:
//! `otelcol_exporter_sent_metric_points` (points taken into the state) and
//! `otelcol_exporter_dropped_metric_points{reason}` (points that cannot be exposed: see
//! [`store::DropReason`]).

pub mod config;
pub mod encode;
pub mod gofmt;
pub mod ingest;
pub mod labels;
pub mod naming;
pub mod store;
#[cfg(test)]
mod tests;

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use sluice_engine::Payload;
use sluice_engine::clock::Clock;
use sluice_engine::component::{
    BoxFuture, BuildContext, ComponentError, ComponentId, ConfigError, ConsumeError, Consumer,
    Factory, Kind, Lifecycle, Node, ParsedConfig, parse_config,
};
use sluice_engine::config_types::bind_address;
use sluice_engine::schema::Signal;
use sluice_engine::telemetry::{Counter, ExporterMetrics, Gauge, Telemetry};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use config::PrometheusConfig;
pub use encode::{Chunks, Encoder, Format};
use ingest::{Outcome, Translator};
use naming::MetricNamer;
pub use store::{DropReason, Store};

/// The exporter's state: the series and how names are translated. Everything a scrape or a
/// batch touches, behind one lock.
pub struct State {
    pub store: Store,
    pub translator: Translator,
    pub encoder: Encoder,
    send_timestamps: bool,
}

impl State {
    pub fn new(config: &PrometheusConfig) -> Self {
        let ns = config.namespace_prefix();
        let target_name = if ns.is_empty() {
            "target_info".to_string()
        } else {
            format!("{ns}_target_info")
        };
        State {
            store: Store::new(
                config.metric_expiration.as_nanos() as u64,
                config.enable_open_metrics,
                &target_name,
            ),
            translator: Translator::new(
                MetricNamer {
                    namespace: ns,
                    with_suffixes: config.with_suffixes(),
                },
                config
                    .const_labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                config.resource_to_telemetry_conversion.enabled,
                config
                    .resource_to_telemetry_conversion
                    .exclude_service_attributes,
                config.without_scope_info,
            ),
            encoder: Encoder::default(),
            send_timestamps: config.send_timestamps,
        }
    }

    /// Applies a metrics payload received at `now` (Unix ns).
    pub fn ingest(&mut self, p: &Payload, now: u64) -> Outcome {
        ingest::ingest(&mut self.translator, &mut self.store, p, now)
    }

    /// The exposition at `now` (expired series removed first), in chunks.
    pub fn scrape_chunks(&mut self, format: Format, now: u64) -> Vec<Vec<u8>> {
        self.scrape_into(format, now, Chunks::default())
    }

    /// [`State::scrape_chunks`] writing into the given chunks.
    pub fn scrape_into(&mut self, format: Format, now: u64, mut out: Chunks) -> Vec<Vec<u8>> {
        self.store.prepare_scrape(now);
        self.encoder
            .encode(&self.store, format, self.send_timestamps, &mut out);
        out.into_vec()
    }

    /// The exposition at `now` in one buffer.
    pub fn scrape(&mut self, format: Format, now: u64) -> Vec<u8> {
        self.scrape_chunks(format, now).concat()
    }
}

pub struct PrometheusFactory;

impl Factory for PrometheusFactory {
    fn kind(&self) -> Kind {
        Kind::Exporter
    }
    fn type_name(&self) -> &'static str {
        "prometheus"
    }
    fn signals(&self) -> &'static [Signal] {
        &[Signal::Metrics]
    }
    fn description(&self) -> &'static str {
        "serves metrics for Prometheus to scrape on <endpoint>/metrics (text 0.0.4, OpenMetrics)"
    }
    fn parse_config(&self, config: &serde_json::Value) -> Result<ParsedConfig, ConfigError> {
        let c: PrometheusConfig = parse_config(config)?;
        c.validate()?;
        Ok(Arc::new(c))
    }
    fn build_exporter(&self, ctx: BuildContext) -> Result<Arc<dyn Node>, ComponentError> {
        let c = ctx.config::<PrometheusConfig>()?;
        Ok(Arc::new(PrometheusExporter::new(
            ctx.id,
            (*c).clone(),
            &ctx.telemetry,
            ctx.clock,
        )))
    }
}

struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
    addr: SocketAddr,
}

pub struct PrometheusExporter {
    id: ComponentId,
    config: PrometheusConfig,
    state: Arc<Mutex<State>>,
    clock: Arc<dyn Clock>,
    metrics: ExporterMetrics,
    dropped: Vec<(DropReason, Counter)>,
    series: Gauge,
    running: Mutex<Option<Running>>,
    /// False in offline replay: the state is kept exactly as live, but nothing listens; the
    /// replay scrapes it in process ([`PrometheusExporter::scrape_now`]).
    serve: bool,
}

impl PrometheusExporter {
    pub fn new(
        id: ComponentId,
        config: PrometheusConfig,
        t: &Telemetry,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let id_s = id.to_string();
        let dropped = DropReason::ALL
            .iter()
            .map(|&r| {
                (
                    r,
                    t.counter(
                        "otelcol_exporter_dropped_metric_points",
                        "Metric points the exporter could not expose, by reason",
                        &[("exporter", id_s.as_str()), ("reason", r.as_str())],
                    ),
                )
            })
            .collect();
        PrometheusExporter {
            state: Arc::new(Mutex::new(State::new(&config))),
            metrics: ExporterMetrics::new(t, &id),
            series: t.gauge(
                "sluice_exporter_prometheus_series",
                "Series the prometheus exporter currently holds",
                &[("exporter", id_s.as_str())],
            ),
            dropped,
            id,
            config,
            clock,
            running: Mutex::new(None),
            serve: true,
        }
    }

    /// Keeps the series as live but binds no endpoint (offline replay: a replay of a day of
    /// traffic in seconds has no scraper, and must not take the live port).
    pub fn without_endpoint(mut self) -> Self {
        self.serve = false;
        self
    }

    /// A scrape at the clock's time, in process: what a Prometheus server would get (text
    /// 0.0.4, or OpenMetrics when enabled), with expired series removed first as a scrape does.
    pub fn scrape_now(&self) -> Vec<u8> {
        let format = if self.config.enable_open_metrics {
            Format::OpenMetrics
        } else {
            Format::Text
        };
        let now = self.clock.now_unix_nanos();
        let mut st = self.lock();
        let body = st.scrape(format, now);
        self.series.set(st.store.series_count() as i64);
        body
    }

    /// The bound address once started (tests bind port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|r| r.addr)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Consumer for PrometheusExporter {
    fn consume(&self, p: Payload) -> BoxFuture<'_, Result<(), ConsumeError>> {
        Box::pin(async move {
            if p.signal() != Signal::Metrics {
                return Err(ConsumeError::Permanent(format!(
                    "{}: the prometheus exporter takes metrics only",
                    self.id
                )));
            }
            let now = self.clock.now_unix_nanos();
            let (outcome, series) = {
                let mut st = self.lock();
                let o = st.ingest(&p, now);
                (o, st.store.series_count())
            };
            self.metrics.sent(Signal::Metrics, outcome.accepted);
            for (reason, n) in &outcome.dropped {
                if let Some((_, c)) = self.dropped.iter().find(|(r, _)| r == reason) {
                    c.add(*n as u64);
                }
            }
            if outcome.dropped_total() > 0 {
                tracing::debug!(exporter = %self.id, dropped = ?outcome.dropped, "metric points not exposed");
            }
            self.series.set(series as i64);
            Ok(())
        })
    }
}

impl Lifecycle for PrometheusExporter {
    fn start(&self) -> BoxFuture<'_, Result<(), ComponentError>> {
        Box::pin(async move {
            if !self.serve {
                return Ok(());
            }
            let endpoint = self.config.endpoint.trim();
            // Certificates first (a missing file fails startup naming it, before binding).
            let tls = self
                .config
                .tls
                .as_ref()
                .map(|t| t.load(sluice_tls::ALPN_HTTP))
                .transpose()
                .map_err(|e| ComponentError::new(&self.id, format!("tls: {e}")))?;
            let listener = tokio::net::TcpListener::bind(bind_address(endpoint).as_ref())
                .await
                .map_err(|e| {
                    ComponentError::new(&self.id, format!("cannot listen on {endpoint}: {e}"))
                })?;
            let addr = listener
                .local_addr()
                .map_err(|e| ComponentError::new(&self.id, e))?;
            let scrape = Scrape {
                state: self.state.clone(),
                clock: self.clock.clone(),
                open_metrics: self.config.enable_open_metrics,
                series: self.series.clone(),
            };
            let app = Router::new().route(
                "/metrics",
                get(move |headers: HeaderMap| {
                    let s = scrape.clone();
                    async move { s.serve(headers).await }
                }),
            );
            let (tx, rx) = oneshot::channel::<()>();
            let id = self.id.clone();
            let task = tokio::spawn(async move {
                let stopped = async {
                    let _ = rx.await;
                };
                let served = match tls {
                    Some(tls) => {
                        let failed_id = id.clone();
                        match sluice_tls::TlsListener::new(listener, tls, move |why| {
                            tracing::debug!(exporter = %failed_id, reason = why, "TLS handshake with a scraper failed");
                        }) {
                            Ok(l) => axum::serve(l, app).with_graceful_shutdown(stopped).await,
                            Err(e) => Err(e),
                        }
                    }
                    None => {
                        axum::serve(listener, app)
                            .with_graceful_shutdown(stopped)
                            .await
                    }
                };
                if let Err(e) = served {
                    tracing::error!(exporter = %id, error = %e, "metrics server stopped with an error");
                }
            });
            tracing::info!(exporter = %self.id, %addr, "serving metrics on /metrics");
            *self.running.lock().unwrap_or_else(|e| e.into_inner()) = Some(Running {
                stop: tx,
                task,
                addr,
            });
            Ok(())
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let running = self
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(r) = running {
                let _ = r.stop.send(());
                // A scraper holding a connection open must not hold up shutdown.
                let mut task = r.task;
                if tokio::time::timeout(Duration::from_secs(2), &mut task)
                    .await
                    .is_err()
                {
                    task.abort();
                }
            }
        })
    }
}

#[derive(Clone)]
struct Scrape {
    state: Arc<Mutex<State>>,
    clock: Arc<dyn Clock>,
    open_metrics: bool,
    /// Updated here too: a scrape is when expired series go.
    series: Gauge,
}

impl Scrape {
    async fn serve(self, headers: HeaderMap) -> Response {
        let accept = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let (format, content_type) = negotiate(accept, self.open_metrics);
        let gzip = headers
            .get(header::ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(gzip_accepted);
        // Encoding a large state takes milliseconds: off the async workers.
        let work = tokio::task::spawn_blocking(move || {
            let now = self.clock.now_unix_nanos();
            let chunks = {
                let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
                let chunks = st.scrape_chunks(format, now);
                self.series.set(st.store.series_count() as i64);
                chunks
            };
            if gzip {
                let size: usize = chunks.iter().map(Vec::len).sum();
                let mut enc = flate2::write::GzEncoder::new(
                    Vec::with_capacity(size / 8),
                    flate2::Compression::fast(),
                );
                for c in &chunks {
                    enc.write_all(c)?;
                }
                Ok::<_, std::io::Error>(Body::from(enc.finish()?))
            } else {
                // Chunk by chunk: no copy into one large buffer.
                let frames = chunks
                    .into_iter()
                    .map(|c| Ok::<_, std::io::Error>(Bytes::from(c)));
                Ok(Body::from_stream(futures_util::stream::iter(frames)))
            }
        })
        .await;
        match work {
            Ok(Ok(body)) => {
                let mut resp = (StatusCode::OK, body).into_response();
                let h = resp.headers_mut();
                h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
                if gzip {
                    h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                }
                resp
            }
            Ok(Err(e)) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("compressing the exposition failed: {e}"),
            )
                .into_response(),
            Err(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("encoding the exposition failed: {e}"),
            )
                .into_response(),
        }
    }
}

pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
const OPENMETRICS_0_0_1_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=0.0.1; charset=utf-8";

/// `expfmt.NegotiateIncludingOpenMetrics` without protobuf (which sluice does not serve):
/// the accepted media ranges by decreasing `q`, the first of text 0.0.4 or (when enabled)
/// OpenMetrics 1.0.0 / 0.0.1 wins (no version means 0.0.1, as there); text when nothing
/// matches.
pub fn negotiate(accept: &str, open_metrics: bool) -> (Format, &'static str) {
    let mut ranges: Vec<(f32, usize, &str, Option<&str>)> = Vec::new();
    for (i, part) in accept.split(',').enumerate() {
        let mut params = part.split(';').map(str::trim);
        let media = params.next().unwrap_or("");
        let mut q = 1.0f32;
        let mut version = None;
        for p in params {
            if let Some((k, v)) = p.split_once('=') {
                match k.trim() {
                    "q" => q = v.trim().parse().unwrap_or(0.0),
                    "version" => version = Some(v.trim()),
                    _ => {}
                }
            }
        }
        if q > 0.0 {
            ranges.push((q, i, media, version));
        }
    }
    ranges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, _, media, version) in ranges {
        match media {
            "text/plain" if matches!(version, None | Some("0.0.4")) => {
                return (Format::Text, TEXT_CONTENT_TYPE);
            }
            "application/openmetrics-text" if open_metrics => match version {
                Some("1.0.0") => return (Format::OpenMetrics, OPENMETRICS_CONTENT_TYPE),
                None | Some("0.0.1") => {
                    return (Format::OpenMetrics, OPENMETRICS_0_0_1_CONTENT_TYPE);
                }
                _ => {}
            },
            _ => {}
        }
    }
    (Format::Text, TEXT_CONTENT_TYPE)
}

/// promhttp's `gzipAccepted`.
fn gzip_accepted(accept_encoding: &str) -> bool {
    accept_encoding.split(',').map(str::trim).any(|part| {
        part == "gzip"
            || (part.starts_with("gzip;")
                && !part
                    .split(';')
                    .skip(1)
                    .any(|p| p.trim().replace(' ', "") == "q=0"))
    })
}
