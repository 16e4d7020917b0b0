//! The processor against real peers: the fake IMDS (`testing`) and the crate's fake Kubernetes
//! API server (`crate::testing`) over HTTP(S), made-up machines (a temporary root) for `system` and the
//! service account, and OTLP payloads through the processor.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use serde_json::json;
use sluice_engine::component::{
    BoxFuture, BuildContext, ComponentId, ConsumeError, Consumer, Factory, Node,
};
use sluice_engine::otlp::encode_to_vec;
use sluice_engine::otlp::testing::reference_traces;
use sluice_engine::payload::Payload;
use sluice_engine::schema::Signal;
use sluice_engine::telemetry::Telemetry;
use tokio::time::Instant;

use super::config::{self, DetectorKind};
use super::detect::{DetectError, HostEnvironment, SEMCONV_SCHEMA_URL};
use super::imds::{ENDPOINT_ENV, TOKEN_PATH};
use super::provider::Provider;
use super::{DetectedResource, ResourceDetectionFactory};
use crate::testing::imds::{FakeImds, FakeInstance, ImdsMode, refused_endpoint};
use crate::testing::{FakeApiServer, FakeApiServerOptions};

fn strs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn env_of(vars: Vec<(String, String)>) -> impl Fn(&str) -> Option<String> + Send + Sync {
    move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

fn host(vars: &[(&str, &str)]) -> HostEnvironment {
    HostEnvironment::new(env_of(strs(vars)), "/nonexistent/sluice-test-root")
}

fn provider(cfg: serde_json::Value, host: HostEnvironment) -> (Arc<Provider>, Telemetry) {
    let checked = config::parse(&cfg).expect("valid config");
    let t = Telemetry::new();
    let id = ComponentId::parse("resourcedetection/test").unwrap();
    (Provider::new(&id, &checked, host, &t), t)
}

const EC2_DETECTED: [(&str, &str); 9] = [
    ("cloud.provider", "aws"),
    ("cloud.platform", "aws_ec2"),
    ("cloud.region", "eu-west-1"),
    ("cloud.account.id", "123456789012"),
    ("cloud.availability_zone", "eu-west-1b"),
    ("host.id", "i-0123456789abcdef0"),
    ("host.image.id", "ami-0abcdef1234567890"),
    ("host.type", "m5.large"),
    ("host.name", "ip-10-0-12-34.eu-west-1.compute.internal"),
];

// ------------------------------------------------------------------------------------ config

#[test]
fn config_defaults_are_the_collectors() {
    let c = config::parse(&serde_json::Value::Null).unwrap();
    assert_eq!(c.detectors, vec![DetectorKind::Env]);
    assert!(c.raw.override_existing);
    assert_eq!(c.raw.timeout, Duration::from_secs(5));
    assert_eq!(c.raw.refresh_interval, Duration::ZERO);
    assert_eq!(c.raw.ec2.max_attempts, 3);
    assert_eq!(c.raw.eks.max_backoff, Duration::from_secs(20));
    assert_eq!(
        c.hostname_sources,
        vec![config::HostnameSource::Dns, config::HostnameSource::Os]
    );
    assert!(c.system_attributes.on("host.name") && c.system_attributes.on("os.type"));
    assert!(!c.system_attributes.on("host.id"));
    assert!(
        config::EC2_ATTRIBUTES
            .iter()
            .all(|a| c.ec2_attributes.on(a.name))
    );
    assert!(c.eks_attributes.on("cloud.provider") && c.eks_attributes.on("cloud.platform"));
    assert!(!c.eks_attributes.on("cloud.region") && !c.eks_attributes.on("host.name"));
    let c = config::parse(&json!({
        "detectors": [" eks ", "env"], "override": false, "timeout": "2s",
        "refresh_interval": "1m",
        "eks": {"resource_attributes": {"cloud.region": {"enabled": true},
                                         "cloud.provider": {"enabled": false}}},
    }))
    .unwrap();
    assert_eq!(c.detectors, vec![DetectorKind::Eks, DetectorKind::Env]);
    assert!(!c.raw.override_existing);
    assert!(c.eks_attributes.on("cloud.region") && !c.eks_attributes.on("cloud.provider"));
}

#[test]
fn config_errors_name_the_field() {
    let cases: Vec<(serde_json::Value, &str, &str)> = vec![
        (
            json!({"detectors": ["gcp"]}),
            "detectors[0]",
            "gcp detector is not supported by sluice",
        ),
        (
            json!({"detectors": ["env", "ecs2"]}),
            "detectors[1]",
            "invalid detector key: \"ecs2\"",
        ),
        (
            json!({"detectors": []}),
            "detectors",
            "at least one detector",
        ),
        (json!({"gcp": {}}), "gcp", "gcp detector is not supported"),
        (
            json!({"endpoint": "http://x"}),
            "endpoint",
            "only `timeout` applies",
        ),
        (json!({"attributes": ["a"]}), "attributes", "removed"),
        (json!({"timeoutt": "1s"}), "timeoutt", "unknown field"),
        (json!({"timeout": "0s"}), "timeout", "greater than 0"),
        (json!({"timeout": "5"}), "timeout", "missing unit"),
        (json!({"ec2": {"tags": ["^team$"]}}), "ec2.tags", "EC2 API"),
        (
            json!({"ec2": {"max_attempts": 0}}),
            "ec2.max_attempts",
            "at least 1",
        ),
        (
            json!({"system": {"hostname_sources": ["dns", "fqdn"]}}),
            "system.hostname_sources[1]",
            "invalid value: \"fqdn\"",
        ),
        (
            json!({"system": {"resource_attributes": {"host.ip": {"enabled": true}}}}),
            "system.resource_attributes.host.ip.enabled",
            "cannot be enabled in sluice",
        ),
        (
            json!({"eks": {"resource_attributes": {"k8s.cluster.name": {"enabled": true}}}}),
            "eks.resource_attributes.k8s.cluster.name.enabled",
            "EC2 API",
        ),
        (
            json!({"ec2": {"resource_attributes": {"cloud.zone": {"enabled": true}}}}),
            "ec2.resource_attributes.cloud.zone",
            "unknown resource attribute",
        ),
        (
            json!({"ec2": {"resource_attributes": {"host.id": {"enable": true}}}}),
            "ec2.resource_attributes.host.id.enable",
            "unknown field",
        ),
    ];
    for (cfg, path, msg) in cases {
        let e = match ResourceDetectionFactory::default().parse_config(&cfg) {
            Ok(_) => panic!("{cfg} must be refused"),
            Err(e) => e,
        };
        assert_eq!(e.path, path, "{cfg}: {e}");
        assert!(e.message.contains(msg), "{cfg}: {e}");
    }
    // Disabling an attribute sluice cannot detect is fine (it is off anyway).
    assert!(
        config::parse(&json!({"system": {"resource_attributes": {"host.ip": {"enabled": false}}}}))
            .is_ok()
    );
}

// ------------------------------------------------------------------------------------ ec2

#[tokio::test]
async fn ec2_over_imdsv2_sends_the_token_everywhere() {
    let imds = FakeImds::start(ImdsMode::V2Required, FakeInstance::default())
        .await
        .unwrap();
    let (p, _) = provider(
        json!({"detectors": ["ec2"]}),
        host(&[(ENDPOINT_ENV, &imds.endpoint())]),
    );
    let run = p.detect_all().await;
    assert!(run.failures.is_empty(), "{:?}", run.failures);
    assert_eq!(run.merged.attributes, strs(&EC2_DETECTED));
    assert_eq!(run.merged.schema_url, SEMCONV_SCHEMA_URL);
    let seen = imds.requests();
    assert_eq!(seen[0].method, "PUT");
    assert_eq!(seen[0].path, TOKEN_PATH);
    assert_eq!(seen[0].ttl.as_deref(), Some("21600"));
    assert_eq!(
        seen.iter().filter(|r| r.method == "PUT").count(),
        1,
        "{seen:?}"
    );
    let gets: Vec<_> = seen.iter().filter(|r| r.method == "GET").collect();
    assert_eq!(gets.len(), 3, "instance-id, document, hostname: {seen:?}");
    assert!(
        gets.iter()
            .all(|r| r.token.as_deref() == Some("fake-imds-token-1") && r.status == 200),
        "{seen:?}"
    );
}

#[tokio::test]
async fn ec2_falls_back_to_imdsv1_for_good() {
    for token_status in [403, 404, 405] {
        let imds = FakeImds::start(ImdsMode::V1Only { token_status }, FakeInstance::default())
            .await
            .unwrap();
        let (p, _) = provider(
            json!({"detectors": ["ec2"]}),
            host(&[(ENDPOINT_ENV, &imds.endpoint())]),
        );
        for _ in 0..2 {
            let run = p.detect_all().await;
            assert!(
                run.failures.is_empty(),
                "{token_status}: {:?}",
                run.failures
            );
            assert_eq!(run.merged.attributes, strs(&EC2_DETECTED));
        }
        let seen = imds.requests();
        assert_eq!(
            seen.iter().filter(|r| r.method == "PUT").count(),
            1,
            "{token_status}: one token attempt, then IMDSv1: {seen:?}"
        );
        assert!(
            seen.iter()
                .filter(|r| r.method == "GET")
                .all(|r| r.token.is_none())
        );
    }
}

#[tokio::test]
async fn ec2_gets_a_new_token_after_a_401() {
    let imds = FakeImds::start(ImdsMode::V2Required, FakeInstance::default())
        .await
        .unwrap();
    let (p, _) = provider(
        json!({"detectors": ["ec2"]}),
        host(&[(ENDPOINT_ENV, &imds.endpoint())]),
    );
    assert!(p.detect_all().await.failures.is_empty());
    imds.expire_tokens();
    let run = p.detect_all().await;
    assert!(run.failures.is_empty(), "{:?}", run.failures);
    let seen = imds.requests();
    let statuses: Vec<(String, u16)> = seen[4..]
        .iter()
        .map(|r| (r.method.clone(), r.status))
        .collect();
    assert_eq!(
        statuses,
        vec![
            ("GET".into(), 401),
            ("PUT".into(), 200),
            ("GET".into(), 200),
            ("GET".into(), 200),
            ("GET".into(), 200)
        ],
        "{seen:?}"
    );
}

#[tokio::test]
async fn ec2_retries_server_errors_then_gives_up_at_the_timeout() {
    let imds = FakeImds::start(ImdsMode::V2Optional, FakeInstance::default())
        .await
        .unwrap();
    let vars = [(ENDPOINT_ENV, imds.endpoint())];
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // Two 500s: the IMDS client's own retries absorb them.
    imds.fail("/latest/dynamic/instance-identity/document", 500, 2);
    let (p, t) = provider(json!({"detectors": ["ec2"]}), host(&vars));
    let run = p.detect_all().await;
    assert!(run.failures.is_empty(), "{:?}", run.failures);
    assert_eq!(run.merged.attributes, strs(&EC2_DETECTED));
    // Failing for good: the detector retries until the timeout, then fails with the cause.
    imds.fail("/latest/dynamic/instance-identity/document", 503, 1000);
    let (p, t2) = provider(
        json!({"detectors": ["ec2"], "timeout": "1500ms"}),
        host(&vars),
    );
    let began = Instant::now();
    let run = p.detect_all().await;
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "{:?}",
        began.elapsed()
    );
    let [(DetectorKind::Ec2, DetectError::Status(msg))] = run.failures.as_slice() else {
        panic!("{:?}", run.failures)
    };
    assert!(
        msg.contains("failed getting identity document") && msg.contains("503"),
        "{msg}"
    );
    let v = |t: &Telemetry, outcome, et: Option<&str>| {
        let mut l = vec![
            ("processor", "resourcedetection/test"),
            ("detector", "ec2"),
            ("outcome", outcome),
        ];
        if let Some(et) = et {
            l.push(("error_type", et));
        }
        t.value("otelcol_resourcedetection_detector_results", &l)
    };
    assert_eq!(v(&t, "success", None), Some(1.0));
    assert_eq!(v(&t2, "failure", Some("http_status")), Some(1.0));
}

