//! A local fake of the EC2 instance metadata service (feature `testing`), speaking IMDS's HTTP
//! as documented: `PUT /latest/api/token` with `X-Aws-Ec2-Metadata-Token-Ttl-Seconds` (1 to
//! 21600, else 400) returns a token; `GET /latest/meta-data/instance-id`, `.../hostname` and
//! `/latest/dynamic/instance-identity/document` answer with or without
//! `X-Aws-Ec2-Metadata-Token` depending on the mode (an unknown or expired token is 401 in
//! every mode, as on EC2). Used by this crate's tests and, through the `sluice-fake-imds`
//! binary, by the end-to-end tests. `GET /_fake/requests` lists what it was asked (JSON).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::resourcedetection::imds::{
    IDENTITY_DOCUMENT_PATH, TOKEN_HEADER, TOKEN_PATH, TOKEN_TTL_HEADER,
};

/// How the fake answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImdsMode {
    /// IMDSv2 offered, IMDSv1 still accepted (EC2's `HttpTokens: optional`).
    V2Optional,
    /// IMDSv2 required (`HttpTokens: required`): a GET without a valid token gets 401.
    V2Required,
    /// No IMDSv2: the token PUT gets this status (403, 404 or 405); GETs need no token.
    V1Only { token_status: u16 },
    /// Accepts connections and never answers (a firewalled metadata address, or an IMDSv2
    /// answer dropped by a hop limit of 1).
    Hang,
}

/// The instance the fake describes.
#[derive(Clone, Debug)]
pub struct FakeInstance {
    pub account_id: String,
    pub region: String,
    pub availability_zone: String,
    pub instance_id: String,
    pub instance_type: String,
    pub image_id: String,
    pub hostname: String,
}

impl Default for FakeInstance {
    fn default() -> Self {
        FakeInstance {
            account_id: "123456789012".into(),
            region: "eu-west-1".into(),
            availability_zone: "eu-west-1b".into(),
            instance_id: "i-0123456789abcdef0".into(),
            instance_type: "m5.large".into(),
            image_id: "ami-0abcdef1234567890".into(),
            hostname: "ip-10-0-12-34.eu-west-1.compute.internal".into(),
        }
    }
}

impl FakeInstance {
    /// The identity document as IMDS writes it (every field, the unused ones too).
    pub fn identity_document(&self) -> serde_json::Value {
        serde_json::json!({
            "accountId": self.account_id,
            "architecture": "x86_64",
            "availabilityZone": self.availability_zone,
            "billingProducts": null,
            "devpayProductCodes": null,
            "marketplaceProductCodes": null,
            "imageId": self.image_id,
            "instanceId": self.instance_id,
            "instanceType": self.instance_type,
            "kernelId": null,
            "pendingTime": "2026-11-20T10:00:00Z",
            "privateIp": "10.0.12.34",
            "ramdiskId": null,
            "region": self.region,
            "version": "2017-09-30",
        })
    }
}

/// One request the fake received.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SeenRequest {
    pub method: String,
    pub path: String,
    /// `X-Aws-Ec2-Metadata-Token`, if sent.
    pub token: Option<String>,
    /// `X-Aws-Ec2-Metadata-Token-Ttl-Seconds`, if sent.
    pub ttl: Option<String>,
    pub status: u16,
}

struct Fake {
    mode: ImdsMode,
    instance: FakeInstance,
    delay: Duration,
    tokens: HashMap<String, Instant>,
    issued: u64,
    /// path -> (status, how many more times to answer it)
    failures: HashMap<String, (StatusCode, u32)>,
    seen: Vec<SeenRequest>,
}

type Shared = Arc<Mutex<Fake>>;

pub struct FakeImds {
    addr: SocketAddr,
    state: Shared,
    task: JoinHandle<()>,
}

impl FakeImds {
    /// Serves on a free loopback port.
    pub async fn start(mode: ImdsMode, instance: FakeInstance) -> std::io::Result<FakeImds> {
        Self::start_on("127.0.0.1:0", mode, instance).await
    }

