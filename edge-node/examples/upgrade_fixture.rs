//! Makes the upgrade fixture of this release: a small box database with orders in
//! every stage, a stock change, a menu edit and their outbox events, and the views
//! the box serves of it (`schema-N.json`), into `edge-node/tests/fixtures/`. The
//! `upgrade` test opens every fixture with today's code and checks it serves the same.
//!
//! Run it once per schema change, before the change, and commit both files:
//!
//!     cargo run -p edge-node --example upgrade_fixture -- edge-node/tests/fixtures

#[path = "../tests/common/mod.rs"]
mod common;

use common::TestBox;
use serde_json::{Value, json};

#[tokio::main]
async fn main() {
    let out = std::path::PathBuf::from(
        std::env::args()
            .nth(1)
            .expect("usage: upgrade_fixture <directory>"),
    );
    let b = TestBox::with(|s| s, 5).await;
    let staff = b.staff().await;
    let manager = b.manager().await;

    // Orders in every stage a day sees.
    let mut orders = Vec::new();
    for (n, path) in [
        (1, &["pay", "start_preparing", "mark_ready"][..]),
        (2, &["pay", "start_preparing"][..]),
        (3, &["pay"][..]),
        (4, &[][..]),
        (5, &["cancel"][..]),
    ] {
        let token = b.student(n).await;
        let placed = b.place(&token, b.noodle_order(1)).await;
        assert_eq!(placed.status.as_u16(), 201, "{:?}", placed.body);
        let mut order = placed.body;
        for event in path {
            let moved = b.transition(&staff, &order, event).await;
            assert_eq!(moved.status.as_u16(), 200, "{event}: {:?}", moved.body);
            order = moved.body;
        }
        orders.push(order["id"].clone());
    }
    // The ready one is handed over.
    let ready = b
        .get(
            &format!("/api/staff/orders/{}", orders[0].as_str().unwrap()),
            Some(&staff),
        )
        .await
        .body;
    let handed = b
        .post(
            "/api/staff/pickups",
            Some(&staff),
            json!({"code": ready["pickup_number"].to_string()}),
        )
        .await;
    assert_eq!(handed.status.as_u16(), 200, "{:?}", handed.body);
    // Stock and the menu document change.
    let dumplings = b.item("Pork and cabbage dumplings").id;
    let restocked = b
        .post(
            &format!("/api/staff/stock/{dumplings}"),
            Some(&staff),
            json!({"action": "restock", "count": 7}),
        )
        .await;
    assert_eq!(restocked.status.as_u16(), 200, "{:?}", restocked.body);
    let edited = b
        .post(
            "/api/staff/menu/edits",
            Some(&manager),
            json!([{"op": "set_price", "item": dumplings, "price_fen": 1350}]),
        )
        .await;
    assert_eq!(edited.status.as_u16(), 200, "{:?}", edited.body);

    let views = views(&b, &staff, &orders).await;
    let schema = edge_node::store::db::SCHEMA_VERSION;
    let db = b.app.config.db_path();
    b.app.close().await;
    drop(b.router);
    drop(b.app);
    // One self-contained file, compact, with nothing left in a WAL.
    let target = out.join(format!("schema-{schema}.db"));
    let _ = std::fs::remove_file(&target);
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute("VACUUM INTO ?1", [target.to_str().unwrap()])
        .unwrap();
    let expected = json!({
        "release": env!("CARGO_PKG_VERSION"),
        "schema": schema,
        "clock": common::noon(),
        "views": views,
    });
    std::fs::write(
        out.join(format!("schema-{schema}.json")),
        serde_json::to_string_pretty(&expected).unwrap() + "\n",
    )
    .unwrap();
    println!("wrote {} and its views", target.display());
}

/// What the box serves of the fixture: the same requests the upgrade test repeats.
pub async fn views(b: &TestBox, staff: &str, orders: &[Value]) -> Value {
    let mut out = serde_json::Map::new();
    for (name, path) in view_paths(orders) {
        let reply = b.get(&path, Some(staff)).await;
        assert_eq!(reply.status.as_u16(), 200, "{path}: {:?}", reply.body);
        out.insert(name, json!({"path": path, "body": reply.body}));
    }
    Value::Object(out)
}

fn view_paths(orders: &[Value]) -> Vec<(String, String)> {
    let mut paths: Vec<(String, String)> = orders
        .iter()
        .enumerate()
        .map(|(i, id)| {
            (
                format!("order-{i}"),
                format!("/api/staff/orders/{}", id.as_str().unwrap()),
            )
        })
        .collect();
    for (name, path) in [
        ("queue", "/api/staff/orders"),
        ("menu", "/api/menu"),
        ("staff-menu", "/api/staff/menu"),
        ("settings", "/api/staff/settings"),
        ("summary", "/api/staff/summary"),
        ("outbox", "/api/staff/outbox?after_seq=0"),
    ] {
        paths.push((name.to_owned(), path.to_owned()));
    }
    paths
}