#[tokio::test]
async fn ec2_off_ec2_detects_nothing_without_error() {
    // Nothing listening, and a listener that never answers.
    let hang = FakeImds::start(ImdsMode::Hang, FakeInstance::default())
        .await
        .unwrap();
    for endpoint in [refused_endpoint(), hang.endpoint()] {
        let (p, _) = provider(
            json!({"detectors": ["ec2"], "timeout": "1s"}),
            host(&[(ENDPOINT_ENV, &endpoint)]),
        );
        let began = Instant::now();
        let run = p.detect_all().await;
        assert!(run.failures.is_empty(), "{endpoint}: {:?}", run.failures);
        assert!(run.merged.is_empty());
        // Bounded by the timeout (plus the grace a detector gets to notice it).
        assert!(
            began.elapsed() < Duration::from_secs(3),
            "{:?}",
            began.elapsed()
        );
    }
    // AWS_EC2_METADATA_DISABLED: not even a connection.
    let imds = FakeImds::start(ImdsMode::V2Optional, FakeInstance::default())
        .await
        .unwrap();
    let (p, _) = provider(
        json!({"detectors": ["ec2"]}),
        host(&[
            (ENDPOINT_ENV, &imds.endpoint()),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]),
    );
    assert!(p.detect_all().await.merged.is_empty());
    assert!(imds.requests().is_empty());
}

