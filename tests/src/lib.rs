//! Harness for cross-process scenarios: runs the real `edge-node` binary on a
//! temporary data directory, bound to 127.0.0.1 on a port the OS picks.
//!
//! The binary is looked up next to the test executable's target directory (build it
//! first: `cargo build -p edge-node`), or at `$EDGE_NODE_BIN`.

pub mod browser;
pub mod world;

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Cheap password hashing and no per-student order or fair-share limits: these
/// scenarios measure durability and throughput of ordering, not argon2 or the abuse
/// limits (those have their own tests, `lan.rs` here and in `edge-node`).
pub const FAST_ENV: &[(&str, &str)] = &[
    ("EDGE_ARGON2_MEMORY_KIB", "64"),
    ("EDGE_ARGON2_PASSES", "1"),
    ("EDGE_ORDERS_PER_MIN_STUDENT", "1000000"),
    ("EDGE_UNPAID_ORDERS_PER_STUDENT", "0"),
    ("EDGE_PORTIONS_PER_DISH", "1000"),
    ("EDGE_LOGIN_PER_MIN_IP", "1000000"),
    ("EDGE_LOG", "warn"),
];

/// The `edge-node` binary of the same build profile as the running executable.
pub fn edge_binary() -> PathBuf {
    workspace_binary("edge-node", "EDGE_NODE_BIN")
}

/// The `cloud-sync` binary of the same build profile as the running executable.
pub fn cloud_binary() -> PathBuf {
    workspace_binary("cloud-sync", "CLOUD_SYNC_BIN")
}

/// A workspace binary of the same build profile as the running executable.
fn workspace_binary(name: &str, env: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_owned();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        bin.display()
    );
    bin
}

fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(edge_binary());
    cmd.args(args);
    for (k, v) in FAST_ENV {
        cmd.env(k, v);
    }
    cmd
}

/// Runs an `edge-node` command to completion, whatever its exit code: (code, stdout,
/// stderr).
pub fn edge_run(args: &[&str]) -> anyhow::Result<(i32, String, String)> {
    let out = command(args).output().context("running edge-node")?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Runs an `edge-node` command to completion; fails with its output if it fails.
pub fn edge_command(args: &[&str]) -> anyhow::Result<String> {
    let out = command(args).output().context("running edge-node")?;
    if !out.status.success() {
        bail!(
            "edge-node {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Creates a demo canteen in `data_dir` (which must not exist yet) without serving.
pub fn seed_demo(data_dir: &Path) -> anyhow::Result<()> {
    edge_command(&["demo", "--no-serve", "--data-dir", path_str(data_dir)])?;
    Ok(())
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// Spawns `cmd` with stdout piped and stderr appended to `log` (if given), and waits
/// for one stdout line starting with each of `prefixes`; returns what follows them.
fn spawn_and_wait(
    mut cmd: Command,
    prefixes: &[&str],
    log: Option<&Path>,
) -> anyhow::Result<(Child, Vec<String>)> {
    let stderr = match log {
        Some(path) => Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        ),
        None => Stdio::inherit(),
    };
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .context("spawning")?;
    let stdout = child.stdout.take().context("stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    let wanted: Vec<String> = prefixes.iter().map(|p| (*p).to_owned()).collect();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            for (i, p) in wanted.iter().enumerate() {
                if let Some(rest) = line.strip_prefix(p.as_str()) {
                    let _ = tx.send((i, rest.to_owned()));
                }
            }
        }
    });
    let mut found = vec![String::new(); prefixes.len()];
    for _ in prefixes {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok((i, rest)) => found[i] = rest,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the process did not print {prefixes:?} within 30 s")
            }
        }
    }
    Ok((child, found))
}

/// `edge-node serve` on `data_dir`, loopback port 0, with `extra_env`.
fn serve_command(data_dir: &Path, extra_env: &[(&str, &str)]) -> Command {
    let mut cmd = command(&[
        "serve",
        "--data-dir",
        path_str(data_dir),
        "--listen",
        "127.0.0.1:0",
    ]);
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd
}

/// A running `edge-node serve`. Killed (and reaped) on drop.
pub struct EdgeProcess {
    child: Child,
    pub base: String,
}

