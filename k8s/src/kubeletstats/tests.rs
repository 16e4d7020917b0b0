//! The receiver's tests: golden files for the conversion, config checks, and the whole scrape
//! path against the fake kubelet (TLS, bearer tokens, the API server proxy path, failures).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use prost::Message;
use serde_json::{Value, json};
use sluice_engine::clock::{Clock, WallClock};
use sluice_engine::component::{
    BoxFuture, ComponentId, ConsumeError, Consumer, Factory, Lifecycle,
};
use sluice_engine::payload::Payload;
use sluice_engine::telemetry::Telemetry;
use sluice_tls::testing::TestPki;

use super::client::{ClientEnv, KubeletClient};
use super::config::KubeletStatsConfig;
use super::fake_kubelet::{Answer, FakeKubelet, Serve};
use super::*;

// ------------------------------------------------------------------------------ helpers

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/kubeletstats")
        .join(name)
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(testdata(name)).expect("fixture")
}

fn config(v: Value) -> Result<KubeletStatsConfig, String> {
    KubeletStatsFactory
        .parse_config(&v)
        .map(|c| {
            c.downcast::<KubeletStatsConfig>()
                .map(|c| (*c).clone())
                .expect("config type")
        })
        .map_err(|e| e.to_string())
}

const NOW: u64 = 1_714_558_400_000_000_000; // 2024-05-01T10:13:20Z
const RECEIVER_START: u64 = 1_714_558_000_000_000_000;

fn convert(c: &KubeletStatsConfig, body: &[u8]) -> Payload {
    Scraper::payload(c, &c.enabled_metrics(), body, "test", NOW, RECEIVER_START)
        .expect("conversion")
}

fn request(p: &Payload) -> ExportMetricsServiceRequest {
    let bytes = sluice_engine::otlp::encode_to_vec(p);
    ExportMetricsServiceRequest::decode(bytes.as_slice()).expect("valid OTLP")
}

