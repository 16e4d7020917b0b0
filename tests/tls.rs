//! TLS between sluice's own exporters and its own receiver, in process on loopback: certificates
//! made in the test, both OTLP transports, mTLS, and the failures users meet (a certificate from
//! another CA, a plaintext client, a missing file), each with a clear error and counted.

use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use sluice_engine::Payload;
use sluice_engine::clock::WallClock;
use sluice_engine::component::{
    BoxFuture, BuildContext, ComponentId, ConsumeError, Consumer, ConsumerRef, Factory, Lifecycle,
    Node, SignalConsumers,
};
use sluice_engine::schema::Signal;
use sluice_engine::telemetry::Telemetry;
use sluice_ingest::otlp::{GrpcConfig, HttpConfig, OtlpReceiver, OtlpReceiverConfig, Protocols};
use sluice_tls::TlsServerSetting;
use sluice_tls::testing::TestPki;

#[derive(Default)]
struct Capture(Mutex<Vec<Payload>>);

impl Consumer for Capture {
    fn consume(&self, p: Payload) -> BoxFuture<'_, Result<(), ConsumeError>> {
        self.0.lock().unwrap().push(p);
        Box::pin(async { Ok(()) })
    }
}

impl Capture {
    fn spans(&self) -> usize {
        self.0.lock().unwrap().iter().map(Payload::item_count).sum()
    }
}

fn path(p: &std::path::Path) -> String {
    p.display().to_string()
}

