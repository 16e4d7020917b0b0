//! The `kubeletstats` receiver: the Collector's kubelet stats receiver. Every
//! `collection_interval` it reads the node's kubelet Summary API (`GET /stats/summary`) and
//! turns it into node, pod, container (and, on request, volume) metrics with the Collector's
//! names, units, types, attributes, start times and default-enabled set. Full reference:
//! `README.md` beside this file.
//!
//! The response is parsed with serde into structs that borrow it ([`summary`]) and appended
//! straight into the engine's metric tables with [`MetricsBuilder`]: no OTLP request and no
//! `String` per metric in between.
//!
//! Failures (no connection, non-200, timeout, bad JSON, a body over the size limit, an
//! unreadable token) never stop the receiver: each is logged (the first at once, then at most
//! once a minute with the count in between) and counted by reason. A refusal downstream
//! (memory limiter, full queue) is counted as refused points; the next scrape brings fresh
//! values.

pub mod client;
pub mod config;
#[cfg(any(test, feature = "testing"))]
pub mod fake_kubelet;
pub mod metrics;
pub mod summary;

#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_engine::clock::Clock;
use sluice_engine::component::{
    BoxFuture, BuildContext, ComponentError, ComponentId, ConfigError, ConsumerRef, Factory, Kind,
    Lifecycle, ParsedConfig, Service, SignalConsumers, parse_config,
};
use sluice_engine::otlp::build::MetricsBuilder;
use sluice_engine::payload::Payload;
use sluice_engine::schema::Signal;
use sluice_engine::telemetry::{Counter, ReceiverMetrics, Telemetry};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use client::{ClientEnv, KubeletClient, ScrapeError};
use config::{KubeletStatsConfig, MetricGroup};

pub struct KubeletStatsFactory;

impl Factory for KubeletStatsFactory {
    fn kind(&self) -> Kind {
        Kind::Receiver
    }
    fn type_name(&self) -> &'static str {
        "kubeletstats"
    }
    fn signals(&self) -> &'static [Signal] {
        &[Signal::Metrics]
    }
    fn description(&self) -> &'static str {
        "node, pod, container and volume metrics from the kubelet's /stats/summary"
    }
    fn parse_config(&self, config: &serde_json::Value) -> Result<ParsedConfig, ConfigError> {
        let c: KubeletStatsConfig = parse_config(config)?;
        c.validate()?;
        Ok(Arc::new(c))
    }
    fn build_receiver(
        &self,
        ctx: BuildContext,
        consumers: SignalConsumers,
    ) -> Result<Arc<dyn Service>, ComponentError> {
        let config = ctx.config::<KubeletStatsConfig>()?;
        let next = consumers
            .get(&Signal::Metrics)
            .cloned()
            .ok_or_else(|| ComponentError::new(&ctx.id, "is only a metrics receiver"))?;
        Ok(Arc::new(KubeletStatsReceiver::new(
            ctx.id,
            config,
            next,
            &ctx.telemetry,
            ctx.clock,
            ClientEnv::from_process(),
        )))
    }
}

/// The receiver's self-telemetry: the Collector's scraper and receiver series plus failures
/// by reason.
#[derive(Clone)]
struct ScrapeMetrics {
    receiver: ReceiverMetrics,
    scraped: Counter,
    errored: Counter,
    telemetry: Telemetry,
    id: String,
}

impl ScrapeMetrics {
    fn new(t: &Telemetry, id: &ComponentId) -> Self {
        let name = id.to_string();
        let labels = [("receiver", name.as_str()), ("scraper", "kubeletstats")];
        ScrapeMetrics {
            // The Collector's scraper receivers report no transport.
            receiver: ReceiverMetrics::new(t, id, ""),
            scraped: t.counter(
                "otelcol_scraper_scraped_metric_points",
                "Number of metric points successfully scraped",
                &labels,
            ),
            errored: t.counter(
                "otelcol_scraper_errored_metric_points",
                "Number of metric points that were unable to be scraped",
                &labels,
            ),
            telemetry: t.clone(),
            id: name,
        }
    }

    fn failed(&self, reason: &'static str) {
        self.telemetry
            .counter(
                "sluice_scraper_failed_scrapes",
                "Scrapes that produced no data, by reason",
                &[
                    ("receiver", self.id.as_str()),
                    ("scraper", "kubeletstats"),
                    ("reason", reason),
                ],
            )
            .add(1);
    }
}

