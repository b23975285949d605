//! `cloud-sync demo`: a campus on this machine, on loopback only. A campus CA, a cloud
//! (QUIC and the console) and three canteen boxes (`edge-node` processes), each box
//! seeded with the demo canteen and a generated business day of orders (yesterday in
//! the canteens' time zone: lunch and dinner peaks, sold-out dishes, a refund); the
//! boxes sync that day to the cloud over QUIC like any other. The third box starts
//! unlinked and joins later (a box that was offline: the fleet shows it silent, then
//! catching up). Everything lives in one directory; a second run serves it again.

use anyhow::Context;
use cloud_sync::cloud::admins::{self, Role};
use cloud_sync::cloud::auth::AdminOptions;
use cloud_sync::cloud::{admin, listener, server, store::CloudStore};
use cloud_sync::identity;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The demo's canteens: (node id, how busy its day is).
const CANTEENS: [(&str, f64); 3] = [
    ("canteen-north", 1.0),
    ("canteen-south", 0.7),
    ("canteen-east", 0.45),
];
pub(crate) const DEMO_ADMIN: (&str, &str) = ("admin", "campus-demo-pass");
const TIME_ZONE: &str = "Asia/Shanghai";

pub(crate) struct DemoArgs {
    pub(crate) dir: PathBuf,
    pub(crate) admin_listen: SocketAddr,
    pub(crate) edge_node: Option<PathBuf>,
    pub(crate) offline: Duration,
}

/// `edge-node`: as given, else next to this binary, else on the PATH.
fn edge_binary(given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| {
        let beside = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|d| d.join("edge-node")));
        match beside {
            Some(p) if p.exists() => p,
            _ => PathBuf::from("edge-node"),
        }
    })
}

/// A box process, killed with the demo.
struct BoxProcess(Child);

impl Drop for BoxProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `edge-node serve` on `data` (loopback, a free port), linked to the cloud when
/// `cloud` is given; returns the process and its address. Its log goes to `<data>.log`.
fn serve_box(
    edge: &Path,
    node: &str,
    data: &Path,
    enrol: &Path,
    cloud: Option<SocketAddr>,
) -> anyhow::Result<(BoxProcess, String)> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data.with_extension("log"))?;
    let mut cmd = Command::new(edge);
    cmd.args(["serve", "--data-dir"])
        .arg(data)
        .args(["--listen", "127.0.0.1:0"])
        .env("EDGE_CLOUD_STATUS_S", "10")
        .stdout(Stdio::piped())
        .stderr(log);
    if let Some(addr) = cloud {
        cmd.env("EDGE_CLOUD_ADDR", addr.to_string())
            .env("EDGE_NODE_ID", node)
            .env("EDGE_CLOUD_CA", enrol.join("ca.pem"))
            .env("EDGE_CLOUD_CERT", enrol.join(format!("{node}.pem")))
            .env("EDGE_CLOUD_KEY", enrol.join(format!("{node}.key")));
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", edge.display()))?;
    let stdout = child.stdout.take().context("the box's stdout")?;
    let child = BoxProcess(child);
    let mut lines = BufReader::new(stdout).lines();
    let address = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(rest) = line.strip_prefix("listening on ") {
                    break rest.trim().to_owned();
                }
            }
            _ => anyhow::bail!(
                "{node} did not start; see {}",
                data.with_extension("log").display()
            ),
        }
    };
    // Keep draining its output so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Ok((child, address))
}