impl EdgeProcess {
    /// Starts `serve` on `data_dir` and waits for its "listening on" line.
    pub fn serve(data_dir: &Path, extra_env: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::serve_logged(data_dir, extra_env, None)
    }

    /// Like [`EdgeProcess::serve`], with the box's log appended to `log`.
    pub fn serve_logged(
        data_dir: &Path,
        extra_env: &[(&str, &str)],
        log: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let cmd = serve_command(data_dir, extra_env);
        let (child, found) = spawn_and_wait(cmd, &["listening on "], log)?;
        Ok(Self {
            child,
            base: found[0].clone(),
        })
    }

    /// Starts `serve` with a staff HTTPS listener (the `EDGE_STAFF_*` settings in
    /// `extra_env`); returns the box and its `https://` base.
    pub fn serve_https(
        data_dir: &Path,
        extra_env: &[(&str, &str)],
    ) -> anyhow::Result<(Self, String)> {
        let mut cmd = serve_command(data_dir, extra_env);
        cmd.args(["--staff-listen", "127.0.0.1:0"]);
        let (child, found) = spawn_and_wait(cmd, &["listening on ", "staff https on "], None)?;
        Ok((
            Self {
                child,
                base: found[0].clone(),
            },
            found[1].clone(),
        ))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no shutdown path runs.
    pub fn kill_9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for the process to exit. (Sent with kill(1): the crate keeps
    /// `unsafe` forbidden, and std can only send SIGKILL.)
    pub fn terminate(mut self) -> anyhow::Result<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status()?;
        if !sent.success() {
            bail!("could not send SIGTERM to {pid}");
        }
        Ok(self.child.wait()?)
    }
}

impl Drop for EdgeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// With `CLOUD_TEST_STORE=postgres`, the PostgreSQL database that stands in for the
/// cloud data directory `data_dir` (one per directory, on one server for the test
/// process): the cloud's suites then run on PostgreSQL. `None` otherwise (SQLite).
pub fn test_database(data_dir: &Path) -> Option<String> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    if std::env::var("CLOUD_TEST_STORE").as_deref() != Ok("postgres") {
        return None;
    }
    static DATABASES: OnceLock<Mutex<HashMap<PathBuf, String>>> = OnceLock::new();
    let mut databases = DATABASES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    Some(
        databases
            .entry(data_dir.to_owned())
            .or_insert_with(|| {
                cloud_sync::pgtest::shared()
                    .fresh_database()
                    .expect("a PostgreSQL database for the cloud")
            })
            .clone(),
    )
}

/// A `cloud-sync` command for the cloud of `data_dir` (on its PostgreSQL database when
/// [`test_database`] gives one).
pub fn cloud_command_for(data_dir: &Path) -> Command {
    let mut cmd = Command::new(cloud_binary());
    if let Some(url) = test_database(data_dir) {
        cmd.env("CLOUD_DATABASE_URL", url);
    }
    cmd
}

