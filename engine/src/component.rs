//! The component contract: how receivers, processors, exporters and extensions are described
//! (factories), built from config, wired into pipelines, started and stopped.
//!
//! Data moves by **push**: a receiver calls `consume` on the first consumer of each pipeline it
//! feeds; a processor does its work and calls `consume` on the next; the exporter at the end
//! accepts into its sending queue. The `Result` travels back the same way, so a refusal
//! (memory limiter over its limit, sending queue full) reaches the receiver, which turns it
//! into a gRPC status / HTTP code for the client to retry. This is the Collector's model, and it
//! is what makes "nothing accepted is silently lost" checkable: once `consume` returned `Ok`,
//! the component that said so owns the data (and counts it if it later has to drop it).

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::clock::Clock;
use crate::payload::Payload;
use crate::schema::Signal;
use crate::telemetry::Telemetry;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a consumer did not take a payload. Each variant maps to what a receiver answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsumeError {
    /// Temporary pressure (memory limiter): retry later.
    /// gRPC `RESOURCE_EXHAUSTED`, HTTP 429 with `Retry-After`.
    #[error("refused: {0}")]
    Refused(String),
    /// Downstream cannot take it now (sending queue full, exporter shut down): retry later.
    /// gRPC `UNAVAILABLE`, HTTP 503 with `Retry-After`.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The data itself is not acceptable; retrying will not help.
    /// gRPC `INVALID_ARGUMENT`, HTTP 400.
    #[error("rejected: {0}")]
    Permanent(String),
}

impl ConsumeError {
    pub fn is_retryable(&self) -> bool {
        !matches!(self, ConsumeError::Permanent(_))
    }
}

/// Anything that takes payloads: a processor, an exporter, a fan-out.
pub trait Consumer: Send + Sync + 'static {
    fn consume(&self, payload: Payload) -> BoxFuture<'_, Result<(), ConsumeError>>;

    /// Whether this consumer is a `memory_limiter` (or fans out to one): a receiver feeding it
    /// asks the memory account for admission before reading and decoding a request, see
    /// [`crate::memory`].
    fn memory_limited(&self) -> bool {
        false
    }

    /// Whether this consumer, and everything after it, takes a payload in its wire form
    /// ([`crate::payload::WireForm`]: the OTLP protobuf bytes it arrived in) without reading
    /// its tables, so a receiver feeding it can skim a request instead of decoding it
    /// ([`crate::otlp::skim`]). Asked once, when the receiver is built. The default, `false`,
    /// is always correct (a wire form is decoded on its first read anyway); a component says
    /// `true` only if it never reads or changes tables: `batch` and `memory_limiter` (asking
    /// the component after them), the OTLP protobuf exporters, `nop`, and `loadbalancing`
    /// with OTLP backends under `traceID` (it routes wire forms by a skim of their trace ids).
    fn keeps_wire_form(&self) -> bool {
        false
    }
}

pub type ConsumerRef = Arc<dyn Consumer>;

/// Start and stop. Start order is exporters, processors, receivers, extensions last-but-ready;
/// shutdown runs in reverse (receivers stop accepting first, then processors flush, then
/// exporters drain their queues), so nothing accepted is lost on SIGTERM.
pub trait Lifecycle: Send + Sync + 'static {
    /// Bind sockets, spawn tasks. An error aborts startup with the component's id in the message.
    fn start(&self) -> BoxFuture<'_, Result<(), ComponentError>> {
        Box::pin(async { Ok(()) })
    }
    /// Stop accepting, flush what is held, return when done (the service bounds the wait).
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
    /// How long the service waits for [`Lifecycle::shutdown`] before moving on: a component
    /// with a configured deadline of its own (an exporter's drain) says so here.
    fn shutdown_timeout(&self) -> std::time::Duration {
        crate::service::SHUTDOWN_STEP_TIMEOUT
    }
    /// Under a virtual clock ([`Clock::is_virtual`](crate::clock::Clock::is_virtual)) nothing
    /// fires by itself: the next moment (Unix ns) at which this component has something to do
    /// with data it holds — a batch timeout, a tail-sampling decision, a span-metrics flush of
    /// spans counted since the last one. `None` when it holds nothing waiting on time. The
    /// driver of the clock (offline replay) moves it to each such moment in turn and calls
    /// [`Lifecycle::on_virtual_time`], so timeouts fire at the data time they would have
    /// fired live, between the arrivals around them.
    fn next_virtual_deadline(&self) -> Option<u64> {
        None
    }
    /// Under a virtual clock: the clock moved; do whatever is due by now. Wall-clock
    /// components (their own timers) ignore it.
    fn on_virtual_time(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// A processor or exporter: consumes payloads and has a lifecycle.
pub trait Node: Consumer + Lifecycle {}
impl<T: Consumer + Lifecycle> Node for T {}

/// A receiver or extension: has a lifecycle, produces (or serves) but does not consume.
pub trait Service: Lifecycle {}
impl<T: Lifecycle> Service for T {}

/// An error building or starting a component.
#[derive(Debug, thiserror::Error)]
#[error("{id}: {message}")]
pub struct ComponentError {
    pub id: String,
    pub message: String,
}

impl ComponentError {
    pub fn new(id: &ComponentId, message: impl fmt::Display) -> Self {
        ComponentError {
            id: id.to_string(),
            message: message.to_string(),
        }
    }
}

/// `type[/name]`, as in `otlp/jaeger`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ComponentId {
    pub type_name: String,
    pub name: Option<String>,
}

