//! The `loadbalancing` exporter against real OTLP/gRPC sinks on loopback, its `dns` resolver
//! against a DNS responder speaking the wire protocol ([`super::fake_dns`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use sluice_engine::Payload;
use sluice_engine::clock::WallClock;
use sluice_engine::component::{BuildContext, ComponentId, Consumer, Factory, Lifecycle};
use sluice_engine::kernels::routing::HashRing;
use sluice_engine::otlp::testing::reference_traces;
use sluice_engine::telemetry::Telemetry;

use super::fake_dns::{FakeDns, Mode};
use super::resolver::DnsResolver;
use super::*;
use crate::tests::{Sink, build, eventually, serve_sink};

/// The trace id of trace `t`.
fn trace_id(t: u32) -> Vec<u8> {
    let mut id = [0u8; 16];
    id[..4].copy_from_slice(&t.to_be_bytes());
    id[8..12].copy_from_slice(&t.wrapping_mul(2_654_435_761).to_be_bytes());
    id.to_vec()
}

/// How a test's payloads come: decoded tables, or wire forms (a receiver feeding a pipeline
/// that keeps them, as `otlp` → `batch` → `loadbalancing` with `protocol.otlp`).
type MakeTraces = fn(std::ops::Range<u32>, std::ops::Range<u32>) -> Payload;

/// [`traces`] in its wire form: the request's bytes, routed by a skim of its trace ids.
fn wire_traces(traces: std::ops::Range<u32>, spans: std::ops::Range<u32>) -> Payload {
    let body = bytes::Bytes::from(sluice_engine::otlp::encode_to_vec(&self::traces(
        traces, spans,
    )));
    let skim = sluice_engine::otlp::skim(Signal::Traces, &body).expect("clean");
    Payload::from_wire(
        Signal::Traces,
        sluice_engine::payload::WireForm::new(body, &skim),
    )
}

/// Spans `spans` of each trace in `traces`, in one payload; span ids say trace and span.
fn traces(traces: std::ops::Range<u32>, spans: std::ops::Range<u32>) -> Payload {
    let spans = traces
        .flat_map(|t| {
            spans.clone().map(move |s| Span {
                trace_id: trace_id(t),
                span_id: [t.to_be_bytes(), s.to_be_bytes()].concat(),
                name: "op".into(),
                ..Default::default()
            })
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

/// The traces each sink received, by trace number.
fn traces_at(sink: &Sink) -> BTreeSet<u32> {
    sink.span_ids
        .lock()
        .unwrap()
        .iter()
        .map(|id| u32::from_be_bytes(id[..4].try_into().unwrap()))
        .collect()
}

/// Backends retry a failed send after 30 s and drain for 60 s at shutdown: longer than any
/// wait in these tests, so what a test sees delivered elsewhere within seconds of a backend's
/// removal was handed on at its failure, neither retried nor held until the drain deadline.
fn lb_config(resolver: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "protocol": {"otlp": {
            "tls": {"insecure": true},
            "compression": "none",
            "timeout": "1s",
            "sending_queue": {"drain_timeout": "60s"},
            "retry_on_failure": {"initial_interval": "30s", "max_elapsed_time": "0s"},
        }},
        "resolver": resolver,
    })
}

fn value(t: &Telemetry, name: &str, labels: &[(&'static str, &str)]) -> f64 {
    t.value(name, labels).unwrap_or(0.0)
}

/// Every trace's spans, sent in two requests, reach exactly the backend the Collector's ring
/// gives its trace id; per-backend exporters count what they sent.
#[tokio::test]
async fn static_backends_get_whole_traces_where_the_ring_says() {
    static_backends_get_whole_traces(traces).await;
}

/// The same with wire forms: routed as bytes (never decoded), to the same backends.
#[tokio::test]
async fn static_backends_get_whole_traces_of_wire_forms_without_decoding() {
    static_backends_get_whole_traces(wire_traces).await;
}

async fn static_backends_get_whole_traces(traces: MakeTraces) {
    let mut sinks = Vec::new();
    let mut stops = Vec::new();
    let mut hostnames = Vec::new();
    for _ in 0..3 {
        let sink = Sink::default();
        let (addr, stop) = serve_sink(sink.clone(), "127.0.0.1:0".parse().unwrap()).await;
        hostnames.push(addr.to_string());
        sinks.push(sink);
        stops.push(stop);
    }
    let t = Telemetry::new();
    let lb = build(
        &LoadBalancingFactory {
            type_name: "loadbalancing",
        },
        "loadbalancing",
        lb_config(serde_json::json!({"static": {"hostnames": hostnames}})),
        &t,
    );
    lb.start().await.unwrap();
    let first = traces(0..60, 0..2);
    lb.consume(first.clone()).await.unwrap();
    lb.consume(traces(0..60, 2..4)).await.unwrap();
    if let Some(wire) = first.wire() {
        // Still only its bytes: routing did not read (decode) its tables.
        assert_eq!(first.memory_size(), wire.len());
    }
    eventually("240 spans at the sinks", || {
        sinks.iter().map(Sink::spans).sum::<usize>() == 240
    })
    .await;
    let mut sorted = hostnames.clone();
    sorted.sort();
    let ring = HashRing::new(&sorted).unwrap();
    let mut seen = BTreeSet::new();
    for (host, sink) in hostnames.iter().zip(&sinks) {
        for tr in traces_at(sink) {
            assert!(seen.insert(tr), "trace {tr} reached two backends");
            let want = &ring.endpoints()[ring.backend_for(&trace_id(tr)).unwrap()];
            assert_eq!(want, host, "trace {tr}");
        }
        // Both halves of every trace it got.
        assert_eq!(sink.spans(), traces_at(sink).len() * 4);
    }
    assert_eq!(seen.len(), 60);
    assert!(
        sinks.iter().all(|s| s.spans() > 0),
        "60 traces over 3 backends"
    );
    let l = [("exporter", "loadbalancing"), ("resolver", "static")];
    assert_eq!(value(&t, "otelcol_loadbalancer_num_backends", &l), 3.0);
    assert_eq!(
        value(&t, "otelcol_loadbalancer_num_backend_updates", &l),
        1.0
    );
    assert_eq!(
        value(
            &t,
            "otelcol_loadbalancer_num_resolutions",
            &[l[0], l[1], ("success", "true")]
        ),
        1.0
    );
    // Counted once each response is back (the sinks record before they answer).
    let sent = || -> f64 {
        hostnames
            .iter()
            .map(|h| {
                let id = format!("loadbalancing/{h}");
                value(
                    &t,
                    "otelcol_exporter_sent_spans",
                    &[("exporter", id.as_str())],
                )
            })
            .sum()
    };
    eventually("240 spans counted as sent by the backends", || {
        sent() == 240.0
    })
    .await;
    let outcomes: f64 = hostnames
        .iter()
        .map(|h| {
            value(
                &t,
                "otelcol_loadbalancer_backend_outcome",
                &[
                    ("exporter", "loadbalancing"),
                    ("endpoint", h.as_str()),
                    ("success", "true"),
                ],
            )
        })
        .sum();
    assert_eq!(outcomes, 6.0, "two sends to each of three backends");
    // Queues are the backends': the load balancer itself has no queue gauges.
    assert_eq!(
        t.value(
            "otelcol_exporter_queue_capacity",
            &[("exporter", "loadbalancing")]
        ),
        None
    );
    for h in &hostnames {
        let id = format!("loadbalancing/{h}");
        assert_eq!(
            t.value(
                "otelcol_exporter_queue_capacity",
                &[("exporter", id.as_str())]
            ),
            Some(1000.0)
        );
    }
    lb.shutdown().await;
}

/// A load balancer `id` resolving `gateways.test` (with `port`) through the DNS responder.
fn dns_load_balancer(
    id: &str,
    t: &Telemetry,
    dns: &FakeDns,
    port: Option<u16>,
    interval: Duration,
    timeout: Duration,
) -> LoadBalancer {
    let resolver_config = serde_json::json!({"dns": {"hostname": "gateways.test", "port": port}});
    let parsed = Arc::new(parse(&lb_config(resolver_config)).unwrap());
    let resolver = DnsResolver::new(
        "gateways.test".into(),
        port.map(|p| p.to_string()),
        interval,
        timeout,
        Some(dns.addr),
    )
    .unwrap();
    LoadBalancer::new(
        BuildContext {
            id: ComponentId::parse(id).unwrap(),
            config: parsed.clone(),
            telemetry: t.clone(),
            clock: Arc::new(WallClock),
            extensions: Default::default(),
        },
        parsed,
        Arc::new(resolver),
    )
}

/// The same free port on 127.0.0.1, .2 and .3 (DNS answers addresses; the port is one).
async fn sinks_on_three_addresses() -> (
    u16,
    Vec<(IpAddr, Sink)>,
    Vec<tokio::sync::oneshot::Sender<()>>,
) {
    for _ in 0..20 {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let free = (1..=3u8).all(|i| {
            std::net::TcpListener::bind(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)),
                port,
            ))
            .is_ok()
        });
        if !free {
            continue;
        }
        let mut sinks = Vec::new();
        let mut stops = Vec::new();
        for i in 1..=3u8 {
            let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, i));
            let sink = Sink::default();
            let (_, stop) = serve_sink(sink.clone(), SocketAddr::new(ip, port)).await;
            sinks.push((ip, sink));
            stops.push(stop);
        }
        return (port, sinks, stops);
    }
    panic!("no port free on 127.0.0.1-3");
}

