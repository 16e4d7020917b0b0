//! A client of the EC2 instance metadata service (IMDS) that behaves as the AWS SDK's
//! (`aws-sdk-go-v2/feature/ec2/imds`, what the Collector's ec2 and eks detectors use):
//!
//! - Endpoint `http://169.254.169.254`, or `AWS_EC2_METADATA_SERVICE_ENDPOINT` (the SDK's own
//!   variable, so it moves the Collector and sluice alike; also how tests reach a local fake).
//!   `AWS_EC2_METADATA_DISABLED=true` turns the client off.
//! - IMDSv2 first: `PUT /latest/api/token` with `X-Aws-Ec2-Metadata-Token-Ttl-Seconds`, then
//!   every request carries `X-Aws-Ec2-Metadata-Token`. A token answer of 403, 404 or 405 (IMDSv2
//!   not offered), or no answer at all, switches the client to IMDSv1 (no token) for good; a
//!   400 is an error; any other status skips the token for that one request. A 401 on a
//!   request means the token is no longer valid: a new one is fetched on the retry.
//! - Fail fast off EC2: 250 ms to connect, 1 s per attempt (the SDK waits 500 ms for the
//!   response headers; sluice's 1 s is kinder to a loaded node and still quick), `max_attempts`
//!   attempts (3) for connection errors, 5xx and 429, with the standard retryer's jittered
//!   exponential backoff, capped at 1 s for IMDS as in the SDK.
//! - Never through an HTTP proxy (sluice reads no proxy variables), which is what AWS advises
//!   for the link-local metadata address. Answers are read up to 64 KiB.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::detect::{DetectError, HostEnvironment};

pub const DEFAULT_ENDPOINT: &str = "http://169.254.169.254";
pub const ENDPOINT_ENV: &str = "AWS_EC2_METADATA_SERVICE_ENDPOINT";
pub const DISABLED_ENV: &str = "AWS_EC2_METADATA_DISABLED";
pub const TOKEN_PATH: &str = "/latest/api/token";
pub const TOKEN_TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
pub const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
pub const IDENTITY_DOCUMENT_PATH: &str = "/latest/dynamic/instance-identity/document";

/// Tokens are asked for 6 hours (IMDS allows 1 s to 6 h) and renewed a minute early.
const TOKEN_TTL: Duration = Duration::from_secs(21_600);
const TOKEN_RENEW_MARGIN: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(250);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
/// The SDK caps the retry backoff of its IMDS client at one second.
const IMDS_MAX_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BODY: usize = 64 * 1024;

/// The fields of the instance identity document the detectors use (missing ones read as
/// empty, as Go's JSON decoding leaves them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentityDocument {
    #[serde(default)]
    pub account_id: String,
    #[serde(default)]
    pub availability_zone: String,
    #[serde(default)]
    pub image_id: String,
    #[serde(default)]
    pub instance_id: String,
    #[serde(default)]
    pub instance_type: String,
    #[serde(default)]
    pub region: String,
}

enum Token {
    /// None fetched yet, or the last one was refused (401): fetch one.
    Needed,
    Valid {
        value: String,
        renew_at: Instant,
    },
    /// IMDSv2 is not offered here: IMDSv1 from now on.
    V1Only,
}

pub struct ImdsClient {
    /// `scheme://host[:port]`, no trailing slash; `Err` if the variable holds no usable URL.
    endpoint: Result<String, String>,
    disabled: bool,
    http: Client<HttpConnector, Full<Bytes>>,
    token: Mutex<Token>,
    max_attempts: u32,
    max_backoff: Duration,
}

enum Attempt {
    Done(String),
    /// Worth another attempt (connection error, 5xx, 429, 401).
    Retry(DetectError),
}

impl ImdsClient {
    pub fn from_environment(
        host: &HostEnvironment,
        max_attempts: u32,
        max_backoff: Duration,
    ) -> Self {
        let endpoint = match host.var(ENDPOINT_ENV).filter(|v| !v.is_empty()) {
            None => Ok(DEFAULT_ENDPOINT.to_string()),
            Some(v) => parse_endpoint(&v),
        };
        let disabled = host
            .var(DISABLED_ENV)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        ImdsClient {
            endpoint,
            disabled,
            http: Client::builder(TokioExecutor::new()).build(connector),
            token: Mutex::new(Token::Needed),
            max_attempts: max_attempts.max(1),
            max_backoff,
        }
    }

    /// The endpoint, for messages.
    pub fn endpoint(&self) -> &str {
        match &self.endpoint {
            Ok(e) => e,
            Err(_) => DEFAULT_ENDPOINT,
        }
    }

