//! The menu and settings documents at the box: edits through the API, restart,
//! compaction, damaged storage, conflicts, settings that change what students see.

mod common;

use axum::http::{Method, StatusCode};
use common::TestBox;
use crdt::menu::MenuEdit;
use crdt::{DocKind, ReplicatedDoc};
use edge_node::App;
use serde_json::json;

fn chunks(path: &std::path::Path, doc: &str) -> Vec<(i64, String, Vec<u8>)> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT seq, kind, data FROM doc_chunk WHERE doc = ?1 ORDER BY seq")
        .unwrap();
    stmt.query_map([doc], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

async fn reopen(b: TestBox) -> TestBox {
    b.app.close().await;
    let app = App::open(b.app.config.clone(), b.clock.clone()).unwrap();
    let router = edge_node::http::router(app.clone());
    TestBox {
        app,
        router,
        clock: b.clock.clone(),
        items: b.items.clone(),
        dir: b.dir,
    }
}

#[tokio::test]
async fn menu_edits_survive_a_restart_and_compaction_keeps_the_document() {
    let b = TestBox::new().await;
    let manager = b.manager().await;
    let item = b.item("Tomato and egg with rice").id;
    let db = b.app.config.db_path();
    // Enough edits for the chunks to outgrow the snapshot at least once.
    for price in 1200..1300 {
        let r = b
            .call(
                Method::POST,
                "/api/staff/menu/edits",
                Some(&manager),
                Some(json!([{"op": "set_price", "item": item, "price_fen": price}])),
                &[],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    }
    let stored = chunks(&db, "menu");
    assert_eq!(
        stored.iter().filter(|c| c.1 == "snapshot").count(),
        1,
        "compaction leaves one snapshot"
    );
    assert!(
        stored.len() < 100,
        "compaction ran: {} chunks",
        stored.len()
    );
    let before = b.get("/api/menu", None).await.body;

    let b = reopen(b).await;
    let after = b.get("/api/menu", None).await.body;
    assert_eq!(after["items"], before["items"]);
    let entry = after["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == json!(item))
        .unwrap()
        .clone();
    assert_eq!(entry["price_fen"], 1299);
}

#[tokio::test]
async fn edits_committed_in_one_group_all_reach_the_menu() {
    let b = TestBox::new().await;
    let edits: Vec<_> = b
        .items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let docs = b.app.docs.clone();
            let edit = MenuEdit::SetPrice {
                item: item.id,
                price_fen: 5000 + i as i64,
            };
            let writer = b.app.clone();
            async move {
                writer
                    .writer
                    .write(move |ctx| docs.edit_menu(ctx, &[edit]))
                    .await
            }
        })
        .collect();
    for r in futures_util::future::join_all(edits).await {
        r.unwrap();
    }
    let menu = b.get("/api/menu", None).await.body;
    for (i, item) in b.items.iter().enumerate() {
        let entry = menu["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["id"] == json!(item.id))
            .unwrap()
            .clone();
        assert_eq!(
            entry["price_fen"],
            5000 + i as i64,
            "{}",
            item.fields.name_en
        );
    }
}

#[tokio::test]
async fn a_damaged_chunk_stops_the_box_with_the_document_named() {
    let b = TestBox::new().await;
    let manager = b.manager().await;
    let item = b.item("Soy milk").id;
    b.call(
        Method::POST,
        "/api/staff/menu/edits",
        Some(&manager),
        Some(json!([{"op": "set_price", "item": item, "price_fen": 300}])),
        &[],
    )
    .await;
    b.app.close().await;
    let db = b.app.config.db_path();
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "UPDATE doc_chunk SET data = substr(data, 1, length(data) - 9)
         WHERE doc = 'menu' AND seq = (SELECT MAX(seq) FROM doc_chunk WHERE doc = 'menu')",
        [],
    )
    .unwrap();
    drop(conn);
    let err = App::open(b.app.config.clone(), b.clock.clone())
        .err()
        .expect("the box must refuse to start");
    assert!(err.to_string().contains("menu document"), "{err}");
}

#[tokio::test]
async fn a_concurrent_remote_edit_shows_as_a_conflict_in_the_staff_api() {
    let b = TestBox::new().await;
    let manager = b.manager().await;
    let item = b.item("Mapo tofu with rice").id;
    let db = b.app.config.db_path();
    b.app.close().await;

    // The cloud's replica, as it was before the partition.
    let base: Vec<Vec<u8>> = chunks(&db, "menu").into_iter().map(|c| c.2).collect();
    let mut cloud = ReplicatedDoc::load(
        DocKind::Menu,
        base.iter().map(Vec::as_slice),
        b"cloud-admin",
    )
    .unwrap();
    let cloud_base = cloud.heads();
    crdt::menu::apply(
        &mut cloud,
        &[
            MenuEdit::SetPrice {
                item,
                price_fen: 1700,
            },
            MenuEdit::SetNameEn {
                item,
                name: "Mapo tofu rice bowl".into(),
            },
        ],
        1,
    )
    .unwrap();
    let _ = cloud_base;
    let cloud_changes = cloud.save_incremental();

    // Meanwhile the box's manager changes the price too.
    let b = reopen(b).await;
    let r = b
        .call(
            Method::POST,
            "/api/staff/menu/edits",
            Some(&manager),
            Some(json!([{"op": "set_price", "item": item, "price_fen": 1500}])),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    b.app.close().await;
    // The link heals: the cloud's changes arrive (as the sync layer will store them).
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "INSERT INTO doc_chunk (doc, seq, kind, data) VALUES ('menu', (SELECT MAX(seq) + 1 FROM doc_chunk WHERE doc = 'menu'), 'incremental', ?1)",
        [cloud_changes],
    )
    .unwrap();
    drop(conn);
    let b = reopen(b).await;
    let staff = b.staff().await;
    let menu = b.get("/api/staff/menu", Some(&staff)).await.body;
    let conflicts = menu["conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    assert_eq!(
        conflicts[0]["path"],
        json!(["items", item.to_string(), "price_fen"])
    );
    let mut values: Vec<String> = conflicts[0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let shown = menu["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == json!(item))
        .unwrap()
        .clone();
    assert_eq!(
        shown["price_fen"].to_string(),
        values[0],
        "the item shows the winner"
    );
    assert_eq!(
        shown["name_en"], "Mapo tofu rice bowl",
        "the cloud's rename of another field survived"
    );
    values.sort();
    assert_eq!(values, ["1500", "1700"]);
    // Setting the field again resolves it.
    let r = b
        .call(
            Method::POST,
            "/api/staff/menu/edits",
            Some(&manager),
            Some(json!([{"op": "set_price", "item": item, "price_fen": 1600}])),
            &[],
        )
        .await;
    assert!(r.body["conflicts"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn settings_edits_change_what_students_see_and_slots_have_capacity() {
    let b = TestBox::new().await;
    let manager = b.manager().await;
    let staff = b.staff().await;
    let edits = json!([
        {"op": "set_announcement", "text": "今天牛肉面特价 / Beef noodles on offer"},
        {"op": "add_slot", "slot": {"id": "1200", "start": "12:00", "end": "12:15", "capacity": 2}},
        {"op": "add_slot", "slot": {"id": "1215", "start": "12:15", "end": "12:30", "capacity": 40}}
    ]);
    let r = b
        .call(
            Method::POST,
            "/api/staff/settings/edits",
            Some(&manager),
            Some(edits.clone()),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = b
        .call(
            Method::POST,
            "/api/staff/settings/edits",
            Some(&staff),
            Some(edits),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let bad = b
        .call(
            Method::POST,
            "/api/staff/settings/edits",
            Some(&manager),
            Some(json!([{"op": "set_time_zone", "time_zone": "Mars/Base"}])),
            &[],
        )
        .await;
    assert_eq!(
        (bad.status, bad.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_settings")
    );

    let menu = b.get("/api/menu", None).await.body;
    assert_eq!(
        menu["announcement"],
        "今天牛肉面特价 / Beef noodles on offer"
    );
    assert_eq!(menu["pickup_slots"][0]["id"], "1200");
    assert_eq!(menu["pickup_slots"][0]["full"], false);

    let mut order = b.noodle_order(1);
    order["pickup_slot"] = json!("1200");
    let (s1, s2, s3) = (b.student(1).await, b.student(2).await, b.student(3).await);
    let first = b.place(&s1, order.clone()).await;
    assert_eq!(
        (first.status, &first.body["pickup_slot"]),
        (StatusCode::CREATED, &json!("1200"))
    );
    assert_eq!(
        b.place(&s2, order.clone()).await.status,
        StatusCode::CREATED
    );
    let full = b.place(&s3, order.clone()).await;
    assert_eq!(
        (full.status, full.code()),
        (StatusCode::CONFLICT, "pickup_slot_full")
    );
    let menu = b.get("/api/menu", None).await.body;
    assert_eq!(
        (
            menu["pickup_slots"][0]["taken"].as_i64(),
            menu["pickup_slots"][0]["full"].as_bool()
        ),
        (Some(2), Some(true))
    );
    let mut unknown = order.clone();
    unknown["pickup_slot"] = json!("0300");
    assert_eq!(b.place(&s3, unknown).await.code(), "unknown_pickup_slot");
    // A cancellation frees the place.
    let id = first.body["id"].as_str().unwrap();
    b.post(
        &format!("/api/student/orders/{id}/cancel"),
        Some(&s1),
        json!({}),
    )
    .await;
    assert_eq!(b.place(&s3, order).await.status, StatusCode::CREATED);

    // Closing today (Monday) through the settings closes ordering at once.
    let r = b
        .call(
            Method::POST,
            "/api/staff/settings/edits",
            Some(&manager),
            Some(json!([{"op": "set_hours", "day": "mon", "open": "10:00", "close": "20:00", "closed": true}])),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let menu = b.get("/api/menu", None).await.body;
    assert_eq!(
        (menu["open"].as_bool(), menu["closed_today"].as_bool()),
        (Some(false), Some(true))
    );
    let r = b.place(&b.student(4).await, b.noodle_order(1)).await;
    assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "closed"));
    // And the settings survive a restart.
    let b = reopen(b).await;
    let s = b
        .get("/api/staff/settings", Some(&b.staff().await))
        .await
        .body;
    assert_eq!(s["settings"]["pickup_slots"].as_array().unwrap().len(), 2);
    assert_eq!(s["settings"]["hours"][0]["closed"], true);
}

#[tokio::test]
async fn sync_states_are_persisted_per_document_and_peer() {
    let b = TestBox::new().await;
    let state = crdt::sync::SyncPeer::new().encode();
    let stored = state.clone();
    b.app
        .writer
        .write(
            move |ctx| -> Result<(), edge_node::store::docs::MenuError> {
                Ok(edge_node::store::docs::save_sync_state(
                    ctx,
                    DocKind::Menu,
                    "cloud",
                    &stored,
                )?)
            },
        )
        .await
        .unwrap();
    let read = b
        .app
        .readers
        .read(|c| {
            Ok((
                edge_node::store::docs::load_sync_state(c, DocKind::Menu, "cloud")?,
                edge_node::store::docs::load_sync_state(c, DocKind::Settings, "cloud")?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(read, (Some(state), None));
}
