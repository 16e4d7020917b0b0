//! The receiver against real clients on loopback: the opentelemetry-proto generated tonic
//! clients (wire compatibility) and plain HTTP/1.1 requests.

use std::io::Write;
use std::sync::Mutex;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use sluice_engine::Payload;
use sluice_engine::component::Consumer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use sluice_engine::component::NoEffect;

#[derive(Default)]
struct Capture {
    got: Mutex<Vec<Payload>>,
    refuse: Mutex<Option<ConsumeError>>,
    /// Stands for a pipeline that starts with `memory_limiter`.
    limited: bool,
    /// Stands for a pipeline that never reads tables (`batch` -> `otlp` exporter).
    wire: bool,
    /// The memory account's held bytes at each `consume` (when set).
    account: Option<sluice_engine::memory::MemoryAccount>,
    held_seen: Mutex<Vec<u64>>,
}

impl Consumer for Capture {
    fn memory_limited(&self) -> bool {
        self.limited
    }

    fn keeps_wire_form(&self) -> bool {
        self.wire
    }

    fn consume(&self, p: sluice_engine::Payload) -> BoxFuture<'_, Result<(), ConsumeError>> {
        Box::pin(async move {
            if let Some(e) = self.refuse.lock().unwrap().clone() {
                return Err(e);
            }
            if let Some(a) = &self.account {
                self.held_seen.lock().unwrap().push(a.held());
            }
            self.got.lock().unwrap().push(p);
            Ok(())
        })
    }
}

impl Capture {
    fn items(&self) -> usize {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(Payload::item_count)
            .sum()
    }
}

struct Rig {
    rx: OtlpReceiver,
    cap: Arc<Capture>,
    t: Telemetry,
    grpc: SocketAddr,
    http: SocketAddr,
}

async fn rig(max_body: u64) -> Rig {
    rig_with(max_body, Capture::default(), Telemetry::new()).await
}

async fn rig_with(max_body: u64, cap: Capture, t: Telemetry) -> Rig {
    let cap = Arc::new(cap);
    let consumers: SignalConsumers = Signal::ALL
        .into_iter()
        .map(|s| (s, cap.clone() as ConsumerRef))
        .collect();
    let config = OtlpReceiverConfig {
        protocols: Protocols {
            grpc: Some(GrpcConfig {
                endpoint: "127.0.0.1:0".into(),
                max_recv_msg_size_mib: 1,
                ..Default::default()
            }),
            http: Some(HttpConfig {
                endpoint: "127.0.0.1:0".into(),
                max_request_body_size: max_body,
                ..Default::default()
            }),
        },
    };
    let rx = OtlpReceiver::new(ComponentId::parse("otlp").unwrap(), config, consumers, &t);
    rx.start().await.unwrap();
    let addrs = rx.local_addrs();
    let find = |k| addrs.iter().find(|(n, _)| *n == k).unwrap().1;
    Rig {
        grpc: find("grpc"),
        http: find("http"),
        rx,
        cap,
        t,
    }
}

fn traces(n: usize) -> ExportTraceServiceRequest {
    let spans = (0..n)
        .map(|i| Span {
            trace_id: vec![7; 16],
            span_id: (i as u64 + 1).to_be_bytes().to_vec(),
            name: format!("op{i}"),
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn metrics(n: usize) -> ExportMetricsServiceRequest {
    let data_points = (0..n)
        .map(|i| NumberDataPoint {
            value: Some(number_data_point::Value::AsInt(i as i64)),
            ..Default::default()
        })
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "g".into(),
                    data: Some(metric::Data::Gauge(Gauge { data_points })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn logs(n: usize) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord::default(); n],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// One HTTP/1.1 request; returns (status, headers as lowercase "name: value" lines, body).
async fn http(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&out[..split]).to_ascii_lowercase();
    let code = head[9..12].parse().unwrap();
    (code, head, out[split + 4..].to_vec())
}

const PB: (&str, &str) = ("content-type", "application/x-protobuf");
const JSON: (&str, &str) = ("content-type", "application/json");

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

#[tokio::test]
async fn grpc_clients_deliver_all_three_signals_with_their_origin() {
    let r = rig(1 << 20).await;
    let url = format!("http://{}", r.grpc);
    TraceServiceClient::connect(url.clone())
        .await
        .unwrap()
        .export(traces(5))
        .await
        .unwrap();
    let mut gz = TraceServiceClient::connect(url.clone())
        .await
        .unwrap()
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    gz.export(traces(3)).await.unwrap();
    let mut zs = TraceServiceClient::connect(url.clone())
        .await
        .unwrap()
        .send_compressed(tonic::codec::CompressionEncoding::Zstd);
    zs.export(traces(2)).await.unwrap();
    MetricsServiceClient::connect(url.clone())
        .await
        .unwrap()
        .export(metrics(4))
        .await
        .unwrap();
    LogsServiceClient::connect(url)
        .await
        .unwrap()
        .export(logs(6))
        .await
        .unwrap();
    let got = r.cap.got.lock().unwrap().clone();
    let counts: Vec<(Signal, usize)> = got.iter().map(|p| (p.signal(), p.item_count())).collect();
    assert_eq!(
        counts,
        [
            (Signal::Traces, 5),
            (Signal::Traces, 3),
            (Signal::Traces, 2),
            (Signal::Metrics, 4),
            (Signal::Logs, 6)
        ]
    );
    assert!(
        got.iter()
            .all(|p| p.origin.is_some_and(|o| o.ip().is_loopback()))
    );
    let labels = [("receiver", "otlp"), ("transport", "grpc")];
    assert_eq!(
        r.t.value("otelcol_receiver_accepted_spans", &labels),
        Some(10.0)
    );
    assert_eq!(
        r.t.value("otelcol_receiver_accepted_metric_points", &labels),
        Some(4.0)
    );
    assert_eq!(
        r.t.value("otelcol_receiver_accepted_log_records", &labels),
        Some(6.0)
    );
    r.rx.shutdown().await;
}

#[tokio::test]
async fn grpc_rejects_garbage_and_oversize_and_passes_refusals_on() {
    let r = rig(1 << 20).await;
    let url = format!("http://{}", r.grpc);
    // Garbage bytes under a valid gRPC frame: a raw channel call.
    let channel = tonic::transport::Channel::from_shared(url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut raw = tonic::client::Grpc::new(channel);
    raw.ready().await.unwrap();
    let path = ::http::uri::PathAndQuery::from_static(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    );
    let err = raw
        .unary(
            tonic::Request::new(bytes::Bytes::from_static(
                b"\x0a\xff\xff\xff\xff\x0fgarbage",
            )),
            path,
            super::grpc::RawCodec,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("malformed"), "{}", err.message());
    // Larger than max_recv_msg_size_mib (1 MiB).
    let mut big = traces(1);
    big.resource_spans[0].scope_spans[0].spans[0].name = "x".repeat(2 << 20);
    let err = TraceServiceClient::connect(url.clone())
        .await
        .unwrap()
        .export(big)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err:?}");
    // The same message gzip-compressed: far under the limit on the wire, over it once
    // decompressed. Also "too large" (not RESOURCE_EXHAUSTED, which means memory pressure),
    // saying so in words an exporter recognizes, and counted.
    let mut big = traces(1);
    big.resource_spans[0].scope_spans[0].spans[0].name = "x".repeat(2 << 20);
    let err = TraceServiceClient::connect(url.clone())
        .await
        .unwrap()
        .send_compressed(tonic::codec::CompressionEncoding::Gzip)
        .export(big)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err:?}");
    assert!(err.message().contains("larger than max"), "{err:?}");
    // The pipeline refuses: the client is told to back off.
    *r.cap.refuse.lock().unwrap() = Some(ConsumeError::Refused("high memory".into()));
    let err = TraceServiceClient::connect(url.clone())
        .await
        .unwrap()
        .export(traces(2))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    *r.cap.refuse.lock().unwrap() = Some(ConsumeError::Unavailable("queue full".into()));
    let err = TraceServiceClient::connect(url.clone())
        .await
        .unwrap()
        .export(traces(2))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    *r.cap.refuse.lock().unwrap() = None;
    // Still serving.
    TraceServiceClient::connect(url)
        .await
        .unwrap()
        .export(traces(1))
        .await
        .unwrap();
    let labels = [("receiver", "otlp"), ("transport", "grpc")];
    assert_eq!(
        r.t.value("otelcol_receiver_refused_spans", &labels),
        Some(4.0)
    );
    assert_eq!(
        r.t.value("otelcol_receiver_accepted_spans", &labels),
        Some(1.0)
    );
    let failed = |reason| {
        r.t.value(
            "otelcol_receiver_failed_requests",
            &[
                ("receiver", "otlp"),
                ("transport", "grpc"),
                ("reason", reason),
            ],
        )
    };
    assert_eq!(failed("decode"), Some(1.0));
    assert_eq!(failed("too_large"), Some(2.0));
}

#[tokio::test]
async fn http_accepts_protobuf_json_gzip_zstd() {
    let r = rig(1 << 20).await;
    let pb = traces(3).encode_to_vec();
    let (code, head, body) = http(r.http, "/v1/traces", &[PB], &pb).await;
    assert_eq!(code, 200, "{head}");
    assert!(head.contains("content-type: application/x-protobuf"));
    assert!(body.is_empty());
    assert_eq!(
        http(
            r.http,
            "/v1/traces",
            &[PB, ("content-encoding", "gzip")],
            &gzip(&pb)
        )
        .await
        .0,
        200
    );
    let zs = zstd::encode_all(&pb[..], 1).unwrap();
    assert_eq!(
        http(
            r.http,
            "/v1/traces",
            &[PB, ("content-encoding", "zstd")],
            &zs
        )
        .await
        .0,
        200
    );
    let json = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../engine/testdata/otlp-examples/logs.json"
    ))
    .unwrap();
    let (code, _, body) = http(r.http, "/v1/logs", &[JSON], &json).await;
    assert_eq!((code, body.as_slice()), (200, &b"{}"[..]));
    let m = metrics(2).encode_to_vec();
    assert_eq!(
        http(
            r.http,
            "/v1/metrics",
            &[("content-type", "application/x-protobuf; charset=binary")],
            &m
        )
        .await
        .0,
        200
    );
    assert_eq!(r.cap.items(), 3 * 3 + 1 + 2);
    assert!(r.cap.got.lock().unwrap().iter().all(|p| p.origin.is_some()));
    r.rx.shutdown().await;
}

