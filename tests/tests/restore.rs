//! Restores on either side of the link, with real processes: a box restored from a
//! backup (copied back by hand, or with `edge-node restore`) re-bases its history with
//! the cloud, and a cloud restored from an older backup is re-filled by the box and
//! sends its accounts again.

use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;
use tests::world::{World, assert_same_totals, caught_up, orders, read};
use tests::{Api, CloudProcess, edge_command, eventually, free_udp_addr, path_str};

/// Money of an outbox event: (payments, refunds) in fen.
fn money(e: &Value) -> (i64, i64) {
    let m = &e["payload"]["payment"];
    let amount = m["amount_fen"].as_i64().unwrap_or(0);
    match m["kind"].as_str() {
        Some("payment") => (amount, 0),
        Some("refund") => (0, amount),
        _ => (0, 0),
    }
}

fn remove_db(dir: &Path, file: &str) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let _ = std::fs::remove_file(dir.join(format!("{file}{suffix}")));
    }
}

/// Found: a box restored from a backup adopted the cloud's cursor beyond its own
/// outbox, so the orders it took after the restore reused numbers the cloud already
/// held, were never sent, and staff saw "0 unacknowledged". Now the box re-bases: the
/// cloud keeps the events the box lost (marked as the lost timeline's) and stores every
/// event of the new history once.
///
/// `by_hand`: the backup is copied back as a file (the box notices from the cloud's
/// cursor and digest); otherwise `edge-node restore` (a new incarnation at once).
async fn a_restored_box_rebases(node: &str, by_hand: bool, after_restore: usize) {
    let w = World::new(node);
    let addr = free_udp_addr();
    let cloud = w.cloud(addr);
    let edge = w.edge(addr, node, node);
    let api = Api::new(&edge.base);
    orders(&api, 60).await;
    let staff = api.staff("staff", "staff-pass").await.unwrap();
    caught_up(&api, &staff, &cloud, node).await;

    // The backup, then an hour of selling that reaches the cloud.
    let backup = w.dir.path().join("backup.db");
    let out = edge_command(&[
        "backup",
        path_str(&backup),
        "--data-dir",
        path_str(&w.box_data),
    ])
    .unwrap();
    let fork: u64 = out
        .rsplit("outbox up to seq ")
        .next()
        .and_then(|s| s.trim().trim_end_matches(')').parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    orders(&api, 60).await;
    let lost_last = caught_up(&api, &staff, &cloud, node).await;
    assert!(lost_last > fork);
    let lost: Vec<Value> = api
        .outbox(&staff)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e["seq"].as_u64().unwrap() > fork)
        .collect();
    assert_eq!(lost.len() as u64, lost_last - fork);
    edge.kill_9();
    // The uplink is down while the box is restored and sells again.
    cloud.kill_9();
    remove_db(&w.box_data, "canteen.db");
    if by_hand {
        std::fs::copy(&backup, w.box_data.join("canteen.db")).unwrap();
    } else {
        let out = edge_command(&[
            "restore",
            path_str(&backup),
            "--data-dir",
            path_str(&w.box_data),
        ])
        .unwrap();
        assert!(out.contains(&format!("outbox up to seq {fork}")), "{out}");
    }
    let edge = w.edge(addr, node, node);
    let api = Api::new(&edge.base);
    orders(&api, after_restore).await;
    let staff = api.staff("staff", "staff-pass").await.unwrap();
    let (_, mine) = api.get("/api/staff/summary", Some(&staff)).await.unwrap();

    let cloud = w.cloud(addr);
    let last = caught_up(&api, &staff, &cloud, node).await;
    let (_, state) = api.get("/api/staff/sync", Some(&staff)).await.unwrap();
    assert_eq!(state["unacked_events"], 0, "{state}");
    if by_hand {
        let alarm = state["alarm"].as_str().unwrap_or_default();
        assert!(alarm.contains("re-based"), "{state}");
    }

    // Every order of both histories is accounted, none twice: the events the box
    // lost stay at the cloud beside the new history.
    let day = mine["service_day"].as_str().unwrap();
    let theirs = cloud
        .get(&format!("/nodes/{node}/summary?day={day}"))
        .await
        .unwrap();
    let all = cloud.get(&format!("/nodes/{node}/summary")).await.unwrap();
    assert_eq!(
        all["events"].as_u64(),
        Some(lost_last + (last - fork)),
        "box {mine}\ncloud {all}\n{}",
        read(&w.log("cloud.log"))
    );
    let lost_orders = lost.iter().filter(|e| e["kind"] == "order.placed").count() as i64;
    let (lost_paid, lost_refunded) = lost
        .iter()
        .map(money)
        .fold((0, 0), |(p, r), (a, b)| (p + a, r + b));
    assert!(lost_orders > 0 && lost_paid > 0);
    assert_eq!(
        theirs["orders"].as_i64().unwrap(),
        mine["orders"].as_i64().unwrap() + lost_orders,
        "box {mine}\ncloud {theirs}"
    );
    assert_eq!(
        theirs["refunds_fen"].as_i64().unwrap(),
        mine["refunds_fen"].as_i64().unwrap() + lost_refunded
    );
    assert_eq!(
        theirs["revenue_fen"].as_i64().unwrap(),
        mine["revenue_fen"].as_i64().unwrap() + lost_paid - lost_refunded
    );

    // The re-base as admins see it.
    let sync = cloud.get(&format!("/nodes/{node}/sync")).await.unwrap();
    let timelines = sync["timelines"].as_array().unwrap();
    assert_eq!(timelines.len(), 2, "{sync}");
    assert_eq!(timelines[0]["lost_from"].as_u64(), Some(fork + 1), "{sync}");
    assert_eq!(timelines[0]["lost_to"].as_u64(), Some(lost_last), "{sync}");
    assert_eq!(timelines[1]["base_seq"].as_u64(), Some(fork), "{sync}");
    assert_ne!(timelines[0]["incarnation"], timelines[1]["incarnation"]);

    // The new history keeps flowing normally.
    orders(&api, 12).await;
    let later = caught_up(&api, &staff, &cloud, node).await;
    let all = cloud.get(&format!("/nodes/{node}/summary")).await.unwrap();
    assert_eq!(all["events"].as_u64(), Some(lost_last + (later - fork)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_restored_by_copying_a_backup_back_rebases_and_loses_nothing() {
    // More orders after the restore than were lost: the box's outbox reaches past
    // the cloud's cursor again, and only the digest shows the histories differ.
    a_restored_box_rebases("canteen-copy", true, 90).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_restored_with_the_restore_command_rebases_and_loses_nothing() {
    a_restored_box_rebases("canteen-cmd", false, 24).await;
}

fn argon2_hash(secret: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::encode_b64(b"restore-test-salt").unwrap();
    argon2::Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .unwrap()
        .to_string()
}

async fn push_manager(cloud: &CloudProcess, login: &str, active: bool) {
    cloud
        .post(
            "/accounts",
            &json!([{"role": "manager", "login": login, "name": "Campus Manager",
                     "secret_hash": argon2_hash("boss-password-1"), "active": active}]),
        )
        .await
        .unwrap();
}

/// Waits until the cloud-issued manager `login` logging in at the box answers `status`.
async fn until_login_answers(api: &Api, login: &str, status: u16, what: &str) {
    eventually(what, Duration::from_secs(60), || async {
        let (answer, _) = api
            .post(
                "/api/staff/login",
                None,
                &json!({"username": login, "password": "boss-password-1"}),
            )
            .await?;
        Ok((answer == status).then_some(()))
    })
    .await
    .unwrap();
}

fn copy_db(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    remove_db(to, "cloud.db");
    for suffix in ["", "-wal"] {
        let f = from.join(format!("cloud.db{suffix}"));
        if f.exists() {
            std::fs::copy(&f, to.join(format!("cloud.db{suffix}"))).unwrap();
        }
    }
}

/// Found: a cloud restored from a backup stalled every box (each kept its higher
/// cursor, the cloud refused the gap), and account changes whose cursor numbers were
/// reused never arrived (a fired manager kept logging in). Now the box shows the cloud
/// it is behind its own acknowledgements, the cloud takes a new incarnation, the box
/// re-fills it from its outbox and fetches every account again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloud_restored_from_an_older_backup_is_refilled_and_its_accounts_arrive() {
    let node = "canteen-cloudrestore";
    let w = World::new(node);
    let addr = free_udp_addr();
    let cloud = w.cloud(addr);
    let edge = w.edge(addr, node, node);
    let api = Api::new(&edge.base);
    push_manager(&cloud, "boss", true).await;
    until_login_answers(&api, "boss", 200, "the cloud's manager logs in").await;
    orders(&api, 60).await;
    let staff = api.staff("staff", "staff-pass").await.unwrap();
    let backed_up = caught_up(&api, &staff, &cloud, node).await;

    // The backup: the cloud's database files, taken while it is stopped.
    cloud.kill_9();
    let backup = w.dir.path().join("cloud-backup");
    copy_db(&w.cloud_data, &backup);
    let cloud = w.cloud(addr);
    orders(&api, 60).await;
    push_manager(&cloud, "temp", true).await;
    until_login_answers(&api, "temp", 200, "the second account arrives").await;
    let last = caught_up(&api, &staff, &cloud, node).await;
    assert!(last > backed_up);

    // Restored: the cloud is back at the backup's cursor; the manager is fired there,
    // which reuses the account cursor the lost "temp" account had.
    cloud.kill_9();
    copy_db(&backup, &w.cloud_data);
    let cloud = w.cloud(addr);
    push_manager(&cloud, "boss", false).await;
    let refilled = caught_up(&api, &staff, &cloud, node).await;
    assert_eq!(refilled, last);
    let summary = cloud.get(&format!("/nodes/{node}/summary")).await.unwrap();
    assert_eq!(
        summary["events"].as_u64(),
        Some(last),
        "every event stored exactly once\n{}",
        read(&w.log("cloud.log"))
    );
    assert_same_totals(&api, &staff, &cloud, node).await;
    until_login_answers(&api, "boss", 401, "the fired manager is refused").await;
    let (_, state) = api.get("/api/staff/sync", Some(&staff)).await.unwrap();
    assert!(
        state["alarm"]
            .as_str()
            .is_some_and(|a| a.contains("another incarnation")),
        "{state}"
    );
    assert!(
        read(&w.log("cloud.log")).contains("the cloud was restored from a backup"),
        "the cloud says what happened"
    );
}