fn attr_map(attrs: &[KeyValue]) -> BTreeMap<String, Value> {
    attrs
        .iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => json!(s),
                Some(any_value::Value::IntValue(i)) => json!(i),
                Some(any_value::Value::DoubleValue(d)) => json!(d),
                Some(any_value::Value::BoolValue(b)) => json!(b),
                other => json!(format!("{other:?}")),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

/// The payload as the golden files hold it: sorted, timestamps left out.
fn canonical(p: &Payload) -> Value {
    let mut resources = Vec::new();
    for rm in request(p).resource_metrics {
        let resource = attr_map(&rm.resource.map(|r| r.attributes).unwrap_or_default());
        for sm in rm.scope_metrics {
            let scope = sm.scope.unwrap_or_default();
            let mut metrics = Vec::new();
            for m in sm.metrics {
                let (ty, temporality, monotonic, points) = match m.data {
                    Some(metric::Data::Gauge(g)) => ("gauge", None, None, g.data_points),
                    Some(metric::Data::Sum(s)) => (
                        "sum",
                        Some(match s.aggregation_temporality {
                            1 => "delta",
                            2 => "cumulative",
                            _ => "unspecified",
                        }),
                        Some(s.is_monotonic),
                        s.data_points,
                    ),
                    other => panic!("unexpected metric data {other:?}"),
                };
                let mut points: Vec<Value> = points
                    .iter()
                    .map(|dp| {
                        let value = match dp.value {
                            Some(number_data_point::Value::AsInt(i)) => json!({ "int": i }),
                            Some(number_data_point::Value::AsDouble(d)) => json!({ "double": d }),
                            None => json!(null),
                        };
                        json!({ "attributes": attr_map(&dp.attributes), "value": value })
                    })
                    .collect();
                points.sort_by_key(|v| v.to_string());
                let mut entry = json!({
                    "name": m.name,
                    "description": m.description,
                    "unit": m.unit,
                    "type": ty,
                    "points": points,
                });
                if let (Some(t), Some(mono)) = (temporality, monotonic) {
                    entry["temporality"] = json!(t);
                    entry["monotonic"] = json!(mono);
                }
                metrics.push(entry);
            }
            metrics.sort_by_key(|m| m["name"].as_str().unwrap_or_default().to_string());
            resources.push(json!({
                "resource": resource,
                "scope": scope.name,
                "metrics": metrics,
            }));
        }
    }
    resources.sort_by_key(|r| r["resource"].to_string());
    Value::Array(resources)
}

/// Compares with the golden file `name`; rewrites it instead when `SLUICE_UPDATE_GOLDEN` is
/// set.
fn golden(name: &str, got: &Value) {
    let path = testdata(name);
    let text = serde_json::to_string_pretty(got).expect("json") + "\n";
    if std::env::var_os("SLUICE_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, text).expect("write golden");
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (SLUICE_UPDATE_GOLDEN=1 writes it)", path.display()));
    let want: Value = serde_json::from_str(&want).expect("golden is JSON");
    if &want != got {
        let got_path = path.with_extension("actual.json");
        let _ = std::fs::write(&got_path, &text);
        panic!(
            "{} differs from the output (written to {}); if the change is intended, \
             rerun with SLUICE_UPDATE_GOLDEN=1",
            path.display(),
            got_path.display()
        );
    }
}

/// Points per resource, keyed by the resource's most specific name.
fn points_per_resource(p: &Payload) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for rm in request(p).resource_metrics {
        let attrs = attr_map(&rm.resource.map(|r| r.attributes).unwrap_or_default());
        let key = [
            "k8s.volume.name",
            "k8s.container.name",
            "k8s.pod.name",
            "k8s.node.name",
        ]
        .iter()
        .find_map(|k| {
            attrs
                .get(*k)
                .map(|v| format!("{k}={}", v.as_str().unwrap_or("")))
        })
        .unwrap_or_default();
        let n: usize = rm
            .scope_metrics
            .iter()
            .flat_map(|s| &s.metrics)
            .map(|m| match &m.data {
                Some(metric::Data::Gauge(g)) => g.data_points.len(),
                Some(metric::Data::Sum(s)) => s.data_points.len(),
                _ => 0,
            })
            .sum();
        *out.entry(key).or_default() += n;
    }
    out
}

// ------------------------------------------------------------------------------ golden files

#[test]
fn golden_default_config() {
    let c = config(json!({"auth_type": "serviceAccount"})).unwrap();
    golden(
        "stats-summary.default.expected.json",
        &canonical(&convert(&c, &fixture("stats-summary.json"))),
    );
}

#[test]
fn golden_every_group_and_optional_metric() {
    let c = config(json!({
        "auth_type": "none",
        "metric_groups": ["node", "pod", "container", "volume"],
        "collect_all_network_interfaces": {"node": true, "pod": true},
        "metrics": {
            "container.uptime": {"enabled": true},
            "k8s.pod.uptime": {"enabled": true},
            "k8s.node.uptime": {"enabled": true},
        },
    }))
    .unwrap();
    golden(
        "stats-summary.all.expected.json",
        &canonical(&convert(&c, &fixture("stats-summary.json"))),
    );
}

#[test]
fn golden_sparse_summary() {
    let c = config(json!({
        "auth_type": "none",
        "metric_groups": ["node", "pod", "container", "volume"],
    }))
    .unwrap();
    golden(
        "stats-summary-sparse.expected.json",
        &canonical(&convert(&c, &fixture("stats-summary-sparse.json"))),
    );
}

/// The reference's count for the Collector's fixture with the defaults: 15 points per node,
/// 15 per pod, 11 per container, 5 per volume (entities with every field).
#[test]
fn default_point_counts_per_entity_are_the_collectors() {
    let c = config(
        json!({"auth_type": "none", "metric_groups": ["node", "pod", "container", "volume"]}),
    )
    .unwrap();
    let counts = points_per_resource(&convert(&c, &fixture("stats-summary.json")));
    assert_eq!(counts["k8s.node.name=ip-10-0-1-17.ec2.internal"], 15);
    assert_eq!(counts["k8s.pod.name=kube-scheduler-ip-10-0-1-17"], 15);
    assert_eq!(counts["k8s.pod.name=checkout-7d8f9c5b6-a1b2c"], 15);
    assert_eq!(counts["k8s.container.name=kube-scheduler"], 11);
    assert_eq!(counts["k8s.container.name=server"], 11);
    assert_eq!(counts["k8s.container.name=istio-proxy"], 11);
    assert_eq!(counts["k8s.volume.name=kube-api-access-wgfsl"], 5);
    // missing fields give no points, not zeros: the job pod has cpu.usage only; its report
    // container cpu.time and three memory gauges; the volume without inode counts 2 points;
    // the container and the volume without stats no resource at all
    assert_eq!(counts["k8s.pod.name=nightly-report-28571230-q8zkx"], 1);
    assert_eq!(counts["k8s.container.name=report"], 4);
    assert_eq!(counts["k8s.volume.name=scratch"], 2);
    assert!(!counts.contains_key("k8s.container.name=init-done"));
    assert!(!counts.contains_key("k8s.volume.name=test-missing-metrics"));
}

#[test]
fn values_types_and_units_follow_the_collectors_definitions() {
    let c = config(json!({"auth_type": "none"})).unwrap();
    let got = canonical(&convert(&c, &fixture("stats-summary.json")));
    let node = got
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resource"]["k8s.node.name"] == "ip-10-0-1-17.ec2.internal")
        .unwrap();
    let metric = |name: &str| {
        node["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing"))
            .clone()
    };
    // usageNanoCores / 1e9 cores, usageCoreNanoSeconds / 1e9 seconds
    let usage = metric("k8s.node.cpu.usage");
    assert_eq!(usage["unit"], "{cpu}");
    assert_eq!(usage["type"], "gauge");
    assert_eq!(usage["points"][0]["value"]["double"], 0.265737329);
    let time = metric("k8s.node.cpu.time");
    assert_eq!(
        (time["unit"].clone(), time["type"].clone()),
        (json!("s"), json!("sum"))
    );
    assert_eq!(time["temporality"], "cumulative");
    assert_eq!(time["monotonic"], true);
    assert_eq!(time["points"][0]["value"]["double"], 363.475389988);
    let ws = metric("k8s.node.memory.working_set");
    assert_eq!(ws["points"][0]["value"]["int"], 1334567890);
    assert_eq!(ws["unit"], "By");
    // only the default interface, both directions
    let io = metric("k8s.node.network.io");
    assert_eq!(
        io["points"],
        json!([
            {"attributes": {"direction": "receive", "interface": "eth0"}, "value": {"int": 948305524}},
            {"attributes": {"direction": "transmit", "interface": "eth0"}, "value": {"int": 12542266}},
        ])
    );
    assert_eq!(metric("k8s.node.network.errors")["unit"], "1");
    assert_eq!(node["scope"], metrics::SCOPE_NAME);
}

