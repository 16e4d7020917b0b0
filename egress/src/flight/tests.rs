//! The exporter against a scripted Flight receiver on loopback: a real gRPC Flight server that
//! reads the stream with the engine's decoder and answers each payload as the script says
//! (acknowledge, refuse with a code, stay silent, end the stream with a status), so every
//! rule of "sent means acknowledged" is checked over the wire.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use sluice_engine::Payload;
use sluice_engine::component::{ComponentId, ConsumeError, Consumer, Lifecycle};
use sluice_engine::flight::{Ack, Decoder, Limits, WireMessage, check_hello};
use sluice_engine::otlp::testing::{assert_payload_eq, reference_logs, reference_traces};
use sluice_engine::schema::Signal;
use sluice_engine::telemetry::Telemetry;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

use super::*;
use crate::queue::{QueueConfig, RetryConfig};

/// How the scripted receiver answers one payload.
#[derive(Clone, Debug)]
enum Answer {
    Ack(u8),
    /// Read it, never answer.
    Silence,
    /// End the stream with this status instead of answering.
    End(tonic::Code),
}

#[derive(Clone, Default)]
struct Scripted {
    streams: Arc<AtomicUsize>,
    /// Payloads acknowledged with OK, in order.
    accepted: Arc<Mutex<Vec<Payload>>>,
    /// Payloads read (answered or not).
    read: Arc<AtomicUsize>,
    /// Answers for the payloads to come, in order; OK when empty.
    script: Arc<Mutex<VecDeque<Answer>>>,
    /// Refuse every stream at its hello with this.
    refuse: Arc<Mutex<Option<Status>>>,
}

type Unsupported<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn unsupported<T>() -> Result<T, Status> {
    Err(Status::unimplemented("not in this test"))
}

#[tonic::async_trait]
impl FlightService for Scripted {
    type HandshakeStream = Unsupported<HandshakeResponse>;
    type ListFlightsStream = Unsupported<FlightInfo>;
    type DoGetStream = Unsupported<FlightData>;
    type DoPutStream = ReceiverStream<Result<PutResult, Status>>;
    type DoExchangeStream = Unsupported<FlightData>;
    type DoActionStream = Unsupported<arrow_flight::Result>;
    type ListActionsStream = Unsupported<ActionType>;

