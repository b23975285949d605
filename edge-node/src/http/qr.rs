//! The pickup QR code of a student's order, drawn by the box as SVG (the page loads no
//! QR library, and the counter's scanner reads the same token the order carries).

use super::error::{ApiError, ErrorBody};
use super::extract::{Path, Student};
use crate::app::App;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use canteen_api::ids::OrderId;
use qrcode::render::svg;
use qrcode::{EcLevel, QrCode};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new().routes(routes!(pickup_qr))
}

/// The SVG of a QR code holding `text`, one unit per module; the page scales it.
pub fn svg_of(text: &str) -> Result<String, qrcode::types::QrError> {
    // Level M survives a scratched or glary phone screen and keeps a 64-character
    // token at a size a counter scanner reads from arm's length.
    let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M)?;
    Ok(code
        .render::<svg::Color<'_>>()
        .module_dimensions(1, 1)
        .quiet_zone(true)
        .dark_color(svg::Color("#000"))
        .light_color(svg::Color("#fff"))
        .build())
}

/// The QR code of my order's pickup token, as SVG. Only the order's owner gets it.
#[utoipa::path(get, path = "/api/student/orders/{id}/qr.svg", tag = "student", params(("id" = OrderId, Path)),
    responses((status = 200, content_type = "image/svg+xml", body = String),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn pickup_qr(
    State(app): State<App>,
    Student(student): Student,
    Path(id): Path<OrderId>,
) -> Result<impl IntoResponse, ApiError> {
    let order = super::student::own_order(&app, student, id).await?;
    let svg = svg_of(&order.pickup_token).map_err(ApiError::internal)?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            // The token is the order's claim ticket: no shared cache may keep it.
            (header::CACHE_CONTROL, "private, no-store"),
        ],
        svg,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_becomes_a_scalable_svg() {
        let svg = svg_of(&"ab12".repeat(16)).unwrap();
        assert!(svg.contains("<svg"));
        assert!(svg.contains("viewBox=\"0 0 "));
        assert!(svg.ends_with("</svg>"));
        // This token needs version 5 (37 modules) at level M, plus a 4-module quiet
        // zone on each side.
        assert!(svg.contains("width=\"45\""), "{}", &svg[..200]);
    }
}
