//! The `sluice` binary's command line: validate, components, and config errors as users see them.

use std::path::PathBuf;
use std::process::Command;

fn sluice() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
}

/// A directory of this test process's own under Cargo's scratch directory for integration
/// tests (`target/tmp`), not the system's `/tmp`: what the tests write (configs, captures,
/// file exporter output) stays with the build and goes with `cargo clean`.
fn scratch(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{name}-{}", std::process::id()))
}

fn write(name: &str, text: &str) -> PathBuf {
    let dir = scratch("configs");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// `sluice validate --config PATH`.
fn validate(config: &std::path::Path) -> std::process::Output {
    sluice()
        .args(["validate", "--config"])
        .arg(config)
        .output()
        .unwrap()
}

#[test]
fn components_lists_every_kind() {
    let out = sluice().arg("components").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for want in [
        "receivers:",
        "processors:",
        "exporters:",
        "extensions:",
        "health_check",
    ] {
        assert!(text.contains(want), "{want} missing from:\n{text}");
    }
}

#[test]
fn validate_names_file_path_and_accepted_fields() {
    let bad = write(
        "bad.yaml",
        "extensions:\n  health_check:\n    endpointt: localhost:1\nservice:\n  extensions: [health_check]\n",
    );
    let out = validate(&bad);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml: extensions.health_check.endpointt: unknown field `endpointt`, expected one of `endpoint`, `path`"),
        "{err}"
    );
    assert!(
        err.contains("service.pipelines: at least one pipeline is required"),
        "{err}"
    );
}

#[test]
fn validate_names_a_missing_file() {
    let out = sluice()
        .args(["validate", "--config", "/nonexistent/sluice.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("cannot read config file /nonexistent/sluice.yaml")
    );
}

#[test]
fn run_refuses_a_bad_config_with_the_same_message() {
    let bad = write("bad-run.yaml", "receivers: {nope: {}}\n");
    let out = sluice().arg("--config").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("receivers.nope: unknown receiver type \"nope\"")
    );
}
#[test]
fn validate_accepts_the_embedded_default() {
    let out = sluice().arg("validate").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration is valid"));
}

#[test]
fn the_shipped_gateway_config_validates() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/k8s/config/gateway.yaml");
    let out = sluice()
        .args(["validate", "--config", path])
        .env("JAEGER_ENDPOINT", "jaeger-collector.tracing:4317")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // The exporter endpoint comes from the pod's environment, with a default: the README's
    // `sluice validate --config k8s/config/gateway.yaml` passes as shipped.
    let out = sluice()
        .args(["validate", "--config", path])
        .env_remove("JAEGER_ENDPOINT")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("warning"), "{err}");
    // Set but empty is not unset (no default, as in the Collector): the error names it.
    let out = sluice()
        .args(["validate", "--config", path])
        .env("JAEGER_ENDPOINT", "")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "exporters.otlp/jaeger.endpoint: invalid endpoint \"\": expected host:port, \
             http://host:port or https://host:port (from \
             ${env:JAEGER_ENDPOINT:-jaeger-collector.tracing:4317}, which is set to an empty \
             string)"
        ),
        "{err}"
    );
}