fn spans(n: usize) -> Payload {
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: (0..n as u64)
                    .map(|i| Span {
                        trace_id: vec![9; 16],
                        span_id: (i + 1).to_be_bytes().to_vec(),
                        name: "tls".into(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    sluice_engine::otlp::decode_traces(&req.encode_to_vec()).unwrap()
}

struct Receiver {
    rx: OtlpReceiver,
    got: Arc<Capture>,
    t: Telemetry,
    grpc: u16,
    http: u16,
}

async fn receiver(tls: TlsServerSetting) -> Receiver {
    let got = Arc::new(Capture::default());
    let t = Telemetry::new();
    let consumers: SignalConsumers = Signal::ALL
        .into_iter()
        .map(|s| (s, got.clone() as ConsumerRef))
        .collect();
    let config = OtlpReceiverConfig {
        protocols: Protocols {
            grpc: Some(GrpcConfig {
                endpoint: "127.0.0.1:0".into(),
                tls: Some(tls.clone()),
                ..Default::default()
            }),
            http: Some(HttpConfig {
                endpoint: "127.0.0.1:0".into(),
                tls: Some(tls),
                ..Default::default()
            }),
        },
    };
    let rx = OtlpReceiver::new(ComponentId::parse("otlp").unwrap(), config, consumers, &t);
    rx.start().await.unwrap();
    let port = |name| {
        rx.local_addrs()
            .into_iter()
            .find(|(n, _)| *n == name)
            .unwrap()
            .1
            .port()
    };
    Receiver {
        grpc: port("grpc"),
        http: port("http"),
        rx,
        got,
        t,
    }
}

fn server_tls(pki: &TestPki) -> TlsServerSetting {
    TlsServerSetting {
        cert_file: Some(path(&pki.server_cert)),
        key_file: Some(path(&pki.server_key)),
        ..Default::default()
    }
}

/// An exporter from its factory and JSON config, without a queue or retries, so a failed send
/// comes back to the caller (and is counted) at once.
fn exporter(
    factory: &dyn Factory,
    id: &str,
    mut config: serde_json::Value,
    t: &Telemetry,
) -> Result<Arc<dyn Node>, String> {
    config["sending_queue"] = serde_json::json!({"enabled": false});
    config["retry_on_failure"] = serde_json::json!({"enabled": false});
    let parsed = factory.parse_config(&config).map_err(|e| e.to_string())?;
    factory
        .build_exporter(BuildContext {
            id: ComponentId::parse(id).unwrap(),
            config: parsed,
            telemetry: t.clone(),
            clock: Arc::new(WallClock),
            extensions: Default::default(),
        })
        .map_err(|e| e.to_string())
}

const GRPC: sluice_egress::otlp::OtlpGrpcFactory = sluice_egress::otlp::OtlpGrpcFactory;
const HTTP: sluice_egress::otlp::OtlpHttpFactory = sluice_egress::otlp::OtlpHttpFactory;

fn failed_spans(t: &Telemetry, id: &str) -> f64 {
    t.sum("otelcol_exporter_send_failed_spans", &[("exporter", id)])
        .unwrap_or(0.0)
}

#[tokio::test]
async fn tls_exporters_deliver_to_a_tls_receiver_over_grpc_and_http() {
    let pki = TestPki::new();
    let r = receiver(server_tls(&pki)).await;
    let t = Telemetry::new();
    let ca = serde_json::json!({"ca_file": path(&pki.ca_cert)});
    let cases = [
        // gRPC: TLS is the default; the endpoint's host is the name verified.
        (
            &GRPC as &dyn Factory,
            "otlp",
            serde_json::json!({"endpoint": format!("localhost:{}", r.grpc), "tls": ca}),
        ),
        // `https://` on gRPC, an IP address endpoint (the certificate's IP SAN).
        (
            &GRPC,
            "otlp/ip",
            serde_json::json!({"endpoint": format!("https://127.0.0.1:{}", r.grpc), "tls": ca}),
        ),
        // server_name_override: verify "localhost" while dialling an address.
        (
            &GRPC,
            "otlp/override",
            serde_json::json!({"endpoint": format!("127.0.0.1:{}", r.grpc), "tls": {"ca_file": path(&pki.ca_cert), "server_name_override": "localhost"}}),
        ),
        (
            &HTTP,
            "otlphttp",
            serde_json::json!({"endpoint": format!("https://localhost:{}", r.http), "tls": ca}),
        ),
        (
            &HTTP,
            "otlphttp/json",
            serde_json::json!({"endpoint": format!("https://localhost:{}", r.http), "tls": ca, "encoding": "json", "compression": "zstd"}),
        ),
    ];
    for (i, (factory, id, config)) in cases.into_iter().enumerate() {
        let e = exporter(factory, id, config, &t).unwrap();
        e.start().await.unwrap();
        e.consume(spans(i + 1))
            .await
            .unwrap_or_else(|err| panic!("{id}: {err:?}"));
        e.shutdown().await;
        assert_eq!(
            t.value("otelcol_exporter_sent_spans", &[("exporter", id)]),
            Some((i + 1) as f64),
            "{id}"
        );
    }
    assert_eq!(r.got.spans(), 1 + 2 + 3 + 4 + 5);
    let origins_ok = r
        .got
        .0
        .lock()
        .unwrap()
        .iter()
        .all(|p| p.origin.is_some_and(|o| o.ip().is_loopback()));
    assert!(origins_ok, "the peer address travels with TLS data too");
    r.rx.shutdown().await;
}

#[tokio::test]
async fn mtls_needs_the_client_certificate() {
    let pki = TestPki::new();
    let r = receiver(TlsServerSetting {
        client_ca_file: Some(path(&pki.ca_cert)),
        ..server_tls(&pki)
    })
    .await;
    let t = Telemetry::new();
    let with_cert = serde_json::json!({
        "ca_file": path(&pki.ca_cert),
        "cert_file": path(&pki.client_cert),
        "key_file": path(&pki.client_key),
    });
    for (factory, id, endpoint) in [
        (
            &GRPC as &dyn Factory,
            "otlp",
            format!("localhost:{}", r.grpc),
        ),
        (&HTTP, "otlphttp", format!("https://localhost:{}", r.http)),
    ] {
        let e = exporter(
            factory,
            id,
            serde_json::json!({"endpoint": endpoint, "tls": with_cert}),
            &t,
        )
        .unwrap();
        e.start().await.unwrap();
        e.consume(spans(2)).await.unwrap();
        e.shutdown().await;

        let no_cert_id = format!("{id}/nocert");
        let e = exporter(
            factory,
            &no_cert_id,
            serde_json::json!({"endpoint": endpoint, "tls": {"ca_file": path(&pki.ca_cert)}}),
            &t,
        )
        .unwrap();
        e.start().await.unwrap();
        let err = e.consume(spans(3)).await.unwrap_err();
        let ConsumeError::Unavailable(message) = err else {
            panic!("{id}: {err:?}")
        };
        // TLS 1.3: the client learns of the refusal from the server's alert.
        assert!(
            message.contains("CertificateRequired") || message.contains("certificate"),
            "{id}: {message}"
        );
        assert_eq!(failed_spans(&t, &no_cert_id), 3.0, "{id}");
        e.shutdown().await;
    }
    assert_eq!(r.got.spans(), 4);
    let handshakes = |transport| {
        r.t.value(
            "otelcol_receiver_failed_requests",
            &[
                ("receiver", "otlp"),
                ("transport", transport),
                ("reason", "tls_handshake"),
            ],
        )
        .unwrap_or(0.0)
    };
    assert!(handshakes("grpc") >= 1.0 && handshakes("http") >= 1.0);
    r.rx.shutdown().await;
}

#[tokio::test]
async fn a_wrong_ca_or_a_plaintext_exporter_fails_clearly_and_is_counted() {
    let pki = TestPki::new();
    let other = TestPki::new();
    let r = receiver(server_tls(&pki)).await;
    let t = Telemetry::new();
    let wrong_ca = serde_json::json!({"ca_file": path(&other.ca_cert)});
    for (factory, id, config) in [
        (
            &GRPC as &dyn Factory,
            "otlp/wrongca",
            serde_json::json!({"endpoint": format!("localhost:{}", r.grpc), "tls": wrong_ca}),
        ),
        (
            &HTTP,
            "otlphttp/wrongca",
            serde_json::json!({"endpoint": format!("https://localhost:{}", r.http), "tls": wrong_ca}),
        ),
    ] {
        let e = exporter(factory, id, config, &t).unwrap();
        e.start().await.unwrap();
        let err = e.consume(spans(2)).await.unwrap_err();
        let ConsumeError::Unavailable(message) = err else {
            panic!("{id}: {err:?}")
        };
        assert!(
            message.contains("invalid peer certificate: UnknownIssuer"),
            "{id}: {message}"
        );
        assert_eq!(failed_spans(&t, id), 2.0, "{id}");
        e.shutdown().await;
    }
    for (factory, id, config) in [
        (
            &GRPC as &dyn Factory,
            "otlp/plain",
            serde_json::json!({"endpoint": format!("localhost:{}", r.grpc), "tls": {"insecure": true}}),
        ),
        (
            &HTTP,
            "otlphttp/plain",
            serde_json::json!({"endpoint": format!("http://localhost:{}", r.http)}),
        ),
    ] {
        let e = exporter(factory, id, config, &t).unwrap();
        e.start().await.unwrap();
        let err = e.consume(spans(4)).await.unwrap_err();
        let ConsumeError::Unavailable(message) = err else {
            panic!("{id}: {err:?}")
        };
        assert!(
            message.contains("if the server expects TLS"),
            "{id}: {message}"
        );
        assert_eq!(failed_spans(&t, id), 4.0, "{id}");
        e.shutdown().await;
    }
    assert_eq!(r.got.spans(), 0, "nothing got through");
    r.rx.shutdown().await;
}

#[tokio::test]
async fn an_exporter_with_a_missing_file_fails_at_build_naming_it() {
    let pki = TestPki::new();
    let t = Telemetry::new();
    let missing = pki.missing("ca.pem");
    for (factory, endpoint) in [
        (&GRPC as &dyn Factory, "gateway:4317"),
        (&HTTP, "https://gateway:4318"),
    ] {
        let err = exporter(
            factory,
            "otlp",
            serde_json::json!({"endpoint": endpoint, "tls": {"ca_file": path(&missing)}}),
            &t,
        )
        .err()
        .unwrap();
        assert!(
            err.contains("tls: cannot read ca_file") && err.contains(&path(&missing)),
            "{err}"
        );
    }
    // An https:// URL with `insecure` still uses TLS (the system's roots), as in the Collector;
    // a plain http:// URL never reads TLS files.
    exporter(
        &HTTP,
        "otlphttp",
        serde_json::json!({"endpoint": "http://gateway:4318", "tls": {"ca_file": path(&missing)}}),
        &t,
    )
    .unwrap();
}