#[test]
fn start_times_are_the_entities_and_times_the_scrapes() {
    let c = config(
        json!({"auth_type": "none", "metric_groups": ["node", "pod", "container", "volume"]}),
    )
    .unwrap();
    let req = request(&convert(&c, &fixture("stats-summary.json")));
    let t = |s: &str| s.parse::<jiff::Timestamp>().unwrap().as_nanosecond() as u64;
    let mut seen = 0;
    for rm in req.resource_metrics {
        let attrs = attr_map(&rm.resource.map(|r| r.attributes).unwrap_or_default());
        let want_start = if attrs.contains_key("k8s.volume.name") {
            RECEIVER_START
        } else if let Some(c) = attrs.get("k8s.container.name") {
            match c.as_str().unwrap() {
                "kube-scheduler" => t("2024-05-01T08:00:31Z"),
                "server" => t("2024-05-01T09:51:07Z"),
                "istio-proxy" => t("2024-05-01T09:51:09Z"),
                // no startTime in the summary: unknown
                "report" => 0,
                other => panic!("{other}"),
            }
        } else if let Some(p) = attrs.get("k8s.pod.name") {
            match p.as_str().unwrap() {
                "kube-scheduler-ip-10-0-1-17" => t("2024-05-01T08:00:20Z"),
                "checkout-7d8f9c5b6-a1b2c" => t("2024-05-01T09:51:06Z"),
                "nightly-report-28571230-q8zkx" => t("2024-05-01T10:10:00Z"),
                other => panic!("{other}"),
            }
        } else {
            t("2024-05-01T08:00:12Z")
        };
        for m in rm.scope_metrics.iter().flat_map(|s| &s.metrics) {
            let points = match &m.data {
                Some(metric::Data::Gauge(g)) => &g.data_points,
                Some(metric::Data::Sum(s)) => &s.data_points,
                _ => unreachable!(),
            };
            for p in points {
                assert_eq!(
                    p.start_time_unix_nano, want_start,
                    "{} of {attrs:?}",
                    m.name
                );
                assert_eq!(p.time_unix_nano, NOW);
                seen += 1;
            }
        }
    }
    assert!(seen > 60, "{seen}");
}

#[test]
fn uptime_is_whole_seconds_since_start() {
    let c = config(json!({"auth_type": "none", "metrics": {"k8s.node.uptime": {"enabled": true}}}))
        .unwrap();
    let got = canonical(&convert(&c, &fixture("stats-summary.json")));
    let node = &got
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resource"]["k8s.node.name"].is_string())
        .unwrap()["metrics"];
    let uptime = node
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "k8s.node.uptime")
        .unwrap();
    // 2024-05-01T08:00:12Z to 10:13:20Z
    assert_eq!(uptime["points"][0]["value"]["int"], 2 * 3600 + 13 * 60 + 8);
    assert_eq!(
        (uptime["type"].clone(), uptime["unit"].clone()),
        (json!("sum"), json!("s"))
    );
}

#[test]
fn metric_and_resource_attribute_toggles() {
    let c = config(json!({
        "auth_type": "none",
        "metrics": {"container.cpu.time": {"enabled": false}, "k8s.pod.memory.rss": {"enabled": false}},
        "resource_attributes": {"k8s.pod.uid": {"enabled": false}},
    }))
    .unwrap();
    let text = canonical(&convert(&c, &fixture("stats-summary.json"))).to_string();
    assert!(!text.contains("\"container.cpu.time\""));
    assert!(!text.contains("\"k8s.pod.memory.rss\""));
    assert!(text.contains("\"container.memory.rss\""));
    assert!(!text.contains("k8s.pod.uid"));
    assert!(text.contains("k8s.pod.name"));
}

#[test]
fn metric_groups_select_resources() {
    let c = config(json!({"auth_type": "none", "metric_groups": ["container"]})).unwrap();
    let counts = points_per_resource(&convert(&c, &fixture("stats-summary.json")));
    assert!(
        counts.keys().all(|k| k.starts_with("k8s.container.name=")),
        "{counts:?}"
    );
    let c = config(json!({"auth_type": "none", "metric_groups": []})).unwrap();
    assert!(convert(&c, &fixture("stats-summary.json")).is_empty());
}

#[test]
fn malformed_summaries_are_errors_not_panics() {
    let c = config(json!({"auth_type": "none"})).unwrap();
    for body in [
        &b""[..],
        b"not json",
        br#"{"node": {"cpu": {"usageNanoCores": "fast"}}}"#,
        br#"{"node": {"startTime": "5 minutes ago"}}"#,
        br#"{"pods": {}}"#,
        &fixture("stats-summary.json")[..100],
    ] {
        let e = Scraper::payload(&c, &c.enabled_metrics(), body, "u", NOW, 0).unwrap_err();
        assert_eq!(e.reason(), "bad_json", "{e}");
    }
}

