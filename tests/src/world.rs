//! A campus cloud and one box as real processes, and what the scenarios share: the
//! box's workload, its totals compared with the cloud's, waiting for the link to
//! converge, and a bare `Hello` as a box would say it.

use crate::{
    Api, CloudProcess, EdgeProcess, cloud_command, cloud_env, eventually, path_str, seed_demo,
};
use cloud_sync::proto::Message;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub struct World {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub enrol: PathBuf,
    pub box_data: PathBuf,
    pub cloud_data: PathBuf,
}

impl World {
    pub fn new(node: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        let enrol = dir.path().join("enrol");
        cloud_command(&["ca", "init", "--dir", path_str(&ca)]).unwrap();
        cloud_command(&[
            "enroll",
            "--node-id",
            node,
            "--ca-dir",
            path_str(&ca),
            "--out",
            path_str(&enrol),
        ])
        .unwrap();
        let box_data = dir.path().join("box");
        seed_demo(&box_data).unwrap();
        let cloud_data = dir.path().join("cloud");
        Self {
            dir,
            ca,
            enrol,
            box_data,
            cloud_data,
        }
    }

    pub fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn edge(&self, cloud: std::net::SocketAddr, node: &str, cert_node: &str) -> EdgeProcess {
        let env = cloud_env(cloud, node, cert_node, &self.enrol);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        EdgeProcess::serve_logged(&self.box_data, &env, Some(&self.log("box.log"))).unwrap()
    }

    /// Enrols another canteen's box with the same CA and seeds its data directory;
    /// returns the directory.
    pub fn add_box(&self, node: &str) -> PathBuf {
        cloud_command(&[
            "enroll",
            "--node-id",
            node,
            "--ca-dir",
            path_str(&self.ca),
            "--out",
            path_str(&self.enrol),
        ])
        .unwrap();
        let data = self.dir.path().join(format!("box-{node}"));
        seed_demo(&data).unwrap();
        data
    }

    /// Serves the box of `node` from `data` with `extra` environment, linked to the
    /// cloud; its log is `box-<node>.log`.
    pub fn edge_of(
        &self,
        cloud: std::net::SocketAddr,
        node: &str,
        data: &Path,
        extra: &[(&str, &str)],
    ) -> EdgeProcess {
        let mut env = cloud_env(cloud, node, node, &self.enrol);
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let log = self.log(&format!("box-{node}.log"));
        EdgeProcess::serve_logged(data, &env, Some(&log)).unwrap()
    }

    pub fn cloud(&self, addr: std::net::SocketAddr) -> CloudProcess {
        CloudProcess::serve(&self.cloud_data, &self.ca, addr, &self.log("cloud.log")).unwrap()
    }
}

