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

#[derive(Default)]
struct Capture {
    got: Mutex<Vec<Payload>>,
    refuse: Mutex<Option<ConsumeError>>,
}

impl Consumer for Capture {
    fn consume(&self, p: sluice_engine::Payload) -> BoxFuture<'_, Result<(), ConsumeError>> {
        Box::pin(async move {
            if let Some(e) = self.refuse.lock().unwrap().clone() {
                return Err(e);
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