#[tokio::test]
async fn http_bad_input_gets_clear_statuses_and_the_server_keeps_serving() {
    let r = rig(1 << 20).await;
    let pb = traces(4).encode_to_vec();
    // Truncated protobuf: 400 with a google.rpc.Status naming the problem.
    let (code, _, body) = http(r.http, "/v1/traces", &[PB], &pb[..pb.len() / 2]).await;
    assert_eq!(code, 400);
    let msg = String::from_utf8_lossy(&body);
    assert!(msg.contains("malformed OTLP protobuf"), "{msg}");
    // Invalid JSON: 400 with a JSON status.
    let (code, _, body) = http(r.http, "/v1/traces", &[JSON], b"{\"resourceSpans\": [").await;
    assert_eq!(code, 400);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["code"], 3);
    assert!(!v["message"].as_str().unwrap().is_empty());
    // A gzip bomb: 64 MiB of zeros, ~64 KiB compressed; refused at the 1 MiB limit.
    let bomb = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            e.write_all(&zeros).unwrap();
        }
        e.finish().unwrap()
    };
    let (code, _, _) = http(
        r.http,
        "/v1/traces",
        &[PB, ("content-encoding", "gzip")],
        &bomb,
    )
    .await;
    assert_eq!(code, 413);
    // An oversized raw body.
    assert_eq!(
        http(r.http, "/v1/traces", &[PB], &vec![0u8; (1 << 20) + 1])
            .await
            .0,
        413
    );
    // Unsupported media type and encoding; unknown path; wrong method.
    assert_eq!(
        http(r.http, "/v1/traces", &[("content-type", "text/plain")], &pb)
            .await
            .0,
        415
    );
    assert_eq!(
        http(r.http, "/v1/traces", &[PB, ("content-encoding", "br")], &pb)
            .await
            .0,
        415
    );
    let (code, _, body) = http(r.http, "/v1/spans", &[PB], &pb).await;
    assert_eq!(code, 404);
    assert!(
        String::from_utf8_lossy(&body).contains("/v1/traces"),
        "the 404 says where OTLP is served"
    );
    // Refusals carry Retry-After.
    *r.cap.refuse.lock().unwrap() = Some(ConsumeError::Refused("high memory".into()));
    let (code, head, _) = http(r.http, "/v1/traces", &[PB], &pb).await;
    assert_eq!(code, 429);
    assert!(head.contains("retry-after: 1"), "{head}");
    *r.cap.refuse.lock().unwrap() = Some(ConsumeError::Unavailable("queue full".into()));
    assert_eq!(http(r.http, "/v1/traces", &[PB], &pb).await.0, 503);
    *r.cap.refuse.lock().unwrap() = None;
    assert_eq!(http(r.http, "/v1/traces", &[PB], &pb).await.0, 200);
    let failed = |reason| {
        r.t.value(
            "otelcol_receiver_failed_requests",
            &[
                ("receiver", "otlp"),
                ("transport", "http"),
                ("reason", reason),
            ],
        )
    };
    assert_eq!(failed("decode"), Some(2.0));
    assert_eq!(failed("too_large"), Some(2.0));
    // A content type nobody speaks and a Content-Encoding nobody speaks are different
    // problems, counted apart.
    assert_eq!(failed("media_type"), Some(1.0));
    assert_eq!(failed("content_encoding"), Some(1.0));
    let labels = [("receiver", "otlp"), ("transport", "http")];
    assert_eq!(
        r.t.value("otelcol_receiver_refused_spans", &labels),
        Some(8.0)
    );
    assert_eq!(
        r.t.value("otelcol_receiver_accepted_spans", &labels),
        Some(4.0)
    );
    r.rx.shutdown().await;
}

#[test]
fn config_follows_the_collector() {
    let f = OtlpReceiverFactory;
    let c = f
        .parse_config(&serde_json::json!({"protocols": {"grpc": null}}))
        .unwrap();
    let c = c.downcast_ref::<OtlpReceiverConfig>().unwrap();
    assert_eq!(
        c.protocols.grpc.as_ref().unwrap().endpoint,
        "localhost:4317"
    );
    assert!(
        c.protocols.http.is_none(),
        "an unlisted protocol is not started"
    );
    let e = f
        .parse_config(&serde_json::json!({"protocols": {"grpc": {"endpiont": "x"}}}))
        .err()
        .unwrap();
    assert_eq!(e.path, "protocols.grpc.endpiont");
    // TLS settings are checked at config load (files are read at start).
    let e = f
        .parse_config(&serde_json::json!({"protocols": {"http": {"tls": {"cert_file": "c"}}}}))
        .err()
        .unwrap();
    assert_eq!(e.path, "protocols.http.tls.key_file", "{e}");
    let e = f
        .parse_config(&serde_json::json!({"protocols": {"grpc": {"tls": {"cert_file": "c", "key_file": "k", "min_version": "1.5"}}}}))
        .err()
        .unwrap();
    assert_eq!(e.path, "protocols.grpc.tls.min_version", "{e}");
    assert!(
        f.parse_config(&serde_json::json!({"protocols": {"grpc": {"tls": {"cert_file": "c", "key_file": "k", "client_ca_file": "ca"}}}}))
            .is_ok()
    );
    assert!(
        f.parse_config(&serde_json::json!({})).is_err(),
        "no protocol at all is refused"
    );
}

