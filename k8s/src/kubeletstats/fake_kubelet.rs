//! A fake kubelet for tests (crate feature `testing`): a local HTTP or HTTPS server that speaks
//! the kubelet's Summary API as the receiver sees it.
//!
//! - `GET /stats/summary`, and the API server's node proxy path
//!   `GET /api/v1/nodes/<node>/proxy/stats/summary` (for `auth_type: kubeConfig`); anything
//!   else is 404.
//! - HTTPS with a certificate from [`sluice_tls::testing::TestPki`]; optionally mTLS (a client
//!   certificate signed by the same CA required).
//! - `Authorization: Bearer <token>` checked when a token is set (401 otherwise); the expected
//!   token can change while running (rotation).
//! - What it answers can change while running: the stats JSON, an error status, a body that
//!   never comes (timeouts). Every request is recorded (path and `Authorization` header).
//!
//! Also [`synthetic_summary`]: a stats summary of any size, shaped like the kubelet's, for
//! benchmarks and load.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use sluice_tls::TlsServerSetting;
use sluice_tls::testing::TestPki;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// What the fake answers to a stats request.
#[derive(Clone, Debug)]
pub enum Answer {
    /// 200 with this JSON body.
    Json(bytes::Bytes),
    /// This status with this body.
    Status(u16, String),
    /// Headers, then nothing, ever (the client's deadline must end it).
    Hang,
}

/// One request the fake received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub path: String,
    pub authorization: Option<String>,
}

struct State {
    answer: Answer,
    token: Option<String>,
    node: String,
    seen: Vec<Seen>,
}

pub struct FakeKubelet {
    pub addr: SocketAddr,
    tls: bool,
    state: Arc<Mutex<State>>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

/// How the fake serves.
pub enum Serve<'p> {
    Http,
    Https(&'p TestPki),
    /// HTTPS that requires a client certificate signed by the PKI's CA.
    MutualTls(&'p TestPki),
}

impl FakeKubelet {
    /// Starts on a free loopback port, answering `answer`.
    ///
    /// # Panics
    /// If the port or the certificates cannot be had (a broken test environment).
    pub async fn start(serve: Serve<'_>, answer: Answer) -> FakeKubelet {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let state = Arc::new(Mutex::new(State {
            answer,
            token: None,
            node: "node-1".into(),
            seen: Vec::new(),
        }));
        let app = {
            let state = state.clone();
            axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
                let state = state.clone();
                async move { handle(&state, uri, headers).await }
            })
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let tls_config = |pki: &TestPki, mutual: bool| {
            let path = |p: &std::path::Path| Some(p.display().to_string());
            TlsServerSetting {
                cert_file: path(&pki.server_cert),
                key_file: path(&pki.server_key),
                client_ca_file: if mutual { path(&pki.ca_cert) } else { None },
                ..Default::default()
            }
            .load(sluice_tls::ALPN_HTTP)
            .expect("server TLS config")
        };
        let (tls, task) = match serve {
            Serve::Http => (
                false,
                tokio::spawn(async move {
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(shutdown)
                        .await;
                }),
            ),
            Serve::Https(pki) | Serve::MutualTls(pki) => {
                let mutual = matches!(serve, Serve::MutualTls(_));
                let listener =
                    sluice_tls::TlsListener::new(listener, tls_config(pki, mutual), |_| {})
                        .expect("TLS listener");
                (
                    true,
                    tokio::spawn(async move {
                        let _ = axum::serve(listener, app)
                            .with_graceful_shutdown(shutdown)
                            .await;
                    }),
                )
            }
        };
        FakeKubelet {
            addr,
            tls,
            state,
            stop: Some(stop),
            task,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `https://127.0.0.1:<port>` (or `http://`).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Requires `Authorization: Bearer <token>` from now on.
    pub fn expect_token(&self, token: &str) {
        self.state().token = Some(token.to_string());
    }

    /// The node name the proxy path answers for (default `node-1`).
    pub fn set_node(&self, node: &str) {
        self.state().node = node.to_string();
    }

    pub fn answer(&self, answer: Answer) {
        self.state().answer = answer;
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state().seen.clone()
    }

    /// Stops serving and waits for the server task.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.ok();
    }
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