/// Waits until the cloud's replica of `node`'s menu holds item `id`.
pub async fn menu_reaches_the_cloud(cloud: &CloudProcess, node: &str, id: &str) {
    eventually("the menu at the cloud", Duration::from_secs(30), || async {
        let menu = cloud.get(&format!("/nodes/{node}/menu")).await?;
        Ok(menu["items"]
            .as_array()
            .is_some_and(|i| i.iter().any(|x| x["id"] == json!(id)))
            .then_some(()))
    })
    .await
    .unwrap();
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Places `n` orders with 16 concurrent students and takes each along one of six
/// paths, so every total the cloud keeps is exercised: paid; paid then cancelled (a
/// refund); paid, prepared, ready and picked up; cancelled unpaid by the student; left
/// ready; left placed. Ends with a staff restock and adjustment (stock events).
pub async fn orders(api: &Api, n: usize) {
    let manager = api.manager().await.unwrap();
    api.unlimited_menu(&manager).await.unwrap();
    let menu = Arc::new(api.staff_menu(&manager).await.unwrap());
    let staff = api.staff("staff", "staff-pass").await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..16usize {
        let token = api.student(w as u32 % 30 + 1).await.unwrap();
        let (api, menu, staff) = (api.clone(), menu.clone(), staff.clone());
        tasks.spawn(async move {
            let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(w as u64);
            for i in (w..n).step_by(16) {
                let (status, order) = api
                    .post(
                        "/api/student/orders",
                        Some(&token),
                        &crate::random_order(&menu, &mut rng),
                    )
                    .await
                    .unwrap();
                assert_eq!(status, 201, "{order}");
                let id = order["id"].as_str().unwrap();
                let events: &[&str] = match i % 6 {
                    0 => &["pay"],
                    1 => &["pay", "cancel"],
                    2 => &["pay", "start_preparing", "mark_ready", "pick_up"],
                    4 => &["pay", "start_preparing", "mark_ready"],
                    _ => &[],
                };
                for (version, event) in events.iter().enumerate() {
                    let (status, body) = api
                        .post(
                            &format!("/api/staff/orders/{id}/transitions"),
                            Some(&staff),
                            &json!({"event": event, "version": version + 1}),
                        )
                        .await
                        .unwrap();
                    assert_eq!(status, 200, "{event}: {body}");
                }
                if i % 6 == 3 {
                    let (status, body) = api
                        .post(
                            &format!("/api/student/orders/{id}/cancel"),
                            Some(&token),
                            &json!({}),
                        )
                        .await
                        .unwrap();
                    assert_eq!(status, 200, "student cancel: {body}");
                }
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let item = menu[0]["id"].as_str().unwrap();
    for action in [
        json!({"action": "restock", "count": 5}),
        json!({"action": "adjust", "delta": -2, "reason": "dropped"}),
    ] {
        let (status, body) = api
            .post(&format!("/api/staff/stock/{item}"), Some(&staff), &action)
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
    }
}

pub async fn last_seq(api: &Api, staff: &str) -> u64 {
    let (_, page) = api
        .get("/api/staff/outbox?after_seq=0&limit=1", Some(staff))
        .await
        .unwrap();
    page["last_seq"].as_u64().unwrap()
}

/// The box's day summary and the cloud's must agree exactly.
pub async fn assert_same_totals(api: &Api, staff: &str, cloud: &CloudProcess, node: &str) {
    let (_, mine) = api.get("/api/staff/summary", Some(staff)).await.unwrap();
    let day = mine["service_day"].as_str().unwrap();
    let theirs = cloud
        .get(&format!("/nodes/{node}/summary?day={day}"))
        .await
        .unwrap();
    assert_eq!(theirs["orders"], mine["orders"]);
    assert_eq!(theirs["revenue_fen"], mine["revenue_fen"]);
    assert_eq!(theirs["refunds_fen"], mine["refunds_fen"]);
    for (state, n) in mine["by_state"].as_object().unwrap() {
        assert_eq!(
            theirs["by_state"][state].as_i64().unwrap_or(0),
            n.as_i64().unwrap(),
            "state {state}"
        );
    }
    let items = |v: &Value, revenue: &str| {
        let mut out: Vec<(String, i64, i64)> = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["item_id"].as_str().unwrap().to_owned(),
                    i["quantity"].as_i64().unwrap(),
                    i[revenue].as_i64().unwrap(),
                )
            })
            .collect();
        out.sort();
        out
    };
    assert_eq!(items(&theirs, "revenue_fen"), items(&mine, "revenue_fen"));
    assert!(mine["orders"].as_i64().unwrap() > 0);
    // The workload reached every path: refunds and every state are counted.
    assert!(mine["refunds_fen"].as_i64().unwrap() > 0, "{mine}");
    for state in ["paid", "ready", "picked_up", "cancelled"] {
        assert!(
            mine["by_state"][state].as_i64().unwrap() > 0,
            "{state}: {mine}"
        );
    }
}

/// Waits until the cloud holds every event of the box and the box knows it, and checks
/// the cloud stored each exactly once (a box with one history).
pub async fn converged(api: &Api, staff: &str, cloud: &CloudProcess, node: &str) -> u64 {
    let last = caught_up(api, staff, cloud, node).await;
    let summary = cloud.get(&format!("/nodes/{node}/summary")).await.unwrap();
    assert_eq!(
        summary["events"].as_u64(),
        Some(last),
        "every event stored exactly once"
    );
    last
}

/// Waits until the cloud holds every event the box has and the box knows it.
pub async fn caught_up(api: &Api, staff: &str, cloud: &CloudProcess, node: &str) -> u64 {
    let last = last_seq(api, staff).await;
    eventually(
        "the cloud to acknowledge every event",
        Duration::from_secs(120),
        || async {
            let nodes = cloud.get("/nodes").await?;
            let acked = nodes
                .as_array()
                .and_then(|n| n.iter().find(|x| x["node_id"] == node))
                .and_then(|x| x["acked_seq"].as_u64());
            Ok((acked == Some(last)).then_some(()))
        },
    )
    .await
    .unwrap();
    eventually("the box to see it", Duration::from_secs(30), || async {
        let (_, s) = api.get("/api/staff/sync", Some(staff)).await?;
        Ok((s["unacked_events"] == 0).then_some(()))
    })
    .await
    .unwrap();
    last
}

/// A box's end of a sync connection, opened by hand: the control stream after its
/// hello, and the cloud's first answer.
pub struct RawBox {
    pub endpoint: quinn::Endpoint,
    pub conn: quinn::Connection,
    pub control: quinn::SendStream,
    pub control_rx: cloud_sync::wire::Inbox,
    pub answer: Message,
}

impl RawBox {
    /// Connects to the cloud with the certificate of `node` in `enrol` and says
    /// `hello` on the control stream.
    pub async fn connect(
        cloud: std::net::SocketAddr,
        enrol: &Path,
        node: &str,
        hello: &Message,
    ) -> anyhow::Result<Self> {
        let config = cloud_sync::identity::client_config(
            &enrol.join("ca.pem"),
            &enrol.join(format!("{node}.pem")),
            &enrol.join(format!("{node}.key")),
        )?;
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
        endpoint.set_default_client_config(config);
        let conn = endpoint
            .connect(cloud, cloud_sync::identity::DEFAULT_CLOUD_NAME)?
            .await?;
        let (mut control, recv) = conn.open_bi().await?;
        let mut control_rx = cloud_sync::wire::reader(recv);
        cloud_sync::wire::send(&mut control, hello).await?;
        let answer = cloud_sync::wire::next(&mut control_rx).await?;
        Ok(Self {
            endpoint,
            conn,
            control,
            control_rx,
            answer,
        })
    }

    pub async fn close(self) {
        self.conn.close(0u32.into(), b"done");
        self.endpoint.wait_idle().await;
    }
}

/// A version 1 `Hello` (the previous release's, without an incarnation).
pub fn hello_v1(node: &str) -> Message {
    Message::Hello {
        version: 1,
        node_id: node.into(),
    }
}

/// Connects to the cloud as `node` with the certificate in `enrol` and says `Hello`:
/// the cloud's first answer, or the handshake's error.
pub async fn hello(
    cloud: std::net::SocketAddr,
    enrol: &Path,
    node: &str,
) -> anyhow::Result<Message> {
    let hello = Message::Hello {
        version: cloud_sync::proto::PROTOCOL_VERSION,
        node_id: node.into(),
    };
    let raw = RawBox::connect(cloud, enrol, node, &hello).await?;
    let answer = raw.answer.clone();
    raw.close().await;
    Ok(answer)
}
