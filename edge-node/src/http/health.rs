//! Operations endpoints: health, readiness, Prometheus metrics. (`/` is the students'
//! page, in `page`.)

use super::error::ApiError;
use crate::app::App;
use crate::session::LoginSpace;
use crate::store::{orders, outbox};
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::json;

/// `/healthz`: outside every limit (it touches nothing).
pub(super) fn routes() -> axum::Router<App> {
    axum::Router::new().route("/healthz", axum::routing::get(healthz))
}

/// `/readyz` and `/metrics` read the database: they go inside the in-flight cap and
/// timeout with the API.
pub(super) fn ops_routes() -> axum::Router<App> {
    axum::Router::new()
        .route("/readyz", axum::routing::get(readyz))
        .route("/metrics", axum::routing::get(metrics))
        .route("/status", axum::routing::get(status))
}

/// `edge-node status` of a serving box: for the operator at the box's shell only (it
/// names the data directory and the link's last error), so loopback clients only.
async fn status(
    State(app): State<App>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
) -> Result<impl IntoResponse, ApiError> {
    let loopback = peer.is_some_and(|p| p.0.0.ip().to_canonical().is_loopback());
    if !loopback {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            super::error::ErrorCode::Forbidden,
            "the box's status answers only on the box itself (run `edge-node status` there)",
        ));
    }
    Ok(axum::Json(crate::ops::status::live(&app).await?))
}

/// The process is up. Cheap: also the load generator's no-op baseline.
async fn healthz() -> impl IntoResponse {
    axum::Json(json!({ "status": "ok" }))
}

/// The database answers reads.
async fn readyz(State(app): State<App>) -> Result<impl IntoResponse, ApiError> {
    let last_seq = app.readers.read(outbox::last_seq).await?;
    Ok(axum::Json(
        json!({ "status": "ready", "node_id": app.node_id, "outbox_last_seq": last_seq }),
    ))
}

async fn metrics(State(app): State<App>) -> Result<impl IntoResponse, ApiError> {
    let day = app.today();
    let (counts, depth, last) = app
        .readers
        .read(move |c| {
            Ok((
                orders::count_by_state(c, day)?,
                outbox::depth(c)?,
                outbox::last_seq(c)?,
            ))
        })
        .await?;
    for (state, n) in counts {
        app.metrics
            .orders
            .with_label_values(&[state.as_str()])
            .set(n);
    }
    app.metrics.outbox_depth.set(depth);
    let sync = crate::ops::sync::state(&app).await?;
    app.metrics.sync_connected.set(i64::from(sync.connected));
    app.metrics.sync_unacked_events.set(sync.unacked_events);
    app.metrics
        .sync_oldest_unacked_age
        .set(sync.oldest_unacked_age_s);
    app.metrics
        .sync_last_success
        .set(sync.last_success_unix.unwrap_or(0) as i64);
    app.metrics.outbox_last_seq.set(last);
    for space in [LoginSpace::Student, LoginSpace::Staff] {
        app.metrics
            .login_accounts_backing_off
            .with_label_values(&[space.as_str()])
            .set(app.limits.login.accounts_backing_off(space) as i64);
    }
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    ))
}
