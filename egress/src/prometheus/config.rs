//! The `prometheus` exporter's config: the Collector's (`exporter/prometheusexporter/config.go`,
//! `config.schema.yaml`, `factory.go` `createDefaultConfig`), field for field.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use sluice_engine::component::ConfigError;
use sluice_engine::config_types::{check_listen_endpoint, deserialize_duration};
use sluice_tls::TlsServerSetting;

use super::naming;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusConfig {
    /// Required: the address to serve `/metrics` on, bound exactly as written.
    #[serde(default)]
    pub endpoint: String,
    /// Serve `/metrics` over TLS (the Collector's `configtls.ServerConfig`, see `sluice_tls`):
    /// checked at config load, certificate files read at start.
    #[serde(default)]
    pub tls: Option<TlsServerSetting>,
    /// Prefix of every metric name (`<namespace>_<name>`).
    #[serde(default)]
    pub namespace: String,
    /// Labels added to every series (not to `target_info`).
    #[serde(default)]
    pub const_labels: BTreeMap<String, String>,
    /// Write each sample's data point timestamp.
    #[serde(default)]
    pub send_timestamps: bool,
    /// How long a series is exposed without updates.
    #[serde(
        default = "default_metric_expiration",
        deserialize_with = "deserialize_duration"
    )]
    pub metric_expiration: Duration,
    /// Serve OpenMetrics 1.0.0 to scrapers that ask for it (the only format with exemplars).
    #[serde(default)]
    pub enable_open_metrics: bool,
    /// Type and unit suffixes (`_total`, `_seconds`, `_ratio`, ...). Default true.
    #[serde(default = "yes")]
    pub add_metric_suffixes: bool,
    #[serde(default)]
    pub resource_to_telemetry_conversion: ResourceToTelemetry,
    /// Leave out the `otel_scope_*` labels.
    #[serde(default)]
    pub without_scope_info: bool,
    /// Overrides `add_metric_suffixes` when set.
    #[serde(default)]
    pub translation_strategy: Option<String>,
}

