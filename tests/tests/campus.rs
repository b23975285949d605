//! A campus as its admins see it: one cloud and three boxes as real processes over
//! QUIC, each box reporting its status; the console's totals equal the boxes' own, a
//! menu change pushed once reaches all three (and says so), a price change reaches the
//! chosen canteens only, a staff account of one canteen works there and nowhere else,
//! and a conflicting change is shown with both values and settled. A hand-made box
//! (speaking the protocol itself) does what a real one cannot on cue: move past a
//! business day, run its clock wrong, hold events back, send events late.

use cloud_sync::proto::{BoxHello, BoxStatus, DayTotals, Message, WireEvent};
use cloud_sync::wire;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;
use tests::world::{RawBox, World, caught_up, orders};
use tests::{Api, CloudProcess, EdgeProcess, FAST_ENV, eventually};

const NODES: [&str; 3] = ["canteen-north", "canteen-south", "canteen-east"];
/// Boxes report their status every second in these tests.
const STATUS_ENV: (&str, &str) = ("EDGE_CLOUD_STATUS_S", "1");

/// Status and JSON body of an admin API call with the cloud's admin token.
async fn call(
    cloud: &CloudProcess,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let client = reqwest::Client::new();
    let url = format!("{}{path}", cloud.admin);
    let mut req = match method {
        "GET" => client.get(url),
        _ => client.post(url),
    };
    req = req.bearer_auth(&cloud.token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// The row of `node` in a JSON list with a `canteen` or `node_id` field.
fn row<'a>(rows: &'a Value, node: &str) -> Option<&'a Value> {
    rows.as_array()?
        .iter()
        .find(|r| r["canteen"] == node || r["node_id"] == node)
}

/// A dish of the box's menu (staff view), if it has it.
async fn dish(api: &Api, staff: &str, id: &str) -> Option<Value> {
    api.staff_menu(staff)
        .await
        .ok()?
        .into_iter()
        .find(|i| i["id"] == id)
}

