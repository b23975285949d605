//! The campus-card system's payment webhook. The signature is checked over the raw
//! body before anything is parsed; a bad one is a 401 and changes nothing.

use super::error::{ApiError, ErrorBody, ErrorCode};
use super::extract::Json;
use crate::app::App;
use crate::core::payment;
use crate::ops;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use canteen_api::order::OrderView;
use canteen_api::staff::CampusCardPayment;
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
    responses((status = 200, body = OrderView), (status = 401, description = "the signature does not match (`bad_signature`)", body = ErrorBody),
        (status = 404, description = "campus-card payment is not enabled here, or no such order", body = ErrorBody),
        (status = 409, description = "the order cannot be paid now, or the transaction paid another order", body = ErrorBody),
        (status = 422, description = "a bad notice: transaction id, amount", body = ErrorBody)))]
async fn campus_card(
    State(app): State<App>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<OrderView>, ApiError> {
    let Some(secret) = app.config.campus_card_secret.clone() else {
        return Err(ApiError::not_found(
            ErrorCode::CampusCardDisabled,
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
            ErrorCode::BadSignature,
            "the X-Signature does not match the body",
        ));
    }
    let p: CampusCardPayment = serde_json::from_slice(&body).map_err(|e| {
        ApiError::unprocessable(ErrorCode::InvalidBody, format!("bad payment notice: {e}"))
    })?;
    let (order, _replayed) = ops::orders::campus_card(&app, p).await?;
    Ok(Json(order))
}
