//! The `k8s` resolver's view of a service against the fake API server: the real list + watch
//! protocol over TLS with a bearer token, EndpointSlices added, changed and deleted while it
//! watches.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointSlice};
use tokio::sync::mpsc;

use super::*;
use crate::testing::FakeApiServer;

/// An endpoint: its address, readiness (`None`: the condition left out) and hostname.
fn ep(address: &str, ready: Option<bool>, hostname: Option<&str>) -> Endpoint {
    Endpoint {
        addresses: vec![address.into()],
        conditions: Some(EndpointConditions {
            ready,
            ..Default::default()
        }),
        hostname: hostname.map(Into::into),
        ..Default::default()
    }
}

/// A slice `name` of `service` in `namespace`.
fn slice(namespace: &str, service: &str, name: &str, endpoints: Vec<Endpoint>) -> EndpointSlice {
    let mut s = EndpointSlice {
        address_type: "IPv4".into(),
        endpoints: Some(endpoints),
        ..Default::default()
    };
    s.metadata.name = Some(name.into());
    s.metadata.namespace = Some(namespace.into());
    s.metadata.labels = Some(BTreeMap::from([(
        SERVICE_NAME_LABEL.to_string(),
        service.to_string(),
    )]));
    s
}

/// A process environment pointing at `server` through its kubeconfig, with a service account
/// directory whose namespace file says `namespace` (none when `None`).
fn environment(server: &FakeApiServer, namespace: Option<&str>) -> Environment {
    let sa = server.dir().join("serviceaccount");
    if let Some(ns) = namespace {
        server.write_service_account(&sa, ns).unwrap();
    }
    let kubeconfig = server.kubeconfig().display().to_string();
    Environment {
        vars: Arc::new(move |k| (k == "KUBECONFIG").then(|| kubeconfig.clone())),
        service_account_dir: sa,
    }
}

fn quick() -> Backoff {
    Backoff {
        min: Duration::from_millis(20),
        max: Duration::from_millis(200),
    }
}

/// Runs the watch of `endpoints`; returns what it publishes, sorted, in order.
async fn watch(
    server: &FakeApiServer,
    env: &Environment,
    endpoints: ServiceEndpoints,
) -> (
    mpsc::UnboundedReceiver<Result<Vec<String>, String>>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let client = client(env).await.expect("client from the kubeconfig");
    assert_eq!(
        client.default_namespace(),
        "default",
        "the fake's kubeconfig names no namespace"
    );
    let _ = server;
    let task = tokio::spawn(async move {
        let publish = move |r: Result<Vec<String>, String>| {
            let _ = tx.send(r.map(|mut v| {
                v.sort();
                v
            }));
        };
        endpoints.watch(client, &quick(), &publish).await
    });
    (rx, task)
}

async fn next(
    rx: &mut mpsc::UnboundedReceiver<Result<Vec<String>, String>>,
) -> Result<Vec<String>, String> {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a publication within 10 s")
        .expect("the watch is running")
}