/// DNS scale-up 2 -> 3 and down 3 -> 2: traces sent after each change go where the new ring
/// says; what the removed backend still held (its peer refusing) is routed again to the
/// remaining ones, counted, and nothing is lost; a failed lookup keeps the last set.
#[tokio::test]
async fn dns_changes_rebuild_the_ring_and_reroute_what_a_removed_backend_held() {
    dns_changes_rebuild_the_ring_and_reroute(traces).await;
}

/// The same with wire forms: the removed backend's wire parts are routed again (split
/// again as bytes), counted the same.
#[tokio::test]
async fn dns_changes_reroute_what_a_removed_backend_held_as_wire_forms() {
    dns_changes_rebuild_the_ring_and_reroute(wire_traces).await;
}

async fn dns_changes_rebuild_the_ring_and_reroute(traces: MakeTraces) {
    let (port, sinks, _stops) = sinks_on_three_addresses().await;
    let ips: Vec<IpAddr> = sinks.iter().map(|(ip, _)| *ip).collect();
    let dns = FakeDns::start(ips[..2].to_vec()).await;
    let t = Telemetry::new();
    let lb = dns_load_balancer(
        "loadbalancing",
        &t,
        &dns,
        Some(port),
        Duration::from_millis(50),
        Duration::from_secs(1),
    );
    lb.start().await.unwrap();
    let dns_labels = [("exporter", "loadbalancing"), ("resolver", "dns")];
    assert_eq!(
        value(&t, "otelcol_loadbalancer_num_backends", &dns_labels),
        2.0
    );
    let ring_of = |n: usize| {
        let e: Vec<String> = ips[..n].iter().map(|ip| format!("{ip}:{port}")).collect();
        HashRing::new(&e).unwrap()
    };
    let sink_of = |ip: &str| {
        &sinks
            .iter()
            .find(|(i, _)| format!("{i}:{port}") == ip)
            .unwrap()
            .1
    };
    let check = |range: std::ops::Range<u32>, ring: &HashRing| {
        for tr in range {
            let want = &ring.endpoints()[ring.backend_for(&trace_id(tr)).unwrap()];
            for (ip, sink) in &sinks {
                let here = traces_at(sink).contains(&tr);
                assert_eq!(here, &format!("{ip}:{port}") == want, "trace {tr} at {ip}");
            }
        }
    };
    let total = || sinks.iter().map(|(_, s)| s.spans()).sum::<usize>();

    // Two backends.
    lb.consume(traces(0..40, 0..2)).await.unwrap();
    eventually("80 spans", || total() == 80).await;
    check(0..40, &ring_of(2));

    // A failed lookup keeps them.
    dns.mode(Mode::ServFail);
    let failed = [dns_labels[0], dns_labels[1], ("success", "false")];
    eventually("a failed resolution", || {
        value(&t, "otelcol_loadbalancer_num_resolutions", &failed) >= 2.0
    })
    .await;
    assert_eq!(
        value(&t, "otelcol_loadbalancer_num_backends", &dns_labels),
        2.0
    );

    // Three.
    dns.set(ips.clone());
    eventually("the third backend", || {
        value(&t, "otelcol_loadbalancer_num_backends", &dns_labels) == 3.0
    })
    .await;
    lb.consume(traces(40..80, 0..2)).await.unwrap();
    eventually("160 spans", || total() == 160).await;
    check(40..80, &ring_of(3));
    assert!(
        !traces_at(&sinks[2].1).is_empty(),
        "the new backend gets traces"
    );

    // The third backend's peer refuses (retryable); its share of the next traces waits for a
    // retry 30 s away; then DNS drops it, and what it holds goes elsewhere at once.
    let third = &sinks[2].1;
    *third.fail_with.lock().unwrap() = Some(tonic::Code::Unavailable);
    third.fail_first.store(1_000_000, Ordering::SeqCst);
    lb.consume(traces(80..120, 0..2)).await.unwrap();
    let held: Vec<u32> = (80..120)
        .filter(|&tr| {
            ring_of(3).endpoints()[ring_of(3).backend_for(&trace_id(tr)).unwrap()]
                == format!("{}:{port}", ips[2])
        })
        .collect();
    assert!(!held.is_empty());
    eventually("the third backend's queue retrying", || {
        third.requests.load(Ordering::SeqCst) > 0
    })
    .await;
    dns.set(ips[..2].to_vec());
    // Within `eventually`'s 20 s: before the 30 s retry, long before the 60 s drain deadline.
    eventually("all 240 spans delivered", || total() == 240).await;
    let two = ring_of(2);
    for tr in &held {
        let want = &two.endpoints()[two.backend_for(&trace_id(*tr)).unwrap()];
        assert!(
            traces_at(sink_of(want)).contains(tr),
            "held trace {tr} re-routed to {want}"
        );
        assert!(!traces_at(third).contains(tr));
    }
    assert_eq!(
        value(
            &t,
            "otelcol_loadbalancer_rerouted_spans",
            &[("exporter", "loadbalancing")]
        ),
        (held.len() * 2) as f64
    );
    // Nothing failed, whatever the error type (the removed backend's series may be gone
    // already: what it lost would be missing from the 240 spans counted once each below).
    assert_eq!(t.sum("otelcol_exporter_send_failed_spans", &[]), Some(0.0));
    // Every span once: the held ones were not also delivered to the third backend.
    let mut per_trace: BTreeMap<u32, usize> = BTreeMap::new();
    for (_, s) in &sinks {
        for id in s.span_ids.lock().unwrap().iter() {
            *per_trace
                .entry(u32::from_be_bytes(id[..4].try_into().unwrap()))
                .or_default() += 1;
        }
    }
    assert!(per_trace.values().all(|&n| n == 2), "{per_trace:?}");
    assert_eq!(
        value(&t, "otelcol_loadbalancer_num_backend_updates", &dns_labels),
        3.0
    );
    // Once drained, the removed backend's series are gone; the others' stay.
    let third_id = format!("loadbalancing/{}:{port}", ips[2]);
    let third_endpoint = format!("{}:{port}", ips[2]);
    eventually("the removed backend's series removed", || {
        t.sum(
            "otelcol_exporter_sent_spans",
            &[("exporter", third_id.as_str())],
        )
        .is_none()
    })
    .await;
    assert!(!t.render().contains(&third_endpoint), "{}", t.render());
    let first_id = format!("loadbalancing/{}:{port}", ips[0]);
    assert!(
        t.value(
            "otelcol_exporter_sent_spans",
            &[("exporter", first_id.as_str())]
        ) > Some(0.0)
    );
    lb.shutdown().await;
    // Re-routed is not lost: nothing counts as dropped at shutdown (the binary exits 0).
    assert_eq!(
        t.sum(
            "otelcol_exporter_send_failed_spans",
            &[("error_type", "shutdown")]
        ),
        None
    );
}

