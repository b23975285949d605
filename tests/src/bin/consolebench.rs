//! The console's pages at campus scale: a cloud database filled through the cloud's own
//! ingest path (the function the QUIC side calls for every batch, rollups included)
//! with `--canteens` boxes × `--orders` orders each over `--days` business days, then
//! `cloud-sync serve` on it and every page of the console and the admin API fetched
//! `--repeat` times with a session; the median and p95 time of each, next to a no-op
//! page (the login form) of the same server, in the same run.
//!
//! Usage: `cargo build --release --workspace --bins && target/release/consolebench`
//! (defaults: 20 canteens × 1,000,000 orders over 30 days; `--orders 50000` for a
//! quick look). `--keep DIR` keeps (and on a later run reuses) the filled database.

use clap::Parser;
use cloud_sync::cloud::store::CloudStore;
use cloud_sync::proto::{BATCH_MAX, BoxStatus, DayTotals, WireEvent};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tests::{CloudProcess, cloud_command, path_str};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 20)]
    canteens: usize,
    /// Orders per canteen.
    #[arg(long, default_value_t = 1_000_000)]
    orders: usize,
    /// Business days the orders are spread over (ending today).
    #[arg(long, default_value_t = 30)]
    days: usize,
    /// Fetches of each page.
    #[arg(long, default_value_t = 30)]
    repeat: usize,
    /// Keep the filled cloud here (and reuse it when it is already filled).
    #[arg(long)]
    keep: Option<PathBuf>,
}

/// Dishes per canteen.
const DISHES: usize = 40;

fn uuid_at(n: u64, salt: u64) -> String {
    uuid::Uuid::from_u64_pair(0x0193_0000_0000_7000 | salt, n | 0x8000_0000_0000_0000).to_string()
}

