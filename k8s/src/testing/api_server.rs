//! A fake Kubernetes API server for tests: the real HTTP protocol of list and watch, served
//! over TLS with bearer-token auth on a free loopback port, with objects that tests add, change
//! and delete while the code under test watches them.
//!
//! What it speaks (what kube-rs's `watcher`, client-go's informers and `kubectl get -w` use):
//!
//! - `GET /api/v1/{plural}`, `/api/v1/namespaces/{ns}/{plural}`, and the same under
//!   `/apis/{group}/{version}/`: a list (`{"kind":"PodList","metadata":{"resourceVersion":..},
//!   "items":[..]}`), paginated with `limit` and `continue`; `.../{plural}/{name}` gets one.
//! - `?watch=1&resourceVersion=N`: a chunked stream of JSON lines, `{"type":"ADDED"|"MODIFIED"|
//!   "DELETED"|"BOOKMARK"|"ERROR","object":{..}}`, with every change after N, then live ones.
//!   No `resourceVersion` (or `0`): the current objects as `ADDED` first. `allowWatchBookmarks`
//!   gets a `BOOKMARK` every [`FakeApiServerOptions::bookmark_interval`];
//!   `sendInitialEvents=true` (streaming lists) ends the initial events with the
//!   `k8s.io/initial-events-end` bookmark. `timeoutSeconds` ends the stream.
//! - `resourceVersion` is one counter for all objects (as etcd's revision). Changes are kept in
//!   a bounded history ([`FakeApiServerOptions::history_limit`]); a watch from a version older
//!   than the history gets `200` and one `ERROR` event with a `410 Expired` status (what the
//!   real server does), and a `continue` token that old gets `410 Gone`: both make a client
//!   re-list.
//! - `fieldSelector` (`a.b=v`, `a.b==v`, `a.b!=v`, comma-joined; any field path of the object,
//!   e.g. `spec.nodeName`, `metadata.name`) and `labelSelector` (`k=v`, `k!=v`, `k`, `!k`,
//!   `k in (a,b)`, `k notin (a,b)`). An object changed into or out of a watch's selection
//!   arrives as `ADDED` / `DELETED`, as from the real server.
//! - `GET /version`: an `Info` with [`FakeApiServerOptions::git_version`].
//! - Every request needs `Authorization: Bearer <token>` (else `401` with a `Status`).
//!
//! Test knobs: [`FakeApiServer::drop_watches`] ends every open watch (clients resume from their
//! last version), [`FakeApiServer::expire_history`] forgets the history and drops watches
//! (clients get `410` and re-list), [`FakeApiServer::stop`] / [`FakeApiServer::start`] take the
//! server down (connections cut, port closed) and bring it back on the same address, and
//! [`FakeApiServer::requests`] records what clients asked for.
//!
//! Objects are stored as JSON, so any `k8s-openapi` resource type works ([`FakeApiServer::apply`]
//! takes the typed object; [`FakeApiServer::apply_json`] a JSON/YAML one, for the standalone
//! `sluice-fake-apiserver` binary).
//!
//! ```no_run
//! # async fn demo() {
//! use k8s_openapi::api::core::v1::Pod;
//! use sluice_k8s::testing::FakeApiServer;
//! let server = FakeApiServer::start_default().await;
//! let mut pod = Pod::default();
//! pod.metadata.name = Some("web-1".into());
//! pod.metadata.namespace = Some("default".into());
//! server.apply(&pod);
//! // kube-rs, configured from the kubeconfig file the server wrote:
//! let client = server.client().await;
//! # }
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};
use sluice_tls::TlsServerSetting;
use sluice_tls::testing::TestPki;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;

/// How the fake server behaves.
#[derive(Clone, Debug)]
pub struct FakeApiServerOptions {
    /// The bearer token clients must send.
    pub token: String,
    /// Changes kept for watches to resume from; older versions get `410`.
    pub history_limit: usize,
    /// How often a watch that asked for bookmarks gets one.
    pub bookmark_interval: Duration,
    /// The address to bind (port 0: a free one).
    pub bind: SocketAddr,
    /// What `GET /version` answers as `gitVersion` (the eks detector reads it).
    pub git_version: String,
}