// ------------------------------------------------------------------------------ config

#[test]
fn config_defaults_and_checks_follow_the_collector() {
    let c = config(json!({"cert_file": "c.crt", "key_file": "c.key"})).unwrap();
    assert_eq!(c.collection_interval, Duration::from_secs(10));
    assert_eq!(c.initial_delay, Duration::from_secs(1));
    assert_eq!(c.auth_type, config::AuthType::Tls);
    assert_eq!(
        c.groups(),
        [
            config::MetricGroup::Container,
            config::MetricGroup::Pod,
            config::MetricGroup::Node
        ]
    );
    let on = c.enabled_metrics();
    assert_eq!(on.iter().filter(|b| **b).count(), metrics::COUNT - 3);

    let err = |v: Value| config(v).unwrap_err();
    let e = err(json!({}));
    assert!(e.contains("auth_type") && e.contains("cert_file"), "{e}");
    let e = err(json!({"auth_type": "token"}));
    assert!(
        e.contains("serviceAccount") && e.contains("kubeConfig"),
        "{e}"
    );
    let e = err(json!({"auth_type": "none", "metric_groups": ["node", "disk"]}));
    assert!(e.contains("metric_groups") && e.contains("volume"), "{e}");
    let e = err(json!({"auth_type": "none", "collection_interval": "10x"}));
    assert!(e.contains("collection_interval"), "{e}");
    let e = err(json!({"auth_type": "none", "metrics": {"container.cpu.tim": {"enabled": true}}}));
    assert!(
        e.contains("metrics.container.cpu.tim") && e.contains("container.cpu.time"),
        "{e}"
    );
    let e = err(
        json!({"auth_type": "none", "metrics": {"k8s.pod.cpu_limit_utilization": {"enabled": true}}}),
    );
    assert!(e.contains("not supported") && e.contains("/pods"), "{e}");
    let e = err(
        json!({"auth_type": "none", "metrics": {"container.cpu.utilization": {"enabled": true}}}),
    );
    assert!(e.contains("cpu.usage"), "{e}");
    // turning an unsupported one off is what it already is
    config(json!({"auth_type": "none", "metrics": {"k8s.pod.cpu.node.utilization": {"enabled": false}}}))
        .unwrap();
    let e = err(json!({"auth_type": "none", "extra_metadata_labels": ["container.id"]}));
    assert!(
        e.contains("extra_metadata_labels") && e.contains("not supported"),
        "{e}"
    );
    let e = err(json!({"auth_type": "none", "k8s_api_config": {"auth_type": "serviceAccount"}}));
    assert!(e.contains("k8s_api_config"), "{e}");
    let e =
        err(json!({"auth_type": "none", "resource_attributes": {"k8s.pod.ip": {"enabled": true}}}));
    assert!(e.contains("resource_attributes.k8s.pod.ip"), "{e}");
    let e = err(json!({"auth_type": "none", "endpointt": "x"}));
    assert!(e.contains("endpointt"), "{e}");
    let e = err(json!({"auth_type": "kubeConfig", "endpoint": "https://node-1:10250"}));
    assert!(e.contains("node's name"), "{e}");
    // `https://${env:K8S_NODE_NAME}:10250` with the variable unset
    for endpoint in ["https://:10250", ":10250", "https://:10250/", "http://"] {
        let e = err(json!({"auth_type": "serviceAccount", "endpoint": endpoint}));
        assert!(
            e.contains("endpoint") && e.contains("names no host"),
            "{endpoint}: {e}"
        );
    }
    for endpoint in [
        "https://node-1:10250",
        "node-1:10250",
        "node-1",
        "https://[fd00::1]:10250",
    ] {
        config(json!({"auth_type": "serviceAccount", "endpoint": endpoint}))
            .unwrap_or_else(|e| panic!("{endpoint}: {e}"));
    }
    let e = err(json!({"auth_type": "serviceAccount", "max_version": "1.1"}));
    assert!(e.contains("max_version"), "{e}");
}

// ------------------------------------------------------------------------------ scrapes

/// Records what the receiver hands on; refuses when told to.
#[derive(Default)]
struct Sink {
    got: Mutex<Vec<Payload>>,
    refuse: std::sync::atomic::AtomicBool,
}

impl Consumer for Sink {
    fn consume(&self, payload: Payload) -> BoxFuture<'_, Result<(), ConsumeError>> {
        Box::pin(async move {
            if self.refuse.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(ConsumeError::Refused("memory limiter".into()));
            }
            self.got.lock().unwrap().push(payload);
            Ok(())
        })
    }
}

struct Env {
    _pki: TestPki,
    sa_dir: tempfile::TempDir,
    env: ClientEnv,
}

/// A service account directory with the PKI's CA and `token`.
fn service_account(pki: TestPki, token: &str) -> Env {
    let sa_dir = tempfile::tempdir().unwrap();
    std::fs::copy(&pki.ca_cert, sa_dir.path().join("ca.crt")).unwrap();
    std::fs::write(sa_dir.path().join("token"), format!("{token}\n")).unwrap();
    let env = ClientEnv {
        service_account_dir: sa_dir.path().to_path_buf(),
        kubeconfig: None,
        hostname: Some("localhost".into()),
        node_name: None,
    };
    Env {
        _pki: pki,
        sa_dir,
        env,
    }
}