/// Runs a `cloud-sync` command to completion (on the data directory's PostgreSQL
/// database when [`test_database`] gives one).
pub fn cloud_command(args: &[&str]) -> anyhow::Result<String> {
    let data_dir = args
        .iter()
        .position(|a| *a == "--data-dir")
        .and_then(|i| args.get(i + 1));
    let mut cmd = match data_dir {
        Some(dir) => cloud_command_for(Path::new(dir)),
        None => Command::new(cloud_binary()),
    };
    let out = cmd.args(args).output().context("running cloud-sync")?;
    if !out.status.success() {
        bail!(
            "cloud-sync {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The campus admin every test cloud has (`CloudProcess::serve` creates it).
pub const CLOUD_ADMIN: (&str, &str) = ("campus-admin", "campus-admin-pass");

/// Creates (or resets) admin `username` of the cloud in `data_dir` with `role`
/// (and `canteens` for a canteen_manager) and returns a bearer token of theirs.
pub fn cloud_admin(
    data_dir: &Path,
    username: &str,
    password: &str,
    role: &str,
    canteens: &[&str],
) -> anyhow::Result<String> {
    cloud_admin_in(
        &["--data-dir", path_str(data_dir)],
        username,
        password,
        role,
        canteens,
    )
}

/// [`cloud_admin`] on the store that `store` names (`--data-dir DIR` or
/// `--database-url URL`).
pub fn cloud_admin_in(
    store: &[&str],
    username: &str,
    password: &str,
    role: &str,
    canteens: &[&str],
) -> anyhow::Result<String> {
    let mut args = vec![
        "admin",
        "add",
        "--username",
        username,
        "--role",
        role,
        "--password",
        password,
    ];
    args.extend(store);
    for c in canteens {
        args.extend(["--canteen", c]);
    }
    cloud_command(&args)?;
    let mut args = vec!["admin", "token", "--username", username];
    args.extend(store);
    let token = cloud_command(&args)?;
    Ok(token.trim().to_owned())
}

/// A running `cloud-sync serve`. Killed (and reaped) on drop. `get` and `post` call
/// its admin API as [`CLOUD_ADMIN`].
pub struct CloudProcess {
    child: Child,
    pub quic: std::net::SocketAddr,
    pub admin: String,
    /// A bearer token of [`CLOUD_ADMIN`].
    pub token: String,
}

/// A process's memory as `/proc/PID/status` gives it under `field` (`VmRSS`, resident
/// now; `VmHWM`, its peak), MiB.
pub fn memory_mib(pid: u32, field: &str) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no {field} for {pid}"))?;
    Ok(kib / 1024.0)
}

impl CloudProcess {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Serves on `quic` (port 0 picks one) with its log appended to `log`.
    pub fn serve(
        data_dir: &Path,
        ca_dir: &Path,
        quic: std::net::SocketAddr,
        log: &Path,
    ) -> anyhow::Result<Self> {
        Self::serve_with(data_dir, ca_dir, quic, log, &[])
    }

    /// `serve`, with extra environment (`CLOUD_*` settings).
    pub fn serve_with(
        data_dir: &Path,
        ca_dir: &Path,
        quic: std::net::SocketAddr,
        log: &Path,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let token = cloud_admin(data_dir, CLOUD_ADMIN.0, CLOUD_ADMIN.1, "admin", &[])?;
        Self::spawn(data_dir, ca_dir, quic, log, env, token)
    }

    /// One replica of a cloud on PostgreSQL (`database_url`): every replica serves
    /// the same campus.
    pub fn serve_replica(
        database_url: &str,
        data_dir: &Path,
        ca_dir: &Path,
        log: &Path,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let token = cloud_admin_in(
            &["--database-url", database_url],
            CLOUD_ADMIN.0,
            CLOUD_ADMIN.1,
            "admin",
            &[],
        )?;
        let mut env = env.to_vec();
        env.push(("CLOUD_DATABASE_URL", database_url));
        let quic = "127.0.0.1:0".parse()?;
        Self::spawn(data_dir, ca_dir, quic, log, &env, token)
    }

    fn spawn(
        data_dir: &Path,
        ca_dir: &Path,
        quic: std::net::SocketAddr,
        log: &Path,
        env: &[(&str, &str)],
        token: String,
    ) -> anyhow::Result<Self> {
        // A database named in `env` (a replica's) wins over the test's stand-in.
        let mut cmd = cloud_command_for(data_dir);
        cmd.envs(env.iter().copied());
        cmd.args([
            "serve",
            "--data-dir",
            path_str(data_dir),
            "--ca-dir",
            path_str(ca_dir),
            "--listen",
            &quic.to_string(),
            "--admin-listen",
            "127.0.0.1:0",
        ]);
        let (child, found) = spawn_and_wait(
            cmd,
            &["quic listening on ", "admin listening on "],
            Some(log),
        )?;
        Ok(Self {
            child,
            quic: found[0].parse()?,
            admin: found[1].clone(),
            token,
        })
    }

    pub fn kill_9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let res = reqwest::Client::new()
            .get(format!("{}{path}", self.admin))
            .bearer_auth(&self.token)
            .send()
            .await?;
        if !res.status().is_success() {
            bail!("cloud {path}: {}", res.status());
        }
        Ok(res.json().await?)
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let res = reqwest::Client::new()
            .post(format!("{}{path}", self.admin))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await?;
        if !res.status().is_success() {
            bail!(
                "cloud {path}: {} {}",
                res.status(),
                res.text().await.unwrap_or_default()
            );
        }
        Ok(res.json().await?)
    }
}

impl Drop for CloudProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Environment that connects a box to a cloud with an enrolment in `enrol_dir`.
pub fn cloud_env(
    cloud: std::net::SocketAddr,
    node_id: &str,
    cert_node: &str,
    enrol_dir: &Path,
) -> Vec<(String, String)> {
    vec![
        ("EDGE_CLOUD_ADDR".into(), cloud.to_string()),
        ("EDGE_NODE_ID".into(), node_id.into()),
        (
            "EDGE_CLOUD_CA".into(),
            path_str(&enrol_dir.join("ca.pem")).into(),
        ),
        (
            "EDGE_CLOUD_CERT".into(),
            path_str(&enrol_dir.join(format!("{cert_node}.pem"))).into(),
        ),
        (
            "EDGE_CLOUD_KEY".into(),
            path_str(&enrol_dir.join(format!("{cert_node}.key"))).into(),
        ),
    ]
}

/// A free UDP port on loopback (for a cloud that starts later).
pub fn free_udp_addr() -> std::net::SocketAddr {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp bind");
    s.local_addr().expect("addr")
}

/// Polls `check` until it returns `Some`, or fails after `within`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Ok(Some(v)) = check().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A UDP relay between a box and the cloud that the test can cut: while `blackhole`
/// is set, every datagram in either direction is dropped. It can also be pointed at
/// another upstream (a load balancer that took a dead replica out). Stops with the
/// runtime.
pub struct Relay {
    pub addr: std::net::SocketAddr,
    pub blackhole: std::sync::Arc<std::sync::atomic::AtomicBool>,
    upstream: std::sync::Arc<std::sync::Mutex<std::net::SocketAddr>>,
}

impl Relay {
    pub async fn start(upstream: std::net::SocketAddr) -> anyhow::Result<Self> {
        use std::sync::atomic::Ordering;
        let front = std::sync::Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await?);
        let back = std::sync::Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await?);
        let addr = front.local_addr()?;
        let blackhole = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let upstream = std::sync::Arc::new(std::sync::Mutex::new(upstream));
        let client: std::sync::Arc<std::sync::Mutex<Option<std::net::SocketAddr>>> =
            Default::default();
        {
            let (front, back, hole, client, upstream) = (
                front.clone(),
                back.clone(),
                blackhole.clone(),
                client.clone(),
                upstream.clone(),
            );
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                while let Ok((n, from)) = front.recv_from(&mut buf).await {
                    *client.lock().unwrap() = Some(from);
                    let to = *upstream.lock().unwrap();
                    if !hole.load(Ordering::SeqCst) {
                        let _ = back.send_to(&buf[..n], to).await;
                    }
                }
            });
        }
        {
            let (front, back, hole, client, upstream) = (
                front.clone(),
                back.clone(),
                blackhole.clone(),
                client.clone(),
                upstream.clone(),
            );
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                while let Ok((n, from)) = back.recv_from(&mut buf).await {
                    let to = *client.lock().unwrap();
                    if let Some(to) = to
                        && from == *upstream.lock().unwrap()
                        && !hole.load(Ordering::SeqCst)
                    {
                        let _ = front.send_to(&buf[..n], to).await;
                    }
                }
            });
        }
        Ok(Self {
            addr,
            blackhole,
            upstream,
        })
    }

    pub fn cut(&self, cut: bool) {
        self.blackhole
            .store(cut, std::sync::atomic::Ordering::SeqCst);
    }

    /// Sends what comes from the box to `upstream` from now on.
    pub fn retarget(&self, upstream: std::net::SocketAddr) {
        *self.upstream.lock().unwrap() = upstream;
    }
}