#[test]
fn config_is_the_collectors_and_refuses_what_is_not_supported() {
    let f = LoadBalancingFactory {
        type_name: "loadbalancing",
    };
    let err = |v: serde_json::Value| f.parse_config(&v).unwrap_err().to_string();
    let ok = |v: serde_json::Value| f.parse_config(&v).unwrap_or_else(|e| panic!("{e}"));
    ok(serde_json::json!({"resolver": {"static": {"hostnames": ["a:1"]}}}));
    // A static hostname is checked as the backend's exporter will read it, when the config
    // is read: not at the first ring, where a refused backend keeps the previous (none).
    ok(
        serde_json::json!({"resolver": {"static": {"hostnames": ["a:1", "http://10.0.0.1:4317", "https://b"]}}}),
    );
    ok(
        serde_json::json!({"protocol": {"flight": {"port": 4319}}, "resolver": {"static": {"hostnames": ["http://10.0.0.1:4317"]}}}),
    );
    assert!(
        err(serde_json::json!({"resolver": {"static": {"hostnames": ["a:1", "ftp://b:21"]}}}))
            .starts_with("resolver.static.hostnames[1]: invalid endpoint \"ftp://b:21\""),
        "{}",
        err(serde_json::json!({"resolver": {"static": {"hostnames": ["a:1", "ftp://b:21"]}}}))
    );
    ok(
        serde_json::json!({"routing_key": "service", "resolver": {"dns": {"hostname": "gw", "port": "4317"}}}),
    );
    ok(
        serde_json::json!({"routing_key": "attributes", "routing_attributes": ["service.name", "span.kind"],
        "resolver": {"static": {"hostnames": ["a"]}}, "sending_queue": {"enabled": false}}),
    );
    ok(
        serde_json::json!({"resolver": {"k8s": {"service": "gw.telemetry", "ports": [4317, 4318], "timeout": "3s", "return_hostnames": true}}}),
    );
    ok(serde_json::json!({"resolver": {"k8s": {"service": "gw"}}}));
    assert!(
        err(serde_json::json!({"resolver": {"k8s": {"service": "gw.telemetry.svc.cluster.local"}}}))
            .contains("resolver.k8s.service: namespace \"telemetry.svc.cluster.local\" is not a valid Kubernetes namespace")
    );
    assert!(
        err(serde_json::json!({"resolver": {"k8s": {"service": ""}}}))
            .contains("no service specified")
    );
    assert!(
        err(serde_json::json!({"resolver": {"k8s": {"service": "gw", "ports": [0]}}}))
            .contains("0 is not a port")
    );
    ok(
        serde_json::json!({"protocol": {"flight": {"tls": {"insecure": true}, "compression": "lz4"}}, "resolver": {"static": {"hostnames": ["a"]}}}),
    );
    assert!(
        err(serde_json::json!({"protocol": {"flight": {"compression": "gzip"}}, "resolver": {"static": {"hostnames": ["a"]}}}))
            .starts_with("protocol.flight.compression: gzip is not an Arrow IPC compression")
    );
    assert!(
        err(serde_json::json!({"protocol": {"flight": {}, "otlp": {}}, "resolver": {"static": {"hostnames": ["a"]}}}))
            .contains("not both")
    );
    assert!(err(serde_json::json!({"resolver": {}})).contains("no resolver"));
    assert!(
        err(serde_json::json!({"resolver": {"static": {"hostnames": ["a"]}, "dns": {"hostname": "b"}}}))
            .contains("only one resolver")
    );
    assert!(
        err(serde_json::json!({"resolver": {"static": {"hostnames": []}}}))
            .contains("no endpoints")
    );
    assert!(
        err(serde_json::json!({"resolver": {"dns": {"hostname": "b", "port": "http"}}}))
            .contains("not a port")
    );
    assert!(
        err(serde_json::json!({"routing_key": "attributes", "resolver": {"static": {"hostnames": ["a"]}}}))
            .contains("at least one attribute")
    );
    assert!(err(serde_json::json!({"routing_key": "spanID", "resolver": {"static": {"hostnames": ["a"]}}})).contains("unsupported routing_key"));
    assert!(
        err(serde_json::json!({"sending_queue": {"queue_size": 5}, "resolver": {"static": {"hostnames": ["a"]}}}))
            .contains("set sending_queue under protocol.otlp")
    );
    assert!(
        err(serde_json::json!({"protocol": {"otlp": {"compresion": "gzip"}}, "resolver": {"static": {"hostnames": ["a"]}}}))
            .starts_with("protocol.otlp.compresion: unknown field")
    );
    assert!(err(serde_json::json!({"resolver": {"aws_cloud_map": {}}})).contains("not supported"));
}