struct Harness {
    receiver: KubeletStatsReceiver,
    sink: Arc<Sink>,
    telemetry: Telemetry,
}

fn receiver(c: Value, env: &ClientEnv) -> Harness {
    let sink = Arc::new(Sink::default());
    let telemetry = Telemetry::new();
    let receiver = KubeletStatsReceiver::new(
        ComponentId::parse("kubeletstats").unwrap(),
        Arc::new(config(c).unwrap()),
        sink.clone(),
        &telemetry,
        Arc::new(WallClock) as Arc<dyn Clock>,
        env.clone(),
    );
    Harness {
        receiver,
        sink,
        telemetry,
    }
}

impl Harness {
    fn failures(&self, reason: &str) -> f64 {
        self.telemetry
            .value(
                "sluice_scraper_failed_scrapes",
                &[
                    ("receiver", "kubeletstats"),
                    ("scraper", "kubeletstats"),
                    ("reason", reason),
                ],
            )
            .unwrap_or(0.0)
    }
    fn counter(&self, name: &str, labels: &[(&'static str, &str)]) -> f64 {
        self.telemetry.value(name, labels).unwrap_or(0.0)
    }
    fn points(&self) -> usize {
        self.sink
            .got
            .lock()
            .unwrap()
            .iter()
            .map(|p| p.item_count())
            .sum()
    }
}

fn summary_answer() -> Answer {
    Answer::Json(fixture("stats-summary.json").into())
}

#[tokio::test]
async fn service_account_token_and_ca_and_token_rotation() {
    let pki = TestPki::new();
    let kubelet = FakeKubelet::start(Serve::Https(&pki), summary_answer()).await;
    kubelet.expect_token("token-one");
    let env = service_account(pki, "token-one");
    let h = receiver(
        json!({"auth_type": "serviceAccount", "endpoint": kubelet.addr.to_string()}),
        &env.env,
    );
    let scraper = h.receiver.scraper().await.unwrap();
    scraper.scrape().await;
    assert_eq!(h.failures("request") + h.failures("http_status"), 0.0);
    let first = h.points();
    // defaults on the fixture: node 15, pods 15 + 15 + 1, containers 11 * 3 + 4, volumes off
    assert_eq!(first, 15 + 31 + 37);
    assert_eq!(
        h.counter(
            "otelcol_receiver_accepted_metric_points",
            &[("receiver", "kubeletstats"), ("transport", "")]
        ),
        first as f64
    );
    assert_eq!(
        h.counter(
            "otelcol_scraper_scraped_metric_points",
            &[("receiver", "kubeletstats"), ("scraper", "kubeletstats")]
        ),
        first as f64
    );

    // the token rotates: the file changes and the kubelet wants the new one
    std::fs::write(env.sa_dir.path().join("token"), "token-two").unwrap();
    kubelet.expect_token("token-two");
    scraper.scrape().await;
    assert_eq!(h.points(), 2 * first);
    let seen = kubelet.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].path, "/stats/summary");
    assert_eq!(seen[0].authorization.as_deref(), Some("Bearer token-one"));
    assert_eq!(seen[1].authorization.as_deref(), Some("Bearer token-two"));

    // a token the kubelet does not accept: HTTP 401, counted, nothing handed on
    std::fs::write(env.sa_dir.path().join("token"), "stolen").unwrap();
    scraper.scrape().await;
    assert_eq!(h.failures("http_status"), 1.0);
    assert_eq!(h.points(), 2 * first);
    // the token file gone: counted, no request sent
    std::fs::remove_file(env.sa_dir.path().join("token")).unwrap();
    scraper.scrape().await;
    assert_eq!(h.failures("token"), 1.0);
    assert_eq!(kubelet.seen().len(), 3);
}

#[tokio::test]
async fn a_kubelet_certificate_from_another_ca_is_refused_unless_insecure_skip_verify() {
    let pki = TestPki::new();
    let kubelet = FakeKubelet::start(Serve::Https(&pki), summary_answer()).await;
    let env = service_account(TestPki::new(), "t");
    let h = receiver(
        json!({"auth_type": "serviceAccount", "endpoint": kubelet.addr.to_string()}),
        &env.env,
    );
    let scraper = h.receiver.scraper().await.unwrap();
    scraper.scrape().await;
    assert_eq!(h.failures("request"), 1.0);
    assert_eq!(h.points(), 0);
    assert!(kubelet.seen().is_empty());

    let h = receiver(
        json!({"auth_type": "serviceAccount", "endpoint": kubelet.addr.to_string(), "insecure_skip_verify": true}),
        &env.env,
    );
    h.receiver.scraper().await.unwrap().scrape().await;
    assert_eq!(h.failures("request"), 0.0);
    assert!(h.points() > 0);
}