#[tokio::test]
async fn a_port_in_use_fails_startup_naming_the_address_and_leaves_nothing_running() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap();
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = OtlpReceiverConfig {
        protocols: Protocols {
            grpc: Some(GrpcConfig {
                endpoint: free.to_string(),
                ..Default::default()
            }),
            http: Some(HttpConfig {
                endpoint: taken_addr.to_string(),
                ..Default::default()
            }),
        },
    };
    let rx = OtlpReceiver::new(
        ComponentId::parse("otlp").unwrap(),
        config,
        SignalConsumers::new(),
        &Telemetry::new(),
    );
    let err = rx.start().await.unwrap_err().to_string();
    assert!(
        err.contains(&format!("cannot listen on {taken_addr}")),
        "{err}"
    );
    // The gRPC port was bound and released again, not left serving.
    assert!(
        std::net::TcpListener::bind(free).is_ok(),
        "gRPC listener must not outlive a failed start"
    );
}

// ---------------------------------------------------------------------------------------------
// TLS

fn tls_setting(pki: &sluice_tls::testing::TestPki) -> sluice_tls::TlsServerSetting {
    sluice_tls::TlsServerSetting {
        cert_file: Some(pki.server_cert.display().to_string()),
        key_file: Some(pki.server_key.display().to_string()),
        ..Default::default()
    }
}

/// A receiver serving TLS on both protocols (with `tls`) on free loopback ports.
async fn tls_rig(tls: sluice_tls::TlsServerSetting) -> Rig {
    let cap = Arc::new(Capture::default());
    let t = Telemetry::new();
    let consumers: SignalConsumers = Signal::ALL
        .into_iter()
        .map(|s| (s, cap.clone() as ConsumerRef))
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
    let addrs = rx.local_addrs();
    let find = |k| addrs.iter().find(|(n, _)| *n == k).unwrap().1;
    Rig {
        grpc: find("grpc"),
        http: find("http"),
        rx,
        cap,
        t,
    }
}

/// A rustls connector trusting the test CA (and presenting the client certificate if asked).
fn https(
    pki: &sluice_tls::testing::TestPki,
    client_cert: bool,
) -> hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector> {
    let mut setting = sluice_tls::TlsClientSetting {
        ca_file: Some(pki.ca_cert.display().to_string()),
        ..Default::default()
    };
    if client_cert {
        setting.cert_file = Some(pki.client_cert.display().to_string());
        setting.key_file = Some(pki.client_key.display().to_string());
    }
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(setting.load().unwrap())
        .https_only()
        .enable_all_versions()
        .build()
}

async fn failed_handshakes(t: &Telemetry, transport: &str) -> f64 {
    let labels = [
        ("receiver", "otlp"),
        ("transport", transport),
        ("reason", "tls_handshake"),
    ];
    // The server side of a failed handshake reports after the client has seen it fail.
    for _ in 0..200 {
        if t.value("otelcol_receiver_failed_requests", &labels)
            .unwrap_or(0.0)
            > 0.0
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    t.value("otelcol_receiver_failed_requests", &labels)
        .unwrap_or(0.0)
}

#[tokio::test]
async fn tls_receives_over_grpc_and_http_with_the_origin_and_counts_plaintext_clients() {
    let pki = sluice_tls::testing::TestPki::new();
    let r = tls_rig(tls_setting(&pki)).await;

    let channel =
        tonic::transport::Endpoint::from_shared(format!("https://localhost:{}", r.grpc.port()))
            .unwrap()
            .connect_with_connector(https(&pki, false))
            .await
            .unwrap();
    TraceServiceClient::new(channel)
        .export(traces(4))
        .await
        .unwrap();

    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(https(&pki, false));
    let req = ::http::Request::post(format!("https://127.0.0.1:{}/v1/logs", r.http.port()))
        .header("content-type", "application/x-protobuf")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            logs(3).encode_to_vec(),
        )))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);

    let got = r.cap.got.lock().unwrap().clone();
    let counts: Vec<(Signal, usize)> = got.iter().map(|p| (p.signal(), p.item_count())).collect();
    assert_eq!(counts, [(Signal::Traces, 4), (Signal::Logs, 3)]);
    assert!(
        got.iter()
            .all(|p| p.origin.is_some_and(|o| o.ip().is_loopback())),
        "origin kept over TLS"
    );

    // Plaintext clients: refused at the handshake and counted, the server keeps serving.
    let plain = TraceServiceClient::connect(format!("http://{}", r.grpc)).await;
    let failed = match plain {
        Ok(mut c) => c.export(traces(1)).await.is_err(),
        Err(_) => true,
    };
    assert!(
        failed,
        "a plaintext gRPC client cannot export to a TLS receiver"
    );
    assert!(failed_handshakes(&r.t, "grpc").await >= 1.0);
    let mut tcp = tokio::net::TcpStream::connect(r.http).await.unwrap();
    tcp.write_all(b"POST /v1/logs HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer).await;
    assert!(!answer.starts_with(b"HTTP/1.1 200"), "no plaintext answer");
    assert!(failed_handshakes(&r.t, "http").await >= 1.0);
    assert_eq!(r.cap.items(), 7, "nothing from plaintext clients was taken");

    let again = client
        .request(
            ::http::Request::post(format!("https://127.0.0.1:{}/v1/logs", r.http.port()))
                .header("content-type", "application/x-protobuf")
                .body(http_body_util::Full::new(bytes::Bytes::from(
                    logs(1).encode_to_vec(),
                )))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    r.rx.shutdown().await;
}

#[tokio::test]
async fn mtls_receiver_takes_only_clients_with_a_certificate_from_its_client_ca() {
    let pki = sluice_tls::testing::TestPki::new();
    let mtls = sluice_tls::TlsServerSetting {
        client_ca_file: Some(pki.ca_cert.display().to_string()),
        ..tls_setting(&pki)
    };
    let r = tls_rig(mtls).await;
    let post = |with_cert: bool| {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(https(&pki, with_cert));
        let req = ::http::Request::post(format!("https://127.0.0.1:{}/v1/traces", r.http.port()))
            .header("content-type", "application/x-protobuf")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                traces(2).encode_to_vec(),
            )))
            .unwrap();
        async move { client.request(req).await }
    };
    assert_eq!(post(true).await.unwrap().status(), 200);
    assert!(
        post(false).await.is_err(),
        "no client certificate, no request"
    );
    assert!(failed_handshakes(&r.t, "http").await >= 1.0);
    assert_eq!(r.cap.items(), 2);
    r.rx.shutdown().await;
}

