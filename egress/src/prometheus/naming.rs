//! OTLP metric and attribute names -> Prometheus metric and label names, as the Collector's
//! prometheus exporter builds them.
//!
//! The Collector's exporter (`exporter/prometheusexporter/collector.go`) calls
//! `otlptranslator.MetricNamer{WithMetricSuffixes, Namespace, UTF8Allowed: false}.Build` and
//! `otlptranslator.LabelNamer{UTF8Allowed: false}.Build` from prometheus/otlptranslator
//! (`metric_namer.go`, `unit_namer.go`, `label_namer.go`, `strconv.go`), which took over
//! `pkg/translator/prometheus/normalize_name.go` and `normalize_label.go` of
//! opentelemetry-collector-contrib. This module follows those files function by function
//! (`normalize_name`, `add_unit_tokens`, `build_unit_suffixes`, `clean_up_unit`, ...), including
//! their quirks: `_total` for monotonic sums only, `_ratio` for gauges of unit `1` only, unit
//! words from the UCUM map, `{annotations}` ignored, `a/b` as `a_per_b`, every run of characters
//! outside `[a-zA-Z0-9:]` collapsed to one `_`, a leading digit prefixed with `_`.
//!
//! One deliberate difference: the namespace is sanitized with the label rules before it is
//! prepended (the Collector prepends it raw on this path, so `namespace: test-space` yields
//! names Prometheus refuses; its own `target_info` already uses the sanitized form).

use std::fmt;

/// The OTLP metric kinds the namer distinguishes (`otlptranslator.MetricType`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum OtelKind {
    Gauge,
    MonotonicCounter,
    NonMonotonicCounter,
    Histogram,
    ExponentialHistogram,
    Summary,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameError(pub String);

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Unit words (`unitMap` in `metric_namer.go`).
fn unit_word(unit: &str) -> &str {
    match unit {
        // Time
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        // Bytes
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tibibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        // SI
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        // Misc
        "Cel" => "celsius",
        "Hz" => "hertz",
        "1" => "",
        "%" => "percent",
        other => other,
    }
}

/// "Per" unit words (`perUnitMap`).
fn per_unit_word(unit: &str) -> &str {
    match unit {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        other => other,
    }
}

/// `isValidCompliantMetricChar`: `[a-zA-Z0-9:]` (note: not `_`).
#[inline]
fn is_compliant_metric_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == ':'
}

/// `invalidMetricCharRE` = `[^a-zA-Z0-9:_]`.
#[inline]
fn is_invalid_metric_char(c: char) -> bool {
    !(c.is_ascii_alphanumeric() || c == ':' || c == '_')
}

/// `buildUnitSuffixes`: the main and the "per" unit words of a UCUM unit, untransformed.
fn build_unit_suffixes(unit: &str) -> (String, String) {
    let mut tokens = unit.splitn(2, '/');
    let mut main = String::new();
    let mut per = String::new();
    if let Some(m) = tokens.next() {
        let m = m.trim();
        if !m.is_empty() && !m.contains(['{', '}']) {
            main = unit_word(m).to_string();
        }
        if let Some(p) = tokens.next()
            && !p.is_empty()
        {
            let p = p.trim();
            if !p.is_empty() && !p.contains(['{', '}']) {
                per = per_unit_word(p).to_string();
            }
            if !per.is_empty() {
                per = format!("per_{per}");
            }
        }
    }
    (main, per)
}

/// `cleanUpUnit`: invalid characters to `_`, runs of `_` collapsed, a leading `_` removed.
fn clean_up_unit(unit: &str) -> String {
    let mut out = String::with_capacity(unit.len());
    for c in unit.chars() {
        let c = if is_compliant_metric_char(c) { c } else { '_' };
        if c == '_' && out.ends_with('_') {
            continue;
        }
        out.push(c);
    }
    match out.strip_prefix('_') {
        Some(rest) => rest.to_string(),
        None => out,
    }
}

/// `addUnitTokens`.
fn add_unit_tokens(tokens: &mut Vec<String>, main: String, per: String) {
    let mut main = main;
    if tokens.contains(&main) {
        main.clear();
    }
    let mut per = if per == "per_" {
        String::new()
    } else {
        per.strip_suffix('_').unwrap_or(&per).to_string()
    };
    if tokens.contains(&per) {
        per.clear();
    }
    if !per.is_empty() {
        main = main.strip_suffix('_').unwrap_or(&main).to_string();
    }
    if !main.is_empty() {
        tokens.push(main);
    }
    if !per.is_empty() {
        tokens.push(per);
    }
}

