//! The generator against its own do-nothing sink, over both protocols: every trace sent in a
//! run has an id of its own (the pool is reused many times over), the spans of one trace
//! still share theirs, and the sink's counts agree with the generator's report.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use clap::Parser;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use sluice_engine::Signal;

use super::sink::{Sink, serve};
use super::*;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: GenArgs,
}

fn args(endpoint: &str, protocol: &str, extra: &[&str]) -> GenArgs {
    let mut argv = vec![
        "loadgen",
        "--endpoint",
        endpoint,
        "--protocol",
        protocol,
        "--quiet",
    ];
    argv.extend_from_slice(extra);
    Cli::parse_from(argv).args
}

/// Starts a recording sink on a free loopback port.
async fn sink() -> (String, Arc<Sink>, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = listener.local_addr().unwrap().to_string();
    let sink = Arc::new(Sink::recording());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, sink.clone(), async {
        let _ = stopped.await;
    }));
    (endpoint, sink, stop)
}

/// Per received request: trace id -> spans with it.
fn trace_ids_per_request(payloads: &[bytes::Bytes]) -> Vec<HashMap<Vec<u8>, usize>> {
    payloads
        .iter()
        .map(|p| {
            let req = ExportTraceServiceRequest::decode(p.as_ref()).unwrap();
            let mut ids: HashMap<Vec<u8>, usize> = HashMap::new();
            for span in req
                .resource_spans
                .iter()
                .flat_map(|rs| &rs.scope_spans)
                .flat_map(|ss| &ss.spans)
            {
                *ids.entry(span.trace_id.clone()).or_default() += 1;
            }
            ids
        })
        .collect()
}