    /// `/latest/meta-data/<path>` (`instance-id`, `hostname`), with retries; every wait ends
    /// by `deadline`.
    pub async fn metadata(&self, path: &str, deadline: Instant) -> Result<String, DetectError> {
        self.get(
            &format!("/latest/meta-data/{path}"),
            self.max_attempts,
            deadline,
        )
        .await
    }

    /// `/latest/meta-data/instance-id`, one attempt: is IMDS there at all?
    pub async fn probe(&self, deadline: Instant) -> Result<String, DetectError> {
        self.get("/latest/meta-data/instance-id", 1, deadline).await
    }

    pub async fn identity_document(
        &self,
        deadline: Instant,
    ) -> Result<IdentityDocument, DetectError> {
        let text = self
            .get(IDENTITY_DOCUMENT_PATH, self.max_attempts, deadline)
            .await?;
        serde_json::from_str(&text).map_err(|e| {
            DetectError::InvalidResponse(format!(
                "the instance identity document from {} is not the JSON IMDS documents: {e}",
                self.endpoint()
            ))
        })
    }

    /// Up to `attempts` tries; none starts, and no backoff is waited, past `deadline`: the
    /// error is then the last real one (a status, a refused connection), not "timed out".
    async fn get(
        &self,
        path: &str,
        attempts: u32,
        deadline: Instant,
    ) -> Result<String, DetectError> {
        if self.disabled {
            return Err(DetectError::Unreachable(format!(
                "access to the EC2 instance metadata service is disabled ({DISABLED_ENV}=true)"
            )));
        }
        let base = self
            .endpoint
            .as_ref()
            .map_err(|e| DetectError::InvalidInput(format!("{ENDPOINT_ENV}: {e}")))?;
        let url = format!("{base}{path}");
        let mut last = None;
        for attempt in 1..=attempts {
            if Instant::now() >= deadline {
                break;
            }
            match self.attempt_get(&url, deadline).await? {
                Attempt::Done(body) => return Ok(body),
                Attempt::Retry(e) => last = Some(e),
            }
            let wait = self.backoff(attempt);
            if attempt == attempts || Instant::now() + wait >= deadline {
                break;
            }
            tokio::time::sleep(wait).await;
        }
        Err(last.unwrap_or_else(|| {
            DetectError::Timeout(format!("GET {url}: no time left before the deadline"))
        }))
    }

