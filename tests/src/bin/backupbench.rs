//! Online backup of a large, busy box. Starts a real `edge-node serve` (release build
//! next to this binary) on a temporary data directory, fills it with orders through the
//! API until the database reaches `--size-mib`, then keeps students ordering at
//! `--rate` orders/s while `edge-node backup` runs, and reports how long the backup
//! took, what it wrote, and what the students saw meanwhile. The machine's no-op rate
//! (`GET /healthz`, closed loop) is measured in the same run for comparison across
//! machines.
//!
//! Usage: `cargo build --release --workspace --bins && target/release/backupbench`

use clap::Parser;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tests::{Api, EdgeProcess, edge_binary, edge_command, path_str};

#[derive(Parser)]
#[command(about = "Backs up a large box while students order, and reports time and latency.")]
struct Args {
    /// Fill the database to this size (MiB) before the backup.
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Orders per second placed while the backup runs.
    #[arg(long, default_value_t = 500)]
    rate: u32,
    /// Concurrent connections while filling.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Encrypt the backup with a fresh key file.
    #[arg(long)]
    encrypt: bool,
    /// Run the backup at the lowest CPU and I/O priority (`nice -n 19 ionice -c3`).
    #[arg(long)]
    low_priority: bool,
}

fn db_bytes(data: &Path) -> u64 {
    ["canteen.db", "canteen.db-wal"]
        .iter()
        .map(|f| std::fs::metadata(data.join(f)).map_or(0, |m| m.len()))
        .sum()
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// Places orders at `rate` per second until `stop`; returns latencies (from each
/// order's scheduled time) and failures.
async fn paced(
    api: Api,
    tokens: Arc<Vec<String>>,
    menu: Arc<Vec<Value>>,
    rate: u32,
    stop: Arc<AtomicBool>,
) -> (Vec<Duration>, u64) {
    let start = Instant::now();
    let period = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let due = start + period * n as u32;
        tokio::time::sleep_until(due.into()).await;
        let (api, tokens, menu) = (api.clone(), tokens.clone(), menu.clone());
        tasks.spawn(async move {
            let mut rng = StdRng::seed_from_u64(n);
            let token = &tokens[n as usize % tokens.len()];
            let body = tests::random_order(&menu, &mut rng);
            let ok = matches!(
                api.post("/api/student/orders", Some(token), &body).await,
                Ok((201, _))
            );
            (ok, due.elapsed())
        });
        n += 1;
    }
    let (mut lat, mut failed) = (Vec::new(), 0);
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok((true, l)) => lat.push(l),
            _ => failed += 1,
        }
    }
    lat.sort();
    (lat, failed)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("box");
    edge_command(&["demo", "--no-serve", "--data-dir", path_str(&data)])?;
    let edge = EdgeProcess::serve(&data, &[("EDGE_REQUESTS_IN_FLIGHT_MAX", "4096")])?;
    eprintln!("box at {} (pid {})", edge.base, edge.pid());
    let api = Api::new(&edge.base);
    let manager = api.manager().await?;
    api.unlimited_menu(&manager).await?;
    let menu = Arc::new(api.staff_menu(&manager).await?);
    let mut tokens = Vec::new();
    for n in 1..=30 {
        tokens.push(api.student(n).await?);
    }
    let tokens = Arc::new(tokens);

    // The machine's own speed, for judging the figures below.
    let noop_start = Instant::now();
    let noops = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let (api, noops) = (api.clone(), noops.clone());
        tasks.spawn(async move {
            while noop_start.elapsed() < Duration::from_secs(5) {
                if matches!(api.get("/healthz", None).await, Ok((200, _))) {
                    noops.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let noop_rate = noops.load(Ordering::Relaxed) as f64 / noop_start.elapsed().as_secs_f64();

    let target = args.size_mib << 20;
    let fill_start = Instant::now();
    let placed = Arc::new(AtomicU64::new(0));
    let filled = Arc::new(AtomicBool::new(false));
    for w in 0..args.concurrency {
        let (api, tokens, menu, placed, filled) = (
            api.clone(),
            tokens.clone(),
            menu.clone(),
            placed.clone(),
            filled.clone(),
        );
        tasks.spawn(async move {
            let mut rng = StdRng::seed_from_u64(w as u64);
            let mut n = w;
            while !filled.load(Ordering::Relaxed) {
                n += 1;
                let body = tests::random_order(&menu, &mut rng);
                if let Ok((201, _)) = api
                    .post(
                        "/api/student/orders",
                        Some(&tokens[n % tokens.len()]),
                        &body,
                    )
                    .await
                {
                    placed.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    let mut last_report = Instant::now();
    while db_bytes(&data) < target {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "filling: {} MiB, {} orders",
                db_bytes(&data) >> 20,
                placed.load(Ordering::Relaxed)
            );
            last_report = Instant::now();
        }
    }
    filled.store(true, Ordering::Relaxed);
    while tasks.join_next().await.is_some() {}
    let orders = placed.load(Ordering::Relaxed);
    eprintln!(
        "filled {} MiB with {orders} orders in {:.0} s",
        db_bytes(&data) >> 20,
        fill_start.elapsed().as_secs_f64()
    );

    // Students ordering before the backup (baseline) and during it.
    let stop = Arc::new(AtomicBool::new(false));
    let before = tokio::spawn(paced(
        api.clone(),
        tokens.clone(),
        menu.clone(),
        args.rate,
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(10)).await;
    stop.store(true, Ordering::SeqCst);
    let (lat_before, failed_before) = before.await?;

    let stop = Arc::new(AtomicBool::new(false));
    let during = tokio::spawn(paced(
        api.clone(),
        tokens.clone(),
        menu.clone(),
        args.rate,
        stop.clone(),
    ));
    let out = dir.path().join("backup.db");
    let mut cmd = if args.low_priority {
        let mut c = Command::new("nice");
        c.args(["-n", "19", "ionice", "-c3"]).arg(edge_binary());
        c
    } else {
        Command::new(edge_binary())
    };
    cmd.args(["backup", path_str(&out), "--data-dir", path_str(&data)]);
    if args.encrypt {
        let key = dir.path().join("backup.key");
        edge_command(&["backup-key", path_str(&key)])?;
        cmd.args(["--encrypt-with", path_str(&key)]);
    }
    let db_size = db_bytes(&data);
    let started = Instant::now();
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let stderr = child.stderr.take().expect("stderr");
    let progress = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .filter(|l| l.starts_with("backup:"))
            .inspect(|l| eprintln!("  {l}"))
            .count()
    });
    let status = child.wait()?;
    let took = started.elapsed();
    let progress_lines = progress.join().unwrap_or(0);
    stop.store(true, Ordering::SeqCst);
    let (lat_during, failed_during) = during.await?;
    anyhow::ensure!(status.success(), "the backup failed");
    let backup_size = std::fs::metadata(&out)?.len();

    println!("| measure | value |");
    println!("|---|---|");
    println!("| no-op `GET /healthz`, closed loop | {noop_rate:.0} req/s |");
    println!(
        "| database (db + WAL) | {} MiB, {orders} orders |",
        db_size >> 20
    );
    println!(
        "| backup{}{} | {:.1} s, {} MiB written, {:.0} MiB/s, {progress_lines} progress lines |",
        if args.encrypt { " (encrypted)" } else { "" },
        if args.low_priority {
            " at low priority"
        } else {
            ""
        },
        took.as_secs_f64(),
        backup_size >> 20,
        (backup_size >> 20) as f64 / took.as_secs_f64()
    );
    println!(
        "| students at {} orders/s before the backup: p50 / p99 / failed | {:.2} / {:.2} ms / {failed_before} |",
        args.rate,
        pct(&lat_before, 0.5),
        pct(&lat_before, 0.99)
    );
    println!(
        "| students at {} orders/s during the backup: p50 / p99 / failed | {:.2} / {:.2} ms / {failed_during} ({} orders) |",
        args.rate,
        pct(&lat_during, 0.5),
        pct(&lat_during, 0.99),
        lat_during.len()
    );
    drop(edge);
    Ok(())
}
