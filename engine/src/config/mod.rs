//! The OpenTelemetry Collector's YAML config, read as the Collector reads it.
//!
//! - Sections `receivers`, `processors`, `exporters`, `connectors`, `extensions`, `service`;
//!   components named `type[/name]`; `service.pipelines` named `traces|metrics|logs[/name]`.
//! - Several files merge as the Collector merges them: maps deeply, later files win, lists and
//!   scalars replaced whole.
//! - `${env:VAR}` and `${VAR}` expand in scalar values after parsing; a value that is exactly one
//!   reference takes the YAML type of the variable's text (`port: ${env:PORT}` is an int); `$$` is
//!   a literal `$`. `${env:VAR:-default}` gives a default for an unset variable (not for one set
//!   to the empty string), as the Collector's env provider does. An unset variable without a
//!   default expands to the empty string, as in the Collector, with a warning; any error about a
//!   value made from a variable names it (`... (from ${env:JAEGER_ENDPOINT}, which is not set)`).
//!   References to other config sources (`${file:...}`) are refused: sluice has only `env`.
//! - A key holding `::` is the nested path it names (`processors::batch::timeout: 2s`), the
//!   Collector's key delimiter: what `--set` and `--config yaml:...` sources are made of.
//! - Everything unknown is refused: section keys, component types (the message lists what sluice
//!   has), component fields (each factory's `deny_unknown_fields` struct), pipeline references.
//!   Every error names the file, the path in it and the accepted names; all errors are reported,
//!   not just the first.
//!
//! No I/O here: callers pass file names and contents.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::component::{
    ComponentId, ConfigError, Factory, Kind, NoEffect, ParsedConfig, parse_config,
};
use crate::schema::Signal;

/// The embedded default config: a gateway with OTLP in on localhost.
pub const DEFAULT_CONFIG: &str = include_str!("default.yaml");
pub const DEFAULT_CONFIG_NAME: &str = "<embedded default config>";

/// One config file: its name (for messages) and contents.
#[derive(Clone, Debug)]
pub struct Source {
    pub name: String,
    pub text: String,
}

/// Every factory sluice has, by kind and type name.
#[derive(Default, Clone)]
pub struct Registry {
    factories: BTreeMap<(Kind, &'static str), Arc<dyn Factory>>,
}

impl Registry {
    pub fn new(factories: impl IntoIterator<Item = Arc<dyn Factory>>) -> Self {
        let mut r = Registry::default();
        for f in factories {
            r.factories.insert((f.kind(), f.type_name()), f);
        }
        r
    }
    pub fn get(&self, kind: Kind, type_name: &str) -> Option<&Arc<dyn Factory>> {
        self.factories
            .iter()
            .find(|((k, t), _)| *k == kind && *t == type_name)
            .map(|(_, f)| f)
    }
    pub fn names(&self, kind: Kind) -> Vec<&'static str> {
        self.factories
            .keys()
            .filter(|(k, _)| *k == kind)
            .map(|(_, t)| *t)
            .collect()
    }
    /// Every factory, by kind then type name (for `sluice components`).
    pub fn list(&self) -> impl Iterator<Item = &Arc<dyn Factory>> {
        self.factories.values()
    }
}

/// `traces`, `metrics/prometheus`, ...
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PipelineId {
    pub signal: Signal,
    pub name: Option<String>,
}

