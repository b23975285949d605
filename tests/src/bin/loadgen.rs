//! The lunch-rush load generator. Starts a real `edge-node serve` (release build next
//! to this binary) on a temporary data directory, imports a roster, logs every student
//! in, and then, over HTTP on loopback:
//!
//! 1. no-op: closed loop on `GET /healthz` (the HTTP stack's ceiling on this machine);
//! 2. orders: closed loop placing orders of 1–3 lines with random valid options, each
//!    with an `Idempotency-Key` as the students' page sends;
//! 3. paced: orders at a fixed rate (open loop); latency is measured from each
//!    request's scheduled time, so a stall cannot hide behind fewer requests.
//!
//! With `--growth N`, instead: a short no-op phase (the machine's speed), then orders in
//! a closed loop until the box holds N, reporting per step of `--growth-step` orders
//! the rate, the box's resident memory and its database on disk; then a restart, timed
//! to the first `200` from `/readyz`, and the memory after it.
//!
//! Usage: `cargo build --release --workspace --bins && target/release/loadgen`
//! (`target/release/loadgen --growth 1000000` for the growth curve)

use anyhow::bail;
use clap::Parser;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::Value;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tests::{Api, EdgeProcess, edge_command, path_str};

#[derive(Parser)]
#[command(about = "Plays a lunch rush against a real box and reports orders/s and latency.")]
struct Args {
    /// Students on the roster (each logs in once before the rush).
    #[arg(long, default_value_t = 2000)]
    students: u32,
    /// Concurrent connections in the closed-loop phases.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds per phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Orders per second in the paced phase.
    #[arg(long, default_value_t = 2000)]
    rate: u32,
    /// Skip the closed-loop phases (run only the paced one).
    #[arg(long)]
    paced_only: bool,
    /// Requests in flight at most in the paced phase (beyond: counted as late).
    #[arg(long, default_value_t = 512)]
    in_flight_max: usize,
    /// Fill the box to this many orders instead, reporting the growth curve.
    #[arg(long, default_value_t = 0)]
    growth: u64,
    /// Leave the box's data directory here (a new directory) instead of deleting it.
    #[arg(long)]
    keep: Option<std::path::PathBuf>,
    /// Orders per step of the growth curve.
    #[arg(long, default_value_t = 100_000)]
    growth_step: u64,
}

struct Stats {
    label: String,
    ok: usize,
    failed: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Stats {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    fn pct(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i].as_secs_f64() * 1000.0
    }

    fn row(&self) -> String {
        format!(
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} |",
            self.label,
            self.ok,
            self.failed,
            self.rate(),
            self.pct(0.5),
            self.pct(0.99),
            self.pct(1.0)
        )
    }
}

/// When a closed loop stops: after some seconds, or once this many requests started.
#[derive(Clone, Copy)]
enum Until {
    Seconds(u64),
    Requests(u64),
}

/// Runs `concurrency` workers that each repeat `one` until `seconds` pass.
async fn closed_loop<F, Fut>(label: &str, concurrency: usize, seconds: u64, one: F) -> Stats
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    closed_loop_until(label, concurrency, Until::Seconds(seconds), Arc::new(one)).await
}

