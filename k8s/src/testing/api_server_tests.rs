//! The fake API server against kube-rs's own `watcher`, unmodified: the proof that it speaks
//! the list + watch protocol a real client expects.

use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, PodSpec};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::ListParams;
use kube::runtime::watcher::{self, Event};
use tokio_stream::{Stream, StreamExt};

use super::*;

fn pod(name: &str, node: &str, labels: &[(&str, &str)]) -> Pod {
    let mut p = Pod::default();
    p.metadata.name = Some(name.into());
    p.metadata.namespace = Some("default".into());
    p.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    p.spec = Some(PodSpec {
        node_name: Some(node.into()),
        ..Default::default()
    });
    p
}

/// A short description of a watcher event: `init`, `+name` (init apply), `apply name`,
/// `delete name`, `done`, `error`.
fn describe(e: &Result<Event<Pod>, watcher::Error>) -> String {
    match e {
        Ok(Event::Init) => "init".into(),
        Ok(Event::InitApply(p)) => format!("+{}", p.metadata.name.as_deref().unwrap_or("")),
        Ok(Event::InitDone) => "done".into(),
        Ok(Event::Apply(p)) => format!("apply {}", p.metadata.name.as_deref().unwrap_or("")),
        Ok(Event::Delete(p)) => format!("delete {}", p.metadata.name.as_deref().unwrap_or("")),
        Err(_) => "error".into(),
    }
}

async fn next_n(
    stream: &mut (impl Stream<Item = Result<Event<Pod>, watcher::Error>> + Unpin),
    n: usize,
) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        let e = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("an event within 10 s")
            .expect("the watcher never ends");
        out.push(describe(&e));
    }
    out
}

#[tokio::test]
async fn kube_watcher_lists_pages_then_watches_with_a_field_selector() {
    let server = FakeApiServer::start_default().await;
    for i in 0..5 {
        server.apply(&pod(&format!("a{i}"), "n1", &[]));
    }
    server.apply(&pod("other", "n2", &[]));
    let api: Api<Pod> = Api::all(server.client().await);
    let config = watcher::Config::default()
        .fields("spec.nodeName=n1")
        .page_size(2);
    let mut w = Box::pin(watcher::watcher(api, config));
    assert_eq!(
        next_n(&mut w, 7).await,
        ["init", "+a0", "+a1", "+a2", "+a3", "+a4", "done"]
    );
    server.apply(&pod("a5", "n1", &[]));
    server.apply(&pod("not-mine", "n2", &[]));
    let mut changed = pod("a0", "n1", &[("v", "2")]);
    changed.metadata.uid = None;
    server.apply(&changed);
    server.delete::<Pod>(Some("default"), "a1");
    // A pod moved off the node leaves the selection: a delete for this watch.
    server.apply(&pod("a2", "n3", &[]));
    assert_eq!(
        next_n(&mut w, 4).await,
        ["apply a5", "apply a0", "delete a1", "delete a2"]
    );
    let reqs = server.requests_for("/api/v1/pods");
    let lists: Vec<_> = reqs.iter().filter(|r| !r.is_watch()).collect();
    assert_eq!(lists.len(), 3, "three pages of 2: {lists:?}");
    assert!(lists[1].query.contains_key("continue"));
    assert!(reqs.iter().all(|r| r.authorized
        && r.query.get("fieldSelector").map(String::as_str) == Some("spec.nodeName=n1")));
    let watch = reqs.iter().find(|r| r.is_watch()).expect("a watch request");
    assert_eq!(
        watch.query.get("allowWatchBookmarks").map(String::as_str),
        Some("true")
    );
}

/// Waits until `n` watch requests for pods have been made.
async fn watches_made(server: &FakeApiServer, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while server
        .requests_for("/api/v1/pods")
        .iter()
        .filter(|r| r.is_watch())
        .count()
        < n
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no watch request {n}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The watcher polled by a task of its own (it only makes requests while polled), its
/// events described into a channel.
fn spawn_watcher(api: Api<Pod>, config: watcher::Config) -> tokio::sync::mpsc::Receiver<String> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        let mut w = Box::pin(watcher::watcher(api, config));
        while let Some(e) = w.next().await {
            if tx.send(describe(&e)).await.is_err() {
                return;
            }
        }
    });
    rx
}

async fn recv_n(rx: &mut tokio::sync::mpsc::Receiver<String>, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(
            tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("an event within 10 s")
                .expect("the watcher never ends"),
        );
    }
    out
}