/// Creates the campus (CA, enrolments, admin, three seeded boxes with a played day).
fn create(dir: &Path, edge: &Path) -> anyhow::Result<()> {
    let (ca, enrol, cloud) = (dir.join("ca"), dir.join("boxes"), dir.join("cloud"));
    std::fs::create_dir_all(&cloud)?;
    identity::ca_init(&ca, identity::DEFAULT_CLOUD_NAME)?;
    let now = cloud_sync::cloud::auth::now_ms();
    let store = CloudStore::open(&cloud.join("cloud.db"))?;
    let hash = admins::hash_password(DEMO_ADMIN.1).map_err(anyhow::Error::msg)?;
    store.admin_upsert(DEMO_ADMIN.0, Role::Admin, &[], &hash, now)?;
    let tz: chrono_tz::Tz = TIME_ZONE
        .parse()
        .map_err(|_| anyhow::anyhow!("time zone"))?;
    let yesterday = (chrono::Utc::now().with_timezone(&tz).date_naive()
        - chrono::Duration::days(1))
    .to_string();
    for (node, demand) in CANTEENS {
        identity::enroll_for(&ca, node, &enrol, &[], Duration::from_secs(365 * 86_400))?;
        let data = dir.join(node);
        println!("creating {node} and playing {yesterday} there …");
        let out = Command::new(edge)
            .args(["demo", "--no-serve", "--data-dir"])
            .arg(&data)
            .args(["--time-zone", TIME_ZONE, "--play-day", &yesterday])
            .args(["--demand", &demand.to_string()])
            .env("EDGE_LOG", "warn")
            .output()
            .with_context(|| format!("cannot run {}", edge.display()))?;
        anyhow::ensure!(
            out.status.success(),
            "edge-node demo for {node} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some(line) = String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.starts_with("Played"))
        {
            println!("  {line}");
        }
    }
    std::fs::write(dir.join("campus.created"), yesterday)?;
    Ok(())
}

pub(crate) async fn run(
    args: DemoArgs,
    stop_signal: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    listener::check_address(args.admin_listen, false)?;
    let edge = edge_binary(args.edge_node);
    let dir = args.dir;
    if !dir.join("campus.created").exists() {
        if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
            anyhow::bail!(
                "{} exists and is not a campus demo; remove it or pass --dir",
                dir.display()
            );
        }
        create(&dir, &edge)?;
    }
    let (ca, enrol) = (dir.join("ca"), dir.join("boxes"));
    let store = Arc::new(CloudStore::open(&dir.join("cloud").join("cloud.db"))?);
    let config = identity::server_config(
        &ca.join(identity::CA_CERT),
        &ca.join(identity::CLOUD_CERT),
        &ca.join(identity::CLOUD_KEY),
    )?;
    let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse()?)?;
    let quic = endpoint.local_addr()?;
    let cloud = server::Cloud::new(store)?;
    let admin_socket = tokio::net::TcpListener::bind(args.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.admin_listen))?;
    let console = format!("http://{}", admin_socket.local_addr()?);
    let stop = CancellationToken::new();
    let quic_task = tokio::spawn(server::serve(endpoint, cloud.clone(), stop.clone()));
    let http_task = tokio::spawn(listener::serve(
        admin_socket,
        admin::router(cloud, AdminOptions::default()),
        None,
        stop.clone(),
    ));
    let mut boxes = Vec::new();
    let (late_node, _) = CANTEENS[CANTEENS.len() - 1];
    for (node, _) in CANTEENS {
        let linked = (node != late_node || args.offline.is_zero()).then_some(quic);
        let (process, address) = serve_box(&edge, node, &dir.join(node), &enrol, linked)?;
        boxes.push((node, Some(process), address));
    }
    println!("\nThe campus is up (everything on loopback; stop with Ctrl-C):");
    println!(
        "  console:   {console}/   log in as {} / {}",
        DEMO_ADMIN.0, DEMO_ADMIN.1
    );
    for (node, _, address) in &boxes {
        println!(
            "  {node}: students' page {address}/  (staff: staff / staff-pass, manager: manager / manager-pass)"
        );
    }
    if !args.offline.is_zero() {
        println!(
            "  {late_node} starts offline and links in {} s: its day reaches the cloud then.",
            args.offline.as_secs()
        );
    }
    println!("  data:      {}", dir.display());
    tokio::pin!(stop_signal);
    if !args.offline.is_zero() {
        tokio::select! {
            () = &mut stop_signal => {}
            () = tokio::time::sleep(args.offline) => {
                if let Some(slot) = boxes.iter_mut().find(|(n, _, _)| *n == late_node) {
                    // Stopped, then served again with its link.
                    drop(slot.1.take());
                    let data = dir.join(late_node);
                    let (process, address) = serve_box(&edge, late_node, &data, &enrol, Some(quic))?;
                    slot.1 = Some(process);
                    println!("  {late_node} linked: students' page now at {address}/");
                    slot.2 = address;
                }
                stop_signal.await;
            }
        }
    } else {
        stop_signal.await;
    }
    drop(boxes);
    stop.cancel();
    let _ = quic_task.await;
    let _ = http_task.await;
    Ok(())
}
