//! An online backup taken while orders stream in restores to a box that serves.

use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use tests::{Api, EdgeProcess, assert_gapless, edge_command, path_str, seed_demo};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_under_load_restores_to_a_serving_box() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("box");
    seed_demo(&data).unwrap();
    let edge = EdgeProcess::serve(&data, &[]).unwrap();
    let api = Api::new(&edge.base);
    let manager = api.manager().await.unwrap();
    api.unlimited_menu(&manager).await.unwrap();
    let menu = Arc::new(api.staff_menu(&manager).await.unwrap());

    let stop = Arc::new(AtomicBool::new(false));
    let placed = Arc::new(AtomicUsize::new(0));
    let mut load = tokio::task::JoinSet::new();
    for w in 0..8u32 {
        let token = api.student(w + 1).await.unwrap();
        let (api, menu, stop, placed) = (api.clone(), menu.clone(), stop.clone(), placed.clone());
        load.spawn(async move {
            let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_os_rng();
            while !stop.load(Ordering::SeqCst) {
                let (status, _) = api
                    .post(
                        "/api/student/orders",
                        Some(&token),
                        &tests::random_order(&menu, &mut rng),
                    )
                    .await
                    .unwrap();
                assert_eq!(status, 201);
                placed.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while placed.load(Ordering::SeqCst) < 100 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("100 orders within 60 s");
    let backup_file = dir.path().join("lunch.db");
    let before = placed.load(Ordering::SeqCst);
    let out = tokio::task::spawn_blocking({
        let (data, backup_file) = (data.clone(), backup_file.clone());
        move || {
            edge_command(&[
                "backup",
                path_str(&backup_file),
                "--data-dir",
                path_str(&data),
            ])
        }
    })
    .await
    .unwrap()
    .unwrap();
    assert!(out.contains("backup written"), "{out}");
    let after = placed.load(Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while load.join_next().await.is_some() {}
    })
    .await
    .expect("the load stops within 60 s");
    let source_manager = api.manager().await.unwrap();
    let source_events = api.outbox(&source_manager).await.unwrap();
    assert!(
        after > before,
        "orders were placed while the backup ran ({before} before, {after} after)"
    );
    // A second backup to the same name is refused rather than overwritten.
    assert!(
        edge_command(&[
            "backup",
            path_str(&backup_file),
            "--data-dir",
            path_str(&data)
        ])
        .is_err()
    );
    edge.terminate().unwrap();

    let restored = dir.path().join("restored");
    std::fs::create_dir_all(&restored).unwrap();
    std::fs::copy(&backup_file, restored.join("canteen.db")).unwrap();
    let edge = EdgeProcess::serve(&restored, &[]).unwrap();
    let api = Api::new(&edge.base);
    let (status, ready) = api.get("/readyz", None).await.unwrap();
    assert_eq!(status, 200);
    let manager = api.manager().await.unwrap();
    let events = api.outbox(&manager).await.unwrap();
    assert_gapless(&events);
    let orders = events
        .iter()
        .filter(|e| e["kind"] == "order.placed")
        .count();
    assert!(
        orders >= 100,
        "the backup holds the orders taken before it ({orders})"
    );
    assert_eq!(ready["outbox_last_seq"].as_i64(), Some(events.len() as i64));
    // The backup is the source as it was at one instant: every event up to its last
    // one, exactly (the source went on taking orders after it).
    assert!(events.len() < source_events.len());
    assert_eq!(events[..], source_events[..events.len()]);
    // It serves: a student logs in and orders; numbering continues.
    let student = api.student(3).await.unwrap();
    let (status, order) = api
        .post("/api/student/orders", Some(&student), &json!({"lines": [{"item_id": menu[0]["id"], "quantity": 1,
            "options": tests::random_order(&menu[..1], &mut rand::rng())["lines"][0]["options"]}], "payment_mode": "counter"}))
        .await
        .unwrap();
    assert_eq!(status, 201, "{order}");
    assert_eq!(api.outbox(&manager).await.unwrap().len(), events.len() + 1);
    edge.terminate().unwrap();
}