impl ComponentId {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (type_name, name) = match s.split_once('/') {
            Some((t, n)) => (t, Some(n)),
            None => (s, None),
        };
        let valid = |x: &str| {
            !x.is_empty()
                && x.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        };
        if !valid(type_name) || name.is_some_and(|n| n.is_empty() || n.contains('/')) {
            return Err(format!(
                "invalid component id {s:?}: expected `type` or `type/name`, type made of letters, digits, `_`, `-`, `.`"
            ));
        }
        Ok(ComponentId {
            type_name: type_name.to_string(),
            name: name.map(str::to_string),
        })
    }
}

impl fmt::Display for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(n) => write!(f, "{}/{}", self.type_name, n),
            None => f.write_str(&self.type_name),
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Receiver,
    Processor,
    Exporter,
    Connector,
    Extension,
}

impl Kind {
    /// The top-level config section: `receivers`, `processors`, ...
    pub fn section(self) -> &'static str {
        match self {
            Kind::Receiver => "receivers",
            Kind::Processor => "processors",
            Kind::Exporter => "exporters",
            Kind::Connector => "connectors",
            Kind::Extension => "extensions",
        }
    }
    /// The label the Collector's self-telemetry uses: `receiver="otlp"`.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Receiver => "receiver",
            Kind::Processor => "processor",
            Kind::Exporter => "exporter",
            Kind::Connector => "connector",
            Kind::Extension => "extension",
        }
    }
}

/// A component's config, parsed and checked by its factory (`deny_unknown_fields` structs).
pub type ParsedConfig = Arc<dyn Any + Send + Sync>;

/// What a factory gets when building one component instance.
pub struct BuildContext {
    pub id: ComponentId,
    /// What the factory's `parse_config` returned for this id.
    pub config: ParsedConfig,
    pub telemetry: Telemetry,
    pub clock: Arc<dyn Clock>,
    /// The extensions enabled in `service.extensions`, with their parsed configs: what an
    /// exporter's `sending_queue.storage` names is looked up here.
    pub extensions: Extensions,
}

/// The enabled extensions' parsed configs, by id.
#[derive(Clone, Default)]
pub struct Extensions(Arc<BTreeMap<ComponentId, ParsedConfig>>);

impl Extensions {
    pub fn new(enabled: BTreeMap<ComponentId, ParsedConfig>) -> Self {
        Extensions(Arc::new(enabled))
    }
    /// The parsed config of the enabled extension `id`, if there is one.
    pub fn get(&self, id: &ComponentId) -> Option<&ParsedConfig> {
        self.0.get(id)
    }
}

/// An extension named in a component's config (`sending_queue.storage: file_storage`): the
/// path of the setting, for the message, and the id it names. The loader checks that the
/// extension is defined and enabled in `service.extensions`, as the Collector does at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionRef {
    pub path: String,
    pub id: String,
}

impl BuildContext {
    /// The parsed config as the factory's own type. A mismatch is a factory bug, never user
    /// error, so it is reported as a component error rather than a panic.
    pub fn config<T: Any + Send + Sync>(&self) -> Result<Arc<T>, ComponentError> {
        self.config
            .clone()
            .downcast::<T>()
            .map_err(|_| ComponentError::new(&self.id, "internal: config type mismatch"))
    }
}