#[tokio::test]
async fn fail_on_missing_metadata_makes_absence_an_error() {
    for cfg in [
        json!({"detectors": ["ec2"], "timeout": "600ms", "fail_on_missing_metadata": true}),
        json!({"detectors": ["ec2"], "timeout": "600ms", "ec2": {"fail_on_missing_metadata": true}}),
    ] {
        let (p, t) = provider(cfg.clone(), host(&[(ENDPOINT_ENV, &refused_endpoint())]));
        let run = p.detect_all().await;
        let [(DetectorKind::Ec2, e)] = run.failures.as_slice() else {
            panic!("{cfg}: {:?}", run.failures)
        };
        assert!(e.to_string().contains("EC2 metadata unavailable"), "{e}");
        let failures = t.value(
            "otelcol_resourcedetection_detector_results",
            &[
                ("processor", "resourcedetection/test"),
                ("detector", "ec2"),
                ("outcome", "failure"),
                ("error_type", "unreachable"),
            ],
        );
        assert_eq!(failures, Some(1.0), "{cfg}");
    }
}

// ------------------------------------------------------------------------------------ eks

/// The fake API server reporting `git_version` (what tells EKS from other distributions).
async fn api_server(git_version: &str) -> FakeApiServer {
    FakeApiServer::start_with(FakeApiServerOptions {
        git_version: git_version.into(),
        ..FakeApiServerOptions::default()
    })
    .await
    .expect("fake API server starts")
}