impl Default for FakeApiServerOptions {
    fn default() -> Self {
        FakeApiServerOptions {
            token: "sluice-test-token".into(),
            history_limit: 100_000,
            bookmark_interval: Duration::from_secs(1),
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            git_version: "v1.37.0".into(),
        }
    }
}

/// One request as the server saw it, for assertions (`watch` requests included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub authorized: bool,
}

impl RecordedRequest {
    pub fn is_watch(&self) -> bool {
        matches!(
            self.query.get("watch").map(String::as_str),
            Some("1" | "true")
        )
    }
}

/// A running (or stopped) fake API server. Dropping it stops it.
pub struct FakeApiServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
    pki: TestPki,
    kubeconfig: PathBuf,
    running: Mutex<Option<Running>>,
}

struct Running {
    accept: AbortHandle,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
}

struct Shared {
    store: Mutex<Store>,
    /// The latest resource version, sent on every change (watch streams wait on it).
    changed: watch::Sender<u64>,
    /// Bumped to end every open watch stream.
    drops: watch::Sender<u64>,
    options: FakeApiServerOptions,
    requests: Mutex<Vec<RecordedRequest>>,
}

/// The objects and their change history.
#[derive(Default)]
struct Store {
    rv: u64,
    /// resource (`api/v1/pods`, `apis/apps/v1/replicasets`) -> (namespace, name) -> object
    objects: BTreeMap<String, BTreeMap<(String, String), Arc<Value>>>,
    /// resource -> list kind, learnt from the objects applied
    list_kinds: BTreeMap<String, String>,
    history: VecDeque<Change>,
    /// Changes up to this version fell out of the bounded history: a watch (or a stream that
    /// lags) before it cannot be caught up and gets `410`.
    pruned_through: u64,
    /// [`FakeApiServer::expire_history`] was called at this version: watch requests resuming
    /// from it or earlier, and `continue` tokens that old, get `410`.
    expired_at: u64,
}