#[tokio::test]
async fn tls_auth_presents_the_client_certificate() {
    let pki = TestPki::new();
    let kubelet = FakeKubelet::start(Serve::MutualTls(&pki), summary_answer()).await;
    let env = service_account(TestPki::new(), "unused");
    let p = |p: &Path| p.display().to_string();
    let h = receiver(
        json!({
            "endpoint": kubelet.addr.to_string(),
            "ca_file": p(&pki.ca_cert), "cert_file": p(&pki.client_cert), "key_file": p(&pki.client_key),
        }),
        &env.env,
    );
    h.receiver.scraper().await.unwrap().scrape().await;
    assert!(h.points() > 0);
    assert_eq!(kubelet.seen()[0].authorization, None);

    // a certificate the kubelet's CA did not sign: the handshake fails, counted
    let other = TestPki::new();
    let h = receiver(
        json!({
            "endpoint": kubelet.addr.to_string(),
            "ca_file": p(&pki.ca_cert), "cert_file": p(&other.client_cert), "key_file": p(&other.client_key),
        }),
        &env.env,
    );
    h.receiver.scraper().await.unwrap().scrape().await;
    assert_eq!(h.points(), 0);
    assert_eq!(h.failures("request"), 1.0);
}

#[tokio::test]
async fn auth_none_is_plain_http_to_the_read_only_port() {
    let kubelet = FakeKubelet::start(Serve::Http, summary_answer()).await;
    let env = service_account(TestPki::new(), "unused");
    let h = receiver(
        json!({"auth_type": "none", "endpoint": kubelet.addr.to_string()}),
        &env.env,
    );
    let scraper = h.receiver.scraper().await.unwrap();
    assert_eq!(
        scraper.client.url(),
        format!("http://{}/stats/summary", kubelet.addr)
    );
    scraper.scrape().await;
    assert!(h.points() > 0);
}

#[tokio::test]
async fn kube_config_goes_through_the_api_server_node_proxy() {
    let pki = TestPki::new();
    let kubelet = FakeKubelet::start(Serve::Https(&pki), summary_answer()).await;
    kubelet.expect_token("api-token");
    kubelet.set_node("ip-10-0-1-17.ec2.internal");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let ca = std::fs::read_to_string(&pki.ca_cert).unwrap();
    use base64::Engine as _;
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: test\nclusters:\n- name: test\n  cluster:\n    server: https://localhost:{}\n    certificate-authority-data: {}\ncontexts:\n- name: test\n  context: {{cluster: test, user: test}}\nusers:\n- name: test\n  user: {{token: api-token}}\n",
            kubelet.addr.port(),
            base64::engine::general_purpose::STANDARD.encode(ca.as_bytes()),
        ),
    )
    .unwrap();
    let mut env = service_account(TestPki::new(), "unused");
    env.env.kubeconfig = Some(kubeconfig);
    let h = receiver(
        json!({"auth_type": "kubeConfig", "endpoint": "ip-10-0-1-17.ec2.internal"}),
        &env.env,
    );
    h.receiver.scraper().await.unwrap().scrape().await;
    assert_eq!(
        h.failures("request") + h.failures("http_status"),
        0.0,
        "{:?}",
        kubelet.seen()
    );
    assert!(h.points() > 0);
    let seen = kubelet.seen();
    assert_eq!(
        seen[0].path,
        "/api/v1/nodes/ip-10-0-1-17.ec2.internal/proxy/stats/summary"
    );
    assert_eq!(seen[0].authorization.as_deref(), Some("Bearer api-token"));

    // an unknown node: the API server's 404 is a scrape failure
    let h = receiver(
        json!({"auth_type": "kubeConfig", "endpoint": "node-9"}),
        &env.env,
    );
    h.receiver.scraper().await.unwrap().scrape().await;
    assert_eq!(h.failures("http_status"), 1.0);
}

#[tokio::test]
async fn failures_are_counted_by_reason_and_scraping_goes_on() {
    let kubelet = FakeKubelet::start(Serve::Http, Answer::Status(500, "boom".into())).await;
    let env = service_account(TestPki::new(), "unused");
    let h = receiver(
        json!({"auth_type": "none", "endpoint": kubelet.addr.to_string(), "timeout": "300ms"}),
        &env.env,
    );
    let mut scraper = h.receiver.scraper().await.unwrap();
    scraper.scrape().await;
    assert_eq!(h.failures("http_status"), 1.0);

    kubelet.answer(Answer::Json(bytes::Bytes::from_static(b"{\"node\": [")));
    scraper.scrape().await;
    assert_eq!(h.failures("bad_json"), 1.0);

    kubelet.answer(Answer::Hang);
    let started = std::time::Instant::now();
    scraper.scrape().await;
    assert_eq!(h.failures("timeout"), 1.0);
    assert!(started.elapsed() < Duration::from_secs(5));

    kubelet.answer(summary_answer());
    scraper.client.max_body_bytes = 1000;
    scraper.scrape().await;
    assert_eq!(h.failures("too_large"), 1.0);

    scraper.client.max_body_bytes = client::MAX_SUMMARY_BYTES;
    scraper.scrape().await;
    assert!(h.points() > 0);
    // Collector semantics: a failed scrape has no points to count as errored
    assert_eq!(
        h.counter(
            "otelcol_scraper_errored_metric_points",
            &[("receiver", "kubeletstats"), ("scraper", "kubeletstats")]
        ),
        0.0
    );

    // nothing listening
    let addr = kubelet.addr;
    kubelet.stop().await;
    let h = receiver(
        json!({"auth_type": "none", "endpoint": addr.to_string()}),
        &env.env,
    );
    h.receiver.scraper().await.unwrap().scrape().await;
    assert_eq!(h.failures("request"), 1.0);
}