#[test]
fn backends_without_a_port_get_4317() {
    assert_eq!(with_port("10.0.0.1"), "10.0.0.1:4317");
    assert_eq!(with_port("10.0.0.1:55680"), "10.0.0.1:55680");
    assert_eq!(with_port("gateway-0.gateway"), "gateway-0.gateway:4317");
    assert_eq!(with_port("[fd00::1]"), "[fd00::1]:4317");
    assert_eq!(with_port("[fd00::1]:4318"), "[fd00::1]:4318");
    assert_eq!(with_port("http://10.0.0.1"), "http://10.0.0.1:4317");
    assert_eq!(with_port("https://gw:55680"), "https://gw:55680");
    assert_eq!(with_port("dns:///gw"), "dns:///gw:4317");
    // Flight backends: the flight receiver's default port.
    let flight = Template::Flight(FlightExporterConfig::new("placeholder:4319"), None);
    assert_eq!(with_protocol_port("10.0.0.1", &flight), "10.0.0.1:4319");
    assert_eq!(
        with_protocol_port("10.0.0.1:9000", &flight),
        "10.0.0.1:9000"
    );
    // `protocol.flight.port`: the ring keeps `10.0.0.1:4317` (a Collector agent's key), the
    // connection goes to the flight port, whatever the resolver's string says.
    let on_port = Template::Flight(FlightExporterConfig::new("placeholder:4319"), Some(4400));
    for (resolved, connected) in [
        ("10.0.0.1:4317", "10.0.0.1:4400"),
        ("10.0.0.1", "10.0.0.1:4400"),
        (
            "gateway-0.gateway.telemetry:4317",
            "gateway-0.gateway.telemetry:4400",
        ),
        ("[fd00::1]:4317", "[fd00::1]:4400"),
        ("[fd00::1]", "[fd00::1]:4400"),
        ("fd00::1", "[fd00::1]:4400"),
        // A static hostname may carry an `otlp` endpoint's scheme: its colon is not a port's
        // (this read as an IPv6 address, `[http://10.0.0.1:4317]:4400`, and the backend never
        // started).
        ("http://10.0.0.1:4317", "http://10.0.0.1:4400"),
        (
            "https://gateway-0.gateway:4317",
            "https://gateway-0.gateway:4400",
        ),
        ("http://10.0.0.1", "http://10.0.0.1:4400"),
        ("http://[fd00::1]:4317", "http://[fd00::1]:4400"),
    ] {
        assert_eq!(
            with_protocol_port(resolved, &on_port),
            connected,
            "{resolved}"
        );
    }
}

