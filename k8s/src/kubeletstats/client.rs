//! The kubelet client: `GET /stats/summary` with the four auth types of the Collector's
//! `internal/kubelet` client.
//!
//! - `tls`: HTTPS (`https://` added when the endpoint has no scheme) with the configured client
//!   certificate; the configured CA trusted in addition to the system's roots.
//! - `serviceAccount`: HTTPS with `Authorization: Bearer <token>`, the token read from
//!   `<dir>/token` at start and again on every scrape (it rotates); `<dir>/ca.crt` trusted in
//!   addition to the system's roots. `<dir>` is `/var/run/secrets/kubernetes.io/serviceaccount`;
//!   tests point it elsewhere with the environment variable `SLUICE_SERVICE_ACCOUNT_DIR`
//!   (deliberately not a config field: a Collector config has no such setting).
//! - `none`: plain HTTP (`http://` added), the read-only port.
//! - `kubeConfig`: through the API server's node proxy,
//!   `/api/v1/nodes/<endpoint>/proxy/stats/summary`, with kube-rs and the kubeconfig
//!   (`KUBECONFIG`, else `~/.kube/config`; `context` picks the context).
//!
//! `insecure_skip_verify` turns off certificate verification in every mode (for `kubeConfig`
//! it overrides the kubeconfig's CA, as in the Collector). An empty `endpoint` is the host's
//! name (`https://<hostname>:10250`, `http://<hostname>:10255` for `none`), as in the
//! Collector; for `kubeConfig` it is `K8S_NODE_NAME`, else the host's name.
//!
//! Every response body is read up to a size limit; the whole request is bounded by the scrape
//! deadline. The token never reaches a log or an error message.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;

use super::config::{AuthType, KubeletStatsConfig};

/// Where the pod's service account credentials are mounted.
pub use crate::{SERVICE_ACCOUNT_DIR, SERVICE_ACCOUNT_DIR_ENV};
/// The largest stats summary accepted. A node at the default limit of 110 pods with a few
/// containers each answers with well under 2 MiB.
pub const MAX_SUMMARY_BYTES: usize = 64 * 1024 * 1024;

/// What the client takes from the process's environment (injected, so tests set it).
#[derive(Debug, Clone)]
pub struct ClientEnv {
    pub service_account_dir: PathBuf,
    /// `None`: kube-rs' own lookup (`KUBECONFIG`, then `~/.kube/config`).
    pub kubeconfig: Option<PathBuf>,
    pub hostname: Option<String>,
    /// `K8S_NODE_NAME`.
    pub node_name: Option<String>,
}

impl ClientEnv {
    pub fn from_process() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        ClientEnv {
            service_account_dir: crate::service_account_dir(),
            kubeconfig: None,
            hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .or_else(|| var("HOSTNAME")),
            node_name: var("K8S_NODE_NAME"),
        }
    }
}

/// Why the client could not be built (at start: files, kubeconfig).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Tls(String),
    #[error("cannot read the service account token {path}: {source}")]
    Token {
        path: String,
        source: std::io::Error,
    },
    #[error("endpoint {endpoint:?}: {detail}")]
    Endpoint { endpoint: String, detail: String },
    #[error("no endpoint configured and the host's name is unknown")]
    NoHostname,
    #[error("kubeconfig: {0}")]
    KubeConfig(String),
}

/// Why one scrape failed. `reason()` labels the failure in self-telemetry.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("cannot read the service account token {path}: {source}")]
    Token {
        path: String,
        source: std::io::Error,
    },
    #[error("GET {url} failed: {detail}")]
    Request { url: String, detail: String },
    #[error("GET {url}: no complete answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("GET {url}: HTTP {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("GET {url}: the response is larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("GET {url}: reading the response failed: {detail}")]
    Body { url: String, detail: String },
    #[error("the stats summary from {url} is not valid: {detail}")]
    Json { url: String, detail: String },
    #[error("building the metrics failed: {0}")]
    Build(String),
}

impl ScrapeError {
    pub fn reason(&self) -> &'static str {
        match self {
            ScrapeError::Token { .. } => "token",
            ScrapeError::Request { .. } => "request",
            ScrapeError::Timeout { .. } => "timeout",
            ScrapeError::Status { .. } => "http_status",
            ScrapeError::TooLarge { .. } => "too_large",
            ScrapeError::Body { .. } => "body",
            ScrapeError::Json { .. } => "bad_json",
            ScrapeError::Build(_) => "internal",
        }
    }
}

type Https = HyperClient<HttpsConnector<HttpConnector>, Empty<Bytes>>;

enum Transport {
    /// Boxed: the hyper client is large next to kube's.
    Http {
        client: Box<Https>,
        uri: http::Uri,
    },
    Kube {
        client: kube::Client,
        path: String,
    },
}

pub struct KubeletClient {
    transport: Transport,
    /// Where the bearer token is re-read before each request (`serviceAccount`).
    token_file: Option<PathBuf>,
    /// What logs and errors call the target (no credentials in it).
    url: String,
    pub max_body_bytes: usize,
}

