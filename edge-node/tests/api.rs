//! The box's HTTP API, through its real router and a real SQLite file.

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::{CARD_SECRET, TestBox, assert_gapless};
use futures_util::StreamExt;
use serde_json::{Value, json};

#[tokio::test]
async fn placement_is_priced_by_the_server_and_reserves_stock() {
    let b = TestBox::new().await;
    let s = b.student(1).await;
    let noodles = b.item("Lanzhou beef noodle soup").id;
    let r = b
        .place(
            &s,
            json!({"lines": [
                {"item_id": noodles, "quantity": 2, "options": [{"group": "size", "choice": "large"}, {"group": "spice", "choice": "hot"}]},
                {"item_id": b.item("Sour plum drink").id, "quantity": 1}
            ], "payment_mode": "counter"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["state"], "placed");
    assert_eq!(r.body["total_fen"], (1800 + 300) * 2 + 400);
    assert_eq!(r.body["lines"][0]["unit_price_fen"], 2100);
    assert_eq!(r.body["pickup_number"], 1);
    let token = r.body["pickup_token"].as_str().unwrap();
    assert_eq!(token.len(), 64);
    assert!(token.starts_with(&r.body["id"].as_str().unwrap().replace('-', "")));
    assert_eq!(b.remaining("Lanzhou beef noodle soup").await, Some(118));
    assert_eq!(b.remaining("Sour plum drink").await, Some(99));
    assert_eq!(
        b.remaining("Seaweed and egg soup").await,
        None,
        "no quota means unlimited"
    );

    let staff = b.staff().await;
    let events = b.outbox(&staff).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["kind"], "order.placed");
    assert_eq!(events[0]["payload"]["id"], r.body["id"]);

    let mine = b.get("/api/student/orders", Some(&s)).await;
    assert_eq!(mine.body.as_array().unwrap().len(), 1);
    let second = b.place(&s, b.noodle_order(1)).await;
    assert_eq!(second.body["pickup_number"], 2);
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_changes_nothing() {
    // Refused attempts count against the per-student order limit; lift it here.
    let b = TestBox::with(
        |s| edge_node::config::Settings {
            orders_per_min_student: Some(100),
            ..s
        },
        5,
    )
    .await;
    let s = b.student(1).await;
    let staff = b.staff().await;
    let noodles = b.item("Lanzhou beef noodle soup").id;
    let line = |q: Value, opts: Value| json!({"lines": [{"item_id": noodles, "quantity": q, "options": opts}], "payment_mode": "counter"});
    let size = json!([{"group": "size", "choice": "regular"}]);

    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (
            line(json!(0), size.clone()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_quantity",
        ),
        (
            line(json!(1000), size.clone()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_quantity",
        ),
        (
            line(json!(-1), size.clone()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            line(json!(1), json!([])),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_options",
        ),
        (
            line(
                json!(1),
                json!([{"group": "size", "choice": "regular"}, {"group": "size", "choice": "large"}]),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_options",
        ),
        (
            line(json!(1), json!([{"group": "size", "choice": "huge"}])),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_options",
        ),
        (
            line(json!(1), json!([{"group": "sauce", "choice": "x"}])),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_options",
        ),
        (
            json!({"lines": [{"item_id": uuid::Uuid::now_v7(), "quantity": 1}], "payment_mode": "counter"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_item",
        ),
        (
            json!({"lines": [], "payment_mode": "counter"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_lines",
        ),
        (
            json!({"lines": [{"item_id": noodles, "quantity": 1, "options": size}], "payment_mode": "counter", "total_fen": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            json!({"lines": [{"item_id": noodles, "quantity": 1, "options": size}], "payment_mode": "bitcoin"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
    ];
    for (body, status, code) in cases {
        let r = b.place(&s, body.clone()).await;
        assert_eq!(
            (r.status, r.code()),
            (status, code),
            "{body} -> {:?}",
            r.body
        );
        assert!(!r.body["error"]["message"].as_str().unwrap().is_empty());
    }

    let raw = |body: &str, ctype: Option<&str>| {
        let mut req =
            Request::post("/api/student/orders").header("authorization", format!("Bearer {s}"));
        if let Some(c) = ctype {
            req = req.header("content-type", c);
        }
        req.body(Body::from(body.to_owned())).unwrap()
    };
    let r = b.raw(raw("{\"lines\": [", Some("application/json"))).await;
    assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, "bad_json"));
    let r = b.raw(raw("{}", None)).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
    );
    let huge = format!("{{\"pad\": \"{}\"}}", "x".repeat(200_000));
    let r = b.raw(raw(&huge, Some("application/json"))).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
    );
    let r = b.get("/api/student/orders/not-a-uuid", Some(&s)).await;
    assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, "bad_path"));
    let r = b.place("garbage", b.noodle_order(1)).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "invalid_token")
    );
    let r = b.post("/api/student/orders", None, b.noodle_order(1)).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "unauthenticated")
    );
    let r = b.place(&staff, b.noodle_order(1)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = b.get("/api/nope", None).await;
    assert_eq!((r.status, r.code()), (StatusCode::NOT_FOUND, "not_found"));

    assert!(
        b.outbox(&staff).await.is_empty(),
        "no bad request may write anything"
    );
    assert_eq!(b.remaining("Lanzhou beef noodle soup").await, Some(120));
}

#[tokio::test]
async fn idempotent_retry_returns_the_first_order() {
    let b = TestBox::new().await;
    let s = b.student(1).await;
    let key = [("idempotency-key", "checkout-7f3a")];
    let first = b
        .call(
            Method::POST,
            "/api/student/orders",
            Some(&s),
            Some(b.noodle_order(2)),
            &key,
        )
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    let retry = b
        .call(
            Method::POST,
            "/api/student/orders",
            Some(&s),
            Some(b.noodle_order(2)),
            &key,
        )
        .await;
    assert_eq!(retry.status, StatusCode::OK);
    assert_eq!(retry.body, first.body, "the retry returns the same order");
    let other = b
        .call(
            Method::POST,
            "/api/student/orders",
            Some(&s),
            Some(b.noodle_order(3)),
            &key,
        )
        .await;
    assert_eq!(
        (other.status, other.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
    );
    // Another student may use the same key for their own order.
    let s2 = b.student(2).await;
    let theirs = b
        .call(
            Method::POST,
            "/api/student/orders",
            Some(&s2),
            Some(b.noodle_order(2)),
            &key,
        )
        .await;
    assert_eq!(theirs.status, StatusCode::CREATED);
    assert_ne!(theirs.body["id"], first.body["id"]);

    assert_eq!(b.remaining("Lanzhou beef noodle soup").await, Some(116));
    let staff = b.staff().await;
    assert_eq!(b.outbox(&staff).await.len(), 2);
}

#[tokio::test]
async fn a_student_sees_only_their_own_orders() {
    let b = TestBox::new().await;
    let (s1, s2) = (b.student(1).await, b.student(2).await);
    let order = b.place(&s1, b.noodle_order(1)).await.body;
    let id = order["id"].as_str().unwrap();
    let r = b.get(&format!("/api/student/orders/{id}"), Some(&s2)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = b
        .post(
            &format!("/api/student/orders/{id}/cancel"),
            Some(&s2),
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        b.get("/api/student/orders", Some(&s2))
            .await
            .body
            .as_array()
            .unwrap()
            .is_empty()
    );
    let r = b.get(&format!("/api/student/orders/{id}"), Some(&s1)).await;
    assert_eq!(
        (r.status, &r.body["state"]),
        (StatusCode::OK, &json!("placed"))
    );
}

#[tokio::test]
async fn the_whole_lifecycle_over_the_api() {
    let b = TestBox::new().await;
    let s = b.student(1).await;
    let staff = b.staff().await;
    let placed = b.place(&s, b.noodle_order(1)).await.body;

    let wrong = b.transition(&staff, &placed, "pick_up").await;
    assert_eq!(
        (wrong.status, wrong.code()),
        (StatusCode::CONFLICT, "invalid_transition")
    );
    let paid = b.transition(&staff, &placed, "pay").await;
    assert_eq!(
        (paid.status, &paid.body["state"]),
        (StatusCode::OK, &json!("paid"))
    );
    let stale = b.transition(&staff, &placed, "start_preparing").await;
    assert_eq!(
        (stale.status, stale.code()),
        (StatusCode::CONFLICT, "stale_version")
    );
    assert_eq!(stale.body["error"]["details"]["current_version"], 2);
    let preparing = b
        .transition(&staff, &paid.body, "start_preparing")
        .await
        .body;
    assert_eq!(preparing["state"], "preparing");

    let id = placed["id"].as_str().unwrap();
    let r = b
        .post(
            &format!("/api/student/orders/{id}/cancel"),
            Some(&s),
            json!({}),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::CONFLICT, "kitchen_started")
    );

    let ready = b.transition(&staff, &preparing, "mark_ready").await.body;
    assert_eq!(ready["state"], "ready");
    let not_ready_yet = b
        .post("/api/staff/pickups", Some(&staff), json!({"code": "999"}))
        .await;
    assert_eq!(
        (not_ready_yet.status, not_ready_yet.code()),
        (StatusCode::NOT_FOUND, "pickup_not_found")
    );
    let bad = b
        .post("/api/staff/pickups", Some(&staff), json!({"code": "hello"}))
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    let number = ready["pickup_number"].to_string();
    let done = b
        .post("/api/staff/pickups", Some(&staff), json!({"code": number}))
        .await;
    assert_eq!(
        (done.status, &done.body["state"]),
        (StatusCode::OK, &json!("picked_up"))
    );
    let again = b
        .post(
            "/api/staff/pickups",
            Some(&staff),
            json!({"code": ready["pickup_token"]}),
        )
        .await;
    assert_eq!(
        (again.status, again.code()),
        (StatusCode::CONFLICT, "already_picked_up")
    );

    let summary = b.get("/api/staff/summary", Some(&staff)).await.body;
    assert_eq!(summary["orders"], 1);
    assert_eq!(summary["revenue_fen"], 1800);
    assert_eq!(summary["by_state"]["picked_up"], 1);
    assert_eq!(summary["items"][0]["quantity"], 1);

    let kinds: Vec<String> = b
        .outbox(&staff)
        .await
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        kinds,
        [
            "order.placed",
            "order.paid",
            "order.preparing",
            "order.ready",
            "order.picked_up"
        ]
    );
    // Stock: the portion was reserved, then sold.
    assert_eq!(b.remaining("Lanzhou beef noodle soup").await, Some(119));
}

#[tokio::test]
async fn a_token_scan_hands_over_and_a_paid_cancel_refunds() {
    let b = TestBox::new().await;
    let s = b.student(1).await;
    let staff = b.staff().await;
    let a = b.place(&s, b.noodle_order(2)).await.body;
    let a = b.transition(&staff, &a, "pay").await.body;
    let a = b.transition(&staff, &a, "start_preparing").await.body;
    let a = b.transition(&staff, &a, "mark_ready").await.body;
    let token = a["pickup_token"].as_str().unwrap().to_uppercase();
    let r = b
        .post("/api/staff/pickups", Some(&staff), json!({"code": token}))
        .await;
    assert_eq!(r.body["state"], "picked_up");

    let c = b.place(&s, b.noodle_order(3)).await.body;
    assert_eq!(b.remaining("Lanzhou beef noodle soup").await, Some(115));
    let c = b.transition(&staff, &c, "pay").await.body;
    let cancelled = b.transition(&staff, &c, "cancel").await.body;
    assert_eq!(cancelled["state"], "cancelled");
    assert_eq!(
        b.remaining("Lanzhou beef noodle soup").await,
        Some(118),
        "cancellation gives stock back"
    );
    let summary = b.get("/api/staff/summary", Some(&staff)).await.body;
    assert_eq!(summary["revenue_fen"], 1800 * 2);
    assert_eq!(summary["refunds_fen"], 1800 * 3);
    assert_eq!(summary["cancelled"], 1);
}

#[tokio::test]
async fn unpaid_orders_expire_on_the_injected_clock_and_give_stock_back() {
    let b = TestBox::new().await;
    let s = b.student(1).await;
    let order = b.place(&s, b.noodle_order(4)).await.body;
    assert_eq!(b.remaining("Lanzhou beef noodle soup").await, Some(116));
    b.clock.advance(chrono::Duration::minutes(14));
    assert_eq!(
        edge_node::ops::orders::housekeeping(&b.app).await.unwrap(),
        (0, 0)
    );
    b.clock.advance(chrono::Duration::minutes(2));
    assert_eq!(
        edge_node::ops::orders::housekeeping(&b.app).await.unwrap(),
        (1, 0)
    );
    assert_eq!(b.remaining("Lanzhou beef noodle soup").await, Some(120));
    let id = order["id"].as_str().unwrap();
    let r = b.get(&format!("/api/student/orders/{id}"), Some(&s)).await;
    assert_eq!(r.body["state"], "expired");
    let staff = b.staff().await;
    let pay = b.transition(&staff, &r.body, "pay").await;
    assert_eq!(
        (pay.status, pay.code()),
        (StatusCode::CONFLICT, "invalid_transition")
    );
}

#[tokio::test]
async fn ready_orders_left_at_closing_become_unclaimed() {
    let b = TestBox::new().await;
    let s = b.student(1).await;
    let staff = b.staff().await;
    let o = b.place(&s, b.noodle_order(1)).await.body;
    let o = b.transition(&staff, &o, "pay").await.body;
    let o = b.transition(&staff, &o, "start_preparing").await.body;
    b.transition(&staff, &o, "mark_ready").await;
    b.clock.advance(chrono::Duration::hours(7)); // 19:00 local: still open
    assert_eq!(
        edge_node::ops::orders::housekeeping(&b.app)
            .await
            .unwrap()
            .1,
        0
    );
    b.clock
        .advance(chrono::Duration::hours(1) + chrono::Duration::minutes(1)); // past 20:00
    assert_eq!(
        edge_node::ops::orders::housekeeping(&b.app)
            .await
            .unwrap()
            .1,
        1
    );
    let staff = b.staff().await; // the morning's session has expired by now
    let summary = b.get("/api/staff/summary", Some(&staff)).await.body;
    assert_eq!(summary["unclaimed"], 1);
    let late = b.place(&b.student(2).await, b.noodle_order(1)).await;
    assert_eq!((late.status, late.code()), (StatusCode::CONFLICT, "closed"));
}

fn signed(body: &Value, secret: &str) -> (String, String) {
    let text = body.to_string();
    let sig = edge_node::core::payment::sign(secret.as_bytes(), text.as_bytes());
    (text, sig)
}

#[tokio::test]
async fn campus_card_webhook_is_signed_checked_and_idempotent() {
    let b = TestBox::new().await;
    let s = b.student(1).await;
    let staff = b.staff().await;
    let mut body = b.noodle_order(1);
    body["payment_mode"] = json!("campus_card");
    let order = b.place(&s, body).await.body;
    let notice = |amount: i64, txn: &str| json!({"transaction_id": txn, "order_id": order["id"], "amount_fen": amount});
    let send = |text: String, sig: String| {
        Request::post("/api/payments/campus-card")
            .header("content-type", "application/json")
            .header("x-signature", sig)
            .body(Body::from(text))
            .unwrap()
    };

    let (text, _) = signed(&notice(1800, "T1"), CARD_SECRET);
    let (_, forged) = signed(&notice(1800, "T1"), "not-the-secret-at-all");
    let r = b.raw(send(text.clone(), forged)).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "bad_signature")
    );
    assert_eq!(
        b.outbox(&staff).await.len(),
        1,
        "a bad signature changes nothing"
    );

    let (text_wrong, sig_wrong) = signed(&notice(1, "T0"), CARD_SECRET);
    let r = b.raw(send(text_wrong, sig_wrong)).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "amount_mismatch")
    );

    let (text, sig) = signed(&notice(1800, "T1"), CARD_SECRET);
    let r = b.raw(send(text.clone(), sig.clone())).await;
    assert_eq!(
        (r.status, &r.body["state"]),
        (StatusCode::OK, &json!("paid"))
    );
    let replay = b.raw(send(text, sig)).await;
    assert_eq!(
        (replay.status, &replay.body["state"]),
        (StatusCode::OK, &json!("paid"))
    );
    let summary = b.get("/api/staff/summary", Some(&staff)).await.body;
    assert_eq!(
        summary["revenue_fen"], 1800,
        "a replayed notice is counted once"
    );
    assert_eq!(b.outbox(&staff).await.len(), 2);
}

/// The webhook's other refusals, each changing nothing: no signature header, a
/// transaction id reused for another order, an unknown order, an order that expired
/// before the card paid, and card payments switched off at the canteen.
#[tokio::test]
async fn campus_card_webhook_refuses_what_it_must_and_changes_nothing() {
    let b = TestBox::new().await;
    let s = b.student(1).await;
    let staff = b.staff().await;
    let mut body = b.noodle_order(1);
    body["payment_mode"] = json!("campus_card");
    let first = b.place(&s, body.clone()).await.body;
    let second = b.place(&s, body.clone()).await.body;
    let post = |notice: Value, signature: Option<String>| {
        let mut req =
            Request::post("/api/payments/campus-card").header("content-type", "application/json");
        if let Some(sig) = signature {
            req = req.header("x-signature", sig);
        }
        req.body(Body::from(notice.to_string())).unwrap()
    };
    let notice = |order: &Value, txn: &str| json!({"transaction_id": txn, "order_id": order["id"], "amount_fen": order["total_fen"]});
    let sign = |n: &Value| signed(n, CARD_SECRET).1;
    let unchanged = || async {
        (
            b.outbox(&staff).await.len(),
            b.get("/api/staff/summary", Some(&staff)).await.body["revenue_fen"].clone(),
        )
    };

    let before = unchanged().await;
    let r = b.raw(post(notice(&first, "T1"), None)).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "bad_signature")
    );
    assert_eq!(unchanged().await, before, "no signature changes nothing");

    let unknown = json!({"id": uuid::Uuid::now_v7(), "total_fen": 1800});
    let n = notice(&unknown, "T9");
    let r = b.raw(post(n.clone(), Some(sign(&n)))).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "order_not_found")
    );
    assert_eq!(unchanged().await, before);

    let n = notice(&first, "T1");
    let r = b.raw(post(n.clone(), Some(sign(&n)))).await;
    assert_eq!(r.body["state"], "paid");
    let paid = unchanged().await;
    assert_eq!(paid.1, first["total_fen"]);
    let reused = notice(&second, "T1");
    let r = b.raw(post(reused.clone(), Some(sign(&reused)))).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::CONFLICT, "transaction_reused")
    );
    assert_eq!(unchanged().await, paid);
    let id = second["id"].as_str().unwrap();
    let still = b
        .get(&format!("/api/staff/orders/{id}"), Some(&staff))
        .await;
    assert_eq!(still.body["state"], "placed");

    // The second order expires unpaid; a late card notice cannot pay it.
    b.clock.advance(chrono::Duration::minutes(16));
    edge_node::ops::orders::housekeeping(&b.app).await.unwrap();
    let expired_before = unchanged().await;
    let late = notice(&second, "T2");
    let r = b.raw(post(late.clone(), Some(sign(&late)))).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::CONFLICT, "invalid_transition")
    );
    assert_eq!(unchanged().await, expired_before);
    let still = b
        .get(&format!("/api/staff/orders/{id}"), Some(&staff))
        .await;
    assert_eq!(still.body["state"], "expired");

    // A canteen without a card secret has no webhook.
    let off = TestBox::with(
        |s| edge_node::config::Settings {
            campus_card_secret: None,
            payment_modes: Some(vec!["counter".into()]),
            ..s
        },
        1,
    )
    .await;
    let n = notice(&first, "T3");
    let r = off.raw(post(n.clone(), Some(sign(&n)))).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::NOT_FOUND, "campus_card_disabled")
    );
}

