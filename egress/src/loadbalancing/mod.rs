//! The `loadbalancing` exporter (also accepted as `load_balancing`): every item goes to the
//! backend the Collector's consistent-hash ring picks for its routing key, so all spans of a
//! trace reach one gateway, whichever agent sent them. Full reference: `README.md` beside this
//! file.
//!
//! ```yaml
//! exporters:
//!   loadbalancing:
//!     routing_key: traceID            # default for traces; service for logs and metrics
//!     protocol:
//!       otlp:                         # a whole `otlp` exporter config; endpoint set per backend
//!         tls: { insecure: true }
//!         sending_queue: { queue_size: 1000 }
//!     resolver:
//!       dns: { hostname: otel-gateway-collector-headless.telemetry.svc.cluster.local, port: 4317 }
//! ```
//!
//! Shape: the resolver ([`resolver`]) publishes endpoint sets; each new set rebuilds the ring
//! (when the ring differs), starts an `otlp` exporter (its own queue, retry and counters) for
//! each new endpoint and drains the exporters of removed ones. A payload is split by the
//! engine's routing kernel ([`sluice_engine::kernels::routing`]) and each part enqueued on its
//! backend. A removed backend drains its queue; what it cannot deliver goes, through its
//! queue's [`Spill`] seam, to a task that routes it again through the new ring (the Collector
//! loses it), counted in `otelcol_loadbalancer_rerouted_*`.

#[cfg(test)]
pub(crate) mod fake_dns;
mod orphans;
pub mod resolver;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::Deserialize;
use sluice_engine::Payload;
use sluice_engine::component::{
    BoxFuture, BuildContext, ComponentError, ComponentId, ConfigError, ConsumeError, Consumer,
    ExtensionRef, Extensions, Factory, Kind, Lifecycle, Node, ParsedConfig, parse_config,
};
use sluice_engine::config_types::deserialize_duration;
use sluice_engine::kernels::routing::{self, HashRing, RoutingKey};
use sluice_engine::schema::Signal;
use sluice_engine::telemetry::{Counter, ExporterMetrics, Histogram, Telemetry};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::flight::{FlightExporterConfig, exporter as flight_exporter};
use crate::otlp::{OtlpGrpcConfig, grpc_exporter};
use crate::queue::{QueueConfig, QueuedExporter, Sender, Spill};
use resolver::{DnsResolver, K8sResolver, Publisher, Resolver, StaticResolver};
use sluice_k8s::k8sattributes::watch::Environment;
use sluice_k8s::service_endpoints::{Backoff, ServiceEndpoints};

const ALL: &[Signal] = &[Signal::Traces, Signal::Metrics, Signal::Logs];

/// The port a backend without one gets (the Collector's `defaultPort`).
const DEFAULT_PORT: &str = "4317";