impl Store {
    /// Whether a watch request resuming from `rv`, or a `continue` token made at `rv`, is too
    /// old to serve.
    fn too_old(&self, rv: u64) -> bool {
        rv != 0 && (rv <= self.expired_at || rv < self.pruned_through)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

struct Change {
    rv: u64,
    resource: String,
    kind: ChangeKind,
    /// The object after the change (for a delete: its last state, at the delete's version).
    object: Arc<Value>,
    /// The object before (modifications), to tell selection changes.
    previous: Option<Arc<Value>>,
}

/// What went wrong applying an object given as JSON or YAML.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("object has no {0}")]
    Missing(&'static str),
    #[error("cannot read objects: {0}")]
    Parse(String),
}

impl FakeApiServer {
    /// Starts a server with default options on a free loopback port.
    pub async fn start_default() -> FakeApiServer {
        FakeApiServer::start_with(FakeApiServerOptions::default())
            .await
            .expect("fake API server starts")
    }

    /// Starts a server: makes certificates (a CA and a server certificate for `127.0.0.1` and
    /// `localhost`), binds, writes a kubeconfig file pointing at it.
    pub async fn start_with(options: FakeApiServerOptions) -> std::io::Result<FakeApiServer> {
        let pki = TestPki::new();
        let tls = TlsServerSetting {
            cert_file: Some(pki.server_cert.display().to_string()),
            key_file: Some(pki.server_key.display().to_string()),
            ..Default::default()
        }
        .load(sluice_tls::ALPN_HTTP)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
        let listener = TcpListener::bind(options.bind).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::default()),
            changed: watch::channel(0).0,
            drops: watch::channel(0).0,
            options,
            requests: Mutex::new(Vec::new()),
        });
        let kubeconfig = pki.dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            kubeconfig_text(addr, &pki.ca_cert, &shared.options.token),
        )?;
        let server = FakeApiServer {
            shared,
            addr,
            tls,
            pki,
            kubeconfig,
            running: Mutex::new(None),
        };
        server.serve(listener);
        Ok(server)
    }

    fn serve(&self, listener: TcpListener) {
        let connections: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let mut accepted = sluice_tls::accept_tls(listener, self.tls.clone(), |_| {});
        let shared = self.shared.clone();
        let conns = connections.clone();
        let accept = tokio::spawn(async move {
            while let Some((stream, _peer)) = accepted.recv().await {
                let shared = shared.clone();
                let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                    let shared = shared.clone();
                    async move {
                        let req = req.map(Body::new);
                        Ok::<_, Infallible>(handle(shared, req).await)
                    }
                });
                let task = tokio::spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
                });
                let mut conns = conns.lock().unwrap_or_else(|e| e.into_inner());
                conns.retain(|c| !c.is_finished());
                conns.push(task.abort_handle());
            }
        })
        .abort_handle();
        *self.running.lock().unwrap_or_else(|e| e.into_inner()) = Some(Running {
            accept,
            connections,
        });
    }

    /// The server's address (`127.0.0.1:port`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The bearer token clients must send.
    pub fn token(&self) -> &str {
        &self.shared.options.token
    }

    /// The CA certificate (PEM file) that signed the server's certificate.
    pub fn ca_file(&self) -> &Path {
        &self.pki.ca_cert
    }

    /// A kubeconfig file for this server (context `fake`, token auth, the CA as
    /// `certificate-authority`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The directory of this server's files (kubeconfig, certificates); removed on drop.
    pub fn dir(&self) -> &Path {
        self.pki.dir.path()
    }

    /// Writes what a pod's service account mount holds (`token`, `ca.crt`, `namespace`) into
    /// `dir`, for in-cluster (`serviceAccount`) auth against this server.
    pub fn write_service_account(&self, dir: &Path, namespace: &str) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("token"), self.token())?;
        std::fs::copy(&self.pki.ca_cert, dir.join("ca.crt"))?;
        std::fs::write(dir.join("namespace"), namespace)
    }

    /// A kube-rs client configured from [`FakeApiServer::kubeconfig`].
    pub async fn client(&self) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("kube config");
        kube::Client::try_from(config).expect("kube client")
    }

    /// Adds or replaces a typed object (any `k8s-openapi` resource); returns its new
    /// `resourceVersion`. A missing `uid` is filled in.
    pub fn apply<K>(&self, object: &K) -> u64
    where
        K: k8s_openapi::Resource + k8s_openapi::Metadata<Ty = ObjectMeta> + serde::Serialize,
    {
        let value = serde_json::to_value(object).expect("k8s-openapi objects serialize");
        let resource = resource_path(K::GROUP, K::VERSION, K::URL_PATH_SEGMENT);
        self.shared
            .apply(resource, format!("{}List", K::KIND), value)
    }

    /// Deletes a typed object by namespace (`None` for cluster-scoped) and name; returns
    /// whether it existed.
    pub fn delete<K: k8s_openapi::Resource>(&self, namespace: Option<&str>, name: &str) -> bool {
        let resource = resource_path(K::GROUP, K::VERSION, K::URL_PATH_SEGMENT);
        self.shared.delete(&resource, namespace.unwrap_or(""), name)
    }

    /// Adds or replaces an object given as JSON (`apiVersion`, `kind`, `metadata.name`
    /// required); the resource's URL segment is the kind's plural.
    pub fn apply_json(&self, object: Value) -> Result<u64, ObjectError> {
        let (resource, list_kind) = resource_of_json(&object)?;
        Ok(self.shared.apply(resource, list_kind, object))
    }

    /// Deletes an object named by `apiVersion`, `kind`, `metadata.namespace` and
    /// `metadata.name` of `object`.
    pub fn delete_json(&self, object: &Value) -> Result<bool, ObjectError> {
        let (resource, _) = resource_of_json(object)?;
        let ns = object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("");
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .ok_or(ObjectError::Missing("metadata.name"))?;
        Ok(self.shared.delete(&resource, ns, name))
    }

    /// The current resource version (of the last change).
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }

    /// Ends every open watch stream cleanly (clients resume from their last version).
    pub fn drop_watches(&self) {
        self.shared.drops.send_modify(|g| *g += 1);
    }

    /// Forgets the change history: every watch resuming from a version up to now gets
    /// `410 Expired`, every `continue` token `410 Gone`; open watches are dropped so their
    /// clients find out (and re-list).
    pub fn expire_history(&self) {
        {
            let mut store = self.shared.lock();
            store.history.clear();
            store.expired_at = store.rv;
        }
        self.drop_watches();
    }

    /// Takes the server down: the port is closed and every connection cut.
    pub fn stop(&self) {
        if let Some(r) = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            r.accept.abort();
            for c in r
                .connections
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .drain(..)
            {
                c.abort();
            }
        }
    }

    /// Brings a stopped server back on the same address, with its objects and history.
    pub async fn start(&self) -> std::io::Result<()> {
        if self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
        {
            return Ok(());
        }
        // The old listener closes asynchronously (its task was aborted): retry briefly.
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if tries < 50 => {
                    tries += 1;
                    tracing::debug!(error = %e, "rebinding the fake API server");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e),
            }
        };
        self.serve(listener);
        Ok(())
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The requests for one resource path (`/api/v1/pods`, ...), lists and watches.
    pub fn requests_for(&self, path: &str) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn apply(&self, resource: String, list_kind: String, mut object: Value) -> u64 {
        let rv = {
            let mut store = self.lock();
            store.rv += 1;
            let rv = store.rv;
            let meta = object
                .as_object_mut()
                .map(|o| o.entry("metadata").or_insert_with(|| json!({})));
            if let Some(Value::Object(meta)) = meta {
                meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
                meta.entry("uid")
                    .or_insert_with(|| Value::String(format!("00000000-0000-4000-8000-{rv:012}")));
            }
            let key = object_key(&object);
            store.list_kinds.insert(resource.clone(), list_kind);
            let object = Arc::new(object);
            let previous = store
                .objects
                .entry(resource.clone())
                .or_default()
                .insert(key, object.clone());
            let kind = if previous.is_some() {
                ChangeKind::Modified
            } else {
                ChangeKind::Added
            };
            store.record(
                Change {
                    rv,
                    resource,
                    kind,
                    object,
                    previous,
                },
                self.options.history_limit,
            );
            rv
        };
        self.changed.send_replace(rv);
        rv
    }

    fn delete(&self, resource: &str, namespace: &str, name: &str) -> bool {
        let rv = {
            let mut store = self.lock();
            let Some(old) = store
                .objects
                .get_mut(resource)
                .and_then(|m| m.remove(&(namespace.to_string(), name.to_string())))
            else {
                return false;
            };
            store.rv += 1;
            let rv = store.rv;
            let mut last = (*old).clone();
            if let Some(meta) = last.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
            }
            store.record(
                Change {
                    rv,
                    resource: resource.to_string(),
                    kind: ChangeKind::Deleted,
                    object: Arc::new(last),
                    previous: Some(old),
                },
                self.options.history_limit,
            );
            rv
        };
        self.changed.send_replace(rv);
        true
    }

    fn record_request(&self, path: &str, query: &BTreeMap<String, String>, authorized: bool) {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(RecordedRequest {
                path: path.to_string(),
                query: query.clone(),
                authorized,
            });
    }
}