#[tokio::test]
async fn a_refusing_pipeline_is_counted_as_refused_points() {
    let kubelet = FakeKubelet::start(Serve::Http, summary_answer()).await;
    let env = service_account(TestPki::new(), "unused");
    let h = receiver(
        json!({"auth_type": "none", "endpoint": kubelet.addr.to_string()}),
        &env.env,
    );
    h.sink
        .refuse
        .store(true, std::sync::atomic::Ordering::Relaxed);
    h.receiver.scraper().await.unwrap().scrape().await;
    let labels = [("receiver", "kubeletstats"), ("transport", "")];
    assert_eq!(
        h.counter("otelcol_receiver_refused_metric_points", &labels),
        83.0
    );
    assert_eq!(
        h.counter("otelcol_receiver_accepted_metric_points", &labels),
        0.0
    );
}

#[tokio::test]
async fn the_receiver_scrapes_every_interval_until_shutdown() {
    let kubelet = FakeKubelet::start(Serve::Http, summary_answer()).await;
    let env = service_account(TestPki::new(), "unused");
    let h = receiver(
        json!({"auth_type": "none", "endpoint": kubelet.addr.to_string(),
               "collection_interval": "50ms", "initial_delay": "0s"}),
        &env.env,
    );
    h.receiver.start().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while h.sink.got.lock().unwrap().len() < 3 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.receiver.shutdown().await;
    let scrapes = h.sink.got.lock().unwrap().len();
    assert!(scrapes >= 3, "{scrapes}");
    let requests = kubelet.seen().len();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(kubelet.seen().len(), requests, "no scrape after shutdown");
}

#[tokio::test]
async fn start_fails_with_the_missing_file_named() {
    let env = service_account(TestPki::new(), "t");
    std::fs::remove_file(env.sa_dir.path().join("ca.crt")).unwrap();
    let h = receiver(
        json!({"auth_type": "serviceAccount", "endpoint": "127.0.0.1:1"}),
        &env.env,
    );
    let e = h.receiver.start().await.unwrap_err().to_string();
    assert!(e.contains("ca.crt"), "{e}");

    let env = service_account(TestPki::new(), "t");
    std::fs::remove_file(env.sa_dir.path().join("token")).unwrap();
    let h = receiver(
        json!({"auth_type": "serviceAccount", "endpoint": "127.0.0.1:1"}),
        &env.env,
    );
    let e = h.receiver.start().await.unwrap_err().to_string();
    assert!(e.contains("token"), "{e}");

    let h = receiver(
        json!({"endpoint": "127.0.0.1:1", "cert_file": "/nonexistent/c.crt", "key_file": "/nonexistent/c.key"}),
        &env.env,
    );
    let e = h.receiver.start().await.unwrap_err().to_string();
    assert!(e.contains("/nonexistent/c.crt"), "{e}");
}

#[tokio::test]
async fn a_large_node_converts_completely() {
    let body = fake_kubelet::synthetic_summary(100, 3);
    let c = config(
        json!({"auth_type": "none", "metric_groups": ["node", "pod", "container", "volume"]}),
    )
    .unwrap();
    let p = convert(&c, body.as_bytes());
    p.validate().unwrap();
    // node 15, 100 pods x 15, 300 containers x 11, 100 volumes x 5
    assert_eq!(p.item_count(), 15 + 100 * 15 + 300 * 11 + 100 * 5);
    let _ = KubeletClient::new; // the client type is part of the public surface
}

#[tokio::test]
async fn shutdown_does_not_wait_for_a_hung_kubelet() {
    let kubelet = FakeKubelet::start(Serve::Http, Answer::Hang).await;
    let env = service_account(TestPki::new(), "unused");
    let h = receiver(
        json!({"auth_type": "none", "endpoint": kubelet.addr.to_string(),
               "collection_interval": "60s", "initial_delay": "0s"}),
        &env.env,
    );
    h.receiver.start().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while kubelet.seen().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(kubelet.seen().len(), 1, "the scrape is in flight");
    let started = std::time::Instant::now();
    h.receiver.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(h.points(), 0);
}

// ------------------------------------------------------------------------------ properties

mod properties {
    use proptest::prelude::*;
    use serde_json::{Map, Value, json};

    use super::{NOW, RECEIVER_START, config, fixture};
    use crate::kubeletstats::Scraper;

