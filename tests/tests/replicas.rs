//! The cloud as two replicas on one PostgreSQL server, with real processes: three boxes
//! spread over the replicas (each through a UDP relay, as behind a load balancer). A
//! menu push made through one replica is applied by a box connected to the other. One
//! replica is killed with SIGKILL while its boxes sell and sync; the relays send the
//! boxes to the other replica, they reconnect, and in the end the cloud's totals equal
//! every box's exactly, with every event stored once (read from PostgreSQL itself).

use cloud_sync::pgtest::PgServer;
use serde_json::{Value, json};
use std::time::Duration;
use tests::world::{World, assert_same_totals, converged, orders};
use tests::{Api, CloudProcess, EdgeProcess, FAST_ENV, Relay, eventually};

const NODES: [&str; 3] = ["canteen-north", "canteen-south", "canteen-east"];

/// (events stored, highest seq, events counted) per box, from the database.
async fn stored(url: &str) -> Vec<(String, i64, i64, i64)> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .query(
            "SELECT e.node_id, COUNT(*), MAX(e.seq), MAX(n.counted_events) FROM event e
             JOIN node n USING (node_id) GROUP BY e.node_id ORDER BY e.node_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_the_campus_and_survive_a_sigkill() {
    let pg = PgServer::start().expect("a PostgreSQL server for this test");
    let url = pg.fresh_database().unwrap();
    let w = World::new(NODES[0]);
    let data = [w.box_data.clone(), w.add_box(NODES[1]), w.add_box(NODES[2])];
    let replica = |name: &str| {
        CloudProcess::serve_replica(
            &url,
            &w.dir.path().join(name),
            &w.ca,
            &w.log(&format!("{name}.log")),
            &[("CLOUD_LOG", "info")],
        )
        .unwrap()
    };
    let a = replica("replica-a");
    let b = replica("replica-b");

    // North and east go through replica A, south through replica B.
    let upstream = [a.quic, b.quic, a.quic];
    let mut relays = Vec::new();
    for up in upstream {
        relays.push(Relay::start(up).await.unwrap());
    }
    let boxes: Vec<(EdgeProcess, Api)> = NODES
        .iter()
        .zip(&data)
        .zip(&relays)
        .map(|((node, data), relay)| {
            let edge = w.edge_of(relay.addr, node, data, FAST_ENV);
            let api = Api::new(&edge.base);
            (edge, api)
        })
        .collect();
    for (node, (_, api)) in NODES.iter().zip(&boxes) {
        orders(api, 6).await;
        let staff = api.staff("staff", "staff-pass").await.unwrap();
        let on = if *node == NODES[1] { &b } else { &a };
        converged(api, &staff, on, node).await;
    }

    // Both replicas show the whole campus.
    for cloud in [&a, &b] {
        let nodes = cloud.get("/nodes").await.unwrap();
        assert_eq!(nodes.as_array().unwrap().len(), 3, "{nodes}");
    }

    // A dish pushed through replica A reaches the box connected to replica B.
    let pushed = a
        .post(
            "/api/menu/pushes",
            &json!({"name_zh": "番茄炒蛋", "name_en": "Tomato and egg", "category": "Mains",
                    "price_fen": 1600, "daily_quota": 40, "canteens": [NODES[1]]}),
        )
        .await
        .unwrap();
    let item = pushed["item"].as_str().unwrap().to_owned();
    let south = &boxes[1].1;
    let manager = south.manager().await.unwrap();
    let dish = eventually(
        "the dish pushed through replica A at the box on replica B",
        Duration::from_secs(30),
        || async {
            Ok(south
                .staff_menu(&manager)
                .await?
                .into_iter()
                .find(|d| d["id"] == item.as_str()))
        },
    )
    .await
    .unwrap();
    assert_eq!(dish["price_fen"], 1600, "{dish}");

    // Every box sells; replica A is killed while its boxes' batches stream in.
    let selling: Vec<_> = boxes
        .iter()
        .map(|(_, api)| {
            let api = api.clone();
            tokio::spawn(async move { orders(&api, 36).await })
        })
        .collect();
    let before = acked(&a, NODES[0]).await;
    eventually(
        "north's next batches at replica A",
        Duration::from_secs(60),
        || async { Ok((acked(&a, NODES[0]).await > before).then_some(())) },
    )
    .await
    .unwrap();
    a.kill_9();
    for (relay, up) in relays.iter().zip(upstream) {
        if up != b.quic {
            relay.retarget(b.quic);
        }
    }
    for task in selling {
        task.await.unwrap();
    }

    // Every box converges on replica B: the same totals, each event once.
    for (node, (_, api)) in NODES.iter().zip(&boxes) {
        let staff = api.staff("staff", "staff-pass").await.unwrap();
        converged(api, &staff, &b, node).await;
        assert_same_totals(api, &staff, &b, node).await;
    }
    let rows = stored(&url).await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    for (node, count, max, counted) in &rows {
        assert_eq!(count, max, "{node}: every seq up to the last, none twice");
        assert_eq!(count, counted, "{node}: every event counted once");
    }
    let sales: Value = b.get("/api/sales").await.unwrap();
    assert_eq!(sales["canteens"].as_array().unwrap().len(), 3, "{sales}");
    drop(boxes);

    // The probes a load balancer or Kubernetes asks, without a login: alive, and ready
    // while the database answers.
    let probe = |path: &'static str| {
        let url = format!("{}{path}", b.admin);
        async move { reqwest::get(url).await.unwrap().status().as_u16() }
    };
    assert_eq!(probe("/healthz").await, 200);
    assert_eq!(probe("/readyz").await, 200);
    // The container's health check.
    let console = b.admin.trim_start_matches("http://").trim_end_matches('/');
    let answer = tests::cloud_command(&["probe", "--admin-listen", console]).unwrap();
    assert!(answer.contains("answers"), "{answer}");
    drop(pg);
    eventually(
        "not ready without its database",
        Duration::from_secs(30),
        || async { Ok((probe("/readyz").await == 503).then_some(())) },
    )
    .await
    .unwrap();
    assert_eq!(probe("/healthz").await, 200);
}

/// The cursor a replica shows for `node` (0 when it cannot say).
async fn acked(cloud: &CloudProcess, node: &str) -> u64 {
    cloud
        .get("/nodes")
        .await
        .ok()
        .and_then(|nodes| {
            nodes.as_array()?.iter().find(|n| n["node_id"] == node)?["acked_seq"].as_u64()
        })
        .unwrap_or(0)
}