impl std::fmt::Display for PipelineId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.name {
            Some(n) => write!(f, "{}/{}", self.signal.as_str(), n),
            None => f.write_str(self.signal.as_str()),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Pipeline {
    pub receivers: Vec<ComponentId>,
    pub processors: Vec<ComponentId>,
    pub exporters: Vec<ComponentId>,
    /// Connectors listed in `receivers`: this pipeline is fed by them.
    pub connectors_in: Vec<ComponentId>,
    /// Connectors listed in `exporters`: this pipeline feeds them.
    pub connectors_out: Vec<ComponentId>,
}

/// `service.telemetry` settings accepted for the Collector's sake that change nothing here.
const TELEMETRY_WITHOUT_EFFECT: &[NoEffect] = &[
    NoEffect::new("logs.development", "sluice has no development logging mode"),
    NoEffect::new("logs.disable_caller", "sluice's log lines carry no caller"),
    NoEffect::new(
        "logs.disable_stacktrace",
        "sluice's log lines carry no stack traces",
    ),
];

/// `service.telemetry`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    #[serde(default)]
    pub metrics: MetricsTelemetryConfig,
    #[serde(default)]
    pub logs: LogsTelemetryConfig,
    /// Resource attributes of the Collector's own telemetry; accepted, not used yet.
    #[serde(default)]
    pub resource: BTreeMap<String, Value>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsTelemetryConfig {
    /// `none` disables the endpoint; `basic`, `normal`, `detailed` all serve every metric.
    #[serde(default)]
    pub level: TelemetryLevel,
    /// Where `/metrics` is served (default `localhost:8888`).
    pub address: Option<String>,
    /// The Collector's newer form: `readers: [{pull: {exporter: {prometheus: {host, port}}}}]`.
    pub readers: Option<Vec<Value>>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TelemetryLevel {
    None,
    Basic,
    #[default]
    Normal,
    Detailed,
}

/// `service.telemetry.logs.encoding`, the Collector's (zap) names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogEncoding {
    #[default]
    Console,
    Json,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsTelemetryConfig {
    /// `debug`, `info`, `warn`, `error` (default `info`).
    pub level: Option<String>,
    /// `console` (default: text lines, coloured on a terminal) or `json` (one JSON object per
    /// line, for log collectors).
    #[serde(default)]
    pub encoding: LogEncoding,
    pub development: Option<bool>,
    pub disable_caller: Option<bool>,
    pub disable_stacktrace: Option<bool>,
}

/// A `periodic` reader of `service.telemetry.metrics.readers` (the OpenTelemetry
/// configuration schema the Collector reads there): the process's own metrics pushed over OTLP
/// every `interval`.
#[derive(Clone, Debug, PartialEq)]
pub struct PeriodicReader {
    /// `interval`, in milliseconds in the config (default 60000, the schema's).
    pub interval: std::time::Duration,
    /// `timeout` of one push, in milliseconds (default 30000).
    pub timeout: std::time::Duration,
    pub exporter: OtlpPush,
}

/// `exporter.otlp` (or `otlp_grpc` / `otlp_http`) of a periodic reader.
#[derive(Clone, Debug, PartialEq)]
pub struct OtlpPush {
    /// `grpc`, `http/protobuf` or `http/json`.
    pub protocol: String,
    pub endpoint: String,
    pub headers: Vec<(String, String)>,
    /// `gzip` or none.
    pub compression: Option<String>,
    /// Plaintext to an endpoint without a scheme (gRPC).
    pub insecure: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReaderSpec {
    pull: Option<Value>,
    periodic: Option<PeriodicSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PeriodicSpec {
    #[serde(default = "default_push_interval_ms")]
    interval: u64,
    #[serde(default = "default_push_timeout_ms")]
    timeout: u64,
    exporter: PushExporterSpec,
    /// Accepted (`cardinality_limits`, `producers`): nothing sluice would change.
    #[serde(default)]
    cardinality_limits: Option<Value>,
}

fn default_push_interval_ms() -> u64 {
    60_000
}
fn default_push_timeout_ms() -> u64 {
    30_000
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PushExporterSpec {
    otlp: Option<OtlpPushSpec>,
    otlp_grpc: Option<OtlpPushSpec>,
    otlp_http: Option<OtlpPushSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OtlpPushSpec {
    protocol: Option<String>,
    endpoint: String,
    #[serde(default)]
    headers: Vec<NameValue>,
    compression: Option<String>,
    /// Milliseconds; the reader's `timeout` bounds a push anyway.
    timeout: Option<u64>,
    insecure: Option<bool>,
    /// Only `cumulative`: sluice's counters are cumulative.
    temporality_preference: Option<String>,
    /// Only `explicit_bucket_histogram`.
    default_histogram_aggregation: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NameValue {
    name: String,
    value: String,
}

impl MetricsTelemetryConfig {
    /// The `periodic` readers, checked: errors name the reader (`readers[i].periodic...`).
    pub fn periodic_readers(&self) -> Result<Vec<PeriodicReader>, ConfigError> {
        let mut out = Vec::new();
        for (i, raw) in self.readers.iter().flatten().enumerate() {
            let at = |path: &str| format!("service.telemetry.metrics.readers[{i}]{path}");
            let spec: ReaderSpec = serde_json::from_value(raw.clone())
                .map_err(|e| ConfigError::new(at(""), e.to_string()))?;
            if spec.pull.is_some() == spec.periodic.is_some() {
                return Err(ConfigError::new(at(""), "set one of pull and periodic"));
            }
            let Some(p) = spec.periodic else { continue };
            let _ = p.cardinality_limits;
            let exporters = [
                ("otlp", p.exporter.otlp, None),
                ("otlp_grpc", p.exporter.otlp_grpc, Some("grpc")),
                ("otlp_http", p.exporter.otlp_http, Some("http/protobuf")),
            ];
            let mut given = exporters.into_iter().filter(|(_, e, _)| e.is_some());
            let (Some((key, Some(e), implied)), None) = (given.next(), given.next()) else {
                return Err(ConfigError::new(
                    at(".periodic.exporter"),
                    "set exactly one of otlp, otlp_grpc, otlp_http (sluice pushes its metrics over OTLP only)",
                ));
            };
            let path = |f: &str| at(&format!(".periodic.exporter.{key}.{f}"));
            let protocol = match (e.protocol.as_deref(), implied) {
                (Some(p), _) if ["grpc", "http/protobuf", "http/json"].contains(&p) => {
                    p.to_string()
                }
                (Some(other), _) => {
                    return Err(ConfigError::new(
                        path("protocol"),
                        format!("{other:?}: grpc, http/protobuf or http/json"),
                    ));
                }
                (None, Some(implied)) => implied.to_string(),
                (None, None) => "http/protobuf".to_string(),
            };
            if let Some(c) = e.compression.as_deref()
                && !matches!(c, "gzip" | "none")
            {
                return Err(ConfigError::new(
                    path("compression"),
                    format!("{c:?}: gzip or none"),
                ));
            }
            if let Some(t) = e.temporality_preference.as_deref()
                && t != "cumulative"
            {
                return Err(ConfigError::new(
                    path("temporality_preference"),
                    format!("{t:?}: sluice pushes cumulative sums only"),
                ));
            }
            if let Some(h) = e.default_histogram_aggregation.as_deref()
                && h != "explicit_bucket_histogram"
            {
                return Err(ConfigError::new(
                    path("default_histogram_aggregation"),
                    format!("{h:?}: sluice's histograms have explicit buckets only"),
                ));
            }
            if e.endpoint.is_empty() {
                return Err(ConfigError::new(path("endpoint"), "the endpoint is empty"));
            }
            if p.interval == 0 || p.timeout == 0 {
                return Err(ConfigError::new(
                    at(".periodic"),
                    "interval and timeout are milliseconds, at least 1",
                ));
            }
            let timeout = p.timeout.min(e.timeout.unwrap_or(u64::MAX));
            out.push(PeriodicReader {
                interval: std::time::Duration::from_millis(p.interval),
                timeout: std::time::Duration::from_millis(timeout),
                exporter: OtlpPush {
                    protocol,
                    endpoint: e.endpoint,
                    headers: e.headers.into_iter().map(|h| (h.name, h.value)).collect(),
                    compression: e.compression.filter(|c| c != "none"),
                    insecure: e.insecure.unwrap_or(false),
                },
            });
        }
        Ok(out)
    }

    /// The address to serve self-telemetry on, or `None` when disabled.
    pub fn listen_address(&self) -> Option<String> {
        if self.level == TelemetryLevel::None {
            return None;
        }
        if let Some(a) = &self.address {
            return Some(a.clone());
        }
        for reader in self.readers.iter().flatten() {
            let prom = reader.pointer("/pull/exporter/prometheus");
            if let Some(p) = prom {
                let host = p.get("host").and_then(Value::as_str).unwrap_or("localhost");
                let port = p.get("port").and_then(Value::as_u64).unwrap_or(8888);
                return Some(format!("{host}:{port}"));
            }
        }
        // Readers given, none of them a Prometheus pull: only they run, as in the Collector.
        if self.readers.as_ref().is_some_and(|r| !r.is_empty()) {
            return None;
        }
        Some("localhost:8888".to_string())
    }
}

/// A loaded, fully checked config: every component config parsed by its factory.
#[derive(Clone, Default)]
pub struct Config {
    /// Parsed component configs by kind and id.
    pub components: BTreeMap<(Kind, ComponentId), ParsedConfig>,
    pub extensions: Vec<ComponentId>,
    pub pipelines: BTreeMap<PipelineId, Pipeline>,
    pub telemetry: TelemetryConfig,
    /// What is valid but likely not meant (an unset `${env:VAR}`): `sluice validate` prints
    /// these and a run logs them at start.
    pub warnings: Vec<ConfigError>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("components", &self.components.keys().collect::<Vec<_>>())
            .field("extensions", &self.extensions)
            .field("pipelines", &self.pipelines)
            .finish()
    }
}

const SECTIONS: [&str; 6] = [
    "receivers",
    "processors",
    "exporters",
    "connectors",
    "extensions",
    "service",
];
const KINDS: [Kind; 5] = [
    Kind::Receiver,
    Kind::Processor,
    Kind::Exporter,
    Kind::Connector,
    Kind::Extension,
];

/// Parses, merges, expands and checks `sources` against `registry`. An error about a value made
/// by `${env:VAR}` names the variable (and says when it is not set); unset variables without a
/// default are warned about in [`Config::warnings`].
pub fn load(
    sources: &[Source],
    env: &dyn Fn(&str) -> Option<String>,
    registry: &Registry,
) -> Result<Config, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut docs = Vec::new();
    let mut references = Vec::new();
    for s in sources {
        match parse_yaml(&s.text) {
            Ok(Value::Null) => docs.push(Value::Object(Map::new())),
            Ok(v @ Value::Object(_)) => {
                let mut expander = Expander {
                    env,
                    file: &s.name,
                    references: Vec::new(),
                    errors: Vec::new(),
                };
                docs.push(expander.value(split_delimited_keys(v), ""));
                references.extend(expander.references);
                errors.extend(expander.errors.into_iter().map(|e| in_file(e, &s.name)));
            }
            Ok(_) => errors.push(in_file(
                ConfigError::new("", "the config must be a YAML map"),
                &s.name,
            )),
            Err(e) => errors.push(in_file(
                ConfigError::new("", format!("invalid YAML: {e}")),
                &s.name,
            )),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut merged = Value::Object(Map::new());
    for d in &docs {
        merge(&mut merged, d.clone());
    }
    let names: Vec<&str> = sources.iter().map(|s| s.name.as_str()).collect();
    // A reference counts where its file is the one that defines the value after the merge.
    references.retain(|r| locate_file(&docs, &names, &r.path) == Some(r.file.as_str()));
    let locate = |e: ConfigError| -> ConfigError {
        let file = locate_file(&docs, &names, &e.path);
        let mut e = ConfigError {
            file: file.map(str::to_string),
            ..e
        };
        let from: Vec<String> = references
            .iter()
            .filter(|r| Some(r.file.as_str()) == file && is_within(&e.path, &r.path))
            .map(EnvReference::explain)
            .collect();
        if !from.is_empty() {
            e.message = format!("{} ({})", e.message, from.join("; "));
        }
        e
    };
    match check(&merged, registry) {
        Ok(mut c) => {
            // Settings without effect first (at their file), then unset variables.
            let no_effect: Vec<ConfigError> = c.warnings.drain(..).map(locate).collect();
            c.warnings = no_effect;
            c.warnings.extend(references
                .iter()
                .filter(|r| r.state == VarState::Unset)
                .map(|r| ConfigError {
                    file: Some(r.file.clone()),
                    path: r.path.clone(),
                    message: format!(
                        "{} is not set, so it expands to an empty string (write ${{env:{}:-default}} for a default)",
                        r.text, r.name
                    ),
                }));
            Ok(c)
        }
        Err(es) => Err(es.into_iter().map(locate).collect()),
    }
}

/// Whether config path `path` is `outer` or lies inside it (`a.b` is within `a`; `a.bc` is not).
fn is_within(path: &str, outer: &str) -> bool {
    path.strip_prefix(outer)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
}

fn in_file(e: ConfigError, file: &str) -> ConfigError {
    ConfigError {
        file: Some(file.to_string()),
        ..e
    }
}

fn check(root: &Value, registry: &Registry) -> Result<Config, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut cfg = Config::default();
    let empty = Map::new();
    let root = root.as_object().unwrap_or(&empty);
    for key in root.keys() {
        if !SECTIONS.contains(&key.as_str()) {
            errors.push(ConfigError::new(
                key.clone(),
                format!(
                    "unknown top-level section; expected one of: {}",
                    SECTIONS.join(", ")
                ),
            ));
        }
    }
    // Components.
    let mut defined: BTreeSet<(Kind, ComponentId)> = BTreeSet::new();
    for kind in KINDS {
        let section = kind.section();
        let entries = match root.get(section) {
            None | Some(Value::Null) => continue,
            Some(Value::Object(m)) => m,
            Some(_) => {
                errors.push(ConfigError::new(
                    section,
                    "must be a map of component id to config",
                ));
                continue;
            }
        };
        for (key, body) in entries {
            let path = format!("{section}.{key}");
            let id = match ComponentId::parse(key) {
                Ok(id) => id,
                Err(m) => {
                    errors.push(ConfigError::new(path, m));
                    continue;
                }
            };
            // Defined from here on, even if its type or config is bad, so pipelines naming it
            // do not add a second, misleading "not defined" error.
            defined.insert((kind, id.clone()));
            let Some(factory) = registry.get(kind, &id.type_name) else {
                let have = registry.names(kind);
                let have = if have.is_empty() {
                    "none".to_string()
                } else {
                    have.join(", ")
                };
                errors.push(ConfigError::new(
                    path,
                    format!(
                        "unknown {} type {:?}; sluice has: {have}",
                        kind.label(),
                        id.type_name
                    ),
                ));
                continue;
            };
            match factory.parse_config_all(body) {
                Ok(parsed) => {
                    cfg.components.insert((kind, id), parsed);
                    cfg.warnings.extend(
                        NoEffect::warnings(factory.without_effect(), body)
                            .into_iter()
                            .map(|w| w.within(&path)),
                    );
                }
                Err(es) => errors.extend(es.into_iter().map(|e| e.within(&path))),
            }
        }
    }
    // Service.
    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    struct RawService {
        #[serde(default)]
        extensions: Vec<String>,
        #[serde(default)]
        pipelines: BTreeMap<String, RawPipeline>,
        #[serde(default)]
        telemetry: TelemetryConfig,
    }
    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    struct RawPipeline {
        #[serde(default)]
        receivers: Vec<String>,
        #[serde(default)]
        processors: Vec<String>,
        #[serde(default)]
        exporters: Vec<String>,
    }
    let service = root.get("service").cloned().unwrap_or(Value::Null);
    let service: RawService = match parse_config(&service) {
        Ok(s) => s,
        Err(e) => {
            errors.push(e.within("service"));
            return Err(errors);
        }
    };
    cfg.telemetry = service.telemetry;
    if let Some(telemetry) = root.get("service").and_then(|s| s.get("telemetry")) {
        cfg.warnings.extend(
            NoEffect::warnings(TELEMETRY_WITHOUT_EFFECT, telemetry)
                .into_iter()
                .map(|w| w.within("service.telemetry")),
        );
    }
    match cfg.telemetry.metrics.periodic_readers() {
        Err(e) => errors.push(e),
        Ok(readers) if readers.is_empty() && !cfg.telemetry.resource.is_empty() => {
            cfg.warnings.push(ConfigError::new(
                "service.telemetry.resource",
                "accepted so Collector configs load, but has no effect in sluice without a \
                 periodic OTLP reader (service.telemetry.metrics.readers): the Prometheus \
                 endpoint shows no resource attributes",
            ));
        }
        Ok(_) => {}
    }
    if let Some(address) = cfg.telemetry.metrics.listen_address()
        && let Err(m) = crate::config_types::check_listen_endpoint(&address)
    {
        let path = if cfg.telemetry.metrics.address.is_some() {
            "service.telemetry.metrics.address"
        } else {
            "service.telemetry.metrics.readers"
        };
        errors.push(ConfigError::new(path, m));
    }
    for (i, ext) in service.extensions.iter().enumerate() {
        let path = format!("service.extensions[{i}]");
        match ComponentId::parse(ext) {
            Ok(id) if defined.contains(&(Kind::Extension, id.clone())) => cfg.extensions.push(id),
            Ok(_) => errors.push(ConfigError::new(
                path,
                format!("extension {ext:?} is not defined in the extensions section"),
            )),
            Err(m) => errors.push(ConfigError::new(path, m)),
        }
    }
    if service.pipelines.is_empty() {
        errors.push(ConfigError::new(
            "service.pipelines",
            "at least one pipeline is required",
        ));
    }
    for (key, raw) in service.pipelines {
        let path = format!("service.pipelines.{key}");
        let (sig, name) = match key.split_once('/') {
            Some((s, n)) => (s, Some(n.to_string())),
            None => (key.as_str(), None),
        };
        let Some(signal) = Signal::ALL.into_iter().find(|s| s.as_str() == sig) else {
            errors.push(ConfigError::new(
                path,
                format!("unknown pipeline type {sig:?}; expected traces, metrics or logs (optionally /name)"),
            ));
            continue;
        };
        let mut pipeline = Pipeline::default();
        let lists = [
            (
                Kind::Receiver,
                "receivers",
                &raw.receivers,
                &mut pipeline.receivers,
            ),
            (
                Kind::Processor,
                "processors",
                &raw.processors,
                &mut pipeline.processors,
            ),
            (
                Kind::Exporter,
                "exporters",
                &raw.exporters,
                &mut pipeline.exporters,
            ),
        ];
        let mut connectors_in = Vec::new();
        let mut connectors_out = Vec::new();
        for (kind, field, names, out) in lists {
            let mut seen = BTreeSet::new();
            for (i, n) in names.iter().enumerate() {
                let p = format!("{path}.{field}[{i}]");
                let id = match ComponentId::parse(n) {
                    Ok(id) => id,
                    Err(m) => {
                        errors.push(ConfigError::new(p, m));
                        continue;
                    }
                };
                let as_connector =
                    kind != Kind::Processor && defined.contains(&(Kind::Connector, id.clone()));
                if as_connector && defined.contains(&(kind, id.clone())) {
                    errors.push(ConfigError::new(
                        p,
                        format!(
                            "ambiguous id {n:?}: both a {} and a connector are defined with it",
                            kind.label()
                        ),
                    ));
                    continue;
                }
                if as_connector {
                    if !seen.insert(id.clone()) {
                        errors.push(ConfigError::new(p, format!("{n:?} is listed twice")));
                    } else if kind == Kind::Receiver {
                        connectors_in.push(id);
                    } else {
                        connectors_out.push(id);
                    }
                    continue;
                }
                if !defined.contains(&(kind, id.clone())) {
                    let known: Vec<String> = defined
                        .iter()
                        .filter(|(k, _)| *k == kind)
                        .map(|(_, id)| id.to_string())
                        .collect();
                    errors.push(ConfigError::new(
                        p,
                        format!(
                            "{} {n:?} is not defined in the {} section (defined: {})",
                            kind.label(),
                            kind.section(),
                            if known.is_empty() {
                                "none".into()
                            } else {
                                known.join(", ")
                            }
                        ),
                    ));
                    continue;
                }
                if let Some(f) = registry.get(kind, &id.type_name)
                    && !f.signals().contains(&signal)
                {
                    errors.push(ConfigError::new(
                        p,
                        format!(
                            "{} {n:?} does not support {}",
                            kind.label(),
                            signal.as_str()
                        ),
                    ));
                    continue;
                }

                if !seen.insert(id.clone()) {
                    errors.push(ConfigError::new(p, format!("{n:?} is listed twice")));
                    continue;
                }
                out.push(id);
            }
        }
        if raw.receivers.is_empty() {
            errors.push(ConfigError::new(
                format!("{path}.receivers"),
                "a pipeline needs at least one receiver",
            ));
        }
        if raw.exporters.is_empty() {
            errors.push(ConfigError::new(
                format!("{path}.exporters"),
                "a pipeline needs at least one exporter",
            ));
        }
        pipeline.connectors_in = connectors_in;
        pipeline.connectors_out = connectors_out;
        cfg.pipelines.insert(PipelineId { signal, name }, pipeline);
    }
    check_connectors(&cfg, registry, &mut errors);
    check_extension_refs(&cfg, registry, &defined, &mut errors);
    if errors.is_empty() {
        Ok(cfg)
    } else {
        Err(errors)
    }
}

/// Every extension a component's config names (an exporter's `sending_queue.storage`) must be
/// defined and enabled in `service.extensions`, as the Collector requires when it starts.
fn check_extension_refs(
    cfg: &Config,
    registry: &Registry,
    defined: &BTreeSet<(Kind, ComponentId)>,
    errors: &mut Vec<ConfigError>,
) {
    for ((kind, id), parsed) in &cfg.components {
        let Some(f) = registry.get(*kind, &id.type_name) else {
            continue;
        };
        for r in f.extension_refs(parsed) {
            let path = format!("{}.{id}.{}", kind.section(), r.path);
            let message = match ComponentId::parse(&r.id) {
                Err(m) => m,
                Ok(ext) if cfg.extensions.contains(&ext) => continue,
                Ok(ext) if defined.contains(&(Kind::Extension, ext.clone())) => format!(
                    "extension {:?} is defined but not enabled: add it to service.extensions",
                    r.id
                ),
                Ok(_) => format!(
                    "extension {:?} is not defined in the extensions section",
                    r.id
                ),
            };
            errors.push(ConfigError::new(path, message));
        }
    }
}

/// Each connector used must join a pipeline it exports from to one it receives into with a
/// signal pair its factory supports, and connectors must not form a cycle of pipelines.
fn check_connectors(cfg: &Config, registry: &Registry, errors: &mut Vec<ConfigError>) {
    let mut used: BTreeSet<ComponentId> = BTreeSet::new();
    for p in cfg.pipelines.values() {
        used.extend(p.connectors_in.iter().cloned());
        used.extend(p.connectors_out.iter().cloned());
    }
    for id in &used {
        let Some(f) = registry.get(Kind::Connector, &id.type_name) else {
            continue; // already reported as an unknown type
        };
        let pairs = f.connects();
        let feeding: Vec<&PipelineId> = cfg
            .pipelines
            .iter()
            .filter(|(_, p)| p.connectors_out.contains(id))
            .map(|(pid, _)| pid)
            .collect();
        let fed: Vec<&PipelineId> = cfg
            .pipelines
            .iter()
            .filter(|(_, p)| p.connectors_in.contains(id))
            .map(|(pid, _)| pid)
            .collect();
        let supported = |from: Signal, to: Signal| pairs.contains(&(from, to));
        for pid in &feeding {
            if !fed.iter().any(|q| supported(pid.signal, q.signal)) {
                errors.push(ConfigError::new(
                    format!("service.pipelines.{pid}.exporters"),
                    format!(
                        "connector \"{id}\" is used as exporter in {} pipeline {pid} but not as receiver in any pipeline it can feed (it connects: {})",
                        pid.signal.as_str(),
                        describe_pairs(pairs)
                    ),
                ));
            }
        }
        for qid in &fed {
            if !feeding.iter().any(|p| supported(p.signal, qid.signal)) {
                errors.push(ConfigError::new(
                    format!("service.pipelines.{qid}.receivers"),
                    format!(
                        "connector \"{id}\" is used as receiver in {} pipeline {qid} but not as exporter in any pipeline that can feed it (it connects: {})",
                        qid.signal.as_str(),
                        describe_pairs(pairs)
                    ),
                ));
            }
        }
    }
    if errors.is_empty() && pipeline_order(cfg).is_none() {
        errors.push(ConfigError::new(
            "service.pipelines",
            "connectors form a cycle: a pipeline would feed itself",
        ));
    }
}

fn describe_pairs(pairs: &[(Signal, Signal)]) -> String {
    pairs
        .iter()
        .map(|(a, b)| format!("{} -> {}", a.as_str(), b.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Pipelines in data-flow order: a pipeline comes after every pipeline that feeds it through a
/// connector (ties in id order). `None` if connectors form a cycle.
pub fn pipeline_order(cfg: &Config) -> Option<Vec<PipelineId>> {
    let ids: Vec<&PipelineId> = cfg.pipelines.keys().collect();
    let feeds =
        |a: &Pipeline, b: &Pipeline| a.connectors_out.iter().any(|c| b.connectors_in.contains(c));
    let mut indegree: Vec<usize> = ids
        .iter()
        .map(|q| {
            ids.iter()
                .filter(|p| feeds(&cfg.pipelines[**p], &cfg.pipelines[*q]))
                .count()
        })
        .collect();
    let mut done = vec![false; ids.len()];
    let mut order = Vec::with_capacity(ids.len());
    while order.len() < ids.len() {
        let next = (0..ids.len()).find(|&i| !done[i] && indegree[i] == 0)?;
        done[next] = true;
        order.push(ids[next].clone());
        for (j, q) in ids.iter().enumerate() {
            if !done[j] && feeds(&cfg.pipelines[ids[next]], &cfg.pipelines[*q]) {
                indegree[j] -= 1;
            }
        }
    }
    Some(order)
}

/// YAML 1.2 as the Collector's go-yaml v3 reads it: only `true`/`false` are booleans, so a
/// component named `y` or a value `on` stays a string (serde-saphyr defaults to YAML 1.1).
fn parse_yaml(text: &str) -> Result<Value, serde_saphyr::Error> {
    let mut options = serde_saphyr::Options::default();
    options.strict_booleans = true;
    serde_saphyr::from_str_with_options::<Value>(text, options)
}

/// Deep merge: maps merge key by key, anything else is replaced.
fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) if existing.is_object() && v.is_object() => merge(existing, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// How an `${env:VAR}` reference was resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum VarState {
    Set,
    /// Set to the empty string (used as is; the default applies only to unset variables).
    Empty,
    /// Not set and no default: expands to the empty string, as in the Collector (which warns).
    Unset,
    /// Not set; the `:-default` was used.
    Defaulted,
}

/// One `${env:VAR}` met while expanding: kept to name the variable in an error about the value
/// it made, and to warn about unset variables as the Collector does.
#[derive(Clone, Debug)]
struct EnvReference {
    /// The source the reference is written in.
    file: String,
    /// The config path of the value (`exporters.otlp/jaeger.endpoint`).
    path: String,
    /// As written: `${env:JAEGER_ENDPOINT}`, `${env:PORT:-4317}`.
    text: String,
    name: String,
    state: VarState,
}

impl EnvReference {
    fn explain(&self) -> String {
        match self.state {
            VarState::Set => format!("from {}", self.text),
            VarState::Empty => format!("from {}, which is set to an empty string", self.text),
            VarState::Unset => format!("from {}, which is not set", self.text),
            VarState::Defaulted => {
                format!(
                    "from {}, with {} not set (the default)",
                    self.text, self.name
                )
            }
        }
    }
}

/// `${env:VAR}`, `${VAR}`, `${env:VAR:-default}` expansion over one parsed source, as the
/// Collector's resolver does it: the default is used only when the variable is unset (not when
/// it is empty); an unset variable without a default expands to the empty string; `$$` is a
/// literal `$`; a reference to another config source (`${file:...}`, `${http:...}`) is an error
/// (sluice has only `env`).
struct Expander<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    file: &'a str,
    references: Vec<EnvReference>,
    errors: Vec<ConfigError>,
}

/// What the text between `${` and `}` asks for.
enum Reference<'t> {
    Env {
        name: &'t str,
        default: Option<&'t str>,
    },
    /// `${scheme:...}` for a scheme other than `env`.
    OtherSource(&'t str),
    /// Not a reference (`${1x}`, `${a b}`): left as written.
    Text,
}

fn is_var_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

fn is_scheme(s: &str) -> bool {
    s.len() > 1
        && s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-'))
}

fn parse_reference(inner: &str) -> Reference<'_> {
    if let Some(rest) = inner.strip_prefix("env:") {
        let (name, default) = match rest.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (rest, None),
        };
        return Reference::Env { name, default };
    }
    if is_var_name(inner) {
        return Reference::Env {
            name: inner,
            default: None,
        };
    }
    match inner.split_once(':') {
        Some((scheme, _)) if is_scheme(scheme) => Reference::OtherSource(scheme),
        _ => Reference::Text,
    }
}

impl Expander<'_> {
    fn value(&mut self, v: Value, path: &str) -> Value {
        match v {
            Value::String(s) => self.string(&s, path),
            Value::Array(a) => Value::Array(
                a.into_iter()
                    .enumerate()
                    .map(|(i, x)| self.value(x, &format!("{path}[{i}]")))
                    .collect(),
            ),
            Value::Object(m) => Value::Object(
                m.into_iter()
                    .map(|(k, x)| {
                        let p = if path.is_empty() {
                            k.clone()
                        } else {
                            format!("{path}.{k}")
                        };
                        let x = self.value(x, &p);
                        (k, x)
                    })
                    .collect(),
            ),
            other => other,
        }
    }

    /// The text a reference stands for, or `None` when it is not one (kept as written).
    fn resolve(&mut self, reference: &str, path: &str) -> Option<String> {
        let inner = &reference[2..reference.len() - 1];
        match parse_reference(inner) {
            Reference::Text => None,
            Reference::OtherSource(scheme) => {
                self.errors.push(ConfigError::new(
                    path,
                    format!(
                        "{reference}: config source {scheme:?} is not supported; sluice expands \
                         ${{env:VAR}}, ${{env:VAR:-default}} and ${{VAR}}"
                    ),
                ));
                Some(String::new())
            }
            Reference::Env { name, .. } if !is_var_name(name) => {
                self.errors.push(ConfigError::new(
                    path,
                    format!(
                        "{reference}: {name:?} is not a valid environment variable name \
                         (letters, digits and `_`, not starting with a digit)"
                    ),
                ));
                Some(String::new())
            }
            Reference::Env { name, default } => {
                let (text, state) = match ((self.env)(name), default) {
                    (Some(v), _) if v.is_empty() => (v, VarState::Empty),
                    (Some(v), _) => (v, VarState::Set),
                    (None, Some(d)) => (d.to_string(), VarState::Defaulted),
                    (None, None) => (String::new(), VarState::Unset),
                };
                self.references.push(EnvReference {
                    file: self.file.to_string(),
                    path: path.to_string(),
                    text: reference.to_string(),
                    name: name.to_string(),
                    state,
                });
                Some(text)
            }
        }
    }

    fn string(&mut self, s: &str, path: &str) -> Value {
        let whole = s.starts_with("${") && s.find('}') == Some(s.len() - 1);
        if whole && let Some(text) = self.resolve(s, path) {
            // A whole-value reference takes the YAML type of its text (a port becomes an
            // int), but only for scalars: a variable holding `{a: 1}` stays a string.
            return match parse_yaml(&text) {
                Ok(v @ (Value::Bool(_) | Value::Number(_))) => v,
                _ => Value::String(text),
            };
        }
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let tail = &rest[i..];
            if let Some(t) = tail.strip_prefix("$$") {
                out.push('$');
                rest = t;
            } else if let Some(end) = tail.find('}').filter(|_| tail.starts_with("${")) {
                let reference = &tail[..=end];
                match self.resolve(reference, path) {
                    Some(text) => out.push_str(&text),
                    None => out.push_str(reference),
                }
                rest = &tail[end + 1..];
            } else {
                out.push('$');
                rest = &tail[1..];
            }
        }
        out.push_str(rest);
        Value::String(out)
    }
}

/// The Collector's key delimiter: a key `processors::batch::timeout` (as `--set` and
/// `yaml:` sources write them, and any source may) is the nested path it names.
const KEY_DELIMITER: &str = "::";

fn split_delimited_keys(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Value::Object(Map::new());
            for (k, x) in m {
                let x = split_delimited_keys(x);
                let nested = k
                    .split(KEY_DELIMITER)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .fold(x, |inner, part| {
                        let mut m = Map::new();
                        m.insert(part.to_string(), inner);
                        Value::Object(m)
                    });
                merge(&mut out, nested);
            }
            out
        }
        Value::Array(a) => Value::Array(a.into_iter().map(split_delimited_keys).collect()),
        other => other,
    }
}

/// The file that defines the deepest prefix of `path` (the last such file on ties, since later
/// files win the merge).
fn locate_file<'a>(docs: &[Value], names: &[&'a str], path: &str) -> Option<&'a str> {
    let segments: Vec<&str> = split_path(path);
    let mut best: Option<(usize, &str)> = None;
    for (doc, name) in docs.iter().zip(names) {
        let mut depth = 0;
        let mut node = doc;
        for seg in &segments {
            let seg = seg.split('[').next().unwrap_or(seg);
            match node.get(seg) {
                Some(n) => {
                    depth += 1;
                    node = n;
                }
                None => break,
            }
        }
        if best.is_none_or(|(d, _)| depth >= d) {
            best = Some((depth, name));
        }
    }
    best.map(|(_, n)| n)
}

/// Splits `receivers.otlp/x.protocols` into segments; component ids never contain dots, so a
/// plain split is right except for keys that do (pipelines never do).
fn split_path(path: &str) -> Vec<&str> {
    path.split('.').filter(|s| !s.is_empty()).collect()
}

#[cfg(test)]
mod tests;