async fn handle(state: &Mutex<State>, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path().to_string();
    let authorization = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (answer, token, node) = {
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        s.seen.push(Seen {
            path: path.clone(),
            authorization: authorization.clone(),
        });
        (s.answer.clone(), s.token.clone(), s.node.clone())
    };
    let proxy = format!("/api/v1/nodes/{node}/proxy/stats/summary");
    if path != "/stats/summary" && path != proxy {
        return (StatusCode::NOT_FOUND, "404 page not found").into_response();
    }
    if let Some(token) = token
        && authorization.as_deref() != Some(format!("Bearer {token}").as_str())
    {
        return (StatusCode::UNAUTHORIZED, "Unauthorized").into_response();
    }
    match answer {
        Answer::Json(body) => (
            StatusCode::OK,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Answer::Status(code, body) => (
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body,
        )
            .into_response(),
        Answer::Hang => Response::new(Body::new(Never)),
    }
}

/// A response body that yields nothing and never ends.
struct Never;

impl http_body::Body for Never {
    type Data = bytes::Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::task::Poll::Pending
    }
}

/// A stats summary for `pods` pods of `containers` containers each (plus one volume per pod),
/// every field filled, values varying by pod and container: the kubelet's shape at any size.
pub fn synthetic_summary(pods: usize, containers: usize) -> String {
    let t = "2024-05-01T10:00:00Z";
    let cpu = |n: u64| {
        format!(
            r#"{{"time":"{t}","usageNanoCores":{},"usageCoreNanoSeconds":{}}}"#,
            1_000_000 + n * 37,
            50_000_000_000 + n * 1_234_567
        )
    };
    let memory = |n: u64| {
        format!(
            r#"{{"time":"{t}","availableBytes":{},"usageBytes":{},"workingSetBytes":{},"rssBytes":{},"pageFaults":{},"majorPageFaults":{}}}"#,
            400_000_000 + n * 4096,
            30_000_000 + n * 512,
            20_000_000 + n * 256,
            15_000_000 + n * 128,
            10_000 + n,
            n % 7
        )
    };
    let fs = |n: u64| {
        format!(
            r#"{{"time":"{t}","availableBytes":{},"capacityBytes":107374182400,"usedBytes":{},"inodesFree":6000000,"inodes":6553600,"inodesUsed":{}}}"#,
            80_000_000_000 - n * 8192,
            40_960 + n * 8192,
            12 + n
        )
    };
    let network = |n: u64| {
        format!(
            r#"{{"time":"{t}","name":"eth0","rxBytes":{rx},"rxErrors":0,"txBytes":{tx},"txErrors":{e},"interfaces":[{{"name":"eth0","rxBytes":{rx},"rxErrors":0,"txBytes":{tx},"txErrors":{e}}},{{"name":"tunl0","rxBytes":0,"rxErrors":0,"txBytes":0,"txErrors":0}}]}}"#,
            rx = 9_000_000 + n * 1000,
            tx = 3_000_000 + n * 700,
            e = n % 3
        )
    };
    let mut s = String::with_capacity(2048 * (1 + pods * (containers + 1)));
    let _ = write!(
        s,
        r#"{{"node":{{"nodeName":"ip-10-0-1-17.ec2.internal","startTime":"2024-04-30T08:00:00Z","cpu":{},"memory":{},"network":{},"fs":{},"runtime":{{"imageFs":{}}},"rlimit":{{"time":"{t}","maxpid":4194304,"curproc":812}}}},"pods":["#,
        cpu(0),
        memory(0),
        network(0),
        fs(0),
        fs(1)
    );
    for p in 0..pods {
        let n = p as u64 + 1;
        if p > 0 {
            s.push(',');
        }
        let _ = write!(
            s,
            r#"{{"podRef":{{"name":"app-{p}-7d8f9c5b6-x{p:04}","namespace":"ns-{}","uid":"6f1c1a2e-0000-4000-8000-{p:012}"}},"startTime":"2024-04-30T09:00:00Z","containers":["#,
            p % 10
        );
        for c in 0..containers {
            let m = n * 10 + c as u64;
            if c > 0 {
                s.push(',');
            }
            let _ = write!(
                s,
                r#"{{"name":"container-{c}","startTime":"2024-04-30T09:00:01Z","cpu":{},"memory":{},"rootfs":{},"logs":{}}}"#,
                cpu(m),
                memory(m),
                fs(m),
                fs(m + 1)
            );
        }
        let _ = write!(
            s,
            r#"],"cpu":{},"memory":{},"network":{},"volume":[{{"time":"{t}","availableBytes":1073700000,"capacityBytes":1073741824,"usedBytes":{},"inodesFree":262000,"inodes":262144,"inodesUsed":{},"name":"kube-api-access-{p}"}}],"ephemeral-storage":{}}}"#,
            cpu(n),
            memory(n),
            network(n),
            4096 * n,
            n,
            fs(n)
        );
    }
    s.push_str("]}");
    s
}