async fn every_trace_id_is_unique_over_a_run(protocol: &str) {
    let (endpoint, sink, _stop) = sink().await;
    // 80 pool entries (the case where ids used to repeat), 500 requests: the pool is reused
    // six times over.
    let a = args(
        &endpoint,
        protocol,
        &["--pool", "80", "--batch", "100", "--count", "50000"],
    );
    let report = run(Signal::Traces, a.clone()).await.unwrap();
    assert_eq!(
        report.items_accepted, 50_000,
        "{:?}",
        report.refused_by_status
    );
    assert_eq!(report.requests, 500);

    let payloads = sink.take_recorded();
    assert_eq!(payloads.len(), 500);
    let per_request = trace_ids_per_request(&payloads);
    let mut seen = HashSet::new();
    for ids in &per_request {
        for id in ids.keys() {
            assert!(seen.insert(id.clone()), "trace id {id:02x?} sent twice");
        }
    }
    assert_eq!(seen.len() as u64, report.traces_accepted);
    // Without fresh ids the run would hold only the pool's traces: 80 requests' worth.
    let pool = Pool::generate(Signal::Traces, &a, TraceIds::new(0)).unwrap();
    let pool_traces: u64 = pool.requests.iter().map(|r| r.stats.traces).sum();
    assert!(seen.len() as u64 > 5 * pool_traces);

    // The spans of one trace still share one id: each request has the same traces, of the same
    // sizes, as the pool entry it was made from.
    let sizes = |ids: &HashMap<Vec<u8>, usize>| {
        let mut v: Vec<usize> = ids.values().copied().collect();
        v.sort_unstable();
        v
    };
    let pool_sizes: HashSet<Vec<usize>> = pool
        .requests
        .iter()
        .map(|r| sizes(&trace_ids_per_request(std::slice::from_ref(&r.body))[0]))
        .collect();
    for ids in &per_request {
        assert!(pool_sizes.contains(&sizes(ids)));
    }

    // What the sink counted is what the generator reports.
    let counts = sink.counts.to_json();
    let requests = if protocol == "grpc" {
        &counts["grpc_requests"]
    } else {
        &counts["http_requests"]
    };
    assert_eq!(requests, 500);
    assert_eq!(counts["payload_bytes"], report.bytes_accepted);
    assert_eq!(counts["broken_requests"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_trace_ids_are_unique_over_a_run() {
    every_trace_id_is_unique_over_a_run("grpc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_trace_ids_are_unique_over_a_run() {
    every_trace_id_is_unique_over_a_run("http").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_records_get_unique_trace_ids_and_metrics_arrive_unchanged() {
    let (endpoint, sink, _stop) = sink().await;
    let a = args(
        &endpoint,
        "grpc",
        &["--pool", "3", "--batch", "50", "--count", "500"],
    );
    let report = run(Signal::Logs, a).await.unwrap();
    assert_eq!(report.items_accepted, 500);
    let mut seen = HashSet::new();
    for p in sink.take_recorded() {
        let req = ExportLogsServiceRequest::decode(p.as_ref()).unwrap();
        for r in req
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .flat_map(|s| &s.log_records)
        {
            assert!(seen.insert(r.trace_id.clone()));
        }
    }
    assert_eq!(seen.len(), 500);

    // Metrics have no trace ids: the pool's bodies go out byte for byte.
    let a = args(
        &endpoint,
        "http",
        &["--pool", "2", "--batch", "40", "--count", "160"],
    );
    let report = run(Signal::Metrics, a.clone()).await.unwrap();
    assert_eq!(report.items_accepted, 160);
    let pool = Pool::generate(Signal::Metrics, &a, TraceIds::new(0)).unwrap();
    let bodies: HashSet<&[u8]> = pool.requests.iter().map(|r| r.body.as_ref()).collect();
    let received = sink.take_recorded();
    assert_eq!(received.len(), 4);
    for p in &received {
        // The pool is generated from the clock, so compare sizes and decodability.
        let req =
            opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest::decode(
                p.as_ref(),
            )
            .unwrap();
        assert!(!req.resource_metrics.is_empty());
        assert!(bodies.iter().any(|b| b.len() == p.len()));
    }
}

#[test]
fn trace_stats_count_noise_and_error_traces() {
    let a = args(
        "127.0.0.1:1",
        "grpc",
        &[
            "--batch",
            "2000",
            "--pool",
            "1",
            "--error-rate",
            "0.2",
            "--noise-rate",
            "0.1",
        ],
    );
    let pool = Pool::generate(Signal::Traces, &a, TraceIds::new(0)).unwrap();
    let r = &pool.requests[0];
    let req = ExportTraceServiceRequest::decode(r.body.as_ref()).unwrap();
    let spans: Vec<_> = req
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .collect();
    assert_eq!(r.stats.items, 2000);
    let probes = spans
        .iter()
        .filter(|s| s.name == shapes::PROBE_SPAN_NAME)
        .count() as u64;
    assert_eq!(r.stats.noise_spans, probes);
    assert!((100..=300).contains(&probes));
    // 8-span traces plus lone probes.
    assert_eq!(r.stats.traces, probes + (2000 - probes).div_ceil(8));
    let error_traces: HashSet<&[u8]> = spans
        .iter()
        .filter(|s| s.status.as_ref().is_some_and(|st| st.code == 2))
        .map(|s| s.trace_id.as_slice())
        .collect();
    assert_eq!(r.stats.error_traces, error_traces.len() as u64);
    assert!(r.stats.error_traces > 10, "about 20% of ~230 traces");
    assert_eq!(r.slots.traces(), r.stats.traces);
}

/// `--rate` holds: over 10 s the sink receives rate × 10 s items (within 2 %), and the report
/// says the same rate, at the rates and default batch size where it used to overshoot by
/// 12–20 % (a burst at each sender's start, and the elapsed time cut short).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_holds_within_two_percent_over_ten_seconds() {
    async fn at(rate: u64) -> (u64, Report, u64) {
        let (endpoint, sink, _stop) = sink().await;
        let a = args(
            &endpoint,
            "grpc",
            &[
                "--rate",
                &rate.to_string(),
                "--duration",
                "10s",
                "--pool",
                "4",
            ],
        );
        let report = run(Signal::Traces, a.clone()).await.unwrap();
        let received = sink.counts.grpc_requests.load(Ordering::Relaxed) * a.batch as u64;
        (rate, report, received)
    }
    // Side by side, so the test takes 10 s.
    let (slow, fast) = tokio::join!(at(2_000), at(5_000));
    for (rate, report, received) in [slow, fast] {
        let want = rate as f64 * 10.0;
        let off = |got: f64| (got - want).abs() / want;
        assert!(
            off(received as f64) <= 0.02,
            "at {rate}/s the sink received {received} spans in 10 s, want {want}"
        );
        assert_eq!(
            report.items_accepted, received,
            "{:?}",
            report.refused_by_status
        );
        let per_second = report.items_per_sec();
        assert!(
            (per_second - rate as f64).abs() / rate as f64 <= 0.02,
            "at {rate}/s the report says {per_second:.0}/s over {:?}",
            report.elapsed
        );
        assert!(
            report.elapsed >= Duration::from_secs(10)
                && report.elapsed < Duration::from_millis(10_500),
            "{:?}",
            report.elapsed
        );
    }
}

/// A server on a free port that answers every request with `status` and a small JSON body:
/// HTTP/2 only (as a gRPC server is) or HTTP/1.1 and HTTP/2 (as sluice's OTLP/HTTP port is).
async fn plain_server(http2_only: bool, status: u16) -> String {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let answer = hyper::service::service_fn(move |_req| async move {
                    http::Response::builder()
                        .status(status)
                        .header("content-type", "application/json")
                        .body(http_body_util::Full::new(bytes::Bytes::from_static(
                            br#"{"code":5,"message":"not found"}"#,
                        )))
                });
                let mut server = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                if http2_only {
                    server = server.http2_only();
                }
                let _ = server.serve_connection(TokioIo::new(stream), answer).await;
            });
        }
    });
    endpoint
}