/// Buckets of `otelcol_loadbalancer_backend_latency` (milliseconds), the OpenTelemetry SDK's
/// default histogram boundaries the Collector records it with.
const LATENCY_BOUNDS_MS: [f64; 15] = [
    0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0, 5000.0, 7500.0,
    10000.0,
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadBalancingConfig {
    #[serde(default)]
    pub routing_key: String,
    #[serde(default)]
    pub routing_attributes: Vec<String>,
    #[serde(default)]
    pub protocol: ProtocolConfig,
    pub resolver: ResolverConfig,
    /// The Collector's top-level exporterhelper settings (off there by default). sluice
    /// queues and retries per backend only: these are refused unless they say "off".
    #[serde(default)]
    pub sending_queue: Option<serde_json::Value>,
    #[serde(default)]
    pub retry_on_failure: Option<serde_json::Value>,
    #[serde(default)]
    pub timeout: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtocolConfig {
    #[serde(default)]
    pub otlp: Option<serde_json::Value>,
    #[serde(default)]
    pub flight: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolverConfig {
    #[serde(default, rename = "static")]
    pub static_: Option<StaticResolverConfig>,
    #[serde(default)]
    pub dns: Option<DnsResolverConfig>,
    #[serde(default)]
    pub k8s: Option<K8sResolverConfig>,
    #[serde(default)]
    pub aws_cloud_map: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticResolverConfig {
    #[serde(default)]
    pub hostnames: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsResolverConfig {
    #[serde(default)]
    pub hostname: String,
    /// A string in the Collector (`"4317"`); a YAML number is taken too.
    #[serde(default, deserialize_with = "port_string")]
    pub port: Option<String>,
    #[serde(default = "d5s", deserialize_with = "deserialize_duration")]
    pub interval: Duration,
    #[serde(default = "d1s", deserialize_with = "deserialize_duration")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct K8sResolverConfig {
    #[serde(default)]
    pub service: String,
    #[serde(default = "default_ports")]
    pub ports: Vec<i64>,
    #[serde(default = "d1s", deserialize_with = "deserialize_duration")]
    pub timeout: Duration,
    #[serde(default)]
    pub return_hostnames: bool,
}

fn d5s() -> Duration {
    Duration::from_secs(5)
}
fn d1s() -> Duration {
    Duration::from_secs(1)
}
fn default_ports() -> Vec<i64> {
    vec![4317]
}

fn port_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Port {
        Text(String),
        Number(u64),
    }
    Ok(match Option::<Port>::deserialize(d)? {
        None => None,
        Some(Port::Text(s)) if s.is_empty() => None,
        Some(Port::Text(s)) => Some(s),
        Some(Port::Number(n)) => Some(n.to_string()),
    })
}

/// What [`LoadBalancingFactory::parse_config`] checked and built.
#[derive(Debug)]
pub struct Parsed {
    /// The routing key of each signal (`Signal as usize`); an error for a signal the key does
    /// not apply to.
    keys: [Result<RoutingKey, String>; 3],
    /// The exporter config each backend gets, its endpoint replaced.
    template: Template,
    /// `protocol.<otlp|flight>.endpoint` was set (and is replaced per backend).
    endpoint_given: bool,
    resolver: ResolverSpec,
}

/// `protocol`: the config of each backend's exporter.
#[derive(Debug, Clone)]
enum Template {
    Otlp(OtlpGrpcConfig),
    /// With `protocol.flight.port`: the port each backend is connected on, whatever port its
    /// resolver string (its ring key) names.
    Flight(FlightExporterConfig, Option<u16>),
}

impl Template {
    fn drain_timeout(&self) -> Duration {
        match self {
            Template::Otlp(c) => c.sending_queue.drain_timeout,
            Template::Flight(c, _) => c.sending_queue.drain_timeout,
        }
    }
    fn name(&self) -> &'static str {
        match self {
            Template::Otlp(_) => "otlp",
            Template::Flight(..) => "flight",
        }
    }
    fn sending_queue(&self) -> &QueueConfig {
        match self {
            Template::Otlp(c) => &c.sending_queue,
            Template::Flight(c, _) => &c.sending_queue,
        }
    }
}

#[derive(Debug, Clone)]
enum ResolverSpec {
    Static(Vec<String>),
    Dns {
        hostname: String,
        port: Option<String>,
        interval: Duration,
        timeout: Duration,
    },
    K8s {
        endpoints: ServiceEndpoints,
        timeout: Duration,
    },
}

fn parse(config: &serde_json::Value) -> Result<Parsed, ConfigError> {
    let c: LoadBalancingConfig = parse_config(config)?;
    for (name, v) in [
        ("sending_queue", &c.sending_queue),
        ("retry_on_failure", &c.retry_on_failure),
    ] {
        let off = v
            .as_ref()
            .is_none_or(|v| v.get("enabled") == Some(&serde_json::Value::Bool(false)));
        if !off {
            return Err(ConfigError::new(
                name,
                format!(
                    "sluice queues and retries per backend: set {name} under protocol.otlp (each backend gets its own)"
                ),
            ));
        }
    }
    if c.timeout.is_some() {
        return Err(ConfigError::new(
            "timeout",
            "sluice times out each backend's sends: set timeout under protocol.otlp",
        ));
    }
    // Routing keys: the Collector's names and per-signal defaults.
    let named = |k: &str| -> Result<Option<RoutingKey>, ConfigError> {
        Ok(Some(match k {
            "" => return Ok(None),
            "traceID" => RoutingKey::TraceId,
            "service" => RoutingKey::Service,
            "resource" => RoutingKey::Resource,
            "metric" => RoutingKey::Metric,
            "streamID" => RoutingKey::StreamId,
            "attributes" => {
                if c.routing_attributes.is_empty() {
                    return Err(ConfigError::new(
                        "routing_attributes",
                        "routing_key attributes needs at least one attribute name",
                    ));
                }
                RoutingKey::Attributes(c.routing_attributes.clone())
            }
            other => {
                return Err(ConfigError::new(
                    "routing_key",
                    format!(
                        "unsupported routing_key {other:?}: expected one of traceID, service, resource, metric, streamID, attributes"
                    ),
                ));
            }
        }))
    };
    let key = named(&c.routing_key)?;
    if !c.routing_attributes.is_empty() && !matches!(key, Some(RoutingKey::Attributes(_))) {
        return Err(ConfigError::new(
            "routing_attributes",
            "routing_attributes applies to routing_key: attributes only",
        ));
    }
    let keys = Signal::ALL.map(|s| {
        let k = key.clone().unwrap_or(match s {
            Signal::Traces => RoutingKey::TraceId,
            Signal::Logs | Signal::Metrics => RoutingKey::Service,
        });
        if k.supports(s) {
            Ok(k)
        } else {
            Err(format!(
                "routing_key {} does not apply to {} (a Collector refuses it for such a pipeline too)",
                k.name(),
                s.as_str()
            ))
        }
    });
    if key.is_some() && keys.iter().all(|k| k.is_err()) {
        return Err(ConfigError::new("routing_key", "applies to no signal"));
    }
    // Protocol: a whole `otlp` or `flight` exporter config, endpoint replaced per backend.
    let (name, given) = match (&c.protocol.otlp, &c.protocol.flight) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                "protocol",
                "set one of otlp and flight, not both",
            ));
        }
        (None, Some(f)) => ("flight", Some(f.clone())),
        (o, None) => ("otlp", o.clone()),
    };
    let mut exporter = match given {
        None | Some(serde_json::Value::Null) => serde_json::json!({}),
        Some(v @ serde_json::Value::Object(_)) => v,
        Some(_) => {
            return Err(ConfigError::new(
                format!("protocol.{name}"),
                "expected a map",
            ));
        }
    };
    let endpoint_given = exporter.get("endpoint").is_some();
    // sluice's `protocol.flight.port`: the ring keeps the resolver's strings (`10.0.0.7:4317`,
    // what a Collector agent's ring hashes, so a mixed fleet routes a trace id to one gateway)
    // while the backend is connected on the gateway's flight port.
    let flight_port = match exporter.as_object_mut().and_then(|m| m.remove("port")) {
        None | Some(serde_json::Value::Null) => None,
        Some(_) if name != "flight" => {
            return Err(ConfigError::new(
                "protocol.otlp.port",
                "unknown field (protocol.flight only: the port to connect each backend on)",
            ));
        }
        Some(v) => match v.as_u64().and_then(|p| u16::try_from(p).ok()) {
            Some(p) if p > 0 => Some(p),
            _ => {
                return Err(ConfigError::new(
                    "protocol.flight.port",
                    format!("expected a port number (1-65535), got {v}"),
                ));
            }
        },
    };
    exporter["endpoint"] = serde_json::Value::String(format!("placeholder:{DEFAULT_PORT}"));
    let within = |e: ConfigError| e.within(&format!("protocol.{name}"));
    let template = if name == "flight" {
        let t: FlightExporterConfig = parse_config(&exporter).map_err(within)?;
        t.validate().map_err(within)?;
        Template::Flight(t, flight_port)
    } else {
        let t: OtlpGrpcConfig = parse_config(&exporter).map_err(within)?;
        t.validate().map_err(within)?;
        Template::Otlp(t)
    };
    // Exactly one resolver.
    let r = &c.resolver;
    let given = [
        r.static_.is_some(),
        r.dns.is_some(),
        r.k8s.is_some(),
        r.aws_cloud_map.is_some(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    if given != 1 {
        return Err(ConfigError::new(
            "resolver",
            if given == 0 {
                "no resolver: set one of static, dns, k8s"
            } else {
                "only one resolver may be set (static, dns, k8s, aws_cloud_map)"
            },
        ));
    }
    let resolver = if let Some(s) = &r.static_ {
        if s.hostnames.is_empty() {
            return Err(ConfigError::new(
                "resolver.static.hostnames",
                "no endpoints specified for the static resolver",
            ));
        }
        if let Some(i) = s.hostnames.iter().position(|h| h.trim().is_empty()) {
            return Err(ConfigError::new(
                format!("resolver.static.hostnames[{i}]"),
                "empty hostname",
            ));
        }
        // Each backend's exporter would refuse such an endpoint only when the ring is built,
        // and the resolver then keeps the previous backends (none, at start): said now.
        for (i, h) in s.hostnames.iter().enumerate() {
            let endpoint = with_protocol_port(h, &template);
            let checked = match &template {
                Template::Otlp(_) => crate::otlp::otlp_grpc_endpoint(&endpoint).map(drop),
                Template::Flight(..) => crate::otlp::grpc_endpoint(&endpoint).map(drop),
            };
            if let Err(e) = checked {
                return Err(ConfigError::new(
                    format!("resolver.static.hostnames[{i}]"),
                    e.message,
                ));
            }
        }
        ResolverSpec::Static(s.hostnames.clone())
    } else if let Some(d) = &r.dns {
        if d.hostname.is_empty() {
            return Err(ConfigError::new(
                "resolver.dns.hostname",
                "no hostname specified to resolve the backends",
            ));
        }
        if let Some(p) = &d.port
            && p.parse::<u16>().map_or(true, |p| p == 0)
        {
            return Err(ConfigError::new(
                "resolver.dns.port",
                format!("{p:?} is not a port number"),
            ));
        }
        for (name, v) in [("interval", d.interval), ("timeout", d.timeout)] {
            if v.is_zero() {
                return Err(ConfigError::new(
                    format!("resolver.dns.{name}"),
                    "must be greater than 0",
                ));
            }
        }
        ResolverSpec::Dns {
            hostname: d.hostname.clone(),
            port: d.port.clone(),
            interval: d.interval,
            timeout: d.timeout,
        }
    } else if let Some(k) = &r.k8s {
        if k.service.is_empty() {
            return Err(ConfigError::new(
                "resolver.k8s.service",
                "no service specified to resolve the backends",
            ));
        }
        if let Some(p) = k.ports.iter().find(|p| !(1..=65535).contains(*p)) {
            return Err(ConfigError::new(
                "resolver.k8s.ports",
                format!("{p} is not a port number"),
            ));
        }
        if k.timeout.is_zero() {
            return Err(ConfigError::new(
                "resolver.k8s.timeout",
                "must be greater than 0",
            ));
        }
        let ports = k.ports.iter().map(|p| *p as u16).collect();
        let endpoints = ServiceEndpoints::new(
            &k.service,
            ports,
            k.return_hostnames,
            &Environment::process(),
        )
        .map_err(|e| ConfigError::new("resolver.k8s.service", e))?;
        ResolverSpec::K8s {
            endpoints,
            timeout: k.timeout,
        }
    } else {
        return Err(ConfigError::new(
            "resolver.aws_cloud_map",
            "not supported by sluice: use resolver.dns or resolver.static",
        ));
    };
    Ok(Parsed {
        keys,
        template,
        endpoint_given,
        resolver,
    })
}

/// The factory, under the Collector's name and its newer spelling.
pub struct LoadBalancingFactory {
    pub type_name: &'static str,
}

impl Factory for LoadBalancingFactory {
    fn kind(&self) -> Kind {
        Kind::Exporter
    }
    fn type_name(&self) -> &'static str {
        self.type_name
    }
    fn signals(&self) -> &'static [Signal] {
        ALL
    }
    fn description(&self) -> &'static str {
        "consistent-hash routing by trace id (or service, resource, ...) to backends from a static list, DNS or a Kubernetes service's EndpointSlices, OTLP to each"
    }
    fn parse_config(&self, config: &serde_json::Value) -> Result<ParsedConfig, ConfigError> {
        Ok(Arc::new(parse(config)?))
    }
    /// The backends' `sending_queue.storage` (each backend has a persistent queue of its own).
    fn extension_refs(&self, config: &ParsedConfig) -> Vec<ExtensionRef> {
        let Some(parsed) = config.downcast_ref::<Parsed>() else {
            return Vec::new();
        };
        let protocol = parsed.template.name();
        parsed
            .template
            .sending_queue()
            .extension_refs()
            .into_iter()
            .map(|r| ExtensionRef {
                path: format!("protocol.{protocol}.{}", r.path),
                id: r.id,
            })
            .collect()
    }
    fn build_exporter(&self, ctx: BuildContext) -> Result<Arc<dyn Node>, ComponentError> {
        let parsed = ctx.config::<Parsed>()?;
        if parsed.endpoint_given {
            tracing::warn!(exporter = %ctx.id, protocol = parsed.template.name(), "the protocol's endpoint is replaced by each backend's address");
        }
        let resolver: Arc<dyn Resolver> = match &parsed.resolver {
            ResolverSpec::Static(h) => Arc::new(StaticResolver {
                hostnames: h.clone(),
            }),
            ResolverSpec::Dns {
                hostname,
                port,
                interval,
                timeout,
            } => Arc::new(
                DnsResolver::nameserver_from_env()
                    .and_then(|ns| {
                        DnsResolver::new(hostname.clone(), port.clone(), *interval, *timeout, ns)
                    })
                    .map_err(|e| ComponentError::new(&ctx.id, e))?,
            ),
            ResolverSpec::K8s { endpoints, timeout } => Arc::new(K8sResolver {
                endpoints: endpoints.clone(),
                timeout: *timeout,
                env: Environment::process(),
                backoff: Backoff::default(),
            }),
        };
        Ok(Arc::new(LoadBalancer::new(ctx, parsed, resolver)))
    }
}