    /// A stats object whose fields are each present or absent.
    fn fields(names: &'static [&'static str]) -> impl Strategy<Value = Map<String, Value>> {
        prop::collection::vec(prop::option::of(0u64..u64::MAX), names.len()).prop_map(
            move |values| {
                names
                    .iter()
                    .zip(values)
                    .filter_map(|(n, v)| v.map(|v| (n.to_string(), json!(v))))
                    .collect()
            },
        )
    }

    const CPU: &[&str] = &["usageNanoCores", "usageCoreNanoSeconds"];
    const MEMORY: &[&str] = &[
        "availableBytes",
        "usageBytes",
        "workingSetBytes",
        "rssBytes",
        "pageFaults",
        "majorPageFaults",
    ];
    const FS: &[&str] = &["availableBytes", "capacityBytes", "usedBytes"];
    const NET: &[&str] = &["rxBytes", "rxErrors", "txBytes", "txErrors"];
    const VOLUME: &[&str] = &[
        "availableBytes",
        "capacityBytes",
        "inodes",
        "inodesFree",
        "inodesUsed",
    ];

    /// An entity (node, pod or container) with optional sections of optional fields, and the
    /// number of fields it carries that the default metrics read.
    fn entity(with_net: bool) -> impl Strategy<Value = (Map<String, Value>, usize)> {
        (
            prop::option::of(fields(CPU)),
            prop::option::of(fields(MEMORY)),
            prop::option::of(fields(FS)),
            prop::option::of(fields(NET)),
        )
            .prop_map(move |(cpu, memory, fs, net)| {
                let mut e = Map::new();
                let mut n = 0;
                for (key, section) in [("cpu", cpu), ("memory", memory), ("fs", fs)] {
                    if let Some(s) = section {
                        n += s.len();
                        e.insert(key.into(), Value::Object(s));
                    }
                }
                if let (true, Some(mut s)) = (with_net, net) {
                    n += s.len();
                    s.insert("name".into(), json!("eth0"));
                    e.insert("network".into(), Value::Object(s));
                }
                (e, n)
            })
    }

    fn summary() -> impl Strategy<Value = (Value, usize)> {
        let container = entity(false);
        let pod = (
            entity(true),
            prop::collection::vec(container, 0..3),
            prop::collection::vec(fields(VOLUME), 0..2),
        );
        (entity(true), prop::collection::vec(pod, 0..4)).prop_map(|((mut node, n_node), pods)| {
            let mut total = n_node;
            node.insert("nodeName".into(), json!("node"));
            let pods: Vec<Value> = pods
                .into_iter()
                .enumerate()
                .map(|(i, ((mut pod, n_pod), containers, volumes))| {
                    total += n_pod;
                    // the pod's filesystem is `ephemeral-storage`, the container's `rootfs`
                    if let Some(fs) = pod.remove("fs") {
                        pod.insert("ephemeral-storage".into(), fs);
                    }
                    pod.insert(
                        "podRef".into(),
                        json!({"name": format!("p{i}"), "namespace": "ns", "uid": format!("u{i}")}),
                    );
                    let containers: Vec<Value> = containers
                        .into_iter()
                        .enumerate()
                        .map(|(j, (mut c, n))| {
                            total += n;
                            if let Some(fs) = c.remove("fs") {
                                c.insert("rootfs".into(), fs);
                            }
                            c.insert("name".into(), json!(format!("c{j}")));
                            Value::Object(c)
                        })
                        .collect();
                    let volumes: Vec<Value> = volumes
                        .into_iter()
                        .enumerate()
                        .map(|(j, mut v)| {
                            total += v.len();
                            v.insert("name".into(), json!(format!("v{j}")));
                            Value::Object(v)
                        })
                        .collect();
                    pod.insert("containers".into(), Value::Array(containers));
                    pod.insert("volume".into(), Value::Array(volumes));
                    Value::Object(pod)
                })
                .collect();
            (json!({"node": node, "pods": pods}), total)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Every field present gives exactly one point and every absent one none.
        #[test]
        fn one_point_per_present_field(case in summary()) {
            let (body, fields) = case;
            let c = config(json!({"auth_type": "none", "metric_groups": ["node", "pod", "container", "volume"]})).unwrap();
            let body = serde_json::to_vec(&body).unwrap();
            let p = Scraper::payload(&c, &c.enabled_metrics(), &body, "p", NOW, RECEIVER_START).unwrap();
            p.validate().unwrap();
            prop_assert_eq!(p.item_count(), fields);
        }

        /// Truncated or corrupted summaries are errors or (when still valid JSON) payloads,
        /// never panics.
        #[test]
        fn damaged_bodies_never_panic(cut in 0usize..20_000, flip in 0usize..20_000, byte in any::<u8>()) {
            let c = config(json!({"auth_type": "none", "metric_groups": ["node", "pod", "container", "volume"]})).unwrap();
            let mut body = fixture("stats-summary.json");
            let flip = flip % body.len();
            body[flip] = byte;
            body.truncate(cut.min(body.len()));
            if let Ok(p) = Scraper::payload(&c, &c.enabled_metrics(), &body, "p", NOW, 0) {
                p.validate().unwrap();
            }
        }
    }
}

/// `none` with an explicit `https://` endpoint verifies the kubelet like any TLS client (it
/// never silently skips verification).
#[tokio::test]
async fn auth_none_with_an_https_endpoint_verifies_the_certificate() {
    let pki = TestPki::new();
    let kubelet = FakeKubelet::start(Serve::Https(&pki), summary_answer()).await;
    let env = service_account(TestPki::new(), "unused");
    let h = receiver(
        json!({"auth_type": "none", "endpoint": kubelet.url()}),
        &env.env,
    );
    h.receiver.scraper().await.unwrap().scrape().await;
    assert_eq!(h.failures("request"), 1.0);
    let h = receiver(
        json!({"auth_type": "none", "endpoint": kubelet.url(), "ca_file": pki.ca_cert.display().to_string()}),
        &env.env,
    );
    h.receiver.scraper().await.unwrap().scrape().await;
    assert!(h.points() > 0);
}