#[tokio::test]
async fn a_missing_certificate_file_fails_startup_naming_it_before_binding() {
    let pki = sluice_tls::testing::TestPki::new();
    let missing = pki.missing("server.pem");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = OtlpReceiverConfig {
        protocols: Protocols {
            grpc: Some(GrpcConfig {
                endpoint: port.to_string(),
                ..Default::default()
            }),
            http: Some(HttpConfig {
                endpoint: "127.0.0.1:0".into(),
                tls: Some(sluice_tls::TlsServerSetting {
                    cert_file: Some(missing.display().to_string()),
                    ..tls_setting(&pki)
                }),
                ..Default::default()
            }),
        },
    };
    let rx = OtlpReceiver::new(
        ComponentId::parse("otlp").unwrap(),
        config,
        SignalConsumers::new(),
        &Telemetry::new(),
    );
    let err = rx.start().await.unwrap_err().to_string();
    assert!(
        err.contains("protocols.http.tls")
            && err.contains("cert_file")
            && err.contains(&missing.display().to_string()),
        "{err}"
    );
    assert!(
        std::net::TcpListener::bind(port).is_ok(),
        "nothing was bound"
    );
}

/// Admission before reading, against a pipeline that starts with a memory limiter: a request
/// that fits is taken and its reservation released; above the soft limit requests are refused
/// before their body is read, with the retryable answers (429 + Retry-After; RESOURCE_EXHAUSTED
/// with a RetryInfo); a request that could never fit gets 413 / RESOURCE_EXHAUSTED without a
/// RetryInfo; every refusal is counted by reason.
#[tokio::test]
async fn memory_admission_refuses_before_reading() {
    use sluice_engine::memory::Limits;
    let t = Telemetry::new();
    t.memory().set_limits(Limits {
        soft: 1 << 20,
        hard: 2 << 20,
    });
    let cap = Capture {
        limited: true,
        ..Default::default()
    };
    let r = rig_with(4 << 20, cap, t.clone()).await;
    let small = traces(3).encode_to_vec();
    let http = |body: Vec<u8>| {
        let addr = r.http;
        async move {
            let client =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http::<http_body_util::Full<bytes::Bytes>>();
            let req = ::http::Request::post(format!("http://{addr}/v1/traces"))
                .header("content-type", "application/x-protobuf")
                .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                .unwrap();
            client.request(req).await.unwrap()
        }
    };
    let grpc = |req: ExportTraceServiceRequest| {
        let addr = r.grpc;
        async move {
            let mut c = TraceServiceClient::connect(format!("http://{addr}"))
                .await
                .unwrap();
            c.export(req).await
        }
    };
    assert_eq!(http(small.clone()).await.status(), 200);
    grpc(traces(3)).await.unwrap();
    assert_eq!(r.cap.items(), 6);
    assert_eq!(t.memory().held(), 0, "reservations released");

    // Larger than the soft limit allows, even with nothing else held: never retryable.
    let big = traces(20_000).encode_to_vec();
    assert!(big.len() > 256 << 10);
    assert_eq!(http(big).await.status(), 413);
    let e = grpc(traces(20_000)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted);
    assert!(
        !String::from_utf8_lossy(e.details()).contains("RetryInfo"),
        "{e:?}"
    );

    // Memory held elsewhere at the soft limit: refused before reading, retryable.
    let queue = t.memory().holder(&t, "otlp/jaeger", "queue");
    let full = queue.hold(1 << 20);
    let resp = http(small.clone()).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    let e = grpc(traces(3)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted);
    assert!(e.message().contains("memory"), "{e:?}");
    assert!(
        String::from_utf8_lossy(e.details()).contains("type.googleapis.com/google.rpc.RetryInfo"),
        "{e:?}"
    );
    let refused = |transport: &str, reason: &str| {
        t.value(
            "sluice_memory_refused_requests",
            &[
                ("receiver", "otlp"),
                ("transport", transport),
                ("reason", reason),
            ],
        )
    };
    assert_eq!(refused("http", "above_soft_limit"), Some(1.0));
    assert_eq!(refused("grpc", "above_soft_limit"), Some(1.0));
    assert_eq!(refused("http", "too_large"), Some(1.0));
    assert_eq!(refused("grpc", "too_large"), Some(1.0));
    assert_eq!(r.cap.items(), 6, "nothing refused reached the pipeline");

    // Room again: accepted at once.
    drop(full);
    assert_eq!(http(small).await.status(), 200);
    assert_eq!(t.memory().held(), 0);
    r.rx.shutdown().await;
}

/// A request forwarded as its bytes holds its bytes while the pipeline has it, not the 4x
/// decoded-size estimate a decoded request reserves.
#[tokio::test]
async fn a_forwarded_request_reserves_its_bytes_not_a_decoded_estimate() {
    use sluice_engine::memory::Limits;
    for wire in [true, false] {
        let t = Telemetry::new();
        t.memory().set_limits(Limits {
            soft: 64 << 20,
            hard: 96 << 20,
        });
        let cap = Capture {
            limited: true,
            wire,
            account: Some(t.memory().clone()),
            ..Default::default()
        };
        let r = rig_with(4 << 20, cap, t.clone()).await;
        let body = traces(200).encode_to_vec();
        let mut c = TraceServiceClient::connect(format!("http://{}", r.grpc))
            .await
            .unwrap();
        c.export(traces(200)).await.unwrap();
        let seen = r.cap.held_seen.lock().unwrap().clone();
        let got = r.cap.got.lock().unwrap()[0].clone();
        assert_eq!(got.wire().is_some(), wire);
        if wire {
            assert_eq!(seen, vec![body.len() as u64], "held = the request's bytes");
        } else {
            assert!(
                seen[0] >= 2 * body.len() as u64,
                "a decoded request keeps its estimate: {seen:?} for {} bytes",
                body.len()
            );
        }
        assert_eq!(t.memory().held(), 0, "released after the pipeline");
        r.rx.shutdown().await;
    }
}

/// `keepalive` as the Collector reads it, with gRPC-Go's defaults where a duration is absent
/// or zero; the grace counts only with an age.
#[test]
fn keepalive_has_grpc_go_defaults() {
    let resolve = |keepalive: serde_json::Value| {
        let c = OtlpReceiverFactory
            .parse_config(&serde_json::json!({"protocols": {"grpc": {"keepalive": keepalive}}}))
            .unwrap();
        let c = c.downcast_ref::<OtlpReceiverConfig>().unwrap();
        c.protocols.grpc.as_ref().unwrap().keepalive.resolve()
    };
    let defaults = Keepalive {
        ping_after: Duration::from_secs(7200),
        ping_timeout: Duration::from_secs(20),
        max_age: None,
        cutoff: None,
    };
    assert_eq!(resolve(serde_json::Value::Null), defaults);
    assert_eq!(
        resolve(serde_json::json!({"server_parameters": null})),
        defaults
    );
    assert_eq!(
        resolve(
            serde_json::json!({"server_parameters": {"time": "0s", "max_connection_age_grace": "5s"}})
        ),
        defaults
    );
    assert_eq!(
        resolve(serde_json::json!({"server_parameters": {
            "time": "100ms", "timeout": "3s", "max_connection_age": "1m", "max_connection_age_grace": "10s"
        }})),
        Keepalive {
            ping_after: Duration::from_secs(1),
            ping_timeout: Duration::from_secs(3),
            max_age: Some(Duration::from_secs(60)),
            cutoff: Some(Duration::from_secs(70)),
        }
    );
    let e = OtlpReceiverFactory
        .parse_config(&serde_json::json!({"protocols": {"grpc": {"keepalive": {"server_parameters": {"max_conection_age": "1m"}}}}}))
        .err()
        .unwrap();
    assert_eq!(
        e.path,
        "protocols.grpc.keepalive.server_parameters.max_conection_age"
    );
}