/// The first consumer of every pipeline a receiver feeds, by signal (a fan-out when the
/// receiver feeds several pipelines of one signal).
pub type SignalConsumers = BTreeMap<Signal, ConsumerRef>;

/// Describes one component type and builds instances of it.
pub trait Factory: Send + Sync + 'static {
    fn kind(&self) -> Kind;
    /// The config key: `otlp`, `batch`, `memory_limiter`, ...
    fn type_name(&self) -> &'static str;
    /// The signals it handles (empty for extensions).
    fn signals(&self) -> &'static [Signal];
    /// One line for `sluice components`.
    fn description(&self) -> &'static str;
    /// Parse and check this component's YAML (as JSON value; `null` for an empty body).
    /// Errors carry the path inside the component's config; the loader prefixes the file and
    /// the component path.
    fn parse_config(&self, config: &serde_json::Value) -> Result<ParsedConfig, ConfigError>;
    /// [`Factory::parse_config`] reporting every error it finds rather than the first (what
    /// the loader calls, so `sluice validate` lists a processor's four bad OTTL statements in
    /// one run). Components whose config can hold several independent errors override it.
    fn parse_config_all(
        &self,
        config: &serde_json::Value,
    ) -> Result<ParsedConfig, Vec<ConfigError>> {
        self.parse_config(config).map_err(|e| vec![e])
    }
    /// Settings this component accepts, so a Collector config loads unchanged, but does not
    /// act on. The loader warns about each one a config sets (`sluice validate` prints the
    /// warnings, a run logs them at start), so no setting is silently without effect.
    fn without_effect(&self) -> &'static [NoEffect] {
        &[]
    }
    /// The extensions `config` (as this factory parsed it) names, e.g. a queue's `storage`.
    fn extension_refs(&self, config: &ParsedConfig) -> Vec<ExtensionRef> {
        let _ = config;
        Vec::new()
    }
    /// Build a receiver; `consumers` holds the pipelines it feeds, by signal.
    fn build_receiver(
        &self,
        ctx: BuildContext,
        consumers: SignalConsumers,
    ) -> Result<Arc<dyn Service>, ComponentError> {
        let _ = consumers;
        Err(ComponentError::new(&ctx.id, "is not a receiver"))
    }
    /// Build a processor instance for one pipeline of `signal`, feeding `next`.
    fn build_processor(
        &self,
        ctx: BuildContext,
        signal: Signal,
        next: ConsumerRef,
    ) -> Result<Arc<dyn Node>, ComponentError> {
        let _ = (signal, next);
        Err(ComponentError::new(&ctx.id, "is not a processor"))
    }
    /// Build an exporter; one instance serves every pipeline that lists it.
    fn build_exporter(&self, ctx: BuildContext) -> Result<Arc<dyn Node>, ComponentError> {
        Err(ComponentError::new(&ctx.id, "is not an exporter"))
    }
    /// For a connector: the (signal of the pipeline it exports from, signal of the pipeline it
    /// receives into) pairs it supports, e.g. `(Traces, Metrics)` for `spanmetrics`.
    fn connects(&self) -> &'static [(Signal, Signal)] {
        &[]
    }
    /// Build a connector for one (from, to) signal pair: a consumer of `from` payloads (the
    /// exporter end) that feeds `next`, the pipelines of signal `to` that list it as a receiver.
    /// Its lifecycle runs between the two: started after the pipelines it feeds, shut down after
    /// the pipelines that feed it (so their flushes reach it) and before the ones it feeds.
    fn build_connector(
        &self,
        ctx: BuildContext,
        from: Signal,
        to: Signal,
        next: ConsumerRef,
    ) -> Result<Arc<dyn Node>, ComponentError> {
        let _ = (from, to, next);
        Err(ComponentError::new(&ctx.id, "is not a connector"))
    }
    /// Build an extension.
    fn build_extension(
        &self,
        ctx: BuildContext,
        health: crate::health::Health,
    ) -> Result<Arc<dyn Service>, ComponentError> {
        let _ = health;
        Err(ComponentError::new(&ctx.id, "is not an extension"))
    }
}

