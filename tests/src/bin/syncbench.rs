//! Catch-up benchmark of the sync: a box takes a backlog of orders while the cloud is
//! down; then the cloud starts and the time until it has acknowledged every event is
//! measured, on SQLite and then (copies of the same box) on PostgreSQL: on the newly
//! initialised server, and again on the same server after a checkpoint. In the same run,
//! the same bytes (the events as frames) go over one raw QUIC stream with the same TLS
//! setup, for the ratio. Then a fleet: `--fleet` boxes with `--fleet-events` each
//! connect at once to one cloud replica, then (fresh copies) to two replicas on one
//! PostgreSQL database.
//!
//! Usage: `cargo build --release --workspace --bins && target/release/syncbench`
//! (`--fleet 0` skips the fleet; `--no-postgres` runs SQLite only).

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
    /// Skip the PostgreSQL catch-up and the fleet.
    #[arg(long)]
    no_postgres: bool,
    /// Boxes in the fleet scenario (0: none).
    #[arg(long, default_value_t = 10)]
    fleet: usize,
    /// Events of each fleet box's backlog.
    #[arg(long, default_value_t = 20_000)]
    fleet_events: usize,
}

/// Places `n` random orders at the box with 32 concurrent students.
async fn backlog(api: &Api, n: usize) -> anyhow::Result<()> {
    let manager = api.manager().await?;
    api.unlimited_menu(&manager).await?;
    let menu = Arc::new(api.staff_menu(&manager).await?);
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..32usize {
        let token = api.student(w as u32 % 30 + 1).await?;
        let (api, menu) = (api.clone(), menu.clone());
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
    Ok(())
}

/// Waits until `cloud` has acknowledged `last` events of `node`: (seconds since
/// `start`, seconds since the box appeared at the cloud). Checks every event is
/// counted once.
async fn caught_up(
    cloud: &CloudProcess,
    node: &str,
    last: u64,
    start: Instant,
) -> anyhow::Result<(f64, f64)> {
    let mut connected_at = None;
    loop {
        let nodes = cloud.get("/nodes").await?;
        let found = nodes
            .as_array()
            .and_then(|n| n.iter().find(|n| n["node_id"] == node))
            .cloned();
        if connected_at.is_none() && found.is_some() {
            connected_at = Some(Instant::now());
        }
        if found.and_then(|n| n["acked_seq"].as_u64()) == Some(last) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let converge_s = start.elapsed().as_secs_f64();
    let sync_s = connected_at.map_or(converge_s, |c| c.elapsed().as_secs_f64());
    let summary = cloud.get(&format!("/nodes/{node}/summary")).await?;
    anyhow::ensure!(
        summary["events"] == json!(last),
        "cloud holds {} of {last}",
        summary["events"]
    );
    Ok((converge_s, sync_s))
}

/// Copies a stopped box's data directory (its database, its files).
fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> anyhow::Result<()> {
    let status = std::process::Command::new("cp")
        .args(["-a", path_str(from), path_str(to)])
        .status()?;
    anyhow::ensure!(status.success(), "cp -a {} failed", from.display());
    Ok(())
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
    let t = Instant::now();
    backlog(&api, args.events).await?;
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

    // The same box, as it is now, for the PostgreSQL run.
    edge.terminate()?;
    let pg_box = dir.path().join("box-pg");
    copy_dir(&data, &pg_box)?;
    let pg_box_warm = dir.path().join("box-pg-warm");
    if !args.no_postgres {
        copy_dir(&data, &pg_box_warm)?;
    }
    let edge = EdgeProcess::serve_logged(&data, &env, Some(&dir.path().join("box.log")))?;

    // Sync catch-up.
    let cloud_data = dir.path().join("cloud");
    let t = Instant::now();
    let cloud = CloudProcess::serve(&cloud_data, &ca, addr, &dir.path().join("cloud.log"))?;
    // The box is in its reconnect backoff (it kept failing while the cloud was down):
    // time to converge counts from the cloud's start, the rate from the box's arrival.
    let (converge_s, sync_s) = caught_up(&cloud, "bench", last, t).await?;
    drop(cloud);
    edge.terminate()?;

    // The same catch-up into PostgreSQL (a server of its own, default durability).
    let pg = if args.no_postgres {
        None
    } else {
        Some(cloud_sync::pgtest::PgServer::start()?)
    };
    // Twice: first on the newly initialised server, then into a new database on the
    // same server after a checkpoint, as on a server that has been running (the first
    // run also pays for creating WAL segment files and first touching shared memory,
    // which a running server recycles).
    let mut pg_times = Vec::new();
    if let Some(pg) = &pg {
        for (server, run, from) in [
            ("new server", "new", &pg_box),
            ("running server", "running", &pg_box_warm),
        ] {
            if run == "running" {
                pg.execute("CHECKPOINT")?;
            }
            let url = pg.fresh_database()?;
            let cloud = CloudProcess::serve_replica(
                &url,
                &dir.path().join(format!("cloud-pg-{run}")),
                &ca,
                &dir.path().join(format!("cloud-pg-{run}.log")),
                &[],
            )?;
            let env = cloud_env(cloud.quic, "bench", "bench", &enrol);
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let t = Instant::now();
            let log = dir.path().join(format!("box-pg-{run}.log"));
            let edge = EdgeProcess::serve_logged(from, &env, Some(&log))?;
            pg_times.push((server, caught_up(&cloud, "bench", last, t).await?));
            drop(cloud);
            edge.terminate()?;
        }
    }

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
    let raw_rate = last as f64 / raw_s;
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| backlog | {last} events, {bytes} bytes in {} frames |",
        frames.len()
    );
    println!(
        "| SQLite: time to converge (cloud start → every event acknowledged) | {converge_s:.2} s |"
    );
    println!(
        "| SQLite: sync catch-up (box connected → every event acknowledged) | {sync_s:.2} s, {rate:.0} events/s |"
    );
    for (server, (converge_s, sync_s)) in pg_times {
        println!(
            "| PostgreSQL, {server}: time to converge (box start → every event acknowledged) | {converge_s:.2} s |"
        );
        println!(
            "| PostgreSQL, {server}: sync catch-up (box connected → every event acknowledged) | {sync_s:.2} s, {:.0} events/s |",
            last as f64 / sync_s
        );
        println!(
            "| PostgreSQL, {server}: sync rate / raw rate | {:.2} |",
            last as f64 / sync_s / raw_rate
        );
    }
    println!("| raw QUIC stream of the same bytes | {raw_s:.2} s, {raw_rate:.0} events/s |");
    println!("| SQLite sync rate / raw rate | {:.2} |", raw_s / sync_s);

    if let Some(pg) = &pg
        && args.fleet > 0
    {
        fleet(&args, pg, dir.path(), &ca).await?;
    }
    Ok(())
}

/// `args.fleet` boxes with `args.fleet_events` each reach the cloud at once: first one
/// replica, then two on the same PostgreSQL server (fresh databases, fresh copies of
/// the boxes). Prints the time until every event of every box is acknowledged.
async fn fleet(
    args: &Args,
    pg: &cloud_sync::pgtest::PgServer,
    dir: &std::path::Path,
    ca: &std::path::Path,
) -> anyhow::Result<()> {
    let enrol = dir.join("fleet-enrol");
    let nodes: Vec<String> = (1..=args.fleet).map(|i| format!("fleet-{i:02}")).collect();
    for node in &nodes {
        cloud_command(&[
            "enroll",
            "--node-id",
            node,
            "--ca-dir",
            path_str(ca),
            "--out",
            path_str(&enrol),
        ])?;
    }
    // One backlog, copied to every box (each box is its own node at the cloud).
    let template = dir.join("fleet-template");
    seed_demo(&template)?;
    let edge = EdgeProcess::serve(&template, &[])?;
    let api = Api::new(&edge.base);
    backlog(&api, args.fleet_events).await?;
    let manager = api.manager().await?;
    let (_, page) = api
        .get("/api/staff/outbox?after_seq=0&limit=1", Some(&manager))
        .await?;
    let last = page["last_seq"].as_u64().unwrap_or(0);
    edge.terminate()?;
    let total = last * nodes.len() as u64;
    println!();
    println!(
        "| fleet: {} boxes × {last} events ({total} events) | time to converge | events/s | peak RSS of a replica |",
        nodes.len()
    );
    println!("|---|---|---|---|");
    for replicas in [1usize, 2] {
        let url = pg.fresh_database()?;
        let clouds: Vec<CloudProcess> = (0..replicas)
            .map(|r| {
                CloudProcess::serve_replica(
                    &url,
                    &dir.join(format!("fleet-cloud-{replicas}-{r}")),
                    ca,
                    &dir.join(format!("fleet-cloud-{replicas}-{r}.log")),
                    &[],
                )
            })
            .collect::<Result<_, _>>()?;
        let mut data = Vec::new();
        for node in &nodes {
            let d = dir.join(format!("fleet-{replicas}-{node}"));
            copy_dir(&template, &d)?;
            data.push(d);
        }
        let t = Instant::now();
        let mut boxes = Vec::new();
        for (i, (node, d)) in nodes.iter().zip(&data).enumerate() {
            let cloud = &clouds[i % replicas];
            let env = cloud_env(cloud.quic, node, node, &enrol);
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            boxes.push(EdgeProcess::serve(d, &env)?);
        }
        for (i, node) in nodes.iter().enumerate() {
            caught_up(&clouds[i % replicas], node, last, t).await?;
        }
        let secs = t.elapsed().as_secs_f64();
        let mut peak = 0f64;
        for c in &clouds {
            peak = peak.max(tests::memory_mib(c.pid(), "VmHWM")?);
        }
        println!(
            "| {replicas} replica{} on PostgreSQL | {secs:.2} s | {:.0} | {peak:.1} MiB |",
            if replicas == 1 { "" } else { "s" },
            total as f64 / secs
        );
        for b in boxes {
            b.terminate()?;
        }
    }
    Ok(())
}
