//! Kill -9 in the middle of a burst of orders: every order that got a 2xx is there
//! after a restart, and the outbox is gapless.

use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tests::{Api, EdgeProcess, assert_gapless, seed_demo};

const WORKERS: u32 = 32;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_burst_loses_no_acknowledged_order() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("box");
    seed_demo(&data).unwrap();
    let edge = EdgeProcess::serve(&data, &[]).unwrap();
    let api = Api::new(&edge.base);
    let manager = api.manager().await.unwrap();
    api.unlimited_menu(&manager).await.unwrap();
    let menu = Arc::new(api.staff_menu(&manager).await.unwrap());

    let acked = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
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
                let req = api
                    .http
                    .post(format!("{}/api/student/orders", api.base))
                    .bearer_auth(&token)
                    .header("idempotency-key", format!("w{w}-{n}"))
                    .json(&body);
                match req.send().await {
                    Ok(res) if res.status().is_success() => {
                        // Only an order whose whole response arrived counts as acknowledged.
                        if let Ok(order) = res.json::<Value>().await {
                            acked
                                .lock()
                                .unwrap()
                                .push(order["id"].as_str().unwrap().to_owned());
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
    // Let the burst get going, then pull the plug mid-stream.
    while count.load(Ordering::SeqCst) < 400 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    edge.kill_9();
    while workers.join_next().await.is_some() {}
    let acked: Vec<String> = acked.lock().unwrap().clone();
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
    for id in &acked {
        assert!(
            placed.contains(id.as_str()),
            "acknowledged order {id} is missing after the crash"
        );
        let (status, order) = api
            .get(&format!("/api/staff/orders/{id}"), Some(&manager))
            .await
            .unwrap();
        assert_eq!((status, &order["state"]), (200, &json!("placed")));
    }
    // The restarted box keeps numbering where it left off.
    let student = api.student(1).await.unwrap();
    let (status, _) = api
        .post(
            "/api/student/orders",
            Some(&student),
            &tests::random_order(&menu, &mut rand::rng()),
        )
        .await
        .unwrap();
    assert_eq!(status, 201);
    let after = api.outbox(&manager).await.unwrap();
    assert_eq!(after.len(), events.len() + 1);
    assert_gapless(&after);
    edge.terminate().unwrap();
}
