//! Catch-up benchmark of the sync: a box takes a backlog of orders while the cloud is
//! down; then the cloud starts and the time until it has acknowledged every event is
//! measured. In the same run, the same bytes (the events as frames) go over one raw
//! QUIC stream with the same TLS setup, for the ratio.
//!
//! Usage: `cargo build --release --workspace --bins && target/release/syncbench`

use clap::Parser;
use cloud_sync::proto::{BATCH_MAX, Message, WireEvent, encode};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tests::{
    Api, CloudProcess, EdgeProcess, cloud_command, cloud_env, free_udp_addr, path_str, seed_demo,
};

#[derive(Parser)]
struct Args {
    /// Orders in the backlog (one outbox event each).
    #[arg(long, default_value_t = 100_000)]
    events: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let (ca, enrol, data) = (
        dir.path().join("ca"),
        dir.path().join("enrol"),
        dir.path().join("box"),
    );
    cloud_command(&["ca", "init", "--dir", path_str(&ca)])?;
    cloud_command(&[
        "enroll",
        "--node-id",
        "bench",
        "--ca-dir",
        path_str(&ca),
        "--out",
        path_str(&enrol),
    ])?;
    seed_demo(&data)?;
    let addr = free_udp_addr();
    let env = cloud_env(addr, "bench", "bench", &enrol);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let edge = EdgeProcess::serve_logged(&data, &env, Some(&dir.path().join("box.log")))?;
    let api = Api::new(&edge.base);
    let manager = api.manager().await?;
    api.unlimited_menu(&manager).await?;
    let menu = Arc::new(api.staff_menu(&manager).await?);

    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..32usize {
        let token = api.student(w as u32 % 30 + 1).await?;
        let (api, menu, n) = (api.clone(), menu.clone(), args.events);
        tasks.spawn(async move {
            let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(w as u64);
            for _ in (w..n).step_by(32) {
                let (status, body) = api
                    .post(
                        "/api/student/orders",
                        Some(&token),
                        &tests::random_order(&menu, &mut rng),
                    )
                    .await?;
                anyhow::ensure!(status == 201, "{status} {body}");
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let (_, page) = api
        .get("/api/staff/outbox?after_seq=0&limit=1", Some(&manager))
        .await?;
    let last = page["last_seq"].as_u64().unwrap_or(0);
    eprintln!(
        "backlog of {last} events built in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // The bytes the sync sends: the events in frames of BATCH_MAX.
    let mut frames: Vec<Vec<u8>> = Vec::new();
    let mut after = 0;
    let mut batch = Vec::new();
    loop {
        let (_, page) = api
            .get(
                &format!("/api/staff/outbox?after_seq={after}&limit=1000"),
                Some(&manager),
            )
            .await?;
        let events = page["events"].as_array().cloned().unwrap_or_default();
        if events.is_empty() {
            break;
        }
        for e in events {
            after = e["seq"].as_u64().unwrap_or(after);
            batch.push(WireEvent {
                seq: after,
                kind: e["kind"].as_str().unwrap_or_default().into(),
                aggregate_id: e["aggregate_id"].as_str().unwrap_or_default().into(),
                payload: e["payload"].to_string(),
                at: e["at"].as_str().unwrap_or_default().into(),
            });
            if batch.len() == BATCH_MAX {
                frames.push(encode(&Message::Events {
                    events: std::mem::take(&mut batch),
                })?);
            }
        }
    }
    if !batch.is_empty() {
        frames.push(encode(&Message::Events { events: batch })?);
    }
    let bytes: usize = frames.iter().map(Vec::len).sum();

    // Sync catch-up.
    let cloud_data = dir.path().join("cloud");
    let t = Instant::now();
    let cloud = CloudProcess::serve(&cloud_data, &ca, addr, &dir.path().join("cloud.log"))?;
    // The box is in its reconnect backoff (it kept failing while the cloud was down):
    // time to converge counts from the cloud's start, the rate from the box's arrival.
    let mut connected_at = None;
    loop {
        let nodes = cloud.get("/nodes").await?;
        let node = nodes.as_array().and_then(|n| n.first()).cloned();
        if connected_at.is_none() && node.is_some() {
            connected_at = Some(Instant::now());
        }
        if node.and_then(|n| n["acked_seq"].as_u64()) == Some(last) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let converge_s = t.elapsed().as_secs_f64();
    let sync_s = connected_at.map_or(converge_s, |c| c.elapsed().as_secs_f64());
    let summary = cloud.get("/nodes/bench/summary").await?;
    anyhow::ensure!(
        summary["events"] == json!(last),
        "cloud holds {} of {last}",
        summary["events"]
    );
    drop(cloud);
    edge.terminate()?;

    // Raw: the same bytes over one QUIC stream with the same TLS, in this process.
    let server_cfg = cloud_sync::identity::server_config(
        &ca.join("ca.pem"),
        &ca.join("cloud.pem"),
        &ca.join("cloud.key"),
    )?;
    let server = quinn::Endpoint::server(server_cfg, "127.0.0.1:0".parse()?)?;
    let server_addr = server.local_addr()?;
    let expected = bytes;
    let receiver = tokio::spawn(async move {
        let conn = server.accept().await.expect("incoming").await?;
        let (_, mut recv) = conn.accept_bi().await?;
        let mut got = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        while got < expected {
            match recv.read(&mut buf).await? {
                Some(n) => got += n,
                None => break,
            }
        }
        Ok::<_, anyhow::Error>(got)
    });
    let client_cfg = cloud_sync::identity::client_config(
        &enrol.join("ca.pem"),
        &enrol.join("bench.pem"),
        &enrol.join("bench.key"),
    )?;
    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    client.set_default_client_config(client_cfg);
    let t = Instant::now();
    let conn = client
        .connect(server_addr, cloud_sync::identity::DEFAULT_CLOUD_NAME)?
        .await?;
    let (mut send, _recv) = conn.open_bi().await?;
    for f in &frames {
        send.write_all(f).await?;
    }
    let got = receiver.await??;
    let raw_s = t.elapsed().as_secs_f64();
    anyhow::ensure!(got == bytes, "raw transfer got {got} of {bytes} bytes");

    let rate = last as f64 / sync_s;
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| backlog | {last} events, {bytes} bytes in {} frames |",
        frames.len()
    );
    println!("| time to converge (cloud start → every event acknowledged) | {converge_s:.2} s |");
    println!(
        "| sync catch-up (box connected → every event acknowledged) | {sync_s:.2} s, {rate:.0} events/s |"
    );
    println!(
        "| raw QUIC stream of the same bytes | {raw_s:.2} s, {:.0} events/s |",
        last as f64 / raw_s
    );
    println!("| sync rate / raw rate | {:.2} |", raw_s / sync_s);
    Ok(())
}