    async fn handshake(
        &self,
        _: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        unsupported()
    }
    async fn list_flights(
        &self,
        _: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        unsupported()
    }
    async fn get_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        unsupported()
    }
    async fn poll_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        unsupported()
    }
    async fn get_schema(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        unsupported()
    }
    async fn do_get(&self, _: Request<Ticket>) -> Result<Response<Self::DoGetStream>, Status> {
        unsupported()
    }
    async fn do_exchange(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        unsupported()
    }
    async fn do_action(
        &self,
        _: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        unsupported()
    }
    async fn list_actions(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        unsupported()
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        self.streams.fetch_add(1, Ordering::SeqCst);
        if let Some(s) = self.refuse.lock().unwrap().clone() {
            return Err(s);
        }
        let mut input = request.into_inner();
        let hello = input
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty"))?;
        check_hello(&hello.flight_descriptor.map(|d| d.cmd).unwrap_or_default())
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        let (tx, rx) = mpsc::channel(16);
        let me = self.clone();
        tokio::spawn(async move {
            let mut decoder = Decoder::new(Limits::default());
            while let Ok(Some(d)) = input.message().await {
                let m = WireMessage {
                    header: d.data_header,
                    body: d.data_body,
                    app_metadata: d.app_metadata,
                };
                let decoded = match decoder.decode(&m) {
                    Ok(Some(decoded)) => decoded,
                    Ok(None) => continue,
                    Err(e) => {
                        let _ = tx.send(Err(Status::invalid_argument(e.to_string()))).await;
                        return;
                    }
                };
                me.read.fetch_add(1, Ordering::SeqCst);
                let answer = me
                    .script
                    .lock()
                    .unwrap()
                    .pop_front()
                    .unwrap_or(Answer::Ack(0));
                let ack = match answer {
                    Answer::Ack(code) => {
                        if code == Ack::OK {
                            me.accepted.lock().unwrap().push(decoded.payload.unwrap());
                        }
                        Ack {
                            seq: decoded.seq,
                            code,
                            message: "scripted".into(),
                        }
                    }
                    Answer::Silence => continue,
                    Answer::End(code) => {
                        let _ = tx.send(Err(Status::new(code, "scripted end"))).await;
                        return;
                    }
                };
                let result = PutResult {
                    app_metadata: ack.to_bytes(),
                };
                if tx.send(Ok(result)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

async fn serve(fake: Scripted) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(
                FlightServiceServer::new(fake)
                    .accept_compressed(tonic::codec::CompressionEncoding::Zstd),
            )
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    addr
}

fn config(addr: SocketAddr, timeout: Duration) -> FlightExporterConfig {
    FlightExporterConfig {
        tls: sluice_tls::TlsClientSetting {
            insecure: true,
            ..Default::default()
        },
        timeout,
        // No queue: `consume` returns how delivery went.
        sending_queue: QueueConfig {
            enabled: false,
            ..Default::default()
        },
        retry_on_failure: RetryConfig {
            initial_interval: Duration::from_millis(20),
            max_interval: Duration::from_millis(100),
            max_elapsed_time: Duration::from_secs(10),
            ..Default::default()
        },
        ..FlightExporterConfig::new(addr.to_string())
    }
}

fn traces(n: usize) -> Payload {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    let spans = (0..n)
        .map(|i| Span {
            trace_id: vec![3; 16],
            span_id: (i as u64 + 1).to_be_bytes().to_vec(),
            name: format!("op {}", i % 4),
            ..Default::default()
        })
        .collect();
    let mut p = reference_traces(&ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    });
    p.origin = Some("10.0.0.9:40000".parse().unwrap());
    p
}

fn logs(n: usize) -> Payload {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    reference_logs(&ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: (0..n)
                    .map(|i| LogRecord {
                        severity_text: format!("level {i}"),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

/// The sum of `name`'s series for this exporter (send failures have an `error_type` each).
fn counter(t: &Telemetry, name: &str) -> f64 {
    t.sum(name, &[("exporter", "flight")]).unwrap_or(0.0)
}

fn build(c: &FlightExporterConfig, t: &Telemetry) -> FlightExporter {
    let ctx = BuildContext {
        id: ComponentId::parse("flight").unwrap(),
        config: Arc::new(()),
        telemetry: t.clone(),
        clock: Arc::new(sluice_engine::clock::WallClock),
        extensions: Default::default(),
    };
    exporter(&ctx, c).unwrap()
}

#[tokio::test]
async fn payloads_are_sent_once_acknowledged_and_arrive_whole_on_one_stream() {
    let fake = Scripted::default();
    let addr = serve(fake.clone()).await;
    let t = Telemetry::new();
    let e = build(&config(addr, Duration::from_secs(5)), &t);
    e.start().await.unwrap();
    let sent = [traces(5), logs(3), traces(7)];
    for p in &sent {
        e.consume(p.clone()).await.unwrap();
    }
    let got = fake.accepted.lock().unwrap().clone();
    assert_eq!(got.len(), 3);
    for (p, g) in sent.iter().zip(&got) {
        assert_payload_eq(p, g);
        assert_eq!(g.origin, p.origin, "the origin travels in the payload end");
    }
    assert_eq!(
        fake.streams.load(Ordering::SeqCst),
        1,
        "one long-lived stream"
    );
    assert_eq!(counter(&t, "otelcol_exporter_sent_spans"), 12.0);
    assert_eq!(counter(&t, "otelcol_exporter_sent_log_records"), 3.0);
    e.shutdown().await;
}

#[tokio::test]
async fn refusals_are_retried_and_permanent_answers_are_not() {
    let fake = Scripted::default();
    fake.script.lock().unwrap().extend([
        Answer::Ack(Ack::RESOURCE_EXHAUSTED),
        Answer::Ack(Ack::UNAVAILABLE),
    ]);
    let addr = serve(fake.clone()).await;
    let t = Telemetry::new();
    let e = build(&config(addr, Duration::from_secs(5)), &t);
    e.start().await.unwrap();
    e.consume(traces(4)).await.unwrap();
    assert_eq!(
        fake.read.load(Ordering::SeqCst),
        3,
        "refused twice, then accepted"
    );
    assert_eq!(fake.accepted.lock().unwrap().len(), 1);
    assert_eq!(counter(&t, "otelcol_exporter_sent_spans"), 4.0);

    fake.script
        .lock()
        .unwrap()
        .push_back(Answer::Ack(Ack::INVALID_ARGUMENT));
    let err = e.consume(traces(2)).await.unwrap_err();
    assert!(
        matches!(&err, ConsumeError::Permanent(m) if m.contains("InvalidArgument")),
        "{err:?}"
    );
    assert_eq!(fake.read.load(Ordering::SeqCst), 4, "not retried");
    assert_eq!(counter(&t, "otelcol_exporter_send_failed_spans"), 2.0);
    assert_eq!(
        fake.streams.load(Ordering::SeqCst),
        1,
        "answers do not end the stream"
    );
    e.shutdown().await;
}

#[tokio::test]
async fn a_broken_stream_fails_what_waits_and_a_new_stream_carries_it() {
    let fake = Scripted::default();
    fake.script
        .lock()
        .unwrap()
        .push_back(Answer::End(tonic::Code::Unavailable));
    let addr = serve(fake.clone()).await;
    let t = Telemetry::new();
    let e = build(&config(addr, Duration::from_secs(5)), &t);
    e.start().await.unwrap();
    let p = traces(6);
    e.consume(p.clone()).await.unwrap();
    assert_eq!(fake.streams.load(Ordering::SeqCst), 2, "reconnected");
    let got = fake.accepted.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    // The new stream starts from scratch (schemas, dictionaries) and reads the same data.
    assert_payload_eq(&p, &got[0]);
    assert_eq!(counter(&t, "otelcol_exporter_sent_spans"), 6.0);
    assert_eq!(counter(&t, "otelcol_exporter_send_failed_spans"), 0.0);
    e.shutdown().await;
}

/// The receiver reads payloads in order, so a stream ended for bad data is about the first
/// payload still waiting: that one fails for good, the others go again on a new stream.
#[tokio::test]
async fn bad_data_fails_the_first_waiting_payload_and_the_rest_go_again() {
    let fake = Scripted::default();
    fake.script
        .lock()
        .unwrap()
        .extend([Answer::Silence, Answer::End(tonic::Code::InvalidArgument)]);
    let addr = serve(fake.clone()).await;
    let t = Telemetry::new();
    let e = Arc::new(build(&config(addr, Duration::from_secs(5)), &t));
    e.start().await.unwrap();
    let first = {
        let e = e.clone();
        tokio::spawn(async move { e.consume(traces(3)).await })
    };
    tokio::time::timeout(Duration::from_secs(10), async {
        while fake.read.load(Ordering::SeqCst) < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the first payload reaches the receiver");
    let second = e.consume(logs(2)).await;
    let first = first.await.unwrap();
    assert!(
        matches!(&first, Err(ConsumeError::Permanent(_))),
        "{first:?}"
    );
    assert!(second.is_ok(), "{second:?}");
    assert_eq!(fake.streams.load(Ordering::SeqCst), 2);
    let got = fake.accepted.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].signal(), Signal::Logs);
    assert_eq!(counter(&t, "otelcol_exporter_send_failed_spans"), 3.0);
    assert_eq!(counter(&t, "otelcol_exporter_sent_log_records"), 2.0);
}

#[tokio::test]
async fn another_version_is_refused_for_good_without_retrying() {
    let fake = Scripted::default();
    *fake.refuse.lock().unwrap() = Some(Status::failed_precondition(
        "the sender speaks sluice-arrow/1, this receiver sluice-arrow/2",
    ));
    let addr = serve(fake.clone()).await;
    let t = Telemetry::new();
    let e = build(&config(addr, Duration::from_secs(5)), &t);
    e.start().await.unwrap();
    let err = e.consume(traces(2)).await.unwrap_err();
    assert!(
        matches!(&err, ConsumeError::Permanent(m) if m.contains("sluice-arrow/2")),
        "{err:?}"
    );
    assert_eq!(fake.streams.load(Ordering::SeqCst), 1, "not retried");
    assert_eq!(counter(&t, "otelcol_exporter_send_failed_spans"), 2.0);
}

/// A receiver that stops answering: after `timeout` the attempt fails, the next attempt finds
/// the stream stuck and opens another, where the payload is acknowledged.
#[tokio::test]
async fn a_stuck_stream_is_abandoned_for_a_new_one() {
    let fake = Scripted::default();
    fake.script.lock().unwrap().push_back(Answer::Silence);
    let addr = serve(fake.clone()).await;
    let t = Telemetry::new();
    let e = build(&config(addr, Duration::from_millis(300)), &t);
    e.start().await.unwrap();
    e.consume(traces(2)).await.unwrap();
    assert_eq!(fake.streams.load(Ordering::SeqCst), 2);
    assert_eq!(fake.read.load(Ordering::SeqCst), 2, "read on both streams");
    assert_eq!(fake.accepted.lock().unwrap().len(), 1);
    assert_eq!(counter(&t, "otelcol_exporter_sent_spans"), 2.0);
}

#[tokio::test]
async fn a_receiver_that_is_down_is_a_retryable_failure() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let t = Telemetry::new();
    let mut c = config(port, Duration::from_millis(500));
    c.retry_on_failure.max_elapsed_time = Duration::from_millis(200);
    let e = build(&c, &t);
    e.start().await.unwrap();
    let err = e.consume(traces(2)).await.unwrap_err();
    assert!(matches!(err, ConsumeError::Unavailable(_)), "{err:?}");
    assert_eq!(counter(&t, "otelcol_exporter_send_failed_spans"), 2.0);
}

#[test]
fn config_is_the_otlp_exporters_with_arrow_compression() {
    let f = FlightExporterFactory;
    let parsed = f
        .parse_config(&serde_json::json!({"endpoint": "gateway:4319"}))
        .unwrap();
    let c = parsed.downcast::<FlightExporterConfig>().unwrap();
    assert_eq!(c.compression, FlightCompression::Zstd);
    assert_eq!(c.timeout, Duration::from_secs(5));
    assert!(c.sending_queue.enabled);
    assert_eq!(c.sending_queue.queue_size, 1000);
    assert_eq!(c.retry_on_failure.initial_interval, Duration::from_secs(5));
    assert!(!c.tls.insecure, "TLS unless told otherwise, as otlp");

    let e = f
        .parse_config(&serde_json::json!({"endpoint": "g:4319", "compression": "gzip"}))
        .unwrap_err();
    assert_eq!(e.path, "compression");
    assert!(e.message.contains("zstd"), "{e}");
    for ok in ["zstd", "lz4", "none"] {
        f.parse_config(&serde_json::json!({"endpoint": "g:4319", "compression": ok}))
            .unwrap();
    }
    let e = f
        .parse_config(&serde_json::json!({"endpoint": "g:4319", "compresion": "zstd"}))
        .unwrap_err();
    assert!(e.message.contains("compression"), "{e}");
    let e = f
        .parse_config(&serde_json::json!({"endpoint": "g:4319/x"}))
        .unwrap_err();
    assert_eq!(e.path, "endpoint");
    let e = f
        .parse_config(&serde_json::json!({"endpoint": "g:4319", "headers": {"bad key": "v"}}))
        .unwrap_err();
    assert_eq!(e.path, "headers.bad key");
}

fn split_count(t: &Telemetry, reason: &str) -> f64 {
    t.value(
        "sluice_exporter_requests_split",
        &[("exporter", "flight"), ("reason", reason)],
    )
    .unwrap_or(0.0)
}

/// The queue's size limit applies to Flight payloads: one over `max_request_size` (bytes of
/// Arrow data) goes as several, each under it, and every span arrives once.
#[tokio::test]
async fn payloads_over_max_request_size_are_split_before_sending() {
    let fake = Scripted::default();
    let addr = serve(fake.clone()).await;
    let t = Telemetry::new();
    let mut c = config(addr, Duration::from_secs(5));
    c.max_request_size = 4096;
    let e = build(&c, &t);
    e.start().await.unwrap();
    let p = traces(200);
    assert!(sluice_engine::flight::payload_size(&p) > 4096);
    e.consume(p).await.unwrap();
    let got = fake.accepted.lock().unwrap().clone();
    assert!(got.len() > 1, "split into {} payloads", got.len());
    assert!(
        got.iter()
            .all(|g| sluice_engine::flight::payload_size(g) <= 4096)
    );
    assert_eq!(got.iter().map(Payload::item_count).sum::<usize>(), 200);
    assert_eq!(split_count(&t, "over_limit"), 1.0);
    assert_eq!(counter(&t, "otelcol_exporter_sent_spans"), 200.0);
}

/// A receiver's OUT_OF_RANGE acknowledgement (over its `max_payload_size_mib`) is a "too
/// large" answer: the payload goes again in parts, never as it was.
#[tokio::test]
async fn a_too_large_answer_splits_the_payload() {
    let fake = Scripted::default();
    fake.script
        .lock()
        .unwrap()
        .push_back(Answer::Ack(Ack::OUT_OF_RANGE));
    let addr = serve(fake.clone()).await;
    let t = Telemetry::new();
    let e = build(&config(addr, Duration::from_secs(5)), &t);
    e.start().await.unwrap();
    e.consume(traces(40)).await.unwrap();
    let got = fake.accepted.lock().unwrap().clone();
    assert!(got.len() >= 2, "{} payloads", got.len());
    assert!(got.iter().all(|g| g.item_count() < 40));
    assert_eq!(got.iter().map(Payload::item_count).sum::<usize>(), 40);
    assert_eq!(split_count(&t, "too_large_answer"), 1.0);
    assert_eq!(counter(&t, "otelcol_exporter_sent_spans"), 40.0);
    assert_eq!(counter(&t, "otelcol_exporter_send_failed_spans"), 0.0);
}

/// `sending_queue.storage` works for the Arrow hop as for OTLP: what a gateway refusing every
/// stream leaves undelivered at shutdown stays on disk (nothing dropped), and the next exporter
/// on the same directory sends it, whole, once the gateway takes streams again.
#[tokio::test]
async fn a_persistent_queue_keeps_what_is_undelivered_and_the_next_start_sends_it() {
    let dir = tempfile::tempdir().unwrap();
    let storage = crate::file_storage::FileStorageFactory
        .parse_config(&serde_json::json!({"directory": dir.path()}))
        .unwrap();
    let mut extensions = std::collections::BTreeMap::new();
    extensions.insert(ComponentId::parse("file_storage").unwrap(), storage);
    let extensions = sluice_engine::component::Extensions::new(extensions);
    let fake = Scripted::default();
    *fake.refuse.lock().unwrap() = Some(Status::unavailable("restarting"));
    let addr = serve(fake.clone()).await;
    let mut c = config(addr, Duration::from_millis(500));
    c.sending_queue = QueueConfig {
        storage: Some("file_storage".into()),
        drain_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let build_persistent = |t: &Telemetry| {
        let ctx = BuildContext {
            id: ComponentId::parse("flight").unwrap(),
            config: Arc::new(()),
            telemetry: t.clone(),
            clock: Arc::new(sluice_engine::clock::WallClock),
            extensions: extensions.clone(),
        };
        exporter(&ctx, &c).unwrap()
    };
    let t = Telemetry::new();
    let e = build_persistent(&t);
    e.start().await.unwrap();
    let sent = [traces(5), logs(3)];
    for p in &sent {
        e.consume(p.clone()).await.unwrap();
    }
    e.shutdown().await;
    assert_eq!(counter(&t, "otelcol_exporter_send_failed_spans"), 0.0);
    assert_eq!(counter(&t, "otelcol_exporter_send_failed_log_records"), 0.0);
    assert!(fake.accepted.lock().unwrap().is_empty());
    drop(e);

    fake.refuse.lock().unwrap().take();
    let t = Telemetry::new();
    let e = build_persistent(&t);
    e.start().await.unwrap();
    for _ in 0..200 {
        if fake.accepted.lock().unwrap().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    e.shutdown().await;
    let mut got = fake.accepted.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "each replayed once");
    got.sort_by_key(|p| p.signal() as usize);
    // Replayed from its OTLP record: the same items (the connection's origin is not stored).
    for (p, g) in sent.iter().zip(&got) {
        let mut p = p.clone();
        p.origin = None;
        assert_payload_eq(&p, g);
    }
    assert_eq!(counter(&t, "sluice_exporter_queue_replayed_spans"), 5.0);
    assert_eq!(counter(&t, "otelcol_exporter_sent_log_records"), 3.0);
}
