//! The two Kubernetes API calls the eks detector makes, served the way the API server serves
//! them: HTTPS with a certificate from a test CA, `Authorization: Bearer <token>` required
//! (401 with a `Status` otherwise), `GET /version` (an `Info`) and `GET /api/v1/nodes/<name>`
//! (a `Node`, or a 404 `Status`), JSON from the `k8s-openapi` types. Also lays out the
//! service account directory (`token`, `ca.crt`) a pod would have, under a test root.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use k8s_openapi::api::core::v1::{Node, NodeSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::version::Info;
use sluice_tls::testing::TestPki;
use tokio::task::JoinHandle;

use super::eks::SERVICE_ACCOUNT_DIR;

pub const TOKEN: &str = "sluice-test-service-account-token";

#[derive(Default)]
struct Cluster {
    git_version: String,
    /// node name -> spec.providerID
    nodes: Vec<(String, String)>,
    /// Paths asked, with whether the token was right.
    seen: Vec<(String, bool)>,
}

type Shared = Arc<Mutex<Cluster>>;

pub struct FakeApiServer {
    pub addr: SocketAddr,
    pub pki: TestPki,
    state: Shared,
    task: JoinHandle<()>,
}

impl FakeApiServer {
    pub async fn start(git_version: &str) -> FakeApiServer {
        let pki = TestPki::new();
        let setting = sluice_tls::TlsServerSetting {
            cert_file: Some(pki.server_cert.display().to_string()),
            key_file: Some(pki.server_key.display().to_string()),
            ..Default::default()
        };
        let tls = setting
            .load(sluice_tls::ALPN_HTTP)
            .expect("test certificates load");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let addr = listener.local_addr().expect("its address");
        let listener = sluice_tls::TlsListener::new(listener, tls, |_| {}).expect("TLS listener");
        let state: Shared = Arc::new(Mutex::new(Cluster {
            git_version: git_version.into(),
            ..Default::default()
        }));
        let app = Router::new()
            .route("/version", get(version))
            .route("/api/v1/nodes/{name}", get(node))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeApiServer {
            addr,
            pki,
            state,
            task,
        }
    }

    pub fn add_node(&self, name: &str, provider_id: &str) {
        self.lock().nodes.push((name.into(), provider_id.into()));
    }

    /// Paths requested, and whether each carried the right token.
    pub fn seen(&self) -> Vec<(String, bool)> {
        self.lock().seen.clone()
    }

    /// Writes `token` and `ca.crt` where a pod has them, under `root`.
    pub fn write_service_account(&self, root: &Path, token: &str) {
        let dir = root.join(SERVICE_ACCOUNT_DIR.trim_start_matches('/'));
        std::fs::create_dir_all(&dir).expect("service account dir");
        std::fs::write(dir.join("token"), token).expect("token");
        std::fs::copy(&self.pki.ca_cert, dir.join("ca.crt")).expect("ca.crt");
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cluster> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code.as_u16(),
    });
    (code, axum::Json(body)).into_response()
}

/// Records the request; `false` if it lacks the bearer token.
fn authorized(state: &Shared, headers: &HeaderMap, path: String) -> bool {
    let ok = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {TOKEN}"));
    state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .seen
        .push((path, ok));
    ok
}

async fn version(State(state): State<Shared>, headers: HeaderMap) -> Response {
    if !authorized(&state, &headers, "/version".into()) {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    }
    let git_version = state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .git_version
        .clone();
    let info = Info {
        major: "1".into(),
        minor: "30+".into(),
        git_version,
        git_commit: "0123456789abcdef0123456789abcdef01234567".into(),
        git_tree_state: "clean".into(),
        build_date: "2026-10-01T00:00:00Z".into(),
        go_version: "go1.25.3".into(),
        compiler: "gc".into(),
        platform: "linux/amd64".into(),
        ..Default::default()
    };
    axum::Json(info).into_response()
}

async fn node(
    State(state): State<Shared>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&state, &headers, format!("/api/v1/nodes/{name}")) {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    }
    let provider_id = state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .nodes
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, p)| p.clone());
    let Some(provider_id) = provider_id else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("nodes \"{name}\" not found"),
        );
    };
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            provider_id: Some(provider_id),
            ..Default::default()
        }),
        ..Default::default()
    };
    axum::Json(node).into_response()
}