#[test]
fn flight_port_is_read_for_flight_only() {
    let with_protocol = |protocol: serde_json::Value| {
        parse(
            &serde_json::json!({"protocol": protocol, "resolver": {"static": {"hostnames": ["a:4317"]}}}),
        )
    };
    let parsed =
        with_protocol(serde_json::json!({"flight": {"port": 4319, "tls": {"insecure": true}}}))
            .expect("flight with a port");
    assert!(matches!(parsed.template, Template::Flight(_, Some(4319))));
    let err = |protocol| with_protocol(protocol).unwrap_err().to_string();
    assert!(
        err(serde_json::json!({"otlp": {"port": 4319}}))
            .starts_with("protocol.otlp.port: unknown field"),
        "{}",
        err(serde_json::json!({"otlp": {"port": 4319}}))
    );
    for bad in [
        serde_json::json!(0),
        serde_json::json!(70000),
        serde_json::json!("x"),
    ] {
        let e = err(serde_json::json!({"flight": {"port": bad}}));
        assert!(
            e.starts_with("protocol.flight.port: expected a port number"),
            "{e}"
        );
    }
}

/// Until the resolver has answered, data is refused for the client to retry (and counted).
#[tokio::test]
async fn no_backends_means_unavailable() {
    let dns = FakeDns::start(vec![]).await;
    dns.mode(Mode::Silent);
    let t = Telemetry::new();
    let lb = dns_load_balancer(
        "loadbalancing/agent",
        &t,
        &dns,
        None,
        Duration::from_secs(60),
        Duration::from_millis(200),
    );
    lb.start().await.unwrap();
    let e = lb.consume(traces(0..2, 0..1)).await.unwrap_err();
    assert!(e.to_string().contains("no backends resolved yet"), "{e}");
    assert!(e.is_retryable());
    assert_eq!(
        value(
            &t,
            "otelcol_exporter_enqueue_failed_spans",
            &[("exporter", "loadbalancing/agent")]
        ),
        2.0
    );
    assert!(dns.queries.load(Ordering::SeqCst) > 0);
    lb.shutdown().await;
}

/// An EndpointSlice `name` of service `gateway` in `telemetry` with these ready addresses (and
/// one endpoint that is not ready, which must never become a backend).
fn gateway_slice(name: &str, ready: &[IpAddr]) -> k8s_openapi::api::discovery::v1::EndpointSlice {
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointSlice};
    let endpoint = |ip: String, ready: bool| Endpoint {
        addresses: vec![ip],
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut endpoints: Vec<Endpoint> = ready
        .iter()
        .map(|ip| endpoint(ip.to_string(), true))
        .collect();
    endpoints.push(endpoint("127.0.0.9".into(), false));
    let mut s = EndpointSlice {
        address_type: "IPv4".into(),
        endpoints: Some(endpoints),
        ..Default::default()
    };
    s.metadata.name = Some(name.into());
    s.metadata.namespace = Some("telemetry".into());
    s.metadata.labels = Some(
        [(
            sluice_k8s::service_endpoints::SERVICE_NAME_LABEL.to_string(),
            "gateway".to_string(),
        )]
        .into(),
    );
    s
}