/// One backend: its `otlp` exporter and its telemetry.
struct Backend {
    /// The resolver's string (what the ring hashes).
    endpoint: String,
    /// The `exporter` label of its exporter metrics: `loadbalancing[/name]/<endpoint>`.
    exporter_id: String,
    exporter: Arc<dyn BackendExporter>,
    latency: Histogram,
    succeeded: Counter,
    failed: Counter,
}

/// What the load balancer needs of a backend's exporter: a [`QueuedExporter`] (its own
/// queue, retry and counters) whatever the protocol it speaks.
trait BackendExporter: Consumer + Lifecycle + Send + Sync {
    fn hand_off_failures(&self, to: Arc<dyn Spill>);
    fn give_up_now(&self);
}

impl<S: Sender> BackendExporter for QueuedExporter<S> {
    fn hand_off_failures(&self, to: Arc<dyn Spill>) {
        QueuedExporter::hand_off_failures(self, to)
    }
    fn give_up_now(&self) {
        QueuedExporter::give_up_now(self)
    }
}

/// The ring and its backends, `backends[i]` serving `ring.endpoints()[i]`. Replaced whole on a
/// change; whoever routes holds the snapshot it routed with until its enqueues are done.
struct Routing {
    ring: HashRing,
    backends: Vec<Arc<Backend>>,
}