/// A config error with the path where it was found (`receivers.otlp.protocols.grpc.endpoint`)
/// and, once the loader knows it, the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}{message}", file.as_ref().map(|f| format!("{f}: ")).unwrap_or_default(), if path.is_empty() { String::new() } else { format!("{path}: ") })]
pub struct ConfigError {
    pub file: Option<String>,
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            file: None,
            path: path.into(),
            message: message.into(),
        }
    }

    /// Prefix the path with an outer path (`receivers.otlp` + `protocols.grpc`).
    pub fn within(mut self, outer: &str) -> Self {
        self.path = match (outer.is_empty(), self.path.is_empty()) {
            (true, _) => self.path,
            (false, true) => outer.to_string(),
            (false, false) => format!("{outer}.{}", self.path),
        };
        self
    }
}

/// A setting that is accepted but changes nothing in sluice (see [`Factory::without_effect`]).
#[derive(Debug, Clone, Copy)]
pub struct NoEffect {
    /// Where it is inside the component's config (`protocols.grpc.include_metadata`); `*`
    /// stands for any map key or list index (`policies.*.string_attribute.cache_max_size`).
    pub path: &'static str,
    /// Why it changes nothing, or what sluice does instead.
    pub why: &'static str,
    /// Warn only when the setting has this value (as JSON: `false`), where every other value
    /// asks for what sluice does anyway. `None`: any value but the zero one.
    pub only_when: Option<&'static str>,
}

impl NoEffect {
    pub const fn new(path: &'static str, why: &'static str) -> Self {
        NoEffect {
            path,
            why,
            only_when: None,
        }
    }

    /// See [`NoEffect::only_when`].
    pub const fn only_when(self, value: &'static str) -> Self {
        NoEffect {
            only_when: Some(value),
            ..self
        }
    }

    /// A warning for every place in `config` (a component's config) that sets one of `settings`:
    /// paths are inside the component. A value left at its zero (`null`, `false`, `0`, `""`,
    /// empty) is not set: that is what the Collector reads as "unset" too.
    pub fn warnings(settings: &[NoEffect], config: &serde_json::Value) -> Vec<ConfigError> {
        let mut out = Vec::new();
        for s in settings {
            let steps: Vec<&str> = s.path.split('.').collect();
            find_set(config, &steps, String::new(), s.only_when, &mut |path| {
                out.push(ConfigError::new(
                    path,
                    format!(
                        "accepted so Collector configs load, but has no effect in sluice: {}",
                        s.why
                    ),
                ))
            });
        }
        out
    }
}

/// Calls `found` with the path of every value at `steps` below `v` that is set (not a zero),
/// or, with `only_when`, that is that value.
fn find_set(
    v: &serde_json::Value,
    steps: &[&str],
    at: String,
    only_when: Option<&str>,
    found: &mut dyn FnMut(String),
) {
    use serde_json::Value;
    let Some((step, rest)) = steps.split_first() else {
        if let Some(value) = only_when {
            if serde_json::from_str::<Value>(value).is_ok_and(|w| &w == v) {
                found(at);
            }
            return;
        }
        let zero = match v {
            Value::Null => true,
            Value::Bool(b) => !b,
            Value::Number(n) => n.as_f64() == Some(0.0),
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Object(m) => m.is_empty(),
        };
        if !zero {
            found(at);
        }
        return;
    };
    let join = |key: &str| {
        if at.is_empty() {
            key.to_string()
        } else {
            format!("{at}.{key}")
        }
    };
    match (v, *step) {
        (Value::Object(m), "*") => {
            for (k, child) in m {
                find_set(child, rest, join(k), only_when, found);
            }
        }
        (Value::Object(m), key) => {
            if let Some(child) = m.get(key) {
                find_set(child, rest, join(key), only_when, found);
            }
        }
        (Value::Array(items), "*") => {
            for (i, child) in items.iter().enumerate() {
                find_set(child, rest, format!("{at}[{i}]"), only_when, found);
            }
        }
        _ => {}
    }
}

/// Parse a component config into its `serde(deny_unknown_fields)` struct, reporting the path
/// of the offending field and serde's list of accepted names. `null` (a component listed with
/// an empty body, `otlp:`) parses as an empty map, i.e. all defaults.
pub fn parse_config<T>(config: &serde_json::Value) -> Result<T, ConfigError>
where
    T: serde::de::DeserializeOwned,
{
    let value = match config {
        serde_json::Value::Null => serde_json::Value::Object(Default::default()),
        v => v.clone(),
    };
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        ConfigError::new(path, e.into_inner().to_string())
    })
}