/// Paths requested, with whether each carried the right token.
fn seen(api: &FakeApiServer) -> Vec<(String, bool)> {
    api.requests()
        .into_iter()
        .map(|r| (r.path, r.authorized))
        .collect()
}

/// A node with `spec.providerID`, as EKS registers it.
fn add_node(api: &FakeApiServer, name: &str, provider_id: &str) {
    let mut node = k8s_openapi::api::core::v1::Node::default();
    node.metadata.name = Some(name.into());
    node.spec = Some(k8s_openapi::api::core::v1::NodeSpec {
        provider_id: Some(provider_id.into()),
        ..Default::default()
    });
    api.apply(&node);
}

/// A pod's view: the API server's address in the environment, the service account (with
/// `token`, which may be wrong) under a temporary root.
fn pod(
    api: &FakeApiServer,
    token: &str,
    extra: &[(&str, &str)],
) -> (tempfile::TempDir, HostEnvironment) {
    let root = tempfile::tempdir().unwrap();
    let dir = root
        .path()
        .join(super::eks::SERVICE_ACCOUNT_DIR.trim_start_matches('/'));
    api.write_service_account(&dir, "default").unwrap();
    std::fs::write(dir.join("token"), token).unwrap();
    let mut vars = strs(&[
        ("KUBERNETES_SERVICE_HOST", "127.0.0.1"),
        ("KUBERNETES_SERVICE_PORT", &api.addr().port().to_string()),
    ]);
    vars.extend(strs(extra));
    let env = HostEnvironment::new(env_of(vars), root.path());
    (root, env)
}

