use std::collections::HashMap;

use super::*;
use crate::component::{BuildContext, ComponentError, ConsumerRef, Node, SignalConsumers};

/// A factory that accepts `{endpoint: string}` and nothing else, for any kind.
struct TestFactory {
    kind: Kind,
    name: &'static str,
    signals: &'static [Signal],
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct TestConfig {
    endpoint: Option<String>,
    port: Option<u16>,
    verbosity: Option<String>,
    check_interval: Option<String>,
    limit_percentage: Option<u32>,
    spike_limit_percentage: Option<u32>,
    send_batch_size: Option<u32>,
    timeout: Option<String>,
    protocols: Option<Value>,
    resource_to_telemetry_conversion: Option<Value>,
}

impl Factory for TestFactory {
    fn kind(&self) -> Kind {
        self.kind
    }
    fn type_name(&self) -> &'static str {
        self.name
    }
    fn signals(&self) -> &'static [Signal] {
        self.signals
    }
    fn description(&self) -> &'static str {
        "test"
    }
    fn parse_config(&self, config: &Value) -> Result<ParsedConfig, ConfigError> {
        Ok(Arc::new(parse_config::<TestConfig>(config)?))
    }
    fn without_effect(&self) -> &'static [NoEffect] {
        const RECEIVER: &[NoEffect] = &[NoEffect::new(
            "protocols.grpc.include_metadata",
            "client metadata is not passed on",
        )];
        if self.kind == Kind::Receiver {
            RECEIVER
        } else {
            &[]
        }
    }
    fn build_processor(
        &self,
        ctx: BuildContext,
        _: Signal,
        _: ConsumerRef,
    ) -> Result<Arc<dyn Node>, ComponentError> {
        Err(ComponentError::new(&ctx.id, "test"))
    }
    fn build_receiver(
        &self,
        ctx: BuildContext,
        _: SignalConsumers,
    ) -> Result<Arc<dyn crate::component::Service>, ComponentError> {
        Err(ComponentError::new(&ctx.id, "test"))
    }
}

const ALL: &[Signal] = &[Signal::Traces, Signal::Metrics, Signal::Logs];

fn registry() -> Registry {
    let f = |kind, name, signals| {
        Arc::new(TestFactory {
            kind,
            name,
            signals,
        }) as Arc<dyn Factory>
    };
    Registry::new([
        f(Kind::Receiver, "otlp", ALL),
        f(Kind::Processor, "batch", ALL),
        f(Kind::Processor, "memory_limiter", ALL),
        f(Kind::Exporter, "debug", ALL),
        f(Kind::Exporter, "otlp", ALL),
        f(Kind::Exporter, "tracesonly", &[Signal::Traces]),
        f(Kind::Exporter, "prometheus", &[Signal::Metrics]),
        f(Kind::Extension, "health_check", &[]),
    ])
}

