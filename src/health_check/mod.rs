//! The `health_check` extension (the Collector's `healthcheckextension`): `GET {path}` on
//! `endpoint` answers 200 with `{"status":"Server available",...}` once every pipeline has
//! started, and 503 before that and from the moment shutdown begins, so a Kubernetes readiness
//! probe stops routing to a pod that is draining.
//!
//! ```yaml
//! extensions:
//!   health_check:
//!     endpoint: localhost:13133   # default
//!     path: /                     # default
//! ```

use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use serde::Deserialize;
use sluice_engine::component::{
    BoxFuture, BuildContext, ComponentError, ConfigError, Factory, Kind, Lifecycle, NoEffect,
    ParsedConfig, Service, parse_config,
};
use sluice_engine::config_types::{bind_address, check_listen_endpoint};
use sluice_engine::health::{Health, Status};
use sluice_engine::schema::Signal;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    #[serde(default = "default_path")]
    pub path: String,
    /// Accepted for compatibility with Collector configs; sluice's health already reflects
    /// pipeline start and shutdown.
    #[serde(default)]
    #[allow(
        dead_code,
        reason = "accepted so Collector configs load; nothing to configure"
    )]
    pub check_collector_pipeline: Option<serde_json::Value>,
}

fn default_endpoint() -> String {
    "localhost:13133".into()
}
fn default_path() -> String {
    "/".into()
}

pub struct HealthCheckFactory;

impl Factory for HealthCheckFactory {
    fn kind(&self) -> Kind {
        Kind::Extension
    }
    fn type_name(&self) -> &'static str {
        "health_check"
    }
    fn signals(&self) -> &'static [Signal] {
        &[]
    }
    fn description(&self) -> &'static str {
        "HTTP health endpoint for readiness/liveness probes (default localhost:13133)"
    }
    fn without_effect(&self) -> &'static [NoEffect] {
        const SETTINGS: &[NoEffect] = &[NoEffect::new(
            "check_collector_pipeline.enabled",
            "health already follows pipeline start and shutdown; exporter failures do not \
                  change it",
        )];
        SETTINGS
    }
    fn parse_config(&self, config: &serde_json::Value) -> Result<ParsedConfig, ConfigError> {
        let c: HealthCheckConfig = parse_config(config)?;
        check_listen_endpoint(&c.endpoint).map_err(|m| ConfigError::new("endpoint", m))?;
        if !c.path.starts_with('/') {
            return Err(ConfigError::new("path", "must start with `/`"));
        }
        Ok(Arc::new(c))
    }
    fn build_extension(
        &self,
        ctx: BuildContext,
        health: Health,
    ) -> Result<Arc<dyn Service>, ComponentError> {
        let config = ctx.config::<HealthCheckConfig>()?;
        Ok(Arc::new(HealthCheck {
            id: ctx.id,
            config,
            health,
            stop: Mutex::new(None),
        }))
    }
}

struct HealthCheck {
    id: sluice_engine::component::ComponentId,
    config: Arc<HealthCheckConfig>,
    health: Health,
    stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

impl Lifecycle for HealthCheck {
    fn start(&self) -> BoxFuture<'_, Result<(), ComponentError>> {
        Box::pin(async move {
            let listener =
                tokio::net::TcpListener::bind(bind_address(&self.config.endpoint).as_ref())
                    .await
                    .map_err(|e| {
                        ComponentError::new(
                            &self.id,
                            format!("cannot listen on {}: {e}", self.config.endpoint),
                        )
                    })?;
            let health = self.health.clone();
            let since = SystemTime::now();
            let started = Instant::now();
            let app = Router::new().route(
                &self.config.path,
                get(move || {
                    let health = health.clone();
                    async move {
                        let up_since = humantime_rfc3339(since);
                        let uptime = format!("{:?}", started.elapsed());
                        match health.status() {
                            Status::Ready => (
                                StatusCode::OK,
                                axum::Json(serde_json::json!({
                                    "status": "Server available", "upSince": up_since, "uptime": uptime
                                })),
                            ),
                            _ => (
                                StatusCode::SERVICE_UNAVAILABLE,
                                axum::Json(serde_json::json!({
                                    "status": "Server not available", "upSince": up_since, "uptime": uptime
                                })),
                            ),
                        }
                    }
                }),
            );
            let (tx, rx) = tokio::sync::oneshot::channel();
            *self.stop.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
            match listener.local_addr() {
                Ok(addr) => {
                    tracing::info!(extension = %self.id, address = %addr, "health check listening")
                }
                Err(e) => {
                    tracing::info!(extension = %self.id, endpoint = %self.config.endpoint, error = %e, "health check listening")
                }
            }
            tokio::spawn(async move {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    })
                    .await;
            });
            Ok(())
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(tx) = self.stop.lock().unwrap_or_else(|e| e.into_inner()).take() {
                let _ = tx.send(());
            }
        })
    }
}

/// RFC 3339 UTC timestamp without pulling a date crate in for one field.
fn humantime_rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates_are_right() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        assert_eq!(humantime_rfc3339(t), "2023-11-14T22:13:20Z");
        assert_eq!(
            humantime_rfc3339(SystemTime::UNIX_EPOCH),
            "1970-01-01T00:00:00Z"
        );
    }
}
