//! The box's staff HTTP API, as this app uses it: requests and answers in the box's own
//! wire types (`canteen_api`, declared once for box, app and cloud), and every error
//! answer mapped to a `UiError` carrying the box's stable code (`pickup_not_found`,
//! `stale_version`, ...). The app never touches the box's database; this is its only way
//! in. Plain HTTP on the canteen's LAN (the box listens on http).

use crate::error::UiError;
use canteen_api::menu::{ItemFields, MenuEdit, MenuItem, MenuResponse};
use canteen_api::order::DaySummary;
use canteen_api::staff::{
    HandOverRequest, LoginResponse, StaffLogin, StaffMenu, SyncState, TransitionRequest,
};
use canteen_api::stock::{StaffStockAction, StockLevel};
use canteen_api::{ErrorBody, ItemId, OrderEvent, OrderId, OrderState, OrderView};
use reqwest::{Method, RequestBuilder, Response};
use serde::de::DeserializeOwned;
use std::time::Duration;

/// One request may take this long before the box counts as unreachable.
const REQUEST_TIMEOUT_MS: u64 = 8_000;
const CONNECT_TIMEOUT_MS: u64 = 3_000;

/// Normalises a typed box address: `127.0.0.1:8080` → `http://127.0.0.1:8080`, no
/// trailing slash. Only plain http is spoken (the box serves the LAN without TLS).
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
    let rest = with_scheme.strip_prefix("http://").ok_or_else(|| {
        UiError::input("bad_address", "the box's address must start with http://")
    })?;
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (rest, None),
    };
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    if host.is_empty()
        || !port_ok
        || host.contains(char::is_whitespace)
        || rest.contains(['/', '?', '#', '@'])
    {
        return Err(UiError::input(
            "bad_address",
            format!("{input:?} is not a box address like http://192.168.1.10:8080"),
        ));
    }
    Ok(with_scheme)
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
    pub fn new(address: &str) -> Result<Self, UiError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(REQUEST_TIMEOUT_MS))
            .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
            .build()
            .map_err(|e| UiError::Unreachable {
                message: e.to_string(),
            })?;
        Ok(Self {
            http,
            base: normalise_base(address)?,
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
        for bad in [
            "",
            "https://x",
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
