//! The processor against the fake Kubernetes API server (real kube-rs watches over TLS with a
//! bearer token), with data flowing through it while pods come and go.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::{Array, AsArray};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{
    Container, ContainerStatus, Namespace, Node as K8sNode, Pod, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use sluice_engine::component::{
    BoxFuture, ComponentId, ConsumeError, Consumer, ConsumerRef, Lifecycle, parse_config,
};
use sluice_engine::otlp::testing::reference_traces;
use sluice_engine::payload::Payload;
use sluice_engine::schema::{Signal, Table};
use sluice_engine::telemetry::{ProcessorMetrics, Telemetry};

use super::config::K8sAttributesConfig;
use super::watch::{Environment, WatchTiming};
use super::{Instance, K8sAttributesProcessor};
use crate::testing::FakeApiServer;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Capture(Mutex<Vec<Payload>>);

impl Consumer for Capture {
    fn consume(&self, p: Payload) -> BoxFuture<'_, Result<(), ConsumeError>> {
        Box::pin(async move {
            self.0.lock().unwrap().push(p);
            Ok(())
        })
    }
}

impl Capture {
    fn take(&self) -> Vec<Payload> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

struct Rig {
    server: FakeApiServer,
    processor: Arc<K8sAttributesProcessor>,
    capture: Arc<Capture>,
    telemetry: Telemetry,
}

fn fast_timing() -> WatchTiming {
    WatchTiming {
        min_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(400),
        purge_interval: Duration::from_millis(50),
        delete_grace: Duration::from_millis(300),
        replicaset_wait: Duration::from_millis(500),
    }
}

/// An environment that reaches `server`: `KUBECONFIG` its kubeconfig, the service account
/// directory (and `KUBERNETES_SERVICE_*`) its credentials, `KUBE_NODE_NAME=n1`.
fn environment(server: &FakeApiServer) -> Environment {
    let sa = server.dir().join("serviceaccount");
    server.write_service_account(&sa, "telemetry").unwrap();
    let vars: BTreeMap<String, String> = [
        ("KUBECONFIG", server.kubeconfig().display().to_string()),
        ("KUBERNETES_SERVICE_HOST", server.addr().ip().to_string()),
        ("KUBERNETES_SERVICE_PORT", server.addr().port().to_string()),
        ("KUBE_NODE_NAME", "n1".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Environment {
        vars: Arc::new(move |k| vars.get(k).cloned()),
        service_account_dir: sa,
    }
}

fn build(server: FakeApiServer, config: serde_json::Value) -> Rig {
    let telemetry = Telemetry::new();
    let compiled = parse_config::<K8sAttributesConfig>(&config)
        .unwrap()
        .compile()
        .unwrap();
    let id = ComponentId::parse("k8sattributes").unwrap();
    let instance = Arc::new(Instance::new(
        compiled,
        &telemetry,
        &id,
        fast_timing(),
        environment(&server),
    ));
    let capture = Arc::new(Capture::default());
    let processor = Arc::new(K8sAttributesProcessor::new(
        instance,
        Signal::Traces,
        capture.clone() as ConsumerRef,
        ProcessorMetrics::new(&telemetry, &id),
    ));
    Rig {
        server,
        processor,
        capture,
        telemetry,
    }
}

async fn rig(config: serde_json::Value) -> Rig {
    let server = FakeApiServer::start_default().await;
    let r = build(server, config);
    r.processor.start().await.unwrap();
    r
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

/// A request with one resource per entry (its attributes), two spans each.
fn request(resources: &[&[(&str, &str)]]) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: resources
            .iter()
            .map(|attrs| ResourceSpans {
                resource: Some(Resource {
                    attributes: attrs.iter().map(|(k, v)| kv(k, v)).collect(),
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: (0..2)
                        .map(|i| Span {
                            trace_id: vec![1; 16],
                            span_id: vec![i + 1; 8],
                            name: "op".into(),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

fn payload(resources: &[&[(&str, &str)]], origin: Option<&str>) -> Payload {
    let mut p = reference_traces(&request(resources));
    p.origin = origin.map(|ip| SocketAddr::new(ip.parse().unwrap(), 40000));
    p
}

/// The string attributes of every resource.
fn resources(p: &Payload) -> Vec<BTreeMap<String, String>> {
    let n = p.table(Table::Resources).num_rows();
    let attrs = p.table(Table::ResourceAttrs);
    let ids = sluice_engine::kernels::attributes::parent_ids(attrs);
    let keys = sluice_engine::kernels::attributes::keys(attrs);
    let dict = keys.values().as_string::<i32>();
    let strs = attrs.column(3).as_string::<i32>();
    let mut out = vec![BTreeMap::new(); n];
    for r in 0..attrs.num_rows() {
        if strs.is_valid(r) {
            out[ids[r] as usize].insert(
                dict.value(keys.keys().value(r) as usize).to_string(),
                strs.value(r).to_string(),
            );
        }
    }
    out
}

impl Rig {
    /// Sends `p` through the processor; returns its resources' attributes.
    async fn enrich(&self, p: Payload) -> Vec<BTreeMap<String, String>> {
        self.processor.consume(p).await.unwrap();
        let got = self.capture.take();
        assert_eq!(got.len(), 1);
        got[0].validate().unwrap();
        assert_eq!(
            got[0].item_count(),
            2 * got[0].table(Table::Resources).num_rows()
        );
        resources(&got[0])
    }

    /// Sends `p` until `check` holds for its first resource (the watch delivers
    /// asynchronously); returns that resource.
    async fn enrich_until(
        &self,
        p: &Payload,
        check: impl Fn(&BTreeMap<String, String>) -> bool,
    ) -> BTreeMap<String, String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let got = self.enrich(p.clone()).await.remove(0);
            if check(&got) {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not enriched as expected in time: {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn metric(&self, name: &str) -> f64 {
        self.telemetry.value(name, &[]).unwrap_or(0.0)
    }

    fn restarts(&self, resource: &str) -> f64 {
        self.telemetry
            .value(
                "sluice_processor_k8sattributes_watch_restarts",
                &[("processor", "k8sattributes"), ("resource", resource)],
            )
            .unwrap_or(0.0)
    }

    fn relists(&self, resource: &str) -> f64 {
        self.telemetry
            .value(
                "sluice_processor_k8sattributes_relists",
                &[("processor", "k8sattributes"), ("resource", resource)],
            )
            .unwrap_or(0.0)
    }
}

struct PodSpecBuilder {
    pod: Pod,
}

fn pod(name: &str, uid: &str, ip: &str) -> PodSpecBuilder {
    let mut p = Pod::default();
    p.metadata.name = Some(name.into());
    p.metadata.namespace = Some("shop".into());
    p.metadata.uid = Some(uid.into());
    p.metadata.creation_timestamp = Some(Time(Timestamp::from_second(1_700_000_000).unwrap()));
    p.spec = Some(PodSpec {
        node_name: Some("n1".into()),
        containers: vec![Container {
            name: "app".into(),
            image: Some("registry.local/shop/web:1.4.2".into()),
            ..Default::default()
        }],
        ..Default::default()
    });
    p.status = Some(PodStatus {
        pod_ip: (!ip.is_empty()).then(|| ip.to_string()),
        start_time: Some(Time(Timestamp::from_second(1_700_000_010).unwrap())),
        container_statuses: Some(vec![ContainerStatus {
            name: "app".into(),
            container_id: Some(format!("containerd://{uid}-c1")),
            ..Default::default()
        }]),
        ..Default::default()
    });
    PodSpecBuilder { pod: p }
}

impl PodSpecBuilder {
    fn node(mut self, node: &str) -> Self {
        self.pod.spec.as_mut().unwrap().node_name = Some(node.into());
        self
    }
    fn started(mut self, secs: i64) -> Self {
        self.pod.status.as_mut().unwrap().start_time =
            Some(Time(Timestamp::from_second(secs).unwrap()));
        self
    }
    fn host_network(mut self) -> Self {
        self.pod.spec.as_mut().unwrap().host_network = Some(true);
        self
    }
    fn owned_by(mut self, kind: &str, name: &str, uid: &str) -> Self {
        self.pod.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            name: name.into(),
            uid: uid.into(),
            controller: Some(true),
            ..Default::default()
        }]);
        self
    }
    fn label(mut self, k: &str, v: &str) -> Self {
        self.pod
            .metadata
            .labels
            .get_or_insert_default()
            .insert(k.into(), v.into());
        self
    }
    fn annotation(mut self, k: &str, v: &str) -> Self {
        self.pod
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(k.into(), v.into());
        self
    }
}

fn has(k: &'static str, v: &'static str) -> impl Fn(&BTreeMap<String, String>) -> bool {
    move |m| m.get(k).map(String::as_str) == Some(v)
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn pods_added_updated_and_deleted_while_data_flows() {
    let r = rig(serde_json::json!({"auth_type": "kubeConfig"})).await;
    let data = payload(&[&[("service.name", "web")]], Some("10.1.0.7"));
    // Nothing known yet: the data passes unenriched, a miss is counted.
    let before = r.enrich(data.clone()).await.remove(0);
    assert_eq!(before.len(), 1, "{before:?}");
    assert!(r.metric("otelcol_otelsvc_k8s_ip_lookup_miss") >= 1.0);

    r.server.apply(&pod("web-1", "uid-1", "10.1.0.7").pod);
    let got = r.enrich_until(&data, has("k8s.pod.name", "web-1")).await;
    let want: BTreeMap<String, String> = [
        ("service.name", "web"),
        ("k8s.pod.name", "web-1"),
        ("k8s.pod.uid", "uid-1"),
        ("k8s.namespace.name", "shop"),
        ("k8s.node.name", "n1"),
        ("k8s.pod.start_time", "2023-11-14T22:13:20Z"),
        ("container.image.name", "registry.local/shop/web"),
        ("container.image.tag", "1.4.2"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(got, want, "the Collector's default metadata, nothing else");

    // Updated: the new labels are extracted from then on.
    r.server
        .apply(&pod("web-1", "uid-1", "10.1.0.7").node("n2").pod);
    r.enrich_until(&data, has("k8s.node.name", "n2")).await;

    // Deleted: still served during the grace period, gone after it.
    r.server.delete::<Pod>(Some("shop"), "web-1");
    let deleted_at = tokio::time::Instant::now();
    let misses = r.metric("otelcol_otelsvc_k8s_ip_lookup_miss");
    let mut served_after_delete = false;
    loop {
        let got = r.enrich(data.clone()).await.remove(0);
        if got.contains_key("k8s.pod.name") {
            served_after_delete = true;
        } else {
            break;
        }
        assert!(
            deleted_at.elapsed() < Duration::from_secs(15),
            "never purged"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served_after_delete, "kept for the grace period");
    assert!(r.metric("otelcol_otelsvc_k8s_ip_lookup_miss") > misses);
    assert_eq!(r.metric("otelcol_otelsvc_k8s_pod_added"), 1.0);
    assert!(r.metric("otelcol_otelsvc_k8s_pod_updated") >= 1.0);
    assert_eq!(r.metric("otelcol_otelsvc_k8s_pod_deleted"), 1.0);
    // The pod watch asked for this node's pods only.
    let reqs = r.server.requests_for("/api/v1/pods");
    assert!(!reqs.is_empty());
    assert!(
        reqs.iter().all(|q| !q.query.contains_key("fieldSelector")),
        "no node filter configured"
    );
}

#[tokio::test]
async fn association_by_connection_ip_from_a_real_otlp_client() {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    let r = rig(serde_json::json!({
        "auth_type": "kubeConfig",
        "extract": {"metadata": ["k8s.pod.name", "k8s.pod.ip"]},
        "pod_association": [{"sources": [{"from": "connection"}]}]
    }))
    .await;
    r.server.apply(&pod("client-pod", "uid-c", "127.0.0.1").pod);
    tokio::time::sleep(Duration::from_millis(10)).await;
    // The real receiver on loopback, feeding the processor: the origin is the client's address.
    let factory = sluice_ingest::factories()
        .into_iter()
        .find(|f| f.type_name() == "otlp")
        .unwrap();
    // The receiver binds what its config says: a free port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let parsed = factory
        .parse_config(
            &serde_json::json!({"protocols": {"grpc": {"endpoint": format!("127.0.0.1:{port}")}}}),
        )
        .unwrap();
    let consumers: sluice_engine::component::SignalConsumers =
        [(Signal::Traces, r.processor.clone() as ConsumerRef)]
            .into_iter()
            .collect();
    let receiver = factory
        .build_receiver(
            sluice_engine::component::BuildContext {
                id: ComponentId::parse("otlp").unwrap(),
                config: parsed,
                telemetry: r.telemetry.clone(),
                clock: Arc::new(sluice_engine::clock::WallClock),
                extensions: Default::default(),
            },
            consumers,
        )
        .unwrap();
    receiver.start().await.unwrap();
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        client
            .export(request(&[&[("service.name", "checkout")]]))
            .await
            .unwrap();
        let got = r.capture.take();
        let res = resources(&got[0]).remove(0);
        if res.contains_key("k8s.pod.name") {
            assert_eq!(
                res.get("k8s.pod.name").map(String::as_str),
                Some("client-pod")
            );
            // Associated by connection: the connection's IP is added as k8s.pod.ip.
            assert_eq!(res.get("k8s.pod.ip").map(String::as_str), Some("127.0.0.1"));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{res:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    receiver.shutdown().await;
}

#[tokio::test]
async fn association_by_pod_ip_attribute_and_by_uid() {
    let r = rig(serde_json::json!({
        "auth_type": "kubeConfig",
        "extract": {"metadata": ["k8s.pod.name"]},
        "pod_association": [
            {"sources": [{"from": "resource_attribute", "name": "k8s.pod.uid"}]},
            {"sources": [{"from": "resource_attribute", "name": "k8s.pod.ip"}]}
        ]
    }))
    .await;
    r.server.apply(&pod("a", "uid-a", "10.2.0.1").pod);
    r.server.apply(&pod("b", "uid-b", "10.2.0.2").pod);
    let data = payload(
        &[
            &[("k8s.pod.ip", "10.2.0.1")],
            &[("k8s.pod.uid", "uid-b"), ("k8s.pod.ip", "10.2.0.1")],
            &[("k8s.pod.ip", "10.9.9.9")],
            &[],
        ],
        // No `connection` association: the origin is not used.
        Some("10.2.0.2"),
    );
    r.enrich_until(&data, has("k8s.pod.name", "a")).await;
    let got = r.enrich(data).await;
    assert_eq!(got[0].get("k8s.pod.name").map(String::as_str), Some("a"));
    // The first association that resolves wins: uid before IP.
    assert_eq!(got[1].get("k8s.pod.name").map(String::as_str), Some("b"));
    assert!(!got[2].contains_key("k8s.pod.name"));
    assert!(!got[3].contains_key("k8s.pod.name"));
    assert!(
        got.iter()
            .all(|m| !m.contains_key("k8s.pod.ip") || m["k8s.pod.ip"] != "10.2.0.2"),
        "no IP from the connection"
    );
}

#[tokio::test]
async fn without_associations_pod_ip_then_ip_then_connection_then_host_name() {
    let r = rig(
        serde_json::json!({"auth_type": "kubeConfig", "extract": {"metadata": ["k8s.pod.name"]}}),
    )
    .await;
    r.server.apply(&pod("by-attr", "u1", "10.4.0.1").pod);
    r.server.apply(&pod("by-ip", "u2", "10.4.0.2").pod);
    r.server.apply(&pod("by-conn", "u3", "10.4.0.3").pod);
    r.server.apply(&pod("by-host", "u4", "10.4.0.4").pod);
    let data = payload(
        &[
            &[("k8s.pod.ip", "10.4.0.1"), ("ip", "10.4.0.2")],
            &[("ip", "10.4.0.2")],
            &[("host.name", "10.4.0.4")],
        ],
        Some("10.4.0.3"),
    );
    r.enrich_until(&data, has("k8s.pod.name", "by-attr")).await;
    let got = r.enrich(data).await;
    let names: Vec<Option<&str>> = got
        .iter()
        .map(|m| m.get("k8s.pod.name").map(String::as_str))
        .collect();
    assert_eq!(names, [Some("by-attr"), Some("by-ip"), Some("by-conn")]);
    // host.name (an IP) is used only when there is no connection.
    let no_origin = payload(
        &[&[("host.name", "10.4.0.4")], &[("host.name", "web-4")]],
        None,
    );
    let got = r.enrich(no_origin).await;
    assert_eq!(
        got[0].get("k8s.pod.name").map(String::as_str),
        Some("by-host")
    );
    assert!(
        !got[1].contains_key("k8s.pod.name"),
        "a host name that is not an IP"
    );
}

#[tokio::test]
async fn host_network_pods_are_found_by_uid_not_by_ip() {
    let r = rig(serde_json::json!({
        "auth_type": "kubeConfig",
        "extract": {"metadata": ["k8s.pod.name"]},
        "pod_association": [
            {"sources": [{"from": "connection"}]},
            {"sources": [{"from": "resource_attribute", "name": "k8s.pod.uid"}]}
        ]
    }))
    .await;
    r.server
        .apply(&pod("node-exporter", "uid-h", "10.3.0.1").host_network().pod);
    r.server.apply(&pod("marker", "uid-m", "10.3.0.9").pod);
    r.enrich_until(
        &payload(&[&[]], Some("10.3.0.9")),
        has("k8s.pod.name", "marker"),
    )
    .await;
    let misses = r.metric("otelcol_otelsvc_k8s_ip_lookup_miss");
    let got = r.enrich(payload(&[&[]], Some("10.3.0.1"))).await;
    assert!(
        !got[0].contains_key("k8s.pod.name"),
        "the node's IP is not the pod's"
    );
    assert_eq!(r.metric("otelcol_otelsvc_k8s_ip_lookup_miss"), misses + 1.0);
    let got = r
        .enrich(payload(&[&[("k8s.pod.uid", "uid-h")]], None))
        .await;
    assert_eq!(
        got[0].get("k8s.pod.name").map(String::as_str),
        Some("node-exporter")
    );
}

#[tokio::test]
async fn a_reused_ip_belongs_to_the_pod_that_started_later() {
    let r = rig(
        serde_json::json!({"auth_type": "kubeConfig", "extract": {"metadata": ["k8s.pod.name"]}}),
    )
    .await;
    let data = payload(&[&[]], Some("10.5.0.5"));
    r.server
        .apply(&pod("old", "uid-old", "10.5.0.5").started(1_700_000_100).pod);
    r.enrich_until(&data, has("k8s.pod.name", "old")).await;
    r.server
        .apply(&pod("new", "uid-new", "10.5.0.5").started(1_700_000_200).pod);
    r.enrich_until(&data, has("k8s.pod.name", "new")).await;
    // A late update of the old pod does not take the IP back, nor does its deletion remove it.
    r.server.apply(
        &pod("old", "uid-old", "10.5.0.5")
            .started(1_700_000_100)
            .label("late", "update")
            .pod,
    );
    r.server.delete::<Pod>(Some("shop"), "old");
    tokio::time::sleep(Duration::from_millis(600)).await; // past the (test) grace period
    let got = r.enrich(data).await;
    assert_eq!(got[0].get("k8s.pod.name").map(String::as_str), Some("new"));
}

#[tokio::test]
async fn deployment_name_comes_from_the_replicaset_owner() {
    let server = FakeApiServer::start_default().await;
    let mut rs = ReplicaSet::default();
    rs.metadata.name = Some("web-5f7c9".into());
    rs.metadata.namespace = Some("shop".into());
    rs.metadata.uid = Some("rs-uid".into());
    rs.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        name: "storefront".into(),
        uid: "deploy-uid".into(),
        controller: Some(true),
        ..Default::default()
    }]);
    server.apply(&rs);
    server.apply(
        &pod("web-5f7c9-abcde", "u1", "10.6.0.1")
            .owned_by("ReplicaSet", "web-5f7c9", "rs-uid")
            .pod,
    );
    // Not in the cache: the name without the pod-template hash (the Collector's fallback).
    server.apply(
        &pod("api-6d8b7c9f4-xyz", "u2", "10.6.0.2")
            .owned_by("ReplicaSet", "api-6d8b7c9f4", "unknown-rs")
            .label("pod-template-hash", "6d8b7c9f4")
            .pod,
    );
    let r = build(
        server,
        serde_json::json!({"auth_type": "kubeConfig", "extract": {"metadata": ["k8s.deployment.name", "k8s.deployment.uid", "k8s.replicaset.name"]}}),
    );
    r.processor.start().await.unwrap();
    let data = payload(
        &[&[("k8s.pod.ip", "10.6.0.1")], &[("k8s.pod.ip", "10.6.0.2")]],
        None,
    );
    r.enrich_until(&data, has("k8s.replicaset.name", "web-5f7c9"))
        .await;
    let got = r.enrich(data).await;
    assert_eq!(
        got[0].get("k8s.deployment.name").map(String::as_str),
        Some("storefront")
    );
    assert_eq!(
        got[0].get("k8s.deployment.uid").map(String::as_str),
        Some("deploy-uid")
    );
    assert_eq!(
        got[1].get("k8s.deployment.name").map(String::as_str),
        Some("api")
    );
    assert!(
        !r.server
            .requests_for("/apis/apps/v1/replicasets")
            .is_empty()
    );
    assert_eq!(r.metric("otelcol_otelsvc_k8s_replicaset_added"), 1.0);
}

#[tokio::test]
async fn a_dropped_watch_resumes_and_an_expired_history_relists() {
    let r = rig(
        serde_json::json!({"auth_type": "kubeConfig", "extract": {"metadata": ["k8s.pod.name"]}}),
    )
    .await;
    r.server.apply(&pod("a", "ua", "10.7.0.1").pod);
    let a = payload(&[&[]], Some("10.7.0.1"));
    r.enrich_until(&a, has("k8s.pod.name", "a")).await;

    r.server.drop_watches();
    r.server.apply(&pod("b", "ub", "10.7.0.2").pod);
    r.enrich_until(&payload(&[&[]], Some("10.7.0.2")), has("k8s.pod.name", "b"))
        .await;
    assert_eq!(
        r.relists("pods"),
        0.0,
        "resumed from its version, no re-list"
    );

    // The history is lost while `a` is deleted: the watch gets 410, re-lists, and finds `a`
    // gone from the list (forgotten after the grace period); `c` arrives with the list.
    r.server.expire_history();
    r.server.delete::<Pod>(Some("shop"), "a");
    r.server.apply(&pod("c", "uc", "10.7.0.3").pod);
    r.enrich_until(&payload(&[&[]], Some("10.7.0.3")), has("k8s.pod.name", "c"))
        .await;
    r.enrich_until(&a, |m| !m.contains_key("k8s.pod.name"))
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while r.relists("pods") < 1.0 {
        assert!(tokio::time::Instant::now() < deadline, "no relist counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        r.restarts("pods") >= 1.0,
        "the 410 counted as a watch restart"
    );
    assert!(r.metric("otelcol_otelsvc_k8s_pod_deleted") >= 1.0);
}

#[tokio::test]
async fn the_api_server_down_at_start_data_flows_unenriched_then_enriched() {
    let server = FakeApiServer::start_default().await;
    server.apply(&pod("late", "ul", "10.8.0.1").pod);
    server.stop();
    let r = build(server, serde_json::json!({"auth_type": "kubeConfig"}));
    r.processor.start().await.expect("starts without the API");
    let data = payload(&[&[("service.name", "web")]], Some("10.8.0.1"));
    for _ in 0..3 {
        let got = r.enrich(data.clone()).await;
        assert_eq!(got[0].len(), 1, "passes unenriched: {got:?}");
    }
    assert!(r.metric("otelcol_otelsvc_k8s_ip_lookup_miss") >= 3.0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while r.restarts("pods") < 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no watch restart counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    r.server.start().await.unwrap();
    r.enrich_until(&data, has("k8s.pod.name", "late")).await;
}

#[tokio::test]
async fn wait_for_metadata_fails_the_start_when_the_api_is_down() {
    let server = FakeApiServer::start_default().await;
    server.stop();
    let r = build(
        server,
        serde_json::json!({"auth_type": "kubeConfig", "wait_for_metadata": true, "wait_for_metadata_timeout": "300ms"}),
    );
    let err = r.processor.start().await.unwrap_err();
    assert!(
        err.to_string()
            .contains("failed to wait for caches to sync"),
        "{err}"
    );

    let server = FakeApiServer::start_default().await;
    server.apply(&pod("ready", "ur", "10.8.1.1").pod);
    let r = build(
        server,
        serde_json::json!({"auth_type": "kubeConfig", "wait_for_metadata": true}),
    );
    r.processor.start().await.unwrap();
    // Started means synced: the very first payload is enriched.
    let got = r.enrich(payload(&[&[]], Some("10.8.1.1"))).await;
    assert_eq!(
        got[0].get("k8s.pod.name").map(String::as_str),
        Some("ready")
    );
}

#[tokio::test]
async fn service_account_auth_node_filter_and_namespace_node_metadata() {
    let server = FakeApiServer::start_default().await;
    let mut ns = Namespace::default();
    ns.metadata.name = Some("shop".into());
    ns.metadata.labels = Some([("team".to_string(), "payments".to_string())].into());
    server.apply(&ns);
    let mut ks = Namespace::default();
    ks.metadata.name = Some("kube-system".into());
    ks.metadata.uid = Some("cluster-uid".into());
    server.apply(&ks);
    let mut node = K8sNode::default();
    node.metadata.name = Some("n1".into());
    node.metadata.uid = Some("node-uid-1".into());
    node.metadata.labels = Some([("zone".to_string(), "a".to_string())].into());
    server.apply(&node);
    server.apply(
        &pod("mine", "u1", "10.9.0.1")
            .label("app", "web")
            .annotation("note/owner", "alice")
            .pod,
    );
    server.apply(&pod("elsewhere", "u2", "10.9.0.2").node("n2").pod);
    let r = build(
        server,
        serde_json::json!({
            "auth_type": "serviceAccount",
            "filter": {"node_from_env_var": "KUBE_NODE_NAME"},
            "extract": {
                "metadata": ["k8s.pod.name", "k8s.node.uid", "k8s.cluster.uid"],
                "labels": [{"key": "app"}, {"key": "team", "from": "namespace"}, {"tag_name": "zone", "key": "zone", "from": "node"}],
                "annotations": [{"tag_name": "note.$1", "key_regex": "note/(.*)"}]
            }
        }),
    );
    r.processor.start().await.unwrap();
    let data = payload(&[&[]], Some("10.9.0.1"));
    let got = r
        .enrich_until(&data, |m| {
            m.contains_key("k8s.pod.name")
                && m.contains_key("k8s.cluster.uid")
                && m.contains_key("zone")
                && m.contains_key("k8s.namespace.labels.team")
        })
        .await;
    let want: BTreeMap<String, String> = [
        ("k8s.pod.name", "mine"),
        ("k8s.pod.labels.app", "web"),
        ("note.owner", "alice"),
        ("k8s.cluster.uid", "cluster-uid"),
        ("k8s.namespace.labels.team", "payments"),
        ("zone", "a"),
        ("k8s.node.uid", "node-uid-1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(got, want);
    // The other node's pod is not watched.
    let got = r.enrich(payload(&[&[]], Some("10.9.0.2"))).await;
    assert!(!got[0].contains_key("k8s.pod.name"));
    let pods = r.server.requests_for("/api/v1/pods");
    assert!(
        pods.iter().all(|q| q.authorized
            && q.query.get("fieldSelector").map(String::as_str) == Some("spec.nodeName=n1")),
        "{pods:?}"
    );
    assert!(!r.server.requests_for("/api/v1/namespaces").is_empty());
    assert!(!r.server.requests_for("/api/v1/nodes").is_empty());
    assert!(
        r.server
            .requests_for("/apis/apps/v1/replicasets")
            .is_empty(),
        "no deployment rule, no ReplicaSet watch"
    );
}

#[tokio::test]
async fn existing_attributes_are_kept_empty_ones_filled_and_containers_matched() {
    let r = rig(serde_json::json!({
        "auth_type": "kubeConfig",
        "extract": {"metadata": ["k8s.pod.name", "k8s.namespace.name", "k8s.container.name", "container.image.name", "container.id"]}
    }))
    .await;
    let mut two = pod("two", "u2", "10.10.0.1");
    let spec = two.pod.spec.as_mut().unwrap();
    spec.containers.push(Container {
        name: "sidecar".into(),
        image: Some("envoy:v1".into()),
        ..Default::default()
    });
    two.pod
        .status
        .as_mut()
        .unwrap()
        .container_statuses
        .as_mut()
        .unwrap()
        .push(ContainerStatus {
            name: "sidecar".into(),
            container_id: Some("containerd://side-1".into()),
            ..Default::default()
        });
    r.server.apply(&two.pod);
    let data = payload(
        &[
            &[("k8s.pod.name", "mine"), ("k8s.namespace.name", "")],
            &[("k8s.container.name", "sidecar")],
            &[("container.id", "u2-c1")],
            &[],
        ],
        Some("10.10.0.1"),
    );
    r.enrich_until(&data, has("k8s.namespace.name", "shop"))
        .await;
    let got = r.enrich(data).await;
    assert_eq!(got[0]["k8s.pod.name"], "mine", "never overwritten");
    assert_eq!(
        got[0]["k8s.namespace.name"], "shop",
        "an empty value is filled"
    );
    assert_eq!(got[1]["container.image.name"], "envoy");
    assert_eq!(got[1]["container.id"], "side-1");
    assert_eq!(got[2]["k8s.container.name"], "app");
    assert_eq!(got[2]["container.image.name"], "registry.local/shop/web");
    assert!(
        !got[3].contains_key("k8s.container.name"),
        "two containers and nothing to choose by"
    );
}

#[tokio::test]
async fn passthrough_adds_only_the_ip_and_never_calls_the_api() {
    let r = rig(serde_json::json!({"passthrough": true})).await;
    let got = r
        .enrich(payload(
            &[&[("service.name", "a")], &[("k8s.pod.ip", "10.0.0.9")]],
            Some("10.0.0.1"),
        ))
        .await;
    assert_eq!(
        got[0].get("k8s.pod.ip").map(String::as_str),
        Some("10.0.0.1")
    );
    assert_eq!(got[0].len(), 2);
    assert_eq!(got[1]["k8s.pod.ip"], "10.0.0.9");
    assert!(r.server.requests().is_empty());
}

#[tokio::test]
async fn excluded_and_ignored_pods_add_nothing() {
    let r = rig(serde_json::json!({"auth_type": "kubeConfig"})).await;
    r.server
        .apply(&pod("jaeger-agent-x1", "uj", "10.11.0.1").pod);
    r.server.apply(
        &pod("quiet", "uq", "10.11.0.2")
            .annotation("opentelemetry.io/k8s-processor/ignore", " True ")
            .pod,
    );
    r.server.apply(&pod("marker", "um", "10.11.0.3").pod);
    r.enrich_until(
        &payload(&[&[]], Some("10.11.0.3")),
        has("k8s.pod.name", "marker"),
    )
    .await;
    let misses = r.metric("otelcol_otelsvc_k8s_ip_lookup_miss");
    for ip in ["10.11.0.1", "10.11.0.2"] {
        let got = r.enrich(payload(&[&[]], Some(ip))).await;
        assert!(got[0].is_empty(), "{ip}: {got:?}");
    }
    assert_eq!(
        r.metric("otelcol_otelsvc_k8s_ip_lookup_miss"),
        misses,
        "found, not missed"
    );
}