#[tokio::test]
async fn eks_detects_with_the_api_server_and_imds() {
    let api = api_server("v1.30.4-eks-a737599").await;
    let imds = FakeImds::start(ImdsMode::V2Required, FakeInstance::default())
        .await
        .unwrap();
    let (_root, env) = pod(&api, api.token(), &[(ENDPOINT_ENV, &imds.endpoint())]);
    // The defaults: provider and platform only, and no IMDS call for them.
    let (p, _) = provider(json!({"detectors": ["eks"]}), env.clone());
    let run = p.detect_all().await;
    assert!(run.failures.is_empty(), "{:?}", run.failures);
    assert_eq!(
        run.merged.attributes,
        strs(&[("cloud.provider", "aws"), ("cloud.platform", "aws_eks")])
    );
    assert!(imds.requests().is_empty());
    assert_eq!(seen(&api), vec![("/version".to_string(), true)]);
    // What the reference deployment's labels need.
    let on = json!({"enabled": true});
    let (p, _) = provider(
        json!({"detectors": ["eks"], "eks": {"resource_attributes": {
            "cloud.region": on, "cloud.availability_zone": on, "host.name": on, "host.id": on}}}),
        env,
    );
    let run = p.detect_all().await;
    assert!(run.failures.is_empty(), "{:?}", run.failures);
    assert_eq!(
        run.merged.attributes,
        strs(&[
            ("cloud.provider", "aws"),
            ("cloud.platform", "aws_eks"),
            ("host.id", "i-0123456789abcdef0"),
            ("cloud.availability_zone", "eu-west-1b"),
            ("cloud.region", "eu-west-1"),
            ("host.name", "ip-10-0-12-34.eu-west-1.compute.internal"),
        ])
    );
}

#[tokio::test]
async fn eks_elsewhere_detects_nothing() {
    // Another Kubernetes distribution.
    let api = api_server("v1.31.2+k3s1").await;
    let (_root, env) = pod(&api, api.token(), &[]);
    let (p, _) = provider(json!({"detectors": ["eks"]}), env);
    let run = p.detect_all().await;
    assert!(run.failures.is_empty() && run.merged.is_empty(), "{run:?}");
    assert_eq!(seen(&api).len(), 1);
    // Not on Kubernetes at all: no request anywhere.
    let (p, _) = provider(json!({"detectors": ["eks"]}), host(&[]));
    let run = p.detect_all().await;
    assert!(run.failures.is_empty() && run.merged.is_empty(), "{run:?}");
    assert_eq!(seen(&api).len(), 1);
}

#[tokio::test]
async fn eks_errors_are_retried_then_reported() {
    // A wrong token: the API server answers 401, which is an error, not "not EKS".
    let api = api_server("v1.30.4-eks-a737599").await;
    let (_root, env) = pod(&api, "not-the-token", &[]);
    // 3 s: the Collector's first retry comes within 2.5 s, so there is always a second try.
    let (p, _) = provider(json!({"detectors": ["eks"], "timeout": "3s"}), env);
    let run = p.detect_all().await;
    let [(DetectorKind::Eks, DetectError::Status(msg))] = run.failures.as_slice() else {
        panic!("{:?}", run.failures)
    };
    assert!(msg.contains("401"), "{msg}");
    assert!(seen(&api).len() >= 2, "retried: {:?}", seen(&api));
    // KUBERNETES_SERVICE_PORT missing: the in-cluster config cannot be made.
    let (p, _) = provider(
        json!({"detectors": ["eks"], "timeout": "300ms"}),
        host(&[("KUBERNETES_SERVICE_HOST", "10.100.0.1")]),
    );
    let run = p.detect_all().await;
    assert!(
        run.failures[0]
            .1
            .to_string()
            .contains("KUBERNETES_SERVICE_PORT"),
        "{:?}",
        run.failures
    );
}