/// An OTLP/HTTP server on a free port that answers every other request 429 (the first
/// refused) and records each body with whether it was accepted.
async fn every_other_refused() -> (String, Arc<Mutex<Vec<(bool, bytes::Bytes)>>>) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = listener.local_addr().unwrap().to_string();
    let seen: Arc<Mutex<Vec<(bool, bytes::Bytes)>>> = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let answer =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let record = record.clone();
                        async move {
                            let body = http_body_util::BodyExt::collect(req.into_body())
                                .await?
                                .to_bytes();
                            let mut seen = record.lock().unwrap();
                            let accept = seen.len() % 2 == 1;
                            seen.push((accept, body));
                            Ok::<_, hyper::Error>(
                                http::Response::builder()
                                    .status(if accept { 200 } else { 429 })
                                    .header("content-type", "application/x-protobuf")
                                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                                    .unwrap(),
                            )
                        }
                    });
                let server = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = server.serve_connection(TokioIo::new(stream), answer).await;
            });
        }
    });
    (endpoint, seen)
}

/// `--retry-refused`: a refused request is sent again, the same bytes (the same trace ids),
/// until accepted, and counts once; without it a refusal is final.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_is_resent_when_asked() {
    let (endpoint, seen) = every_other_refused().await;
    let extra = ["--count", "2000", "--batch", "100", "--concurrency", "1"];
    let mut with_retry = extra.to_vec();
    with_retry.extend(["--retry-refused", "1ms"]);
    let report = run(Signal::Traces, args(&endpoint, "http", &with_retry))
        .await
        .unwrap();
    assert_eq!(report.items_accepted, 2000);
    assert!(
        report.refused_by_status.is_empty(),
        "{:?}",
        report.refused_by_status
    );
    assert_eq!((report.resent, report.requests), (20, 40));
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert_eq!(seen.len(), 40);
    for pair in seen.chunks(2) {
        assert_eq!((pair[0].0, pair[1].0), (false, true));
        assert_eq!(
            pair[0].1, pair[1].1,
            "the resent request differs from the refused one"
        );
    }
    let accepted: Vec<bytes::Bytes> = seen.into_iter().filter(|s| s.0).map(|s| s.1).collect();
    let traces: HashSet<Vec<u8>> = trace_ids_per_request(&accepted)
        .into_iter()
        .flat_map(|ids| ids.into_keys())
        .collect();
    assert_eq!(traces.len() as u64, report.traces_accepted);

    // Without the flag: every other request refused for good.
    let (endpoint, _) = every_other_refused().await;
    let report = run(Signal::Traces, args(&endpoint, "http", &extra))
        .await
        .unwrap();
    assert_eq!((report.items_accepted, report.resent), (1000, 0));
    assert_eq!(report.refused_by_status.get("HTTP 429"), Some(&10));
}

#[test]
fn only_overload_and_unavailability_are_retried() {
    for retryable in ["ResourceExhausted", "Unavailable", "HTTP 429", "HTTP 503"] {
        assert!(failure::is_retryable(retryable), "{retryable}");
    }
    for final_ in [
        "InvalidArgument",
        "OutOfRange",
        "HTTP 400",
        "HTTP 413",
        "Unavailable: connection refused (nothing listens on the endpoint)",
    ] {
        assert!(!failure::is_retryable(final_), "{final_}");
    }
}

