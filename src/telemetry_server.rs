//! Serves sluice's own metrics (the Collector's `otelcol_*` names) as Prometheus text on
//! `service.telemetry.metrics.address` (default `localhost:8888`).

use axum::Router;
use axum::http::header;
use axum::routing::get;
use sluice_engine::config_types::bind_address;
use sluice_engine::telemetry::Telemetry;
use tokio::sync::oneshot;

/// Binds `address` and serves `GET /metrics` until the returned sender is dropped or fired.
pub async fn start(address: &str, telemetry: Telemetry) -> anyhow::Result<oneshot::Sender<()>> {
    let listener = tokio::net::TcpListener::bind(bind_address(address).as_ref())
        .await
        .map_err(|e| {
            anyhow::anyhow!("service.telemetry.metrics: cannot listen on {address}: {e}")
        })?;
    tracing::info!(address = %address, "self-telemetry on /metrics");
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let t = telemetry.clone();
            async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    t.render(),
                )
            }
        }),
    );
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
    });
    Ok(tx)
}