/// The `k8s` resolver against the fake Kubernetes API server (list + watch over TLS with a
/// bearer token): the ring follows the service's ready endpoints as its EndpointSlices change
/// (2 -> 3 by a new slice, 3 -> 2 by a pod turning unready), traces go where the Collector's
/// ring says, and what the removed backend held is routed again, nothing lost.
#[tokio::test]
async fn k8s_endpoint_slices_drive_the_ring_and_a_pod_turning_unready_is_drained_elsewhere() {
    use sluice_k8s::k8sattributes::watch::Environment;
    use sluice_k8s::service_endpoints::{Backoff, ServiceEndpoints};
    use sluice_k8s::testing::FakeApiServer;

    let (port, sinks, _stops) = sinks_on_three_addresses().await;
    let ips: Vec<IpAddr> = sinks.iter().map(|(ip, _)| *ip).collect();
    let server = FakeApiServer::start_default().await;
    server.apply(&gateway_slice("gateway-a", &ips[..2]));
    let kubeconfig = server.kubeconfig().display().to_string();
    let env = Environment {
        vars: Arc::new(move |k| (k == "KUBECONFIG").then(|| kubeconfig.clone())),
        service_account_dir: server.dir().join("no-service-account"),
    };
    let config =
        lb_config(serde_json::json!({"k8s": {"service": "gateway.telemetry", "ports": [port]}}));
    let parsed = Arc::new(parse(&config).unwrap());
    let resolver = K8sResolver {
        endpoints: ServiceEndpoints::new("gateway.telemetry", vec![port], false, &env).unwrap(),
        timeout: Duration::from_secs(10),
        env,
        backoff: Backoff {
            min: Duration::from_millis(20),
            max: Duration::from_millis(200),
        },
    };
    let t = Telemetry::new();
    let lb = LoadBalancer::new(
        BuildContext {
            id: ComponentId::parse("loadbalancing").unwrap(),
            config: parsed.clone(),
            telemetry: t.clone(),
            clock: Arc::new(WallClock),
            extensions: Default::default(),
        },
        parsed,
        Arc::new(resolver),
    );
    lb.start().await.unwrap();
    let labels = [("exporter", "loadbalancing"), ("resolver", "k8s")];
    assert_eq!(value(&t, "otelcol_loadbalancer_num_backends", &labels), 2.0);
    let ring_of = |ips: &[IpAddr]| {
        let e: Vec<String> = ips.iter().map(|ip| format!("{ip}:{port}")).collect();
        HashRing::new(&e).unwrap()
    };
    let check = |range: std::ops::Range<u32>, ring: &HashRing| {
        for tr in range {
            let want = &ring.endpoints()[ring.backend_for(&trace_id(tr)).unwrap()];
            for (ip, sink) in &sinks {
                let here = traces_at(sink).contains(&tr);
                assert_eq!(here, &format!("{ip}:{port}") == want, "trace {tr} at {ip}");
            }
        }
    };
    let total = || sinks.iter().map(|(_, s)| s.spans()).sum::<usize>();

    lb.consume(traces(0..40, 0..2)).await.unwrap();
    eventually("80 spans", || total() == 80).await;
    check(0..40, &ring_of(&ips[..2]));

    // Scale out: the third gateway's pod is ready, in a second slice of the service.
    server.apply(&gateway_slice("gateway-b", &ips[2..]));
    eventually("the third backend", || {
        value(&t, "otelcol_loadbalancer_num_backends", &labels) == 3.0
    })
    .await;
    lb.consume(traces(40..80, 0..2)).await.unwrap();
    eventually("160 spans", || total() == 160).await;
    check(40..80, &ring_of(&ips));
    assert!(!traces_at(&sinks[2].1).is_empty());

    // The first gateway's peer refuses (retryable), so its share of the next traces waits in
    // its queue; then its pod turns unready: it leaves the ring and what it holds goes to the
    // remaining two at once.
    let first = &sinks[0].1;
    *first.fail_with.lock().unwrap() = Some(tonic::Code::Unavailable);
    first.fail_first.store(1_000_000, Ordering::SeqCst);
    lb.consume(traces(80..120, 0..2)).await.unwrap();
    let all = ring_of(&ips);
    let held: Vec<u32> = (80..120)
        .filter(|&tr| {
            all.endpoints()[all.backend_for(&trace_id(tr)).unwrap()] == format!("{}:{port}", ips[0])
        })
        .collect();
    assert!(!held.is_empty());
    eventually("the first backend's queue retrying", || {
        first.requests.load(Ordering::SeqCst) > 0
    })
    .await;
    server.apply(&gateway_slice("gateway-a", &ips[1..2]));
    eventually("all 240 spans delivered", || total() == 240).await;
    let remaining = ring_of(&ips[1..]);
    for tr in &held {
        assert!(
            !traces_at(first).contains(tr),
            "held trace {tr} not also at the removed one"
        );
        let want = &remaining.endpoints()[remaining.backend_for(&trace_id(*tr)).unwrap()];
        let at = &sinks
            .iter()
            .find(|(ip, _)| &format!("{ip}:{port}") == want)
            .unwrap()
            .1;
        assert!(
            traces_at(at).contains(tr),
            "held trace {tr} re-routed to {want}"
        );
    }
    assert_eq!(
        value(
            &t,
            "otelcol_loadbalancer_rerouted_spans",
            &[("exporter", "loadbalancing")]
        ),
        (held.len() * 2) as f64
    );
    assert_eq!(t.sum("otelcol_exporter_send_failed_spans", &[]), Some(0.0));
    assert_eq!(value(&t, "otelcol_loadbalancer_num_backends", &labels), 2.0);
    assert_eq!(
        value(&t, "otelcol_loadbalancer_num_backend_updates", &labels),
        3.0,
        "2, then 3, then 2: the unready endpoint never counted"
    );
    lb.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Persistent backend queues (`protocol.otlp.sending_queue.storage`).

/// A sink that refuses every export with UNAVAILABLE (retryable) until `up` is called: the
/// same address down, then up, across load balancer restarts.
async fn sink_down() -> (String, Sink, tokio::sync::oneshot::Sender<()>) {
    let sink = Sink::default();
    *sink.fail_with.lock().unwrap() = Some(tonic::Code::Unavailable);
    sink.fail_first.store(usize::MAX / 2, Ordering::SeqCst);
    let (addr, stop) = serve_sink(sink.clone(), "127.0.0.1:0".parse().unwrap()).await;
    (addr.to_string(), sink, stop)
}

fn up(sink: &Sink) {
    sink.fail_first.store(0, Ordering::SeqCst);
}

/// A load balancer `loadbalancing` over `hostnames` whose backends' queues are persistent in
/// `dir` (retry every 50 ms; a 300 ms drain at shutdown).
fn persistent_lb(
    hostnames: &[String],
    dir: &std::path::Path,
    t: &Telemetry,
) -> Arc<dyn sluice_engine::component::Node> {
    let storage = crate::file_storage::FileStorageFactory
        .parse_config(&serde_json::json!({"directory": dir}))
        .unwrap();
    let mut extensions = BTreeMap::new();
    extensions.insert(ComponentId::parse("file_storage").unwrap(), storage);
    let factory = LoadBalancingFactory {
        type_name: "loadbalancing",
    };
    let config = serde_json::json!({
        "protocol": {"otlp": {
            "tls": {"insecure": true},
            "compression": "none",
            "timeout": "1s",
            "sending_queue": {"drain_timeout": "300ms", "storage": "file_storage"},
            "retry_on_failure": {"initial_interval": "50ms", "max_interval": "100ms",
                "max_elapsed_time": "0s"},
        }},
        "resolver": {"static": {"hostnames": hostnames}},
    });
    factory
        .build_exporter(BuildContext {
            id: ComponentId::parse("loadbalancing").unwrap(),
            config: factory.parse_config(&config).unwrap(),
            telemetry: t.clone(),
            clock: Arc::new(WallClock),
            extensions: sluice_engine::component::Extensions::new(extensions),
        })
        .unwrap()
}

/// The traces queue directory of backend `host` (its id `loadbalancing/<host>`, escaped).
fn backend_queue(dir: &std::path::Path, host: &str) -> std::path::PathBuf {
    dir.join(crate::file_storage::queue_dir_name(
        &ComponentId::parse(&format!("loadbalancing/{host}")).unwrap(),
        Signal::Traces,
    ))
}

/// Which of `hosts` the ring gives trace `t`.
fn owner(hosts: &[String], t: u32) -> String {
    let mut sorted = hosts.to_vec();
    sorted.sort();
    let ring = HashRing::new(&sorted).unwrap();
    ring.endpoints()[ring.backend_for(&trace_id(t)).unwrap()].clone()
}

/// Each backend has a persistent queue of its own, named after it: with both backends down
/// at shutdown each keeps its own traces (nothing dropped); after a restart, the backend that
/// is up again replays its own queue — exactly its traces — while the other's stays on disk
/// untouched, and is delivered once that backend is up too.
#[tokio::test]
async fn each_backend_keeps_and_replays_its_own_persistent_queue() {
    each_backend_keeps_and_replays_its_own(traces).await;
}

/// The same with wire forms: each backend's wire part is stored and replayed as any payload.
#[tokio::test]
async fn each_backend_keeps_and_replays_its_own_persistent_queue_of_wire_forms() {
    each_backend_keeps_and_replays_its_own(wire_traces).await;
}

async fn each_backend_keeps_and_replays_its_own(traces: MakeTraces) {
    let dir = tempfile::tempdir().unwrap();
    let (a, sink_a, _stop_a) = sink_down().await;
    let (b, sink_b, _stop_b) = sink_down().await;
    let hosts = vec![a.clone(), b.clone()];
    let of =
        |host: &str| -> BTreeSet<u32> { (0..40).filter(|t| owner(&hosts, *t) == host).collect() };
    assert!(!of(&a).is_empty() && !of(&b).is_empty());

    let t = Telemetry::new();
    let lb = persistent_lb(&hosts, dir.path(), &t);
    lb.start().await.unwrap();
    lb.consume(traces(0..40, 0..2)).await.unwrap();
    lb.shutdown().await;
    assert_eq!(
        t.sum("otelcol_exporter_send_failed_spans", &[])
            .unwrap_or(0.0),
        0.0,
        "kept, not dropped"
    );
    let stored_a = crate::tests::records_on_disk(&backend_queue(dir.path(), &a));
    let stored_b = crate::tests::records_on_disk(&backend_queue(dir.path(), &b));
    assert!(stored_a > 0 && stored_b > 0, "{stored_a} {stored_b}");
    assert!(
        backend_queue(dir.path(), &a)
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("exporter_loadbalancing_127.0.0.1~3A"),
        "named after the backend, its endpoint's : escaped"
    );
    drop(lb);

    // A is up: it replays its own queue; B's stays where it is.
    up(&sink_a);
    let t = Telemetry::new();
    let lb = persistent_lb(&hosts, dir.path(), &t);
    lb.start().await.unwrap();
    let want_a = of(&a).len() * 2;
    eventually("A's traces replayed to A", || sink_a.spans() == want_a).await;
    lb.shutdown().await;
    assert_eq!(traces_at(&sink_a), of(&a));
    assert_eq!(sink_a.spans(), want_a, "each span once");
    assert_eq!(sink_b.spans(), 0);
    assert_eq!(
        crate::tests::records_on_disk(&backend_queue(dir.path(), &b)),
        stored_b,
        "B's queue untouched"
    );
    drop(lb);

    // B is up too: B replays its own, A has nothing left to send.
    up(&sink_b);
    let t = Telemetry::new();
    let lb = persistent_lb(&hosts, dir.path(), &t);
    lb.start().await.unwrap();
    let want_b = of(&b).len() * 2;
    eventually("B's traces replayed to B", || sink_b.spans() == want_b).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    lb.shutdown().await;
    assert_eq!(traces_at(&sink_b), of(&b));
    assert_eq!(sink_b.spans(), want_b, "each span once");
    assert_eq!(sink_a.spans(), want_a, "A replayed nothing twice");
}

/// A backend that left the ring while sluice was down left its persistent queue behind: at
/// start the load balancer routes what it holds through the current ring (here, to the one
/// backend there is), deletes it once taken, and a further start has nothing to route.
#[tokio::test]
async fn a_gone_backends_persistent_queue_is_routed_again_through_the_ring_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _sink_a, _stop_a) = sink_down().await;
    let (b, _sink_b, _stop_b) = sink_down().await;
    let t = Telemetry::new();
    let lb = persistent_lb(&[a.clone(), b.clone()], dir.path(), &t);
    lb.start().await.unwrap();
    lb.consume(traces(0..30, 0..2)).await.unwrap();
    lb.shutdown().await;
    drop(lb);

    // Both are gone; C is the ring now.
    let c_sink = Sink::default();
    let (c, _stop_c) = serve_sink(c_sink.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let c = c.to_string();
    let t = Telemetry::new();
    let lb = persistent_lb(std::slice::from_ref(&c), dir.path(), &t);
    lb.start().await.unwrap();
    eventually("A's and B's traces at C", || c_sink.spans() == 60).await;
    eventually("counted as routed again", || {
        value(
            &t,
            "otelcol_loadbalancer_rerouted_spans",
            &[("exporter", "loadbalancing")],
        ) == 60.0
    })
    .await;
    lb.shutdown().await;
    assert_eq!(traces_at(&c_sink), (0..30).collect());
    assert_eq!(
        t.sum("otelcol_exporter_send_failed_spans", &[])
            .unwrap_or(0.0),
        0.0
    );
    drop(lb);

    // Routed and deleted: a further start routes nothing again.
    let t = Telemetry::new();
    let lb = persistent_lb(std::slice::from_ref(&c), dir.path(), &t);
    lb.start().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    lb.shutdown().await;
    assert_eq!(c_sink.spans(), 60, "each span once");
    assert_eq!(
        value(
            &t,
            "otelcol_loadbalancer_rerouted_spans",
            &[("exporter", "loadbalancing")]
        ),
        0.0
    );
}