impl KubeletClient {
    /// Builds the client: reads certificates, the token (it must exist at start, as in the
    /// Collector) and the kubeconfig.
    pub async fn new(c: &KubeletStatsConfig, env: &ClientEnv) -> Result<Self, ClientError> {
        match c.auth_type {
            AuthType::KubeConfig => Self::kube(c, env).await,
            auth => {
                let secure = auth != AuthType::None;
                let base = base_url(&c.endpoint, secure, env.hostname.as_deref())?;
                let url = join_url(&base, "stats/summary");
                let uri: http::Uri = url.parse().map_err(|e| ClientError::Endpoint {
                    endpoint: c.endpoint.clone(),
                    detail: format!("not a URL: {e}"),
                })?;
                let mut tls = c.tls_setting();
                let mut token_file = None;
                if auth == AuthType::ServiceAccount {
                    // Only the CA of the service account directory, as the Collector: the
                    // squashed TLS settings do not apply to this auth type.
                    let ca = env.service_account_dir.join("ca.crt");
                    tls = sluice_tls::TlsClientSetting {
                        insecure_skip_verify: c.insecure_skip_verify,
                        ca_file: Some(ca.display().to_string()),
                        include_system_ca_certs_pool: true,
                        ..Default::default()
                    };
                    let token = env.service_account_dir.join("token");
                    read_token(&token).map_err(|source| ClientError::Token {
                        path: token.display().to_string(),
                        source,
                    })?;
                    token_file = Some(token);
                }
                let mut tcp = HttpConnector::new();
                tcp.enforce_http(false);
                tcp.set_nodelay(true);
                if !c.dialer.timeout.is_zero() {
                    tcp.set_connect_timeout(Some(c.dialer.timeout));
                }
                // TLS exactly for https:// URLs (an explicit http:// endpoint stays plain, as
                // in the Collector); the configured roots and certificates load only then.
                let config = if uri.scheme_str() == Some("https") {
                    tls.load()
                } else {
                    sluice_tls::TlsClientSetting {
                        insecure_skip_verify: true,
                        ..Default::default()
                    }
                    .load()
                }
                .map_err(|e| ClientError::Tls(format!("tls: {e}")))?;
                let connector = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(config)
                    .https_or_http()
                    .enable_http1()
                    .wrap_connector(tcp);
                let client =
                    HyperClient::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
                Ok(KubeletClient {
                    transport: Transport::Http {
                        client: Box::new(client),
                        uri,
                    },
                    token_file,
                    url,
                    max_body_bytes: MAX_SUMMARY_BYTES,
                })
            }
        }
    }

    async fn kube(c: &KubeletStatsConfig, env: &ClientEnv) -> Result<Self, ClientError> {
        let node = if !c.endpoint.is_empty() {
            c.endpoint.clone()
        } else if let Some(n) = env.node_name.clone().or_else(|| env.hostname.clone()) {
            n
        } else {
            return Err(ClientError::NoHostname);
        };
        let options = kube::config::KubeConfigOptions {
            context: (!c.context.is_empty()).then(|| c.context.clone()),
            cluster: None,
            user: None,
        };
        let kube_err = |e: &dyn std::fmt::Display| ClientError::KubeConfig(e.to_string());
        let mut config = match &env.kubeconfig {
            Some(path) => {
                let file = kube::config::Kubeconfig::read_from(path).map_err(|e| kube_err(&e))?;
                kube::Config::from_custom_kubeconfig(file, &options)
                    .await
                    .map_err(|e| kube_err(&e))?
            }
            None => kube::Config::from_kubeconfig(&options)
                .await
                .map_err(|e| kube_err(&e))?,
        };
        if c.insecure_skip_verify {
            config.accept_invalid_certs = true;
            config.root_cert = None;
            config.root_cert_file = None;
        }
        if !c.dialer.timeout.is_zero() {
            config.connect_timeout = Some(c.dialer.timeout);
        }
        let path = format!("/api/v1/nodes/{}/proxy/stats/summary", path_segment(&node));
        let url = format!(
            "{}{}",
            config.cluster_url.to_string().trim_end_matches('/'),
            path
        );
        let client = kube::Client::try_from(config).map_err(|e| kube_err(&e))?;
        Ok(KubeletClient {
            transport: Transport::Kube { client, path },
            token_file: None,
            url,
            max_body_bytes: MAX_SUMMARY_BYTES,
        })
    }

    /// The URL scraped, for logs.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The stats summary's bytes, within `timeout`.
    pub async fn get_summary(&self, timeout: Duration) -> Result<Bytes, ScrapeError> {
        match tokio::time::timeout(timeout, self.get()).await {
            Ok(r) => r,
            Err(_) => Err(ScrapeError::Timeout {
                url: self.url.clone(),
                timeout,
            }),
        }
    }