/// Logs a run of failures without flooding: the first at once, then at most one line per
/// `every` with the count since; a success after failures is logged once.
struct LogGate {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
    failing: bool,
}

impl LogGate {
    fn new(every: Duration) -> Self {
        LogGate {
            every,
            last: None,
            suppressed: 0,
            failing: false,
        }
    }

    /// Whether to log this failure now, and how many were not logged before it.
    fn failure(&mut self, now: Instant) -> Option<u64> {
        self.failing = true;
        if self
            .last
            .is_none_or(|t| now.duration_since(t) >= self.every)
        {
            self.last = Some(now);
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }

    /// Whether this success ends a run of failures.
    fn success(&mut self) -> bool {
        let recovered = self.failing;
        self.failing = false;
        self.last = None;
        self.suppressed = 0;
        recovered
    }
}

/// One scrape's worth of work, shared with the scrape task.
pub struct Scraper {
    id: ComponentId,
    config: Arc<KubeletStatsConfig>,
    enabled: [bool; metrics::COUNT],
    next: ConsumerRef,
    metrics: ScrapeMetrics,
    clock: Arc<dyn Clock>,
    client: KubeletClient,
    started_unix_nanos: u64,
    log: Mutex<LogGate>,
}

impl Scraper {
    /// Converts one summary body (from `url`) into a payload: the part of a scrape without
    /// I/O.
    pub fn payload(
        config: &KubeletStatsConfig,
        enabled: &[bool; metrics::COUNT],
        body: &[u8],
        url: &str,
        now_unix_nanos: u64,
        receiver_start_unix_nanos: u64,
    ) -> Result<Payload, ScrapeError> {
        let summary: summary::Summary<'_> =
            serde_json::from_slice(body).map_err(|e| ScrapeError::Json {
                url: url.to_string(),
                detail: e.to_string(),
            })?;
        let groups = config.groups();
        let attr = |name| config.resource_attribute_enabled(name);
        let options = metrics::Options {
            enabled,
            node: groups.contains(&MetricGroup::Node),
            pod: groups.contains(&MetricGroup::Pod),
            container: groups.contains(&MetricGroup::Container),
            volume: groups.contains(&MetricGroup::Volume),
            node_all_interfaces: config.collect_all_network_interfaces.node,
            pod_all_interfaces: config.collect_all_network_interfaces.pod,
            attr_node_name: attr("k8s.node.name"),
            attr_pod_uid: attr("k8s.pod.uid"),
            attr_pod_name: attr("k8s.pod.name"),
            attr_namespace: attr("k8s.namespace.name"),
            attr_container_name: attr("k8s.container.name"),
            attr_volume_name: attr("k8s.volume.name"),
            now_unix_nanos,
            receiver_start_unix_nanos,
        };
        // Up to ~16 points per node, pod or container and ~3 of those per pod: sizes the point
        // columns once.
        let mut b = MetricsBuilder::with_capacity(16 * (1 + summary.pods.len() * 3));
        metrics::append_summary(&mut b, &summary, &options);
        b.finish().map_err(|e| ScrapeError::Build(e.to_string()))
    }

    /// Scrapes once and hands the result on. Never fails: failures are logged and counted.
    pub async fn scrape(&self) {
        if let Some(payload) = self.fetch().await {
            self.deliver(payload).await;
        }
    }

    /// Reads and converts the summary; `None` when the scrape failed (logged and counted).
    /// Safe to cancel: nothing has been handed on yet.
    pub async fn fetch(&self) -> Option<Payload> {
        let result = match self.client.get_summary(self.config.scrape_timeout()).await {
            Ok(body) => Self::payload(
                &self.config,
                &self.enabled,
                &body,
                self.client.url(),
                self.clock.now_unix_nanos(),
                self.started_unix_nanos,
            ),
            Err(e) => Err(e),
        };
        let payload = match result {
            Ok(p) => p,
            Err(e) => {
                self.metrics.failed(e.reason());
                // The Collector's scraperhelper: a failed scrape has no points, so none are
                // counted as errored.
                self.metrics.errored.add(0);
                let gate = self
                    .log
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .failure(Instant::now());
                if let Some(suppressed) = gate {
                    tracing::warn!(
                        receiver = %self.id,
                        error = %e,
                        reason = e.reason(),
                        failures_not_logged = suppressed,
                        "kubeletstats: scrape failed (further failures are logged at most once a minute)"
                    );
                }
                return None;
            }
        };
        if self.log.lock().unwrap_or_else(|p| p.into_inner()).success() {
            tracing::info!(receiver = %self.id, url = self.client.url(), "kubeletstats: scraping again");
        }
        Some(payload)
    }

