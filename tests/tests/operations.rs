//! The box as campus IT runs it from the shell: each subcommand's own options, `status`
//! of a serving and a stopped box, `migrate --check` before an upgrade, and log lines
//! a log shipper can read (JSON, each request's id, no terminal colours in files).

use serde_json::Value;
use std::path::{Path, PathBuf};
use tests::{Api, EdgeProcess, edge_run, path_str, seed_demo};

fn help(args: &[&str]) -> String {
    let mut args = args.to_vec();
    args.push("--help");
    let (code, out, err) = edge_run(&args).unwrap();
    assert_eq!(code, 0, "{args:?}: {err}");
    out
}

#[test]
fn each_subcommand_lists_only_the_options_it_uses() {
    // Serving flags belong to `serve` (and `demo`, which serves).
    let serve = help(&["serve"]);
    for flag in [
        "--listen",
        "--orders-per-min-student",
        "--cloud",
        "--data-dir",
    ] {
        assert!(serve.contains(flag), "serve --help lacks {flag}:\n{serve}");
    }
    for command in [
        &["roster", "import"][..],
        &["staff", "add"][..],
        &["backup"][..],
        &["restore"][..],
        &["status"][..],
        &["migrate"][..],
    ] {
        let text = help(command);
        assert!(text.contains("--data-dir"), "{command:?}:\n{text}");
        for foreign in [
            "--listen",
            "--orders-per-min-student",
            "--cloud",
            "--staff-listen",
        ] {
            assert!(
                !text.contains(foreign),
                "{command:?} --help lists {foreign}:\n{text}"
            );
        }
    }
    assert!(help(&["staff", "add"]).contains("--username"));
    assert!(help(&["backup"]).contains("--encrypt-with"));
    // Exit codes are documented where the operator looks.
    assert!(help(&["status"]).contains("exit code 3"));
}

fn status_json(data: &Path, url: Option<&str>) -> (i32, Value) {
    let mut args = vec!["status", "--json", "--data-dir", path_str(data)];
    if let Some(url) = url {
        args.extend(["--url", url]);
    }
    let (code, out, err) = edge_run(&args).unwrap();
    let parsed = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    (code, parsed)
}

/// A demo box serving from a fresh directory, its log in `box.log` beside its data.
fn demo_box(env: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf, PathBuf, EdgeProcess) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("box");
    seed_demo(&data).unwrap();
    let log = dir.path().join("box.log");
    let edge = EdgeProcess::serve_logged(&data, env, Some(&log)).unwrap();
    (dir, data, log, edge)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_tells_a_serving_box_from_a_stopped_one() {
    let (_dir, data, log, edge) = demo_box(&[]);
    let api = Api::new(&edge.base);
    let manager = api.manager().await.unwrap();
    let menu = api.unlimited_menu(&manager).await.unwrap();
    let student = api.student(1).await.unwrap();
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(7);
    for _ in 0..3 {
        let (code, body) = api
            .post(
                "/api/student/orders",
                Some(&student),
                &tests::random_order(&menu, &mut rng),
            )
            .await
            .unwrap();
        assert_eq!(code, 201, "{body}");
    }

    let base = edge.base.clone();
    let data2 = data.clone();
    let (code, live) = tokio::task::spawn_blocking(move || status_json(&data2, Some(&base)))
        .await
        .unwrap();
    assert_eq!(code, 0, "{live}");
    assert_eq!(live["serving"], true);
    assert_eq!(live["orders"]["placed"], 3, "{live}");
    assert_eq!(live["schema_version"], live["schema_supported"]);
    assert!(live["writer_queue"][1].as_u64().unwrap() > 0, "{live}");
    assert_eq!(live["sync"]["configured"], false);
    assert!(live["data_bytes"].as_u64().unwrap() > 0);
    let outbox_last = live["outbox_last_seq"].as_i64().unwrap();
    assert!(outbox_last >= 3);
    // The text form, for a person.
    let (code, text, _) =
        edge_run(&["status", "--data-dir", path_str(&data), "--url", &edge.base]).unwrap();
    assert_eq!(code, 0);
    assert!(text.contains("box:            serving"), "{text}");
    assert!(text.contains("placed 3"), "{text}");

    // Stopped: read from the database, exit code 3, the same orders.
    edge.terminate().unwrap();
    let base = api.base.clone();
    let (code, stopped) = tokio::task::spawn_blocking(move || status_json(&data, Some(&base)))
        .await
        .unwrap();
    assert_eq!(code, 3, "{stopped}");
    assert_eq!(stopped["serving"], false);
    assert_eq!(stopped["orders"]["placed"], 3, "{stopped}");
    assert_eq!(stopped["outbox_last_seq"], outbox_last);
    assert_eq!(stopped["node_id"], live["node_id"]);
    assert!(stopped["writer_queue"].is_null());
    // A log file gets no terminal colour codes.
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(!log.contains('\u{1b}'), "{log}");
}

#[test]
fn migrate_check_says_what_an_upgrade_would_do_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let db = data.join("canteen.db");
    // A database of schema 1 (the first release's), by its own migration.
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let first = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../edge-node/src/store/migrations/0001_init.sql"),
        )
        .unwrap();
        conn.execute_batch(&first).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
    }
    let before = std::fs::read(&db).unwrap();
    let (code, out, err) = edge_run(&["migrate", "--check", "--data-dir", path_str(data)]).unwrap();
    assert_eq!(code, 4, "{out}{err}");
    assert!(
        out.contains("would migrate schema 1 → 2: 0002_accounts"),
        "{out}"
    );
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before,
        "--check changed the database"
    );

    let (code, out, err) = edge_run(&["migrate", "--data-dir", path_str(data)]).unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("migrated schema 1 → 2"), "{out}");
    let (code, out, _) = edge_run(&["migrate", "--check", "--data-dir", path_str(data)]).unwrap();
    assert_eq!(code, 0);
    assert!(out.contains("nothing to migrate"), "{out}");

    // A database from a newer release is refused, as opening it would be.
    rusqlite::Connection::open(&db)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let (code, _, err) = edge_run(&["migrate", "--check", "--data-dir", path_str(data)]).unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("newer than this build"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_each_requests_id() {
    let (_dir, _data, log, edge) = demo_box(&[
        ("EDGE_LOG_FORMAT", "json"),
        ("EDGE_LOG", "info,edge_node=debug"),
    ]);
    // A refused request is logged once, inside its request's span.
    let res = reqwest::Client::new()
        .get(format!("{}/api/student/orders", edge.base))
        .header("x-request-id", "req-upgrade-42")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["x-request-id"], "req-upgrade-42");
    edge.terminate().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["fields"]["message"] == "serving"),
        "{text}"
    );
    let refused = lines
        .iter()
        .find(|l| l["fields"]["message"] == "request refused")
        .unwrap_or_else(|| panic!("no refusal logged:\n{text}"));
    assert_eq!(refused["span"]["request_id"], "req-upgrade-42", "{refused}");
    assert_eq!(refused["fields"]["status"], "401 Unauthorized", "{refused}");
}
