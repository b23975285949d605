//! The box's staff HTTP API, as this app uses it: requests and answers in the box's own
//! wire types (`canteen_api`, declared once for box, app and cloud), and every error
//! answer mapped to a `UiError` carrying the box's stable code (`pickup_not_found`,
//! `stale_version`, ...). The app never touches the box's database; this is its only way
//! in. Staff passwords and tokens travel over HTTPS (the box's staff listener, with a
//! certificate from the campus CA the app was given at set-up); plain HTTP is spoken
//! only to a box on this computer, or with the explicit switch for the demo.

use crate::error::UiError;
use canteen_api::menu::{ItemFields, MenuEdit, MenuItem, MenuResponse};
use canteen_api::order::DaySummary;
use canteen_api::staff::{
    BlockRequest, HandOverRequest, LoginResponse, StaffLogin, StaffMenu, StudentStanding,
    SyncState, TransitionRequest,
};
use canteen_api::stock::{StaffStockAction, StockLevel};
use canteen_api::{ErrorBody, ItemId, OrderEvent, OrderId, OrderState, OrderView};
use reqwest::{Method, RequestBuilder, Response};
use serde::de::DeserializeOwned;
use std::time::Duration;

/// One request may take this long before the box counts as unreachable.
const REQUEST_TIMEOUT_MS: u64 = 8_000;
const CONNECT_TIMEOUT_MS: u64 = 3_000;

/// How the app trusts boxes: the campus CA it was given at set-up, and whether plain
/// HTTP to another computer is allowed (the demo switch).
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// The campus CA certificate (PEM). HTTPS boxes must present a certificate it
    /// signed; no other roots are trusted.
    pub ca_pem: Option<Vec<u8>>,
    /// Allow `http://` to a box that is not on this computer. Only for the demo: the
    /// staff password and token would cross the LAN in the clear.
    pub allow_plain_http: bool,
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare == "localhost"
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Normalises a typed box address: `127.0.0.1:8080` → `http://127.0.0.1:8080`,
/// `https://box:8443/` → `https://box:8443`, no trailing slash.
pub fn normalise_base(input: &str) -> Result<String, UiError> {
    let trimmed = input.trim().trim_end_matches('/');
    if trimmed.is_empty() {
        return Err(UiError::input("bad_address", "enter the box's address"));
    }
    let with_scheme = if trimmed.contains("://") {
        trimmed.to_owned()
    } else {
        format!("http://{trimmed}")
    };
    let rest = with_scheme
        .strip_prefix("http://")
        .or_else(|| with_scheme.strip_prefix("https://"))
        .ok_or_else(|| {
            UiError::input(
                "bad_address",
                "the box's address must start with https:// (or http:// on this computer)",
            )
        })?;
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') => (host, Some(port)),
        _ => (rest, None),
    };
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    if host.is_empty()
        || !port_ok
        || host.contains(char::is_whitespace)
        || rest.contains(['/', '?', '#', '@'])
    {
        return Err(UiError::input(
            "bad_address",
            format!("{input:?} is not a box address like https://192.168.1.10:8443"),
        ));
    }
    Ok(with_scheme)
}

/// The base URL the app may use under `trust`: plain HTTP only to this computer
/// unless the demo switch is on.
pub fn checked_base(input: &str, trust: &Trust) -> Result<String, UiError> {
    let base = normalise_base(input)?;
    if let Some(rest) = base.strip_prefix("http://") {
        let host = rest.rsplit_once(':').map_or(rest, |(h, _)| h);
        if !is_loopback(host) && !trust.allow_plain_http {
            return Err(UiError::input(
                "plain_http_refused",
                "staff sign in over HTTPS: use the box's https:// address (plain http:// is allowed only to this computer)",
            ));
        }
    } else if trust.ca_pem.is_none() {
        return Err(UiError::input(
            "no_campus_ca",
            "this terminal has no campus CA certificate: put ca.pem in the app's config directory (or set CANTEEN_STAFF_CA)",
        ));
    }
    Ok(base)
}