/// `sluice validate` lists the error of every bad OTTL statement and condition in one run.
#[test]
fn validate_reports_every_bad_ottl_statement_at_once() {
    let bad = write(
        "four-bad.yaml",
        r#"receivers:
  otlp: {protocols: {grpc: {endpoint: "127.0.0.1:4317"}}}
processors:
  transform:
    trace_statements:
      - delete_key(span.attributes, "ok")
      - set(span.attributes["a"], Sha256(span.name))
      - delete_key(span.attributes, "also ok")
      - set(span.nme, "x")
      - keep_keys(span.attributes, "not a list")
      - set(span.attributes["b"], Concat(["x"]
  filter:
    traces:
      span:
        - 'IsMatch(name, "(")'
        - 'name == "fine"'
        - 'nmae == "x"'
exporters:
  debug: {}
service:
  pipelines:
    traces: {receivers: [otlp], processors: [transform, filter], exporters: [debug]}
"#,
    );
    let out = validate(&bad);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid configuration (6 errors):"), "{err}");
    for path in [
        "processors.transform.trace_statements[1]: OTTL error",
        "processors.transform.trace_statements[3]: OTTL error",
        "processors.transform.trace_statements[4]: OTTL error",
        "processors.transform.trace_statements[5]: OTTL error",
        "processors.filter.traces.span[0]: OTTL error",
        "processors.filter.traces.span[2]: OTTL error",
    ] {
        assert!(err.contains(path), "{path} missing from:\n{err}");
    }
}

/// The Collector's config sources: `yaml:`, `env:`, files, and `--set` over them.
#[test]
fn config_sources_are_the_collectors() {
    let inline = "{receivers: {otlp: {protocols: {grpc: {endpoint: '127.0.0.1:4317'}}}}, \
                  exporters: {debug: {}}, \
                  service: {pipelines: {traces: {receivers: [otlp], exporters: [debug]}}}}";
    let valid = |out: std::process::Output| {
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{err}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("configuration is valid: 1 pipeline")
        );
    };
    valid(
        sluice()
            .args(["validate", "--config", &format!("yaml:{inline}")])
            .output()
            .unwrap(),
    );
    valid(
        sluice()
            .args(["validate", "--config", "env:SLUICE_TEST_CONFIG"])
            .env("SLUICE_TEST_CONFIG", inline)
            .output()
            .unwrap(),
    );
    // --set applies after every --config, with the Collector's key syntax; its errors name it.
    let base = write("set-base.yaml", &format!("{inline}\n"));
    let out = sluice()
        .arg("validate")
        .arg("--config")
        .arg(&base)
        .args(["--set", "exporters.debug.verbosity=loud"])
        .args(["--config", "yaml:processors::batch::timeout: 2s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--set exporters.debug.verbosity=loud: exporters.debug.verbosity: unknown variant `loud`"),
        "{err}"
    );
    valid(
        sluice()
            .arg("validate")
            .arg("--config")
            .arg(&base)
            .args(["--set", "exporters.debug.verbosity=detailed"])
            .output()
            .unwrap(),
    );
    for (args, want) in [
        (
            vec!["validate", "--config", "http://config-server/x.yaml"],
            "config source \"http\" is not supported",
        ),
        (
            vec!["validate", "--config", "env:SLUICE_TEST_NOT_SET"],
            "environment variable SLUICE_TEST_NOT_SET is not set",
        ),
        (vec!["validate", "--set", "exporters.debug"], "missing `=`"),
        (
            vec!["--config", "x.yaml", "loadgen", "sink"],
            "--config and --set apply to running, `sluice validate` and `sluice replay` only",
        ),
    ] {
        let out = sluice()
            .args(&args)
            .env_remove("SLUICE_TEST_NOT_SET")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // loadgen's subcommands do not take --config at all.
    let out = sluice()
        .args(["loadgen", "traces", "--config", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// An unset `${env:VAR}` is valid (it expands to nothing, as in the Collector) but is warned
/// about, naming the variable and the place.
#[test]
fn validate_warns_about_unset_variables() {
    let cfg = write(
        "unset.yaml",
        "receivers: {otlp: {protocols: {grpc: {endpoint: '127.0.0.1:4317'}}}}\n\
         processors: {batch: {timeout: '2${env:SLUICE_TEST_UNSET_SUFFIX}s'}}\n\
         exporters: {debug: {}}\n\
         service: {pipelines: {traces: {receivers: [otlp], processors: [batch], exporters: [debug]}}}\n",
    );
    let out = sluice()
        .args(["validate", "--config"])
        .arg(&cfg)
        .env_remove("SLUICE_TEST_UNSET_SUFFIX")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.starts_with("warning: ")
            && err.contains(
                "unset.yaml: processors.batch.timeout: ${env:SLUICE_TEST_UNSET_SUFFIX} is not \
                 set, so it expands to an empty string"
            ),
        "{err}"
    );
}

/// A Collector setting sluice accepts but does not act on is a warning naming the file and
/// the field (the config is valid); one it does act on, or left at its zero, is not.
#[test]
fn validate_warns_about_settings_without_effect() {
    let cfg = write(
        "no-effect.yaml",
        "receivers:\n\
         \x20 otlp:\n\
         \x20   protocols:\n\
         \x20     grpc:\n\
         \x20       endpoint: 127.0.0.1:4317\n\
         \x20       include_metadata: true\n\
         \x20       keepalive:\n\
         \x20         server_parameters: {max_connection_age: 5m, max_connection_idle: 1m}\n\
         \x20         enforcement_policy: {min_time: 10s}\n\
         \x20     http: {endpoint: 127.0.0.1:4318, include_metadata: false}\n\
         exporters: {debug: {sampling_initial: 5}}\n\
         service: {pipelines: {traces: {receivers: [otlp], exporters: [debug]}}}\n",
    );
    let out = validate(&cfg);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let says = "accepted so Collector configs load, but has no effect in sluice";
    let warnings: Vec<&str> = err.lines().filter(|l| l.starts_with("warning: ")).collect();
    for field in [
        "receivers.otlp.protocols.grpc.keepalive.server_parameters.max_connection_idle",
        "receivers.otlp.protocols.grpc.keepalive.enforcement_policy",
        "exporters.debug.sampling_initial",
    ] {
        assert!(
            warnings
                .iter()
                .any(|w| w.contains(&format!("no-effect.yaml: {field}: {says}: "))),
            "no warning about {field}:\n{err}"
        );
    }
    assert_eq!(warnings.len(), 3, "{err}");
}

/// Server endpoints are checked by `validate`, not left to fail at start.
#[test]
fn validate_checks_listen_endpoints() {
    let cfg = write(
        "endpoints.yaml",
        "receivers: {otlp: {protocols: {grpc: {endpoint: '${env:SLUICE_TEST_NOPE}'}, http: {endpoint: 'localhost:99999'}}}}\n\
         exporters: {debug: {}}\n\
         extensions: {health_check: {endpoint: 'localhost'}}\n\
         service:\n  extensions: [health_check]\n  pipelines: {traces: {receivers: [otlp], exporters: [debug]}}\n\
         \x20 telemetry: {metrics: {address: ''}}\n",
    );
    let out = sluice()
        .args(["validate", "--config"])
        .arg(&cfg)
        .env_remove("SLUICE_TEST_NOPE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "receivers.otlp.protocols.grpc.endpoint: the endpoint is empty; expected host:port, e.g. localhost:4317, or 0.0.0.0:4317 for every interface (from ${env:SLUICE_TEST_NOPE}, which is not set)",
        "extensions.health_check.endpoint: invalid endpoint \"localhost\": no port",
        "service.telemetry.metrics.address: the endpoint is empty",
    ] {
        assert!(err.contains(want), "{want} missing from:\n{err}");
    }
}

#[test]
fn the_shipped_agent_config_validates() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/k8s/config/agent.yaml");
    // K8S_NODE_NAME and K8S_POD_NAME come from the DaemonSet's downward API.
    let out = sluice()
        .args(["validate", "--config", path])
        .env("K8S_NODE_NAME", "ip-10-0-1-17.ec2.internal")
        .env("K8S_POD_NAME", "otel-agent-collector-x7k2p")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // Without the node's name there is no kubelet to scrape: validate says where.
    let out = sluice()
        .args(["validate", "--config", path])
        .env_remove("K8S_NODE_NAME")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("receivers.kubeletstats.endpoint"), "{err}");
}

#[test]
fn bad_ottl_is_refused_with_the_statement_and_column() {
    let bad = write(
        "bad-ottl.yaml",
        r#"receivers:
  otlp: {protocols: {grpc: {endpoint: "127.0.0.1:4317"}}}
processors:
  filter/noise:
    traces:
      span:
        - 'name == "x"'
        - 'IsMatch(attributes["url.path"], "^/(healthz") or kind == SPAN_KIND_CLIENT'
  transform:
    trace_statements:
      - context: span
        statements:
          - 'set(attributes["peer.service"], Sha256(name))'
exporters:
  debug: {}
service:
  pipelines:
    traces: {receivers: [otlp], processors: [filter/noise, transform], exporters: [debug]}
"#,
    );
    let out = validate(&bad);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("processors.filter/noise.traces.span[1]: OTTL error at column 33: the pattern supplied to IsMatch is not a valid RE2 regexp: unclosed group"),
        "{err}"
    );
    assert!(
        err.contains(
            r#"IsMatch(attributes["url.path"], "^/(healthz") or kind == SPAN_KIND_CLIENT"#
        ),
        "{err}"
    );
    assert!(
        err.contains("processors.transform.trace_statements[0].statements[0]: OTTL error at column 33: `Sha256` is not a converter"),
        "{err}"
    );
    assert!(err.contains("supported converters: Concat,"), "{err}");
}

/// A port that was free a moment ago and not handed out before in this test binary (the kernel
/// may give the same ephemeral port to two binds in a row once the first is closed).
fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut seen = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !seen.contains(&port) {
            seen.push(port);
            return port;
        }
    }
}

