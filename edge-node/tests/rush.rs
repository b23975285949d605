//! The lunch rush over real HTTP: many students race for the last portions.

mod common;

use common::{noon, test_settings};
use edge_node::App;
use edge_node::config::{Config, Settings};
use edge_node::core::clock::ManualClock;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::Arc;

const STUDENTS: u32 = 1000;
const UNITS: u32 = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_students_race_for_a_hundred_portions() {
    let dir = tempfile::tempdir().unwrap();
    // A thousand phones, all on loopback here: lift the per-address connection cap.
    let config = Config::resolve(Settings {
        argon2_memory_kib: Some(8),
        connections_per_address: Some(100_000),
        ..test_settings(dir.path())
    })
    .unwrap();
    let app = App::open(config, Arc::new(ManualClock::new(noon()))).unwrap();
    let items = edge_node::demo::seed(&app, STUDENTS).await.unwrap();
    let pork = items
        .iter()
        .find(|i| i.fields.name_en.starts_with("Braised pork"))
        .unwrap()
        .clone();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(edge_node::run(listener, app.clone(), async move {
        let _ = stop_rx.await;
    }));
    let http = reqwest::Client::new();

    let manager: Value = http
        .post(format!("{base}/api/staff/login"))
        .json(&json!({"username": "manager", "password": "manager-pass"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let manager = manager["token"].as_str().unwrap().to_owned();
    let mut fields = serde_json::to_value(&pork.fields).unwrap();
    fields["daily_quota"] = json!(UNITS);
    let r = http
        .put(format!("{base}/api/staff/menu/{}", pork.id))
        .bearer_auth(&manager)
        .json(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let mut tokens = Vec::new();
    for n in 1..=STUDENTS {
        let r: Value = http
            .post(format!("{base}/api/student/login"))
            .json(&json!({"student_number": format!("2024{n:03}"), "pin": "135790"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        tokens.push(r["token"].as_str().expect("login").to_owned());
    }

    let barrier = Arc::new(tokio::sync::Barrier::new(tokens.len()));
    let mut tasks = tokio::task::JoinSet::new();
    for token in tokens {
        let (http, base, barrier) = (http.clone(), base.clone(), barrier.clone());
        let body =
            json!({"lines": [{"item_id": pork.id, "quantity": 1}], "payment_mode": "counter"});
        tasks.spawn(async move {
            barrier.wait().await;
            let r = http
                .post(format!("{base}/api/student/orders"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        });
    }
    let mut accepted = HashSet::new();
    let mut sold_out = 0;
    while let Some(done) = tasks.join_next().await {
        let (status, body) = done.unwrap();
        match status {
            201 => {
                accepted.insert(body["id"].as_str().unwrap().to_owned());
            }
            409 => {
                assert_eq!(body["error"]["code"], "sold_out", "{body}");
                sold_out += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(accepted.len(), UNITS as usize);
    assert_eq!(sold_out, (STUDENTS - UNITS) as usize);

    let menu: Value = http
        .get(format!("{base}/api/menu"))
        .bearer_auth(&manager)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entry = menu["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == json!(pork.id))
        .unwrap()
        .clone();
    assert_eq!(
        (entry["remaining"].as_i64(), entry["sold_out"].as_bool()),
        (Some(0), Some(true))
    );

    let outbox: Value = http
        .get(format!("{base}/api/staff/outbox?after_seq=0"))
        .bearer_auth(&manager)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // Every accepted order, and once the word that orders took the last portion.
    let events = outbox["events"].as_array().unwrap();
    assert_eq!(events.len(), UNITS as usize + 1);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["seq"].as_i64(), Some(i as i64 + 1));
    }
    let ran_out: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "stock.ran_out")
        .collect();
    assert_eq!(ran_out.len(), 1, "{ran_out:?}");
    assert_eq!(ran_out[0]["aggregate_id"], json!(pork.id));
    let in_outbox: HashSet<String> = events
        .iter()
        .filter(|e| e["kind"] == "order.placed")
        .map(|e| e["aggregate_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(in_outbox, accepted);

    stop_tx.send(()).unwrap();
    server.await.unwrap().unwrap();
}
