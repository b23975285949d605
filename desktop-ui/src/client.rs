//! The box's staff HTTP API, as this app uses it: typed requests, and every error answer
//! mapped to a `UiError` carrying the box's stable code (`pickup_not_found`,
//! `stale_version`, ...). The app never touches the box's database; this is its only way
//! in. Plain HTTP on the canteen's LAN (the box listens on http).

use crate::error::UiError;
use chrono::{DateTime, Utc};
use reqwest::{Method, RequestBuilder, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;

/// One request may take this long before the box counts as unreachable.
const REQUEST_TIMEOUT_MS: u64 = 8_000;
const CONNECT_TIMEOUT_MS: u64 = 3_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderState {
    Placed,
    Paid,
    Preparing,
    Ready,
    PickedUp,
    Cancelled,
    Expired,
    Unclaimed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderEvent {
    Pay,
    StartPreparing,
    MarkReady,
    PickUp,
    Cancel,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LineOption {
    pub group: String,
    pub choice: String,
    pub name_zh: String,
    pub name_en: String,
    pub price_delta_fen: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderLine {
    pub item_id: String,
    pub name_zh: String,
    pub name_en: String,
    pub quantity: i64,
    pub unit_price_fen: i64,
    pub line_total_fen: i64,
    #[serde(default)]
    pub options: Vec<LineOption>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub id: String,
    pub pickup_number: i64,
    pub pickup_token: String,
    pub state: OrderState,
    pub version: i64,
    pub total_fen: i64,
    pub payment_mode: String,
    #[serde(default)]
    pub pickup_slot: Option<String>,
    pub lines: Vec<OrderLine>,
    pub placed_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Login {
    pub token: String,
    pub expires_at: Value,
    pub role: String,
    pub account_id: Value,
    pub name: String,
}

/// A menu item's fields, exactly as `PUT /api/staff/menu/{id}` takes them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemFields {
    pub name_zh: String,
    pub name_en: String,
    pub category: String,
    pub price_fen: i64,
    #[serde(default)]
    pub option_groups: Value,
    #[serde(default)]
    pub allergens: Vec<String>,
    pub daily_quota: Option<u32>,
    pub available: bool,
    #[serde(default)]
    pub archived: bool,
    #[serde(default)]
    pub sort_key: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MenuItem {
    pub id: String,
    #[serde(flatten)]
    pub fields: ItemFields,
}

/// Two editors set the same field concurrently; `values[0]` is in effect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conflict {
    pub path: Vec<String>,
    pub values: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StaffMenu {
    pub items: Vec<MenuItem>,
    pub conflicts: Vec<Conflict>,
}

/// Today's stock of one item, from the public menu.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StockEntry {
    pub id: String,
    #[serde(default)]
    pub sold_out: bool,
    #[serde(default)]
    pub remaining: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PublicMenu {
    items: Vec<StockEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncState {
    pub configured: bool,
    pub connected: bool,
    pub unacked_events: i64,
    pub oldest_unacked_age_s: i64,
    pub last_success_unix: Option<u64>,
    pub last_error: Option<String>,
}

/// A staff stock action, in the box's wire form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum StockAction {
    SoldOut,
    Back,
    Restock { count: i64 },
}

/// A single-field menu edit (`POST /api/staff/menu/edits`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum MenuEdit {
    SetNameZh {
        item: String,
        name: String,
    },
    SetNameEn {
        item: String,
        name: String,
    },
    SetPrice {
        item: String,
        price_fen: i64,
    },
    SetQuota {
        item: String,
        daily_quota: Option<u32>,
    },
    SetAvailable {
        item: String,
        available: bool,
    },
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

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
/// sent one, else the bare status.
pub fn error_from_body(status: u16, body: &[u8]) -> UiError {
    match serde_json::from_slice::<ErrorEnvelope>(body) {
        Ok(env) => UiError::Api {
            status,
            code: env.error.code,
            message: env.error.message,
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

    pub async fn login(&self, username: &str, password: &str) -> Result<Login, UiError> {
        if username.trim().is_empty() || password.is_empty() {
            return Err(UiError::input(
                "missing_credentials",
                "enter user name and password",
            ));
        }
        let body = serde_json::json!({"username": username.trim(), "password": password});
        Self::send(self.request(Method::POST, "/api/staff/login").json(&body)).await
    }

    /// Today's open orders (placed, paid, preparing, ready), oldest first.
    pub async fn open_orders(&self) -> Result<Vec<Order>, UiError> {
        Self::send(self.request(
            Method::GET,
            "/api/staff/orders?state=placed,paid,preparing,ready",
        ))
        .await
    }

    pub async fn order(&self, id: &str) -> Result<Order, UiError> {
        Self::send(self.request(Method::GET, &format!("/api/staff/orders/{id}"))).await
    }

    pub async fn transition(
        &self,
        id: &str,
        event: OrderEvent,
        version: i64,
    ) -> Result<Order, UiError> {
        let body = serde_json::json!({"event": event, "version": version});
        Self::send(
            self.request(Method::POST, &format!("/api/staff/orders/{id}/transitions"))
                .json(&body),
        )
        .await
    }

    pub async fn hand_over(&self, code: &str) -> Result<Order, UiError> {
        let body = serde_json::json!({ "code": code });
        Self::send(self.request(Method::POST, "/api/staff/pickups").json(&body)).await
    }

    pub async fn stock(&self, item_id: &str, action: &StockAction) -> Result<Value, UiError> {
        Self::send(
            self.request(Method::POST, &format!("/api/staff/stock/{item_id}"))
                .json(action),
        )
        .await
    }

    pub async fn staff_menu(&self) -> Result<StaffMenu, UiError> {
        Self::send(self.request(Method::GET, "/api/staff/menu")).await
    }

    /// Today's stock per item, from the public menu.
    pub async fn stock_levels(&self) -> Result<Vec<StockEntry>, UiError> {
        let menu: PublicMenu = Self::send(self.request(Method::GET, "/api/menu")).await?;
        Ok(menu.items)
    }

    pub async fn update_item(&self, id: &str, fields: &ItemFields) -> Result<MenuItem, UiError> {
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

    pub async fn summary(&self) -> Result<Value, UiError> {
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
            .json(&serde_json::json!({"code": "12"}))
            .build()
            .unwrap();
        assert_eq!(req.url().as_str(), "http://127.0.0.1:9/api/staff/pickups");
        assert_eq!(req.headers()["authorization"], "Bearer T");
        assert_eq!(
            c.events_url(Some(41)).unwrap(),
            "http://127.0.0.1:9/api/staff/events?access_token=T&after_seq=41"
        );
        assert_eq!(
            serde_json::to_value(StockAction::Restock { count: 5 }).unwrap(),
            serde_json::json!({"action":"restock","count":5})
        );
        assert_eq!(
            serde_json::to_value(StockAction::SoldOut).unwrap(),
            serde_json::json!({"action":"sold_out"})
        );
        assert_eq!(
            serde_json::to_value(MenuEdit::SetPrice {
                item: "i".into(),
                price_fen: 1800
            })
            .unwrap(),
            serde_json::json!({"op":"set_price","item":"i","price_fen":1800})
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