#[tokio::test]
async fn order_placement_is_rate_limited_per_student() {
    // The unpaid-orders cap would stop this student first; lift it here.
    let b = TestBox::with(
        |s| edge_node::config::Settings {
            unpaid_orders_per_student: Some(100),
            ..s
        },
        5,
    )
    .await;
    let s = b.student(1).await;
    for _ in 0..6 {
        assert_eq!(
            b.place(&s, b.noodle_order(1)).await.status,
            StatusCode::CREATED
        );
    }
    let r = b.place(&s, b.noodle_order(1)).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    assert!(r.headers.contains_key("retry-after"));
    let other = b.student(2).await;
    assert_eq!(
        b.place(&other, b.noodle_order(1)).await.status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn staff_stock_actions_reach_the_menu_and_placement() {
    let b = TestBox::new().await;
    let s = b.student(1).await;
    let staff = b.staff().await;
    let plum = b.item("Sour plum drink").id;
    let url = format!("/api/staff/stock/{plum}");
    let order = json!({"lines": [{"item_id": plum, "quantity": 1}], "payment_mode": "counter"});

    let r = b
        .post(&url, Some(&staff), json!({"action": "sold_out"}))
        .await;
    assert_eq!(
        (r.status, &r.body["sold_out"]),
        (StatusCode::OK, &json!(true))
    );
    let menu = b.get("/api/menu", None).await.body;
    let entry = menu["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == json!(plum))
        .unwrap()
        .clone();
    assert_eq!(entry["sold_out"], true);
    let r = b.place(&s, order.clone()).await;
    assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "sold_out"));
    assert_eq!(r.body["error"]["details"]["item_id"], json!(plum));

    b.post(&url, Some(&staff), json!({"action": "back"})).await;
    assert_eq!(b.place(&s, order).await.status, StatusCode::CREATED);
    let r = b
        .post(&url, Some(&staff), json!({"action": "restock", "count": 5}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(b.remaining("Sour plum drink").await, Some(104));
    let r = b
        .post(
            &url,
            Some(&staff),
            json!({"action": "adjust", "delta": -200, "reason": "spilled"}),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::CONFLICT, "stock_below_zero")
    );
    let r = b
        .post(
            &url,
            Some(&staff),
            json!({"action": "adjust", "delta": -4, "reason": "spilled"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(b.remaining("Sour plum drink").await, Some(100));
    let r = b
        .post(&url, Some(&staff), json!({"action": "restock", "count": 0}))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let kinds: Vec<Value> = b
        .outbox(&staff)
        .await
        .iter()
        .map(|e| e["kind"].clone())
        .collect();
    assert_eq!(
        kinds,
        [
            "stock.sold_out",
            "stock.back",
            "order.placed",
            "stock.restocked",
            "stock.adjusted"
        ]
    );
}

/// An order that takes a dish's last portion says so in the outbox (the campus's
/// sold-out board reads it), and a cancellation that gives it back says that too; orders
/// that change nothing for availability add no stock event.
#[tokio::test]
async fn orders_that_take_the_last_portion_or_give_it_back_are_stock_events() {
    let b = TestBox::new().await;
    let s = b.student(1).await;
    let staff = b.staff().await;
    let plum = b.item("Sour plum drink").id;
    let order = json!({"lines": [{"item_id": plum, "quantity": 1}], "payment_mode": "counter"});
    let left = b.remaining("Sour plum drink").await.unwrap();
    let r = b
        .post(
            &format!("/api/staff/stock/{plum}"),
            Some(&staff),
            json!({"action": "adjust", "delta": 2 - left, "reason": "two left"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let first = b.place(&s, order.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let last = b.place(&s, order.clone()).await;
    assert_eq!(last.status, StatusCode::CREATED);
    let other = b.student(2).await;
    let r = b.place(&other, order.clone()).await;
    assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "sold_out"));
    let id = last.body["id"].as_str().unwrap();
    let r = b
        .post(
            &format!("/api/student/orders/{id}/cancel"),
            Some(&s),
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let events = b.outbox(&staff).await;
    let stock: Vec<(Value, Value, Value)> = events
        .iter()
        .filter(|e| e["kind"].as_str().unwrap().starts_with("stock."))
        .map(|e| {
            (
                e["kind"].clone(),
                e["payload"]["remaining"].clone(),
                e["payload"]["sold_out"].clone(),
            )
        })
        .collect();
    assert_eq!(
        stock,
        [
            (json!("stock.adjusted"), json!(2), json!(false)),
            (json!("stock.ran_out"), json!(0), json!(true)),
            (json!("stock.available"), json!(1), json!(false)),
        ]
    );
}

#[tokio::test]
async fn menu_edits_need_a_manager_and_are_validated() {
    let b = TestBox::new().await;
    let staff = b.staff().await;
    let manager = b.manager().await;
    let item = b.item("Tomato and egg with rice").clone();
    let mut fields = serde_json::to_value(&item.fields).unwrap();
    fields["price_fen"] = json!(1350);
    let url = format!("/api/staff/menu/{}", item.id);
    let r = b
        .call(Method::PUT, &url, Some(&staff), Some(fields.clone()), &[])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = b
        .call(Method::PUT, &url, Some(&manager), Some(fields.clone()), &[])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let menu = b.get("/api/menu", None).await.body;
    let entry = menu["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == json!(item.id))
        .unwrap()
        .clone();
    assert_eq!(entry["price_fen"], 1350);

    fields["price_fen"] = json!(-5);
    let r = b
        .call(Method::PUT, &url, Some(&manager), Some(fields.clone()), &[])
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_menu_item")
    );
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("price_fen")
    );

    fields["price_fen"] = json!(900);
    fields["name_en"] = json!("Cold noodles");
    let r = b
        .call(
            Method::POST,
            "/api/staff/menu",
            Some(&manager),
            Some(fields),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let all = b.get("/api/staff/menu", Some(&staff)).await.body;
    assert_eq!(all["items"].as_array().unwrap().len(), b.items.len() + 1);
    assert!(all["conflicts"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn metrics_health_and_openapi() {
    let b = TestBox::new().await;
    let s = b.student(1).await;
    b.place(&s, b.noodle_order(1)).await;
    assert_eq!(b.get("/healthz", None).await.status, StatusCode::OK);
    assert_eq!(b.get("/readyz", None).await.body["outbox_last_seq"], 1);
    let m = b.get("/metrics", None).await;
    let text = m.body.as_str().unwrap();
    assert!(
        text.contains(
            "http_requests_total{method=\"POST\",route=\"/api/student/orders\",status=\"201\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains("http_request_duration_seconds_bucket"));
    assert!(text.contains("orders{state=\"placed\"} 1"));
    assert!(text.contains("outbox_depth 1"));

    // Every documented path is served (with placeholder ids it is never an unknown route).
    let doc = b.get("/api/openapi.json", None).await.body;
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 15, "{:?}", paths.keys());
    for (path, ops) in paths {
        let uri = path
            .replace("{id}", &uuid::Uuid::now_v7().to_string())
            .replace("{item_id}", &uuid::Uuid::now_v7().to_string());
        for method in ops.as_object().unwrap().keys() {
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = b.call(m, &uri, None, None, &[]).await;
            assert_ne!(
                r.code(),
                "not_found",
                "{method} {path} is documented but not routed"
            );
            assert_ne!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        }
    }
    for must in [
        "/api/student/orders",
        "/api/staff/orders/{id}/transitions",
        "/api/payments/campus-card",
        "/api/staff/outbox",
    ] {
        assert!(
            paths.contains_key(must),
            "{must} missing from the OpenAPI document"
        );
    }
}

/// Reads SSE text from a streaming body until `needle` shows up (bounded wait).
async fn read_until(
    body: &mut (impl futures_util::Stream<Item = Result<axum::body::Bytes, axum::Error>> + Unpin),
    needle: &str,
) -> String {
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !seen.contains(needle) {
        match tokio::time::timeout_at(deadline, body.next()).await {
            Ok(Some(Ok(chunk))) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            other => panic!("stream ended or timed out before {needle:?}: {other:?}; saw {seen}"),
        }
    }
    seen
}

#[tokio::test]
async fn event_streams_carry_order_changes() {
    let b = TestBox::new().await;
    let (s1, s2) = (b.student(1).await, b.student(2).await);
    let staff = b.staff().await;
    let mine = b.place(&s1, b.noodle_order(1)).await.body;

    let open = |uri: String| {
        let router = b.router.clone();
        async move {
            use tower::ServiceExt;
            let res = router
                .oneshot(Request::get(uri).body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::OK);
            res.into_body().into_data_stream()
        }
    };
    let mut student_stream = open(format!("/api/student/events?access_token={s1}")).await;
    // Staff reconnecting after seq 1 catch up on what they missed, then go live.
    let mut staff_stream = open(format!(
        "/api/staff/events?access_token={staff}&after_seq=0"
    ))
    .await;
    let seen = read_until(&mut staff_stream, "order.placed").await;
    assert!(seen.contains("id: 1"));

    b.place(&s2, b.noodle_order(1)).await; // someone else's order
    let paid = b.transition(&staff, &mine, "pay").await.body;
    let seen = read_until(&mut student_stream, "event: order.paid").await;
    assert!(seen.contains(mine["id"].as_str().unwrap()));
    assert!(
        !seen.contains("order.placed"),
        "another student's order must not appear: {seen}"
    );
    let p = b.transition(&staff, &paid, "start_preparing").await.body;
    b.transition(&staff, &p, "mark_ready").await;
    read_until(&mut student_stream, "event: order.ready").await;
    let seen = read_until(&mut staff_stream, "order.ready").await;
    assert!(seen.contains("order.paid"));
}

#[tokio::test]
async fn everything_survives_a_restart() {
    let b = TestBox::new().await;
    let s = b.student(1).await;
    let staff = b.staff().await;
    let placed = b.place(&s, b.noodle_order(3)).await.body;
    b.transition(&staff, &placed, "pay").await;
    let reopened = b.reopen().await;
    let s = reopened.student(1).await;
    let mine = reopened.get("/api/student/orders", Some(&s)).await.body;
    assert_eq!(mine[0]["state"], "paid");
    assert_eq!(
        reopened.remaining("Lanzhou beef noodle soup").await,
        Some(117)
    );
    let staff = reopened.staff().await;
    let events = reopened.outbox(&staff).await;
    assert_eq!(events.len(), 2);
    assert_gapless(&events);
}

/// Who may call what, for every operation of the OpenAPI document: anonymous callers get
/// 401 on every student and staff route, a student 403 on staff routes, staff 403 on the
/// managers' routes and on student routes, and every refusal leaves the outbox, the
/// menu and the settings exactly as they were (each refused request carries a payload
/// that would change them if it were applied). Allowed callers are never refused as
/// unauthenticated or forbidden. The table of roles is written out here, not derived
/// from the document, so a route that loses its extractor fails.
#[tokio::test]
async fn authorization_matrix_for_every_documented_operation() {
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Who {
        Anonymous,
        Student,
        Staff,
        Manager,
    }
    let b = TestBox::new().await;
    let student = b.student(1).await;
    let staff = b.staff().await;
    let manager = b.manager().await;
    let order = b.place(&student, b.noodle_order(1)).await.body;
    let order_id = order["id"].as_str().unwrap().to_owned();
    let noodles = b.item("Lanzhou beef noodle soup").clone();
    let item_id = noodles.id.to_string();
    let mut changed_fields = serde_json::to_value(&noodles.fields).unwrap();
    changed_fields["price_fen"] = json!(4321);

    // Which callers each operation admits; anything not listed is public.
    let students_only = [Who::Student];
    let staff_and_managers = [Who::Staff, Who::Manager];
    let managers_only = [Who::Manager];
    let admits = |method: &str, path: &str| -> Option<&[Who]> {
        let managers = [
            ("post", "/api/staff/menu"),
            ("put", "/api/staff/menu/{item_id}"),
            ("post", "/api/staff/menu/edits"),
            ("post", "/api/staff/settings/edits"),
        ];
        if managers.contains(&(method, path)) {
            Some(&managers_only)
        } else if path.starts_with("/api/staff/") && path != "/api/staff/login" {
            Some(&staff_and_managers)
        } else if path.starts_with("/api/student/") && path != "/api/student/login" {
            Some(&students_only)
        } else {
            None
        }
    };
    // A body that would change something if it were applied.
    let body = |method: &str, path: &str| -> Option<Value> {
        Some(match (method, path) {
            ("post", "/api/student/orders") => b.noodle_order(1),
            ("post", "/api/staff/orders/{id}/transitions") => json!({"event": "pay", "version": 1}),
            ("post", "/api/staff/pickups") => json!({"code": order["pickup_number"].to_string()}),
            ("post", "/api/staff/stock/{item_id}") => json!({"action": "restock", "count": 7}),
            ("post", "/api/staff/menu") => {
                let mut fields = changed_fields.clone();
                fields["name_en"] = json!("Matrix noodles");
                fields
            }
            ("put", "/api/staff/menu/{item_id}") => changed_fields.clone(),
            ("post", "/api/staff/menu/edits") => {
                json!([{"op": "set_price", "item": item_id, "price_fen": 4322}])
            }
            ("post", "/api/staff/settings/edits") => {
                json!([{"op": "set_announcement", "text": "matrix"}])
            }
            _ => return None,
        })
    };
    let snapshot = || async {
        (
            b.outbox(&manager).await.len(),
            b.get("/api/staff/menu", Some(&manager)).await.body,
            b.get("/api/staff/settings", Some(&manager)).await.body,
        )
    };

    let doc = b.get("/api/openapi.json", None).await.body;
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        let uri = path
            .replace("{id}", &order_id)
            .replace("{item_id}", &item_id);
        for method in ops.as_object().unwrap().keys() {
            let Some(allowed) = admits(method, path) else {
                continue;
            };
            if path.ends_with("/events") {
                // Streams never end; their refusals are checked by status only below.
                for (who, token) in [
                    (Who::Anonymous, None),
                    (Who::Student, Some(&student)),
                    (Who::Staff, Some(&staff)),
                ] {
                    if allowed.contains(&who) {
                        continue;
                    }
                    let r = b.get(&uri, token.map(String::as_str)).await;
                    let want = if who == Who::Anonymous { 401 } else { 403 };
                    assert_eq!(r.status.as_u16(), want, "GET {path} as {who:?}");
                }
                continue;
            }
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            for (who, token) in [
                (Who::Anonymous, None),
                (Who::Student, Some(&student)),
                (Who::Staff, Some(&staff)),
                (Who::Manager, Some(&manager)),
            ] {
                if allowed.contains(&who) {
                    continue;
                }
                let before = snapshot().await;
                let r = b
                    .call(
                        m.clone(),
                        &uri,
                        token.map(String::as_str),
                        body(method, path),
                        &[],
                    )
                    .await;
                let want = if who == Who::Anonymous { 401 } else { 403 };
                assert_eq!(
                    r.status.as_u16(),
                    want,
                    "{method} {path} as {who:?}: {:?}",
                    r.body
                );
                let code = r.code();
                assert!(
                    ["unauthenticated", "forbidden"].contains(&code),
                    "{method} {path} as {who:?}: {code}"
                );
                assert!(
                    snapshot().await == before,
                    "{method} {path} as {who:?} was refused but changed something"
                );
                checked += 1;
            }
            // The admitted callers are never refused for who they are.
            for who in allowed {
                let token = match who {
                    Who::Student => &student,
                    Who::Staff => &staff,
                    Who::Manager => &manager,
                    Who::Anonymous => unreachable!(),
                };
                let r = b
                    .call(m.clone(), &uri, Some(token), body(method, path), &[])
                    .await;
                assert!(
                    ![401, 403].contains(&r.status.as_u16()),
                    "{method} {path} as {who:?}: {} {:?}",
                    r.status,
                    r.body
                );
            }
        }
    }
    // 9 student operations × 3 refused callers, 13 staff ones × 2, 4 managers' × 3 …
    assert!(checked >= 40, "only {checked} refusals checked");
    // What the managers' accepted calls did is visible: the refusals did not eat them.
    let menu = b.get("/api/staff/menu", Some(&manager)).await.body;
    assert!(
        menu["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["name_en"] == "Matrix noodles")
    );
    let settings = b.get("/api/staff/settings", Some(&manager)).await.body;
    assert_eq!(settings["settings"]["announcement"], "matrix");
}

/// Service days are the canteen's local days, not UTC's: at 23:30 UTC it is already
/// 07:30 the next morning in Shanghai. An order placed then belongs to the local day
/// (its stock row and summary too); on the next local day, across a restart, pickup
/// numbers start again at 1 and the previous day's ready orders become unclaimed.
#[tokio::test]
async fn service_days_follow_the_canteens_time_zone_across_a_restart() {
    let b = TestBox::with(
        |s| edge_node::config::Settings {
            opening_time: Some("06:00".into()),
            closing_time: Some("22:00".into()),
            ..s
        },
        5,
    )
    .await;
    // 2026-11-23 23:30 UTC = 2026-11-24 07:30 in Shanghai.
    b.clock.advance(chrono::Duration::minutes(19 * 60 + 30));
    let s = b.student(1).await;
    let staff = b.staff().await;
    let placed = b.place(&s, b.noodle_order(2)).await;
    assert_eq!(placed.status, StatusCode::CREATED, "{:?}", placed.body);
    assert_eq!(placed.body["service_day"], "2026-11-24");
    assert_eq!(placed.body["pickup_number"], 1);
    assert_eq!(
        b.get("/api/menu", None).await.body["service_day"],
        "2026-11-24"
    );
    assert_eq!(b.remaining("Lanzhou beef noodle soup").await, Some(118));
    let day = |d: &str| format!("/api/staff/summary?day={d}");
    assert_eq!(
        b.get(&day("2026-11-24"), Some(&staff)).await.body["orders"],
        1
    );
    assert_eq!(
        b.get(&day("2026-11-23"), Some(&staff)).await.body["orders"],
        0
    );
    let mut order = placed.body;
    for event in ["pay", "start_preparing", "mark_ready"] {
        let r = b.transition(&staff, &order, event).await;
        assert_eq!(r.status, StatusCode::OK, "{event}: {:?}", r.body);
        order = r.body;
    }

    let reopened = b.reopen().await;
    // 2026-11-24 23:30 UTC = 2026-11-25 07:30 in Shanghai: the 24th closed at 22:00.
    reopened.clock.advance(chrono::Duration::hours(24));
    assert_eq!(
        edge_node::ops::orders::housekeeping(&reopened.app)
            .await
            .unwrap(),
        (0, 1)
    );
    let s = reopened.student(1).await;
    let staff = reopened.staff().await;
    let id = order["id"].as_str().unwrap();
    let yesterday = reopened
        .get(&format!("/api/staff/orders/{id}"), Some(&staff))
        .await;
    assert_eq!(yesterday.body["state"], "unclaimed");
    let today = reopened.place(&s, reopened.noodle_order(1)).await.body;
    assert_eq!(today["service_day"], "2026-11-25");
    assert_eq!(today["pickup_number"], 1);
    assert_eq!(
        reopened.remaining("Lanzhou beef noodle soup").await,
        Some(119)
    );
}
