//! The staff desktop app end to end: the real `desktop-ui` binary under Xvfb, driven by
//! `tauri-driver` + WebKitWebDriver, against a real box. Staff log in, an order placed
//! through the student API appears on the kitchen display, is bumped (once recalled)
//! to ready and handed over by its pickup number; the box confirms it was picked up.
//! A screenshot of the kitchen display goes to `artifacts/desktop-kitchen.png`.
//! New orders and the lost link to the box are raised as desktop notifications: the app
//! runs on a private D-Bus session bus whose notification server is dunst, and the test
//! reads back what dunst was given (`dunstctl history`), in the terminal's language;
//! switched off in the app, an order is not notified.
//!
//! Needs `xvfb`, `webkit2gtk-driver`, `dunst` and `tauri-driver` (scripts/test installs
//! them).

use anyhow::{Context, bail, ensure};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tests::{Api, EdgeProcess, FAST_ENV, desktop_binary, seed_demo};

const WEBKIT_DRIVER: &str = "/usr/bin/WebKitWebDriver";
/// How long any awaited condition may take before the test fails (a bump alone waits
/// out the app's 4 s recall window).
const PATIENCE: Duration = Duration::from_secs(20);
/// The app's recall window (`desktop_ui::kitchen::RECALL_WINDOW_MS`; this crate cannot
/// depend on the app, whose tests depend on it).
const RECALL_WINDOW_MS: u64 = 4_000;
const POLL: Duration = Duration::from_millis(100);

/// A child in its own process group, stopped (TERM, then KILL) and reaped on drop.
struct Owned {
    child: Child,
    what: &'static str,
}

impl Owned {
    fn spawn(mut cmd: Command, what: &'static str) -> anyhow::Result<Self> {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        Ok(Self { child, what })
    }

    /// TERM to the leader first (tauri-driver, so it can end its session), then to
    /// the rest of its group, then KILL. The driver does not wait for WebKitWebDriver,
    /// so the test process is a subreaper (see `reap_adopted`).
    fn stop(&mut self) {
        let leader = self.child.id().to_string();
        let group = format!("-{leader}");
        let signal = |signal: &str, target: &str| {
            let _ = Command::new("kill")
                .args([signal, "--", target])
                .stderr(Stdio::null())
                .status();
        };
        for (sig, target) in [("-TERM", &leader), ("-KILL", &group)] {
            if let Ok(None) = self.child.try_wait() {
                signal(sig, target);
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    break;
                }
                std::thread::sleep(POLL);
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                // The leader is gone; the rest of its group follows, and those adopted
                // by this process are reaped here.
                signal("-TERM", &group);
                reap_group(self.child.id());
                return;
            }
        }
        eprintln!("{} did not stop", self.what);
        let _ = self.child.wait();
    }
}

/// Reaps this process's children in process group `pgid` (orphans adopted as the
/// subreaper keep their group) until none is left, for at most 10 s: PID 1 on these
/// machines reaps nothing.
fn reap_group(pgid: u32) {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    let Ok(pgid) = i32::try_from(pgid) else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match waitpid(
            nix::unistd::Pid::from_raw(-pgid),
            Some(WaitPidFlag::WNOHANG),
        ) {
            Ok(WaitStatus::StillAlive) => {
                if Instant::now() > deadline {
                    eprintln!("processes of group {pgid} did not exit");
                    return;
                }
                std::thread::sleep(POLL);
            }
            Ok(_) => {}
            // ECHILD: none left.
            Err(_) => return,
        }
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Xvfb on the first free display number from 90.
fn start_xvfb() -> anyhow::Result<(Owned, String)> {
    for n in 90..140 {
        let socket = PathBuf::from(format!("/tmp/.X11-unix/X{n}"));
        let lock = PathBuf::from(format!("/tmp/.X{n}-lock"));
        if socket.exists() || lock.exists() {
            continue;
        }
        let mut cmd = Command::new("Xvfb");
        cmd.args([
            &format!(":{n}"),
            "-screen",
            "0",
            "1280x800x24",
            "-nolisten",
            "tcp",
        ]);
        let mut xvfb = Owned::spawn(cmd, "Xvfb (apt-get install xvfb)")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if socket.exists() {
                return Ok((xvfb, format!(":{n}")));
            }
            if let Ok(Some(_)) = xvfb.child.try_wait() {
                break; // lost a race for this display: try the next one
            }
            std::thread::sleep(POLL);
        }
        xvfb.stop();
    }
    bail!("no free X display between :90 and :139")
}

