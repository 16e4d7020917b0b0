//! `sluice-fake-apiserver`: the test suite's fake Kubernetes API server as a process, for
//! end-to-end tests that run sluice binaries against a "cluster" (built with
//! `cargo build -p sluice-k8s --features testing --bin sluice-fake-apiserver`).
//!
//! ```text
//! sluice-fake-apiserver [--objects FILE] [--port N]
//! ```
//!
//! Serves the objects of FILE (JSON or YAML: one object, a list, or a `List` with `items`) on
//! `https://127.0.0.1:<port>` (a free port unless `--port`), with TLS and a bearer token, and
//! prints one JSON line on stdout once ready:
//!
//! ```text
//! {"url":"https://127.0.0.1:40123","kubeconfig":"/tmp/.../kubeconfig","token":"...","ca_file":"...","control":"http://127.0.0.1:40124"}
//! ```
//!
//! Point a client at the kubeconfig (`KUBECONFIG=...`, or sluice's `auth_type: kubeConfig`).
//! The control endpoint (plain HTTP on loopback, no auth) changes the cluster while it runs:
//!
//! - `POST /objects` with an object (or list) as JSON/YAML: add or replace;
//! - `DELETE /objects` with an object naming `apiVersion`, `kind`, `metadata.{namespace,name}`;
//! - `POST /drop-watches`: end every watch (clients resume);
//! - `POST /expire`: forget the history (clients get 410 and re-list);
//! - `POST /down`, `POST /up`: stop serving / serve again on the same port;
//! - `GET /requests`: every API request so far as JSON (path, query, authorized).
//!
//! It runs until killed (SIGTERM or SIGINT).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde_json::{Value, json};
use sluice_k8s::testing::api_server::objects_from_text;
use sluice_k8s::testing::{FakeApiServer, FakeApiServerOptions};

fn usage() -> ! {
    eprintln!("usage: sluice-fake-apiserver [--objects FILE] [--port N]");
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let mut objects_file = None;
    let mut port = 0u16;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--objects" => objects_file = Some(args.next().unwrap_or_else(|| usage())),
            "--port" => {
                port = args
                    .next()
                    .and_then(|p| p.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            _ => usage(),
        }
    }
    let options = FakeApiServerOptions {
        bind: SocketAddr::from(([127, 0, 0, 1], port)),
        ..FakeApiServerOptions::default()
    };
    let server = match FakeApiServer::start_with(options).await {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("cannot start: {e}");
            std::process::exit(1)
        }
    };
    if let Some(path) = objects_file {
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            eprintln!("cannot read {path}: {e}");
            std::process::exit(1)
        });
        if let Err(e) = apply_text(&server, &text) {
            eprintln!("{path}: {e}");
            std::process::exit(1)
        }
    }
    let control = Router::new()
        .route("/objects", post(post_objects).delete(delete_objects))
        .route("/drop-watches", post(drop_watches))
        .route("/expire", post(expire))
        .route("/down", post(down))
        .route("/up", post(up))
        .route("/requests", get(requests))
        .with_state(server.clone());
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot bind the control endpoint: {e}");
            std::process::exit(1)
        }
    };
    let control_addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    println!(
        "{}",
        json!({
            "url": server.url(),
            "kubeconfig": server.kubeconfig(),
            "token": server.token(),
            "ca_file": server.ca_file(),
            "control": format!("http://{control_addr}"),
        })
    );
    let serve = axum::serve(listener, control);
    tokio::select! {
        r = serve => if let Err(e) = r { eprintln!("control endpoint: {e}") },
        _ = shutdown_signal() => {}
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn apply_text(server: &FakeApiServer, text: &str) -> Result<usize, String> {
    let objects = objects_from_text(text).map_err(|e| e.to_string())?;
    let n = objects.len();
    for o in objects {
        server.apply_json(o).map_err(|e| e.to_string())?;
    }
    Ok(n)
}

type Shared = State<Arc<FakeApiServer>>;

async fn post_objects(State(server): Shared, body: Bytes) -> (StatusCode, String) {
    match std::str::from_utf8(&body)
        .map_err(|e| e.to_string())
        .and_then(|t| apply_text(&server, t))
    {
        Ok(n) => (
            StatusCode::OK,
            json!({"applied": n, "resourceVersion": server.resource_version()}).to_string(),
        ),
        Err(e) => (StatusCode::BAD_REQUEST, e),
    }
}

async fn delete_objects(State(server): Shared, body: Bytes) -> (StatusCode, String) {
    let objects = match std::str::from_utf8(&body)
        .map_err(|e| e.to_string())
        .and_then(|t| objects_from_text(t).map_err(|e| e.to_string()))
    {
        Ok(o) => o,
        Err(e) => return (StatusCode::BAD_REQUEST, e),
    };
    let mut deleted = 0;
    for o in &objects {
        match server.delete_json(o) {
            Ok(true) => deleted += 1,
            Ok(false) => {}
            Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()),
        }
    }
    (StatusCode::OK, json!({"deleted": deleted}).to_string())
}

async fn drop_watches(State(server): Shared) -> StatusCode {
    server.drop_watches();
    StatusCode::OK
}

async fn expire(State(server): Shared) -> StatusCode {
    server.expire_history();
    StatusCode::OK
}

async fn down(State(server): Shared) -> StatusCode {
    server.stop();
    StatusCode::OK
}

async fn up(State(server): Shared) -> (StatusCode, String) {
    match server.start().await {
        Ok(()) => (StatusCode::OK, String::new()),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn requests(State(server): Shared) -> String {
    let list: Vec<Value> = server
        .requests()
        .into_iter()
        .map(|r| json!({"path": r.path, "query": r.query, "authorized": r.authorized}))
        .collect();
    Value::Array(list).to_string()
}