/// Sends each payload to every consumer in turn (cheap: payload clones share Arrow buffers).
/// The first error wins, as in the Collector's fan-out.
pub struct FanOut(pub Vec<ConsumerRef>);

impl Consumer for FanOut {
    fn consume(&self, payload: Payload) -> BoxFuture<'_, Result<(), ConsumeError>> {
        Box::pin(async move {
            let mut result = Ok(());
            for c in &self.0 {
                if let Err(e) = c.consume(payload.clone()).await
                    && result.is_ok()
                {
                    result = Err(e);
                }
            }
            result
        })
    }

    fn memory_limited(&self) -> bool {
        self.0.iter().any(|c| c.memory_limited())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_ids_parse_like_the_collector() {
        let id = ComponentId::parse("otlp/jaeger").unwrap();
        assert_eq!(id.type_name, "otlp");
        assert_eq!(id.name.as_deref(), Some("jaeger"));
        assert_eq!(id.to_string(), "otlp/jaeger");
        assert_eq!(ComponentId::parse("batch").unwrap().name, None);
        assert!(ComponentId::parse("").is_err());
        assert!(ComponentId::parse("otlp/").is_err());
        assert!(ComponentId::parse("a b").is_err());
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        #[serde(default)]
        inner: Inner,
    }
    #[derive(serde::Deserialize, Debug, Default)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        endpoint: Option<String>,
    }

    #[test]
    fn parse_config_names_the_path_and_accepted_fields() {
        let v = serde_json::json!({"inner": {"endpointt": "x"}});
        let e = parse_config::<Outer>(&v)
            .unwrap_err()
            .within("receivers.otlp");
        assert_eq!(e.path, "receivers.otlp.inner.endpointt");
        assert!(
            e.message.contains("endpointt") && e.message.contains("endpoint"),
            "{e}"
        );
        assert!(parse_config::<Outer>(&serde_json::Value::Null).is_ok());
    }

    /// Every place a config sets a setting without effect is named, through maps and lists;
    /// a setting left at its zero (what Go reads as unset) or absent is not.
    #[test]
    fn settings_without_effect_are_found_wherever_set() {
        const SETTINGS: &[NoEffect] = &[
            NoEffect::new("protocols.grpc.include_metadata", "metadata"),
            NoEffect::new("policies.*.string_attribute.cache_max_size", "cache"),
            NoEffect::new("headers.*", "any key"),
            NoEffect::new("use_internal_logger", "stderr").only_when("false"),
        ];
        let config = serde_json::json!({
            "protocols": {"grpc": {"include_metadata": true}, "http": {"include_metadata": true}},
            "policies": [
                {"string_attribute": {"cache_max_size": 10}},
                {"string_attribute": {"cache_max_size": 0}},
                {"latency": {}},
                {"string_attribute": {"cache_max_size": 5}},
            ],
            "headers": {"a": "x", "b": "", "c": null, "d": {}, "e": false, "f": [1]},
            "use_internal_logger": false,
        });
        let found: Vec<String> = NoEffect::warnings(SETTINGS, &config)
            .into_iter()
            .map(|e| e.within("processors.x").to_string())
            .collect();
        let says = "accepted so Collector configs load, but has no effect in sluice";
        assert_eq!(
            found,
            [
                format!("processors.x.protocols.grpc.include_metadata: {says}: metadata"),
                format!("processors.x.policies[0].string_attribute.cache_max_size: {says}: cache"),
                format!("processors.x.policies[3].string_attribute.cache_max_size: {says}: cache"),
                format!("processors.x.headers.a: {says}: any key"),
                format!("processors.x.headers.f: {says}: any key"),
                format!("processors.x.use_internal_logger: {says}: stderr"),
            ]
        );
        let unset = serde_json::json!({
            "protocols": {"grpc": {"include_metadata": false}},
            "use_internal_logger": true,
        });
        assert!(NoEffect::warnings(SETTINGS, &unset).is_empty());
        assert!(NoEffect::warnings(SETTINGS, &serde_json::Value::Null).is_empty());
    }
}
