//! The `sluice` binary's command line: validate, components, and config errors as users see them.

use std::path::PathBuf;
use std::process::Command;

fn sluice() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
}

fn write(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
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
    let out = sluice()
        .args(["validate", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
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
    // The exporter endpoint comes from the pod's environment; without it, validate says so.
    let out = sluice()
        .args(["validate", "--config", path])
        .env_remove("JAEGER_ENDPOINT")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exporters.otlp/jaeger.endpoint"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    let out = sluice()
        .args(["validate", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the child on drop so a failing assertion never leaves a sluice running.
struct Running(std::process::Child);
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
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
    // Ready once the OTLP/gRPC port accepts connections (receivers start after exporters).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", grpc)).is_err() {
        assert!(std::time::Instant::now() < deadline, "sluice did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
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