/// Skips publications until one is `Ok` (errors come from a server taken down).
async fn next_ok(rx: &mut mpsc::UnboundedReceiver<Result<Vec<String>, String>>) -> Vec<String> {
    loop {
        if let Ok(v) = next(rx).await {
            return v;
        }
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn ready_addresses_of_every_slice_with_every_port_follow_the_slices() {
    let server = FakeApiServer::start_default().await;
    server.apply(&slice(
        "telemetry",
        "gateway",
        "gateway-a",
        vec![
            ep("10.0.0.1", Some(true), None),
            ep("10.0.0.2", None, None), // no condition: ready, as the API defines it
            ep("10.0.0.9", Some(false), None),
        ],
    ));
    server.apply(&slice(
        "telemetry",
        "gateway",
        "gateway-b",
        vec![ep("10.0.0.3", Some(true), None)],
    ));
    // Another service of the namespace, and the same name in another namespace: not ours.
    server.apply(&slice(
        "telemetry",
        "other",
        "other-a",
        vec![ep("10.9.0.1", Some(true), None)],
    ));
    server.apply(&slice(
        "elsewhere",
        "gateway",
        "gateway-x",
        vec![ep("10.8.0.1", Some(true), None)],
    ));
    let env = environment(&server, None);
    let svc = ServiceEndpoints::new("gateway.telemetry", vec![4317, 4318], false, &env).unwrap();
    let (mut rx, task) = watch(&server, &env, svc).await;
    assert_eq!(
        next(&mut rx).await.unwrap(),
        strings(&[
            "10.0.0.1:4317",
            "10.0.0.1:4318",
            "10.0.0.2:4317",
            "10.0.0.2:4318",
            "10.0.0.3:4317",
            "10.0.0.3:4318",
        ]),
        "the first list: ready endpoints of both slices, one backend per port"
    );
    // A pod turns ready, another stops being ready (terminating), in one change of a slice.
    server.apply(&slice(
        "telemetry",
        "gateway",
        "gateway-a",
        vec![
            ep("10.0.0.1", Some(false), None),
            ep("10.0.0.2", None, None),
            ep("10.0.0.9", Some(true), None),
        ],
    ));
    assert_eq!(
        next(&mut rx).await.unwrap(),
        strings(&[
            "10.0.0.2:4317",
            "10.0.0.2:4318",
            "10.0.0.3:4317",
            "10.0.0.3:4318",
            "10.0.0.9:4317",
            "10.0.0.9:4318",
        ])
    );
    // A slice deleted, a new one added.
    assert!(server.delete::<EndpointSlice>(Some("telemetry"), "gateway-b"));
    assert_eq!(
        next(&mut rx).await.unwrap(),
        strings(&[
            "10.0.0.2:4317",
            "10.0.0.2:4318",
            "10.0.0.9:4317",
            "10.0.0.9:4318"
        ])
    );
    server.apply(&slice(
        "telemetry",
        "gateway",
        "gateway-c",
        vec![ep("fd00::7", Some(true), None)],
    ));
    assert_eq!(
        next(&mut rx).await.unwrap(),
        strings(&[
            "10.0.0.2:4317",
            "10.0.0.2:4318",
            "10.0.0.9:4317",
            "10.0.0.9:4318",
            "[fd00::7]:4317",
            "[fd00::7]:4318",
        ])
    );
    // Changes to other services are not ours: nothing is published for them.
    server.apply(&slice(
        "telemetry",
        "other",
        "other-a",
        vec![ep("10.9.0.2", Some(true), None)],
    ));
    server.apply(&slice("elsewhere", "gateway", "gateway-x", vec![]));
    assert!(
        tokio::time::timeout(Duration::from_millis(500), rx.recv())
            .await
            .is_err(),
        "nothing published for other services' slices"
    );
    // Every request carried the token and asked for this service's slices in its namespace.
    let requests =
        server.requests_for("/apis/discovery.k8s.io/v1/namespaces/telemetry/endpointslices");
    assert!(requests.iter().any(|r| r.is_watch()), "{requests:?}");
    assert!(requests.iter().all(|r| r.authorized
        && r.query.get("labelSelector").map(String::as_str)
            == Some("kubernetes.io/service-name=gateway")));
    task.abort();
}

#[tokio::test]
async fn a_watch_that_cannot_resume_lists_again_and_forgets_what_went_while_it_was_away() {
    let server = FakeApiServer::start_default().await;
    server.apply(&slice(
        "telemetry",
        "gateway",
        "gateway-a",
        vec![
            ep("10.0.0.1", Some(true), None),
            ep("10.0.0.2", Some(true), None),
        ],
    ));
    server.apply(&slice(
        "telemetry",
        "gateway",
        "gateway-b",
        vec![ep("10.0.0.3", Some(true), None)],
    ));
    let env = environment(&server, Some("telemetry"));
    // No namespace in `service`: the pod's own, from the service account mount.
    let svc = ServiceEndpoints::new("gateway", vec![4317], false, &env).unwrap();
    assert_eq!(svc.namespace, "telemetry");
    let (mut rx, task) = watch(&server, &env, svc).await;
    assert_eq!(
        next(&mut rx).await.unwrap(),
        strings(&["10.0.0.1:4317", "10.0.0.2:4317", "10.0.0.3:4317"])
    );
    // Down: requests fail (published as errors: the exporter keeps its backends). Meanwhile
    // a slice goes and the history is forgotten, so the watch cannot resume: 410, a new list.
    server.stop();
    assert!(
        next(&mut rx).await.is_err(),
        "a failed watch is a failed resolution"
    );
    assert!(server.delete::<EndpointSlice>(Some("telemetry"), "gateway-b"));
    server.apply(&slice(
        "telemetry",
        "gateway",
        "gateway-a",
        vec![
            ep("10.0.0.1", Some(true), None),
            ep("10.0.0.4", Some(true), None),
        ],
    ));
    server.expire_history();
    server.start().await.unwrap();
    assert_eq!(
        next_ok(&mut rx).await,
        strings(&["10.0.0.1:4317", "10.0.0.4:4317"]),
        "the new list replaces the old view whole: the deleted slice is gone"
    );
    task.abort();
}

#[tokio::test]
async fn return_hostnames_gives_the_collectors_names_and_an_endpoint_without_one_fails() {
    let server = FakeApiServer::start_default().await;
    server.apply(&slice(
        "telemetry",
        "gateway",
        "gateway-a",
        vec![
            ep("10.0.0.1", Some(true), Some("gateway-0")),
            ep("10.0.0.2", Some(true), Some("gateway-1")),
            ep("10.0.0.3", Some(false), Some("gateway-2")),
        ],
    ));
    let env = environment(&server, None);
    let svc = ServiceEndpoints::new("gateway.telemetry", vec![4317], true, &env).unwrap();
    let (mut rx, task) = watch(&server, &env, svc).await;
    assert_eq!(
        next(&mut rx).await.unwrap(),
        strings(&[
            "gateway-0.gateway.telemetry:4317",
            "gateway-1.gateway.telemetry:4317"
        ])
    );
    server.apply(&slice(
        "telemetry",
        "gateway",
        "gateway-b",
        vec![ep("10.0.0.5", Some(true), None)],
    ));
    let err = next(&mut rx).await.unwrap_err();
    assert!(err.contains("has no hostname"), "{err}");
    task.abort();
}

#[test]
fn service_names_and_namespaces_as_the_collector_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let env = |sa: &Path| Environment {
        vars: Arc::new(|_| None),
        service_account_dir: sa.to_path_buf(),
    };
    let none = env(&dir.path().join("absent"));
    let s = ServiceEndpoints::new("gateway", vec![], false, &none).unwrap();
    assert_eq!(
        (s.name.as_str(), s.namespace.as_str()),
        ("gateway", "default")
    );
    let s = ServiceEndpoints::new("gateway.telemetry", vec![], false, &none).unwrap();
    assert_eq!(s.namespace, "telemetry");
    std::fs::write(dir.path().join("namespace"), "observability").unwrap();
    let s = ServiceEndpoints::new("gateway", vec![], false, &env(dir.path())).unwrap();
    assert_eq!(s.namespace, "observability");
    let e = ServiceEndpoints::new("gateway.telemetry.svc.cluster.local", vec![], false, &none)
        .unwrap_err();
    assert!(e.contains("not a valid Kubernetes namespace"), "{e}");
    assert!(ServiceEndpoints::new("Gateway", vec![], false, &none).is_err());

    // No ports: bare addresses (the exporter adds its default port).
    let s = ServiceEndpoints::new("gateway.telemetry", vec![], false, &none).unwrap();
    let one = slice(
        "telemetry",
        "gateway",
        "a",
        vec![ep("10.0.0.1", None, None)],
    );
    assert_eq!(s.backends([&one]).unwrap(), strings(&["10.0.0.1"]));
}