/// Runs `concurrency` workers that each repeat `one` until `until`.
async fn closed_loop_until<F, Fut>(
    label: &str,
    concurrency: usize,
    until: Until,
    one: Arc<F>,
) -> Stats
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let start = Instant::now();
    let started = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..concurrency {
        let one = one.clone();
        let started = started.clone();
        tasks.spawn(async move {
            let (mut ok, mut failed, mut lat) = (0, 0, Vec::new());
            let mut n = 0u64;
            loop {
                let go_on = match until {
                    Until::Seconds(s) => start.elapsed() < Duration::from_secs(s),
                    Until::Requests(r) => {
                        started.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < r
                    }
                };
                if !go_on {
                    break;
                }
                n += 1;
                let t = Instant::now();
                if one(w, n).await {
                    ok += 1;
                    lat.push(t.elapsed());
                } else {
                    failed += 1;
                }
            }
            (ok, failed, lat)
        });
    }
    let mut stats = Stats {
        label: label.into(),
        ok: 0,
        failed: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    while let Some(r) = tasks.join_next().await {
        let (ok, failed, lat) = r.expect("worker");
        stats.ok += ok;
        stats.failed += failed;
        stats.latencies.extend(lat);
    }
    stats.elapsed = start.elapsed();
    stats.latencies.sort();
    stats
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let data = args.keep.clone().unwrap_or_else(|| dir.path().join("box"));
    if data.exists() {
        bail!("{} exists: --keep wants a new directory", data.display());
    }
    edge_command(&["demo", "--no-serve", "--data-dir", path_str(&data)])?;
    let roster = dir.path().join("roster.csv");
    let mut csv = std::fs::File::create(&roster)?;
    writeln!(csv, "student_number,name,pin")?;
    for n in 1..=args.students {
        writeln!(csv, "L{n:05},Student {n},135790")?;
    }
    drop(csv);
    edge_command(&[
        "roster",
        "import",
        path_str(&roster),
        "--data-dir",
        path_str(&data),
    ])?;

    let edge = EdgeProcess::serve(&data, &[("EDGE_REQUESTS_IN_FLIGHT_MAX", "4096")])?;
    eprintln!("box at {} (pid {})", edge.base, edge.pid());
    let api = Api::new(&edge.base);
    let manager = api.manager().await?;
    api.unlimited_menu(&manager).await?;
    let menu: Arc<Vec<Value>> = Arc::new(api.staff_menu(&manager).await?);

    let mut tokens = Vec::new();
    for chunk in (1..=args.students).collect::<Vec<_>>().chunks(64) {
        let logins = chunk.iter().map(|n| {
            let api = api.clone();
            let n = *n;
            async move {
                // Logins from one address are checked a few at a time: retry the
                // ones the box answers busy (503).
                for _ in 0..100 {
                    let (status, body) = api
                        .post(
                            "/api/student/login",
                            None,
                            &serde_json::json!({"student_number": format!("L{n:05}"), "pin": "135790"}),
                        )
                        .await?;
                    match status {
                        200 => {
                            return Ok::<_, anyhow::Error>(
                                body["token"].as_str().unwrap_or_default().to_owned(),
                            );
                        }
                        503 => tokio::time::sleep(Duration::from_millis(20)).await,
                        _ => bail!("login L{n:05}: {status} {body}"),
                    }
                }
                bail!("login L{n:05}: still refused after 100 tries")
            }
        });
        for t in futures_join(logins).await {
            tokens.push(t?);
        }
    }
    let tokens = Arc::new(tokens);
    eprintln!("{} students logged in; {} dishes", tokens.len(), menu.len());

    let place = |api: Api, tokens: Arc<Vec<String>>, menu: Arc<Vec<Value>>| {
        move |w: usize, n: u64| {
            let api = api.clone();
            let mut rng = StdRng::seed_from_u64((w as u64) << 32 | n);
            let token = tokens[(w * 7919 + n as usize) % tokens.len()].clone();
            let body = tests::random_order(&menu, &mut rng);
            async move { matches!(api.place_order(&token, &body).await, Ok((201, _))) }
        }
    };
    if args.growth > 0 {
        let one = Arc::new(place(api.clone(), tokens.clone(), menu.clone()));
        return growth(&args, edge, &data, one, &api, &manager).await;
    }

    let skip = if args.paced_only { 0 } else { args.seconds };
    let noop = {
        let api = api.clone();
        closed_loop(
            "no-op `GET /healthz`, closed loop",
            args.concurrency,
            skip,
            move |_, _| {
                let api = api.clone();
                async move { matches!(api.get("/healthz", None).await, Ok((200, _))) }
            },
        )
        .await
    };
    let orders = closed_loop(
        "orders, closed loop",
        args.concurrency,
        skip,
        place(api.clone(), tokens.clone(), menu.clone()),
    )
    .await;

    // Paced phase.
    let one = Arc::new(place(api.clone(), tokens.clone(), menu.clone()));
    let total = u64::from(args.rate) * args.seconds;
    let permits = Arc::new(tokio::sync::Semaphore::new(args.in_flight_max));
    let start = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut late = 0usize;
    for i in 0..total {
        let scheduled = start + Duration::from_secs_f64(i as f64 / f64::from(args.rate));
        tokio::time::sleep_until(scheduled).await;
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            late += 1;
            continue;
        };
        let one = one.clone();
        tasks.spawn(async move {
            let ok = one(usize::MAX / 2, i).await;
            drop(permit);
            (ok, scheduled.elapsed())
        });
    }
    let mut paced = Stats {
        label: format!("orders paced at {}/s, open loop", args.rate),
        ok: 0,
        failed: late,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    while let Some(r) = tasks.join_next().await {
        let (ok, lat) = r?;
        if ok {
            paced.ok += 1;
            paced.latencies.push(lat);
        } else {
            paced.failed += 1;
        }
    }
    paced.elapsed = start.elapsed();
    paced.latencies.sort();

    let (_, summary) = api.get("/api/staff/summary", Some(&manager)).await?;
    edge.terminate()?;

    println!("| phase | ok | failed | per s | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|---|---|");
    for s in [&noop, &orders, &paced] {
        println!("{}", s.row());
    }
    println!();
    println!(
        "placement / no-op throughput: {:.2}x (closed loop, {} connections, {} s each)",
        orders.rate() / noop.rate(),
        args.concurrency,
        args.seconds
    );
    println!("orders stored by the box: {}", summary["orders"]);
    Ok(())
}