/// The newest push's targets, by canteen: (state, conflicts).
async fn push_states(cloud: &CloudProcess, push_id: &str) -> Vec<(String, String, Value)> {
    let (status, pushes) = call(cloud, "GET", "/api/menu/pushes", None).await;
    assert_eq!(status, 200, "{pushes}");
    let push = pushes
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["push_id"] == push_id)
        .unwrap_or_else(|| panic!("push {push_id} not listed: {pushes}"));
    push["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["canteen"].as_str().unwrap().to_owned(),
                t["state"].as_str().unwrap().to_owned(),
                t["conflicts"].clone(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_canteens_in_one_console() {
    let w = World::new(NODES[0]);
    let data = [w.box_data.clone(), w.add_box(NODES[1]), w.add_box(NODES[2])];
    let cloud = w.cloud("127.0.0.1:0".parse().unwrap());
    let mut env: Vec<(&str, &str)> = FAST_ENV.to_vec();
    env.push(STATUS_ENV);
    let boxes: Vec<(EdgeProcess, Api)> = NODES
        .iter()
        .zip(&data)
        .map(|(node, data)| {
            let edge = w.edge_of(cloud.quic, node, data, &env);
            let api = Api::new(&edge.base);
            (edge, api)
        })
        .collect();

    // A day of orders at each canteen (every path: paid, refunded, picked up, ...).
    for (i, (_, api)) in boxes.iter().enumerate() {
        orders(api, 12 + 6 * i).await;
    }
    let mut day = String::new();
    let mut campus_orders = 0;
    for (node, (_, api)) in NODES.iter().zip(&boxes) {
        let staff = api.staff("staff", "staff-pass").await.unwrap();
        let last = caught_up(api, &staff, &cloud, node).await;
        let (_, mine) = api.get("/api/staff/summary", Some(&staff)).await.unwrap();
        day = mine["service_day"].as_str().unwrap().to_owned();
        campus_orders += mine["orders"].as_i64().unwrap();

        // The console's sales of the day equal the box's own totals.
        let (status, sales) = call(&cloud, "GET", &format!("/api/sales?day={day}"), None).await;
        assert_eq!(status, 200, "{sales}");
        let theirs = row(&sales["canteens"], node).unwrap();
        for (a, b) in [
            ("orders", "orders"),
            ("revenue_fen", "revenue_fen"),
            ("refunds_fen", "refunds_fen"),
        ] {
            assert_eq!(theirs[a], mine[b], "{node} {a}: {theirs} vs {mine}");
        }
        for state in ["cancelled", "expired", "unclaimed"] {
            assert_eq!(theirs[state], mine[state], "{node} {state}");
        }

        // The box reports itself: nothing waiting, its versions, its documents in step.
        let fleet_row = eventually("the box's status", Duration::from_secs(60), || async {
            let (_, fleet) = call(&cloud, "GET", "/api/fleet", None).await;
            let r = row(&fleet, node).cloned();
            Ok(r.filter(|r| {
                r["waiting_events"] == 0
                    && r["status"]["last_seq"] == last
                    && r["documents"]
                        .as_array()
                        .is_some_and(|d| d.len() == 2 && d.iter().all(|d| d["applied"] == true))
            }))
        })
        .await
        .unwrap();
        assert_eq!(fleet_row["protocol"], 3, "{fleet_row}");
        assert_eq!(
            fleet_row["status"]["software"],
            env!("CARGO_PKG_VERSION"),
            "{fleet_row}"
        );
        assert!(fleet_row["status"]["schema"].as_u64().unwrap() > 0);
        assert!(
            fleet_row["status"]["clock_offset_ms"]
                .as_i64()
                .unwrap()
                .abs()
                < 5_000,
            "one machine, one clock: {fleet_row}"
        );
        assert_eq!(fleet_row["alerts"], json!([]), "{fleet_row}");

        // Reconciliation: the box's own totals of today equal the cloud's; the day is
        // not over, so it matches but is not closed.
        let recon = eventually(
            "today's reconciliation",
            Duration::from_secs(30),
            || async {
                let (_, rows) = call(
                    &cloud,
                    "GET",
                    &format!("/api/reconciliation?day={day}"),
                    None,
                )
                .await;
                Ok(row(&rows, node)
                    .cloned()
                    .filter(|r| r["box_totals"]["through_seq"] == last))
            },
        )
        .await
        .unwrap();
        assert_eq!(recon["state"], "matches", "{recon}");
        assert_eq!(recon["box_totals"]["orders"], mine["orders"]);
        assert_eq!(recon["cloud_totals"]["revenue_fen"], mine["revenue_fen"]);
        assert_eq!(recon["late_events"], 0);
    }
    let (_, sales) = call(&cloud, "GET", &format!("/api/sales?day={day}"), None).await;
    assert_eq!(sales["campus"]["orders"], campus_orders, "{sales}");
    // A range with the day in it counts the same orders.
    let week_before = (chrono::NaiveDate::parse_from_str(&day, "%Y-%m-%d").unwrap()
        - chrono::Duration::days(6))
    .to_string();
    let (status, range) = call(
        &cloud,
        "GET",
        &format!("/api/sales?day={week_before}&to={day}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{range}");
    assert_eq!(range["campus"]["orders"], campus_orders, "{range}");
    let (status, backwards) = call(
        &cloud,
        "GET",
        &format!("/api/sales?day={day}&to={week_before}"),
        None,
    )
    .await;
    assert_eq!(
        (status.as_u16(), backwards["error"]["code"].as_str()),
        (400, Some("bad_range"))
    );

    // A new dish pushed once (no canteens named: all three) reaches every box and
    // shows applied; its quota is today's stock at each box.
    let (status, pushed) = call(
        &cloud,
        "POST",
        "/api/menu/pushes",
        Some(
            json!({"name_zh": "番茄炒蛋", "name_en": "Tomato and egg", "category": "Mains",
                    "price_fen": 1600, "daily_quota": 40}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{pushed}");
    assert_eq!(pushed["sent"].as_array().unwrap().len(), 3, "{pushed}");
    let item = pushed["item"].as_str().unwrap().to_owned();
    let push_id = pushed["push_id"].as_str().unwrap().to_owned();
    for (node, (_, api)) in NODES.iter().zip(&boxes) {
        let manager = api.manager().await.unwrap();
        let d = eventually(
            "the pushed dish at the box",
            Duration::from_secs(60),
            || async { Ok(dish(api, &manager, &item).await) },
        )
        .await
        .unwrap_or_else(|e| panic!("{node}: {e}"));
        assert_eq!(
            (d["price_fen"].as_i64(), d["daily_quota"].as_i64()),
            (Some(1600), Some(40)),
            "{d}"
        );
        let (_, menu) = api.get("/api/menu", Some(&manager)).await.unwrap();
        let entry = menu["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == item)
            .cloned();
        assert_eq!(
            entry.map(|e| e["remaining"].clone()),
            Some(json!(40)),
            "{node}: {menu}"
        );
    }
    eventually(
        "the push applied at all three",
        Duration::from_secs(60),
        || async {
            let states = push_states(&cloud, &push_id).await;
            Ok((states.len() == 3 && states.iter().all(|(_, s, _)| s == "applied")).then_some(()))
        },
    )
    .await
    .unwrap();

    // A price change for two canteens: the third keeps its price.
    let (status, changed) = call(
        &cloud,
        "POST",
        "/api/menu/pushes",
        Some(json!({"item": item, "price_fen": 1800, "canteens": [NODES[0], NODES[1]]})),
    )
    .await;
    assert_eq!(status, 201, "{changed}");
    for (node, (_, api)) in NODES.iter().zip(&boxes) {
        let manager = api.manager().await.unwrap();
        let want = if *node == NODES[2] { 1600 } else { 1800 };
        eventually("the price at the box", Duration::from_secs(60), || async {
            let d = dish(api, &manager, &item).await;
            Ok(d.filter(|d| d["price_fen"] == want).map(|_| ()))
        })
        .await
        .unwrap_or_else(|e| panic!("{node}: {e}"));
    }
    // A canteen the cloud does not know is refused, and nothing is pushed.
    let (status, refused) = call(
        &cloud,
        "POST",
        "/api/menu/pushes",
        Some(json!({"item": item, "price_fen": 1, "canteens": ["canteen-nowhere"]})),
    )
    .await;
    assert_eq!(status, 404, "{refused}");

    // A staff account of the north canteen works there and nowhere else.
    let (status, issued) = call(
        &cloud,
        "POST",
        "/api/accounts/staff",
        Some(
            json!({"username": "north-cook", "name": "Zhou Bo", "role": "staff",
                    "password": "north-cook-pass", "canteens": [NODES[0]]}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{issued}");
    let (status, unscoped) = call(
        &cloud,
        "POST",
        "/api/accounts/staff",
        Some(
            json!({"username": "anywhere", "name": "Wu Yi", "role": "staff",
                    "password": "anywhere-pass", "canteens": []}),
        ),
    )
    .await;
    assert_eq!(
        (status.as_u16(), unscoped["error"]["code"].as_str()),
        (422, Some("bad_account"))
    );
    // A later account for every canteen: once a box has it, it has the one before.
    let res = reqwest::Client::new()
        .post(format!("{}/api/accounts/roster", cloud.admin))
        .bearer_auth(&cloud.token)
        .header("content-type", "text/csv")
        .body("student_number,name,pin\n2099101,Zheng Yi,246810\n")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    for (node, (_, api)) in NODES.iter().zip(&boxes) {
        eventually("the roster at the box", Duration::from_secs(60), || async {
            let (status, _) = api
                .post(
                    "/api/student/login",
                    None,
                    &json!({"student_number": "2099101", "pin": "246810"}),
                )
                .await?;
            Ok((status == 200).then_some(()))
        })
        .await
        .unwrap_or_else(|e| panic!("{node}: {e}"));
        let login = api.staff("north-cook", "north-cook-pass").await;
        if *node == NODES[0] {
            login.unwrap_or_else(|e| panic!("the north canteen's cook at north: {e}"));
        } else {
            assert!(
                login.is_err(),
                "the north canteen's cook logged in at {node}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflicting_push_shows_both_values_and_is_settled_on_one() {
    let node = "canteen-west";
    let w = World::new(node);
    let cloud = w.cloud("127.0.0.1:0".parse().unwrap());
    let mut env: Vec<(&str, &str)> = FAST_ENV.to_vec();
    env.push(STATUS_ENV);
    let edge = w.edge_of(cloud.quic, node, &w.box_data, &env);
    let api = Api::new(&edge.base);
    let manager = api.manager().await.unwrap();
    eventually(
        "the box known to the cloud",
        Duration::from_secs(60),
        || async {
            let (_, fleet) = call(&cloud, "GET", "/api/fleet", None).await;
            Ok(row(&fleet, node).map(|_| ()))
        },
    )
    .await
    .unwrap();
    let (status, pushed) = call(
        &cloud,
        "POST",
        "/api/menu/pushes",
        Some(json!({"name_zh": "红烧肉", "name_en": "Braised pork", "category": "Mains", "price_fen": 2200})),
    )
    .await;
    assert_eq!(status, 201, "{pushed}");
    let item = pushed["item"].as_str().unwrap().to_owned();
    let mut fields = eventually("the dish at the box", Duration::from_secs(60), || async {
        Ok(dish(&api, &manager, &item).await)
    })
    .await
    .unwrap();

    // The box is cut off; the cloud pushes one price, the manager at the box sets
    // another, each unaware of the other.
    edge.terminate().unwrap();
    let (status, second) = call(
        &cloud,
        "POST",
        "/api/menu/pushes",
        Some(json!({"item": item, "price_fen": 2500})),
    )
    .await;
    assert_eq!(status, 201, "{second}");
    let push_id = second["push_id"].as_str().unwrap().to_owned();
    let alone = EdgeProcess::serve(&w.box_data, FAST_ENV).unwrap();
    let alone_api = Api::new(&alone.base);
    let manager = alone_api.manager().await.unwrap();
    fields.as_object_mut().unwrap().remove("id");
    fields["price_fen"] = json!(2300);
    let res = reqwest::Client::new()
        .put(format!("{}/api/staff/menu/{item}", alone.base))
        .bearer_auth(&manager)
        .json(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    alone.terminate().unwrap();

    // Linked again: both prices stand, the console shows them.
    let edge = w.edge_of(cloud.quic, node, &w.box_data, &env);
    let api = Api::new(&edge.base);
    let conflicts = eventually(
        "the conflict at the console",
        Duration::from_secs(60),
        || async {
            let states = push_states(&cloud, &push_id).await;
            Ok(states
                .into_iter()
                .find(|(_, s, _)| s == "conflicting")
                .map(|(_, _, c)| c))
        },
    )
    .await
    .unwrap();
    let conflict = &conflicts[0];
    assert_eq!(conflict["path"][2], "price_fen", "{conflicts}");
    let mut values: Vec<&str> = conflict["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    values.sort();
    assert_eq!(values, ["2300", "2500"], "{conflicts}");

    // Settled on the cloud's price: the box takes it and the conflict is gone.
    let (status, body) = call(
        &cloud,
        "POST",
        "/api/menu/resolve",
        Some(json!({"canteen": node, "path": conflict["path"], "value": "9999"})),
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["error"]["code"].as_str()),
        (422, Some("not_a_value"))
    );
    let (status, _) = call(
        &cloud,
        "POST",
        "/api/menu/resolve",
        Some(json!({"canteen": node, "path": conflict["path"], "value": "2500"})),
    )
    .await;
    assert_eq!(status, 204);
    let manager = api.manager().await.unwrap();
    eventually(
        "the settled price at the box",
        Duration::from_secs(60),
        || async {
            let d = dish(&api, &manager, &item).await;
            let (_, menu) = api.get("/api/staff/menu", Some(&manager)).await?;
            let open = menu["conflicts"].as_array().map_or(0, Vec::len);
            Ok(d.filter(|d| d["price_fen"] == 2500 && open == 0)
                .map(|_| ()))
        },
    )
    .await
    .unwrap();
    eventually("the push applied", Duration::from_secs(60), || async {
        let states = push_states(&cloud, &push_id).await;
        Ok((states
            .iter()
            .all(|(_, s, c)| s == "applied" && c == &json!([])))
        .then_some(()))
    })
    .await
    .unwrap();
    let (_, audit) = call(&cloud, "GET", "/api/audit", None).await;
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(
        actions.contains(&"menu.push") && actions.contains(&"menu.resolve"),
        "{actions:?}"
    );
}

/// An `order.placed` of `day` with one line, and its payment, as a box writes them.
fn paid_order(seq: u64, day: &str, fen: i64) -> Vec<WireEvent> {
    let order = uuid::Uuid::now_v7();
    let student = uuid::Uuid::now_v7();
    let at = format!("{day}T04:10:00Z");
    vec![
        WireEvent {
            seq,
            kind: "order.placed".into(),
            aggregate_id: order.to_string(),
            payload: format!(
                r#"{{"v":2,"id":"{order}","student_id":"{student}","service_day":"{day}","total_fen":{fen},"lines":[{{"item_id":"{}","quantity":1,"line_total_fen":{fen}}}]}}"#,
                uuid::Uuid::now_v7()
            ),
            at: at.clone(),
        },
        WireEvent {
            seq: seq + 1,
            kind: "order.paid".into(),
            aggregate_id: order.to_string(),
            payload: format!(
                r#"{{"v":2,"order_id":"{order}","student_id":"{student}","service_day":"{day}","from":"placed","to":"paid","event":"pay","version":2,"actor":"system","payment":{{"kind":"payment","payment_id":"{}","method":"counter","amount_fen":{fen}}}}}"#,
                uuid::Uuid::now_v7()
            ),
            at,
        },
    ]
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_closes_when_the_box_moved_past_it_and_later_events_are_flagged_late() {
    let node = "canteen-raw";
    let w = World::new(node);
    let cloud = w.cloud("127.0.0.1:0".parse().unwrap());
    let hello = Message::HelloV2(BoxHello {
        version: 3,
        node_id: node.into(),
        incarnation: "raw-box-1".into(),
        base_seq: 0,
        last_seq: 0,
        acked_seq: 0,
        cloud_incarnation: String::new(),
        doc_schemas: Vec::new(),
    });
    let mut raw = RawBox::connect(cloud.quic, &w.enrol, node, &hello)
        .await
        .unwrap();
    match &raw.answer {
        Message::WelcomeV2(welcome) => assert_eq!(welcome.version, 3, "welcomed in version 3"),
        other => panic!("answered {other:?}"),
    }
    let (mut send, recv) = raw.conn.open_bi().await.unwrap();
    let mut acks = wire::reader(recv);
    let mut events = paid_order(1, "2026-12-01", 1200);
    events.extend(paid_order(3, "2026-12-01", 800));
    for batch in [Vec::new(), events] {
        let last = batch.last().map(|e| e.seq);
        wire::send(&mut send, &Message::Events { events: batch })
            .await
            .unwrap();
        if let Some(last) = last {
            match wire::next(&mut acks).await.unwrap() {
                Message::Ack { through_seq } => assert_eq!(through_seq, last),
                other => panic!("{other:?}"),
            }
        }
    }
    // The box is on 2026-12-02 now; its clock runs 10 minutes ahead, and five more
    // events have waited 20 minutes without being sent (stamped by that clock: a cloud
    // that forgot the offset would say 10).
    // Counted through its last event (9): the five it has not sent are of its new
    // day, so day 1 closes all the same, complete up to what the cloud holds (4).
    let day_1 = DayTotals {
        day: "2026-12-01".into(),
        through_seq: 9,
        orders: 2,
        revenue_fen: 2000,
        ..DayTotals::default()
    };
    let status = |days: Vec<DayTotals>, last_seq: u64, acked_seq: u64| BoxStatus {
        sent_at_ms: now_ms() + 600_000,
        software: "0.9.9".into(),
        schema: 12,
        last_seq,
        acked_seq,
        oldest_waiting_at: (last_seq > acked_seq).then(|| {
            chrono::DateTime::from_timestamp_millis(now_ms() + 600_000 - 1_200_000)
                .unwrap()
                .to_rfc3339()
        }),
        docs: Vec::new(),
        days,
    };
    let today = DayTotals {
        day: "2026-12-02".into(),
        through_seq: 9,
        ..DayTotals::default()
    };
    wire::send(
        &mut raw.control,
        &Message::Status(status(vec![today.clone(), day_1.clone()], 9, 4)),
    )
    .await
    .unwrap();
    let closed = eventually("the day closed", Duration::from_secs(30), || async {
        let (_, rows) = call(
            &cloud,
            "GET",
            "/api/reconciliation?day=2026-12-01&to=2026-12-02",
            None,
        )
        .await;
        let day_1 = rows
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["canteen"] == node && r["day"] == "2026-12-01");
        Ok(day_1.cloned().filter(|r| r["state"] == "closed"))
    })
    .await
    .unwrap();
    assert_eq!(closed["complete_through"], 4, "{closed}");
    assert_eq!(closed["cloud_totals"]["revenue_fen"], 2000);

    // The fleet: the clock and the stuck outbox raise alerts.
    let (_, fleet) = call(&cloud, "GET", "/api/fleet", None).await;
    let r = row(&fleet, node).unwrap();
    assert_eq!(r["waiting_events"], 5, "{r}");
    let waited = r["oldest_waiting_s"].as_i64().unwrap();
    assert!((1190..=1300).contains(&waited), "{r}");
    assert!(
        (r["status"]["clock_offset_ms"].as_i64().unwrap() - 600_000).abs() < 5_000,
        "{r}"
    );
    let codes: Vec<&str> = r["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["outbox_stuck", "clock_off"], "{r}");
    assert_eq!(r["status"]["software"], "0.9.9");

    // One more paid order of day 1 arrives after the day closed (a box whose link was
    // down at closing); the box reports its new totals.
    let late = paid_order(5, "2026-12-01", 500);
    wire::send(&mut send, &Message::Events { events: late })
        .await
        .unwrap();
    match wire::next(&mut acks).await.unwrap() {
        Message::Ack { through_seq } => assert_eq!(through_seq, 6),
        other => panic!("{other:?}"),
    }
    let (_, rows) = call(&cloud, "GET", "/api/reconciliation?day=2026-12-01", None).await;
    let r = row(&rows, node).unwrap();
    // The box's last report no longer matches (it counted through event 9, which the
    // cloud does not have yet); the two late events are flagged.
    assert_eq!(
        (r["state"].as_str(), r["late_events"].as_i64()),
        (Some("in_transit"), Some(2)),
        "{r}"
    );
    let day_1_now = DayTotals {
        through_seq: 6,
        orders: 3,
        revenue_fen: 2500,
        ..day_1
    };
    wire::send(
        &mut raw.control,
        &Message::Status(status(vec![today, day_1_now], 9, 6)),
    )
    .await
    .unwrap();
    let r = eventually("the day matched again", Duration::from_secs(30), || async {
        let (_, rows) = call(&cloud, "GET", "/api/reconciliation?day=2026-12-01", None).await;
        Ok(row(&rows, node).cloned().filter(|r| r["state"] == "closed"))
    })
    .await
    .unwrap();
    assert_eq!(
        (r["late_events"].as_i64(), r["complete_through"].as_i64()),
        (Some(2), Some(4)),
        "{r}"
    );

    // A status that makes no sense ends the link, with the reason.
    let bad = BoxStatus {
        days: vec![DayTotals {
            day: "2026-12-02".into(),
            orders: -1,
            ..DayTotals::default()
        }],
        ..status(Vec::new(), 9, 6)
    };
    wire::send(&mut raw.control, &Message::Status(bad))
        .await
        .unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(10), raw.conn.closed())
        .await
        .unwrap();
    assert!(reason.to_string().contains("status refused"), "{reason}");
    raw.close().await;

    // A box of the previous release (version 2) is welcomed in version 2.
    let v2 = Message::HelloV2(BoxHello {
        version: 2,
        node_id: node.into(),
        incarnation: "raw-box-1".into(),
        base_seq: 0,
        last_seq: 6,
        acked_seq: 6,
        cloud_incarnation: String::new(),
        doc_schemas: Vec::new(),
    });
    let raw = RawBox::connect(cloud.quic, &w.enrol, node, &v2)
        .await
        .unwrap();
    match &raw.answer {
        Message::WelcomeV2(welcome) => assert_eq!(welcome.version, 2),
        other => panic!("answered {other:?}"),
    }
    raw.close().await;
}

/// A GET of the admin API with a bearer token, as JSON.
async fn get_json(base: &str, token: &str, path: &str) -> anyhow::Result<Value> {
    Ok(reqwest::Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await?
        .json()
        .await?)
}

/// `cloud-sync demo`: a new user's first command gives a campus whose console shows
/// three canteens with yesterday's orders, reconciled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_campus_demo_serves_a_living_console() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let campus = dir.path().join("campus");
    let mut child = std::process::Command::new(tests::cloud_binary())
        .args(["demo", "--dir"])
        .arg(&campus)
        .args(["--admin-listen", "127.0.0.1:0", "--offline-seconds", "0"])
        .env("EDGE_NODE_BIN", tests::edge_binary())
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("demo.log")).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(rest) = line.trim().strip_prefix("console:") {
                let url = rest.split_whitespace().next().unwrap_or_default();
                let _ = tx.send(url.trim_end_matches('/').to_owned());
            }
        }
    });
    let console = rx
        .recv_timeout(Duration::from_secs(240))
        .unwrap_or_else(|_| {
            panic!(
                "no console: {}",
                tests::world::read(&dir.path().join("demo.log"))
            )
        });
    let http = reqwest::Client::new();
    let login: Value = http
        .post(format!("{console}/api/login"))
        .json(&json!({"username": "admin", "password": "campus-demo-pass"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().unwrap().to_owned();
    let sales = eventually(
        "the played day in the console",
        Duration::from_secs(120),
        || async {
            let sales = get_json(&console, &token, "/api/sales").await?;
            let rows = sales["canteens"].as_array().cloned().unwrap_or_default();
            Ok(
                (rows.len() == 3 && rows.iter().all(|r| r["orders"].as_i64().unwrap_or(0) > 100))
                    .then_some(sales),
            )
        },
    )
    .await
    .unwrap();
    assert!(
        sales["campus"]["refunds_fen"].as_i64().unwrap() > 0,
        "{sales}"
    );
    let hourly: i64 = sales["hourly"][0]["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_i64().unwrap())
        .sum();
    assert_eq!(hourly, sales["canteens"][0]["orders"].as_i64().unwrap());
    let day = sales["day"].as_str().unwrap().to_owned();
    let closed = eventually(
        "the played day reconciled",
        Duration::from_secs(120),
        || async {
            let rows =
                get_json(&console, &token, &format!("/api/reconciliation?day={day}")).await?;
            let rows = rows.as_array().cloned().unwrap_or_default();
            Ok((rows.len() == 3 && rows.iter().all(|r| r["state"] == "closed")).then_some(rows))
        },
    )
    .await
    .unwrap();
    assert!(
        closed
            .iter()
            .all(|r| r["box_totals"]["orders"] == r["cloud_totals"]["orders"])
    );
    let items = get_json(&console, &token, &format!("/api/items?day={day}"))
        .await
        .unwrap();
    assert!(!items["sold_out"].as_array().unwrap().is_empty(), "{items}");
    // Stopped as a user stops it (Ctrl-C / SIGTERM): it stops its boxes with it.
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let mut stopped = false;
    for _ in 0..300 {
        if child.try_wait().unwrap().is_some() {
            stopped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !stopped {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(stopped, "the demo did not stop within 30 s of SIGTERM");
}