/// One canteen's orders as its box would send them: every order placed in a lunch or
/// dinner hour, then paid and picked up (8 in 10), paid and refunded (1 in 10) or left
/// to expire (1 in 10).
fn fill_canteen(
    store: &CloudStore,
    node: &str,
    salt: u64,
    args: &Args,
    today: chrono::NaiveDate,
) -> anyhow::Result<u64> {
    let dishes: Vec<String> = (0..DISHES as u64).map(|d| uuid_at(d, 0xd15)).collect();
    let mut batch: Vec<WireEvent> = Vec::with_capacity(BATCH_MAX);
    let mut seq = 0u64;
    let per_day = args.orders.div_ceil(args.days);
    for o in 0..args.orders as u64 {
        let day = today - chrono::Duration::days((args.days - 1 - o as usize / per_day) as i64);
        let hour = [3u32, 4, 4, 4, 5, 9, 10, 10][(o % 8) as usize];
        let at = format!("{day}T{hour:02}:{:02}:{:02}Z", o % 60, (o * 7) % 60);
        let id = uuid_at(o, salt);
        let student = uuid_at(o % 5000, 0x5);
        let dish = &dishes[(o as usize * 7 + o as usize / 3) % DISHES];
        let qty = 1 + o % 2;
        let fen = 1200 * qty as i64;
        let mut push = |kind: &str, payload: String| {
            seq += 1;
            batch.push(WireEvent {
                seq,
                kind: kind.to_owned(),
                aggregate_id: id.clone(),
                payload,
                at: at.clone(),
            });
        };
        push(
            "order.placed",
            format!(
                r#"{{"v":2,"id":"{id}","student_id":"{student}","service_day":"{day}","total_fen":{fen},"pickup_slot":"12:00","lines":[{{"item_id":"{dish}","name_zh":"菜","name_en":"Dish","quantity":{qty},"unit_price_fen":1200,"options":[],"line_total_fen":{fen}}}]}}"#
            ),
        );
        let moved = |from: &str, to: &str, event: &str, money: &str| {
            format!(
                r#"{{"v":2,"order_id":"{id}","student_id":"{student}","service_day":"{day}","from":"{from}","to":"{to}","event":"{event}","version":2,"actor":"system","payment":{money}}}"#
            )
        };
        if o % 10 == 9 {
            push(
                "order.expired",
                moved("placed", "expired", "expire", "null"),
            );
        } else {
            let pay = format!(
                r#"{{"kind":"payment","payment_id":"{}","method":"campus_card","amount_fen":{fen}}}"#,
                uuid_at(o, salt ^ 0xa)
            );
            push("order.paid", moved("placed", "paid", "pay", &pay));
            if o % 10 == 8 {
                let refund = format!(
                    r#"{{"kind":"refund","refund_id":"{}","method":"campus_card","amount_fen":{fen}}}"#,
                    uuid_at(o, salt ^ 0xb)
                );
                push(
                    "order.cancelled",
                    moved("paid", "cancelled", "cancel", &refund),
                );
            } else {
                push(
                    "order.picked_up",
                    moved("paid", "picked_up", "pick_up", "null"),
                );
            }
        }
        if batch.len() >= BATCH_MAX - 3 {
            store.ingest(node, &batch)?;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        store.ingest(node, &batch)?;
    }
    // The box's status with its own totals of its last week (as the cloud has them:
    // the reconciliation page then has every day to compare).
    let days: Vec<DayTotals> = (0..7)
        .map(|back| {
            let day = (today - chrono::Duration::days(back)).to_string();
            let s = store
                .summary(node, Some(&day))
                .unwrap_or_else(|e| panic!("{e}"));
            let count = |st: &str| s.by_state.get(st).copied().unwrap_or(0);
            DayTotals {
                day,
                through_seq: seq,
                orders: s.orders,
                revenue_fen: s.revenue_fen,
                refunds_fen: s.refunds_fen,
                cancelled: count("cancelled"),
                expired: count("expired"),
                unclaimed: count("unclaimed"),
            }
        })
        .collect();
    let status = BoxStatus {
        sent_at_ms: 0,
        software: "0.1.0".into(),
        schema: 12,
        last_seq: seq,
        acked_seq: seq,
        oldest_waiting_at: None,
        docs: Vec::new(),
        days,
    };
    store.record_status(node, &status, chrono::Utc::now().timestamp_millis(), 0)?;
    Ok(seq)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let scratch = tempfile::tempdir()?;
    let root = args
        .keep
        .clone()
        .unwrap_or_else(|| scratch.path().to_owned());
    std::fs::create_dir_all(&root)?;
    let (ca, data) = (root.join("ca"), root.join("cloud"));
    let today = chrono::Utc::now().date_naive();
    let filled = root.join("filled");
    if !filled.exists() {
        if !ca.exists() {
            cloud_command(&["ca", "init", "--dir", path_str(&ca)])?;
        }
        std::fs::create_dir_all(&data)?;
        let store = CloudStore::open(&data.join("cloud.db"))?;
        let t = Instant::now();
        let mut events = 0;
        for c in 0..args.canteens {
            let node = format!("canteen-{c:02}");
            let tc = Instant::now();
            events += fill_canteen(&store, &node, c as u64 + 1, &args, today)?;
            eprintln!(
                "filled {node}: {} orders in {:.1} s",
                args.orders,
                tc.elapsed().as_secs_f64()
            );
        }
        let secs = t.elapsed().as_secs_f64();
        drop(store);
        let size: u64 = std::fs::read_dir(&data)?
            .filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum();
        println!(
            "fill: {} canteens x {} orders = {} events through ingest in {secs:.0} s ({:.0} events/s); database {:.1} GB",
            args.canteens,
            args.orders,
            events,
            events as f64 / secs,
            size as f64 / 1e9
        );
        std::fs::write(&filled, today.to_string())?;
    }
    let cloud = CloudProcess::serve(&data, &ca, "127.0.0.1:0".parse()?, &root.join("cloud.log"))?;
    let client = reqwest::Client::new();
    let session = format!("canteen_admin={}", cloud.token);
    let week_ago = (today - chrono::Duration::days(6)).to_string();
    let month_ago = (today - chrono::Duration::days(args.days as i64 - 1)).to_string();
    let pages: Vec<(String, String)> = vec![
        ("no-op: login form".into(), "/login".into()),
        ("fleet page".into(), "/".into()),
        ("fleet API".into(), "/api/fleet".into()),
        ("sales page, today".into(), format!("/sales?day={today}")),
        ("sales API, today".into(), format!("/api/sales?day={today}")),
        (
            "sales page, whole range".into(),
            format!("/sales?day={month_ago}&to={today}"),
        ),
        (
            "sales CSV, week".into(),
            format!("/sales.csv?day={week_ago}&to={today}"),
        ),
        ("dishes page, today".into(), format!("/items?day={today}")),
        (
            "dishes page, whole range".into(),
            format!("/items?day={month_ago}&to={today}"),
        ),
        ("reconciliation page, week".into(), "/reconciliation".into()),
        ("menu page".into(), "/menu".into()),
        ("accounts page".into(), "/accounts".into()),
        ("audit log".into(), "/audit-log".into()),
    ];
    println!(
        "\n{} canteens x {} orders, {} days; {} fetches per page, after one warm-up\n",
        args.canteens, args.orders, args.days, args.repeat
    );
    println!("| page | median ms | p95 ms | bytes |");
    println!("|---|---|---|---|");
    let mut noop = Duration::ZERO;
    for (name, path) in &pages {
        let url = format!("{}{path}", cloud.admin);
        let fetch = || async {
            let t = Instant::now();
            let req = client.get(&url);
            let req = if path.starts_with("/api/") {
                req.bearer_auth(&cloud.token)
            } else if path == "/login" {
                req
            } else {
                req.header("cookie", &session)
            };
            let res = req.send().await?;
            let status = res.status();
            let bytes = res.bytes().await?.len();
            anyhow::ensure!(status.is_success(), "{path}: {status}");
            Ok::<_, anyhow::Error>((t.elapsed(), bytes))
        };
        let (_, bytes) = fetch().await?;
        let mut times = Vec::with_capacity(args.repeat);
        for _ in 0..args.repeat {
            times.push(fetch().await?.0);
        }
        times.sort();
        let median = percentile(&times, 0.5);
        if noop.is_zero() {
            noop = median;
        }
        println!(
            "| {name} | {:.2} | {:.2} | {bytes} |",
            median.as_secs_f64() * 1e3,
            percentile(&times, 0.95).as_secs_f64() * 1e3
        );
    }
    println!(
        "\nno-op median {:.2} ms ({:.0} fetches/s one at a time): the machine's own speed",
        noop.as_secs_f64() * 1e3,
        1.0 / noop.as_secs_f64()
    );
    drop(cloud);
    Ok(())
}