/// The settings the receiver accepts without acting on them are the ones it warns about.
#[test]
fn settings_without_effect_are_named() {
    let config = serde_json::json!({"protocols": {
        "grpc": {
            "include_metadata": true,
            "read_buffer_size": 524288,
            "keepalive": {
                "server_parameters": {"max_connection_idle": "1m", "max_connection_age": "5m"},
                "enforcement_policy": {"min_time": "10s"},
            },
        },
        "http": {
            "include_metadata": false,
            "cors": {"allowed_origins": ["https://x"]},
            "write_timeout": "30s",
        },
    }});
    assert!(OtlpReceiverFactory.parse_config(&config).is_ok());
    let named: Vec<String> = NoEffect::warnings(OtlpReceiverFactory.without_effect(), &config)
        .into_iter()
        .map(|w| w.path)
        .collect();
    assert_eq!(
        named,
        [
            "protocols.http.write_timeout",
            "protocols.grpc.read_buffer_size",
            "protocols.grpc.keepalive.server_parameters.max_connection_idle",
            "protocols.grpc.keepalive.enforcement_policy",
        ]
    );
}

/// A receiver with only gRPC, from the config as YAML would give it, feeding `consumer`.
async fn grpc_only(grpc: serde_json::Value, consumer: ConsumerRef) -> (OtlpReceiver, SocketAddr) {
    let mut grpc = grpc;
    grpc["endpoint"] = "127.0.0.1:0".into();
    let config = OtlpReceiverFactory
        .parse_config(&serde_json::json!({"protocols": {"grpc": grpc}}))
        .unwrap();
    let config = config.downcast_ref::<OtlpReceiverConfig>().unwrap().clone();
    let consumers = Signal::ALL
        .into_iter()
        .map(|s| (s, consumer.clone()))
        .collect();
    let rx = OtlpReceiver::new(
        ComponentId::parse("otlp").unwrap(),
        config,
        consumers,
        &Telemetry::new(),
    );
    rx.start().await.unwrap();
    let addr = rx.local_addrs()[0].1;
    (rx, addr)
}

/// HTTP/2 frame types the raw client below looks for.
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;

/// A bare HTTP/2 client: the preface and an empty SETTINGS frame, then it only reads; it
/// acknowledges SETTINGS, and PINGs only if `answer_pings`. Returns each frame type with when
/// it arrived, and when the server closed the connection (`None`: still open after `limit`).
async fn frames_until_closed(
    addr: SocketAddr,
    answer_pings: bool,
    limit: Duration,
) -> (Vec<(u8, Duration)>, Option<Duration>) {
    let start = tokio::time::Instant::now();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let mut seen = Vec::new();
    let read = async {
        loop {
            let mut header = [0u8; 9];
            if s.read_exact(&mut header).await.is_err() {
                return start.elapsed();
            }
            let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
            let (kind, flags) = (header[3], header[4]);
            let mut payload = vec![0u8; len];
            if s.read_exact(&mut payload).await.is_err() {
                return start.elapsed();
            }
            seen.push((kind, start.elapsed()));
            let answer = match kind {
                SETTINGS if flags & 1 == 0 => vec![0, 0, 0, SETTINGS, 1, 0, 0, 0, 0],
                PING if flags & 1 == 0 && answer_pings => {
                    let mut ack = vec![0, 0, 8, PING, 1, 0, 0, 0, 0];
                    ack.extend_from_slice(&payload);
                    ack
                }
                _ => continue,
            };
            if s.write_all(&answer).await.is_err() {
                return start.elapsed();
            }
        }
    };
    let closed = tokio::time::timeout(limit, read).await.ok();
    (seen, closed)
}

/// `time` and `timeout`: a silent client is pinged after `time`, and a client that does not
/// answer is dropped `timeout` later, with no GOAWAY for age along the way (none configured).
#[tokio::test]
async fn keepalive_pings_a_silent_client_and_drops_it_when_it_does_not_answer() {
    let (rx, addr) = grpc_only(
        serde_json::json!({"keepalive": {"server_parameters": {"time": "1s", "timeout": "1s"}}}),
        Arc::new(Capture::default()),
    )
    .await;
    let (frames, closed) = frames_until_closed(addr, false, Duration::from_secs(20)).await;
    let ping = frames.iter().find(|(k, _)| *k == PING).map(|(_, t)| *t);
    let ping = ping.unwrap_or_else(|| panic!("no ping: {frames:?}"));
    assert!(
        ping >= Duration::from_millis(900),
        "pinged after {ping:?}: {frames:?}"
    );
    let closed = closed.unwrap_or_else(|| panic!("the connection stayed open: {frames:?}"));
    assert!(
        closed >= ping + Duration::from_millis(900),
        "closed {closed:?}, before the ping timed out: {frames:?}"
    );
    assert!(
        frames.iter().all(|(k, t)| *k != GOAWAY || *t >= ping),
        "went away before the ping: {frames:?}"
    );
    rx.shutdown().await;
}

/// A consumer that holds every payload until released: a request in flight for as long as
/// the test wants.
struct Held(tokio::sync::Semaphore);

impl Consumer for Held {
    fn consume(&self, _: Payload) -> BoxFuture<'_, Result<(), ConsumeError>> {
        Box::pin(async move {
            let _ = self.0.acquire().await;
            Ok(())
        })
    }
}

/// One OTLP/gRPC Export over a fresh HTTP/2 connection (a client of its own), as raw bytes.
fn export_over_new_connection(
    addr: SocketAddr,
) -> impl std::future::Future<Output = Result<::http::StatusCode, String>> {
    use hyper_util::rt::TokioExecutor;
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let message = traces(1).encode_to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(&message);
    let request = ::http::Request::post(format!(
        "http://{addr}/opentelemetry.proto.collector.trace.v1.TraceService/Export"
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(http_body_util::Full::new(bytes::Bytes::from(body)))
    .unwrap();
    async move {
        client
            .request(request)
            .await
            .map(|answer| answer.status())
            .map_err(|e| format!("{e:?}"))
    }
}

/// `max_connection_age`: the server says GOAWAY once the connection is that old, and a
/// request in flight still finishes; with `max_connection_age_grace`, one still running when
/// the grace has passed has its connection closed under it.
#[tokio::test]
async fn max_connection_age_sends_goaway_and_the_grace_bounds_requests_in_flight() {
    // GOAWAY at the age, then the connection (no request on it) closes.
    let (rx, addr) = grpc_only(
        serde_json::json!({"keepalive": {"server_parameters": {"max_connection_age": "300ms"}}}),
        Arc::new(Capture::default()),
    )
    .await;
    let (frames, closed) = frames_until_closed(addr, true, Duration::from_secs(20)).await;
    let away = frames.iter().find(|(k, _)| *k == GOAWAY).map(|(_, t)| *t);
    let away = away.unwrap_or_else(|| panic!("no GOAWAY: {frames:?}"));
    assert!(away >= Duration::from_millis(250), "GOAWAY after {away:?}");
    assert!(closed.is_some(), "the connection stayed open: {frames:?}");
    rx.shutdown().await;

    // No grace: a request in flight at the age finishes, however long it takes.
    let held = Arc::new(Held(tokio::sync::Semaphore::new(0)));
    let (rx, addr) = grpc_only(
        serde_json::json!({"keepalive": {"server_parameters": {"max_connection_age": "300ms"}}}),
        held.clone(),
    )
    .await;
    let mut request = Box::pin(export_over_new_connection(addr));
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), &mut request)
            .await
            .is_err(),
        "the request ended before it was released"
    );
    held.0.add_permits(1000);
    assert_eq!(request.await, Ok(::http::StatusCode::OK));
    rx.shutdown().await;

    // A grace: the connection is closed under the request once age + grace has passed.
    let held = Arc::new(Held(tokio::sync::Semaphore::new(0)));
    let (rx, addr) = grpc_only(
        serde_json::json!({"keepalive": {"server_parameters": {
            "max_connection_age": "300ms", "max_connection_age_grace": "300ms"
        }}}),
        held.clone(),
    )
    .await;
    let started = tokio::time::Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(20), export_over_new_connection(addr))
        .await
        .expect("the request outlived age + grace");
    assert!(answer.is_err(), "answered: {answer:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(550),
        "{:?}",
        started.elapsed()
    );
    held.0.add_permits(1000);
    rx.shutdown().await;
}

