//! Ready times from the live kitchen, through the box's router with a manual clock:
//! promises follow the queue, estimates move as staff work, the kitchen display's
//! orders carry promise and estimate, and pickup slots take what the kitchen's
//! measured rate can make.

mod common;

use axum::http::{Method, StatusCode};
use chrono::{DateTime, Duration, Utc};
use common::TestBox;
use edge_node::core::clock::Clock;
use serde_json::{Value, json};

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .unwrap_or_else(|| panic!("not a time: {v}"))
        .parse()
        .unwrap()
}

fn minutes(a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
    (b - a).num_seconds() as f64 / 60.0
}

/// Places a noodle order for student `n` and has staff take the payment: it joins the
/// kitchen's queue. Returns the paid order and its promise.
async fn paid_order(b: &TestBox, staff: &str, n: u32) -> (Value, DateTime<Utc>) {
    let student = b.student(n).await;
    let placed = b.place(&student, b.noodle_order(1)).await;
    assert_eq!(placed.status, StatusCode::CREATED, "{:?}", placed.body);
    let promise = time(&placed.body["ready_promised_at"]);
    let paid = b.transition(staff, &placed.body, "pay").await;
    assert_eq!(paid.status, StatusCode::OK, "{:?}", paid.body);
    (paid.body, promise)
}

/// A manager adds pickup slots through the settings API.
/// A slot the kitchen cannot meet is refused as full, saying when it could be ready.
fn assert_slot_refused(reply: &common::Reply) {
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::CONFLICT, "pickup_slot_full"),
        "{:?}",
        reply.body
    );
    let message = reply.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("ready around"), "{message}");
}

async fn add_slots(b: &TestBox, slots: &[Value]) {
    let manager = b.manager().await;
    let edits: Vec<Value> = slots
        .iter()
        .map(|slot| json!({"op": "add_slot", "slot": slot}))
        .collect();
    let r = b
        .call(
            Method::POST,
            "/api/staff/settings/edits",
            Some(&manager),
            Some(Value::Array(edits)),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
}

#[tokio::test]
async fn promises_follow_the_queue_and_estimates_move_as_the_kitchen_works() {
    let b = TestBox::with(|s| s, 8).await;
    let staff = b.staff().await;
    let now = b.clock.now();
    let mut orders = Vec::new();
    for n in 1..=6 {
        orders.push(paid_order(&b, &staff, n).await);
    }
    // Nothing measured yet: five minutes an order. Once more than twice as many
    // orders wait as the station was seen working on (one), each waits for those
    // ahead.
    assert_eq!(minutes(now, orders[0].1), 5.0);
    for pair in orders.windows(2) {
        assert!(
            pair[1].1 >= pair[0].1,
            "promises never shrink as the queue grows"
        );
    }
    assert!(orders[5].1 > orders[3].1 && orders[3].1 > orders[2].1);
    assert!(
        minutes(now, orders[5].1) >= 25.0,
        "{}",
        minutes(now, orders[5].1)
    );

    // The student sees promise and estimate on their order.
    let sixth = b.student(6).await;
    let mine = b.get("/api/student/orders", Some(&sixth)).await.body;
    let estimate = time(&mine[0]["ready_estimate"]);
    assert_eq!(time(&mine[0]["ready_promised_at"]), orders[5].1);
    assert!((minutes(orders[5].1, estimate)).abs() < 1.0);
    assert!(mine[0].get("running_late_min").is_none(), "on time: {mine}");

    // Three orders ahead are cancelled: the sixth's estimate moves by more than a
    // minute, and the box tells its student (and nobody else).
    let mut moved = b.app.estimates.subscribe();
    b.app.publish_estimates();
    while moved.try_recv().is_ok() {}
    for (order, _) in &orders[..3] {
        let r = b.transition(&staff, order, "cancel").await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    }
    b.app.publish_estimates();
    let mut told = Vec::new();
    while let Ok(m) = moved.try_recv() {
        told.push(m);
    }
    let sixth_id = orders[5].0["id"].as_str().unwrap();
    let news = told
        .iter()
        .find(|m| m.order_id.to_string() == sixth_id)
        .expect("the sixth order's student is told");
    assert!(minutes(news.ready_estimate, estimate) >= 10.0);
    // Only orders whose estimate moved: those behind the cancelled ones.
    let behind: Vec<&str> = orders[3..]
        .iter()
        .map(|(o, _)| o["id"].as_str().unwrap())
        .collect();
    for m in &told {
        assert!(behind.contains(&m.order_id.to_string().as_str()), "{m:?}");
    }
    // Told once: these estimates are minutes from the promises, so a box that did not
    // remember what it told would send them again.
    b.app.publish_estimates();
    let again = moved.try_recv();
    assert!(again.is_err(), "{again:?} after {told:?}");

    // The kitchen starts the fourth and makes it in three minutes: measured.
    let started = b
        .transition(&staff, &orders[3].0, "start_preparing")
        .await
        .body;
    b.clock.advance(Duration::minutes(3));
    let ready = b.transition(&staff, &started, "mark_ready").await;
    assert_eq!(ready.status, StatusCode::OK);
    // A ready order has no estimate any more.
    let fourth = b
        .get(
            &format!("/api/staff/orders/{}", orders[3].0["id"].as_str().unwrap()),
            Some(&staff),
        )
        .await
        .body;
    assert!(fourth.get("ready_estimate").is_none(), "{fourth}");

    // Half an hour passes with nothing bumped: the kitchen display sees the fifth
    // and sixth running late against their promise.
    b.clock.advance(Duration::minutes(30));
    let queue = b.get("/api/staff/orders", Some(&staff)).await.body;
    let late: Vec<_> = queue
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["state"] == "paid")
        .map(|o| {
            let (promise, estimate) = (time(&o["ready_promised_at"]), time(&o["ready_estimate"]));
            // The box says by how many whole minutes (rounded up).
            let behind = (estimate - promise).num_seconds();
            assert_eq!(o["running_late_min"], (behind + 59) / 60, "{o}");
            (promise, estimate)
        })
        .collect();
    assert_eq!(late.len(), 2);
    for (promise, estimate) in late {
        assert!(estimate > promise && estimate > b.clock.now());
    }
    // Their students are told, with the lateness.
    b.app.publish_estimates();
    let mut late_news = 0;
    while let Ok(m) = moved.try_recv() {
        assert!(m.running_late_min.is_some_and(|n| n >= 1), "{m:?}");
        late_news += 1;
    }
    assert_eq!(late_news, 2);
}