impl Store {
    fn record(&mut self, change: Change, limit: usize) {
        self.history.push_back(change);
        while self.history.len() > limit.max(1) {
            if let Some(old) = self.history.pop_front() {
                self.pruned_through = self.pruned_through.max(old.rv);
            }
        }
    }
}

fn resource_path(group: &str, version: &str, plural: &str) -> String {
    if group.is_empty() {
        format!("api/{version}/{plural}")
    } else {
        format!("apis/{group}/{version}/{plural}")
    }
}

fn resource_of_json(object: &Value) -> Result<(String, String), ObjectError> {
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .ok_or(ObjectError::Missing("apiVersion"))?;
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .ok_or(ObjectError::Missing("kind"))?;
    if object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .is_none()
    {
        return Err(ObjectError::Missing("metadata.name"));
    }
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    Ok((
        resource_path(group, version, &plural_of(kind)),
        format!("{kind}List"),
    ))
}

/// The URL segment of a kind, as the API names its resources (`Pod` -> `pods`,
/// `EndpointSlice` -> `endpointslices`, `Endpoints` -> `endpoints`, `Ingress` -> `ingresses`,
/// `NetworkPolicy` -> `networkpolicies`).
pub fn plural_of(kind: &str) -> String {
    let k = kind.to_ascii_lowercase();
    if k == "endpoints" {
        k
    } else if k.ends_with('s') {
        format!("{k}es")
    } else if let Some(stem) = k.strip_suffix('y') {
        format!("{stem}ies")
    } else {
        format!("{k}s")
    }
}