fn src(name: &str, text: &str) -> Source {
    Source {
        name: name.into(),
        text: text.into(),
    }
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn load1(text: &str) -> Result<Config, Vec<ConfigError>> {
    load(&[src("c.yaml", text)], &no_env, &registry())
}

const GOOD: &str = "
receivers: {otlp: {protocols: {grpc: {endpoint: localhost:4317}}}}
processors: {batch: {}}
exporters: {debug: {}, otlp/jaeger: {endpoint: jaeger:4317}}
service:
  pipelines:
    traces: {receivers: [otlp], processors: [batch], exporters: [otlp/jaeger, debug]}
    metrics/prom: {receivers: [otlp], exporters: [debug]}
";

#[test]
fn embedded_default_config_is_valid() {
    let c = load(
        &[src(DEFAULT_CONFIG_NAME, DEFAULT_CONFIG)],
        &no_env,
        &registry(),
    )
    .unwrap();
    assert_eq!(c.pipelines.len(), 3);
    assert_eq!(
        c.extensions,
        vec![ComponentId::parse("health_check").unwrap()]
    );
    assert_eq!(
        c.telemetry.metrics.listen_address().as_deref(),
        Some("localhost:8888")
    );
}

#[test]
fn loads_pipelines_in_order() {
    let c = load1(GOOD).unwrap();
    let traces = &c.pipelines[&PipelineId {
        signal: Signal::Traces,
        name: None,
    }];
    let ids: Vec<String> = traces.exporters.iter().map(|i| i.to_string()).collect();
    assert_eq!(ids, ["otlp/jaeger", "debug"]);
    assert!(c.pipelines.contains_key(&PipelineId {
        signal: Signal::Metrics,
        name: Some("prom".into())
    }));
    assert!(
        c.components
            .contains_key(&(Kind::Exporter, ComponentId::parse("otlp/jaeger").unwrap()))
    );
}

fn messages(r: Result<Config, Vec<ConfigError>>) -> Vec<String> {
    r.unwrap_err().into_iter().map(|e| e.to_string()).collect()
}

#[test]
fn unknown_field_names_file_path_and_accepted_names() {
    let m = messages(load1(
        &GOOD.replace("endpoint: jaeger:4317", "endpiont: jaeger:4317"),
    ));
    assert_eq!(m.len(), 1, "{m:?}");
    assert!(
        m[0].starts_with("c.yaml: exporters.otlp/jaeger.endpiont: unknown field"),
        "{}",
        m[0]
    );
    let m = messages(load1(&GOOD.replace("batch: {}", "batch: {sned: 1}")));
    assert!(
        m[0].starts_with("c.yaml: processors.batch.sned: unknown field `sned`, expected one of"),
        "{}",
        m[0]
    );
    assert!(m[0].contains("`send_batch_size`"), "{}", m[0]);
}

#[test]
fn unknown_types_list_what_sluice_has() {
    let m = messages(load1(&GOOD.replace(
        "processors: {batch: {}}",
        "processors: {batch: {}, bacth: {}}",
    )));
    assert_eq!(
        m,
        [
            "c.yaml: processors.bacth: unknown processor type \"bacth\"; sluice has: batch, memory_limiter"
        ]
    );
}

#[test]
fn every_error_is_reported() {
    let bad = "
receivers: {otlp: {nope: 1}}
exporters: {debug: {}}
bogus: 1
service:
  pipelines:
    traces: {receivers: [otlp, zipkin], processors: [batch], exporters: []}
    spans: {receivers: [otlp], exporters: [debug]}
";
    let m = messages(load1(bad)).join("\n");
    for want in [
        "bogus: unknown top-level section",
        "receivers.otlp.nope: unknown field",
        "service.pipelines.traces.receivers[1]: receiver \"zipkin\" is not defined in the receivers section",
        "service.pipelines.traces.processors[0]: processor \"batch\" is not defined",
        "service.pipelines.traces.exporters: a pipeline needs at least one exporter",
        "service.pipelines.spans: unknown pipeline type \"spans\"",
    ] {
        assert!(m.contains(want), "missing {want:?} in:\n{m}");
    }
}

#[test]
fn signal_support_is_checked() {
    let m = messages(load1(
        &GOOD
            .replace(
                "debug: {}, otlp/jaeger",
                "debug: {}, tracesonly: {}, otlp/jaeger",
            )
            .replace(
                "metrics/prom: {receivers: [otlp], exporters: [debug]}",
                "metrics/prom: {receivers: [otlp], exporters: [tracesonly]}",
            ),
    ));
    assert_eq!(
        m,
        [
            "c.yaml: service.pipelines.metrics/prom.exporters[0]: exporter \"tracesonly\" does not support metrics"
        ]
    );
}

#[test]
fn files_merge_deeply_and_errors_name_the_defining_file() {
    let base = src("base.yaml", GOOD);
    let over = src(
        "over.yaml",
        "exporters: {otlp/jaeger: {endpoint: other:4317}}\nprocessors: {batch: {timeout: 1s}}",
    );
    let c = load(&[base.clone(), over], &no_env, &registry()).unwrap();
    assert_eq!(
        c.pipelines.len(),
        2,
        "pipelines from the first file survive the merge"
    );
    let bad_over = src("over.yaml", "processors: {batch: {timeoutt: 1s}}");
    let m: Vec<String> = load(&[base, bad_over], &no_env, &registry())
        .unwrap_err()
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert!(
        m[0].starts_with("over.yaml: processors.batch.timeoutt"),
        "{m:?}"
    );
}

#[test]
fn env_expansion_follows_the_collector() {
    let vars: HashMap<&str, &str> = [
        ("HOST", "0.0.0.0"),
        ("PORT", "4317"),
        ("EP", "a:1"),
        ("V", "detailed"),
    ]
    .into();
    let env = |k: &str| vars.get(k).map(|v| v.to_string());
    let text = "
receivers: {otlp: {protocols: {grpc: {endpoint: \"${env:HOST}:${PORT}\"}}}}
exporters: {debug: {verbosity: \"${V}\"}, otlp: {port: \"${env:PORT}\", endpoint: \"$${literal} ${env:UNSET}x\"}}
service: {pipelines: {traces: {receivers: [otlp], exporters: [debug, otlp]}}}
";
    // The expander is what load() applies; check the values directly.
    let v = expand(text, &env);
    assert_eq!(
        v.pointer("/receivers/otlp/protocols/grpc/endpoint"),
        Some(&Value::from("0.0.0.0:4317"))
    );
    assert_eq!(
        v.pointer("/exporters/otlp/port"),
        Some(&Value::from(4317)),
        "whole-value refs are typed"
    );
    assert_eq!(
        v.pointer("/exporters/otlp/endpoint"),
        Some(&Value::from("${literal} x"))
    );
    assert_eq!(
        v.pointer("/exporters/debug/verbosity"),
        Some(&Value::from("detailed"))
    );
    load(&[src("c.yaml", text)], &env, &registry()).unwrap();
}

/// The expanded document, as load() makes it before merging.
fn expand(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Value {
    let mut expander = Expander {
        env,
        file: "c.yaml",
        references: Vec::new(),
        errors: Vec::new(),
    };
    let v = expander.value(split_delimited_keys(parse_yaml(text).unwrap()), "");
    assert!(expander.errors.is_empty(), "{:?}", expander.errors);
    v
}

const JAEGER: &str = "
receivers: {otlp: {protocols: {grpc: {endpoint: localhost:4317}}}}
exporters: {otlp/jaeger: {endpoint: \"${env:JAEGER_ENDPOINT}\"}}
service: {pipelines: {traces: {receivers: [otlp], exporters: [otlp/jaeger]}}}
";

/// A factory whose `endpoint` must not be empty, as the otlp exporter's.
struct EndpointRequired;

impl Factory for EndpointRequired {
    fn kind(&self) -> Kind {
        Kind::Exporter
    }
    fn type_name(&self) -> &'static str {
        "otlp"
    }
    fn signals(&self) -> &'static [Signal] {
        ALL
    }
    fn description(&self) -> &'static str {
        "test"
    }
    fn parse_config(&self, config: &Value) -> Result<ParsedConfig, ConfigError> {
        let c: TestConfig = parse_config(config)?;
        match c.endpoint.as_deref() {
            Some("") | None => Err(ConfigError::new("endpoint", "invalid endpoint \"\"")),
            Some(_) => Ok(Arc::new(c)),
        }
    }
}

fn registry_with_required_endpoint() -> Registry {
    let mut factories: Vec<Arc<dyn Factory>> = registry().list().cloned().collect();
    factories.push(Arc::new(EndpointRequired));
    Registry::new(factories)
}

#[test]
fn an_error_about_an_expanded_value_names_the_variable() {
    let reg = registry_with_required_endpoint();
    let m = messages(load(&[src("gw.yaml", JAEGER)], &no_env, &reg));
    assert_eq!(
        m,
        vec![
            "gw.yaml: exporters.otlp/jaeger.endpoint: invalid endpoint \"\" \
             (from ${env:JAEGER_ENDPOINT}, which is not set)"
        ]
    );
    let empty = |k: &str| (k == "JAEGER_ENDPOINT").then(String::new);
    let m = messages(load(&[src("gw.yaml", JAEGER)], &empty, &reg));
    assert!(
        m[0].ends_with("(from ${env:JAEGER_ENDPOINT}, which is set to an empty string)"),
        "{m:?}"
    );
    // An error elsewhere does not mention it.
    let other = JAEGER.replace("{otlp: {protocols:", "{otlp: {bogus: 1, protocols:");
    let set = |k: &str| (k == "JAEGER_ENDPOINT").then(|| "jaeger:4317".to_string());
    let m = messages(load(&[src("gw.yaml", &other)], &set, &reg));
    assert_eq!(m.len(), 1, "{m:?}");
    assert!(!m[0].contains("JAEGER"), "{m:?}");
}

#[test]
fn env_defaults_apply_only_to_unset_variables() {
    let vars: HashMap<&str, &str> = [("EMPTY", ""), ("PORT", "4318")].into();
    let env = |k: &str| vars.get(k).map(|v| v.to_string());
    let v = expand(
        "a: ${env:UNSET:-jaeger:4317}
b: ${env:PORT:-4317}
c: ${env:UNSET:-4317}
d: \"${env:EMPTY:-x}\"
e: \"http://${env:UNSET:-localhost}:${env:PORT:-1}/v1\"
f: \"${env:UNSET:-}\"
",
        &env,
    );
    assert_eq!(v["a"], Value::from("jaeger:4317"));
    assert_eq!(v["b"], Value::from(4318), "set: the variable, typed");
    assert_eq!(
        v["c"],
        Value::from(4317),
        "the default is typed like a value"
    );
    assert_eq!(
        v["d"],
        Value::from(""),
        "set but empty: no default (the Collector's rule)"
    );
    assert_eq!(v["e"], Value::from("http://localhost:4318/v1"));
    assert_eq!(v["f"], Value::from(""));
}

/// A setting accepted without effect loads, with a warning naming the file and the field;
/// `service.telemetry`'s too. Warnings come before those about unset variables.
#[test]
fn settings_without_effect_are_warned_about_and_the_config_still_loads() {
    let text = GOOD.replace(
        "{grpc: {endpoint: localhost:4317}}",
        "{grpc: {endpoint: localhost:4317, include_metadata: \"${env:NOPE}true\"}}",
    ) + "  telemetry: {logs: {disable_caller: true, development: false}, resource: {a: b}}\n";
    let c = load(&[src("c.yaml", &text)], &no_env, &registry()).unwrap();
    let w: Vec<String> = c.warnings.iter().map(ToString::to_string).collect();
    let says = "accepted so Collector configs load, but has no effect in sluice";
    assert_eq!(
        w,
        vec![
            format!(
                "c.yaml: receivers.otlp.protocols.grpc.include_metadata: {says}: client \
                 metadata is not passed on (from ${{env:NOPE}}, which is not set)"
            ),
            format!(
                "c.yaml: service.telemetry.logs.disable_caller: {says}: sluice's log lines \
                 carry no caller"
            ),
            "c.yaml: service.telemetry.resource: accepted so Collector configs load, but has \
             no effect in sluice without a periodic OTLP reader \
             (service.telemetry.metrics.readers): the Prometheus endpoint shows no resource \
             attributes"
                .to_string(),
            "c.yaml: receivers.otlp.protocols.grpc.include_metadata: ${env:NOPE} is not set, so \
             it expands to an empty string (write ${env:NOPE:-default} for a default)"
                .to_string(),
        ]
    );
    assert!(load1(GOOD).unwrap().warnings.is_empty());
}

#[test]
fn unset_variables_are_warned_about_and_the_config_still_loads() {
    let text = GOOD.replace("jaeger:4317", "\"${env:NOPE}jaeger:4317\"");
    let c = load(&[src("c.yaml", &text)], &no_env, &registry()).unwrap();
    let w: Vec<String> = c.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        w,
        vec![
            "c.yaml: exporters.otlp/jaeger.endpoint: ${env:NOPE} is not set, so it expands to an \
             empty string (write ${env:NOPE:-default} for a default)"
        ]
    );
    // With a default, or overridden by a later file: nothing to warn about.
    let text = GOOD.replace("jaeger:4317", "\"${env:NOPE:-jaeger:4317}\"");
    assert!(load1(&text).unwrap().warnings.is_empty());
    let text = GOOD.replace("jaeger:4317", "\"${env:NOPE}\"");
    let over = src("over.yaml", "exporters: {otlp/jaeger: {endpoint: j:1}}");
    let c = load(&[src("c.yaml", &text), over], &no_env, &registry()).unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn other_config_sources_and_bad_names_are_refused() {
    for (value, want) in [
        ("${file:/etc/x}", "config source \"file\" is not supported"),
        ("${http://h/x}", "config source \"http\" is not supported"),
        ("${VAR:-x}", "config source \"VAR\" is not supported"),
        (
            "${env:1X}",
            "\"1X\" is not a valid environment variable name",
        ),
    ] {
        let text = GOOD.replace("jaeger:4317", &format!("\"{value}\""));
        let m = messages(load1(&text));
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(
            m[0].starts_with("c.yaml: exporters.otlp/jaeger.endpoint: ") && m[0].contains(want),
            "{value}: {m:?}"
        );
    }
    // Not a reference at all: kept as written.
    let v = expand("a: \"${not a ref}\"", &no_env);
    assert_eq!(v["a"], Value::from("${not a ref}"));
}

#[test]
fn double_colon_keys_are_nested_paths() {
    let base = src("c.yaml", GOOD);
    let set = src(
        "--set",
        "processors::batch::timeout: 2s\nexporters::otlp/jaeger::endpoint: other:4317",
    );
    let c = load(&[base, set], &no_env, &registry()).unwrap();
    let batch = c
        .components
        .get(&(Kind::Processor, ComponentId::parse("batch").unwrap()))
        .and_then(|p| p.downcast_ref::<TestConfig>())
        .unwrap();
    assert_eq!(batch.timeout.as_deref(), Some("2s"));
    let v = expand("a::b: 1\na: {c: 2}\nl: [{x::y: 3}]", &no_env);
    assert_eq!(
        v,
        serde_json::json!({"a": {"b": 1, "c": 2}, "l": [{"x": {"y": 3}}]})
    );
}

#[test]
fn invalid_yaml_names_the_file() {
    let m = messages(load(
        &[src("broken.yaml", "receivers: [unclosed")],
        &no_env,
        &registry(),
    ));
    assert!(m[0].starts_with("broken.yaml: invalid YAML"), "{m:?}");
}

#[test]
fn telemetry_readers_form_is_understood() {
    let t = "
receivers: {otlp: {}}
exporters: {debug: {}}
service:
  pipelines: {logs: {receivers: [otlp], exporters: [debug]}}
  telemetry: {metrics: {readers: [{pull: {exporter: {prometheus: {host: 0.0.0.0, port: 9999}}}}]}}
";
    let c = load1(t).unwrap();
    assert_eq!(
        c.telemetry.metrics.listen_address().as_deref(),
        Some("0.0.0.0:9999")
    );
    let off = load1(&t.replace(
        "readers: [{pull: {exporter: {prometheus: {host: 0.0.0.0, port: 9999}}}}]",
        "level: none",
    ))
    .unwrap();
    assert_eq!(off.telemetry.metrics.listen_address(), None);
}

#[test]
fn yaml_booleans_are_yaml_1_2_like_the_collector() {
    let v = parse_yaml("a: y\nb: on\nc: true\nd: [x, y]").unwrap();
    assert_eq!(
        v,
        serde_json::json!({"a": "y", "b": "on", "c": true, "d": ["x", "y"]})
    );
}

#[test]
fn an_unknown_type_is_one_error_not_a_cascade() {
    let m = messages(load1(
        &GOOD
            .replace("processors: {batch: {}}", "processors: {bacth: {}}")
            .replace("processors: [batch]", "processors: [bacth]"),
    ));
    assert_eq!(m.len(), 1, "{m:?}");
}

#[test]
fn connectors_section_is_read_and_its_components_checked_once() {
    // An empty (or null) section is fine.
    for empty in ["connectors: {}\n", "connectors:\n"] {
        load1(&format!("{GOOD}{empty}")).unwrap();
    }
    // A connector sluice does not have is one error, not also "not defined" errors from the
    // pipelines that use it as exporter and receiver.
    let m = messages(load1(
        "
receivers: {otlp: {}}
exporters: {debug: {}}
connectors: {forward: {}}
service:
  pipelines:
    traces: {receivers: [otlp], exporters: [forward]}
    traces/out: {receivers: [forward], exporters: [debug]}
",
    ));
    assert_eq!(m.len(), 1, "{m:?}");
    assert!(
        m[0].contains("connectors.forward: unknown connector type \"forward\""),
        "{m:?}"
    );
}

/// `service.telemetry.logs.encoding`: the Collector's `console` and `json`; anything else is
/// refused by name.
#[test]
fn log_encoding_is_console_or_json() {
    let with = |encoding: &str| {
        load1(&(GOOD.to_string() + &format!("  telemetry: {{logs: {{encoding: {encoding}}}}}\n")))
    };
    assert_eq!(
        with("json").unwrap().telemetry.logs.encoding,
        super::LogEncoding::Json
    );
    assert_eq!(
        with("console").unwrap().telemetry.logs.encoding,
        super::LogEncoding::Console
    );
    assert_eq!(
        load1(GOOD).unwrap().telemetry.logs.encoding,
        super::LogEncoding::Console
    );
    let e: Vec<String> = with("xml")
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    let e = e.join("\n");
    assert!(e.contains("service.telemetry.logs.encoding"), "{e}");
}

/// `service.telemetry.metrics.readers`: a `periodic` OTLP reader is read with the schema's
/// defaults (60 s, 30 s) and its exporter's protocol; with readers and no Prometheus pull,
/// no /metrics endpoint (as the Collector); what sluice cannot push is refused by path.
#[test]
fn periodic_readers_are_read_and_checked() {
    let with = |readers: &str| {
        load1(&(GOOD.to_string() + &format!("  telemetry: {{metrics: {{readers: {readers}}}}}\n")))
    };
    let c = with("[{periodic: {exporter: {otlp: {protocol: grpc, endpoint: \"http://c:4317\"}}}}]")
        .unwrap();
    let readers = c.telemetry.metrics.periodic_readers().unwrap();
    assert_eq!(readers.len(), 1);
    assert_eq!(readers[0].interval, std::time::Duration::from_secs(60));
    assert_eq!(readers[0].timeout, std::time::Duration::from_secs(30));
    assert_eq!(readers[0].exporter.protocol, "grpc");
    assert_eq!(c.telemetry.metrics.listen_address(), None, "no pull reader");
    let c = with(
        "[{pull: {exporter: {prometheus: {host: 0.0.0.0, port: 9999}}}}, \
         {periodic: {interval: 500, exporter: {otlp_http: {endpoint: \"http://c:4318/v1/metrics\", \
         headers: [{name: x-tenant, value: a}]}}}}]",
    )
    .unwrap();
    assert_eq!(
        c.telemetry.metrics.listen_address().as_deref(),
        Some("0.0.0.0:9999")
    );
    let r = &c.telemetry.metrics.periodic_readers().unwrap()[0];
    assert_eq!(r.interval, std::time::Duration::from_millis(500));
    assert_eq!(r.exporter.protocol, "http/protobuf");
    assert_eq!(r.exporter.headers, vec![("x-tenant".into(), "a".into())]);
    for (bad, path) in [
        ("[{periodic: {exporter: {console: {}}}}]", "readers[0]"),
        (
            "[{periodic: {exporter: {otlp: {protocol: thrift, endpoint: x}}}}]",
            "readers[0].periodic.exporter.otlp.protocol",
        ),
        (
            "[{periodic: {exporter: {otlp: {endpoint: x, temporality_preference: delta}}}}]",
            "temporality_preference",
        ),
        (
            "[{periodic: {exporter: {}}}]",
            "readers[0].periodic.exporter",
        ),
    ] {
        let e: Vec<String> = with(bad)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(e.join("\n").contains(path), "{bad}: {e:?}");
    }
}