/// `normalizeName`: the full translation with type and unit suffixes.
fn normalize_name(name: &str, unit: &str, kind: OtelKind, namespace: &str) -> String {
    let mut tokens: Vec<String> = name
        .split(|c: char| !is_compliant_metric_char(c))
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    let (main, per) = build_unit_suffixes(unit);
    add_unit_tokens(&mut tokens, clean_up_unit(&main), clean_up_unit(&per));
    if kind == OtelKind::MonotonicCounter {
        tokens.retain(|t| t != "total");
        tokens.push("total".into());
    }
    // `_ratio` only for gauges of unit "1" (not sums), as the translator says.
    if unit == "1" && kind == OtelKind::Gauge {
        tokens.retain(|t| t != "ratio");
        tokens.push("ratio".into());
    }
    if !namespace.is_empty() {
        tokens.insert(0, namespace.to_string());
    }
    let joined = tokens.join("_");
    if joined.as_bytes().first().is_some_and(u8::is_ascii_digit) {
        format!("_{joined}")
    } else {
        joined
    }
}

/// `strings.Join(strings.FieldsFunc(s, invalidMetricCharRE.MatchString), "_")`.
fn join_fields_invalid_metric(s: &str) -> String {
    s.split(is_invalid_metric_char)
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join("_")
}

/// `MetricNamer` with `UTF8Allowed: false`.
#[derive(Clone, Debug, Default)]
pub struct MetricNamer {
    /// Already sanitized (see the module note).
    pub namespace: String,
    pub with_suffixes: bool,
}

impl MetricNamer {
    /// `buildCompliantMetricName`.
    pub fn build(&self, name: &str, unit: &str, kind: OtelKind) -> Result<String, NameError> {
        let normalized = if self.with_suffixes {
            normalize_name(name, unit, kind, &self.namespace)
        } else {
            let metric = join_fields_invalid_metric(name);
            if !self.namespace.is_empty() {
                format!("{}_{metric}", join_fields_invalid_metric(&self.namespace))
            } else if metric.as_bytes().first().is_some_and(u8::is_ascii_digit) {
                format!("_{metric}")
            } else {
                metric
            }
        };
        if normalized.is_empty() {
            return Err(NameError(format!(
                "normalization for metric {name:?} resulted in empty name"
            )));
        }
        if normalized != name && normalized.bytes().all(|b| b == b'_') {
            return Err(NameError(format!(
                "normalization for metric {name:?} resulted in invalid name {normalized:?}"
            )));
        }
        Ok(normalized)
    }
}

/// `sanitizeLabelName`: every character outside `[a-zA-Z0-9_]` becomes `_` (one per
/// character, not per byte).
fn sanitize_label_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `LabelNamer.Build` with `UTF8Allowed: false`: invalid characters to `_`; a leading digit
/// gets `key_`, a single leading `_` gets `key` (`__` is kept); an empty result, or one made
/// only of `_` from a different input, is an error.
pub fn label_name(label: &str) -> Result<String, NameError> {
    if label.is_empty() {
        return Err(NameError(format!(
            "normalization for label name {label:?} resulted in empty name"
        )));
    }
    let mut n = sanitize_label_name(label);
    if n.as_bytes()[0].is_ascii_digit() {
        n = format!("key_{n}");
    } else if n.starts_with('_') && !n.starts_with("__") {
        n = format!("key{n}");
    }
    if n != label && n.bytes().all(|b| b == b'_') {
        return Err(NameError(format!(
            "normalization for label name {label:?} resulted in invalid name {n:?}"
        )));
    }
    Ok(n)
}