    /// One GET: the token (fetched if needed), the request, the verdict.
    async fn attempt_get(&self, url: &str, deadline: Instant) -> Result<Attempt, DetectError> {
        let token = self.token(deadline).await?;
        let headers: Vec<(&str, &str)> = token
            .as_deref()
            .map(|t| vec![(TOKEN_HEADER, t)])
            .unwrap_or_default();
        let (status, body) = match self.send(Method::GET, url, &headers, deadline).await {
            Ok(r) => r,
            Err(e) => return Ok(Attempt::Retry(e)),
        };
        let text = || {
            String::from_utf8(body.to_vec()).map_err(|_| {
                DetectError::InvalidResponse(format!("GET {url}: the answer is not UTF-8"))
            })
        };
        Ok(match status {
            StatusCode::OK => Attempt::Done(text()?),
            StatusCode::UNAUTHORIZED => {
                // The token expired or IMDSv2 became required: fetch a new one and retry.
                *self.token.lock().await = Token::Needed;
                Attempt::Retry(status_error("GET", url, status))
            }
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                Attempt::Retry(status_error("GET", url, s))
            }
            s => return Err(status_error("GET", url, s)),
        })
    }

    /// The token to send, `None` for IMDSv1. Err only for a 400 (a request IMDS refuses).
    async fn token(&self, deadline: Instant) -> Result<Option<String>, DetectError> {
        let mut state = self.token.lock().await;
        match &*state {
            Token::V1Only => return Ok(None),
            Token::Valid { value, renew_at } if Instant::now() < *renew_at => {
                return Ok(Some(value.clone()));
            }
            _ => {}
        }
        let base = self.endpoint();
        let url = format!("{base}{TOKEN_PATH}");
        let ttl = TOKEN_TTL.as_secs().to_string();
        let asked = Instant::now();
        match self
            .send(
                Method::PUT,
                &url,
                &[(TOKEN_TTL_HEADER, ttl.as_str())],
                deadline,
            )
            .await
        {
            Ok((StatusCode::OK, body)) => match String::from_utf8(body.to_vec()) {
                Ok(value) if !value.is_empty() => {
                    *state = Token::Valid {
                        value: value.clone(),
                        renew_at: asked + TOKEN_TTL - TOKEN_RENEW_MARGIN,
                    };
                    Ok(Some(value))
                }
                _ => Err(DetectError::InvalidResponse(format!(
                    "PUT {url}: the token is empty or not UTF-8"
                ))),
            },
            Ok((
                StatusCode::FORBIDDEN | StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED,
                _,
            )) => {
                tracing::debug!(endpoint = base, "IMDSv2 not offered; using IMDSv1");
                *state = Token::V1Only;
                Ok(None)
            }
            Ok((StatusCode::BAD_REQUEST, _)) => {
                Err(status_error("PUT", &url, StatusCode::BAD_REQUEST))
            }
            Ok((_, _)) => Ok(None), // this request goes without a token
            Err(e) => {
                // No answer to the token request: as the SDK, carry on with IMDSv1.
                tracing::debug!(endpoint = base, error = %e, "no IMDSv2 token; using IMDSv1");
                *state = Token::V1Only;
                Ok(None)
            }
        }
    }

    /// One exchange, bounded by [`ATTEMPT_TIMEOUT`] and by `deadline`.
    async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        deadline: Instant,
    ) -> Result<(StatusCode, Bytes), DetectError> {
        let what = format!("{method} {url}");
        let mut req = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(Bytes::new()))
            .map_err(|e| DetectError::InvalidInput(format!("{what}: {e}")))?;
        let exchange = async {
            let resp =
                self.http.request(req).await.map_err(|e| {
                    DetectError::Unreachable(format!("{what}: {}", error_chain(&e)))
                })?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| {
                    DetectError::InvalidResponse(format!(
                        "{what}: reading the answer (at most {MAX_BODY} bytes): {e}"
                    ))
                })?
                .to_bytes();
            Ok((status, body))
        };
        let limit = ATTEMPT_TIMEOUT.min(deadline.saturating_duration_since(Instant::now()));
        tokio::time::timeout(limit, exchange)
            .await
            .map_err(|_| DetectError::Unreachable(format!("{what}: no answer within {limit:?}")))?
    }

    /// The standard retryer's backoff: a random share of `2^attempt` seconds, at most
    /// `max_backoff` and (for IMDS) one second.
    fn backoff(&self, attempt: u32) -> Duration {
        let cap = Duration::from_secs(1u64 << attempt.min(20))
            .min(self.max_backoff)
            .min(IMDS_MAX_BACKOFF);
        cap.mul_f64(unit_random())
    }
}

/// A uniform value in [0, 1): retry jitter needs decorrelation, not cryptography, and every
/// `RandomState` is freshly keyed.
pub fn unit_random() -> f64 {
    let x = RandomState::new().hash_one(std::time::SystemTime::now());
    (x >> 11) as f64 / (1u64 << 53) as f64
}

fn status_error(method: &str, url: &str, status: StatusCode) -> DetectError {
    DetectError::Status(format!("{method} {url}: {status}"))
}

/// An error and its causes, `: `-separated (hyper's errors say little on their own).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// `AWS_EC2_METADATA_SERVICE_ENDPOINT`: an `http://host[:port]` URL (a path is not used).
fn parse_endpoint(value: &str) -> Result<String, String> {
    let uri: http::Uri = value
        .parse()
        .map_err(|e| format!("{value:?} is not a URL: {e}"))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http"), Some(authority)) => Ok(format!("http://{authority}")),
        (Some(other), Some(_)) => Err(format!(
            "{value:?}: the instance metadata service speaks http, not {other}"
        )),
        _ => Err(format!("{value:?} is not an http://host[:port] URL")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_from_the_environment() {
        assert_eq!(
            parse_endpoint("http://127.0.0.1:8080/"),
            Ok("http://127.0.0.1:8080".into())
        );
        assert_eq!(parse_endpoint("http://[::1]"), Ok("http://[::1]".into()));
        assert!(parse_endpoint("https://x").unwrap_err().contains("http"));
        assert!(parse_endpoint("169.254.169.254").is_err());
        let c = ImdsClient::from_environment(&HostEnvironment::for_tests(&[]), 3, Duration::ZERO);
        assert_eq!(c.endpoint(), DEFAULT_ENDPOINT);
    }

    #[test]
    fn backoff_stays_under_its_caps() {
        let c = ImdsClient::from_environment(
            &HostEnvironment::for_tests(&[]),
            3,
            Duration::from_millis(300),
        );
        for attempt in 1..10 {
            assert!(c.backoff(attempt) <= Duration::from_millis(300));
        }
        let u: Vec<f64> = (0..64).map(|_| unit_random()).collect();
        assert!(u.iter().all(|x| (0.0..1.0).contains(x)));
        assert!(u.windows(2).any(|w| w[0] != w[1]), "jitter must vary");
    }
}
