//! The HTTP API. Routes are declared with their OpenAPI description next to the
//! handler, so `/api/openapi.json` always matches what is served.
//!
//! Layers, outermost first: compression (gzip when asked; never event streams) →
//! request id → trace span → metrics and error logging → (API and `/readyz`,
//! `/metrics`) in-flight cap and timeout → body limit → handler. `/healthz` is outside
//! the cap: it touches nothing.
//!
//! `/` is the students' ordering page (`page`), served from the binary.

pub mod error;
pub mod events;
pub mod extract;
pub mod health;
mod openapi;
pub mod page;
pub mod qr;
pub mod staff;
pub mod student;
pub mod webhook;

use crate::app::App;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use error::{ApiError, LoggedError};
use std::time::Instant;
use tower_http::compression::CompressionLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

#[derive(OpenApi)]
#[openapi(
    info(title = "Canteen edge box API", description = "Ordering, kitchen and hand-over API of one canteen box."),
    tags((name = "student"), (name = "staff"), (name = "payments"))
)]
struct ApiDoc;

/// Which listener a request came in on (set by the server on every request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Plain,
    Tls,
}

/// With a staff HTTPS listener configured, staff routes on the plain listener answer
/// only loopback clients: a staff password or token never crosses the LAN in the
/// clear. (The students' page and API stay plain HTTP on the LAN.)
async fn staff_over_tls(State(app): State<App>, req: Request, next: Next) -> Response {
    if let Some(tls) = &app.config.staff_tls
        // A request not marked as coming over TLS counts as plain.
        && req.extensions().get::<Transport>() != Some(&Transport::Tls)
        && req.uri().path().starts_with("/api/staff/")
    {
        let loopback = req
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .is_some_and(|c| c.0.ip().to_canonical().is_loopback());
        if !loopback {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                error::ErrorCode::TlsRequired,
                format!(
                    "staff use the box over HTTPS (port {}); plain HTTP carries only the students' page",
                    tls.listen.port()
                ),
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// The API routes and their OpenAPI document.
pub fn api() -> (Router<App>, utoipa::openapi::OpenApi) {
    let (router, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(student::routes())
        .merge(staff::routes())
        .merge(webhook::routes())
        .merge(qr::routes())
        .merge(events::routes())
        .split_for_parts();
    openapi::complete(&mut doc);
    (router, doc)
}

pub fn router(app: App) -> Router {
    let (api, doc) = api();
    let doc = std::sync::Arc::new(openapi::to_json(&doc));
    let api = api
        .route(
            "/api/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { axum::Json((*doc).clone()) }
            }),
        )
        .merge(health::ops_routes())
        .layer(middleware::from_fn_with_state(app.clone(), guard));
    let request_id = HeaderName::from_static("x-request-id");
    Router::new()
        .merge(api)
        .merge(health::routes())
        .merge(page::routes())
        .fallback(|| async { ApiError::not_found(error::ErrorCode::NotFound, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, error::ErrorCode::MethodNotAllowed, "method not allowed here")
        })
        .layer(DefaultBodyLimit::max(app.config.body_limit_bytes))
        .layer(middleware::from_fn_with_state(app.clone(), staff_over_tls))
        .layer(middleware::from_fn_with_state(app.clone(), observe))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let id = req
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            tracing::info_span!("request", method = %req.method(), uri = %req.uri().path(), request_id = %id)
        }))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .layer(CompressionLayer::new())
        .with_state(app)
}

/// Bounds what the API (and the operations routes that read the database: `/readyz`,
/// `/metrics`) does at once and how long a request may take. An event stream passes
/// this layer when it opens; once open it is held by its own pools (per account, and
/// students apart from staff), not by this cap.
async fn guard(State(app): State<App>, req: Request, next: Next) -> Response {
    let Ok(_permit) = app.request_permits.clone().try_acquire_owned() else {
        return ApiError::overloaded().into_response();
    };
    match tokio::time::timeout(app.config.request_timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            error::ErrorCode::Timeout,
            "the box took too long; try again",
        )
        .retry_after(1)
        .into_response(),
    }
}

/// The metric label of a method: the standard ones by name, anything else `other`
/// (a client inventing methods must not add series without bound).
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Counts and times every request by route, and logs each failure once.
async fn observe(State(app): State<App>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let method = method_label(req.method());
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status();
    app.metrics
        .requests
        .with_label_values(&[method, route.as_str(), status.as_str()])
        .inc();
    app.metrics
        .latency
        .with_label_values(&[method, route.as_str()])
        .observe(started.elapsed().as_secs_f64());
    if let Some(logged) = response.extensions().get::<LoggedError>() {
        if status.is_server_error() {
            tracing::error!(%status, code = logged.code.as_str(), cause = logged.internal.as_deref().unwrap_or(""), "request failed");
        } else {
            tracing::debug!(%status, code = logged.code.as_str(), "request refused");
        }
    }
    response
}