#[tokio::test]
async fn eks_without_imds_reads_the_node() {
    let api = api_server("v1.30.4-eks-a737599").await;
    add_node(
        &api,
        "ip-10-0-1-2.eu-west-1.compute.internal",
        "aws:///eu-west-1c/i-0fedcba9876543210",
    );
    let (_root, env) = pod(
        &api,
        api.token(),
        &[
            (ENDPOINT_ENV, &refused_endpoint()),
            ("K8S_NODE_NAME", "ip-10-0-1-2.eu-west-1.compute.internal"),
        ],
    );
    let on = json!({"enabled": true});
    let (p, _) = provider(
        json!({"detectors": ["eks"], "eks": {"node_from_env_var": "K8S_NODE_NAME",
            "resource_attributes": {"cloud.region": on, "cloud.availability_zone": on, "host.id": on}}}),
        env.clone(),
    );
    let run = p.detect_all().await;
    assert!(run.failures.is_empty(), "{:?}", run.failures);
    assert_eq!(
        run.merged.attributes,
        strs(&[
            ("cloud.provider", "aws"),
            ("cloud.platform", "aws_eks"),
            ("host.id", "i-0fedcba9876543210"),
            ("cloud.availability_zone", "eu-west-1c"),
            ("cloud.region", "eu-west-1"),
        ])
    );
    // host.name would need the EC2 API: an error that says what to do.
    let (p, _) = provider(
        json!({"detectors": ["eks"], "timeout": "500ms", "eks": {"node_from_env_var": "K8S_NODE_NAME",
            "resource_attributes": {"host.name": on}}}),
        env,
    );
    let run = p.detect_all().await;
    let [(DetectorKind::Eks, DetectError::Unsupported(msg))] = run.failures.as_slice() else {
        panic!("{:?}", run.failures)
    };
    assert!(
        msg.contains("host.name") && msg.contains("hop limit"),
        "{msg}"
    );
}

// ------------------------------------------------------------------------------------ merge

#[tokio::test]
async fn detectors_merge_in_configured_order() {
    let imds = FakeImds::start(ImdsMode::V2Optional, FakeInstance::default())
        .await
        .unwrap();
    let env_text = "host.name=from-env,deployment.environment=prod";
    let vars = [
        (ENDPOINT_ENV, imds.endpoint()),
        ("OTEL_RESOURCE_ATTRIBUTES", env_text.into()),
    ];
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (p, _) = provider(json!({"detectors": ["env", "ec2"]}), host(&vars));
    let run = p.detect_all().await;
    let name = |r: &DetectedResource| {
        r.attributes
            .iter()
            .find(|(k, _)| k == "host.name")
            .map(|(_, v)| v.clone())
    };
    assert_eq!(name(&run.merged).as_deref(), Some("from-env"));
    assert_eq!(run.merged.attributes.len(), 10);
    // env has no schema URL; ec2's is taken.
    assert_eq!(run.merged.schema_url, SEMCONV_SCHEMA_URL);
    let (p, _) = provider(json!({"detectors": ["ec2", "env"]}), host(&vars));
    let run = p.detect_all().await;
    assert_eq!(
        name(&run.merged).as_deref(),
        Some("ip-10-0-12-34.eu-west-1.compute.internal")
    );
}

// ------------------------------------------------------------------------------------ processor

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Payload>>>);

impl Consumer for Capture {
    fn consume(&self, payload: Payload) -> BoxFuture<'_, Result<(), ConsumeError>> {
        self.0.lock().unwrap().push(payload);
        Box::pin(async { Ok(()) })
    }
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

/// Three resources: an SDK's (with a schema URL and its own `cloud.region`), one with
/// attributes and no schema URL, and a ResourceSpans without any `resource`.
fn traces() -> ExportTraceServiceRequest {
    let spans = |n: usize| ScopeSpans {
        spans: (0..n)
            .map(|i| Span {
                name: format!("s{i}"),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![
            ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", "checkout"),
                        kv("cloud.region", "sdk-set"),
                    ],
                    ..Default::default()
                }),
                scope_spans: vec![spans(3)],
                schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
            },
            ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", "cart")],
                    ..Default::default()
                }),
                scope_spans: vec![spans(2)],
                schema_url: String::new(),
            },
            ResourceSpans {
                resource: None,
                scope_spans: vec![spans(1)],
                schema_url: String::new(),
            },
        ],
    }
}

