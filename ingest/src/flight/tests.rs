//! The receiver against a real Flight client on loopback (arrow-flight's generated tonic
//! client) sending streams the engine's encoder makes, valid and broken.

use std::sync::Mutex;
use std::time::Duration;

use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{FlightData, FlightDescriptor};
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use sluice_engine::Payload;
use sluice_engine::component::{ConsumeError, Consumer, ConsumerRef};
use sluice_engine::flight::{Compression, Encoder, hello};
use sluice_engine::otlp::testing::{assert_payload_eq, reference_logs, reference_traces};
use sluice_engine::schema::Table;
use tonic::Code;

use super::*;

#[derive(Default)]
struct Capture {
    got: Mutex<Vec<Payload>>,
    refuse: Mutex<Option<ConsumeError>>,
    /// Stands for a pipeline that starts with a memory limiter.
    limited: bool,
}

impl Consumer for Capture {
    fn memory_limited(&self) -> bool {
        self.limited
    }

    fn consume(&self, p: Payload) -> BoxFuture<'_, Result<(), ConsumeError>> {
        Box::pin(async move {
            if let Some(e) = self.refuse.lock().unwrap().clone() {
                return Err(e);
            }
            self.got.lock().unwrap().push(p);
            Ok(())
        })
    }
}

struct Rig {
    rx: FlightReceiver,
    cap: Arc<Capture>,
    t: Telemetry,
    addr: SocketAddr,
}

async fn rig_with(config: FlightReceiverConfig, signals: &[Signal]) -> Rig {
    rig_on(config, signals, Capture::default(), Telemetry::new()).await
}

async fn rig_on(
    config: FlightReceiverConfig,
    signals: &[Signal],
    cap: Capture,
    t: Telemetry,
) -> Rig {
    let cap = Arc::new(cap);
    let consumers: SignalConsumers = signals
        .iter()
        .map(|&s| (s, cap.clone() as ConsumerRef))
        .collect();
    let rx = FlightReceiver::new(ComponentId::parse("flight").unwrap(), config, consumers, &t);
    rx.start().await.unwrap();
    let addr = rx.local_addr().unwrap();
    Rig { rx, cap, t, addr }
}

async fn rig() -> Rig {
    rig_with(
        FlightReceiverConfig {
            endpoint: "127.0.0.1:0".into(),
            ..Default::default()
        },
        &Signal::ALL,
    )
    .await
}

