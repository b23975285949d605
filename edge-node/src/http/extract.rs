//! Extractors: JSON, path and query with our error shape, and the authenticated caller.

use super::error::ApiError;
use crate::app::App;
use crate::session::{AuthError, Role};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use canteen_api::ids::{StaffId, StudentId};
use std::net::{IpAddr, SocketAddr};

/// `axum::Json` whose rejections are [`ApiError`]s.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

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

/// The bearer token: `Authorization: Bearer …`, or `?access_token=…` for event
/// streams (browsers' EventSource cannot set headers).
fn bearer(parts: &Parts) -> Option<String> {
    if let Some(v) = parts.headers.get(header::AUTHORIZATION) {
        return v
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")
            .map(|t| t.trim().to_owned());
    }
    parts.uri.query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("access_token="))
            .map(str::to_owned)
    })
}

fn claims(parts: &Parts, app: &App) -> Result<crate::session::Claims, ApiError> {
    let token = bearer(parts).ok_or(AuthError::Missing)?;
    Ok(app.tokens.verify(&token, app.clock.now())?)
}

/// A logged-in student.
pub struct Student(pub StudentId);

impl FromRequestParts<App> for Student {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        let c = claims(parts, app)?;
        if c.role != Role::Student {
            return Err(ApiError::forbidden("this needs a student login"));
        }
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
        match c.role {
            Role::Staff | Role::Manager => Ok(Staff {
                id: StaffId(c.sub),
                role: c.role,
            }),
            Role::Student => Err(ApiError::forbidden("this needs a staff login")),
        }
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