/// A private D-Bus session bus for the app, on a socket in `dir`. Its notification
/// service is dunst, started by the bus on the first notification (D-Bus activation,
/// as on a desktop) and shown on `display`. Returns the bus and its address.
fn start_session_bus(dir: &Path, display: &str) -> anyhow::Result<(Owned, String)> {
    let socket = dir.join("bus");
    let address = format!("unix:path={}", socket.display());
    let mut cmd = Command::new("dbus-daemon");
    cmd.args(["--session", "--nofork", &format!("--address={address}")])
        .env("DISPLAY", display);
    let bus = Owned::spawn(cmd, "dbus-daemon (apt-get install dbus)")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        ensure!(Instant::now() < deadline, "the session bus did not start");
        std::thread::sleep(POLL);
    }
    Ok((bus, address))
}

/// Every notification the notification server was given so far, as (title, body):
/// displayed ones are closed first, so that all are in dunst's history.
fn notifications(bus: &str) -> anyhow::Result<Vec<(String, String)>> {
    let dunstctl = |args: &[&str]| -> anyhow::Result<Vec<u8>> {
        let out = Command::new("dunstctl")
            .args(args)
            .env("DBUS_SESSION_BUS_ADDRESS", bus)
            .output()
            .context("running dunstctl (apt-get install dunst)")?;
        ensure!(
            out.status.success(),
            "dunstctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(out.stdout)
    };
    dunstctl(&["close-all"])?;
    let history: Value = serde_json::from_slice(&dunstctl(&["history"])?)?;
    let text = |n: &Value, key: &str| n[key]["data"].as_str().unwrap_or_default().to_owned();
    Ok(history["data"][0]
        .as_array()
        .map(|all| {
            all.iter()
                .map(|n| (text(n, "summary"), text(n, "body")))
                .collect()
        })
        .unwrap_or_default())
}

/// Waits for a notification whose title or body contains `needle`.
async fn notified(bus: &str, needle: &str) -> anyhow::Result<(String, String)> {
    until(
        &format!("a desktop notification with {needle:?}"),
        || async {
            Ok(notifications(bus)?
                .into_iter()
                .find(|(title, body)| title.contains(needle) || body.contains(needle)))
        },
    )
    .await
}

/// Waits for the in-app toast announcing order `number`.
async fn new_order_toast(client: &Client, number: i64) -> anyhow::Result<()> {
    until(&format!("the toast of new order #{number}"), || async {
        for toast in client.find_all(Locator::Css(".toast.new")).await? {
            if toast
                .text()
                .await
                .unwrap_or_default()
                .contains(&format!("#{number}"))
            {
                return Ok(Some(()));
            }
        }
        Ok(None)
    })
    .await
}

/// Switches the app's desktop notifications with its checkbox and waits until the app
/// has stored the choice.
async fn switch_notifications(client: &Client, on: bool) -> anyhow::Result<()> {
    let toggle = client.find(Locator::Css("#notify-toggle")).await?;
    if toggle.prop("checked").await?.as_deref() != Some(if on { "true" } else { "false" }) {
        toggle.click().await?;
    }
    until("the notification switch to be stored", || async {
        let remembered = client
            .execute_async(
                "const done = arguments[arguments.length - 1];\n\
                 window.__TAURI__.core.invoke('remembered').then((r) => done(r.notifications));",
                vec![],
            )
            .await?;
        Ok((remembered == json!(on)).then_some(()))
    })
    .await
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn wait_for_http(url: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(res) = http.get(url).send().await
            && res.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{url} did not answer");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until `check` gives `Some`, up to `PATIENCE`.
async fn until<T, F, Fut>(what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The state shown on order `number`'s card. The board re-renders every second, so an
/// element found a moment ago may be gone: that counts as "not yet".
async fn card_state(client: &Client, number: i64) -> Option<String> {
    let css = format!(".card[data-number=\"{number}\"]");
    let card = first_match(client, &css).await?;
    card.attr("data-state").await.ok().flatten()
}

/// The first element matching `css` right now, if any: the board re-renders every
/// second, so an element found a moment ago may be gone.
async fn first_match(client: &Client, css: &str) -> Option<fantoccini::elements::Element> {
    client
        .find_all(Locator::Css(css))
        .await
        .ok()?
        .into_iter()
        .next()
}

/// Clicks the button of class `class` on order `number`'s card, retrying while the
/// board re-renders under the click.
async fn card_button(client: &Client, number: i64, class: &str) -> anyhow::Result<()> {
    let css = format!(".card[data-number=\"{number}\"] button.{class}");
    until(&css, || async {
        let Some(button) = first_match(client, &css).await else {
            return Ok(None);
        };
        Ok(button.click().await.ok())
    })
    .await
}

async fn wait_state(client: &Client, number: i64, state: &str) -> anyhow::Result<()> {
    until(&format!("order #{number} {state}"), || async {
        Ok((card_state(client, number).await.as_deref() == Some(state)).then_some(()))
    })
    .await
}

async fn place_order(api: &Api, student: u32, item_id: &str, key: &str) -> anyhow::Result<Value> {
    let token = api.student(student).await?;
    let res = api
        .http
        .post(format!("{}/api/student/orders", api.base))
        .bearer_auth(&token)
        .header("idempotency-key", key)
        .json(&json!({"lines": [{"item_id": item_id, "quantity": 2}], "payment_mode": "counter"}))
        .send()
        .await?;
    let status = res.status();
    let body: Value = res.json().await?;
    ensure!(status.is_success(), "placing an order: {status} {body}");
    Ok(body)
}

/// A dish that needs no options, preferring one with allergens (to see them shown).
async fn simple_dish(api: &Api, token: &str) -> anyhow::Result<String> {
    let items = api.staff_menu(token).await?;
    let simple: Vec<&Value> = items
        .iter()
        .filter(|i| i["available"] == true && i["archived"] != true)
        .filter(|i| {
            i["option_groups"].as_array().is_none_or(|g| {
                g.iter()
                    .all(|g| g["min_choices"].as_u64().unwrap_or(0) == 0)
            })
        })
        .collect();
    let pick = simple
        .iter()
        .find(|i| i["allergens"].as_array().is_some_and(|a| !a.is_empty()))
        .or(simple.first())
        .context("no dish without required options")?;
    Ok(pick["id"].as_str().unwrap_or_default().to_owned())
}

fn artifacts() -> anyhow::Result<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../artifacts");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn tauri_driver() -> PathBuf {
    if let Some(p) = std::env::var_os("TAURI_DRIVER_BIN") {
        return p.into();
    }
    let home_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .map(|c| c.join("bin/tauri-driver"));
    match home_bin {
        Some(p) if p.exists() => p,
        _ => PathBuf::from("tauri-driver"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_bump_an_order_to_ready_and_hand_it_over() -> anyhow::Result<()> {
    // Orphans of tauri-driver's tree become this process's children, to be reaped.
    nix::sys::prctl::set_child_subreaper(true)?;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("box");
    seed_demo(&data)?;
    let edge = EdgeProcess::serve(&data, FAST_ENV)?;
    let api = Api::new(&edge.base);
    let staff_token = api.staff("staff", "staff-pass").await?;
    let dish = simple_dish(&api, &staff_token).await?;

    let (xvfb, display) = start_xvfb()?;
    let (bus, bus_address) = start_session_bus(dir.path(), &display)?;
    let port = free_port()?;
    let native_port = free_port()?;
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home)?;
    let mut cmd = Command::new(tauri_driver());
    cmd.args([
        "--port",
        &port.to_string(),
        "--native-port",
        &native_port.to_string(),
        "--native-driver",
        WEBKIT_DRIVER,
    ])
    .env("DISPLAY", &display)
    .env("DBUS_SESSION_BUS_ADDRESS", &bus_address)
    // The app keeps its remembered box under the XDG config dir: a fresh one per run.
    .env("XDG_CONFIG_HOME", home.join("config"))
    .env("XDG_DATA_HOME", home.join("data"))
    .env("XDG_CACHE_HOME", home.join("cache"))
    .env("WEBKIT_DISABLE_COMPOSITING_MODE", "1")
    .env("LIBGL_ALWAYS_SOFTWARE", "1");
    let driver = Owned::spawn(cmd, "tauri-driver (cargo install tauri-driver)")?;
    let url = format!("http://127.0.0.1:{port}");
    wait_for_http(&format!("{url}/status")).await?;

    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), json!("wry"));
    caps.insert(
        "tauri:options".into(),
        json!({"application": desktop_binary()}),
    );
    let client = tokio::time::timeout(
        PATIENCE,
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&url),
    )
    .await
    .context("opening the app timed out")?
    .context("opening the app")?;

    let mut outcome = drive(&client, &api, &edge.base, &dish, &bus_address).await;
    if let Ok(order_id) = &outcome {
        // The box itself says the order was picked up.
        let (status, order) = api
            .get(&format!("/api/staff/orders/{order_id}"), Some(&staff_token))
            .await?;
        ensure!(status == 200, "reading the order: {status} {order}");
        assert_eq!(order["state"], "picked_up");
        // The box goes away: the terminal says so on the desktop, and why.
        edge.kill_9();
        outcome = notified(&bus_address, "连接中断")
            .await
            .map(|(_, body)| body);
    }
    if outcome.is_err() {
        if let Ok(png) = client.screenshot().await {
            let _ = std::fs::write(artifacts()?.join("desktop-failure.png"), png);
        }
    }
    let _ = tokio::time::timeout(PATIENCE, client.close()).await;
    drop(driver);
    drop(bus);
    drop(xvfb);
    let lost = outcome?;
    ensure!(
        lost.contains("新订单"),
        "the lost-link notification: {lost:?}"
    );
    Ok(())
}

/// The user's path through the app; returns the handed-over order's id.
async fn drive(
    client: &Client,
    api: &Api,
    base: &str,
    dish: &str,
    bus: &str,
) -> anyhow::Result<String> {
    // First start: no remembered box.
    let address = until("the login form", || async {
        Ok(client
            .find_all(Locator::Css("#address"))
            .await?
            .into_iter()
            .next())
    })
    .await?;
    address.send_keys(base).await?;
    client
        .find(Locator::Css("#username"))
        .await?
        .send_keys("staff")
        .await?;
    client
        .find(Locator::Css("#password"))
        .await?
        .send_keys("staff-pass")
        .await?;
    client
        .find(Locator::Css("#login-btn"))
        .await?
        .click()
        .await?;
    until("the kitchen display", || async {
        let main = client.find(Locator::Css("#main-view")).await?;
        Ok(main.is_displayed().await?.then_some(()))
    })
    .await?;

    // Orders placed by students appear live.
    let first = place_order(api, 1, dish, "desktop-e2e-1").await?;
    let number = first["pickup_number"].as_i64().context("pickup number")?;
    let order_id = first["id"].as_str().context("order id")?.to_owned();
    wait_state(client, number, "placed").await?;
    // It was announced (in-app toast; the chime is not observable here), and the
    // status bar shows the live link to the box.
    new_order_toast(client, number).await?;
    let lan = client.find(Locator::Css("#lan-status")).await?;
    ensure!(
        lan.attr("class").await?.as_deref() == Some("ok"),
        "status bar: {:?}",
        lan.text().await?
    );
    // It was also raised on the desktop, in the terminal's language (Chinese at first
    // start).
    let (title, _) = notified(bus, &format!("#{number}")).await?;
    ensure!(
        title == "新订单",
        "the new-order notification's title: {title:?}"
    );

    // Switched off, the next order is toasted and chimed but not notified.
    switch_notifications(client, false).await?;
    let second = place_order(api, 2, dish, "desktop-e2e-2").await?;
    let second_number = second["pickup_number"].as_i64().context("pickup number")?;
    wait_state(client, second_number, "placed").await?;
    new_order_toast(client, second_number).await?;
    // The notification would have been raised before the toast; give it a second.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let raised = notifications(bus)?;
    ensure!(
        !raised
            .iter()
            .any(|(_, body)| body.contains(&format!("#{second_number}"))),
        "notified while switched off: {raised:?}"
    );
    switch_notifications(client, true).await?;

    // The card lists the dish's allergens, in the display language.
    let staff_token = api.staff("staff", "staff-pass").await?;
    let tags: Vec<Value> = api
        .staff_menu(&staff_token)
        .await?
        .into_iter()
        .find(|i| i["id"] == dish)
        .context("the dish")?["allergens"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    ensure!(!tags.is_empty(), "the demo dish shown has allergens");
    // The board re-renders every second: a card found a moment ago may be gone.
    let allergens = format!(".card[data-number=\"{number}\"] .allergens");
    let shown = until("the card's allergens", || async {
        let Some(el) = first_match(client, &allergens).await else {
            return Ok(None);
        };
        Ok(el.text().await.ok())
    })
    .await?;
    for tag in &tags {
        let label = client
            .execute("return allergenName(arguments[0]);", vec![tag.clone()])
            .await?;
        let label = label.as_str().unwrap_or_default().to_owned();
        ensure!(
            !label.is_empty()
                && label != tag.as_str().unwrap_or_default()
                && shown.contains(&label),
            "allergen {tag} shown as {label:?} on the card: {shown:?}"
        );
    }

    // A bump can be recalled within its window: nothing reaches the box, even after
    // the window has passed.
    card_button(client, number, "bump").await?;
    card_button(client, number, "recall").await?;
    tokio::time::sleep(Duration::from_millis(RECALL_WINDOW_MS + 2_000)).await;
    let (status, still) = api
        .get(&format!("/api/staff/orders/{order_id}"), Some(&staff_token))
        .await?;
    ensure!(
        status == 200 && still["state"] == "placed" && still["version"] == 1,
        "a recalled bump reached the box: {status} {still}"
    );
    wait_state(client, number, "placed").await?;
    card_button(client, number, "bump").await?;
    wait_state(client, number, "paid").await?;
    card_button(client, number, "bump").await?;
    wait_state(client, number, "preparing").await?;
    card_button(client, second_number, "bump").await?;
    card_button(client, number, "bump").await?;
    wait_state(client, number, "ready").await?;
    wait_state(client, second_number, "paid").await?;

    // The ready order sits in the ready column.
    let in_ready = client
        .find_all(Locator::Css(&format!(
            "[data-column=\"ready\"] .card[data-number=\"{number}\"]"
        )))
        .await?;
    ensure!(
        in_ready.len() == 1,
        "order #{number} is not in the ready column"
    );
    let png = client.screenshot().await?;
    std::fs::write(artifacts()?.join("desktop-kitchen.png"), png)?;

    // Hand-over by pickup number; a second try says it was already picked up.
    client
        .find(Locator::Css("#tab-handover"))
        .await?
        .click()
        .await?;
    for expected in ["ok", "error"] {
        let field = client.find(Locator::Css("#pickup-code")).await?;
        field.send_keys(&number.to_string()).await?;
        client
            .find(Locator::Css("#pickup-btn"))
            .await?
            .click()
            .await?;
        let text = until("the hand-over result", || async {
            let Ok(out) = client.find(Locator::Css("#pickup-result")).await else {
                return Ok(None);
            };
            let (Ok(class), Ok(text)) = (out.attr("class").await, out.text().await) else {
                return Ok(None);
            };
            let class = class.unwrap_or_default();
            Ok((class == expected && !text.is_empty()).then_some(text))
        })
        .await?;
        if expected == "ok" {
            ensure!(
                text.contains(&format!("#{number}")),
                "hand-over said {text:?}"
            );
            // Clear the result so the second answer is a fresh one.
            client
                .execute(
                    "document.querySelector('#pickup-result').className = ''",
                    vec![],
                )
                .await?;
        } else {
            ensure!(
                text.contains("已经取过") || text.contains("already picked up"),
                "second hand-over said {text:?}"
            );
        }
    }

    // The other tabs render from the box: stock (one row per dish), the day summary
    // (two orders), and for a manager the menu editor. (Screenshots of these table
    // pages take WebKitWebDriver 5-10 s each under Xvfb, so only the menu is kept.)
    client
        .find(Locator::Css("#tab-stock"))
        .await?
        .click()
        .await?;
    until("the stock rows", || async {
        Ok((!client
            .find_all(Locator::Css("#stock-rows tr"))
            .await?
            .is_empty())
        .then_some(()))
    })
    .await?;
    client
        .find(Locator::Css("#tab-summary"))
        .await?
        .click()
        .await?;
    // Two orders, both paid (one handed over), nothing refunded or lost: the figures
    // exactly, as the summary's list shows them.
    let revenue =
        first["total_fen"].as_i64().unwrap_or(0) + second["total_fen"].as_i64().unwrap_or(0);
    let expected: Vec<String> = vec![
        "2".into(),
        format!("¥{}.{:02}", revenue / 100, revenue % 100),
        "¥0.00".into(),
        "0".into(),
        "0".into(),
        "0".into(),
    ];
    until("the day summary", || async {
        let mut figures = Vec::new();
        for dd in client.find_all(Locator::Css("#summary dd")).await? {
            figures.push(dd.text().await?);
        }
        Ok((figures == expected).then_some(()))
    })
    .await
    .with_context(|| format!("the summary should read {expected:?}"))?;
    client
        .find(Locator::Css("#logout-btn"))
        .await?
        .click()
        .await?;
    let user = until("the login form again", || async {
        let field = client.find(Locator::Css("#username")).await?;
        Ok(field.is_displayed().await?.then_some(field))
    })
    .await?;
    // The box is remembered; the user name is replaced.
    let remembered = client
        .find(Locator::Css("#address"))
        .await?
        .prop("value")
        .await?
        .unwrap_or_default();
    ensure!(remembered == base, "remembered address {remembered:?}");
    user.clear().await?;
    user.send_keys("manager").await?;
    client
        .find(Locator::Css("#password"))
        .await?
        .send_keys("manager-pass")
        .await?;
    client
        .find(Locator::Css("#login-btn"))
        .await?
        .click()
        .await?;
    until("the menu tab", || async {
        let tab = client.find(Locator::Css("#tab-menu")).await?;
        Ok(tab.is_displayed().await?.then_some(tab))
    })
    .await?
    .click()
    .await?;
    until("the menu rows", || async {
        Ok((!client
            .find_all(Locator::Css("#menu-rows tr"))
            .await?
            .is_empty())
        .then_some(()))
    })
    .await?;
    std::fs::write(
        artifacts()?.join("desktop-menu.png"),
        client.screenshot().await?,
    )?;

    // A student holding unpaid orders: blocked at the counter with a reason, which
    // cancels those orders; the box then refuses the student's next order.
    let hoard = place_order(api, 3, dish, "hoard-1").await?;
    // Notifications are on again (and stay so across logins).
    notified(bus, &format!("#{}", hoard["pickup_number"])).await?;
    client
        .find(Locator::Css("#tab-handover"))
        .await?
        .click()
        .await?;
    client
        .find(Locator::Css("#student-number"))
        .await?
        .send_keys("2024003")
        .await?;
    client
        .find(Locator::Css("#block-reason"))
        .await?
        .send_keys("kept portions unpaid")
        .await?;
    client
        .find(Locator::Css("#block-btn"))
        .await?
        .click()
        .await?;
    let (class, said) = until("the block's result", || async {
        let out = client.find(Locator::Css("#student-result")).await?;
        let class = out.attr("class").await?.unwrap_or_default();
        let text = out.text().await?;
        Ok((!class.is_empty() && !text.is_empty()).then_some((class, text)))
    })
    .await?;
    ensure!(
        class == "ok" && said.contains("2024003"),
        "the block said {said:?} ({class})"
    );
    let token = api.student(3).await?;
    let (status, order) = api
        .get(
            &format!(
                "/api/student/orders/{}",
                hoard["id"].as_str().unwrap_or_default()
            ),
            Some(&token),
        )
        .await?;
    ensure!(
        status == 200 && order["state"] == "cancelled",
        "the unpaid order: {status} {order}"
    );
    let (status, refused) = api
        .post(
            "/api/student/orders",
            Some(&token),
            &json!({"lines": [{"item_id": dish, "quantity": 1}], "payment_mode": "counter"}),
        )
        .await?;
    ensure!(
        status == 403 && refused["error"]["code"] == "account_blocked",
        "a blocked student's order: {status} {refused}"
    );

    // Promises on the kitchen display: a student's promise slips while they take
    // their time to pay and three orders placed after theirs are paid first; once
    // paid, the card shows the promise and by how many minutes it is running late.
    let slipping = place_order(api, 4, dish, "late-1").await?;
    let slipping_number = slipping["pickup_number"]
        .as_i64()
        .context("pickup number")?;
    let promised = slipping["ready_promised_at"].clone();
    ensure!(promised.is_string(), "a promise on placing: {slipping}");
    for student in 5..=7 {
        let ahead = place_order(api, student, dish, &format!("ahead-{student}")).await?;
        api.transition(&staff_token, &ahead, "pay")
            .await
            .context("paying an order ahead")?;
    }
    api.transition(&staff_token, &slipping, "pay")
        .await
        .context("paying the slipping order")?;
    client
        .find(Locator::Css("#tab-kitchen"))
        .await?
        .click()
        .await?;
    let card = format!(".card[data-number=\"{slipping_number}\"]");
    let late: i64 = until("the late badge", || async {
        let Some(badge) = client
            .find_all(Locator::Css(&format!("{card} .badge.late")))
            .await
            .ok()
            .and_then(|found| found.into_iter().next())
        else {
            return Ok(None);
        };
        // The board re-renders every second: an element gone stale counts as "not yet".
        Ok(badge
            .attr("data-late")
            .await
            .ok()
            .flatten()
            .and_then(|m| m.parse::<i64>().ok()))
    })
    .await?;
    let (_, queue) = api.get("/api/staff/orders", Some(&staff_token)).await?;
    let shown = queue
        .as_array()
        .and_then(|q| q.iter().find(|o| o["id"] == slipping["id"]))
        .context("the slipping order in the queue")?;
    let estimate: chrono::DateTime<chrono::Utc> = shown["ready_estimate"]
        .as_str()
        .unwrap_or_default()
        .parse()?;
    let promise: chrono::DateTime<chrono::Utc> = promised.as_str().unwrap_or_default().parse()?;
    let behind = (estimate - promise).num_minutes();
    ensure!(
        late >= 5 && (late - behind).abs() <= 1,
        "the card says {late} min late; the box's estimate is {behind} min past the promise"
    );
    let expected_time = client
        .execute("return hhmm(arguments[0]);", vec![promised])
        .await?;
    let expected_time = expected_time.as_str().unwrap_or("?").to_owned();
    until(
        &format!("the promise {expected_time} on the card"),
        || async {
            let Some(line) = client
                .find_all(Locator::Css(&format!("{card} .promise")))
                .await
                .ok()
                .and_then(|found| found.into_iter().next())
            else {
                return Ok(None);
            };
            Ok(line
                .text()
                .await
                .ok()
                .filter(|text| text.contains(&expected_time)))
        },
    )
    .await?;
    std::fs::write(
        artifacts()?.join("desktop-late.png"),
        client.screenshot().await?,
    )?;
    Ok(order_id)
}
