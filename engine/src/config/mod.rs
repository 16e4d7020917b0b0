//! The OpenTelemetry Collector's YAML config, read as the Collector reads it.
//!
//! - Sections `receivers`, `processors`, `exporters`, `connectors`, `extensions`, `service`;
//!   components named `type[/name]`; `service.pipelines` named `traces|metrics|logs[/name]`.
//! - Several files merge as the Collector merges them: maps deeply, later files win, lists and
//!   scalars replaced whole.
//! - `${env:VAR}` and `${VAR}` expand in scalar values after parsing; a value that is exactly one
//!   reference takes the YAML type of the variable's text (`port: ${env:PORT}` is an int); `$$` is
//!   a literal `$`; an unset variable expands to the empty string, as in the Collector.
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

use crate::component::{ComponentId, ConfigError, Factory, Kind, ParsedConfig, parse_config};
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

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsTelemetryConfig {
    /// `debug`, `info`, `warn`, `error` (default `info`).
    pub level: Option<String>,
    /// Accepted for compatibility; sluice logs plain text to stderr.
    pub encoding: Option<String>,
    pub development: Option<bool>,
    pub disable_caller: Option<bool>,
    pub disable_stacktrace: Option<bool>,
}

impl MetricsTelemetryConfig {
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

/// Parses, merges, expands and checks `sources` against `registry`.
pub fn load(
    sources: &[Source],
    env: &dyn Fn(&str) -> Option<String>,
    registry: &Registry,
) -> Result<Config, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut docs = Vec::new();
    for s in sources {
        match parse_yaml(&s.text) {
            Ok(Value::Null) => docs.push(Value::Object(Map::new())),
            Ok(v @ Value::Object(_)) => docs.push(expand(v, env)),
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
    let locate = |e: ConfigError| -> ConfigError {
        let file = locate_file(&docs, &names, &e.path);
        ConfigError {
            file: file.map(str::to_string),
            ..e
        }
    };
    match check(&merged, registry) {
        Ok(c) => Ok(c),
        Err(es) => Err(es.into_iter().map(locate).collect()),
    }
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
    if errors.is_empty() {
        Ok(cfg)
    } else {
        Err(errors)
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

/// Expands `${env:VAR}` / `${VAR}` in every string value.
fn expand(v: Value, env: &dyn Fn(&str) -> Option<String>) -> Value {
    match v {
        Value::String(s) => expand_str(&s, env),
        Value::Array(a) => Value::Array(a.into_iter().map(|x| expand(x, env)).collect()),
        Value::Object(m) => {
            Value::Object(m.into_iter().map(|(k, x)| (k, expand(x, env))).collect())
        }
        other => other,
    }
}

fn env_ref(s: &str) -> Option<&str> {
    let inner = s.strip_prefix("${")?.strip_suffix('}')?;
    let name = inner.strip_prefix("env:").unwrap_or(inner);
    let valid = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    valid.then_some(name)
}

fn expand_str(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Value {
    if let Some(name) = env_ref(s) {
        let text = env(name).unwrap_or_default();
        // A whole-value reference takes the YAML type of its text (a port becomes an int), but
        // only for scalars: a variable holding `{a: 1}` stays a string.
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
            match env_ref(&tail[..=end]) {
                Some(name) => out.push_str(&env(name).unwrap_or_default()),
                None => out.push_str(&tail[..=end]),
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