/// The growth curve: orders in a closed loop until the box holds `args.growth`, with
/// the rate, the box's memory and its files per step; then a restart, timed.
async fn growth<F, Fut>(
    args: &Args,
    edge: EdgeProcess,
    data: &std::path::Path,
    one: Arc<F>,
    api: &Api,
    manager: &str,
) -> anyhow::Result<()>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let noop = {
        let api = api.clone();
        closed_loop("no-op", args.concurrency, 5, move |_, _| {
            let api = api.clone();
            async move { matches!(api.get("/healthz", None).await, Ok((200, _))) }
        })
        .await
    };
    println!(
        "no-op `GET /healthz` (this machine's speed): {:.0} requests/s",
        noop.rate()
    );
    println!();
    println!(
        "| orders stored | orders/s in the step | p99 ms | box RSS MiB | database on disk MiB | bytes per order |"
    );
    println!("|---|---|---|---|---|---|");
    let (mut stored, mut rates) = (0u64, Vec::new());
    while stored < args.growth {
        let step = args.growth_step.min(args.growth - stored);
        let stats = closed_loop_until(
            "orders",
            args.concurrency,
            Until::Requests(step),
            one.clone(),
        )
        .await;
        let (_, summary) = api.get("/api/staff/summary", Some(manager)).await?;
        stored = summary["orders"]
            .as_u64()
            .unwrap_or(stored + stats.ok as u64);
        let disk = dir_bytes(data)?;
        println!(
            "| {stored} | {:.0} | {:.2} | {:.1} | {:.1} | {:.0} |",
            stats.rate(),
            stats.pct(0.99),
            tests::memory_mib(edge.pid(), "VmRSS")?,
            disk as f64 / 1048576.0,
            disk as f64 / stored.max(1) as f64
        );
        rates.push(stats.rate());
        if stats.ok == 0 {
            bail!("no order placed in a step ({} failed)", stats.failed);
        }
    }
    if let (Some(first), Some(last)) = (rates.first(), rates.last()) {
        println!();
        println!(
            "last step / first step: {:.2} ({:+.0} %)",
            last / first,
            (last / first - 1.0) * 100.0
        );
    }
    edge.terminate()?;
    let start = Instant::now();
    let edge = EdgeProcess::serve(data, &[("EDGE_REQUESTS_IN_FLIGHT_MAX", "4096")])?;
    let again = Api::new(&edge.base);
    loop {
        if matches!(again.get("/readyz", None).await, Ok((200, _))) {
            break;
        }
        if start.elapsed() > Duration::from_secs(120) {
            bail!("not ready two minutes after a restart");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "restart to the first 200 from /readyz: {:.2} s; RSS then {:.1} MiB",
        start.elapsed().as_secs_f64(),
        tests::memory_mib(edge.pid(), "VmRSS")?
    );
    edge.terminate()?;
    Ok(())
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &std::path::Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// Awaits a batch of futures concurrently, keeping their order.
async fn futures_join<T: Send + 'static>(
    futs: impl Iterator<Item = impl std::future::Future<Output = T> + Send + 'static>,
) -> Vec<T> {
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}