struct Shared {
    id: ComponentId,
    keys: [Result<RoutingKey, String>; 3],
    template: Template,
    telemetry: Telemetry,
    clock: Arc<dyn sluice_engine::clock::Clock>,
    /// What each backend's `sending_queue.storage` is looked up in.
    extensions: Extensions,
    routing: RwLock<Arc<Routing>>,
    /// Items that could not be routed at all (no backends; a signal the key does not apply
    /// to; a re-route that found no taker before the drain deadline).
    metrics: ExporterMetrics,
    rerouted: [Counter; 3],
    /// Where removed backends' spills ([`Reroute`]) send what they cannot deliver: the only
    /// strong sender, dropped at shutdown once the drains are done, so that the re-routing
    /// task ends.
    handoff: Mutex<Option<mpsc::UnboundedSender<Handed>>>,
    /// Removed backends draining.
    draining: Mutex<Vec<Drain>>,
    /// The backends' `sending_queue.drain_timeout`: how long a removed backend's old routes
    /// and a re-route may take, and the bound of this exporter's own shutdown.
    drain_timeout: Duration,
    /// Held while a backend set is applied, and while a drained backend's series are removed,
    /// so that an endpoint coming back is never left with removed series.
    membership: tokio::sync::Mutex<()>,
    stopping: std::sync::atomic::AtomicBool,
}

/// Backends removed by one change of the set, draining.
struct Drain {
    backends: Vec<Arc<Backend>>,
    task: JoinHandle<()>,
}

/// A removed backend's [`Spill`]: what it cannot deliver goes to the re-routing task
/// ([`Shared::reroute`]). The channel is held weakly: once the load balancer has dropped its
/// own sender (shutdown), nothing takes it and the queue drops it, counted as `shutdown`.
///
/// A persistent backend's spill (`wait`) waits until the new ring has taken the payload (and
/// stored it, the backends being persistent too) before its record is deleted; if nothing
/// takes it, the spill refuses and the record stays in the backend's queue directory, routed
/// again after the next start ([`Shared::adopt_orphans`]).
struct Reroute {
    to: mpsc::WeakUnboundedSender<Handed>,
    wait: bool,
}

