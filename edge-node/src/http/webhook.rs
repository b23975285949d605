//! The campus-card system's payment webhook. The signature is checked over the raw
//! body before anything is parsed; a bad one is a 401 and changes nothing.

use super::error::{ApiError, ErrorBody};
use super::extract::Json;
use crate::app::App;
use crate::order::OrderView;
use crate::payment::{self, CampusCardPayment};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub const SIGNATURE_HEADER: &str = "x-signature";

pub(super) fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new().routes(routes!(campus_card))
}

/// Campus-card payment confirmation. `X-Signature` is the hex HMAC-SHA256 of the raw
/// body with the shared secret. Idempotent by `transaction_id`.
#[utoipa::path(post, path = "/api/payments/campus-card", tag = "payments", request_body = CampusCardPayment,
    params(("X-Signature" = String, Header, description = "hex HMAC-SHA256 of the body")),
    responses((status = 200, body = OrderView), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn campus_card(
    State(app): State<App>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<OrderView>, ApiError> {
    let Some(secret) = app.config.campus_card_secret.clone() else {
        return Err(ApiError::not_found(
            "campus_card_disabled",
            "campus-card payment is not enabled at this canteen",
        ));
    };
    let signature = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !payment::signature_ok(&secret, &body, signature) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            "the X-Signature does not match the body",
        ));
    }
    let p: CampusCardPayment = serde_json::from_slice(&body)
        .map_err(|e| ApiError::unprocessable("invalid_body", format!("bad payment notice: {e}")))?;
    let (order, _replayed) = app
        .writer
        .write(move |ctx| payment::campus_card(ctx, &p))
        .await?;
    Ok(Json(order))
}
