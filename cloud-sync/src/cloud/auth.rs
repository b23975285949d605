//! Who is calling the admin side. The JSON admin API takes a bearer token
//! (`Authorization: Bearer …`, from `POST /api/login` or `cloud-sync admin token`); the
//! console takes the same sessions as an `HttpOnly`, `SameSite=Strict` cookie (`Secure`
//! when served over TLS), and every console form carries the session's CSRF token. A
//! bearer is never read from a cookie and a cookie never authorises the JSON API, so a
//! page on another site can make the browser send neither. Logins are rate limited per
//! client address and per user name, and audited.

use super::admins::{AdminAccount, Session, token_digest};
use super::server::Cloud;
use axum::Json;
use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde_json::json;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

/// The console's session cookie.
pub const SESSION_COOKIE: &str = "canteen_admin";
/// The login form's CSRF cookie (double submit: the form repeats it).
pub const LOGIN_CSRF_COOKIE: &str = "canteen_login_csrf";

/// How the admin side is served.
#[derive(Debug, Clone)]
pub struct AdminOptions {
    /// How long a session lives after its login.
    pub session_ttl: Duration,
    /// Served over TLS: cookies are `Secure`.
    pub tls: bool,
    /// Login attempts per minute per client address, and per user name.
    pub logins_per_minute_per_address: u32,
    pub logins_per_minute_per_user: u32,
    /// When the fleet page raises alerts.
    pub alerts: super::fleet::AlertLimits,
}

impl Default for AdminOptions {
    fn default() -> Self {
        Self {
            session_ttl: Duration::from_secs(8 * 3600),
            tls: false,
            logins_per_minute_per_address: 20,
            logins_per_minute_per_user: 5,
            alerts: super::fleet::AlertLimits::default(),
        }
    }
}

/// The admin router's state.
#[derive(Clone)]
pub struct AdminState {
    pub cloud: Cloud,
    pub auth: Arc<Auth>,
}

impl FromRef<AdminState> for Cloud {
    fn from_ref(s: &AdminState) -> Cloud {
        s.cloud.clone()
    }
}

/// Keys tracked by a login limiter before it forgets the quiet ones.
const LIMITER_KEYS_MAX: usize = 10_000;

struct Limiter<K: Hash + Eq + Clone> {
    inner: DefaultKeyedRateLimiter<K>,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    fn per_minute(n: u32) -> Self {
        let n = NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN);
        Self {
            inner: RateLimiter::keyed(Quota::per_minute(n)),
        }
    }

    /// `Ok`, or the whole seconds to wait.
    fn check(&self, key: &K) -> Result<(), u64> {
        if self.inner.len() > LIMITER_KEYS_MAX {
            self.inner.retain_recent();
        }
        self.inner.check_key(key).map_err(|not_until| {
            not_until
                .wait_time_from(DefaultClock::default().now())
                .as_secs()
                .max(1)
        })
    }
}

pub struct Auth {
    pub options: AdminOptions,
    by_address: Limiter<IpAddr>,
    by_user: Limiter<String>,
}

impl Auth {
    pub fn new(options: AdminOptions) -> Self {
        Self {
            by_address: Limiter::per_minute(options.logins_per_minute_per_address),
            by_user: Limiter::per_minute(options.logins_per_minute_per_user),
            options,
        }
    }

    /// Counts a login attempt; refused with the seconds to wait.
    pub fn login_attempt(&self, from: IpAddr, username: &str) -> Result<(), AdminError> {
        self.by_address
            .check(&from)
            .and_then(|()| self.by_user.check(&username.to_owned()))
            .map_err(|wait| {
                AdminError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_logins",
                    format!("too many login attempts; try again in {wait} s"),
                )
            })
    }

    /// The `Set-Cookie` value of a session cookie (`token` empty: clear it).
    pub fn session_cookie(&self, token: &str) -> String {
        let max_age = if token.is_empty() {
            0
        } else {
            self.options.session_ttl.as_secs()
        };
        cookie(SESSION_COOKIE, token, max_age, self.options.tls)
    }
}

/// A cookie for this site only, invisible to scripts.
pub fn cookie(name: &str, value: &str, max_age_s: u64, secure: bool) -> String {
    format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{}",
        if secure { "; Secure" } else { "" }
    )
}

/// The value of cookie `name` in the request.
pub fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A refusal of the admin side: `{"error": {"code", "message"}}`.
#[derive(Debug)]
pub struct AdminError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl AdminError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// A failure of the cloud itself (its database, a lost task): 500.
    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "login_required",
            "log in first: POST /api/login, then send Authorization: Bearer <token>",
        )
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let mut res = (
            self.status,
            Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"canteen cloud\""),
            );
        }
        res
    }
}

impl From<anyhow::Error> for AdminError {
    fn from(e: anyhow::Error) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "admin_error",
            e.to_string(),
        )
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

async fn session_of(cloud: &Cloud, token: &str) -> Option<(Session, String)> {
    if token.is_empty() || token.len() > 128 {
        return None;
    }
    let digest = token_digest(token);
    let store = cloud.store.clone();
    let d = digest.clone();
    let found = tokio::task::spawn_blocking(move || store.session(&d, now_ms()))
        .await
        .ok()?
        .ok()?;
    found.map(|s| (s, digest))
}

/// A caller of the JSON admin API, by bearer token.
pub struct ApiCaller {
    pub account: AdminAccount,
    pub token_digest: String,
}

impl<S> FromRequestParts<S> for ApiCaller
where
    S: Send + Sync,
    Cloud: FromRef<S>,
{
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AdminError> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(AdminError::unauthorized)?;
        let cloud = Cloud::from_ref(state);
        let (session, token_digest) = session_of(&cloud, token.trim())
            .await
            .ok_or_else(AdminError::unauthorized)?;
        Ok(Self {
            account: session.account,
            token_digest,
        })
    }
}

/// A console user, by session cookie; without one the browser goes to the login page.
pub struct ConsoleCaller {
    pub account: AdminAccount,
    pub csrf: String,
    pub token_digest: String,
}

impl ConsoleCaller {
    /// Every console form repeats the session's CSRF token.
    pub fn check_csrf(&self, sent: &str) -> Result<(), AdminError> {
        let same = sent.len() == self.csrf.len()
            && sent
                .bytes()
                .zip(self.csrf.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if same && !sent.is_empty() {
            Ok(())
        } else {
            Err(AdminError::forbidden(
                "the form's CSRF token is missing or stale: reload the page",
            ))
        }
    }
}

/// Not logged in on the console.
pub struct ToLogin;

impl IntoResponse for ToLogin {
    fn into_response(self) -> Response {
        Redirect::to("/login").into_response()
    }
}

impl<S> FromRequestParts<S> for ConsoleCaller
where
    S: Send + Sync,
    Cloud: FromRef<S>,
{
    type Rejection = ToLogin;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ToLogin> {
        let token = cookie_value(&parts.headers, SESSION_COOKIE).ok_or(ToLogin)?;
        let cloud = Cloud::from_ref(state);
        let (session, token_digest) = session_of(&cloud, token).await.ok_or(ToLogin)?;
        Ok(Self {
            account: session.account,
            csrf: session.csrf,
            token_digest,
        })
    }
}