async fn processor(
    cfg: serde_json::Value,
    host: HostEnvironment,
    signal: Signal,
    parsed: Option<sluice_engine::component::ParsedConfig>,
) -> (
    Arc<dyn Node>,
    Capture,
    sluice_engine::component::ParsedConfig,
    Telemetry,
) {
    let factory = ResourceDetectionFactory::with_host(host);
    let parsed = parsed.unwrap_or_else(|| factory.parse_config(&cfg).unwrap());
    let cap = Capture::default();
    let t = Telemetry::new();
    let ctx = BuildContext {
        id: ComponentId::parse("resourcedetection").unwrap(),
        config: parsed.clone(),
        telemetry: t.clone(),
        clock: Arc::new(sluice_engine::clock::WallClock),
        extensions: Default::default(),
    };
    let node = factory
        .build_processor(ctx, signal, Arc::new(cap.clone()))
        .unwrap();
    (node, cap, parsed, t)
}

fn resources(p: &Payload) -> Vec<(Vec<(String, String)>, String)> {
    let back = ExportTraceServiceRequest::decode(encode_to_vec(p).as_slice()).unwrap();
    back.resource_spans
        .iter()
        .map(|rs| {
            let attrs = rs
                .resource
                .as_ref()
                .map(|r| {
                    r.attributes
                        .iter()
                        .map(|a| {
                            let v = match a.value.as_ref().and_then(|v| v.value.as_ref()) {
                                Some(any_value::Value::StringValue(s)) => s.clone(),
                                other => format!("{other:?}"),
                            };
                            (a.key.clone(), v)
                        })
                        .collect()
                })
                .unwrap_or_default();
            (attrs, rs.schema_url.clone())
        })
        .collect()
}

#[tokio::test]
async fn every_resource_gets_the_detected_attributes() {
    let imds = FakeImds::start(ImdsMode::V2Required, FakeInstance::default())
        .await
        .unwrap();
    let vars = [
        (ENDPOINT_ENV, imds.endpoint()),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment=prod%20eu".into(),
        ),
    ];
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for override_existing in [true, false] {
        let cfg = json!({"detectors": ["env", "ec2"], "override": override_existing});
        let (node, cap, _, t) = processor(cfg, host(&vars), Signal::Traces, None).await;
        node.start().await.unwrap();
        node.consume(reference_traces(&traces())).await.unwrap();
        let out = cap.0.lock().unwrap()[0].clone();
        out.validate().unwrap();
        assert_eq!(out.item_count(), 6);
        let got = resources(&out);
        let region = if override_existing {
            "eu-west-1"
        } else {
            "sdk-set"
        };
        let mut first = strs(&[("service.name", "checkout"), ("cloud.region", region)]);
        let mut detected = strs(&[("deployment.environment", "prod eu")]);
        detected.extend(strs(&EC2_DETECTED));
        first.extend(
            detected
                .iter()
                .filter(|(k, _)| k != "cloud.region")
                .cloned(),
        );
        let mut second = strs(&[("service.name", "cart")]);
        second.extend(detected.clone());
        assert_eq!(
            got,
            vec![
                (first, "https://opentelemetry.io/schemas/1.26.0".into()),
                (second, SEMCONV_SCHEMA_URL.into()),
                (detected.clone(), SEMCONV_SCHEMA_URL.into()),
            ],
            "override {override_existing}"
        );
        let items = |name| {
            t.value(
                name,
                &[
                    ("processor", "resourcedetection"),
                    ("otel_signal", "traces"),
                ],
            )
        };
        assert_eq!(items("otelcol_processor_incoming_items"), Some(6.0));
        assert_eq!(items("otelcol_processor_outgoing_items"), Some(6.0));
        assert_eq!(
            t.value(
                "otelcol_resourcedetection_attributes_detected",
                &[("processor", "resourcedetection")]
            ),
            Some(10.0)
        );
        node.shutdown().await;
    }
}