/// Kills the child on drop so a failing assertion never leaves a sluice running.
struct Running(std::process::Child);
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits (at most 20 s) until sluice accepts connections on `port`: its OTLP/gRPC port is
/// bound once everything downstream started (receivers start after exporters).
fn wait_until_listening(port: u16) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "sluice did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn loadgen_counts_agree_with_what_sluice_received() {
    let (grpc, http, telemetry) = (free_port(), free_port(), free_port());
    let config = write(
        "loadgen.yaml",
        &format!(
            "receivers: {{otlp: {{protocols: {{grpc: {{endpoint: 127.0.0.1:{grpc}}}, http: {{endpoint: 127.0.0.1:{http}}}}}}}}}\n\
             exporters: {{nop: {{}}}}\n\
             service:\n  pipelines:\n    traces: {{receivers: [otlp], exporters: [nop]}}\n    logs: {{receivers: [otlp], exporters: [nop]}}\n\
             \x20 telemetry: {{metrics: {{address: 127.0.0.1:{telemetry}}}}}\n"
        ),
    );
    let _sluice = Running(
        sluice()
            .arg("--config")
            .arg(&config)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until_listening(grpc);
    let out = sluice()
        .args([
            "loadgen",
            "traces",
            "--endpoint",
            &format!("127.0.0.1:{grpc}"),
            "--count",
            "3000",
        ])
        .args(["--batch", "100", "--quiet"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("accepted 3000 spans; refused 0"), "{text}");
    let out = sluice()
        .args([
            "loadgen",
            "logs",
            "--protocol",
            "http",
            "--endpoint",
            &format!("127.0.0.1:{http}"),
        ])
        .args(["--count", "500", "--batch", "50", "--quiet"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("accepted 500 log records"));
    let metrics = scrape(telemetry);
    assert!(
        metrics.contains(
            "otelcol_receiver_accepted_spans_total{receiver=\"otlp\",transport=\"grpc\"} 3000\n"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("otelcol_exporter_sent_log_records_total{exporter=\"nop\"} 500\n"),
        "{metrics}"
    );
}

/// Sends `traces` traces of `spans_per_trace` spans (random trace ids) over OTLP/gRPC, 1000
/// traces per request.
fn send_traces(port: u16, traces: u64, spans_per_trace: u64) {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{port}"))
            .await
            .unwrap();
        let mut state = 0x1234_5678_u64;
        let mut next = move || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        for _ in 0..traces / 1000 {
            let mut spans = Vec::new();
            for _ in 0..1000 {
                let mut trace_id = next().to_le_bytes().to_vec();
                trace_id.extend_from_slice(&next().to_le_bytes());
                for k in 0..spans_per_trace {
                    spans.push(Span {
                        trace_id: trace_id.clone(),
                        span_id: next().to_le_bytes().to_vec(),
                        name: format!("op-{k}"),
                        kind: 2,
                        start_time_unix_nano: now,
                        end_time_unix_nano: now + 1_000_000 * (k + 1),
                        ..Default::default()
                    });
                }
            }
            let req = ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![KeyValue {
                            key: "service.name".into(),
                            value: Some(AnyValue {
                                value: Some(any_value::Value::StringValue("checkout".into())),
                            }),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        spans,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            };
            client.export(req).await.unwrap();
        }
    });
}

/// A stopped child's exit status after SIGTERM, waiting at most `secs`.
fn terminate(child: &mut std::process::Child, secs: u64) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sluice did not exit within {secs}s of SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// SIGTERM with 10,000 traces buffered in tail_sampling (decision_wait 60 s): every trace is
/// decided and exported before the process exits, and the spanmetrics connector ahead of tail
/// sampling flushes its counts of every span through the metrics pipeline on the way out.
#[test]
fn sigterm_decides_and_exports_every_buffered_trace_and_flushes_span_metrics() {
    let (grpc, telemetry) = (free_port(), free_port());
    let dir = scratch("sigterm");
    std::fs::create_dir_all(&dir).unwrap();
    let traces_out = dir.join("traces.jsonl");
    let metrics_out = dir.join("metrics.jsonl");
    let config = write(
        "sigterm.yaml",
        &format!(
            "receivers: {{otlp: {{protocols: {{grpc: {{endpoint: 127.0.0.1:{grpc}}}}}}}}}\n\
             processors:\n  tail_sampling:\n    decision_wait: 60s\n    num_traces: 20000\n    policies: [{{name: all, type: always_sample}}]\n\
             connectors: {{spanmetrics: {{metrics_flush_interval: 1h}}}}\n\
             exporters:\n  file/traces: {{path: {}}}\n  file/metrics: {{path: {}}}\n\
             service:\n  pipelines:\n\
             \x20   traces/spanmetrics: {{receivers: [otlp], exporters: [spanmetrics]}}\n\
             \x20   traces: {{receivers: [otlp], processors: [tail_sampling], exporters: [file/traces]}}\n\
             \x20   metrics: {{receivers: [spanmetrics], exporters: [file/metrics]}}\n\
             \x20 telemetry: {{metrics: {{address: 127.0.0.1:{telemetry}}}}}\n",
            traces_out.display(),
            metrics_out.display()
        ),
    );
    let mut running = Running(
        sluice()
            .arg("--config")
            .arg(&config)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_until_listening(grpc);
    send_traces(grpc, 10_000, 8);
    let metrics = scrape(telemetry);
    let on_memory = metric_value(
        &metrics,
        "otelcol_processor_tail_sampling_sampling_traces_on_memory{processor=\"tail_sampling\"}",
    );
    assert_eq!(on_memory, Some(10_000.0), "{metrics}");
    assert_eq!(
        std::fs::metadata(&traces_out).map(|m| m.len()).unwrap_or(0),
        0,
        "nothing exported before the decision wait"
    );

    let status = terminate(&mut running.0, 60);
    let mut stderr = String::new();
    use std::io::Read;
    let _ = running.0.stderr.take().unwrap().read_to_string(&mut stderr);
    assert!(status.success(), "exit {status:?}\n{stderr}");
    assert!(
        stderr.contains("decided every buffered trace at shutdown"),
        "{stderr}"
    );

    let mut spans = 0usize;
    let mut traces = std::collections::HashSet::new();
    for line in std::fs::read_to_string(&traces_out).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for rs in v["resourceSpans"].as_array().unwrap() {
            for ss in rs["scopeSpans"].as_array().unwrap() {
                for s in ss["spans"].as_array().unwrap() {
                    spans += 1;
                    traces.insert(s["traceId"].as_str().unwrap().to_string());
                }
            }
        }
    }
    assert_eq!((spans, traces.len()), (80_000, 10_000));
    let mut calls = 0i64;
    for line in std::fs::read_to_string(&metrics_out).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for rm in v["resourceMetrics"].as_array().unwrap() {
            for sm in rm["scopeMetrics"].as_array().unwrap() {
                for m in sm["metrics"].as_array().unwrap() {
                    if m["name"] == "traces.span.metrics.calls" {
                        for dp in m["sum"]["dataPoints"].as_array().unwrap() {
                            let n = &dp["asInt"];
                            calls += n
                                .as_str()
                                .map(|s| s.parse().unwrap())
                                .or(n.as_i64())
                                .unwrap();
                        }
                    }
                }
            }
        }
    }
    assert_eq!(calls, 80_000, "spanmetrics counted every span received");
}

/// The embedded default config on free ports (`--set` over it).
fn default_config_on(grpc: u16) -> Command {
    let mut cmd = sluice();
    for (key, port) in [
        ("receivers.otlp.protocols.grpc.endpoint", grpc),
        ("receivers.otlp.protocols.http.endpoint", free_port()),
        ("exporters.prometheus.endpoint", free_port()),
        ("extensions.health_check.endpoint", free_port()),
        ("service.telemetry.metrics.address", free_port()),
    ] {
        cmd.arg("--set").arg(format!("{key}=127.0.0.1:{port}"));
    }
    cmd
}

/// What a person reading the log sees: which config runs, addresses as addresses, no colour
/// codes when stderr is not a terminal, and a failure said once.
#[test]
fn logs_say_which_config_runs_in_plain_text() {
    let grpc = free_port();
    let mut child = Running(
        default_config_on(grpc)
            .args(["--set", "receivers.otlp.protocols.http.write_timeout=30s"])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_until_listening(grpc);
    assert!(terminate(&mut child.0, 30).success());
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut log).unwrap();
    assert!(
        log.contains("running the embedded default config (no --config given)"),
        "{log}"
    );
    assert!(!log.contains('\x1b'), "colour codes in a piped log:\n{log}");
    // A setting without effect is warned about at start, as `validate` does.
    assert!(
        log.contains(
            "receivers.otlp.protocols.http.write_timeout: accepted so Collector configs load, \
             but has no effect in sluice: answers are never cut off"
        ),
        "{log}"
    );
    assert!(!log.contains("Some("), "{log}");
    assert!(
        log.contains("health check listening extension=health_check address=127.0.0.1:"),
        "{log}"
    );

    // A port in use: one error line saying so, exit 1.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = default_config_on(port).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("Address already in use").count(), 1, "{err}");
    assert!(
        err.contains(&format!(
            "otlp: cannot listen on 127.0.0.1:{port}: Address already in use"
        )),
        "{err}"
    );
}

/// `service.telemetry.logs.encoding: json`: every log line is one JSON object with the level,
/// the message and the event's fields at the top level (what log collectors parse); the
/// failure to start is among them.
#[test]
fn json_logs_are_one_object_per_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = write(
        "json-logs.yaml",
        &format!(
            "receivers: {{otlp: {{protocols: {{grpc: {{endpoint: 127.0.0.1:{port}}}}}}}}}\n\
             exporters: {{nop: {{}}}}\n\
             service:\n  pipelines:\n    traces: {{receivers: [otlp], exporters: [nop]}}\n\
             \x20 telemetry: {{logs: {{encoding: json}}, metrics: {{level: none}}}}\n"
        ),
    );
    let out = sluice().arg("--config").arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> = err
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(!lines.is_empty(), "no log lines");
    for l in &lines {
        assert!(l["level"].is_string() && l["message"].is_string(), "{l}");
        assert!(l["timestamp"].is_string(), "{l}");
    }
    assert!(
        lines.iter().any(|l| l["level"] == "ERROR"
            && l["message"]
                .as_str()
                .is_some_and(|m| m.contains("Address already in use"))),
        "{err}"
    );
}