/// Failures are reported in words, each cause once: nothing listening, OTLP/HTTP sent to a
/// gRPC port, gRPC sent to an OTLP/HTTP port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_say_what_happened() {
    // Nothing listens: the run cannot start, and says why once.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let e = run(Signal::Traces, args(&closed, "grpc", &["--count", "10"]))
        .await
        .unwrap_err();
    assert_eq!(
        format!("{e:#}"),
        format!(
            "cannot connect to http://{closed}: connection refused (nothing listens on the endpoint)"
        )
    );
    let report = run(Signal::Traces, args(&closed, "http", &["--count", "1000"]))
        .await
        .unwrap();
    assert_eq!(
        report.refused_by_status.keys().collect::<Vec<_>>(),
        ["connection refused (nothing listens on the endpoint)"]
    );

    // OTLP/HTTP to a port that speaks only HTTP/2 (a gRPC port).
    let grpc_port = plain_server(true, 200).await;
    let report = run(
        Signal::Traces,
        args(&grpc_port, "http", &["--count", "2000"]),
    )
    .await
    .unwrap();
    assert_eq!(report.items_accepted, 0);
    let why: Vec<&String> = report.refused_by_status.keys().collect();
    assert!(
        why.contains(
            &&"the server did not answer in HTTP/1.1 (a gRPC port? try --protocol grpc)"
                .to_string()
        ),
        "{why:?}"
    );
    assert!(
        why.iter()
            .all(|w| !w.contains("client error") && !w.contains("SendRequest")),
        "{why:?}"
    );

    // gRPC to an OTLP/HTTP port: it answers HTTP 404 for the gRPC path.
    let http_port = plain_server(false, 404).await;
    let report = run(
        Signal::Traces,
        args(&http_port, "grpc", &["--count", "1000"]),
    )
    .await
    .unwrap();
    let why: Vec<&String> = report.refused_by_status.keys().collect();
    assert_eq!(why.len(), 1, "{why:?}");
    assert!(
        why[0].starts_with("the server answered HTTP 404")
            && why[0].ends_with(", not gRPC (an OTLP/HTTP port? try --protocol http)"),
        "{why:?}"
    );
}

/// `--capture`: every trace has an id of its own however long the capture (the previous seeds
/// replayed shifted copies of one sequence), and the pods are a fleet of `--pool` requests'
/// worth, as in a live run, not new pods in every request.
#[test]
fn a_capture_has_unique_trace_ids_and_the_pods_of_its_pool() {
    let dir = std::env::temp_dir().join(format!("sluice-loadgen-capture-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("capture.bin");
    let path_s = path.display().to_string();
    let a = args(
        "127.0.0.1:1",
        "grpc",
        &[
            "--count",
            "40000",
            "--batch",
            "100",
            "--pool",
            "4",
            "--capture",
            &path_s,
        ],
    );
    let report = write_capture(Signal::Traces, &a, &path).unwrap();
    assert_eq!(report.items_sent, 40_000);
    let bytes = std::fs::read(&path).unwrap();
    let (mut rest, mut requests) = (&bytes[..], 0);
    let mut first_span_of: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut pods = HashSet::new();
    while !rest.is_empty() {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        let req = ExportTraceServiceRequest::decode(&rest[4..4 + len]).unwrap();
        rest = &rest[4 + len..];
        for rs in &req.resource_spans {
            let pod = rs
                .resource
                .as_ref()
                .unwrap()
                .attributes
                .iter()
                .find(|kv| kv.key == "k8s.pod.name");
            pods.insert(format!("{:?}", pod.unwrap().value));
            for span in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
                // A trace's spans are all in one request.
                let seen = first_span_of
                    .entry(span.trace_id.clone())
                    .or_insert(requests);
                assert_eq!(*seen, requests, "trace id repeated in another request");
            }
        }
        requests += 1;
    }
    assert_eq!(requests, 400);
    let services = a.services;
    assert!(
        pods.len() <= 4 * services,
        "{} pods from a pool of 4",
        pods.len()
    );
    assert!(
        pods.len() > services,
        "one pod per service only: {}",
        pods.len()
    );
    std::fs::remove_dir_all(&dir).ok();
}