/// Sends `req` (with `token` as its bearer, if any): the status and the JSON body
/// (`Null` when the body is not JSON).
async fn answer(
    mut req: reqwest::RequestBuilder,
    token: Option<&str>,
) -> anyhow::Result<(u16, Value)> {
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await?;
    let status = res.status().as_u16();
    Ok((status, res.json().await.unwrap_or(Value::Null)))
}

/// A small JSON client for the box's API.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
}

impl Api {
    pub fn new(base: &str) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .pool_max_idle_per_host(1024)
                .build()
                .expect("http client"),
            base: base.to_owned(),
        }
    }

    pub async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> anyhow::Result<(u16, Value)> {
        answer(
            self.http.post(format!("{}{path}", self.base)).json(body),
            token,
        )
        .await
    }

    /// Places an order as the students' page does: with an `Idempotency-Key` of its
    /// own (the page makes one per checkout and reuses it only for retries).
    pub async fn place_order(&self, token: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        let req = self
            .http
            .post(format!("{}/api/student/orders", self.base))
            .json(body)
            .header("Idempotency-Key", uuid::Uuid::new_v4().to_string());
        answer(req, Some(token)).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> anyhow::Result<(u16, Value)> {
        answer(self.http.get(format!("{}{path}", self.base)), token).await
    }

    /// A staff transition of `order` (a JSON order as the API returns it) at its
    /// version; anything but 200 fails. The order as it is afterwards.
    pub async fn transition(
        &self,
        staff: &str,
        order: &Value,
        event: &str,
    ) -> anyhow::Result<Value> {
        let (status, next) = self
            .post(
                &format!(
                    "/api/staff/orders/{}/transitions",
                    order["id"].as_str().unwrap_or("")
                ),
                Some(staff),
                &json!({"event": event, "version": order["version"]}),
            )
            .await?;
        ensure!(status == 200, "{event}: {status} {next}");
        Ok(next)
    }

    /// Logs demo student `n` in. A login the box answers "busy" (503: other logins
    /// from this address are being checked) is retried after a moment; a refusal
    /// (429 included) fails.
    pub async fn student(&self, n: u32) -> anyhow::Result<String> {
        let mut tries = 0;
        loop {
            let (status, body) = self
                .post(
                    "/api/student/login",
                    None,
                    &json!({"student_number": format!("2024{n:03}"), "pin": "135790"}),
                )
                .await?;
            match status {
                200 => return Ok(body["token"].as_str().unwrap_or_default().to_owned()),
                503 if tries < 20 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                _ => bail!("student login {n}: {status} {body}"),
            }
        }
    }

    pub async fn staff(&self, user: &str, password: &str) -> anyhow::Result<String> {
        let (status, body) = self
            .post(
                "/api/staff/login",
                None,
                &json!({"username": user, "password": password}),
            )
            .await?;
        if status != 200 {
            bail!("staff login: {status} {body}");
        }
        Ok(body["token"].as_str().unwrap_or_default().to_owned())
    }

    pub async fn manager(&self) -> anyhow::Result<String> {
        self.staff("manager", "manager-pass").await
    }

    /// Every outbox event, following pages.
    pub async fn outbox(&self, token: &str) -> anyhow::Result<Vec<Value>> {
        let mut all: Vec<Value> = Vec::new();
        loop {
            let after = all.last().and_then(|e| e["seq"].as_i64()).unwrap_or(0);
            let (status, page) = self
                .get(&format!("/api/staff/outbox?after_seq={after}"), Some(token))
                .await?;
            if status != 200 {
                bail!("outbox: {status} {page}");
            }
            let events = page["events"].as_array().cloned().unwrap_or_default();
            if events.is_empty() {
                return Ok(all);
            }
            all.extend(events);
        }
    }

    /// Every dish of the menu, archived ones included.
    pub async fn staff_menu(&self, token: &str) -> anyhow::Result<Vec<Value>> {
        let (status, menu) = self.get("/api/staff/menu", Some(token)).await?;
        if status != 200 {
            bail!("staff menu: {status} {menu}");
        }
        Ok(menu["items"].as_array().cloned().unwrap_or_default())
    }

    /// Removes the daily quota of every dish, so a long load run never sells out.
    pub async fn unlimited_menu(&self, manager: &str) -> anyhow::Result<Vec<Value>> {
        let items = self.staff_menu(manager).await?;
        for item in &items {
            let mut fields = item.clone();
            let id = fields["id"].as_str().unwrap_or_default().to_owned();
            fields.as_object_mut().map(|o| o.remove("id"));
            fields["daily_quota"] = Value::Null;
            let res = self
                .http
                .put(format!("{}/api/staff/menu/{id}", self.base))
                .bearer_auth(manager)
                .json(&fields)
                .send()
                .await?;
            if !res.status().is_success() {
                bail!("menu edit: {}", res.status());
            }
        }
        Ok(items)
    }
}