#[tokio::test]
async fn pipelines_share_one_detection_and_start_waits_for_it() {
    let imds = FakeImds::start(ImdsMode::V2Optional, FakeInstance::default())
        .await
        .unwrap();
    imds.set_delay(Duration::from_millis(100));
    let vars = [(ENDPOINT_ENV, imds.endpoint())];
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let cfg = json!({"detectors": ["ec2"]});
    let (traces_node, traces_cap, parsed, _) =
        processor(cfg.clone(), host(&vars), Signal::Traces, None).await;
    let (metrics_node, _, _, _) = processor(cfg, host(&vars), Signal::Metrics, Some(parsed)).await;
    let (a, b) = tokio::join!(traces_node.start(), metrics_node.start());
    a.unwrap();
    b.unwrap();
    let docs = imds
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/document"))
        .count();
    assert_eq!(docs, 1, "one detection for both pipelines");
    // Started means detected: the first payload already gets the attributes.
    traces_node
        .consume(reference_traces(&traces()))
        .await
        .unwrap();
    let out = traces_cap.0.lock().unwrap()[0].clone();
    assert!(
        resources(&out)[2]
            .0
            .contains(&("host.id".into(), "i-0123456789abcdef0".into()))
    );
}

#[tokio::test]
async fn start_fails_when_a_detector_still_fails_at_the_timeout() {
    let cfg = json!({"detectors": ["env", "system"], "timeout": "400ms",
                     "system": {"hostname_sources": ["os"]}});
    let (node, _, _, t) = processor(
        cfg,
        host(&[("OTEL_RESOURCE_ATTRIBUTES", "team=obs,broken")]),
        Signal::Logs,
        None,
    )
    .await;
    let began = Instant::now();
    let e = node.start().await.unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with("resourcedetection: resource detection failed within timeout 400ms"),
        "{msg}"
    );
    assert!(
        msg.contains(
            "env: OTEL_RESOURCE_ATTRIBUTES: invalid resource format, invalid text: \"broken\""
        ),
        "{msg}"
    );
    assert!(msg.contains("system: all hostname sources failed"), "{msg}");
    assert!(began.elapsed() < Duration::from_secs(3));
    assert_eq!(
        t.value(
            "otelcol_resourcedetection_detector_results",
            &[
                ("processor", "resourcedetection"),
                ("detector", "env"),
                ("outcome", "failure"),
                ("error_type", "invalid_input"),
            ]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn refresh_replaces_the_resource_and_keeps_it_when_refresh_fails() {
    let imds = FakeImds::start(ImdsMode::V2Optional, FakeInstance::default())
        .await
        .unwrap();
    let vars = [(ENDPOINT_ENV, imds.endpoint())];
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (p, _) = provider(
        json!({"detectors": ["ec2"], "refresh_interval": "200ms", "timeout": "1s"}),
        host(&vars),
    );
    p.start().await.unwrap();
    let region = |p: &Provider| {
        p.current()
            .detected()
            .attributes
            .iter()
            .find(|(k, _)| k == "cloud.region")
            .map(|(_, v)| v.clone())
    };
    assert_eq!(region(&p).as_deref(), Some("eu-west-1"));
    imds.set_instance(FakeInstance {
        region: "eu-central-1".into(),
        ..FakeInstance::default()
    });
    let until = Instant::now() + Duration::from_secs(10);
    while region(&p).as_deref() != Some("eu-central-1") && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(region(&p).as_deref(), Some("eu-central-1"));
    // From now on every refresh fails: the last resource stays.
    imds.fail("/latest/dynamic/instance-identity/document", 500, u32::MAX);
    let seen = imds.requests().len();
    let until = Instant::now() + Duration::from_secs(10);
    while imds
        .requests()
        .iter()
        .skip(seen)
        .filter(|r| r.status == 500)
        .count()
        < 3
        && Instant::now() < until
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(imds.requests().iter().skip(seen).any(|r| r.status == 500));
    assert_eq!(region(&p).as_deref(), Some("eu-central-1"));
    p.stop();
}