fn default_metric_expiration() -> Duration {
    Duration::from_secs(5 * 60)
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceToTelemetry {
    /// Copy every resource attribute onto every data point as a label.
    #[serde(default)]
    pub enabled: bool,
    /// ... except `service.name`, `service.namespace`, `service.instance.id` (already `job`
    /// and `instance`).
    #[serde(default)]
    pub exclude_service_attributes: bool,
}

/// `translation_strategy` values: (suffixes, escaping to underscores).
const STRATEGIES: &[(&str, bool)] = &[
    ("UnderscoreEscapingWithSuffixes", true),
    ("UnderscoreEscapingWithoutSuffixes", false),
];
const UTF8_STRATEGIES: &[&str] = &["NoUTF8EscapingWithSuffixes", "NoTranslation"];

impl PrometheusConfig {
    /// Checks what serde cannot; errors carry the field's path.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.endpoint.trim().is_empty() {
            return Err(ConfigError::new(
                "endpoint",
                "required: the address to serve /metrics on, e.g. `0.0.0.0:8889` \
                 (the Collector's \"expecting a non-blank address to run the Prometheus metrics handler\")",
            ));
        }
        check_listen_endpoint(self.endpoint.trim()).map_err(|m| ConfigError::new("endpoint", m))?;
        if let Some(tls) = &self.tls {
            tls.validate().map_err(|e| {
                ConfigError::new(e.field().unwrap_or_default(), e.detail()).within("tls")
            })?;
        }
        for name in self.const_labels.keys() {
            if !naming::is_usable_label_name(name) {
                return Err(ConfigError::new(
                    format!("const_labels.{name}"),
                    "not a valid Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with `__`)",
                ));
            }
        }
        if let Some(s) = &self.translation_strategy
            && !STRATEGIES.iter().any(|(n, _)| n == s)
        {
            let msg = if UTF8_STRATEGIES.contains(&s.as_str()) {
                format!(
                    "`{s}` keeps UTF-8 names, which sluice's text exposition cannot carry; use one of {}",
                    STRATEGIES
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            } else {
                format!(
                    "unknown strategy `{s}`, expected one of {}",
                    STRATEGIES
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            return Err(ConfigError::new("translation_strategy", msg));
        }
        Ok(())
    }

    /// Whether type and unit suffixes are added (`getTranslationConfiguration`).
    pub fn with_suffixes(&self) -> bool {
        match &self.translation_strategy {
            Some(s) => STRATEGIES
                .iter()
                .find(|(n, _)| n == s)
                .is_none_or(|(_, suffixes)| *suffixes),
            None => self.add_metric_suffixes,
        }
    }

    /// The namespace as a name prefix: `LabelNamer.Build(namespace)`, as the Collector
    /// prefixes `target_info` (empty stays empty).
    pub fn namespace_prefix(&self) -> String {
        if self.namespace.is_empty() {
            return String::new();
        }
        naming::label_name(&self.namespace).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_engine::component::parse_config;

    fn parse(v: serde_json::Value) -> Result<PrometheusConfig, ConfigError> {
        let c: PrometheusConfig = parse_config(&v)?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn collector_defaults() {
        let c = parse(serde_json::json!({"endpoint": "0.0.0.0:8889"})).unwrap();
        assert_eq!(c.metric_expiration, Duration::from_secs(300));
        assert!(c.add_metric_suffixes && c.with_suffixes());
        assert!(!c.send_timestamps && !c.enable_open_metrics);
        assert!(!c.resource_to_telemetry_conversion.enabled);
        assert!(c.const_labels.is_empty() && c.namespace.is_empty());
    }

    #[test]
    fn the_collector_readme_example_parses() {
        let c = parse(serde_json::json!({
            "endpoint": "1.2.3.4:1234",
            "namespace": "test-space",
            "const_labels": {"label1": "value1", "another_label": "spaced value"},
            "send_timestamps": true,
            "metric_expiration": "180m",
            "enable_open_metrics": true,
            "add_metric_suffixes": false,
            "translation_strategy": "UnderscoreEscapingWithoutSuffixes",
            "resource_to_telemetry_conversion": {"enabled": true}
        }))
        .unwrap();
        assert_eq!(c.metric_expiration, Duration::from_secs(180 * 60));
        assert_eq!(c.namespace_prefix(), "test_space");
        assert!(!c.with_suffixes());
        // the strategy wins over add_metric_suffixes
        let c = parse(serde_json::json!({
            "endpoint": "x:1", "add_metric_suffixes": false,
            "translation_strategy": "UnderscoreEscapingWithSuffixes"}))
        .unwrap();
        assert!(c.with_suffixes());
    }

    #[test]
    fn bad_configs_are_refused_with_the_path() {
        let e = parse(serde_json::json!({})).unwrap_err();
        assert_eq!(e.path, "endpoint");
        // TLS: the Collector's server setting, checked at load (files are read at start)
        assert!(
            parse(
                serde_json::json!({"endpoint": "x:1", "tls": {"cert_file": "a", "key_file": "b"}})
            )
            .is_ok()
        );
        let e = parse(serde_json::json!({"endpoint": "x:1", "tls": {}})).unwrap_err();
        assert_eq!(e.path, "tls.cert_file", "{e}");
        let e = parse(serde_json::json!({"endpoint": "x:1", "tls": {"cert_file": "a", "key_file": "b", "min_version": "1.5"}}))
            .unwrap_err();
        assert_eq!(e.path, "tls.min_version", "{e}");
        let e =
            parse(serde_json::json!({"endpoint": "x:1", "tls": {"cert_fil": "a"}})).unwrap_err();
        assert!(e.path.starts_with("tls"), "{e}");
        let e = parse(serde_json::json!({"endpoint": "x:1", "const_labels": {"bad-name": "v"}}))
            .unwrap_err();
        assert_eq!(e.path, "const_labels.bad-name");
        let e =
            parse(serde_json::json!({"endpoint": "x:1", "translation_strategy": "NoTranslation"}))
                .unwrap_err();
        assert!(e.message.contains("UTF-8"), "{e}");
        let e = parse(serde_json::json!({"endpoint": "x:1", "metric_expiration": "5 minutes"}))
            .unwrap_err();
        assert_eq!(e.path, "metric_expiration");
        let e = parse(serde_json::json!({"endpoint": "x:1", "resource_to_telemetry_conversion": {"enable": true}}))
            .unwrap_err();
        assert!(e.message.contains("enabled"), "{e}");
    }
}