    /// Hands a scrape's payload to the pipeline and counts the outcome. Not cancelled by
    /// shutdown, so a payload is either taken or counted as refused, never lost uncounted.
    pub async fn deliver(&self, payload: Payload) {
        let points = payload.item_count();
        self.metrics.scraped.add(points as u64);
        if points == 0 {
            return;
        }
        match self.next.consume(payload).await {
            Ok(()) => self.metrics.receiver.accepted(Signal::Metrics, points),
            Err(e) => {
                self.metrics.receiver.refused(Signal::Metrics, points);
                tracing::warn!(receiver = %self.id, error = %e, points, "kubeletstats: the pipeline refused a scrape's metrics");
            }
        }
    }
}

pub struct KubeletStatsReceiver {
    id: ComponentId,
    config: Arc<KubeletStatsConfig>,
    next: ConsumerRef,
    metrics: ScrapeMetrics,
    clock: Arc<dyn Clock>,
    env: ClientEnv,
    task: Mutex<Option<(JoinHandle<()>, watch::Sender<bool>)>>,
}

impl KubeletStatsReceiver {
    pub fn new(
        id: ComponentId,
        config: Arc<KubeletStatsConfig>,
        next: ConsumerRef,
        telemetry: &Telemetry,
        clock: Arc<dyn Clock>,
        env: ClientEnv,
    ) -> Self {
        KubeletStatsReceiver {
            metrics: ScrapeMetrics::new(telemetry, &id),
            id,
            config,
            next,
            clock,
            env,
            task: Mutex::new(None),
        }
    }

    /// The scraper this receiver runs (built at start: it reads files and the kubeconfig).
    pub async fn scraper(&self) -> Result<Scraper, ComponentError> {
        let client = KubeletClient::new(&self.config, &self.env)
            .await
            .map_err(|e| ComponentError::new(&self.id, e))?;
        Ok(Scraper {
            id: self.id.clone(),
            enabled: self.config.enabled_metrics(),
            config: self.config.clone(),
            next: self.next.clone(),
            metrics: self.metrics.clone(),
            started_unix_nanos: self.clock.now_unix_nanos(),
            clock: self.clock.clone(),
            client,
            log: Mutex::new(LogGate::new(Duration::from_secs(60))),
        })
    }
}

impl Lifecycle for KubeletStatsReceiver {
    fn start(&self) -> BoxFuture<'_, Result<(), ComponentError>> {
        Box::pin(async move {
            let scraper = self.scraper().await?;
            tracing::info!(receiver = %self.id, url = scraper.client.url(), auth_type = self.config.auth_type.as_str(), "kubeletstats: scraping every {:?}", self.config.collection_interval);
            let (stop_tx, mut stop) = watch::channel(false);
            let delay = self.config.initial_delay;
            let every = self.config.collection_interval;
            let handle = tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.changed() => return,
                }
                let mut ticks = tokio::time::interval(every);
                // A scrape that overran skips the ticks it missed instead of bursting.
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                loop {
                    tokio::select! {
                        _ = ticks.tick() => {}
                        _ = stop.changed() => return,
                    }
                    // A hung kubelet does not hold up shutdown; a payload being handed on does
                    // (bounded by the pipeline: the service bounds the whole shutdown).
                    let payload = tokio::select! {
                        p = scraper.fetch() => p,
                        _ = stop.changed() => return,
                    };
                    if let Some(p) = payload {
                        scraper.deliver(p).await;
                    }
                }
            });
            *self.task.lock().unwrap_or_else(|p| p.into_inner()) = Some((handle, stop_tx));
            Ok(())
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some((handle, stop)) = task {
                let _ = stop.send(true);
                let _ = handle.await;
            }
        })
    }
}