/// Checks the outbox is numbered 1..=n without a gap.
pub fn assert_gapless(events: &[Value]) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e["seq"].as_i64(),
            Some(i as i64 + 1),
            "outbox gap before event {i}"
        );
    }
}

/// A valid order of 1–3 lines with random valid options, from a staff menu listing.
pub fn random_order(menu: &[Value], rng: &mut impl rand::Rng) -> Value {
    let lines: Vec<Value> = (0..rng.random_range(1..=3))
        .map(|_| {
            let item = &menu[rng.random_range(0..menu.len())];
            let mut options = Vec::new();
            for group in item["option_groups"].as_array().into_iter().flatten() {
                let choices = group["choices"].as_array().cloned().unwrap_or_default();
                let min = group["min_choices"].as_u64().unwrap_or(0) as usize;
                let max = group["max_choices"].as_u64().unwrap_or(0) as usize;
                let n = rng.random_range(min..=max.min(choices.len()));
                for c in choices.iter().take(n) {
                    options.push(json!({"group": group["id"], "choice": c["id"]}));
                }
            }
            json!({"item_id": item["id"], "quantity": rng.random_range(1..=2), "options": options})
        })
        .collect();
    json!({"lines": lines, "payment_mode": "counter"})
}

/// The staff desktop app (`desktop-ui`) of the same build profile as the running
/// executable (or `$DESKTOP_UI_BIN`).
pub fn desktop_binary() -> PathBuf {
    workspace_binary("desktop-ui", "DESKTOP_UI_BIN")
}