/// A receiver with only HTTP, from the config as YAML would give it, feeding a capture.
async fn http_only(http: serde_json::Value) -> (OtlpReceiver, SocketAddr, Telemetry) {
    let mut http = http;
    http["endpoint"] = "127.0.0.1:0".into();
    let config = OtlpReceiverFactory
        .parse_config(&serde_json::json!({"protocols": {"http": http}}))
        .unwrap();
    let config = config.downcast_ref::<OtlpReceiverConfig>().unwrap().clone();
    let cap: ConsumerRef = Arc::new(Capture::default());
    let consumers = Signal::ALL.into_iter().map(|s| (s, cap.clone())).collect();
    let t = Telemetry::new();
    let rx = OtlpReceiver::new(ComponentId::parse("otlp").unwrap(), config, consumers, &t);
    rx.start().await.unwrap();
    let addr = rx.local_addrs()[0].1;
    (rx, addr, t)
}

/// How long until the server closes `s` (reads until EOF or reset), or `None` if still open
/// after `limit`. Any answer bytes are returned too.
async fn closed_after(
    s: &mut tokio::net::TcpStream,
    limit: Duration,
) -> (Option<Duration>, Vec<u8>) {
    let start = std::time::Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(
            tokio::time::Instant::from_std(start + limit),
            s.read(&mut buf),
        )
        .await
        {
            Err(_) => return (None, got),
            Ok(Ok(0)) | Ok(Err(_)) => return (Some(start.elapsed()), got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// One keep-alive OTLP/HTTP request (empty protobuf body) on `s`; returns the status line.
async fn keepalive_request(s: &mut tokio::net::TcpStream) -> String {
    s.write_all(
        b"POST /v1/traces HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    // The answer is small: read until its (empty or `{}`) body has come after the head.
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert!(n > 0, "closed without an answer");
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

/// Issue 16 item 9: half-open connections (nothing sent, half a header) and idle keep-alive
/// connections are closed after `read_header_timeout` / `idle_timeout`, and a connection in
/// use is not.
#[tokio::test]
async fn http_closes_half_open_and_idle_connections_after_their_timeouts() {
    let (rx, addr, t) = http_only(serde_json::json!({
        "read_header_timeout": "400ms",
        "idle_timeout": "700ms",
    }))
    .await;
    let limit = Duration::from_secs(5);
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut partial = tokio::net::TcpStream::connect(addr).await.unwrap();
    partial
        .write_all(b"POST /v1/traces HTTP/1.1\r\nhost: x\r\ncontent-type: appl")
        .await
        .unwrap();
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(
        keepalive_request(&mut idle)
            .await
            .starts_with("HTTP/1.1 200")
    );
    let ((silent_at, _), (partial_at, partial_got), (idle_at, _)) = tokio::join!(
        closed_after(&mut silent, limit),
        closed_after(&mut partial, limit),
        closed_after(&mut idle, limit),
    );
    for (what, at, min) in [
        ("silent", silent_at, 400),
        ("half a header", partial_at, 400),
        ("idle keep-alive", idle_at, 700),
    ] {
        let at = at.unwrap_or_else(|| panic!("{what} connection still open after {limit:?}"));
        // Measured from after the connection opened (or the answer), so a little under.
        assert!(
            at >= Duration::from_millis(min - 100),
            "{what} closed after {at:?}, before its timeout"
        );
    }
    assert!(partial_got.is_empty(), "no answer to half a header");
    let timed_out = t
        .value(
            "otelcol_receiver_failed_requests",
            &[
                ("receiver", "otlp"),
                ("transport", "http"),
                ("reason", "read_header_timeout"),
            ],
        )
        .unwrap_or(0.0);
    assert_eq!(timed_out, 2.0, "the silent and the half-header connections");

    // A connection that keeps sending requests within the idle timeout stays open.
    let mut busy = tokio::net::TcpStream::connect(addr).await.unwrap();
    for _ in 0..4 {
        assert!(
            keepalive_request(&mut busy)
                .await
                .starts_with("HTTP/1.1 200")
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    rx.shutdown().await;
}

/// Issue 16 item 9: over `max_connections`, a new connection is not served (it waits in the
/// listen backlog) while the open ones keep working; it is served once one of them closes.
#[tokio::test]
async fn http_connection_limit_makes_new_connections_wait_while_open_ones_work() {
    let (rx, addr, _t) = http_only(serde_json::json!({"max_connections": 2})).await;
    let mut first = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut second = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(
        keepalive_request(&mut first)
            .await
            .starts_with("HTTP/1.1 200")
    );
    assert!(
        keepalive_request(&mut second)
            .await
            .starts_with("HTTP/1.1 200")
    );
    // The third connects (the kernel's backlog) but gets no answer while two are open.
    let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
    let third_answer = tokio::spawn(async move {
        let status = keepalive_request(&mut third).await;
        (status, std::time::Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!third_answer.is_finished(), "served over the limit");
    assert!(
        keepalive_request(&mut first)
            .await
            .starts_with("HTTP/1.1 200")
    );
    let closed_second = std::time::Instant::now();
    drop(second);
    let (status, answered) = tokio::time::timeout(Duration::from_secs(5), third_answer)
        .await
        .expect("served once a connection closed")
        .unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(answered >= closed_second);
    drop(first);
    rx.shutdown().await;
}

#[test]
fn http_connection_settings_have_the_collectors_defaults() {
    let parse = |http: serde_json::Value| {
        let c = OtlpReceiverFactory
            .parse_config(&serde_json::json!({"protocols": {"http": http}}))
            .unwrap();
        c.downcast_ref::<OtlpReceiverConfig>()
            .unwrap()
            .protocols
            .http
            .clone()
            .unwrap()
            .connection_limits()
    };
    let d = parse(serde_json::json!({}));
    assert_eq!(d.read_header_timeout, Some(Duration::from_secs(60)));
    assert_eq!(d.idle_timeout, Some(Duration::from_secs(60)));
    assert_eq!(d.read_timeout, None);
    assert_eq!(d.max_connections, 4096);
    // Go's zero values: none, and a zero idle timeout falls back to read_timeout.
    let z = parse(
        serde_json::json!({"read_header_timeout": "0s", "idle_timeout": "0s", "read_timeout": "30s"}),
    );
    assert_eq!(z.read_header_timeout, None);
    assert_eq!(z.idle_timeout, Some(Duration::from_secs(30)));
    let e = OtlpReceiverFactory
        .parse_config(&serde_json::json!({"protocols": {"http": {"max_connections": 0}}}))
        .unwrap_err();
    assert_eq!(e.path, "protocols.http.max_connections");
}

/// `read_timeout`: a body that does not arrive in time gets 408 and the connection is closed.
#[tokio::test]
async fn http_read_timeout_answers_a_stalled_body_with_408() {
    let (rx, addr, t) = http_only(serde_json::json!({"read_timeout": "300ms"})).await;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"POST /v1/traces HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-protobuf\r\ncontent-length: 100\r\n\r\n\x0a\x00",
    )
    .await
    .unwrap();
    let (closed, got) = closed_after(&mut s, Duration::from_secs(5)).await;
    let closed = closed.expect("closed after the read timeout");
    assert!(closed >= Duration::from_millis(250), "{closed:?}");
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains("read_timeout"), "{got}");
    let labels = [
        ("receiver", "otlp"),
        ("transport", "http"),
        ("reason", "read_timeout"),
    ];
    assert_eq!(
        t.value("otelcol_receiver_failed_requests", &labels),
        Some(1.0)
    );
    rx.shutdown().await;
}

/// Issue 16 item 9, gRPC side: a connection that sends nothing (no HTTP/2 preface) is closed
/// after `connection_timeout`; over `max_connections` a new client waits until one closes,
/// while the open ones keep working.
#[tokio::test]
async fn grpc_closes_silent_connections_and_caps_connections() {
    let cap = Arc::new(Capture::default());
    let (rx, addr) = grpc_only(
        serde_json::json!({"connection_timeout": "400ms", "max_connections": 2}),
        cap.clone(),
    )
    .await;
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (closed, _) = closed_after(&mut silent, Duration::from_secs(5)).await;
    let closed = closed.expect("a silent connection is closed");
    assert!(closed >= Duration::from_millis(300), "{closed:?}");
    drop(silent);

    let url = format!("http://{addr}");
    let mut first = TraceServiceClient::connect(url.clone()).await.unwrap();
    let mut second = TraceServiceClient::connect(url.clone()).await.unwrap();
    first.export(traces(1)).await.unwrap();
    second.export(traces(1)).await.unwrap();
    // Both stay open past connection_timeout: it only bounds the wait for the first bytes.
    tokio::time::sleep(Duration::from_millis(600)).await;
    first.export(traces(1)).await.unwrap();
    let third = tokio::spawn(async move {
        let mut third = TraceServiceClient::connect(url).await?;
        third
            .export(traces(1))
            .await
            .map_err(Into::into)
            .map(|_| ()) as Result<(), Box<dyn std::error::Error + Send + Sync>>
    });
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!third.is_finished(), "served over the limit");
    second.export(traces(1)).await.unwrap();
    drop(second);
    tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .expect("served once a connection closed")
        .unwrap()
        .unwrap();
    assert_eq!(cap.items(), 5);
    drop(first);
    rx.shutdown().await;
}

/// A pipeline that takes the data at once (as a batch buffer does) and then takes its time
/// before answering (as a batch processor flushing downstream does).
struct TakesThenWaits {
    got: Mutex<usize>,
    wait: Duration,
}

impl Consumer for TakesThenWaits {
    fn consume(&self, p: Payload) -> BoxFuture<'_, Result<(), ConsumeError>> {
        *self.got.lock().unwrap() += p.item_count();
        Box::pin(async move {
            tokio::time::sleep(self.wait).await;
            Ok(())
        })
    }
}

/// Issue 16 item 5: clients that give up mid-request (a gRPC deadline; an HTTP client that
/// closes its connection) and retry. Everything that reached the pipeline is counted as
/// accepted, so the receiver's counter matches what was written downstream.
#[tokio::test]
async fn cancelled_requests_are_counted_as_what_the_pipeline_took() {
    let pipeline = Arc::new(TakesThenWaits {
        got: Mutex::new(0),
        wait: Duration::from_millis(300),
    });
    let consumers: SignalConsumers = Signal::ALL
        .into_iter()
        .map(|s| (s, pipeline.clone() as ConsumerRef))
        .collect();
    let t = Telemetry::new();
    let config = OtlpReceiverConfig {
        protocols: Protocols {
            grpc: Some(GrpcConfig {
                endpoint: "127.0.0.1:0".into(),
                ..Default::default()
            }),
            http: Some(HttpConfig {
                endpoint: "127.0.0.1:0".into(),
                ..Default::default()
            }),
        },
    };
    let rx = OtlpReceiver::new(ComponentId::parse("otlp").unwrap(), config, consumers, &t);
    rx.start().await.unwrap();
    let addrs = rx.local_addrs();
    let find = |k| addrs.iter().find(|(n, _)| *n == k).unwrap().1;
    let (grpc, http) = (find("grpc"), find("http"));

    // gRPC: a 50 ms deadline, three tries, each given up on.
    let mut client = TraceServiceClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    for _ in 0..3 {
        let mut req = tonic::Request::new(traces(10));
        req.set_timeout(Duration::from_millis(50));
        let status = client.export(req).await.expect_err("deadline passes first");
        assert!(
            matches!(
                status.code(),
                tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
            ),
            "{status:?}"
        );
    }
    // HTTP: the whole request sent, then the connection closed before the answer.
    let body = traces(7).encode_to_vec();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(http).await.unwrap();
        let head = format!(
            "POST /v1/traces HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-protobuf\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&body).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(s);
    }
    // Once the pipeline has answered, every span it took is counted.
    let accepted = |transport| {
        t.value(
            "otelcol_receiver_accepted_spans",
            &[("receiver", "otlp"), ("transport", transport)],
        )
        .unwrap_or(0.0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while accepted("grpc") + accepted("http") < 44.0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let took = *pipeline.got.lock().unwrap();
    assert_eq!(took, 3 * 10 + 2 * 7, "the pipeline took every try");
    assert_eq!(accepted("grpc"), 30.0);
    assert_eq!(accepted("http"), 14.0);
    rx.shutdown().await;
}

/// `protocols.http.cors`: a browser's preflight from an allowed origin (exact or by wildcard)
/// is answered 204 with the CORS headers; from another origin, or asking for a header not
/// allowed, 204 without them; the actual POST's answer carries the origin; without `cors`
/// a preflight is a 405 as before.
#[tokio::test]
async fn cors_preflights_and_answers_follow_the_allowed_origins() {
    let cap = Arc::new(Capture::default());
    let consumers: SignalConsumers = Signal::ALL
        .into_iter()
        .map(|s| (s, cap.clone() as ConsumerRef))
        .collect();
    let parsed = OtlpReceiverFactory
        .parse_config(&serde_json::json!({"protocols": {"http": {
            "endpoint": "127.0.0.1:0",
            "cors": {"allowed_origins": ["https://app.example.com", "https://*.shop.example"],
                     "allowed_headers": ["X-Tenant"], "max_age": 7200},
        }}}))
        .unwrap();
    let config = parsed.downcast_ref::<OtlpReceiverConfig>().unwrap().clone();
    let t = Telemetry::new();
    let rx = OtlpReceiver::new(ComponentId::parse("otlp").unwrap(), config, consumers, &t);
    rx.start().await.unwrap();
    let http = rx
        .local_addrs()
        .iter()
        .find(|(n, _)| *n == "http")
        .unwrap()
        .1;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let send = |method: &str, headers: &[(&str, &str)], body: Vec<u8>| {
        let mut req = ::http::Request::builder()
            .method(method)
            .uri(format!("http://{http}/v1/traces"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .unwrap();
        let client = client.clone();
        async move { client.request(req).await.unwrap() }
    };
    let preflight = |origin: &'static str, headers: &'static str| {
        send(
            "OPTIONS",
            &[
                ("origin", origin),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", headers),
            ],
            vec![],
        )
    };
    let acao = |r: &::http::Response<hyper::body::Incoming>| {
        r.headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap().to_string())
    };

    let r = preflight("https://app.example.com", "content-type").await;
    assert_eq!(r.status(), 204);
    assert_eq!(acao(&r).as_deref(), Some("https://app.example.com"));
    assert_eq!(r.headers()["access-control-allow-methods"], "POST");
    assert_eq!(r.headers()["access-control-allow-headers"], "content-type");
    assert_eq!(r.headers()["access-control-max-age"], "7200");
    assert_eq!(r.headers()["access-control-allow-credentials"], "true");
    let r = preflight("https://eu.shop.example", "x-tenant, content-type").await;
    assert_eq!(acao(&r).as_deref(), Some("https://eu.shop.example"));
    for (origin, headers) in [
        ("https://evil.example", "content-type"),
        ("https://shop.example", "content-type"), // the wildcard needs something before .shop
        ("https://app.example.com", "authorization"),
    ] {
        let r = preflight(origin, headers).await;
        assert_eq!(r.status(), 204, "{origin}");
        assert_eq!(acao(&r), None, "{origin} {headers}");
    }

    let body = traces(2).encode_to_vec();
    let ok = send(
        "POST",
        &[
            ("origin", "https://app.example.com"),
            ("content-type", "application/x-protobuf"),
        ],
        body.clone(),
    )
    .await;
    assert_eq!(ok.status(), 200);
    assert_eq!(acao(&ok).as_deref(), Some("https://app.example.com"));
    let other = send(
        "POST",
        &[
            ("origin", "https://evil.example"),
            ("content-type", "application/x-protobuf"),
        ],
        body,
    )
    .await;
    assert_eq!(
        other.status(),
        200,
        "not a browser: served, only without CORS headers"
    );
    assert_eq!(acao(&other), None);
    assert_eq!(cap.items(), 4);
    rx.shutdown().await;

    // Without cors: a preflight is a method the route does not take.
    let plain = rig(1 << 20).await;
    let r = client
        .request(
            ::http::Request::builder()
                .method("OPTIONS")
                .uri(format!("http://{}/v1/traces", plain.http))
                .header("origin", "https://app.example.com")
                .header("access-control-request-method", "POST")
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

#[test]
fn a_cors_origin_with_two_wildcards_is_refused() {
    let e = OtlpReceiverFactory
        .parse_config(&serde_json::json!({"protocols": {"http": {
            "cors": {"allowed_origins": ["https://*.*.example"]}}}}))
        .unwrap_err();
    assert_eq!(e.path, "protocols.http.cors");
}

/// A pipeline that keeps wire forms gets a clean protobuf request as its bytes (gRPC, HTTP,
/// compressed or not), counted as today; JSON, metrics and anything the skim does not find
/// clean are decoded, with today's answers: a malformed request is refused before it is
/// acknowledged, a string that is not UTF-8 is repaired and counted.
#[tokio::test]
async fn a_pipeline_keeping_wire_forms_gets_clean_requests_as_bytes_and_the_rest_as_today() {
    let r = rig_with(
        1 << 20,
        Capture {
            wire: true,
            ..Default::default()
        },
        Telemetry::new(),
    )
    .await;
    let url = format!("http://{}", r.grpc);
    let take = || std::mem::take(&mut *r.cap.got.lock().unwrap());

    // gRPC: the request's bytes, its items counted.
    let req = traces(5);
    TraceServiceClient::connect(url.clone())
        .await
        .unwrap()
        .export(req.clone())
        .await
        .unwrap();
    let got = take();
    let wire = got[0].wire().expect("a clean request arrives as its bytes");
    assert_eq!(wire.items(), 5);
    assert_eq!(wire.to_bytes(), req.encode_to_vec());
    assert_eq!(got[0].item_count(), 5);
    assert!(got[0].origin.is_some());
    // Its tables, when someone reads them, are the decoded request's.
    sluice_engine::otlp::testing::assert_payload_eq(
        &got[0],
        &sluice_engine::otlp::decode(Signal::Traces, &req.encode_to_vec()).unwrap(),
    );

    // HTTP protobuf, gzip: the decompressed request's bytes.
    let pb = logs(3).encode_to_vec();
    let (code, _, _) = http(
        r.http,
        "/v1/logs",
        &[PB, ("content-encoding", "gzip")],
        &gzip(&pb),
    )
    .await;
    assert_eq!(code, 200);
    let got = take();
    assert_eq!(got[0].wire().map(|w| w.to_bytes()), Some(pb.clone().into()));

    // Metrics: as bytes too.
    let m = metrics(2).encode_to_vec();
    let (code, _, _) = http(r.http, "/v1/metrics", &[PB], &m).await;
    assert_eq!(code, 200);
    let got = take();
    assert_eq!(got[0].wire().map(|w| w.to_bytes()), Some(m.into()));
    assert_eq!(got[0].item_count(), 2);

    // JSON decodes.
    let json = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../engine/testdata/otlp-examples/logs.json"
    ))
    .unwrap();
    let json_records = sluice_engine::otlp::decode_json(Signal::Logs, &json)
        .unwrap()
        .item_count();
    let (code, _, _) = http(r.http, "/v1/logs", &[JSON], &json).await;
    assert_eq!(code, 200);
    let got = take();
    assert!(got[0].wire().is_none());
    assert_eq!(got[0].item_count(), json_records);

    // Malformed: refused before it is acknowledged, as today.
    let (code, _, body) = http(r.http, "/v1/traces", &[PB], &req.encode_to_vec()[..20]).await;
    assert_eq!(code, 400);
    assert!(String::from_utf8_lossy(&body).contains("malformed OTLP protobuf"));
    let channel = tonic::transport::Channel::from_shared(url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut raw = tonic::client::Grpc::new(channel);
    raw.ready().await.unwrap();
    let err = raw
        .unary(
            tonic::Request::new(bytes::Bytes::from_static(
                b"\x0a\xff\xff\xff\xff\x0fgarbage",
            )),
            ::http::uri::PathAndQuery::from_static(
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            ),
            super::grpc::RawCodec,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(take().is_empty());

    // Invalid UTF-8 in a span name: taken, repaired, counted; not forwarded as bytes.
    let mut bad = traces(2);
    bad.resource_spans[0].scope_spans[0].spans[1].name = "\u{1F600}".into();
    let mut bytes = bad.encode_to_vec();
    let at = bytes
        .windows(4)
        .position(|w| w == "\u{1F600}".as_bytes())
        .unwrap();
    bytes[at] = 0xff;
    let (code, _, _) = http(r.http, "/v1/traces", &[PB], &bytes).await;
    assert_eq!(code, 200);
    let got = take();
    assert!(got[0].wire().is_none());
    let names = got[0].table(sluice_engine::Table::Spans).clone();
    let names = sluice_engine::otlp::encode::columns::Strs::of(&names, "name");
    assert!(String::from_utf8_lossy(names.get(1)).contains('\u{FFFD}'));

    let labels = [("receiver", "otlp"), ("transport", "http")];
    assert_eq!(
        r.t.value("sluice_receiver_invalid_utf8_strings", &labels),
        Some(1.0)
    );
    // One gRPC and two HTTP requests went on as bytes; the rest were decoded.
    assert_eq!(
        r.t.value("sluice_receiver_undecoded_requests", &labels),
        Some(2.0)
    );
    assert_eq!(
        r.t.value(
            "sluice_receiver_undecoded_requests",
            &[("receiver", "otlp"), ("transport", "grpc")]
        ),
        Some(1.0)
    );
    assert_eq!(
        r.t.value("otelcol_receiver_accepted_spans", &labels),
        Some(2.0)
    );
    assert_eq!(
        r.t.value("otelcol_receiver_accepted_log_records", &labels),
        Some((3 + json_records) as f64)
    );
    assert_eq!(
        r.t.value(
            "otelcol_receiver_accepted_spans",
            &[("receiver", "otlp"), ("transport", "grpc")]
        ),
        Some(5.0)
    );
}
