//! A box on a temporary data directory with a manual clock, the demo menu and roster,
//! driven through its real router.
#![allow(dead_code, unreachable_pub)]

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use chrono::{DateTime, TimeZone, Utc};
use edge_node::App;
use edge_node::config::{Config, Settings};
use edge_node::core::clock::ManualClock;
use edge_node::core::menu::MenuItem;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::sync::Arc;
use tower::ServiceExt;

pub const CARD_SECRET: &str = "test-campus-card-secret";

/// 12:00 in Shanghai on a weekday.
pub fn noon() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 4, 0, 0).unwrap()
}

pub fn test_settings(dir: &std::path::Path) -> Settings {
    Settings {
        data_dir: Some(dir.to_owned()),
        payment_modes: Some(vec!["counter".into(), "campus_card".into()]),
        campus_card_secret: Some(CARD_SECRET.into()),
        argon2_memory_kib: Some(64),
        argon2_passes: Some(1),
        login_per_min_ip: Some(100_000),
        opening_time: Some("10:00".into()),
        closing_time: Some("20:00".into()),
        ..Default::default()
    }
}

pub struct TestBox {
    pub app: App,
    pub clock: Arc<ManualClock>,
    pub router: axum::Router,
    pub items: Vec<MenuItem>,
    pub dir: tempfile::TempDir,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

impl TestBox {
    pub async fn new() -> Self {
        Self::with(|s| s, 5).await
    }

    pub async fn with(tweak: impl FnOnce(Settings) -> Settings, students: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::resolve(tweak(test_settings(dir.path()))).unwrap();
        let clock = Arc::new(ManualClock::new(noon()));
        let app = App::open(config, clock.clone()).unwrap();
        let items = edge_node::demo::seed(&app, students).await.unwrap();
        let router = edge_node::http::router(app.clone());
        Self {
            app,
            clock,
            router,
            items,
            dir,
        }
    }

    /// A box on a copy of an existing database (`db`), its clock at `now`: what a new
    /// release does with a database an older one made.
    pub fn on_copy_of(db: &std::path::Path, now: DateTime<Utc>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::resolve(test_settings(dir.path())).unwrap();
        std::fs::copy(db, config.db_path()).unwrap();
        let clock = Arc::new(ManualClock::new(now));
        let app = App::open(config, clock.clone()).unwrap();
        Self {
            router: edge_node::http::router(app.clone()),
            app,
            clock,
            items: Vec::new(),
            dir,
        }
    }

    /// Closes the box and opens it again on the same data directory and clock: a
    /// restart.
    pub async fn reopen(self) -> Self {
        self.app.close().await;
        let app = App::open(self.app.config.clone(), self.clock.clone()).unwrap();
        Self {
            router: edge_node::http::router(app.clone()),
            app,
            clock: self.clock,
            items: self.items,
            dir: self.dir,
        }
    }

    pub fn item(&self, name_en: &str) -> &MenuItem {
        self.items
            .iter()
            .find(|i| i.fields.name_en == name_en)
            .unwrap()
    }

    pub async fn raw(&self, req: Request<Body>) -> Reply {
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        };
        self.raw(req.unwrap()).await
    }

    /// A JSON POST as if from `ip` (the socket's peer address).
    pub async fn post_from(&self, ip: &str, uri: &str, body: Value) -> Reply {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let peer: std::net::IpAddr = ip.parse().unwrap();
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(std::net::SocketAddr::new(
                peer, 40000,
            )));
        self.raw(req).await
    }

    pub async fn get(&self, uri: &str, token: Option<&str>) -> Reply {
        self.call(Method::GET, uri, token, None, &[]).await
    }

    pub async fn post(&self, uri: &str, token: Option<&str>, body: Value) -> Reply {
        self.call(Method::POST, uri, token, Some(body), &[]).await
    }

    pub async fn student(&self, n: u32) -> String {
        let r = self
            .post(
                "/api/student/login",
                None,
                json!({"student_number": format!("2024{n:03}"), "pin": "135790"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        r.body["token"].as_str().unwrap().to_owned()
    }

    pub async fn staff(&self) -> String {
        self.login_staff("staff", "staff-pass").await
    }

    pub async fn manager(&self) -> String {
        self.login_staff("manager", "manager-pass").await
    }

    async fn login_staff(&self, user: &str, pass: &str) -> String {
        let r = self
            .post(
                "/api/staff/login",
                None,
                json!({"username": user, "password": pass}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        r.body["token"].as_str().unwrap().to_owned()
    }

    /// A simple valid order: one Lanzhou noodle soup, regular, mild.
    pub fn noodle_order(&self, qty: u32) -> Value {
        json!({
            "lines": [{"item_id": self.item("Lanzhou beef noodle soup").id, "quantity": qty,
                       "options": [{"group": "size", "choice": "regular"}, {"group": "spice", "choice": "mild"}]}],
            "payment_mode": "counter"
        })
    }

    pub async fn place(&self, token: &str, body: Value) -> Reply {
        self.post("/api/student/orders", Some(token), body).await
    }

    pub async fn transition(&self, staff: &str, order: &Value, event: &str) -> Reply {
        let id = order["id"].as_str().unwrap();
        self.post(
            &format!("/api/staff/orders/{id}/transitions"),
            Some(staff),
            json!({"event": event, "version": order["version"]}),
        )
        .await
    }

    /// Portions left of a dish, as staff see it (students are not told the count).
    pub async fn remaining(&self, name_en: &str) -> Option<i64> {
        let staff = self.staff().await;
        let menu = self.get("/api/menu", Some(&staff)).await;
        let item = menu.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name_en"] == name_en)
            .unwrap()
            .clone();
        item["remaining"].as_i64()
    }

    pub async fn outbox(&self, staff: &str) -> Vec<Value> {
        let r = self.get("/api/staff/outbox?after_seq=0", Some(staff)).await;
        assert_eq!(r.status, StatusCode::OK);
        r.body["events"].as_array().unwrap().clone()
    }
}

/// Asserts the outbox numbers are 1..=n without gaps.
pub fn assert_gapless(events: &[Value]) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e["seq"].as_i64().unwrap(),
            i as i64 + 1,
            "outbox gap at {i}"
        );
    }
}