/// An Automerge sync message carrying one compressed change that inflates to
/// `inflated_mib` MiB of zeros, from a few KiB per MiB: a DEFLATE bomb. Built by
/// repeating one sync-flushed block of a real DEFLATE stream (a block of zeros refers
/// only to the zeros before it), so a bomb of gigabytes takes no time to make.
pub fn deflate_bomb_message(inflated_mib: usize) -> Vec<u8> {
    use std::io::Write;
    let mib = vec![0u8; 1 << 20];
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(&mib).expect("deflate");
    enc.flush().expect("deflate");
    let head = enc.get_ref().len();
    enc.write_all(&mib).expect("deflate");
    enc.flush().expect("deflate");
    let stream = enc.get_ref().clone();
    let block = &stream[head..];
    let mut deflated = stream[..head].to_vec();
    for _ in 1..inflated_mib.max(1) {
        deflated.extend_from_slice(block);
    }
    // A final, empty block with fixed codes: BFINAL=1, BTYPE=01, end of block.
    deflated.extend_from_slice(&[0x03, 0x00]);
    // A compressed change chunk: magic, checksum, type 2, length, data.
    let mut chunk = vec![0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, 2];
    let mut n = deflated.len() as u64;
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            chunk.push(byte);
            break;
        }
        chunk.push(byte | 0x80);
    }
    chunk.extend_from_slice(&deflated);
    automerge::sync::Message {
        heads: Vec::new(),
        need: Vec::new(),
        have: Vec::new(),
        changes: vec![chunk].into(),
        flags: None,
        version: automerge::sync::MessageVersion::V1,
    }
    .encode()
}

#[cfg(test)]
mod bomb_tests {
    use std::io::Read;

    /// The bomb is real: its change inflates far beyond its size.
    #[test]
    fn the_deflate_bomb_inflates_as_claimed() {
        let message = super::deflate_bomb_message(64);
        assert!(message.len() < 256 * 1024, "{}", message.len());
        let decoded = automerge::sync::Message::decode(&message).unwrap();
        let chunk = decoded.changes.iter().next().unwrap();
        let header = 4 + 4 + 1;
        let mut at = header;
        while chunk[at] & 0x80 != 0 {
            at += 1;
        }
        let mut inflated = 0u64;
        let mut reader = flate2::read::DeflateDecoder::new(&chunk[at + 1..]);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = reader.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            assert!(buf[..n].iter().all(|&b| b == 0));
            inflated += n as u64;
        }
        assert_eq!(inflated, 64 << 20);
    }
}
