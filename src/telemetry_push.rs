//! Pushes sluice's own metrics over OTLP: the `periodic` readers of
//! `service.telemetry.metrics.readers`, as the Collector's internal telemetry does. Every
//! `interval` the registry (the series `/metrics` shows) becomes one OTLP metrics request
//! ([`Telemetry::to_otlp`]) and goes out through an `otlp` (gRPC) or `otlphttp` exporter built
//! for it: the exporters' TLS, compression and headers, no sending queue, no retries (the next
//! push carries the cumulative values again). A failed push is logged at warn. At shutdown one
//! last push goes out, after the pipelines have stopped, so it carries their final counts.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;
use sluice_engine::clock::WallClock;
use sluice_engine::component::{BuildContext, ComponentId, Factory, Node};
use sluice_engine::config::{PeriodicReader, TelemetryConfig};
use sluice_engine::schema::Signal;
use sluice_engine::telemetry::Telemetry;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The running pushers; [`Pushers::stop`] makes the last push and shuts them down.
pub struct Pushers {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Pushers {
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Starts one pusher per periodic reader of `config`.
pub async fn start(config: &TelemetryConfig, telemetry: &Telemetry) -> anyhow::Result<Pushers> {
    let readers = config
        .metrics
        .periodic_readers()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let resource = resource(config);
    let started = unix_nanos();
    let (stop, stopped) = watch::channel(false);
    let mut tasks = Vec::new();
    for (i, reader) in readers.into_iter().enumerate() {
        let exporter = exporter(i, &reader).await?;
        tracing::info!(endpoint = %reader.exporter.endpoint, protocol = %reader.exporter.protocol, interval = ?reader.interval, "self-telemetry pushed over OTLP");
        tasks.push(tokio::spawn(push_every(
            reader,
            exporter,
            telemetry.clone(),
            resource.clone(),
            started,
            stopped.clone(),
        )));
    }
    Ok(Pushers { stop, tasks })
}

async fn push_every(
    reader: PeriodicReader,
    exporter: Arc<dyn Node>,
    telemetry: Telemetry,
    resource: Vec<(String, String)>,
    started: u64,
    mut stopped: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(reader.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is now: the first push comes after one interval
    loop {
        let last = tokio::select! {
            _ = tick.tick() => false,
            _ = stopped.wait_for(|s| *s) => true,
        };
        let request = telemetry.to_otlp(resource.clone(), started, unix_nanos());
        let pushed = match sluice_engine::otlp::decode(Signal::Metrics, &request.encode_to_vec()) {
            Ok(payload) => tokio::time::timeout(reader.timeout, exporter.consume(payload))
                .await
                .map_err(|_| format!("no answer within {:?}", reader.timeout))
                .and_then(|r| r.map_err(|e| e.to_string())),
            Err(e) => Err(format!("encoding the metrics: {e}")),
        };
        if let Err(e) = pushed {
            tracing::warn!(endpoint = %reader.exporter.endpoint, error = %e, "pushing self-telemetry failed");
        }
        if last {
            exporter.shutdown().await;
            return;
        }
    }
}

/// `service.telemetry.resource`, with the Collector's `service.name`, `service.version` and
/// `service.instance.id` unless set there.
fn resource(config: &TelemetryConfig) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = config
        .resource
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| {
            let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
            (k.clone(), v)
        })
        .collect();
    let defaults = [
        ("service.name", "sluice".to_string()),
        ("service.version", env!("CARGO_PKG_VERSION").to_string()),
        ("service.instance.id", instance_id()),
    ];
    for (k, v) in defaults {
        if !config.resource.contains_key(k) {
            out.push((k.to_string(), v));
        }
    }
    out
}

/// A random UUID for this process (as the Collector's `service.instance.id`).
fn instance_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| format!("{:x}-{}", unix_nanos(), std::process::id()))
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The exporter of one reader, with its own telemetry registry (its counters would otherwise
/// be pushed too, and could collide with a configured exporter's id).
async fn exporter(i: usize, reader: &PeriodicReader) -> anyhow::Result<Arc<dyn Node>> {
    let e = &reader.exporter;
    let timeout = format!("{}ms", reader.timeout.as_millis().max(1));
    let headers: serde_json::Map<String, serde_json::Value> = e
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().into()))
        .collect();
    let compression = e.compression.clone().unwrap_or_else(|| "none".into());
    let plain = serde_json::json!({
        "compression": compression,
        "headers": headers,
        "timeout": timeout,
        "sending_queue": {"enabled": false},
        "retry_on_failure": {"enabled": false},
    });
    let (factory, config): (&dyn Factory, serde_json::Value) = if e.protocol == "grpc" {
        let mut c = plain;
        c["endpoint"] = e.endpoint.clone().into();
        if e.insecure || e.endpoint.starts_with("http://") {
            c["tls"] = serde_json::json!({"insecure": true});
        }
        (&sluice_egress::otlp::OtlpGrpcFactory, c)
    } else {
        let mut c = plain;
        // The schema's endpoint is the signal's URL (`.../v1/metrics`), used as it is; a base
        // URL gets the path added, as the otlphttp exporter does.
        let url = e.endpoint.trim_end_matches('/');
        match url.strip_suffix("/v1/metrics") {
            Some(base) => {
                c["endpoint"] = base.into();
                c["metrics_endpoint"] = url.into();
            }
            None => c["endpoint"] = url.into(),
        }
        c["encoding"] = if e.protocol == "http/json" {
            "json"
        } else {
            "proto"
        }
        .into();
        (&sluice_egress::otlp::OtlpHttpFactory, c)
    };
    let id = format!("service.telemetry.metrics.readers[{i}]");
    let parsed = factory
        .parse_config(&config)
        .map_err(|e| anyhow::anyhow!("{id}: {e}"))?;
    let node = factory
        .build_exporter(BuildContext {
            id: ComponentId::parse(&format!("{}/self_telemetry_{i}", factory.type_name()))
                .map_err(|e| anyhow::anyhow!("{id}: {e}"))?,
            config: parsed,
            telemetry: Telemetry::new(),
            clock: Arc::new(WallClock),
            extensions: Default::default(),
        })
        .map_err(|e| anyhow::anyhow!("{id}: {e}"))?;
    node.start()
        .await
        .map_err(|e| anyhow::anyhow!("{id}: {e}"))?;
    Ok(node)
}