#[test]
fn queue_directory_names_escape_and_name_their_backend() {
    use crate::file_storage::{escape_name, unescape_name};
    for name in [
        "otlp",
        "lb/10.0.0.1:4317",
        "[::1]:4317",
        "gw-0.gw_x:4317",
        "ü/~",
    ] {
        let escaped = escape_name(name);
        assert!(
            escaped
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-~".contains(&b)),
            "{escaped}"
        );
        assert_eq!(unescape_name(&escaped).as_deref(), Some(name));
    }
    assert_eq!(escape_name("otlp"), "otlp", "plain ids keep their names");
    assert_eq!(escape_name("10.0.0.1:4317"), "10.0.0.1~3A4317");
    assert_eq!(unescape_name("~2"), None);
}

/// A persistent backend removed while running: what it holds (its peer refusing) is routed
/// again to the remaining backend, and only then deleted from its queue — a later start over
/// the same directory, which would route any record left behind again, delivers nothing more.
#[tokio::test]
async fn a_removed_persistent_backend_deletes_what_it_handed_on_once_the_ring_took_it() {
    let (port, sinks, _stops) = sinks_on_three_addresses().await;
    let ips: Vec<IpAddr> = sinks.iter().map(|(ip, _)| *ip).collect();
    let dns = FakeDns::start(ips[..2].to_vec()).await;
    let dir = tempfile::tempdir().unwrap();
    let storage = crate::file_storage::FileStorageFactory
        .parse_config(&serde_json::json!({"directory": dir.path()}))
        .unwrap();
    let mut extensions = BTreeMap::new();
    extensions.insert(ComponentId::parse("file_storage").unwrap(), storage);
    let extensions = sluice_engine::component::Extensions::new(extensions);
    let mut config = lb_config(serde_json::json!({"dns": {"hostname": "gateways.test"}}));
    config["protocol"]["otlp"]["sending_queue"]["storage"] = "file_storage".into();
    let parsed = Arc::new(parse(&config).unwrap());
    let load_balancer = |t: &Telemetry| {
        let resolver = DnsResolver::new(
            "gateways.test".into(),
            Some(port.to_string()),
            Duration::from_millis(50),
            Duration::from_secs(1),
            Some(dns.addr),
        )
        .unwrap();
        LoadBalancer::new(
            BuildContext {
                id: ComponentId::parse("loadbalancing").unwrap(),
                config: parsed.clone(),
                telemetry: t.clone(),
                clock: Arc::new(WallClock),
                extensions: extensions.clone(),
            },
            parsed.clone(),
            Arc::new(resolver),
        )
    };
    let t = Telemetry::new();
    let lb = load_balancer(&t);
    lb.start().await.unwrap();
    let second = &sinks[1].1;
    *second.fail_with.lock().unwrap() = Some(tonic::Code::Unavailable);
    second.fail_first.store(1_000_000, Ordering::SeqCst);
    lb.consume(traces(0..40, 0..2)).await.unwrap();
    let total = || sinks.iter().map(|(_, s)| s.spans()).sum::<usize>();
    eventually("the second backend's queue retrying", || {
        second.requests.load(Ordering::SeqCst) > 0
    })
    .await;
    assert!(total() < 80, "the second backend holds its share");
    dns.set(ips[..1].to_vec());
    eventually("all 80 spans at the first backend", || {
        sinks[0].1.spans() == 80
    })
    .await;
    assert_eq!(t.sum("otelcol_exporter_send_failed_spans", &[]), Some(0.0));
    lb.shutdown().await;
    drop(lb);

    // A new start over the same storage, the first backend alone: nothing left to route.
    let t = Telemetry::new();
    let lb = load_balancer(&t);
    lb.start().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    lb.shutdown().await;
    assert_eq!(total(), 80, "each span once");
    assert_eq!(
        value(
            &t,
            "otelcol_loadbalancer_rerouted_spans",
            &[("exporter", "loadbalancing")]
        ),
        0.0
    );
}