fn object_key(object: &Value) -> (String, String) {
    let s = |p: &str| {
        object
            .pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    (s("/metadata/namespace"), s("/metadata/name"))
}

fn kubeconfig_text(addr: SocketAddr, ca: &Path, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: https://{addr}\n    certificate-authority: {ca}\nusers:\n- name: fake\n  user:\n    token: {token}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\ncurrent-context: fake\n",
        ca = ca.display()
    )
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

/// What a request path names.
struct Target {
    resource: String,
    namespace: Option<String>,
    name: Option<String>,
}

/// `/api/v1/...` or `/apis/{group}/{version}/...` -> the resource, namespace and name.
fn parse_path(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (prefix, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => (format!("api/{v}"), rest),
        ["apis", g, v, rest @ ..] => (format!("apis/{g}/{v}"), rest),
        _ => return None,
    };
    let (namespace, plural, name) = match rest {
        [plural] => (None, *plural, None),
        ["namespaces", ns, plural] => (Some(*ns), *plural, None),
        ["namespaces", ns, plural, name] => (Some(*ns), *plural, Some(*name)),
        [plural, name] => (None, *plural, Some(*name)),
        _ => return None,
    };
    Some(Target {
        resource: format!("{prefix}/{plural}"),
        namespace: namespace.map(str::to_string),
        name: name.map(str::to_string),
    })
}

fn parse_query(query: Option<&str>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(percent_decode(k), percent_decode(v));
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
                continue;
            }
            (b'+', _) => out.push(b' '),
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

/// `GET /version`: an `Info` as the server reports its build.
fn version_info(git_version: &str) -> Value {
    let (major, minor) = git_version
        .trim_start_matches('v')
        .split(['.', '-', '+'])
        .fold((None, None), |acc, part| match acc {
            (None, _) => (Some(part), None),
            (m, None) => (m, Some(part)),
            done => done,
        });
    json!({
        "major": major.unwrap_or("1"),
        "minor": minor.unwrap_or("0"),
        "gitVersion": git_version,
        "gitCommit": "0123456789abcdef0123456789abcdef01234567",
        "gitTreeState": "clean",
        "buildDate": "2026-10-01T00:00:00Z",
        "goVersion": "go1.25.3",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

fn json_response(code: u16, body: &Value) -> Response {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap_or_default()
}

async fn handle(shared: Arc<Shared>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let query = parse_query(req.uri().query());
    let expected = format!("Bearer {}", shared.options.token);
    let authorized = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(expected.as_str());
    shared.record_request(&path, &query, authorized);
    if !authorized {
        return json_response(401, &status(401, "Unauthorized", "Unauthorized"));
    }
    if req.method() != http::Method::GET {
        return json_response(
            405,
            &status(405, "MethodNotAllowed", "the fake API server only reads"),
        );
    }
    if path == "/version" {
        return json_response(200, &version_info(&shared.options.git_version));
    }
    let Some(target) = parse_path(&path) else {
        return json_response(
            404,
            &status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ),
        );
    };
    let selectors = match Selectors::parse(&query) {
        Ok(s) => s,
        Err(e) => return json_response(400, &status(400, "BadRequest", &e)),
    };
    let watching = matches!(query.get("watch").map(String::as_str), Some("1" | "true"));
    if watching {
        return watch_response(shared, target, selectors, &query);
    }
    if let Some(name) = &target.name {
        let store = shared.lock();
        let ns = target.namespace.clone().unwrap_or_default();
        return match store
            .objects
            .get(&target.resource)
            .and_then(|m| m.get(&(ns, name.clone())))
        {
            Some(o) => json_response(200, o),
            None => json_response(
                404,
                &status(
                    404,
                    "NotFound",
                    &format!("{} \"{name}\" not found", target.resource),
                ),
            ),
        };
    }
    list_response(&shared, &target, &selectors, &query)
}

fn list_response(
    shared: &Shared,
    target: &Target,
    selectors: &Selectors,
    query: &BTreeMap<String, String>,
) -> Response {
    let limit = query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let store = shared.lock();
    // continue = "<rv>/<namespace>/<name>" of the last object of the previous page
    let (rv, after) = match query.get("continue").filter(|c| !c.is_empty()) {
        None => (store.rv, None),
        Some(token) => {
            let mut parts = token.splitn(3, '/');
            let rv = parts.next().and_then(|r| r.parse::<u64>().ok());
            let (Some(rv), Some(ns), Some(name)) = (rv, parts.next(), parts.next()) else {
                return json_response(400, &status(400, "BadRequest", "invalid continue token"));
            };
            if store.too_old(rv) {
                return json_response(
                    410,
                    &status(
                        410,
                        "Expired",
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                    ),
                );
            }
            (rv, Some((ns.to_string(), name.to_string())))
        }
    };
    let mut items = Vec::new();
    let mut next = None;
    if let Some(objects) = store.objects.get(&target.resource) {
        let range = match &after {
            Some(k) => objects.range((
                std::ops::Bound::Excluded(k.clone()),
                std::ops::Bound::Unbounded,
            )),
            None => objects.range::<(String, String), _>(..),
        };
        for (key, o) in range {
            if target.namespace.as_ref().is_some_and(|ns| *ns != key.0) || !selectors.matches(o) {
                continue;
            }
            if limit.is_some_and(|l| items.len() == l) {
                let (ns, name) = items_last_key(&items);
                next = Some(format!("{rv}/{ns}/{name}"));
                break;
            }
            items.push(o.clone());
        }
    }
    let list_kind = store
        .list_kinds
        .get(&target.resource)
        .cloned()
        .unwrap_or_else(|| "List".into());
    drop(store);
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if let Some(c) = next {
        metadata["continue"] = Value::String(c);
    }
    let api_version = target
        .resource
        .trim_start_matches("apis/")
        .trim_start_matches("api/")
        .rsplit_once('/')
        .map(|(av, _)| av.to_string())
        .unwrap_or_default();
    let items: Vec<&Value> = items.iter().map(|o| o.as_ref()).collect();
    json_response(
        200,
        &json!({"kind": list_kind, "apiVersion": api_version, "metadata": metadata, "items": items}),
    )
}

fn items_last_key(items: &[Arc<Value>]) -> (String, String) {
    items.last().map(|o| object_key(o)).unwrap_or_default()
}

fn watch_line(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn watch_response(
    shared: Arc<Shared>,
    target: Target,
    selectors: Selectors,
    query: &BTreeMap<String, String>,
) -> Response {
    let from: u64 = query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let bookmarks = query.get("allowWatchBookmarks").map(String::as_str) == Some("true");
    let initial_events = query.get("sendInitialEvents").map(String::as_str) == Some("true");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs);
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(1024);
    tokio::spawn(async move {
        stream_watch(
            shared,
            target,
            selectors,
            from,
            bookmarks,
            initial_events,
            timeout,
            tx,
        )
        .await;
    });
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(Body::from_stream(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .unwrap_or_default()
}

#[allow(clippy::too_many_arguments)]
async fn stream_watch(
    shared: Arc<Shared>,
    target: Target,
    selectors: Selectors,
    from: u64,
    bookmarks: bool,
    initial_events: bool,
    timeout: Option<Duration>,
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
) {
    let mut changed = shared.changed.subscribe();
    let mut drops = shared.drops.subscribe();
    drops.mark_unchanged();
    let in_namespace = |o: &Value| {
        target
            .namespace
            .as_ref()
            .is_none_or(|ns| object_key(o).0 == *ns)
    };
    let list_kind_object = |rv: u64, annotations: Option<Value>| {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if let Some(a) = annotations {
            meta["annotations"] = a;
        }
        json!({"kind": "Bookmark", "apiVersion": "v1", "metadata": meta})
    };
    // Where this stream is: every change up to `sent` has been considered.
    let mut sent = from;
    if shared.lock().too_old(from) {
        let msg = format!("too old resource version: {from} ({})", shared.lock().rv);
        let _ = tx
            .send(Ok(watch_line("ERROR", &status(410, "Expired", &msg))))
            .await;
        return;
    }
    if from == 0 {
        // No version: the current state as ADDED, then changes.
        let (lines, rv) = {
            let store = shared.lock();
            let lines: Vec<Bytes> = store
                .objects
                .get(&target.resource)
                .into_iter()
                .flat_map(|m| m.values())
                .filter(|o| in_namespace(o) && selectors.matches(o))
                .map(|o| watch_line("ADDED", o))
                .collect();
            (lines, store.rv)
        };
        for l in lines {
            if tx.send(Ok(l)).await.is_err() {
                return;
            }
        }
        sent = rv;
        if initial_events && bookmarks {
            let end = json!({"k8s.io/initial-events-end": "true"});
            if tx
                .send(Ok(watch_line("BOOKMARK", &list_kind_object(rv, Some(end)))))
                .await
                .is_err()
            {
                return;
            }
        }
    }
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let mut bookmark_tick = tokio::time::interval(shared.options.bookmark_interval);
    bookmark_tick.tick().await;
    loop {
        // Catch up with the history.
        let (lines, latest, gone) = {
            let store = shared.lock();
            if sent < store.pruned_through {
                (Vec::new(), store.rv, true)
            } else if sent > store.rv {
                // A version from the future (the server lost state): as the real server,
                // wait for it.
                (Vec::new(), sent, false)
            } else {
                let start = store.history.partition_point(|c| c.rv <= sent);
                let mut lines = Vec::new();
                for c in store.history.range(start..) {
                    if c.resource != target.resource || !in_namespace(&c.object) {
                        continue;
                    }
                    let now = selectors.matches(&c.object);
                    let before = c.previous.as_ref().is_some_and(|p| selectors.matches(p));
                    let kind = match c.kind {
                        ChangeKind::Added if now => "ADDED",
                        ChangeKind::Modified if now && before => "MODIFIED",
                        ChangeKind::Modified if now => "ADDED",
                        ChangeKind::Modified if before => "DELETED",
                        ChangeKind::Deleted if before => "DELETED",
                        _ => continue,
                    };
                    lines.push(watch_line(kind, &c.object));
                }
                (lines, store.rv.max(sent), false)
            }
        };
        if gone {
            let msg = format!("too old resource version: {sent} ({latest})");
            let _ = tx
                .send(Ok(watch_line("ERROR", &status(410, "Expired", &msg))))
                .await;
            return;
        }
        for l in lines {
            if tx.send(Ok(l)).await.is_err() {
                return;
            }
        }
        sent = latest;
        let until_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            // A drop wins over changes that arrive with it: they go to the resumed watch.
            biased;
            _ = drops.changed() => return,
            r = changed.changed() => if r.is_err() { return },
            _ = until_deadline => return,
            _ = tx.closed() => return,
            _ = bookmark_tick.tick(), if bookmarks => {
                let rv = shared.lock().rv.max(sent);
                let kind_object = list_kind_object(rv, None);
                if tx.send(Ok(watch_line("BOOKMARK", &kind_object))).await.is_err() {
                    return;
                }
                // Everything up to `rv` for this resource was already sent or is about to be
                // (the next loop reads the history from `sent`).
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Selectors
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Selectors {
    fields: Vec<(Vec<String>, bool, String)>,
    labels: Vec<LabelRequirement>,
}

#[derive(Debug)]
enum LabelRequirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

impl Selectors {
    fn parse(query: &BTreeMap<String, String>) -> Result<Selectors, String> {
        let mut s = Selectors::default();
        for term in query
            .get("fieldSelector")
            .map(String::as_str)
            .unwrap_or("")
            .split(',')
            .filter(|t| !t.trim().is_empty())
        {
            let (key, equal, value) = if let Some((k, v)) = term.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = term.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = term.split_once('=') {
                (k, true, v)
            } else {
                return Err(format!("invalid field selector term {term:?}"));
            };
            s.fields.push((
                key.trim().split('.').map(str::to_string).collect(),
                equal,
                value.trim().to_string(),
            ));
        }
        let labels = query.get("labelSelector").map(String::as_str).unwrap_or("");
        for term in split_outside_parens(labels) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            let req = if let Some(k) = term.strip_prefix('!') {
                LabelRequirement::NotExists(k.trim().to_string())
            } else if let Some((k, v)) = term.split_once("!=") {
                LabelRequirement::NotEquals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = term.split_once("==") {
                LabelRequirement::Equals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = term.split_once('=') {
                LabelRequirement::Equals(k.trim().into(), v.trim().into())
            } else if let Some((k, set)) = term.split_once(" notin ") {
                LabelRequirement::NotIn(k.trim().into(), parse_set(set)?)
            } else if let Some((k, set)) = term.split_once(" in ") {
                LabelRequirement::In(k.trim().into(), parse_set(set)?)
            } else {
                LabelRequirement::Exists(term.to_string())
            };
            s.labels.push(req);
        }
        Ok(s)
    }

    fn matches(&self, object: &Value) -> bool {
        let fields_ok = self.fields.iter().all(|(path, equal, want)| {
            let mut v = object;
            for p in path {
                v = match v.get(p) {
                    Some(x) => x,
                    None => &Value::Null,
                };
            }
            let got = match v {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (got == *want) == *equal
        });
        if !fields_ok {
            return false;
        }
        let labels = object.pointer("/metadata/labels");
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.labels.iter().all(|r| match r {
            LabelRequirement::Equals(k, v) => label(k) == Some(v.as_str()),
            LabelRequirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            LabelRequirement::Exists(k) => label(k).is_some(),
            LabelRequirement::NotExists(k) => label(k).is_none(),
            LabelRequirement::In(k, set) => label(k).is_some_and(|v| set.iter().any(|s| s == v)),
            LabelRequirement::NotIn(k, set) => label(k).is_none_or(|v| !set.iter().any(|s| s == v)),
        })
    }
}

fn split_outside_parens(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn parse_set(s: &str) -> Result<Vec<String>, String> {
    let inner = s
        .trim()
        .strip_prefix('(')
        .and_then(|x| x.strip_suffix(')'))
        .ok_or_else(|| format!("invalid label set {s:?}"))?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

// ---------------------------------------------------------------------------------------------
// Object files (the standalone binary)
// ---------------------------------------------------------------------------------------------

/// Objects from a JSON or YAML text: one object, a list of objects, or a `List`
/// (`{"items": [...]}`).
pub fn objects_from_text(text: &str) -> Result<Vec<Value>, ObjectError> {
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => serde_saphyr::from_str(text).map_err(|e| ObjectError::Parse(e.to_string()))?,
    };
    Ok(match value {
        Value::Array(items) => items,
        Value::Null => Vec::new(),
        v if is_list(&v) => v
            .get("items")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        v => vec![v],
    })
}

fn is_list(v: &Value) -> bool {
    v.get("kind")
        .and_then(Value::as_str)
        .is_none_or(|k| k.ends_with("List"))
        && v.get("items").is_some_and(Value::is_array)
}

#[cfg(test)]
#[path = "api_server_tests.rs"]
mod tests;
