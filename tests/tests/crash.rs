//! Kill -9 in the middle of a burst of orders, payments and cancellations: every order
//! that got a 2xx is there after a restart in the state it was acknowledged in or later,
//! the outbox is gapless, each dish's stock equals what the stored orders hold, pickup
//! numbers continue, and an acknowledged idempotency key replays the same order. Every
//! wait has a deadline: a hang fails the test instead of stalling CI.

use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tests::{Api, EdgeProcess, assert_gapless, seed_demo};

const WORKERS: u32 = 32;
/// Large enough never to sell out in the burst, small enough to show a count.
const QUOTA: u64 = 100_000;

/// An acknowledged placement: its key, body and the order the box answered with.
#[derive(Clone)]
struct Acked {
    key: String,
    body: Value,
    order: Value,
}

async fn within<T>(what: &str, secs: u64, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {secs} s"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_burst_loses_no_acknowledged_order() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("box");
    seed_demo(&data).unwrap();
    let edge = EdgeProcess::serve(&data, &[]).unwrap();
    let api = Api::new(&edge.base);
    let manager = api.manager().await.unwrap();
    for item in api.staff_menu(&manager).await.unwrap() {
        let id = item["id"].as_str().unwrap().to_owned();
        let mut fields = item.clone();
        fields.as_object_mut().unwrap().remove("id");
        fields["daily_quota"] = json!(QUOTA);
        let res = api
            .http
            .put(format!("{}/api/staff/menu/{id}", api.base))
            .bearer_auth(&manager)
            .json(&fields)
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "{}", res.status());
    }
    let menu = Arc::new(api.staff_menu(&manager).await.unwrap());

    let acked = Arc::new(std::sync::Mutex::new(Vec::<Acked>::new()));
    // Transitions the box acknowledged: order id → the state it answered with.
    let moved = Arc::new(std::sync::Mutex::new(HashMap::<String, String>::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..WORKERS {
        let token = api.student(w % 30 + 1).await.unwrap();
        let (api, menu, acked, count) = (api.clone(), menu.clone(), acked.clone(), count.clone());
        workers.spawn(async move {
            let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_os_rng();
            let mut n = 0u32;
            loop {
                n += 1;
                let body = tests::random_order(&menu, &mut rng);
                let key = format!("w{w}-{n}");
                let req = api
                    .http
                    .post(format!("{}/api/student/orders", api.base))
                    .bearer_auth(&token)
                    .header("idempotency-key", &key)
                    .json(&body);
                match req.send().await {
                    Ok(res) if res.status().is_success() => {
                        // Only an order whose whole response arrived counts as acknowledged.
                        if let Ok(order) = res.json::<Value>().await {
                            acked.lock().unwrap().push(Acked { key, body, order });
                            count.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    Ok(res) => panic!("unexpected status {}", res.status()),
                    // The box died under us: stop.
                    Err(_) => return,
                }
            }
        });
    }
    // Staff pay and cancel placed orders while the students order.
    for s in 0..2 {
        let (api, moved) = (api.clone(), moved.clone());
        let staff = api.staff("staff", "staff-pass").await.unwrap();
        workers.spawn(async move {
            let mut round = 0u64;
            loop {
                let Ok((200, queue)) = api
                    .get("/api/staff/orders?state=placed&limit=20", Some(&staff))
                    .await
                else {
                    return;
                };
                for order in queue.as_array().into_iter().flatten() {
                    round += 1;
                    let event = if (round + s) % 3 == 0 {
                        "cancel"
                    } else {
                        "pay"
                    };
                    let id = order["id"].as_str().unwrap().to_owned();
                    let res = api
                        .post(
                            &format!("/api/staff/orders/{id}/transitions"),
                            Some(&staff),
                            &json!({"event": event, "version": order["version"]}),
                        )
                        .await;
                    match res {
                        Ok((200, after)) => {
                            moved
                                .lock()
                                .unwrap()
                                .insert(id, after["state"].as_str().unwrap().to_owned());
                        }
                        // The other staff worker got there first.
                        Ok((409, _)) => {}
                        Ok((status, body)) => panic!("transition: {status} {body}"),
                        Err(_) => return,
                    }
                }
            }
        });
    }
    // Let the burst get going, then pull the plug mid-stream.
    within("the burst", 120, async {
        while count.load(Ordering::SeqCst) < 400 || moved.lock().unwrap().len() < 50 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    edge.kill_9();
    within("the workers", 60, async {
        while workers.join_next().await.is_some() {}
    })
    .await;
    let acked: Vec<Acked> = acked.lock().unwrap().clone();
    let moved = moved.lock().unwrap().clone();
    assert!(acked.len() >= 400);

    let edge = EdgeProcess::serve(&data, &[]).unwrap();
    let api = Api::new(&edge.base);
    let manager = api.manager().await.unwrap();
    let events = api.outbox(&manager).await.unwrap();
    assert_gapless(&events);
    let placed: HashSet<&str> = events
        .iter()
        .filter(|e| e["kind"] == "order.placed")
        .map(|e| e["aggregate_id"].as_str().unwrap())
        .collect();
    for a in &acked {
        let id = a.order["id"].as_str().unwrap();
        assert!(
            placed.contains(id),
            "acknowledged order {id} is missing after the crash"
        );
    }
    // Each order's last state from the stored events, and its portions per dish.
    let mut state: HashMap<String, String> = HashMap::new();
    let mut portions: HashMap<String, Vec<(String, i64)>> = HashMap::new();
    for e in &events {
        let id = e["aggregate_id"].as_str().unwrap().to_owned();
        if e["kind"] == "order.placed" {
            let lines = e["payload"]["lines"].as_array().unwrap();
            portions.insert(
                id.clone(),
                lines
                    .iter()
                    .map(|l| {
                        (
                            l["item_id"].as_str().unwrap().to_owned(),
                            l["quantity"].as_i64().unwrap(),
                        )
                    })
                    .collect(),
            );
        }
        if let Some(to) = e["kind"].as_str().unwrap().strip_prefix("order.") {
            state.insert(id, to.to_owned());
        }
    }
    for (id, acknowledged) in &moved {
        assert_eq!(
            state.get(id),
            Some(acknowledged),
            "order {id} was acknowledged {acknowledged}"
        );
    }
    // Stock per dish equals what the stored orders hold.
    let mut held: HashMap<String, i64> = HashMap::new();
    for (id, lines) in &portions {
        if ["placed", "paid"].contains(&state[id].as_str()) {
            for (item, qty) in lines {
                *held.entry(item.clone()).or_default() += qty;
            }
        }
    }
    let (_, public) = api.get("/api/menu", Some(&manager)).await.unwrap();
    for item in public["items"].as_array().unwrap() {
        let id = item["id"].as_str().unwrap();
        let expected = QUOTA as i64 - held.get(id).copied().unwrap_or(0);
        assert_eq!(
            item["remaining"].as_i64(),
            Some(expected),
            "{}",
            item["name_en"]
        );
    }
    // An acknowledged key replays the same order, changing nothing.
    let first = &acked[0];
    // Keys are `w{worker}-{n}`; worker w orders as student w % 30 + 1.
    let worker: u32 = first.key[1..].split('-').next().unwrap().parse().unwrap();
    let student_number = worker % 30 + 1;
    let student = api.student(student_number).await.unwrap();
    let replay = api
        .http
        .post(format!("{}/api/student/orders", api.base))
        .bearer_auth(&student)
        .header("idempotency-key", &first.key)
        .json(&first.body)
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status().as_u16(), 200);
    let replayed: Value = replay.json().await.unwrap();
    assert_eq!(replayed["id"], first.order["id"]);
    // The restarted box keeps numbering where it left off.
    let highest = events
        .iter()
        .filter(|e| e["kind"] == "order.placed")
        .filter_map(|e| e["payload"]["pickup_number"].as_i64())
        .max()
        .unwrap();
    let (status, next) = api
        .post(
            "/api/student/orders",
            Some(&student),
            &tests::random_order(&menu, &mut rand::rng()),
        )
        .await
        .unwrap();
    assert_eq!(status, 201);
    assert_eq!(next["pickup_number"].as_i64(), Some(highest + 1));
    let after = api.outbox(&manager).await.unwrap();
    assert_eq!(after.len(), events.len() + 1);
    assert_gapless(&after);
    edge.terminate().unwrap();
}