/// What a removed backend hands on, and for a persistent one who waits to learn whether the
/// new ring took it.
struct Handed {
    payload: Payload,
    taken: Option<oneshot::Sender<bool>>,
}

impl Reroute {
    /// Hands `payload` to the re-routing task; with `wait`, `Ok` once the new ring took it.
    async fn hand_on(
        to: &mpsc::WeakUnboundedSender<Handed>,
        payload: Payload,
        wait: bool,
    ) -> Result<(), String> {
        let stopped = || "the load balancer has stopped routing".to_string();
        let (taken, answer) = match wait {
            true => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(rx))
            }
            false => (None, None),
        };
        to.upgrade()
            .ok_or_else(stopped)?
            .send(Handed { payload, taken })
            .map_err(|_| stopped())?;
        match answer {
            None => Ok(()),
            Some(rx) => match rx.await {
                Ok(true) => Ok(()),
                Ok(false) => Err("no backend of the current ring took it".into()),
                Err(_) => Err(stopped()),
            },
        }
    }
}

impl Spill for Reroute {
    fn spill(&self, payload: Payload) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(Reroute::hand_on(&self.to, payload, self.wait))
    }
}

/// The exporter: routes, and owns the resolver, the ring and the backends.
pub struct LoadBalancer {
    shared: Arc<Shared>,
    resolver: Mutex<Option<Arc<dyn Resolver>>>,
    handoff_rx: Mutex<Option<mpsc::UnboundedReceiver<Handed>>>,
    /// The resolver and the task applying its updates.
    tasks: Mutex<Vec<JoinHandle<()>>>,
    reroute: Mutex<Option<JoinHandle<()>>>,
}