/// The backends' `sending_queue.storage` is an extension reference the loader checks (defined,
/// enabled), at its path under `protocol`.
#[test]
fn the_backends_storage_is_an_extension_reference_at_its_path() {
    let factory = LoadBalancingFactory {
        type_name: "loadbalancing",
    };
    for protocol in ["otlp", "flight"] {
        let parsed = factory
            .parse_config(&serde_json::json!({
                "protocol": {protocol: {"sending_queue": {"storage": "file_storage/q"}}},
                "resolver": {"static": {"hostnames": ["a:4317"]}},
            }))
            .unwrap();
        let refs = factory.extension_refs(&parsed);
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0].id, "file_storage/q");
        assert_eq!(
            refs[0].path,
            format!("protocol.{protocol}.sending_queue.storage")
        );
    }
}

/// Wire forms are kept (the pipeline feeding it skims rather than decodes) with
/// `protocol.otlp` and `traceID` routing for traces or logs, and not with `flight` (it sends
/// tables) nor when no signal routes by trace id.
#[test]
fn wire_forms_are_kept_with_otlp_and_trace_id_routing() {
    let t = Telemetry::new();
    let f = LoadBalancingFactory {
        type_name: "loadbalancing",
    };
    let keeps = |config: serde_json::Value| {
        let lb = build(&f, "loadbalancing", config, &t);
        lb.keeps_wire_form()
    };
    let resolver = serde_json::json!({"static": {"hostnames": ["a:4317"]}});
    assert!(keeps(lb_config(resolver.clone())));
    let mut traceid = lb_config(resolver.clone());
    traceid["routing_key"] = "traceID".into();
    assert!(keeps(traceid));
    let mut service = lb_config(resolver.clone());
    service["routing_key"] = "service".into();
    assert!(!keeps(service));
    assert!(!keeps(serde_json::json!({
        "protocol": {"flight": {"tls": {"insecure": true}}},
        "resolver": resolver,
    })));
}
