//! Extractors: JSON, path and query with our error shape, and the authenticated caller.

use super::error::{ApiError, ErrorCode};
use crate::app::App;
use crate::session::{AuthError, Role};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use canteen_api::ids::{StaffId, StudentId};
use std::net::{IpAddr, SocketAddr};

/// A JSON body (or response) whose refusals are [`ApiError`]s: 415 without a JSON
/// content type, 413 beyond the body limit, 400 for bad JSON, 422 (`invalid_body`, with
/// the path of the offending field) for JSON of the wrong shape.
///
/// JSON Schema counts `2.0` as an integer, and so do generated clients; serde does not.
/// A body refused only for that is read again with integral floats taken as integers
/// (the common path parses once).
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|m| m.trim().to_ascii_lowercase())
            .is_some_and(|m| {
                m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
            });
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::UnsupportedMediaType,
                "send the body as JSON with Content-Type: application/json",
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|r| {
                if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        ErrorCode::BodyTooLarge,
                        "the request body is too large",
                    )
                } else {
                    ApiError::new(r.status(), ErrorCode::BadBody, r.body_text())
                }
            })?;
        let mut strict = serde_json::Deserializer::from_slice(&bytes);
        let first = match serde_path_to_error::deserialize::<_, T>(&mut strict) {
            Ok(value) => return Ok(Json(value)),
            Err(e) => e,
        };
        if !first.inner().is_data() {
            return Err(ApiError::bad_request(
                ErrorCode::BadJson,
                format!("the body is not valid JSON: {}", first.inner()),
            ));
        }
        let refused = || {
            ApiError::unprocessable(
                ErrorCode::InvalidBody,
                format!("Failed to deserialize the JSON body into the target type: {first}"),
            )
        };
        let mut value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| refused())?;
        if !integral_floats_to_integers(&mut value) {
            return Err(refused());
        }
        serde_json::from_value(value)
            .map(Json)
            .map_err(|_| refused())
    }
}

/// Replaces every float with no fractional part (within i64) by that integer; says
/// whether anything changed.
fn integral_floats_to_integers(value: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::Number(n) if n.is_f64() => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
                *value = Value::from(f as i64);
                true
            }
            _ => false,
        },
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |changed, v| integral_floats_to_integers(v) | changed),
        Value::Object(map) => map
            .values_mut()
            .fold(false, |changed, v| integral_floats_to_integers(v) | changed),
        _ => false,
    }
}

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// The caller's IP (from the socket; "unspecified" in socket-less router tests).
pub struct ClientIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip()),
        ))
    }
}

/// Routes that accept `?access_token=`: browsers' EventSource cannot set headers.
/// Everywhere else a token in the URL is refused, so it never lands in access logs,
/// proxies' logs or browser histories.
const TOKEN_IN_QUERY_ROUTES: [&str; 2] = ["/api/student/events", "/api/staff/events"];

/// The bearer token: `Authorization: Bearer …`, or `?access_token=…` on event streams.
fn bearer(parts: &Parts) -> Result<String, ApiError> {
    if let Some(v) = parts.headers.get(header::AUTHORIZATION) {
        return v
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| t.trim().to_owned())
            .ok_or_else(|| AuthError::Missing.into());
    }
    let in_query = parts.uri.query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("access_token="))
            .map(str::to_owned)
    });
    match in_query {
        Some(token) if TOKEN_IN_QUERY_ROUTES.contains(&parts.uri.path()) => Ok(token),
        Some(_) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::TokenInQuery,
            "send the token as Authorization: Bearer; access_token in the URL is accepted only by event streams",
        )),
        None => Err(AuthError::Missing.into()),
    }
}

/// The caller's verified token, checked against the account as it is now: a token of
/// a deactivated account is refused, and the role is the account's current one (a
/// demoted manager loses manager routes on the next request).
fn claims(parts: &Parts, app: &App) -> Result<crate::session::Claims, ApiError> {
    let token = bearer(parts)?;
    let mut claims = app.tokens.verify(&token, app.clock.now())?;
    match app.accounts.get(claims.sub) {
        Some(state) if state.active => {
            claims.role = state.role;
            Ok(claims)
        }
        _ => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::AccountDisabled,
            "this account has been deactivated; ask the canteen office",
        )),
    }
}

/// When the caller's token expires (Unix seconds): set on the request by the
/// `Student` and `Staff` extractors, for long-lived responses (event streams) that
/// must end with the session.
#[derive(Debug, Clone, Copy)]
pub struct SessionEnds(pub i64);

/// A logged-in student.
pub struct Student(pub StudentId);

impl FromRequestParts<App> for Student {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        let c = claims(parts, app)?;
        if c.role != Role::Student {
            return Err(ApiError::forbidden("this needs a student login"));
        }
        parts.extensions.insert(SessionEnds(c.exp));
        Ok(Student(StudentId(c.sub)))
    }
}

/// Logged-in staff (role staff or manager).
pub struct Staff {
    pub id: StaffId,
    pub role: Role,
}

impl FromRequestParts<App> for Staff {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        let c = claims(parts, app)?;
        parts.extensions.insert(SessionEnds(c.exp));
        match c.role {
            Role::Staff | Role::Manager => Ok(Staff {
                id: StaffId(c.sub),
                role: c.role,
            }),
            Role::Student => Err(ApiError::forbidden("this needs a staff login")),
        }
    }
}

/// Whether the caller is logged-in staff (a valid, active staff token). Never
/// refuses: public routes use it to show staff more (exact stock counts).
pub struct IsStaff(pub bool);

impl FromRequestParts<App> for IsStaff {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        Ok(IsStaff(
            parts.headers.contains_key(header::AUTHORIZATION)
                && claims(parts, app).is_ok_and(|c| c.role != Role::Student),
        ))
    }
}

/// A logged-in manager.
pub struct Manager(pub StaffId);

impl FromRequestParts<App> for Manager {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        let staff = Staff::from_request_parts(parts, app).await?;
        if staff.role != Role::Manager {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                super::error::ErrorCode::Forbidden,
                "this needs a manager login",
            ));
        }
        Ok(Manager(staff.id))
    }
}
