//! `protocols.http.cors`: CORS for browsers sending OTLP/HTTP straight to the receiver (web
//! SDKs), as the Collector's `confighttp` does it with `rs/cors`: origins matched exactly or by
//! one `*` wildcard (`https://*.example.com`; `*` alone is any origin), credentials allowed,
//! methods `GET`, `POST`, `HEAD`, the request headers a preflight asks for allowed when they
//! are in `allowed_headers` (case-insensitive; `*` allows any) or implicitly allowed
//! (`Content-Type`, `Accept`, ...: see [`CorsConfig`]), `max_age` sent as
//! `Access-Control-Max-Age`. A preflight (`OPTIONS` with `Origin` and
//! `Access-Control-Request-Method`) is answered here, 204, never reaching the routes; a
//! disallowed one gets 204 without CORS headers (the browser then refuses the request), as
//! `rs/cors`. Without `allowed_origins` nothing changes.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

/// The Collector's `CORSConfig`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    #[serde(default)]
    pub allowed_headers: Vec<String>,
    /// Seconds a browser may cache a preflight's answer (`Access-Control-Max-Age`).
    #[serde(default)]
    pub max_age: Option<u64>,
}

const METHODS: [Method; 3] = [Method::GET, Method::POST, Method::HEAD];

impl CorsConfig {
    pub fn enabled(&self) -> bool {
        !self.allowed_origins.is_empty()
    }

    /// Checked at load: at most one `*` per origin pattern, as `rs/cors` matches them.
    pub fn check(&self) -> Result<(), String> {
        for o in &self.allowed_origins {
            if o.matches('*').count() > 1 {
                return Err(format!(
                    "allowed_origins: {o:?} has more than one `*` (one wildcard per origin)"
                ));
            }
        }
        Ok(())
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        self.allowed_origins.iter().any(|pattern| {
            if pattern == "*" {
                return true;
            }
            match pattern.split_once('*') {
                None => pattern.eq_ignore_ascii_case(origin),
                Some((prefix, suffix)) => {
                    origin.len() >= prefix.len() + suffix.len()
                        && origin[..prefix.len()].eq_ignore_ascii_case(prefix)
                        && origin[origin.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                }
            }
        })
    }

    /// The headers a preflight asks for (`Access-Control-Request-Headers`) are allowed: each
    /// is in `allowed_headers` or implicitly allowed, as the Collector documents it (`Accept`,
    /// `Accept-Language`, `Content-Type`, `Content-Language`, and `rs/cors`'s `Origin`, plus its
    /// default `X-Requested-With` when `allowed_headers` is empty).
    fn headers_allowed(&self, requested: &str) -> bool {
        const IMPLICIT: [&str; 5] = [
            "accept",
            "accept-language",
            "content-type",
            "content-language",
            "origin",
        ];
        requested
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .all(|h| {
                IMPLICIT.iter().any(|i| i.eq_ignore_ascii_case(h))
                    || (self.allowed_headers.is_empty()
                        && h.eq_ignore_ascii_case("x-requested-with"))
                    || self
                        .allowed_headers
                        .iter()
                        .any(|a| a == "*" || a.eq_ignore_ascii_case(h))
            })
    }
}

/// The middleware: preflights answered, actual requests' answers given the CORS headers.
pub(crate) async fn middleware(
    State(cors): State<std::sync::Arc<CorsConfig>>,
    request: Request,
    next: Next,
) -> Response {
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .map(str::to_string);
    let Some(origin) = origin else {
        return next.run(request).await;
    };
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        return answer_preflight(&cors, &origin, request.headers());
    }
    let mut response = next.run(request).await;
    if cors.origin_allowed(&origin) {
        allow(response.headers_mut(), &origin);
    }
    vary(response.headers_mut(), "Origin");
    response
}

fn answer_preflight(cors: &CorsConfig, origin: &str, request: &HeaderMap) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let h = response.headers_mut();
    vary(
        h,
        "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
    );
    let method = request
        .get(header::ACCESS_CONTROL_REQUEST_METHOD)
        .and_then(|m| m.to_str().ok())
        .and_then(|m| m.parse::<Method>().ok());
    let requested_headers = request
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let ok = cors.origin_allowed(origin)
        && method.as_ref().is_some_and(|m| METHODS.contains(m))
        && cors.headers_allowed(requested_headers);
    if !ok {
        return response;
    }
    allow(h, origin);
    if let Some(m) = method.and_then(|m| HeaderValue::from_str(m.as_str()).ok()) {
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, m);
    }
    if !requested_headers.is_empty()
        && let Ok(v) = HeaderValue::from_str(requested_headers)
    {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    if let Some(age) = cors.max_age {
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(age));
    }
    response
}

fn allow(h: &mut HeaderMap, origin: &str) {
    if let Ok(o) = HeaderValue::from_str(origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
}

fn vary(h: &mut HeaderMap, what: &'static str) {
    h.append(header::VARY, HeaderValue::from_static(what));
}
