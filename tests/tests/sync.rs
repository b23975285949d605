//! The box and the cloud as real processes: backlogs, partitions, a killed cloud,
//! concurrent document edits, and every way a box can be refused.

use serde_json::{Value, json};
use std::time::Duration;
use tests::world::{
    World, assert_same_totals, converged, hello, last_seq, menu_reaches_the_cloud, orders, read,
};
use tests::{
    Api, EdgeProcess, Relay, cloud_command, cloud_env, eventually, free_udp_addr, path_str,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_taken_while_the_cloud_is_down_arrives_exactly() {
    let w = World::new("canteen-north");
    let addr = free_udp_addr();
    let edge = w.edge(addr, "canteen-north", "canteen-north");
    let api = Api::new(&edge.base);
    orders(&api, 5000).await;
    let staff = api.staff("staff", "staff-pass").await.unwrap();
    let (_, state) = api.get("/api/staff/sync", Some(&staff)).await.unwrap();
    assert_eq!(state["connected"], false);
    assert_eq!(
        state["unacked_events"].as_u64(),
        Some(last_seq(&api, &staff).await)
    );
    assert!(state["oldest_unacked_age_s"].as_i64().is_some());

    let cloud = w.cloud(addr);
    converged(&api, &staff, &cloud, "canteen-north").await;
    assert_same_totals(&api, &staff, &cloud, "canteen-north").await;
    let (_, state) = api.get("/api/staff/sync", Some(&staff)).await.unwrap();
    assert_eq!(state["connected"], true);
    assert!(state["last_success_unix"].as_u64().is_some());
    let metrics = reqwest::get(format!("{}/metrics", edge.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("sync_connected 1") && metrics.contains("sync_unacked_events 0"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloud_killed_mid_batch_applies_everything_exactly_once() {
    let w = World::new("canteen-east");
    let addr = free_udp_addr();
    let edge = w.edge(addr, "canteen-east", "canteen-east");
    let api = Api::new(&edge.base);
    orders(&api, 8000).await;
    let staff = api.staff("staff", "staff-pass").await.unwrap();
    let last = last_seq(&api, &staff).await;

    let cloud = w.cloud(addr);
    // Kill it as soon as the first batch is committed, while the rest are in flight:
    // poll tightly (a whole backlog can go through in a fraction of a second).
    let admin = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let acked = loop {
        let nodes: Value = admin
            .get(format!("{}/nodes", cloud.admin))
            .bearer_auth(&cloud.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let acked = nodes
            .as_array()
            .and_then(|n| n.first())
            .and_then(|x| x["acked_seq"].as_u64())
            .unwrap_or(0);
        if acked > 0 {
            break acked;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no acknowledgement within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    cloud.kill_9();
    assert!(
        acked < last,
        "the cloud was killed before the backlog was through ({acked} of {last})"
    );

    let cloud = w.cloud(addr);
    converged(&api, &staff, &cloud, "canteen-east").await;
    assert_same_totals(&api, &staff, &cloud, "canteen-east").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_blackholed_again_and_again_loses_and_duplicates_nothing() {
    let w = World::new("canteen-west");
    let cloud = w.cloud("127.0.0.1:0".parse().unwrap());
    let relay = Relay::start(cloud.quic).await.unwrap();
    let edge = w.edge(relay.addr, "canteen-west", "canteen-west");
    let api = Api::new(&edge.base);
    // Unpaid orders expire after a minute here, so expiry is part of what syncs.
    let manager = api.manager().await.unwrap();
    let (status, body) = api
        .post(
            "/api/staff/settings/edits",
            Some(&manager),
            &json!([{"op": "set_unpaid_timeout", "seconds": 60}]),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let cuts = {
        let hole = relay.blackhole.clone();
        tokio::spawn(async move {
            for i in 0..12u64 {
                tokio::time::sleep(Duration::from_millis(300 + 97 * (i % 5))).await;
                hole.store(i % 2 == 0, std::sync::atomic::Ordering::SeqCst);
            }
            hole.store(false, std::sync::atomic::Ordering::SeqCst);
        })
    };
    orders(&api, 2500).await;
    cuts.await.unwrap();
    relay.cut(false);
    let staff = api.staff("staff", "staff-pass").await.unwrap();
    converged(&api, &staff, &cloud, "canteen-west").await;
    assert_same_totals(&api, &staff, &cloud, "canteen-west").await;

    // A blackhole longer than the link's 20 s idle timeout: the connection dies, the
    // box says so, orders taken meanwhile wait, and the reconnect resends them.
    relay
        .blackhole
        .store(true, std::sync::atomic::Ordering::SeqCst);
    eventually(
        "the box to notice the dead link",
        Duration::from_secs(60),
        || async {
            let (_, s) = api.get("/api/staff/sync", Some(&staff)).await?;
            Ok((s["connected"] == false).then_some(()))
        },
    )
    .await
    .unwrap();
    orders(&api, 64).await;
    let (_, s) = api.get("/api/staff/sync", Some(&staff)).await.unwrap();
    assert!(s["unacked_events"].as_i64().unwrap() > 0, "{s}");
    relay
        .blackhole
        .store(false, std::sync::atomic::Ordering::SeqCst);
    converged(&api, &staff, &cloud, "canteen-west").await;
    let (_, s) = api.get("/api/staff/sync", Some(&staff)).await.unwrap();
    assert_eq!(s["connected"], true, "{s}");
    assert_same_totals(&api, &staff, &cloud, "canteen-west").await;
    // The orders left unpaid expire at the box, and the cloud counts them too.
    eventually(
        "unpaid orders to expire",
        Duration::from_secs(120),
        || async {
            let (_, s) = api.get("/api/staff/summary", Some(&staff)).await?;
            Ok(
                (s["expired"].as_i64().unwrap_or(0) > 0 && s["by_state"]["placed"] == 0)
                    .then_some(()),
            )
        },
    )
    .await
    .unwrap();
    converged(&api, &staff, &cloud, "canteen-west").await;
    let (_, summary) = api.get("/api/staff/summary", Some(&staff)).await.unwrap();
    assert!(
        summary["by_state"]["expired"].as_i64().unwrap() > 0,
        "{summary}"
    );
    assert_same_totals(&api, &staff, &cloud, "canteen-west").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_on_both_sides_of_a_partition_both_survive() {
    let w = World::new("canteen-south");
    let cloud = w.cloud("127.0.0.1:0".parse().unwrap());
    let relay = Relay::start(cloud.quic).await.unwrap();
    let edge = w.edge(relay.addr, "canteen-south", "canteen-south");
    let api = Api::new(&edge.base);
    let manager = api.manager().await.unwrap();
    let item = api
        .staff_menu(&manager)
        .await
        .unwrap()
        .into_iter()
        .find(|i| i["name_en"] == "Mapo tofu with rice")
        .unwrap();
    let id = item["id"].as_str().unwrap().to_owned();
    // The cloud's replica catches up with the box's menu.
    menu_reaches_the_cloud(&cloud, "canteen-south", &id).await;

    relay.cut(true);
    let (status, _) = api
        .post(
            "/api/staff/menu/edits",
            Some(&manager),
            &json!([{"op": "set_price", "item": id, "price_fen": 2345}]),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    cloud
        .post(
            "/nodes/canteen-south/menu/edits",
            &json!([{"op": "set_name_en", "item": id, "name": "Mapo tofu (campus recipe)"}]),
        )
        .await
        .unwrap();
    relay.cut(false);

    let both =
        |item: &Value| item["price_fen"] == 2345 && item["name_en"] == "Mapo tofu (campus recipe)";
    eventually("both edits at the box", Duration::from_secs(60), || async {
        let menu = api.staff_menu(&manager).await?;
        Ok(menu
            .iter()
            .any(|i| i["id"] == json!(id) && both(i))
            .then_some(()))
    })
    .await
    .unwrap();
    eventually(
        "both edits at the cloud",
        Duration::from_secs(60),
        || async {
            let menu = cloud.get("/nodes/canteen-south/menu").await?;
            Ok(menu["items"]
                .as_array()
                .is_some_and(|i| i.iter().any(|x| x["id"] == json!(id) && both(x)))
                .then_some(()))
        },
    )
    .await
    .unwrap();
    // Students see it too.
    let (_, menu) = api.get("/api/menu", None).await.unwrap();
    let shown = menu["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == json!(id))
        .unwrap()
        .clone();
    assert!(both(&shown), "{shown}");

    // The same field set on both sides during a cut: a conflict both sides show, and
    // it clears on both once it is resolved at the box.
    relay.cut(true);
    let price = |fen: i64| json!([{"op": "set_price", "item": id, "price_fen": fen}]);
    let (status, _) = api
        .post("/api/staff/menu/edits", Some(&manager), &price(2500))
        .await
        .unwrap();
    assert_eq!(status, 200);
    cloud
        .post("/nodes/canteen-south/menu/edits", &price(2600))
        .await
        .unwrap();
    relay.cut(false);
    let on_item = |conflicts: &Value| {
        conflicts.as_array().is_some_and(|c| {
            c.iter().any(|c| {
                c["path"].as_array().is_some_and(|p| p.contains(&json!(id)))
                    && c["values"].as_array().is_some_and(|v| v.len() == 2)
            })
        })
    };
    let (conflicted_at_box, conflicted_at_cloud) = (
        || async {
            let (_, menu) = api.get("/api/staff/menu", Some(&manager)).await?;
            anyhow::Ok(on_item(&menu["conflicts"]))
        },
        || async {
            let menu = cloud.get("/nodes/canteen-south/menu").await?;
            anyhow::Ok(on_item(&menu["conflicts"]))
        },
    );
    eventually(
        "the conflict on both sides",
        Duration::from_secs(60),
        || async { Ok((conflicted_at_box().await? && conflicted_at_cloud().await?).then_some(())) },
    )
    .await
    .unwrap();
    let (status, _) = api
        .post("/api/staff/menu/edits", Some(&manager), &price(2700))
        .await
        .unwrap();
    assert_eq!(status, 200);
    eventually(
        "the conflict resolved on both sides",
        Duration::from_secs(60),
        || async {
            let cloud_menu = cloud.get("/nodes/canteen-south/menu").await?;
            let price_at_cloud = cloud_menu["items"]
                .as_array()
                .and_then(|i| i.iter().find(|x| x["id"] == json!(id)))
                .map(|x| x["price_fen"].clone());
            Ok((!conflicted_at_box().await?
                && !conflicted_at_cloud().await?
                && price_at_cloud == Some(json!(2700)))
            .then_some(()))
        },
    )
    .await
    .unwrap();

    // A settings edit and an account made at the cloud reach the box.
    cloud
        .post(
            "/nodes/canteen-south/settings/edits",
            &json!([{"op": "set_announcement", "text": "Closed on Friday for the holiday"}]),
        )
        .await
        .unwrap();
    eventually(
        "the cloud's announcement at the box",
        Duration::from_secs(60),
        || async {
            let (_, menu) = api.get("/api/menu", None).await?;
            Ok((menu["announcement"] == "Closed on Friday for the holiday").then_some(()))
        },
    )
    .await
    .unwrap();
    let hash = {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let salt = SaltString::encode_b64(b"sync-test-salt16").unwrap();
        argon2::Argon2::default()
            .hash_password(b"246810", &salt)
            .unwrap()
            .to_string()
    };
    cloud
        .post(
            "/accounts",
            &json!([{"role": "student", "login": "2099001", "name": "New Student",
                     "secret_hash": hash, "active": true}]),
        )
        .await
        .unwrap();
    eventually(
        "the cloud's new student logs in at the box",
        Duration::from_secs(60),
        || async {
            let (status, _) = api
                .post(
                    "/api/student/login",
                    None,
                    &json!({"student_number": "2099001", "pin": "246810"}),
                )
                .await?;
            Ok((status == 200).then_some(()))
        },
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boxes_that_are_not_who_they_say_are_refused_and_nothing_is_stored() {
    let w = World::new("canteen-a");
    let cloud = w.cloud("127.0.0.1:0".parse().unwrap());

    // 1. A certificate from another CA (the box trusts the right CA, but its own
    // certificate is not from it).
    let other_ca = w.dir.path().join("other-ca");
    let rogue = w.dir.path().join("rogue");
    cloud_command(&["ca", "init", "--dir", path_str(&other_ca)]).unwrap();
    cloud_command(&[
        "enroll",
        "--node-id",
        "canteen-a",
        "--ca-dir",
        path_str(&other_ca),
        "--out",
        path_str(&rogue),
    ])
    .unwrap();
    std::fs::copy(w.ca.join("ca.pem"), rogue.join("ca.pem")).unwrap();
    {
        let env = cloud_env(cloud.quic, "canteen-a", "canteen-a", &rogue);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let _edge =
            EdgeProcess::serve_logged(&w.box_data, &env, Some(&w.log("rogue.log"))).unwrap();
        eventually(
            "the box to log the refusal",
            Duration::from_secs(30),
            || async {
                Ok(read(&w.log("rogue.log"))
                    .contains("sync link down")
                    .then_some(()))
            },
        )
        .await
        .unwrap();
    }
    eventually(
        "the cloud to log the failed handshake",
        Duration::from_secs(10),
        || async {
            Ok(read(&w.log("cloud.log"))
                .contains("handshake failed")
                .then_some(()))
        },
    )
    .await
    .unwrap();
    assert_eq!(
        cloud.get("/nodes").await.unwrap(),
        json!([]),
        "nothing stored for an unknown CA"
    );

    // 2. A real certificate for canteen-a, but the box claims to be canteen-b.
    {
        let env = cloud_env(cloud.quic, "canteen-b", "canteen-a", &w.enrol);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let _edge = EdgeProcess::serve_logged(&w.box_data, &env, Some(&w.log("liar.log"))).unwrap();
        eventually(
            "the box to log the identity refusal",
            Duration::from_secs(30),
            || async {
                let log = read(&w.log("liar.log"));
                Ok((log.contains("refused")
                    && log.contains("canteen-b")
                    && log.contains("canteen-a"))
                .then_some(()))
            },
        )
        .await
        .unwrap();
    }
    assert!(read(&w.log("cloud.log")).contains("claims node id \"canteen-b\""));
    assert_eq!(
        cloud.get("/nodes").await.unwrap(),
        json!([]),
        "nothing stored for a mismatched id"
    );

    // 3. A peer speaking another protocol version.
    let config = cloud_sync::identity::client_config(
        &w.enrol.join("ca.pem"),
        &w.enrol.join("canteen-a.pem"),
        &w.enrol.join("canteen-a.key"),
    )
    .unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(config);
    let conn = endpoint
        .connect(cloud.quic, cloud_sync::identity::DEFAULT_CLOUD_NAME)
        .unwrap()
        .await
        .unwrap();
    let (mut send, recv) = conn.open_bi().await.unwrap();
    let mut inbox = cloud_sync::wire::reader(recv);
    cloud_sync::wire::send(
        &mut send,
        &cloud_sync::proto::Message::Hello {
            version: 99,
            node_id: "canteen-a".into(),
        },
    )
    .await
    .unwrap();
    match cloud_sync::wire::next(&mut inbox).await.unwrap() {
        cloud_sync::proto::Message::Refused { code, reason } => {
            assert_eq!(code, cloud_sync::proto::RefuseCode::Version);
            assert!(reason.contains("version 99 is not supported"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let closed = conn.closed().await;
    assert!(closed.to_string().contains("not supported"), "{closed}");
    endpoint.wait_idle().await;
    assert!(read(&w.log("cloud.log")).contains("protocol version 99 is not supported"));
    assert_eq!(
        cloud.get("/nodes").await.unwrap(),
        json!([]),
        "nothing stored for another version"
    );
}

/// A daily quota changed at the cloud reaches today's stock at the box, exactly as a
/// manager's change at the box does: the students' menu counts from the new quota and
/// the box records `stock.quota_set` in its outbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_set_at_the_cloud_reaches_todays_stock() {
    let w = World::new("canteen-quota");
    let cloud = w.cloud("127.0.0.1:0".parse().unwrap());
    let edge = w.edge(cloud.quic, "canteen-quota", "canteen-quota");
    let api = Api::new(&edge.base);
    let manager = api.manager().await.unwrap();
    let item = api
        .staff_menu(&manager)
        .await
        .unwrap()
        .into_iter()
        .find(|i| i["daily_quota"].as_u64().is_some_and(|q| q > 5))
        .expect("a demo dish with a daily quota");
    let id = item["id"].as_str().unwrap().to_owned();
    // Today's stock row starts with the first order.
    let student = api.student(1).await.unwrap();
    let order = |quantity: u32| {
        let body =
            json!({"lines": [{"item_id": id, "quantity": quantity}], "payment_mode": "counter"});
        let (api, student) = (&api, &student);
        async move { api.post("/api/student/orders", Some(student), &body).await }
    };
    let (status, placed) = order(2).await.unwrap();
    assert_eq!(status, 201, "{placed}");
    let remaining = |menu: &Value| {
        menu["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == json!(id))
            .and_then(|i| i["remaining"].as_i64())
    };
    // Staff see the exact count (students only "few left").
    let (_, menu) = api.get("/api/menu", Some(&manager)).await.unwrap();
    assert_eq!(
        remaining(&menu),
        Some(item["daily_quota"].as_i64().unwrap() - 2)
    );
    menu_reaches_the_cloud(&cloud, "canteen-quota", &id).await;

    cloud
        .post(
            "/nodes/canteen-quota/menu/edits",
            &json!([{"op": "set_quota", "item": id, "daily_quota": 5}]),
        )
        .await
        .unwrap();

    eventually(
        "the new quota in today's stock",
        Duration::from_secs(30),
        || async {
            let (_, menu) = api.get("/api/menu", Some(&manager)).await?;
            Ok((remaining(&menu) == Some(3)).then_some(()))
        },
    )
    .await
    .unwrap();
    let staff = api.staff("staff", "staff-pass").await.unwrap();
    let events = api.outbox(&staff).await.unwrap();
    let quota_set: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "stock.quota_set" && e["payload"]["item_id"] == json!(id))
        .collect();
    assert_eq!(quota_set.len(), 1, "{quota_set:?}");
    assert_eq!(quota_set[0]["payload"]["quota"], 5);
    assert_eq!(quota_set[0]["payload"]["remaining"], 3);
    // Students are refused beyond it.
    let (status, refused) = order(4).await.unwrap();
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "not_enough_stock");
}

/// Found: box certificates never expired and could not be revoked, so a stolen box
/// authenticated forever. Now a revoked box is refused at its next handshake (and
/// readmitted by enrolling again), and an expired certificate fails the handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_and_expired_box_certificates_are_refused() {
    use cloud_sync::proto::{Message, RefuseCode};
    let w = World::new("canteen-r");
    let cloud = w.cloud("127.0.0.1:0".parse().unwrap());
    let first = hello(cloud.quic, &w.enrol, "canteen-r").await.unwrap();
    assert!(
        matches!(first, Message::Welcome { .. }),
        "{first:?}\n{}",
        read(&w.log("cloud.log"))
    );

    // Stolen: revoked at the cloud while it serves.
    let out = cloud_command(&[
        "revoke",
        "--node-id",
        "canteen-r",
        "--data-dir",
        path_str(&w.cloud_data),
    ])
    .unwrap();
    assert!(out.contains("revoked"), "{out}");
    match hello(cloud.quic, &w.enrol, "canteen-r").await.unwrap() {
        Message::Refused { code, reason } => {
            assert_eq!(code, RefuseCode::Identity);
            assert!(reason.contains("revoked"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Enrolled again (a new certificate, issued after the revocation: certificates
    // are back-dated a second for clock skew, and times are in whole seconds): admitted.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let again = w.dir.path().join("enrol-again");
    cloud_command(&[
        "enroll",
        "--node-id",
        "canteen-r",
        "--ca-dir",
        path_str(&w.ca),
        "--out",
        path_str(&again),
    ])
    .unwrap();
    let readmitted = hello(cloud.quic, &again, "canteen-r").await.unwrap();
    assert!(
        matches!(readmitted, Message::Welcome { .. }),
        "{readmitted:?}"
    );

    // Expired: a certificate valid for no time at all fails the handshake.
    let expired = w.dir.path().join("expired");
    cloud_sync::identity::enroll_for(&w.ca, "canteen-x", &expired, &[], Duration::ZERO).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let refused = hello(cloud.quic, &expired, "canteen-x").await;
    assert!(
        refused.is_err(),
        "an expired certificate was accepted: {refused:?}"
    );
    // Enrolment refuses a validity of no days.
    assert!(
        cloud_command(&[
            "enroll",
            "--node-id",
            "canteen-y",
            "--ca-dir",
            path_str(&w.ca),
            "--out",
            path_str(&w.dir.path().join("y")),
            "--valid-days",
            "0",
        ])
        .is_err()
    );
}