/// Whether `name` is a label name client_golang accepts for a metric
/// (`model.LabelName.IsValid()` and not the reserved `__` prefix; `desc.go` `checkLabelName`).
pub fn is_usable_label_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
        && !name.starts_with("__")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn with_suffixes() -> MetricNamer {
        MetricNamer {
            namespace: String::new(),
            with_suffixes: true,
        }
    }

    #[test]
    fn metric_names_follow_the_translator() {
        let n = with_suffixes();
        let cases: &[(&str, &str, OtelKind, &str)] = &[
            // kubeletstats
            (
                "container.cpu.time",
                "s",
                OtelKind::MonotonicCounter,
                "container_cpu_time_seconds_total",
            ),
            (
                "container.memory.usage",
                "By",
                OtelKind::Gauge,
                "container_memory_usage_bytes",
            ),
            (
                "container.cpu.utilization",
                "1",
                OtelKind::Gauge,
                "container_cpu_utilization_ratio",
            ),
            // from otlptranslator's metric_namer_test.go and normalize_name_test.go
            (
                "system.io",
                "By",
                OtelKind::MonotonicCounter,
                "system_io_bytes_total",
            ),
            (
                "network.transmit",
                "MiBy/s",
                OtelKind::Gauge,
                "network_transmit_mebibytes_per_second",
            ),
            ("s", "s", OtelKind::Gauge, "s_seconds"),
            (
                "requests.total",
                "",
                OtelKind::MonotonicCounter,
                "requests_total",
            ),
            (
                "total.requests",
                "",
                OtelKind::MonotonicCounter,
                "requests_total",
            ),
            (
                "cpu.utilization.ratio",
                "1",
                OtelKind::Gauge,
                "cpu_utilization_ratio",
            ),
            // _ratio is for gauges only; unit 1 adds nothing else
            (
                "queue.fill",
                "1",
                OtelKind::NonMonotonicCounter,
                "queue_fill",
            ),
            ("hits", "1", OtelKind::MonotonicCounter, "hits_total"),
            ("temperature", "Cel", OtelKind::Gauge, "temperature_celsius"),
            ("disk.usage", "%", OtelKind::Gauge, "disk_usage_percent"),
            (
                "http.server.duration",
                "ms",
                OtelKind::Histogram,
                "http_server_duration_milliseconds",
            ),
            (
                "rpc.duration",
                "s",
                OtelKind::ExponentialHistogram,
                "rpc_duration_seconds",
            ),
            (
                "requests",
                "{request}",
                OtelKind::MonotonicCounter,
                "requests_total",
            ),
            (
                "requests",
                "{request}/s",
                OtelKind::Gauge,
                "requests_per_second",
            ),
            (
                "throughput",
                "1/s",
                OtelKind::Gauge,
                "throughput_per_second",
            ),
            ("disk.io", "By/{op}", OtelKind::Gauge, "disk_io_bytes"),
            ("foo", "custom unit", OtelKind::Gauge, "foo_custom_unit"),
            ("foo", "m/", OtelKind::Gauge, "foo_meters"),
            // unit already in the name is not repeated
            (
                "process.runtime.bytes",
                "By",
                OtelKind::Gauge,
                "process_runtime_bytes",
            ),
            (
                "network.io.per.second",
                "By/s",
                OtelKind::Gauge,
                "network_io_per_second_bytes_per_second",
            ),
            // invalid characters, runs of separators, leading digit
            (
                "http-requests..count__x",
                "",
                OtelKind::Gauge,
                "http_requests_count_x",
            ),
            (
                "2xx.responses",
                "",
                OtelKind::MonotonicCounter,
                "_2xx_responses_total",
            ),
            (
                "ns:subsystem.metric",
                "",
                OtelKind::Gauge,
                "ns:subsystem_metric",
            ),
            ("résumé.size", "By", OtelKind::Gauge, "r_sum_size_bytes"),
        ];
        for (name, unit, kind, want) in cases {
            assert_eq!(
                n.build(name, unit, *kind).as_deref(),
                Ok(*want),
                "{name} {unit} {kind:?}"
            );
        }
    }

    #[test]
    fn namespace_and_no_suffixes() {
        let ns = MetricNamer {
            namespace: "gateway".into(),
            with_suffixes: true,
        };
        assert_eq!(
            ns.build("http.requests", "1", OtelKind::MonotonicCounter)
                .unwrap(),
            "gateway_http_requests_total"
        );
        let plain = MetricNamer {
            namespace: String::new(),
            with_suffixes: false,
        };
        assert_eq!(
            plain
                .build("container.cpu.time", "s", OtelKind::MonotonicCounter)
                .unwrap(),
            "container_cpu_time"
        );
        // underscores are kept on this path, other characters become one `_` per run
        assert_eq!(
            plain.build("a__b..c", "", OtelKind::Gauge).unwrap(),
            "a__b_c"
        );
        assert_eq!(plain.build("1st", "", OtelKind::Gauge).unwrap(), "_1st");
        let plain_ns = MetricNamer {
            namespace: "gw".into(),
            with_suffixes: false,
        };
        assert_eq!(
            plain_ns.build("1st", "", OtelKind::Gauge).unwrap(),
            "gw_1st"
        );
    }

    #[test]
    fn names_that_cannot_be_made_valid_are_errors() {
        let n = with_suffixes();
        assert!(n.build("", "", OtelKind::Gauge).is_err());
        assert!(n.build("...", "", OtelKind::Gauge).is_err());
        assert!(n.build("___", "", OtelKind::Gauge).is_err());
    }

    #[test]
    fn label_names_follow_the_translator() {
        for (key, want) in [
            ("k8s.pod.name", "k8s_pod_name"),
            ("http.method", "http_method"),
            ("label/2", "label_2"),
            ("123invalid", "key_123invalid"),
            ("_private", "key_private"),
            ("__reserved__", "__reserved__"),
            ("valid_name", "valid_name"),
            // "é" is one character, so one `_`; a single leading `_` gets `key`
            ("émoji", "key_moji"),
        ] {
            assert_eq!(label_name(key).as_deref(), Ok(want), "{key}");
        }
        assert!(label_name("").is_err());
        assert!(label_name("...").is_err());
        assert!(label_name("__").is_ok()); // unchanged input: the translator keeps it ...
        assert!(!is_usable_label_name("__")); // ... and client_golang refuses it
        assert!(!is_usable_label_name("__name__"));
        assert!(is_usable_label_name("job"));
    }

    proptest! {
        #[test]
        fn metric_names_are_always_valid_prometheus_names(
            name in "\\PC{0,40}", unit in "\\PC{0,12}",
            kind in prop_oneof![
                Just(OtelKind::Gauge), Just(OtelKind::MonotonicCounter),
                Just(OtelKind::NonMonotonicCounter), Just(OtelKind::Histogram),
                Just(OtelKind::Summary)],
            suffixes in any::<bool>(),
        ) {
            let n = MetricNamer { namespace: String::new(), with_suffixes: suffixes };
            if let Ok(out) = n.build(&name, &unit, kind) {
                let b = out.as_bytes();
                prop_assert!(!b.is_empty());
                prop_assert!(b[0].is_ascii_alphabetic() || b[0] == b'_' || b[0] == b':', "{out}");
                prop_assert!(b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b':'), "{out}");
                if suffixes {
                    // the suffixed path never leaves a run of underscores from the name
                    if unit.chars().all(|c| c.is_ascii_alphanumeric()) {
                        prop_assert!(!out.trim_start_matches('_').contains("__"), "{out}");
                    }
                    if kind == OtelKind::MonotonicCounter {
                        prop_assert!(out.ends_with("_total") || out == "total", "{out}");
                    }
                }
            }
        }

        #[test]
        fn label_names_are_valid_and_idempotent(key in "\\PC{0,30}") {
            if let Ok(l) = label_name(&key) {
                let b = l.as_bytes();
                prop_assert!(b[0].is_ascii_alphabetic() || b[0] == b'_');
                prop_assert!(b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_'));
                // a sanitized name maps to itself
                prop_assert_eq!(label_name(&l).unwrap(), l.clone());
                // one output character per input character, after an optional `key` prefix
                let sanitized = sanitize_label_name(&key);
                prop_assert_eq!(sanitized.len(), key.chars().count());
                let prefix = &l[..l.len() - sanitized.len()];
                prop_assert!(l.ends_with(&sanitized));
                prop_assert!(["", "key", "key_"].contains(&prefix), "{l}");
            } else {
                prop_assert!(key.is_empty() || key.chars().all(|c| !(c.is_ascii_alphanumeric())));
            }
        }

        #[test]
        fn label_names_ignore_valid_characters(key in "[a-zA-Z][a-zA-Z0-9_]{0,20}") {
            prop_assert_eq!(label_name(&key).unwrap(), key);
        }
    }
}