/// Maps an error answer to a `UiError`: the box's `{error:{code,message}}` when it
/// sent one, else the bare status. A code this app does not know (from a newer box) is
/// kept as the box sent it, so the page still shows it and the box's message.
pub fn error_from_body(status: u16, body: &[u8]) -> UiError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody { error }) => UiError::Api {
            status,
            code: error.code.as_str().to_owned(),
            message: error.message,
        },
        Err(_) => UiError::Api {
            status,
            code: format!("http_{status}"),
            message: String::from_utf8_lossy(body).chars().take(200).collect(),
        },
    }
}

/// A client of one box, logged in or not. Cheap to clone (the HTTP pool is shared).
#[derive(Debug, Clone)]
pub struct BoxClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl BoxClient {
    /// A client of a box on this computer (plain HTTP to loopback) or of an HTTPS box
    /// the campus CA vouches for; see [`BoxClient::with_trust`].
    pub fn new(address: &str) -> Result<Self, UiError> {
        Self::with_trust(address, &Trust::default())
    }

    /// A client of the box at `address`, trusting only `trust`'s campus CA.
    pub fn with_trust(address: &str, trust: &Trust) -> Result<Self, UiError> {
        let base = checked_base(address, trust)?;
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_millis(REQUEST_TIMEOUT_MS))
            .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
            .tls_built_in_root_certs(false)
            .https_only(base.starts_with("https://"));
        if let Some(pem) = &trust.ca_pem {
            let cas = reqwest::Certificate::from_pem_bundle(pem)
                .ok()
                .filter(|cas| !cas.is_empty())
                .ok_or_else(|| {
                    UiError::input(
                        "bad_campus_ca",
                        "the campus CA file holds no PEM certificate",
                    )
                })?;
            for ca in cas {
                builder = builder.add_root_certificate(ca);
            }
        }
        let http = builder.build().map_err(|e| match &trust.ca_pem {
            Some(_) => UiError::input("bad_campus_ca", format!("the campus CA certificate: {e}")),
            None => UiError::Unreachable {
                message: e.to_string(),
            },
        })?;
        Ok(Self {
            http,
            base,
            token: None,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    pub fn with_token(mut self, token: String) -> Self {
        self.token = Some(token);
        self
    }

    /// The request for `path`, authenticated when logged in.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let rb = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    /// The event stream's URL (the box takes the token as a query parameter there).
    pub fn events_url(&self, after_seq: Option<i64>) -> Result<String, UiError> {
        let token = self.token.as_deref().ok_or(UiError::NotLoggedIn)?;
        let mut url = format!("{}/api/staff/events?access_token={token}", self.base);
        if let Some(seq) = after_seq {
            url.push_str(&format!("&after_seq={seq}"));
        }
        Ok(url)
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    async fn send<T: DeserializeOwned>(rb: RequestBuilder) -> Result<T, UiError> {
        let response: Response = rb.send().await?;
        let status = response.status();
        let body = response.bytes().await?;
        if !status.is_success() {
            return Err(error_from_body(status.as_u16(), &body));
        }
        serde_json::from_slice(&body).map_err(|e| UiError::Protocol {
            message: e.to_string(),
        })
    }

    pub async fn login(&self, username: &str, password: &str) -> Result<LoginResponse, UiError> {
        if username.trim().is_empty() || password.is_empty() {
            return Err(UiError::input(
                "missing_credentials",
                "enter user name and password",
            ));
        }
        let body = StaffLogin {
            username: username.trim().to_owned(),
            password: password.to_owned(),
        };
        Self::send(self.request(Method::POST, "/api/staff/login").json(&body)).await
    }

    /// Today's open orders (placed, paid, preparing, ready), oldest first.
    pub async fn open_orders(&self) -> Result<Vec<OrderView>, UiError> {
        let states: Vec<&str> = OrderState::OPEN.iter().map(|s| s.as_str()).collect();
        Self::send(self.request(
            Method::GET,
            &format!("/api/staff/orders?state={}", states.join(",")),
        ))
        .await
    }

    pub async fn order(&self, id: OrderId) -> Result<OrderView, UiError> {
        Self::send(self.request(Method::GET, &format!("/api/staff/orders/{id}"))).await
    }

    pub async fn transition(
        &self,
        id: OrderId,
        event: OrderEvent,
        version: i64,
    ) -> Result<OrderView, UiError> {
        let body = TransitionRequest { event, version };
        Self::send(
            self.request(Method::POST, &format!("/api/staff/orders/{id}/transitions"))
                .json(&body),
        )
        .await
    }

    /// Cancels every unpaid open order of a student.
    pub async fn cancel_unpaid(&self, student_number: &str) -> Result<StudentStanding, UiError> {
        Self::send(self.request(
            Method::POST,
            &format!("/api/staff/students/{student_number}/cancel-unpaid"),
        ))
        .await
    }

    /// Blocks a student from ordering, with a reason (and cancels their unpaid orders).
    pub async fn block(
        &self,
        student_number: &str,
        request: &BlockRequest,
    ) -> Result<StudentStanding, UiError> {
        Self::send(
            self.request(
                Method::POST,
                &format!("/api/staff/students/{student_number}/block"),
            )
            .json(request),
        )
        .await
    }

    /// Lets a blocked student order again.
    pub async fn unblock(&self, student_number: &str) -> Result<StudentStanding, UiError> {
        Self::send(self.request(
            Method::DELETE,
            &format!("/api/staff/students/{student_number}/block"),
        ))
        .await
    }

    pub async fn hand_over(&self, code: &str) -> Result<OrderView, UiError> {
        let body = HandOverRequest {
            code: code.to_owned(),
        };
        Self::send(self.request(Method::POST, "/api/staff/pickups").json(&body)).await
    }

    pub async fn stock(
        &self,
        item_id: ItemId,
        action: &StaffStockAction,
    ) -> Result<StockLevel, UiError> {
        Self::send(
            self.request(Method::POST, &format!("/api/staff/stock/{item_id}"))
                .json(action),
        )
        .await
    }

    pub async fn staff_menu(&self) -> Result<StaffMenu, UiError> {
        Self::send(self.request(Method::GET, "/api/staff/menu")).await
    }

    /// Today's menu as students see it, with each item's live stock.
    pub async fn menu(&self) -> Result<MenuResponse, UiError> {
        Self::send(self.request(Method::GET, "/api/menu")).await
    }

    pub async fn update_item(&self, id: ItemId, fields: &ItemFields) -> Result<MenuItem, UiError> {
        Self::send(
            self.request(Method::PUT, &format!("/api/staff/menu/{id}"))
                .json(fields),
        )
        .await
    }

    pub async fn menu_edits(&self, edits: &[MenuEdit]) -> Result<StaffMenu, UiError> {
        Self::send(
            self.request(Method::POST, "/api/staff/menu/edits")
                .json(edits),
        )
        .await
    }

    pub async fn summary(&self) -> Result<DaySummary, UiError> {
        Self::send(self.request(Method::GET, "/api/staff/summary")).await
    }

    pub async fn sync_state(&self) -> Result<SyncState, UiError> {
        Self::send(self.request(Method::GET, "/api/staff/sync")).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_normalised_or_refused() {
        assert_eq!(
            normalise_base(" 127.0.0.1:8080/ ").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            normalise_base("http://box.local:8080").unwrap(),
            "http://box.local:8080"
        );
        assert_eq!(
            normalise_base("https://box.local:8443/").unwrap(),
            "https://box.local:8443"
        );
        for bad in [
            "",
            "ftp://x",
            "http://",
            "http:",
            "http://a b",
            "http://x/api",
            "x:99999",
        ] {
            assert_eq!(
                normalise_base(bad).unwrap_err().code(),
                "bad_address",
                "{bad}"
            );
        }
    }

    /// Found: staff passwords and tokens crossed the students' LAN in plain HTTP.
    #[test]
    fn plain_http_is_refused_except_to_this_computer_or_with_the_demo_switch() {
        let none = Trust::default();
        for local in [
            "127.0.0.1:8080",
            "http://localhost:8080",
            "http://[::1]:8080",
        ] {
            assert!(checked_base(local, &none).is_ok(), "{local}");
        }
        let e = checked_base("http://192.168.1.10:8080", &none).unwrap_err();
        assert_eq!(e.code(), "plain_http_refused");
        assert!(BoxClient::new("10.0.0.5:8080").is_err());
        let demo = Trust {
            allow_plain_http: true,
            ..Trust::default()
        };
        assert!(checked_base("http://192.168.1.10:8080", &demo).is_ok());
        // HTTPS needs the campus CA; a bad one is refused with a clear code.
        let e = checked_base("https://box.local:8443", &none).unwrap_err();
        assert_eq!(e.code(), "no_campus_ca");
        let bad = Trust {
            ca_pem: Some(b"not a certificate".to_vec()),
            ..Trust::default()
        };
        let e = BoxClient::with_trust("https://box.local:8443", &bad).unwrap_err();
        assert_eq!(e.code(), "bad_campus_ca");
    }

    #[test]
    fn error_bodies_keep_the_box_code() {
        let e = error_from_body(
            409,
            br#"{"error":{"code":"already_picked_up","message":"order 7 was already picked up"}}"#,
        );
        assert_eq!(
            e,
            UiError::Api {
                status: 409,
                code: "already_picked_up".into(),
                message: "order 7 was already picked up".into()
            }
        );
        // A code from a newer box is kept as sent, not flattened to "other".
        let e = error_from_body(
            409,
            br#"{"error":{"code":"from_a_newer_box","message":"new refusal","details":{"x":1}}}"#,
        );
        assert_eq!(e.code(), "from_a_newer_box");
        assert_eq!(e.to_string(), "new refusal (from_a_newer_box)");
        let e = error_from_body(502, b"<html>bad gateway</html>");
        assert_eq!(e.code(), "http_502");
    }

    #[test]
    fn requests_carry_the_token_and_wire_shapes() {
        let c = BoxClient::new("127.0.0.1:9")
            .unwrap()
            .with_token("T".into());
        let req = c
            .request(Method::POST, "/api/staff/pickups")
            .json(&HandOverRequest { code: "12".into() })
            .build()
            .unwrap();
        assert_eq!(req.url().as_str(), "http://127.0.0.1:9/api/staff/pickups");
        assert_eq!(req.headers()["authorization"], "Bearer T");
        assert_eq!(
            c.events_url(Some(41)).unwrap(),
            "http://127.0.0.1:9/api/staff/events?access_token=T&after_seq=41"
        );
        assert_eq!(
            serde_json::to_value(StaffStockAction::Restock { count: 5 }).unwrap(),
            serde_json::json!({"action":"restock","count":5})
        );
        assert_eq!(
            serde_json::to_value(StaffStockAction::SoldOut {}).unwrap(),
            serde_json::json!({"action":"sold_out"})
        );
        let item = ItemId::new();
        assert_eq!(
            serde_json::to_value(MenuEdit::SetPrice {
                item,
                price_fen: 1800
            })
            .unwrap(),
            serde_json::json!({"op":"set_price","item":item.to_string(),"price_fen":1800})
        );
    }

    #[tokio::test]
    async fn an_unreachable_box_is_reported_as_such() {
        // Port 9 (discard) on loopback is closed here: the connection is refused.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let c = BoxClient::new(&addr.to_string()).unwrap();
        let e = c.login("staff", "x").await.unwrap_err();
        assert_eq!(e.code(), "unreachable");
    }
}
