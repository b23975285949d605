//! Completes the OpenAPI document with what every route can answer besides its own
//! outcomes, so a client (or a conformance fuzzer) finds every status documented:
//!
//! - every operation: 500 `internal`, 503 `overloaded` / `timeout` / `shutting_down`;
//! - a JSON body: 400 `bad_json`, 413 `body_too_large`, 415 `unsupported_media_type`,
//!   422 `invalid_body` (valid JSON of the wrong shape);
//! - path parameters: 400 `bad_path`, 404 (no such order or item);
//! - query parameters: 400 `bad_query`;
//! - student and staff routes (all but the logins): 401 (no, bad or expired token),
//!   403 (the wrong role), and the bearer security scheme.
//!
//! These follow from the layers and extractors every route shares (`extract`, the
//! `guard` middleware, `ApiError`); a route's own refusals are in its annotation.

use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{AdditionalProperties, Schema};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr};

fn error_response(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build(),
    )
}

fn add(op: &mut Operation, status: &str, description: &str) {
    op.responses
        .responses
        .entry(status.to_owned())
        .or_insert_with(|| error_response(description));
}

/// Does this path need a student or staff token?
fn needs_login(path: &str) -> bool {
    (path.starts_with("/api/student/") && path != "/api/student/login")
        || (path.starts_with("/api/staff/") && path != "/api/staff/login")
}

/// Request bodies that are tagged enums: serde refuses unknown fields in each variant,
/// which utoipa does not say for enum variants.
const STRICT_ENUMS: &[&str] = &["StaffStockAction", "MenuEdit", "SettingsEdit"];

pub(super) fn complete(doc: &mut OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    for name in STRICT_ENUMS {
        if let Some(RefOr::T(Schema::OneOf(one_of))) = components.schemas.get_mut(*name) {
            for variant in &mut one_of.items {
                if let RefOr::T(Schema::Object(object)) = variant {
                    object.additional_properties =
                        Some(Box::new(AdditionalProperties::FreeForm(false)));
                }
            }
        }
    }
    components.security_schemes.insert(
        "bearer".to_owned(),
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .build(),
        ),
    );
    for (path, item) in doc.paths.paths.iter_mut() {
        let ops = [
            item.get.as_mut(),
            item.put.as_mut(),
            item.post.as_mut(),
            item.delete.as_mut(),
            item.patch.as_mut(),
        ];
        for op in ops.into_iter().flatten() {
            add(op, "500", "Something went wrong on the box (`internal`).");
            add(
                op,
                "503",
                "The box is busy, took too long or is restarting (`overloaded`, `timeout`, `shutting_down`); see Retry-After.",
            );
            if op.request_body.is_some() {
                add(op, "400", "The body is not JSON (`bad_json`).");
                add(op, "413", "The body is too large (`body_too_large`).");
                add(
                    op,
                    "415",
                    "The body is not sent as application/json (`unsupported_media_type`).",
                );
                add(
                    op,
                    "422",
                    "The body does not match its schema (`invalid_body`).",
                );
            }
            let params = op.parameters.as_deref().unwrap_or_default();
            let in_path = params.iter().any(|p| p.parameter_in == ParameterIn::Path);
            let in_query = params.iter().any(|p| p.parameter_in == ParameterIn::Query);
            if in_path {
                add(op, "400", "A path parameter is malformed (`bad_path`).");
                add(op, "404", "No such order or item.");
            }
            if in_query {
                add(op, "400", "A query parameter is malformed (`bad_query`).");
            }
            if needs_login(path) {
                add(
                    op,
                    "401",
                    "No valid login (`unauthenticated`, `invalid_token`, `session_expired`).",
                );
                add(op, "403", "This login may not do this (`forbidden`).");
                op.security = Some(vec![SecurityRequirement::new(
                    "bearer",
                    Vec::<String>::new(),
                )]);
            }
        }
    }
}

/// The document as served: JSON Schema keywords utoipa has no attribute for are added
/// here (a staff adjustment's `delta` is never 0).
pub(super) fn to_json(doc: &OpenApi) -> serde_json::Value {
    let mut json = serde_json::to_value(doc).unwrap_or_default();
    if let Some(variants) = json
        .pointer_mut("/components/schemas/StaffStockAction/oneOf")
        .and_then(serde_json::Value::as_array_mut)
    {
        for variant in variants {
            if let Some(delta) = variant.pointer_mut("/properties/delta")
                && let Some(obj) = delta.as_object_mut()
            {
                obj.insert("not".to_owned(), serde_json::json!({ "const": 0 }));
            }
        }
    }
    json
}
