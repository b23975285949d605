//! Upgrades: every database fixture an earlier release made (`tests/fixtures/`, made by
//! `cargo run -p edge-node --example upgrade_fixture`) opens with today's code, is
//! migrated to today's schema, and serves the same orders, stock, documents, summary
//! and outbox it served then. A view may gain fields; none it had may change or go.

mod common;

use common::TestBox;
use edge_node::store::db::{SCHEMA_VERSION, migration_plan};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Fields computed from the clock and the kitchen's model, not stored: a later
/// release may predict differently.
const NOT_STORED: &[&str] = &["ready_estimate", "running_late_min", "next_slot"];

fn fixtures() -> Vec<(PathBuf, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut out: Vec<(PathBuf, Value)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let expected = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            (p.with_extension("db"), expected)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Every field of `expected` is in `actual` with the same value (recursively; arrays
/// element by element and of the same length).
fn contains(at: &str, expected: &Value, actual: &Value, problems: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, v) in e {
                if NOT_STORED.contains(&k.as_str()) {
                    continue;
                }
                match a.get(k) {
                    Some(av) => contains(&format!("{at}.{k}"), v, av, problems),
                    None => problems.push(format!("{at}.{k} is gone")),
                }
            }
        }
        (Value::Array(e), Value::Array(a)) if e.len() == a.len() => {
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                contains(&format!("{at}[{i}]"), ev, av, problems);
            }
        }
        _ if expected == actual => {}
        _ => problems.push(format!("{at}: was {expected}, now {actual}")),
    }
}

#[test]
fn there_is_a_fixture_of_the_current_schema() {
    let schemas: Vec<i64> = fixtures()
        .iter()
        .map(|(_, e)| e["schema"].as_i64().unwrap())
        .collect();
    assert!(
        schemas.contains(&SCHEMA_VERSION),
        "no fixture of schema {SCHEMA_VERSION} (found {schemas:?}): make one with \
         `cargo run -p edge-node --example upgrade_fixture -- edge-node/tests/fixtures`"
    );
}

#[tokio::test]
async fn every_earlier_database_opens_migrates_and_serves_the_same() {
    let all = fixtures();
    assert!(!all.is_empty());
    for (db, expected) in all {
        let name = db.display().to_string();
        // What the check says before opening, on the untouched fixture.
        let plan = migration_plan(&db).unwrap();
        assert_eq!(plan.found, expected["schema"].as_i64().unwrap(), "{name}");
        assert_eq!(plan.target, SCHEMA_VERSION);
        assert_eq!(
            plan.pending.len() as i64,
            SCHEMA_VERSION - plan.found,
            "{name}"
        );

        let now = expected["clock"].as_str().unwrap().parse().unwrap();
        let b = TestBox::on_copy_of(&db, now);
        let migrated = migration_plan(&b.app.config.db_path()).unwrap();
        assert!(migrated.pending.is_empty(), "{name} migrated: {migrated:?}");
        let staff = b.staff().await;
        let mut problems = Vec::new();
        for (view, what) in expected["views"].as_object().unwrap() {
            let path = what["path"].as_str().unwrap();
            let reply = b.get(path, Some(&staff)).await;
            assert_eq!(
                reply.status.as_u16(),
                200,
                "{name} {path}: {:?}",
                reply.body
            );
            contains(view, &what["body"], &reply.body, &mut problems);
        }
        assert!(problems.is_empty(), "{name}:\n{}", problems.join("\n"));

        // It goes on taking orders, numbered after the ones it had.
        let outbox = b.outbox(&staff).await;
        let last = outbox.last().unwrap()["seq"].as_i64().unwrap();
        let menu = b.get("/api/menu", None).await.body;
        let noodles = menu["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name_en"] == "Lanzhou beef noodle soup")
            .unwrap();
        let token = b.student(1).await;
        let order = serde_json::json!({
            "lines": [{"item_id": noodles["id"], "quantity": 1,
                       "options": [{"group": "size", "choice": "regular"}, {"group": "spice", "choice": "mild"}]}],
            "payment_mode": "counter"
        });
        let placed = b.place(&token, order).await;
        assert_eq!(placed.status.as_u16(), 201, "{name}: {:?}", placed.body);
        let after = b.outbox(&staff).await;
        assert!(after.len() > outbox.len());
        common::assert_gapless(&after);
        assert!(after.last().unwrap()["seq"].as_i64().unwrap() > last);
    }
}

#[test]
fn the_comparison_catches_a_changed_or_missing_field() {
    let expected = serde_json::json!({"a": 1, "b": [1, {"c": "x"}], "ready_estimate": "t"});
    let mut problems = Vec::new();
    contains(
        "v",
        &expected,
        &serde_json::json!({"a": 1, "b": [1, {"c": "y"}], "new": 2}),
        &mut problems,
    );
    contains(
        "v",
        &expected,
        &serde_json::json!({"b": [1, {"c": "x"}]}),
        &mut problems,
    );
    assert_eq!(
        problems,
        vec!["v.b[1].c: was \"x\", now \"y\"", "v.a is gone"]
    );
}