/// `sluice replay` reads its config as running does: `--config` sources (before or after the
/// subcommand) then `--set`; `--compare` takes sources too, without the `--set`.
#[test]
fn replay_takes_config_sources_and_set() {
    let dir = scratch("replay");
    std::fs::create_dir_all(&dir).unwrap();
    let capture = dir.join("capture.bin");
    let out = sluice()
        .args([
            "loadgen",
            "traces",
            "--count",
            "200",
            "--batch",
            "50",
            "--quiet",
            "--capture",
        ])
        .arg(&capture)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (unset, set) = (dir.join("unset.jsonl"), dir.join("set.jsonl"));
    let config = |path: &std::path::Path| {
        format!(
            "receivers: {{otlp: {{protocols: {{grpc: {{}}}}}}}}\n\
             exporters: {{file: {{path: {}}}}}\n\
             service: {{pipelines: {{traces: {{receivers: [otlp], exporters: [file]}}}}}}\n",
            path.display()
        )
    };
    let base = write("replay-base.yaml", &config(&unset));

    // --set changes the replayed config: the file exporter writes where --set says.
    let out = sluice()
        .arg("--config")
        .arg(&base)
        .args(["replay", "--quiet", "--set"])
        .arg(format!("exporters.file.path={}", set.display()))
        .arg(&capture)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = std::fs::read_to_string(&set).unwrap();
    assert!(!written.is_empty(), "the file exporter wrote nothing");
    assert!(!unset.exists(), "the path before --set was used");

    // --compare env:VAR: a second config from a variable, side by side; --set not applied.
    let report = dir.join("report.json");
    let out = sluice()
        .args(["replay", "--quiet", "--config"])
        .arg(format!("yaml:{}", config(&unset)))
        .arg("--set")
        .arg(format!("exporters.file.path={}", set.display()))
        .args(["--compare", "env:SLUICE_REPLAY_OTHER", "--report"])
        .arg(&report)
        .arg(&capture)
        .env("SLUICE_REPLAY_OTHER", config(&dir.join("other.jsonl")))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let configs: Vec<_> = report["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["info"]["configs"].clone())
        .collect();
    assert_eq!(configs.len(), 2, "{report}");
    let set_source = format!("--set exporters.file.path={}", set.display());
    assert_eq!(configs[0][1], serde_json::json!(set_source), "{configs:?}");
    assert_eq!(configs[1], serde_json::json!(["env:SLUICE_REPLAY_OTHER"]));
    for run in report["runs"].as_array().unwrap() {
        assert_eq!(run["input"]["spans"], 200, "{run}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// A replayed record enters as a live request does: where the pipeline starts with
/// `memory_limiter`, it is admitted only if its bytes fit under the soft limit (memory in use
/// being what the pipelines hold); one that never could is refused and counted, the rest pass.
#[test]
fn replay_admits_records_through_the_memory_limiter() {
    let dir = scratch("replay-mem");
    std::fs::create_dir_all(&dir).unwrap();
    let capture = |name: &str, count: &str, batch: &str| {
        let path = dir.join(name);
        let out = sluice()
            .args([
                "loadgen", "traces", "--quiet", "--count", count, "--batch", batch,
            ])
            .arg("--capture")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        path
    };
    let small = capture("small.bin", "200", "20");
    let large = capture("large.bin", "20000", "20000");
    let config = write(
        "replay-memory.yaml",
        "receivers: {otlp: {protocols: {grpc: {}}}}\n\
         processors: {memory_limiter: {check_interval: 1s, limit_mib: 1}}\n\
         exporters: {debug: {}}\n\
         service: {pipelines: {traces: {receivers: [otlp], processors: [memory_limiter], exporters: [debug]}}}\n",
    );
    let refused_and_in = |capture: &std::path::Path| {
        let report = dir.join("report.json");
        let out = sluice()
            .args(["replay", "--quiet", "--dry-run", "--config"])
            .arg(&config)
            .arg("--report")
            .arg(&report)
            .arg(capture)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
        let run = &report["runs"][0];
        let limiter = run["processors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == "memory_limiter")
            .unwrap_or_else(|| panic!("no memory_limiter in {run}"));
        // Refused at admission, before the pipeline: the processor's hard-limit backstop
        // never sees it (it would count it as its own refusal).
        assert_eq!(limiter["refused"], 0, "{limiter}");
        (
            run["refused"]["spans"].clone(),
            run["input"]["spans"].clone(),
        )
    };
    // 20-span records fit under the 0.8 MiB soft limit; a 20,000-span record never does.
    assert_eq!(
        refused_and_in(&small),
        (serde_json::json!(0), serde_json::json!(200))
    );
    let (refused, _) = refused_and_in(&large);
    assert_eq!(refused, serde_json::json!(20000));
    std::fs::remove_dir_all(&dir).ok();
}

/// A replay (not dry) with a persistent sending queue keeps its queue in a directory of its
/// own: the config's `file_storage` directory (a live sluice's queues, which the replay would
/// otherwise send again and delete) is never opened.
#[test]
fn replay_never_opens_the_configs_queue_directory() {
    let dir = scratch("replay-queue");
    let live_queues = dir.join("live-queues");
    std::fs::create_dir_all(&live_queues).unwrap();
    let capture = dir.join("capture.bin");
    let out = sluice()
        .args([
            "loadgen",
            "traces",
            "--count",
            "100",
            "--batch",
            "50",
            "--quiet",
            "--capture",
        ])
        .arg(&capture)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = write(
        "replay-queue.yaml",
        &format!(
            "receivers: {{otlp: {{protocols: {{grpc: {{}}}}}}}}\n\
             extensions: {{file_storage: {{directory: {}}}}}\n\
             exporters: {{otlp: {{endpoint: \"127.0.0.1:1\", tls: {{insecure: true}},\n\
               retry_on_failure: {{enabled: false}}, sending_queue: {{storage: file_storage}}}}}}\n\
             service: {{extensions: [file_storage],\n\
               pipelines: {{traces: {{receivers: [otlp], exporters: [otlp]}}}}}}\n",
            live_queues.display()
        ),
    );
    // The config is what a live sluice would run: the loader accepts it.
    let out = validate(&config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = sluice()
        .args(["replay", "--quiet", "--config"])
        .arg(&config)
        .arg(&capture)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let opened: Vec<_> = std::fs::read_dir(&live_queues).unwrap().collect();
    assert!(
        opened.is_empty(),
        "the replay wrote into the live queue directory: {opened:?}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