    async fn get(&self) -> Result<Bytes, ScrapeError> {
        let request_failed = |detail: String| ScrapeError::Request {
            url: self.url.clone(),
            detail,
        };
        let mut builder = http::Request::get("/").header(http::header::ACCEPT, "application/json");
        if let Some(path) = &self.token_file {
            let token = read_token(path).map_err(|source| ScrapeError::Token {
                path: path.display().to_string(),
                source,
            })?;
            let mut value = http::HeaderValue::try_from(format!("Bearer {token}"))
                .map_err(|_| request_failed("the token is not a valid header value".into()))?;
            value.set_sensitive(true);
            builder = builder.header(http::header::AUTHORIZATION, value);
        }
        let (status, body) = match &self.transport {
            Transport::Http { client, uri } => {
                let request = builder
                    .uri(uri.clone())
                    .body(Empty::new())
                    .map_err(|e| request_failed(e.to_string()))?;
                let response = client
                    .request(request)
                    .await
                    .map_err(|e| request_failed(error_chain(&e)))?;
                let status = response.status();
                (status, self.read_body(response.into_body()).await?)
            }
            Transport::Kube { client, path } => {
                let request = builder
                    .uri(path.as_str())
                    .body(kube::client::Body::empty())
                    .map_err(|e| request_failed(e.to_string()))?;
                let response = client
                    .send(request)
                    .await
                    .map_err(|e| request_failed(error_chain(&e)))?;
                let status = response.status();
                (status, self.read_body(response.into_body()).await?)
            }
        };
        if status != http::StatusCode::OK {
            return Err(ScrapeError::Status {
                url: self.url.clone(),
                status: status.as_u16(),
                body: snippet(&body),
            });
        }
        Ok(body)
    }

    async fn read_body<B>(&self, body: B) -> Result<Bytes, ScrapeError>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        match Limited::new(body, self.max_body_bytes).collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ScrapeError::TooLarge {
                url: self.url.clone(),
                limit: self.max_body_bytes,
            }),
            Err(e) => Err(ScrapeError::Body {
                url: self.url.clone(),
                detail: error_chain(e.as_ref()),
            }),
        }
    }
}

/// The token file's content, trimmed (as client-go's bearer token refresher).
fn read_token(path: &Path) -> std::io::Result<String> {
    let text = std::fs::read_to_string(path)?;
    let token = text.trim();
    if token.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the file is empty",
        ));
    }
    Ok(token.to_string())
}

/// The Collector's `buildEndpoint`: the host's name on the default port when empty, a scheme
/// added when missing.
fn base_url(endpoint: &str, secure: bool, hostname: Option<&str>) -> Result<String, ClientError> {
    let scheme = if secure { "https" } else { "http" };
    if endpoint.is_empty() {
        let host = hostname.ok_or(ClientError::NoHostname)?;
        let port = if secure { 10250 } else { 10255 };
        let url = format!("{scheme}://{host}:{port}");
        tracing::warn!(endpoint = %url, "kubeletstats: no endpoint configured, using the host's name");
        return Ok(url);
    }
    if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        return Ok(endpoint.to_string());
    }
    Ok(format!("{scheme}://{endpoint}"))
}

/// `url.JoinPath(base, path)`: exactly one `/` between them.
fn join_url(base: &str, path: &str) -> String {
    format!("{}/{}", base.trim_end_matches('/'), path)
}

/// A node name as one URL path segment (node names are DNS subdomains; anything else is
/// percent-encoded rather than trusted).
fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The start of an error body, for the log: printable, bounded.
fn snippet(body: &[u8]) -> String {
    const MAX: usize = 256;
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX)]);
    let mut s: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if body.len() > MAX {
        s.push_str("...");
    }
    s.trim().to_string()
}

/// An error and its causes, `outer: inner: root`.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_default_and_get_a_scheme_as_in_the_collector() {
        assert_eq!(
            base_url("", true, Some("node-1")).unwrap(),
            "https://node-1:10250"
        );
        assert_eq!(
            base_url("", false, Some("node-1")).unwrap(),
            "http://node-1:10255"
        );
        assert!(matches!(
            base_url("", true, None),
            Err(ClientError::NoHostname)
        ));
        assert_eq!(
            base_url("10.0.0.1:10250", true, None).unwrap(),
            "https://10.0.0.1:10250"
        );
        assert_eq!(
            base_url("10.0.0.1:10255", false, None).unwrap(),
            "http://10.0.0.1:10255"
        );
        assert_eq!(base_url("http://h:1", true, None).unwrap(), "http://h:1");
        assert_eq!(
            join_url("https://h:1/", "stats/summary"),
            "https://h:1/stats/summary"
        );
        assert_eq!(
            join_url("https://h:1", "stats/summary"),
            "https://h:1/stats/summary"
        );
        assert_eq!(
            path_segment("ip-10-0-0-1.ec2.internal"),
            "ip-10-0-0-1.ec2.internal"
        );
        assert_eq!(path_segment("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn error_bodies_are_bounded_and_printable() {
        assert_eq!(snippet(b"forbidden\n"), "forbidden");
        let long = vec![b'x'; 1000];
        assert_eq!(snippet(&long).len(), 256 + 3);
        assert_eq!(snippet(b"\x00a\xffb"), "a\u{fffd}b");
    }
}