    pub async fn start_on(
        addr: &str,
        mode: ImdsMode,
        instance: FakeInstance,
    ) -> std::io::Result<FakeImds> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state: Shared = Arc::new(Mutex::new(Fake {
            mode,
            instance,
            delay: Duration::ZERO,
            tokens: HashMap::new(),
            issued: 0,
            failures: HashMap::new(),
            seen: Vec::new(),
        }));
        let task = if mode == ImdsMode::Hang {
            tokio::spawn(hang(listener))
        } else {
            let app = Router::new().fallback(answer).with_state(state.clone());
            tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            })
        };
        Ok(FakeImds { addr, state, task })
    }

    /// `http://127.0.0.1:<port>`, for `AWS_EC2_METADATA_SERVICE_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<SeenRequest> {
        self.lock().seen.clone()
    }

    /// From now on the fake describes `instance` (a refresh sees the change).
    pub fn set_instance(&self, instance: FakeInstance) {
        self.lock().instance = instance;
    }

    /// Every answer waits this long first (a slow metadata service).
    pub fn set_delay(&self, delay: Duration) {
        self.lock().delay = delay;
    }

    /// The next `times` requests for `path` get `status`.
    pub fn fail(&self, path: &str, status: u16, times: u32) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        self.lock()
            .failures
            .insert(path.to_string(), (status, times));
    }

    /// Tokens issued so far stop being valid (as when their TTL ends).
    pub fn expire_tokens(&self) {
        self.lock().tokens.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Fake> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for FakeImds {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An endpoint nothing listens on (connections are refused).
pub fn refused_endpoint() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let addr = l.local_addr().expect("its address");
    drop(l);
    format!("http://{addr}")
}

/// Accepts and holds connections without a byte of answer.
async fn hang(listener: TcpListener) {
    let mut held = Vec::new();
    while let Ok((conn, _)) = listener.accept().await {
        held.push(conn);
    }
}

async fn answer(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let delay = state.lock().unwrap_or_else(|e| e.into_inner()).delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let path = uri.path().to_string();
    let mut fake = state.lock().unwrap_or_else(|e| e.into_inner());
    if path == "/_fake/requests" {
        return axum::Json(fake.seen.clone()).into_response();
    }
    let (status, body) = fake.respond(
        &method,
        &path,
        header(TOKEN_HEADER),
        header(TOKEN_TTL_HEADER),
    );
    fake.seen.push(SeenRequest {
        method: method.to_string(),
        path,
        token: header(TOKEN_HEADER),
        ttl: header(TOKEN_TTL_HEADER),
        status: status.as_u16(),
    });
    (status, body).into_response()
}

impl Fake {
    fn respond(
        &mut self,
        method: &Method,
        path: &str,
        token: Option<String>,
        ttl: Option<String>,
    ) -> (StatusCode, String) {
        if let Some((status, left)) = self.failures.get_mut(path)
            && *left > 0
        {
            *left -= 1;
            return (*status, String::new());
        }
        if path == TOKEN_PATH {
            if *method != Method::PUT {
                return (StatusCode::METHOD_NOT_ALLOWED, String::new());
            }
            if let ImdsMode::V1Only { token_status } = self.mode {
                let s = StatusCode::from_u16(token_status).unwrap_or(StatusCode::FORBIDDEN);
                return (s, String::new());
            }
            let Some(seconds) = ttl
                .and_then(|t| t.parse::<u64>().ok())
                .filter(|s| (1..=21_600).contains(s))
            else {
                return (StatusCode::BAD_REQUEST, String::new());
            };
            self.issued += 1;
            let value = format!("fake-imds-token-{}", self.issued);
            self.tokens
                .insert(value.clone(), Instant::now() + Duration::from_secs(seconds));
            return (StatusCode::OK, value);
        }
        if *method != Method::GET {
            return (StatusCode::METHOD_NOT_ALLOWED, String::new());
        }
        let token_ok = token
            .as_ref()
            .is_some_and(|t| self.tokens.get(t).is_some_and(|exp| Instant::now() < *exp));
        match (self.mode, &token) {
            (_, Some(_)) if !token_ok && !matches!(self.mode, ImdsMode::V1Only { .. }) => {
                return (StatusCode::UNAUTHORIZED, String::new());
            }
            (ImdsMode::V2Required, None) => return (StatusCode::UNAUTHORIZED, String::new()),
            _ => {}
        }
        let i = &self.instance;
        match path {
            "/latest/meta-data/instance-id" => (StatusCode::OK, i.instance_id.clone()),
            "/latest/meta-data/hostname" => (StatusCode::OK, i.hostname.clone()),
            "/latest/meta-data/placement/region" => (StatusCode::OK, i.region.clone()),
            "/latest/meta-data/placement/availability-zone" => {
                (StatusCode::OK, i.availability_zone.clone())
            }
            IDENTITY_DOCUMENT_PATH => (
                StatusCode::OK,
                serde_json::to_string_pretty(&i.identity_document()).unwrap_or_default(),
            ),
            _ => (StatusCode::NOT_FOUND, String::new()),
        }
    }
}