#[tokio::test]
async fn slot_capacity_follows_the_kitchen_measured_rate() {
    let b = TestBox::with(|s| s, 30).await;
    let staff = b.staff().await;
    add_slots(
        &b,
        &[
            json!({"id": "1200", "start": "12:00", "end": "12:15", "capacity": 40}),
            json!({"id": "1300", "start": "13:00", "end": "13:15", "capacity": 40}),
        ],
    )
    .await;
    let slot = |menu: &Value, id: &str| {
        menu["pickup_slots"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap()
            .clone()
    };
    // Not measured yet: the manager's ceiling, and both slots can be met.
    let menu = b.get("/api/menu", None).await.body;
    assert_eq!(slot(&menu, "1300")["capacity"], 40);
    assert_eq!(slot(&menu, "1300")["ceiling"], 40);
    assert_eq!(menu["next_slot"], "1200");

    // A backlog of 30 paid orders; the kitchen makes one a minute for 15 minutes.
    let mut queue = Vec::new();
    for n in 1..=30 {
        queue.push(paid_order(&b, &staff, n).await.0);
    }
    let mut rest = queue.into_iter();
    for order in rest.by_ref().take(15) {
        let started = b.transition(&staff, &order, "start_preparing").await.body;
        b.clock.advance(Duration::minutes(1));
        let r = b.transition(&staff, &started, "mark_ready").await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let menu = b.get("/api/menu", None).await.body;
    let measured = slot(&menu, "1300")["capacity"].as_u64().unwrap();
    assert!(
        (12..=17).contains(&measured),
        "about 15 in a quarter hour: {measured}"
    );
    // It is 12:15 with 15 orders waiting: 12:00–12:15 cannot be met any more.
    assert_eq!(slot(&menu, "1200")["offered"], false);
    assert_eq!(menu["next_slot"], "1300");
    let mut late = b.noodle_order(1);
    late["pickup_slot"] = json!("1200");
    let refused = b.place(&b.student(30).await, late).await;
    assert_slot_refused(&refused);

    // The kitchen slows to one order every three minutes: the slot shrinks.
    for order in rest.by_ref().take(8) {
        let started = b.transition(&staff, &order, "start_preparing").await.body;
        b.clock.advance(Duration::minutes(3));
        let r = b.transition(&staff, &started, "mark_ready").await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let menu = b.get("/api/menu", None).await.body;
    let slower = slot(&menu, "1300")["capacity"].as_u64().unwrap();
    assert!(
        slower < measured && slower <= 9,
        "slower kitchen: {slower} (was {measured})"
    );
}

#[tokio::test]
async fn a_restarted_box_keeps_its_promises_and_what_it_measured() {
    let b = TestBox::with(|s| s, 12).await;
    let staff = b.staff().await;
    let mut queue = Vec::new();
    for n in 1..=12 {
        queue.push(paid_order(&b, &staff, n).await);
    }
    // The kitchen makes eight, one every 40 seconds.
    for (order, _) in &queue[..8] {
        let started = b.transition(&staff, order, "start_preparing").await.body;
        b.clock.advance(Duration::seconds(40));
        assert_eq!(
            b.transition(&staff, &started, "mark_ready").await.status,
            StatusCode::OK
        );
    }
    let before = b
        .get("/api/staff/orders?state=paid", Some(&staff))
        .await
        .body;
    let menu_before = b.get("/api/menu", None).await.body;

    let reopened = b.reopen().await;
    // Rebuilt from the day's events: the same promises, the same estimates, the same
    // estimate for a new order.
    let after = reopened
        .get("/api/staff/orders?state=paid", Some(&staff))
        .await
        .body;
    assert_eq!(after.as_array().unwrap().len(), 4);
    assert_eq!(after, before);
    let menu_after = reopened.get("/api/menu", None).await.body;
    assert_eq!(menu_after["ready_estimate"], menu_before["ready_estimate"]);
    // And they were worth keeping: what the kitchen measured is not the prior any more
    // (five minutes an order, one at a time).
    let last = &after.as_array().unwrap()[3];
    let wait = minutes(reopened.clock.now(), time(&last["ready_estimate"]));
    assert!(
        wait < 15.0,
        "four orders ahead at the measured pace: {wait} min"
    );
}

/// Closes the box, puts `snapshot` (or none) in place of the kitchen's snapshot, and
/// opens it again on the same data directory and clock.
async fn reopen_with(b: TestBox, snapshot: Option<&[u8]>) -> TestBox {
    b.app.close().await;
    let path = b
        .app
        .config
        .data_dir
        .join(edge_node::store::kitchen::SNAPSHOT_FILE);
    match snapshot {
        Some(bytes) => std::fs::write(&path, bytes).unwrap(),
        None => std::fs::remove_file(&path).unwrap(),
    }
    let app = edge_node::App::open(b.app.config.clone(), b.clock.clone()).unwrap();
    TestBox {
        router: edge_node::http::router(app.clone()),
        app,
        clock: b.clock,
        items: b.items,
        dir: b.dir,
    }
}

/// Staff make an order: started, and ready 40 seconds later.
async fn make(b: &TestBox, staff: &str, order: &Value) {
    let started = b.transition(staff, order, "start_preparing").await.body;
    b.clock.advance(Duration::seconds(40));
    let ready = b.transition(staff, &started, "mark_ready").await;
    assert_eq!(ready.status, StatusCode::OK);
}

/// The queue and the estimates as students and staff see them.
async fn kitchen_seen(b: &TestBox) -> (Value, Value) {
    let staff = b.staff().await;
    let queue = b
        .get("/api/staff/orders?state=paid", Some(&staff))
        .await
        .body;
    let menu = b.get("/api/menu", None).await.body;
    (queue, menu["ready_estimate"].clone())
}

#[tokio::test]
async fn a_restart_from_a_snapshot_an_older_one_or_none_gives_the_same_kitchen() {
    let b = TestBox::with(|s| s, 12).await;
    let staff = b.staff().await;
    let mut queue = Vec::new();
    for n in 1..=12 {
        queue.push(paid_order(&b, &staff, n).await);
    }
    let path = b
        .app
        .config
        .data_dir
        .join(edge_node::store::kitchen::SNAPSHOT_FILE);
    for (order, _) in &queue[..4] {
        make(&b, &staff, order).await;
    }
    // A snapshot of the kitchen after four orders; then four more are made.
    assert!(b.app.save_kitchen().await.unwrap());
    assert!(!b.app.save_kitchen().await.unwrap(), "nothing new to keep");
    let older = std::fs::read(&path).unwrap();
    // It names students' orders: private, like the database.
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    for (order, _) in &queue[4..8] {
        make(&b, &staff, order).await;
    }
    let seen = kitchen_seen(&b).await;
    assert_eq!(seen.0.as_array().unwrap().len(), 4);

    // A clean stop keeps the kitchen as it is: the same after a restart.
    let b = b.reopen().await;
    assert_eq!(kitchen_seen(&b).await, seen);
    // After a crash the snapshot is older: the events after it are replayed on top.
    let b = reopen_with(b, Some(&older)).await;
    assert_eq!(kitchen_seen(&b).await, seen);
    // Without one, or with one that is unreadable or of another history (its last
    // event is not this database's), the day is replayed from the outbox.
    let b = reopen_with(b, None).await;
    assert_eq!(kitchen_seen(&b).await, seen);
    let b = reopen_with(b, Some(b"{not a snapshot")).await;
    assert_eq!(kitchen_seen(&b).await, seen);
    let mut foreign: Value = serde_json::from_slice(&older).unwrap();
    foreign["at"] = json!("2026-11-23T03:59:59.000000Z");
    foreign["state"]["kitchen"]["tickets"] = json!({});
    let b = reopen_with(b, Some(&serde_json::to_vec(&foreign).unwrap())).await;
    assert_eq!(kitchen_seen(&b).await, seen);
    // The same foreign snapshot with the right event would be taken (so the check
    // above is what kept it out): the queue it holds is empty.
    foreign["at"] = serde_json::from_slice::<Value>(&older).unwrap()["at"].clone();
    let b = reopen_with(b, Some(&serde_json::to_vec(&foreign).unwrap())).await;
    assert_ne!(kitchen_seen(&b).await, seen);
    b.app.close().await;
}

#[tokio::test]
async fn a_retried_order_with_a_slot_gets_its_order_back_even_when_the_slot_is_now_out_of_reach() {
    let b = TestBox::with(|s| s, 12).await;
    let staff = b.staff().await;
    add_slots(
        &b,
        &[json!({"id": "1210", "start": "12:05", "end": "12:20", "capacity": 40})],
    )
    .await;
    let student = b.student(1).await;
    let mut body = b.noodle_order(1);
    body["pickup_slot"] = json!("1210");
    let b = &b;
    let checkout = |key: &'static str| {
        let (student, body) = (student.clone(), body.clone());
        async move {
            b.call(
                Method::POST,
                "/api/student/orders",
                Some(&student),
                Some(body),
                &[("idempotency-key", key)],
            )
            .await
        }
    };
    let first = checkout("checkout-1").await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    // A queue forms: a new order could not be ready by 12:20 any more.
    for n in 2..=12 {
        paid_order(b, &staff, n).await;
    }
    let menu = b.get("/api/menu", None).await.body;
    assert_eq!(menu["pickup_slots"][0]["offered"], false, "{menu}");
    // The student's retry (the answer was lost) gets the order it placed.
    let retry = checkout("checkout-1").await;
    assert_eq!(retry.status, StatusCode::OK, "{:?}", retry.body);
    assert_eq!(retry.body["id"], first.body["id"]);
    // A new checkout for that slot is refused, saying when the kitchen could do it.
    let other = checkout("checkout-2").await;
    assert_slot_refused(&other);
}