#[tokio::test]
async fn a_dropped_watch_resumes_and_an_expired_one_relists() {
    let server = FakeApiServer::start_default().await;
    server.apply(&pod("p1", "n1", &[]));
    let api: Api<Pod> = Api::all(server.client().await);
    let mut w = spawn_watcher(api, watcher::Config::default());
    assert_eq!(recv_n(&mut w, 3).await, ["init", "+p1", "done"]);
    watches_made(&server, 1).await;

    // Dropped: the watcher re-watches from its last version; no re-list, nothing missed.
    server.drop_watches();
    watches_made(&server, 2).await;
    server.apply(&pod("p2", "n1", &[]));
    assert_eq!(recv_n(&mut w, 1).await, ["apply p2"]);
    let resumed = server
        .requests_for("/api/v1/pods")
        .into_iter()
        .filter(|r| r.is_watch())
        .nth(1)
        .expect("a second watch");
    assert!(
        resumed
            .query
            .get("resourceVersion")
            .is_some_and(|v| v != "0"),
        "resumed from a version: {resumed:?}"
    );

    // Expired: the resumed watch gets 410 and the watcher lists again; a pod deleted while
    // the history was lost is simply absent from the new list.
    server.delete::<Pod>(Some("default"), "p1");
    server.expire_history();
    server.apply(&pod("p3", "n1", &[]));
    let events = recv_n(&mut w, 5).await;
    let relist_at = events.iter().position(|e| e == "init");
    assert!(
        relist_at.is_some() && events.contains(&"error".to_string()),
        "a 410 error then a re-list: {events:?}"
    );
    let tail: Vec<&str> = events[relist_at.unwrap_or(0)..]
        .iter()
        .map(String::as_str)
        .collect();
    assert!(
        tail.starts_with(&["init", "+p2", "+p3"]),
        "the new list has p2 and p3, not p1: {events:?}"
    );
}

#[tokio::test]
async fn streaming_lists_end_with_the_initial_events_bookmark() {
    let server = FakeApiServer::start_default().await;
    server.apply(&pod("s1", "n1", &[("app", "web")]));
    server.apply(&pod("s2", "n1", &[("app", "db")]));
    let api: Api<Pod> = Api::all(server.client().await);
    let config = watcher::Config::default()
        .streaming_lists()
        .labels("app in (web,cache)");
    let mut w = Box::pin(watcher::watcher(api, config));
    assert_eq!(next_n(&mut w, 3).await, ["init", "+s1", "done"]);
    server.apply(&pod("s3", "n1", &[("app", "cache")]));
    assert_eq!(next_n(&mut w, 1).await, ["apply s3"]);
}

#[tokio::test]
async fn a_wrong_token_is_refused_and_any_resource_type_is_served() {
    let server = FakeApiServer::start_default().await;
    let mut rs = ReplicaSet::default();
    rs.metadata.name = Some("web-1".into());
    rs.metadata.namespace = Some("shop".into());
    server.apply(&rs);
    let mut slice = EndpointSlice::default();
    slice.metadata.name = Some("gateway-abc".into());
    slice.metadata.namespace = Some("telemetry".into());
    slice.address_type = "IPv4".into();
    server.apply(&slice);

    let client = server.client().await;
    let rss: Vec<ReplicaSet> = Api::namespaced(client.clone(), "shop")
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert_eq!(rss[0].metadata.name.as_deref(), Some("web-1"));
    assert!(rss[0].metadata.resource_version.is_some());
    let slices: Vec<EndpointSlice> = Api::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert_eq!(slices.len(), 1);
    let none: Vec<ReplicaSet> = Api::namespaced(client, "elsewhere")
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert!(none.is_empty());

    let text = std::fs::read_to_string(server.kubeconfig())
        .unwrap()
        .replace(server.token(), "wrong");
    let bad = server.dir().join("bad-kubeconfig");
    std::fs::write(&bad, text).unwrap();
    let kubeconfig = kube::config::Kubeconfig::read_from(&bad).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let api: Api<Pod> = Api::all(kube::Client::try_from(config).unwrap());
    let err = api.list(&ListParams::default()).await.unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 401),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_server_that_goes_down_and_comes_back_is_watched_again() {
    let server = FakeApiServer::start_default().await;
    server.apply(&pod("d1", "n1", &[]));
    let api: Api<Pod> = Api::all(server.client().await);
    let mut w = Box::pin(watcher::watcher(api, watcher::Config::default()));
    assert_eq!(next_n(&mut w, 3).await, ["init", "+d1", "done"]);
    server.stop();
    // The cut watch ends; re-watching fails while the server is down.
    assert_eq!(next_n(&mut w, 1).await, ["error"]);
    server.start().await.unwrap();
    server.apply(&pod("d2", "n1", &[]));
    // Errors until a retry reaches it, then the watch resumes from its version.
    let mut seen = Vec::new();
    while !seen.iter().any(|e: &String| e == "apply d2") {
        seen.extend(next_n(&mut w, 1).await);
        assert!(seen.len() < 50, "{seen:?}");
    }
}

#[test]
fn objects_load_from_yaml_lists_and_plurals_follow_the_api() {
    let text = "kind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: a, namespace: default}\n- apiVersion: apps/v1\n  kind: ReplicaSet\n  metadata: {name: r, namespace: default}\n";
    let objects = objects_from_text(text).unwrap();
    assert_eq!(objects.len(), 2);
    assert_eq!(plural_of("Pod"), "pods");
    assert_eq!(plural_of("EndpointSlice"), "endpointslices");
    assert_eq!(plural_of("Endpoints"), "endpoints");
    assert_eq!(plural_of("Ingress"), "ingresses");
    assert_eq!(plural_of("NetworkPolicy"), "networkpolicies");
}