impl LoadBalancer {
    fn new(ctx: BuildContext, parsed: Arc<Parsed>, resolver: Arc<dyn Resolver>) -> Self {
        let (handoff, rx) = mpsc::unbounded_channel();
        let id = ctx.id.to_string();
        let rerouted = Signal::ALL.map(|s| {
            let name: &'static str = match s {
                Signal::Traces => "otelcol_loadbalancer_rerouted_spans",
                Signal::Metrics => "otelcol_loadbalancer_rerouted_metric_points",
                Signal::Logs => "otelcol_loadbalancer_rerouted_log_records",
            };
            ctx.telemetry.counter(
                name,
                "Items a removed backend could not deliver, routed again through the new ring (sluice)",
                &[("exporter", id.as_str())],
            )
        });
        LoadBalancer {
            shared: Arc::new(Shared {
                metrics: ExporterMetrics::new(&ctx.telemetry, &ctx.id),
                id: ctx.id,
                keys: parsed.keys.clone(),
                template: parsed.template.clone(),
                telemetry: ctx.telemetry,
                clock: ctx.clock,
                extensions: ctx.extensions,
                routing: RwLock::new(Arc::new(Routing {
                    ring: HashRing::new(&[]).expect("an empty ring"),
                    backends: Vec::new(),
                })),
                rerouted,
                handoff: Mutex::new(Some(handoff)),
                draining: Mutex::new(Vec::new()),
                drain_timeout: parsed.template.drain_timeout(),
                membership: tokio::sync::Mutex::new(()),
                stopping: std::sync::atomic::AtomicBool::new(false),
            }),
            resolver: Mutex::new(Some(resolver)),
            handoff_rx: Mutex::new(Some(rx)),
            tasks: Mutex::new(Vec::new()),
            reroute: Mutex::new(None),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `host:port` to connect a backend on: the resolver's string, with the receiving side's
/// default port when it names none (4317 for OTLP/gRPC, the Collector's; 4319 for the `flight`
/// receiver), or on `protocol.flight.port` whatever port it names.
fn with_protocol_port(endpoint: &str, template: &Template) -> String {
    match template {
        Template::Otlp(_) => with_port(endpoint),
        Template::Flight(_, Some(port)) => format!("{}:{port}", host_of(endpoint)),
        Template::Flight(_, None) => with_default_port(endpoint, FLIGHT_DEFAULT_PORT),
    }
}

/// A resolver string's scheme (`http://`, `https://`, `dns:///`: what an `otlp` exporter's
/// endpoint may start with, so what a static resolver's hostname may) and the rest. The
/// scheme's colon is not a port's: without this, `http://10.0.0.1:4317` read as a bare IPv6
/// address.
fn split_scheme(endpoint: &str) -> (&str, &str) {
    ["https://", "http://", "dns:///"]
        .into_iter()
        .find_map(|scheme| {
            endpoint
                .strip_prefix(scheme)
                .map(|rest| (&endpoint[..scheme.len()], rest))
        })
        .unwrap_or(("", endpoint))
}

/// The host of a resolver string, with its scheme if it has one: `host`, `host:port`, `[v6]`,
/// `[v6]:port` (brackets kept), or a bare IPv6 address (bracketed).
fn host_of(endpoint: &str) -> String {
    let (scheme, rest) = split_scheme(endpoint);
    if let Some(end) = rest.strip_prefix('[').and_then(|r| r.find(']')) {
        return format!("{scheme}{}", &rest[..end + 2]);
    }
    match rest.matches(':').count() {
        0 => endpoint.to_string(),
        1 => format!("{scheme}{}", rest.split_once(':').map_or(rest, |(h, _)| h)),
        _ => format!("{scheme}[{rest}]"),
    }
}

/// The `flight` receiver's default port.
const FLIGHT_DEFAULT_PORT: &str = "4319";

fn with_port(endpoint: &str) -> String {
    with_default_port(endpoint, DEFAULT_PORT)
}

fn with_default_port(endpoint: &str, default_port: &str) -> String {
    let (_, rest) = split_scheme(endpoint);
    let has_port = match rest.strip_prefix('[') {
        // [v6] or [v6]:port
        Some(v6) => v6.contains("]:"),
        None => rest.contains(':'),
    };
    if has_port {
        endpoint.to_string()
    } else {
        format!("{endpoint}:{default_port}")
    }
}

impl Shared {
    fn snapshot(&self) -> Arc<Routing> {
        self.routing
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A backend's id, `loadbalancing[/name]/<endpoint>`: the `exporter` label of its metrics
    /// and the name of its persistent queue directories (one per backend).
    fn backend_id(&self, endpoint: &str) -> ComponentId {
        ComponentId {
            type_name: self.id.type_name.clone(),
            name: Some(match &self.id.name {
                Some(n) => format!("{n}/{endpoint}"),
                None => endpoint.to_string(),
            }),
        }
    }

    /// What a backend's exporter (or its orphaned queue) is built with.
    fn backend_context(&self, id: ComponentId) -> BuildContext {
        BuildContext {
            id,
            config: Arc::new(()),
            telemetry: self.telemetry.clone(),
            clock: self.clock.clone(),
            extensions: self.extensions.clone(),
        }
    }

    fn new_backend(&self, endpoint: &str) -> Result<Arc<Backend>, ComponentError> {
        let id = self.backend_id(endpoint);
        let exporter_id = id.to_string();
        let ctx = self.backend_context(id);
        let exporter: Arc<dyn BackendExporter> = match &self.template {
            Template::Otlp(template) => {
                let mut config = template.clone();
                config.endpoint = with_port(endpoint);
                grpc_exporter(ctx, &config)?
            }
            Template::Flight(template, _) => {
                let mut config = template.clone();
                config.endpoint = with_protocol_port(endpoint, &self.template);
                Arc::new(flight_exporter(&ctx, &config)?)
            }
        };
        let sid = self.id.to_string();
        let outcome = |success: &str| {
            self.telemetry.counter(
                "otelcol_loadbalancer_backend_outcome",
                "Number of successes and failures for each endpoint.",
                &[
                    ("exporter", sid.as_str()),
                    ("endpoint", endpoint),
                    ("success", success),
                ],
            )
        };
        Ok(Arc::new(Backend {
            endpoint: endpoint.to_string(),
            exporter_id,
            latency: self.telemetry.histogram(
                "otelcol_loadbalancer_backend_latency_milliseconds",
                "Response latency in ms for the backends.",
                &[("exporter", sid.as_str()), ("endpoint", endpoint)],
                &LATENCY_BOUNDS_MS,
            ),
            succeeded: outcome("true"),
            failed: outcome("false"),
            exporter,
        }))
    }

    /// A new backend set: a new ring if it differs, exporters started for new endpoints and
    /// drained for removed ones.
    async fn apply(self: &Arc<Self>, endpoints: Vec<String>) {
        let _applying = self.membership.lock().await;
        let ring = match HashRing::new(&endpoints) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(exporter = %self.id, error = %e, "backend set refused");
                return;
            }
        };
        let current = self.snapshot();
        if ring == current.ring {
            return;
        }
        let mut backends = Vec::with_capacity(endpoints.len());
        let mut started: Vec<Arc<Backend>> = Vec::new();
        for e in ring.endpoints() {
            if let Some(b) = current.backends.iter().find(|b| &b.endpoint == e) {
                backends.push(b.clone());
                continue;
            }
            match self.new_backend(e) {
                Ok(b) => {
                    if let Err(err) = b.exporter.start().await {
                        tracing::error!(exporter = %self.id, endpoint = %e, error = %err, "cannot start the backend's exporter");
                    }
                    started.push(b.clone());
                    backends.push(b);
                }
                Err(err) => {
                    // Building fails only on TLS files gone since startup: this set is not
                    // applied (the old ring stays, routing as before) and says why.
                    tracing::error!(exporter = %self.id, endpoint = %e, error = %err, "cannot build the backend's exporter; keeping the previous backends");
                    for b in started {
                        b.exporter.shutdown().await;
                    }
                    return;
                }
            }
        }
        let removed: Vec<Arc<Backend>> = current
            .backends
            .iter()
            .filter(|b| !ring.endpoints().contains(&b.endpoint))
            .cloned()
            .collect();
        *self.routing.write().unwrap_or_else(|e| e.into_inner()) =
            Arc::new(Routing { ring, backends });
        if removed.is_empty() {
            return;
        }
        // From now on a removed backend's failures go to the re-routing task at once: its
        // destination is leaving, and the new ring has a home for every item.
        let wait = self.template.sending_queue().storage.is_some();
        let reroute: Option<Arc<dyn Spill>> = lock(&self.handoff).as_ref().map(|tx| {
            Arc::new(Reroute {
                to: tx.downgrade(),
                wait,
            }) as Arc<dyn Spill>
        });
        for b in &removed {
            tracing::info!(exporter = %self.id, endpoint = %b.endpoint, "backend removed: draining its queue; what it cannot deliver is routed again");
            if let Some(to) = &reroute {
                b.exporter.hand_off_failures(to.clone());
            }
        }
        let (shared, backends) = (self.clone(), removed.clone());
        let task = tokio::spawn(async move {
            // Routes started with the old ring may still be enqueueing on a removed backend:
            // its queue closes once they are done (the old snapshot is then ours alone).
            let deadline = Instant::now() + shared.drain_timeout;
            while Arc::strong_count(&current) > 1 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            drop(current);
            let mut drains = tokio::task::JoinSet::new();
            for b in backends {
                let shared = shared.clone();
                drains.spawn(async move {
                    b.exporter.shutdown().await;
                    shared.forget(&b).await;
                });
            }
            while drains.join_next().await.is_some() {}
        });
        lock(&self.draining).push(Drain {
            backends: removed,
            task,
        });
    }

    /// Removes the series of a removed backend once it has drained, unless its endpoint is
    /// back in the ring (its new exporter shares them) or the load balancer is stopping (the
    /// process reads them for its exit status). Endpoints churn with every rollout of the
    /// backends: their series would otherwise pile up for the life of the process.
    async fn forget(&self, b: &Backend) {
        let _applying = self.membership.lock().await;
        if self.stopping.load(std::sync::atomic::Ordering::Relaxed)
            || self.snapshot().ring.endpoints().contains(&b.endpoint)
        {
            return;
        }
        let id = self.id.to_string();
        self.telemetry
            .remove(&[("exporter", b.exporter_id.as_str())]);
        // Its queue's share of the memory account (`sluice_memory_held_bytes{component}`).
        self.telemetry
            .remove(&[("component", b.exporter_id.as_str())]);
        self.telemetry
            .remove(&[("exporter", id.as_str()), ("endpoint", b.endpoint.as_str())]);
    }

    /// Splits `payload` by backend and enqueues each part. The first failure is returned (as
    /// the Collector's), after every part was tried; a backend that refused counts its part
    /// in its own `enqueue_failed`, a payload refused whole here is counted here.
    async fn route(&self, payload: Payload) -> Result<(), ConsumeError> {
        let (signal, n) = (payload.signal(), payload.item_count());
        match self.route_parts(payload).await {
            Ok(()) => Ok(()),
            Err(Refused::Whole(e)) => {
                self.metrics.enqueue_failed(signal, n);
                Err(e)
            }
            Err(Refused::Parts(_, e)) => Err(e),
        }
    }

    /// Splits `payload` by backend and enqueues each part; says what was refused.
    async fn route_parts(&self, payload: Payload) -> Result<(), Refused> {
        if payload.is_empty() {
            return Ok(());
        }
        let key = match &self.keys[payload.signal() as usize] {
            Ok(k) => k,
            Err(e) => return Err(Refused::Whole(ConsumeError::Permanent(e.clone()))),
        };
        let routing = self.snapshot();
        if routing.ring.is_empty() {
            return Err(Refused::Whole(ConsumeError::Unavailable(format!(
                "{}: no backends resolved yet",
                self.id
            ))));
        }
        let cannot_route = |e: &dyn std::fmt::Display| {
            Refused::Whole(ConsumeError::Permanent(format!(
                "{}: cannot route: {e}",
                self.id
            )))
        };
        // A wire form under `traceID`: routed by a skim of its trace ids, not decoded.
        let parts = match routing::split_wire(&payload, key, &routing.ring) {
            Some(Ok(parts)) => parts,
            wire => {
                if let Some(Err(e)) = wire {
                    // Only a clean skim makes a wire form: its bytes not splitting is a bug.
                    // Its tables route it as any payload.
                    tracing::error!(exporter = %self.id, error = %e, "internal: a wire form did not split (a bug); routing it decoded");
                }
                routing::split(&payload, key, &routing.ring).map_err(|e| cannot_route(&e))?
            }
        };
        let mut refused = Vec::new();
        let mut first = None;
        for (b, part) in parts {
            let backend = &routing.backends[b];
            let started = Instant::now();
            let r = backend.exporter.consume(part.clone()).await;
            backend
                .latency
                .observe(started.elapsed().as_secs_f64() * 1000.0);
            match r {
                Ok(()) => backend.succeeded.add(1),
                Err(e) => {
                    backend.failed.add(1);
                    tracing::debug!(exporter = %self.id, endpoint = %backend.endpoint, error = %e, "backend refused");
                    refused.push(part);
                    first.get_or_insert(e);
                }
            }
        }
        match first {
            None => Ok(()),
            Some(e) => Err(Refused::Parts(refused, e)),
        }
    }

    /// Routes what removed backends handed on, through the current ring, until it is taken or
    /// the drain timeout passes (once only when stopping). What finds no taker is counted as
    /// `send_failed` here: `reroute_refused`, or `shutdown` when stopping (data lost at
    /// shutdown: the process exits 3) — unless it came from a persistent queue, which is told
    /// and keeps it stored (nothing is dropped). Ends when the load balancer drops its sender
    /// (shutdown).
    async fn reroute(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<Handed>) {
        while let Some(Handed { payload, taken }) = rx.recv().await {
            let signal = payload.signal();
            self.rerouted[signal as usize].add(payload.item_count() as u64);
            let deadline = Instant::now() + self.drain_timeout;
            let mut pending = payload;
            let took = loop {
                let (left, e) = match self.route_parts(pending.clone()).await {
                    Ok(()) => break true,
                    Err(Refused::Whole(e)) => (vec![pending], e),
                    Err(Refused::Parts(left, e)) => (left, e),
                };
                let lost: usize = left.iter().map(Payload::item_count).sum();
                let stopping = self.stopping.load(std::sync::atomic::Ordering::Relaxed);
                let retry = if stopping || Instant::now() >= deadline {
                    None
                } else {
                    Payload::concat(signal, &left).ok()
                };
                match retry {
                    Some(p) => pending = p,
                    None if taken.is_some() => {
                        tracing::warn!(exporter = %self.id, items = lost, error = %e, "could not route again what a removed backend held: it stays in that backend's persistent queue, routed again after the next start");
                        break false;
                    }
                    None => {
                        let why = if stopping {
                            "shutdown"
                        } else {
                            "reroute_refused"
                        };
                        self.metrics.send_failed(signal, lost, why);
                        tracing::warn!(exporter = %self.id, items = lost, error = %e, "could not route again what a removed backend held: items dropped");
                        break false;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            if let Some(taken) = taken {
                let _ = taken.send(took);
            }
        }
    }
}

/// What [`Shared::route_parts`] could not enqueue.
enum Refused {
    /// Nothing was routed (no backends, no key for the signal).
    Whole(ConsumeError),
    /// These parts were refused by their backends; the rest was taken.
    Parts(Vec<Payload>, ConsumeError),
}

impl Consumer for LoadBalancer {
    fn consume(&self, payload: Payload) -> BoxFuture<'_, Result<(), ConsumeError>> {
        Box::pin(self.shared.route(payload))
    }

    /// With `protocol.otlp` (whose exporters encode wire forms) and `traceID` routing for
    /// traces or logs: those payloads are routed by a skim of their trace ids
    /// ([`routing::split_wire`]) and sent as their bytes. The answer is one for every signal
    /// (a consumer is asked once): a metrics pipeline through the same load balancer is fed
    /// wire forms too, decoded on their first read by the routing (correct, at the price of
    /// the receiver's skim).
    fn keeps_wire_form(&self) -> bool {
        matches!(self.shared.template, Template::Otlp(_))
            && [Signal::Traces, Signal::Logs]
                .iter()
                .any(|&s| self.shared.keys[s as usize] == Ok(RoutingKey::TraceId))
    }
}

impl Lifecycle for LoadBalancer {
    /// Starts the resolver and waits for its first answer (bounded: a DNS name that does not
    /// resolve yet leaves the exporter refusing data until it does, as the Collector's).
    fn start(&self) -> BoxFuture<'_, Result<(), ComponentError>> {
        Box::pin(async move {
            let Some(resolver) = lock(&self.resolver).take() else {
                return Ok(());
            };
            let id = self.shared.id.to_string();
            let wait = resolver.first_answer_within();
            let (publisher, mut updates) =
                Publisher::new(&self.shared.telemetry, &id, resolver.kind());
            lock(&self.tasks).push(tokio::spawn(resolver.run(publisher)));
            if let Some(rx) = lock(&self.handoff_rx).take() {
                *lock(&self.reroute) = Some(tokio::spawn(self.shared.clone().reroute(rx)));
            }
            // The first set, before data flows (the Collector resolves once in Start too).
            let first = tokio::time::timeout(wait, async {
                loop {
                    if let Some(e) = updates.borrow_and_update().clone() {
                        return Some(e);
                    }
                    if updates.changed().await.is_err() {
                        return None;
                    }
                }
            })
            .await
            .ok()
            .flatten();
            if let Some(endpoints) = first {
                self.shared.apply(endpoints).await;
            }
            // Persistent queues of backends that left the ring while sluice was down.
            if let Some(storage) = &self.shared.template.sending_queue().storage {
                let adopt = self.shared.clone().adopt_orphans(storage.clone());
                lock(&self.tasks).push(tokio::spawn(adopt));
            }
            let shared = self.shared.clone();
            lock(&self.tasks).push(tokio::spawn(follow(shared, updates)));
            Ok(())
        })
    }

    /// Stops resolving. Removed backends still draining give up at once: what they hold is
    /// routed again to the current backends (the time left belongs to those). Then every
    /// current backend drains its queue, all at once, each until its drain deadline.
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let tasks: Vec<_> = std::mem::take(&mut *lock(&self.tasks));
            for t in tasks {
                t.abort();
                let _ = t.await;
            }
            self.shared
                .stopping
                .store(true, std::sync::atomic::Ordering::Relaxed);
            let draining: Vec<_> = std::mem::take(&mut *lock(&self.shared.draining));
            for b in draining.iter().flat_map(|d| &d.backends) {
                b.exporter.give_up_now();
            }
            for d in draining {
                let _ = d.task.await;
            }
            // The only strong sender: the re-routing task ends once it has routed what it holds.
            lock(&self.shared.handoff).take();
            let reroute = lock(&self.reroute).take();
            if let Some(r) = reroute {
                let _ = r.await;
            }
            let mut backends = tokio::task::JoinSet::new();
            for b in self.shared.snapshot().backends.iter().cloned() {
                backends.spawn(async move { b.exporter.shutdown().await });
            }
            while backends.join_next().await.is_some() {}
        })
    }

    /// The backends' drain timeout (removed ones are cut short, current ones drain at once),
    /// and a moment for abandoned attempts and the re-route.
    fn shutdown_timeout(&self) -> Duration {
        self.shared.drain_timeout + Duration::from_secs(10)
    }
}

/// Applies every backend set the resolver publishes after the first.
async fn follow(shared: Arc<Shared>, mut updates: watch::Receiver<Option<Vec<String>>>) {
    while updates.changed().await.is_ok() {
        let Some(endpoints) = updates.borrow_and_update().clone() else {
            continue;
        };
        shared.apply(endpoints).await;
    }
}