fn traces(n: usize) -> Payload {
    let spans = (0..n)
        .map(|i| Span {
            trace_id: vec![7; 16],
            span_id: (i as u64 + 1).to_be_bytes().to_vec(),
            name: format!("op{i}"),
            ..Default::default()
        })
        .collect();
    reference_traces(&ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

fn logs(n: usize) -> Payload {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    reference_logs(&ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: (0..n)
                    .map(|i| LogRecord {
                        time_unix_nano: i as u64,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

fn to_flight(m: sluice_engine::flight::WireMessage) -> FlightData {
    FlightData {
        flight_descriptor: None,
        data_header: m.header,
        app_metadata: m.app_metadata,
        data_body: m.body,
    }
}

fn hello_message(cmd: Bytes) -> FlightData {
    FlightData {
        flight_descriptor: Some(FlightDescriptor::new_cmd(cmd)),
        ..Default::default()
    }
}

/// The Flight messages of `payloads` on one stream, hello first.
fn stream_of(payloads: &[Payload]) -> Vec<FlightData> {
    let mut enc = Encoder::new(Compression::Zstd);
    let mut msgs = Vec::new();
    for p in payloads {
        enc.encode(p, &mut msgs).unwrap();
    }
    std::iter::once(hello_message(hello()))
        .chain(msgs.into_iter().map(to_flight))
        .collect()
}

async fn client(addr: SocketAddr) -> FlightServiceClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    FlightServiceClient::new(channel)
}

/// Sends `messages` on one DoPut stream (then closes it) and reads every answer: the acks and
/// how the stream ended (`None`: cleanly).
async fn put(addr: SocketAddr, messages: Vec<FlightData>) -> (Vec<Ack>, Option<tonic::Status>) {
    let mut client = client(addr).await.max_encoding_message_size(64 << 20);
    let response = match client.do_put(tokio_stream::iter(messages)).await {
        Ok(r) => r,
        Err(s) => return (vec![], Some(s)),
    };
    let mut stream = response.into_inner();
    let mut acks = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(r)) => acks.push(Ack::parse(&r.app_metadata).unwrap()),
            Ok(None) => return (acks, None),
            Err(s) => return (acks, Some(s)),
        }
    }
}

fn failed(t: &Telemetry, reason: &str) -> f64 {
    t.value(
        "otelcol_receiver_failed_requests",
        &[
            ("receiver", "flight"),
            ("transport", "flight"),
            ("reason", reason),
        ],
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn streams_deliver_payloads_in_order_with_their_origin() {
    let r = rig().await;
    let mut from_app = traces(3);
    from_app.origin = Some("10.2.3.4:5555".parse().unwrap());
    let sent = [from_app, logs(2), traces(4)];
    let (acks, end) = put(r.addr, stream_of(&sent)).await;
    assert!(end.is_none(), "{end:?}");
    assert_eq!(acks, vec![Ack::ok(1), Ack::ok(2), Ack::ok(3)]);
    let got = r.cap.got.lock().unwrap().clone();
    assert_eq!(got.len(), 3);
    for (s, g) in sent.iter().zip(&got) {
        assert_payload_eq(s, g);
    }
    assert_eq!(
        got[0].origin, sent[0].origin,
        "the agent's client, as the agent said"
    );
    assert!(
        got[1].origin.is_some_and(|o| o.ip().is_loopback()),
        "no origin given: the sending peer"
    );
    let accepted = |name| {
        r.t.value(name, &[("receiver", "flight"), ("transport", "flight")])
            .unwrap_or(0.0)
    };
    assert_eq!(accepted("otelcol_receiver_accepted_spans"), 7.0);
    assert_eq!(accepted("otelcol_receiver_accepted_log_records"), 2.0);
    r.rx.shutdown().await;
}

#[tokio::test]
async fn refusals_are_answered_per_payload_and_the_stream_goes_on() {
    let r = rig_with(
        FlightReceiverConfig {
            endpoint: "127.0.0.1:0".into(),
            ..Default::default()
        },
        &[Signal::Traces],
    )
    .await;
    *r.cap.refuse.lock().unwrap() = Some(ConsumeError::Refused("memory limiter".into()));
    // Memory pressure refuses the traces payload, the logs payload finds no pipeline: each
    // is answered, neither ends the stream.
    let (acks, end) = put(r.addr, stream_of(&[traces(2), logs(1)])).await;
    assert!(end.is_none(), "{end:?}");
    assert_eq!(acks[0].code, Ack::RESOURCE_EXHAUSTED);
    assert!(acks[0].message.contains("memory limiter"), "{:?}", acks[0]);
    assert_eq!(acks[1].code, Ack::UNIMPLEMENTED);
    *r.cap.refuse.lock().unwrap() = Some(ConsumeError::Unavailable("queue full".into()));
    let (acks, _) = put(r.addr, stream_of(&[traces(1)])).await;
    assert_eq!(acks[0].code, Ack::UNAVAILABLE);
    *r.cap.refuse.lock().unwrap() = None;
    let (acks, _) = put(r.addr, stream_of(&[traces(1)])).await;
    assert_eq!(acks, vec![Ack::ok(1)]);
    let refused = r.t.value(
        "otelcol_receiver_refused_spans",
        &[("receiver", "flight"), ("transport", "flight")],
    );
    assert_eq!(refused, Some(3.0));
    r.rx.shutdown().await;
}

#[tokio::test]
async fn another_version_is_refused_with_failed_precondition_and_counted() {
    let r = rig().await;
    let (_, end) = put(
        r.addr,
        vec![hello_message(Bytes::from_static(b"sluice-arrow/1"))],
    )
    .await;
    let end = end.unwrap();
    assert_eq!(end.code(), Code::FailedPrecondition);
    let this = format!("sluice-arrow/{}", sluice_engine::flight::VERSION);
    assert!(
        end.message().contains("sluice-arrow/1") && end.message().contains(&this),
        "{end:?}"
    );
    let (_, end) = put(r.addr, vec![hello_message(Bytes::from_static(b"SELECT 1"))]).await;
    assert_eq!(end.unwrap().code(), Code::InvalidArgument);
    let (_, end) = put(r.addr, vec![FlightData::default()]).await;
    assert_eq!(
        end.unwrap().code(),
        Code::InvalidArgument,
        "no descriptor at all"
    );
    assert_eq!(failed(&r.t, "version"), 1.0);
    assert_eq!(failed(&r.t, "decode"), 2.0);
    assert!(r.cap.got.lock().unwrap().is_empty());
    r.rx.shutdown().await;
}

#[tokio::test]
async fn malformed_data_ends_the_stream_with_invalid_argument_after_acking_what_came_before() {
    let r = rig().await;
    let mut messages = stream_of(&[traces(2)]);
    // A garbage IPC header for the spans table, then more (never read).
    messages.push(FlightData {
        data_header: Bytes::from_static(b"\x01\x02\x03 not a flatbuffer"),
        app_metadata: Bytes::from_static(&[10]),
        ..Default::default()
    });
    messages.extend(stream_of(&[traces(1)]).into_iter().skip(1));
    let (acks, end) = put(r.addr, messages).await;
    assert_eq!(acks, vec![Ack::ok(1)]);
    let end = end.unwrap();
    assert_eq!(end.code(), Code::InvalidArgument);
    assert!(end.message().contains("Spans"), "names the table: {end:?}");
    assert_eq!(failed(&r.t, "decode"), 1.0);
    assert_eq!(r.cap.got.lock().unwrap().len(), 1);

    // A payload that reads as Arrow but breaks the data model: refused alone, stream goes on.
    let mut orphan = traces(1);
    let spans = orphan.table(Table::Spans).clone();
    let mut columns = spans.columns().to_vec();
    columns[0] = Arc::new(arrow::array::UInt32Array::from(vec![9u32]));
    orphan
        .set(
            Table::Spans,
            arrow::array::RecordBatch::try_new(spans.schema(), columns).unwrap(),
        )
        .unwrap();
    let (acks, end) = put(r.addr, stream_of(&[orphan, traces(2)])).await;
    assert!(end.is_none(), "{end:?}");
    assert_eq!(acks[0].code, Ack::INVALID_ARGUMENT);
    assert!(acks[0].message.contains("parent_id"), "{:?}", acks[0]);
    assert_eq!(acks[1], Ack::ok(2));
    assert_eq!(failed(&r.t, "decode"), 2.0);
    r.rx.shutdown().await;
}

#[tokio::test]
async fn size_limits_per_message_and_per_payload() {
    let r = rig_with(
        FlightReceiverConfig {
            endpoint: "127.0.0.1:0".into(),
            max_recv_msg_size_mib: 1,
            max_payload_size_mib: 1,
            ..Default::default()
        },
        &Signal::ALL,
    )
    .await;
    // One message over max_recv_msg_size_mib: the stream ends OUT_OF_RANGE.
    let mut messages = stream_of(&[traces(1)]);
    messages.insert(
        1,
        FlightData {
            data_body: Bytes::from(vec![0u8; 2 << 20]),
            app_metadata: Bytes::from_static(&[10]),
            ..Default::default()
        },
    );
    let (acks, end) = put(r.addr, messages).await;
    assert!(acks.is_empty());
    assert_eq!(end.unwrap().code(), Code::OutOfRange);
    assert_eq!(failed(&r.t, "too_large"), 1.0);

    // A payload over max_payload_size_mib in small messages: answered OUT_OF_RANGE (split
    // it), and the next payload goes through.
    let big = traces(40_000);
    let mut enc = Encoder::new(Compression::None).with_max_message_bytes(256 << 10);
    let mut msgs = Vec::new();
    enc.encode(&big, &mut msgs).unwrap();
    enc.encode(&traces(3), &mut msgs).unwrap();
    let messages = std::iter::once(hello_message(hello()))
        .chain(msgs.into_iter().map(to_flight))
        .collect();
    let (acks, end) = put(r.addr, messages).await;
    assert!(end.is_none(), "{end:?}");
    assert_eq!(acks[0].code, Ack::OUT_OF_RANGE);
    assert!(acks[0].message.contains("split"), "{:?}", acks[0]);
    assert_eq!(acks[1], Ack::ok(2));
    assert_eq!(failed(&r.t, "too_large"), 2.0);
    assert_eq!(r.cap.got.lock().unwrap().len(), 1);
    r.rx.shutdown().await;
}

/// Shutdown does not wait for senders to hang up: each stream ends with UNAVAILABLE (what
/// was not acknowledged is sent again elsewhere).
#[tokio::test]
async fn shutdown_ends_open_streams_with_unavailable() {
    let r = rig().await;
    let mut client = client(r.addr).await;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    for m in stream_of(&[traces(2)]) {
        tx.send(m).unwrap();
    }
    let mut acks = client
        .do_put(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let first = acks.message().await.unwrap().unwrap();
    assert_eq!(Ack::parse(&first.app_metadata).unwrap(), Ack::ok(1));
    // The stream stays open (tx alive); shut the receiver down.
    tokio::time::timeout(Duration::from_secs(10), r.rx.shutdown())
        .await
        .expect("shutdown does not wait for open streams");
    let end = acks.message().await.unwrap_err();
    assert_eq!(end.code(), Code::Unavailable);
    drop(tx);
}

#[tokio::test]
async fn tls_streams_work_and_plaintext_clients_are_counted() {
    let pki = sluice_tls::testing::TestPki::new();
    let r = rig_with(
        FlightReceiverConfig {
            endpoint: "127.0.0.1:0".into(),
            tls: Some(sluice_tls::TlsServerSetting {
                cert_file: Some(pki.server_cert.display().to_string()),
                key_file: Some(pki.server_key.display().to_string()),
                ..Default::default()
            }),
            ..Default::default()
        },
        &Signal::ALL,
    )
    .await;
    let setting = sluice_tls::TlsClientSetting {
        ca_file: Some(pki.ca_cert.display().to_string()),
        ..Default::default()
    };
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(setting.load().unwrap())
        .https_only()
        .enable_http2()
        .build();
    let channel =
        tonic::transport::Endpoint::from_shared(format!("https://localhost:{}", r.addr.port()))
            .unwrap()
            .connect_with_connector(connector)
            .await
            .unwrap();
    let mut client = FlightServiceClient::new(channel);
    let mut acks = client
        .do_put(tokio_stream::iter(stream_of(&[traces(2)])))
        .await
        .unwrap()
        .into_inner();
    let ack = acks.message().await.unwrap().unwrap();
    assert_eq!(Ack::parse(&ack.app_metadata).unwrap(), Ack::ok(1));
    assert!(
        r.cap.got.lock().unwrap()[0]
            .origin
            .is_some_and(|o| o.ip().is_loopback())
    );

    let (_, end) = put(r.addr, stream_of(&[traces(1)])).await;
    assert!(end.is_some(), "a plaintext client gets nothing through");
    for _ in 0..200 {
        if failed(&r.t, "tls_handshake") > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(failed(&r.t, "tls_handshake") >= 1.0);
    assert_eq!(r.cap.got.lock().unwrap().len(), 1);
    r.rx.shutdown().await;
}

#[tokio::test]
async fn other_flight_methods_are_unimplemented() {
    let r = rig().await;
    let mut client = client(r.addr).await;
    let e = client
        .get_flight_info(FlightDescriptor::new_cmd(Bytes::from_static(b"x")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
    assert!(e.message().contains("DoPut"), "{e:?}");
    r.rx.shutdown().await;
}

#[test]
fn config_defaults_and_checks() {
    let f = FlightReceiverFactory;
    let c = f
        .parse_config(&serde_json::Value::Null)
        .unwrap()
        .downcast::<FlightReceiverConfig>()
        .unwrap();
    assert_eq!(c.endpoint, "localhost:4319");
    assert_eq!(c.max_recv_msg_size_mib, 4);
    assert_eq!(c.max_payload_size_mib, 64);
    assert!(c.tls.is_none());
    let e = f
        .parse_config(&serde_json::json!({"endpont": "x"}))
        .unwrap_err();
    assert!(e.message.contains("endpoint"), "{e}");
    let e = f
        .parse_config(&serde_json::json!({"max_payload_size_mib": 0}))
        .unwrap_err();
    assert_eq!(e.path, "max_payload_size_mib");
    let e = f
        .parse_config(&serde_json::json!({"tls": {"cert_file": "a.pem"}}))
        .unwrap_err();
    assert!(e.path.starts_with("tls"), "{e}");
}

/// Admission before decoding, against a pipeline that starts with a memory limiter: payloads
/// that fit are taken and their reservations released; one that could never fit under the
/// soft limit is answered OUT_OF_RANGE (the exporter splits it); above the soft limit every
/// payload is answered RESOURCE_EXHAUSTED (the exporter retries) without its record batches
/// being decoded, while the stream goes on; each refusal is counted by reason.
#[tokio::test]
async fn memory_admission_refuses_payloads_and_the_stream_goes_on() {
    use sluice_engine::memory::Limits as MemoryLimits;
    let t = Telemetry::new();
    t.memory().set_limits(MemoryLimits {
        soft: 1 << 20,
        hard: 2 << 20,
    });
    let cap = Capture {
        limited: true,
        ..Default::default()
    };
    let config = FlightReceiverConfig {
        endpoint: "127.0.0.1:0".into(),
        ..Default::default()
    };
    let r = rig_on(config, &Signal::ALL, cap, t.clone()).await;
    let big = traces(50_000);
    assert!(big.memory_size() > 1 << 20);
    let (acks, end) = put(r.addr, stream_of(&[traces(3), big, traces(4)])).await;
    assert!(end.is_none(), "{end:?}");
    let codes: Vec<u8> = acks.iter().map(|a| a.code).collect();
    assert_eq!(codes, vec![Ack::OK, Ack::OUT_OF_RANGE, Ack::OK], "{acks:?}");
    assert!(
        acks[1].message.contains("too large for the memory limit"),
        "{acks:?}"
    );
    assert_eq!(r.cap.got.lock().unwrap().len(), 2);
    assert_eq!(t.memory().held(), 0, "reservations released");

    // Memory held elsewhere at the soft limit: every payload refused, retryable, nothing
    // decoded into a pipeline; the stream still ends cleanly.
    let queue = t.memory().holder(&t, "otlp/jaeger", "queue");
    let full = queue.hold(1 << 20);
    let (acks, end) = put(r.addr, stream_of(&[traces(3), logs(2)])).await;
    assert!(end.is_none(), "{end:?}");
    assert_eq!(
        acks.iter().map(|a| a.code).collect::<Vec<_>>(),
        vec![Ack::RESOURCE_EXHAUSTED; 2],
        "{acks:?}"
    );
    assert!(acks[0].message.contains("high memory usage"), "{acks:?}");
    assert_eq!(r.cap.got.lock().unwrap().len(), 2);
    // Memory back under the limit: the same stream's payloads are taken.
    drop(full);
    let (acks, _) = put(r.addr, stream_of(&[traces(3), logs(2)])).await;
    assert_eq!(acks, vec![Ack::ok(1), Ack::ok(2)]);
    assert_eq!(r.cap.got.lock().unwrap().len(), 4);
    assert_eq!(t.memory().held(), 0);

    let refused = |reason: &str| {
        t.value(
            "sluice_memory_refused_requests",
            &[
                ("receiver", "flight"),
                ("transport", "flight"),
                ("reason", reason),
            ],
        )
    };
    assert_eq!(refused("above_soft_limit"), Some(2.0));
    assert_eq!(refused("too_large"), Some(1.0));
    assert_eq!(
        failed(&t, "decode"),
        0.0,
        "a refusal is not a decode failure"
    );
    r.rx.shutdown().await;
}

/// A `DoPut` stream may carry 4 MiB (an uncompressed batch of 8,192 spans) before the
/// receiver has read any of it: hyper's default window of 1 MiB held the one stream an agent
/// sends on to ~560 k spans/s on a busy machine while its queue grew (`FLOW_CONTROL_WINDOW`).
/// Read as a peer sees it: a plain HTTP/2 client asks for 8 MiB of send capacity on a DoPut
/// stream and is granted what the receiver's SETTINGS and connection WINDOW_UPDATE allow.
#[tokio::test]
async fn a_stream_may_send_four_mib_before_the_receiver_reads() {
    let r = rig().await;
    let tcp = tokio::net::TcpStream::connect(r.addr).await.unwrap();
    // h2 grants no more capacity than it may buffer (400 KiB by default).
    let (client, connection) = h2::client::Builder::new()
        .max_send_buffer_size(16 << 20)
        .handshake::<_, Bytes>(tcp)
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = http::Request::post(format!(
        "http://{}/arrow.flight.protocol.FlightService/DoPut",
        r.addr
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(())
    .unwrap();
    let (_response, mut stream) = client
        .ready()
        .await
        .unwrap()
        .send_request(request, false)
        .unwrap();
    stream.reserve_capacity(8 << 20);
    let want = 4 << 20;
    // The capacity grows as the receiver's settings and window update arrive; it settles at
    // the smaller of the stream's and the connection's windows.
    let granted = tokio::time::timeout(Duration::from_secs(5), async {
        while stream.capacity() < want {
            if std::future::poll_fn(|cx| stream.poll_capacity(cx))
                .await
                .is_none()
            {
                break;
            }
        }
        stream.capacity()
    })
    .await
    .unwrap_or_else(|_| stream.capacity());
    assert_eq!(granted, want, "send capacity granted on one DoPut stream");
    stream.send_reset(h2::Reason::CANCEL);
    r.rx.shutdown().await;
}
