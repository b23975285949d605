//! A headless Chromium driven through chromedriver (fantoccini), for the tests that
//! use pages as people do: the students' page and the campus console.
//!
//! Needs Debian's `chromium` and `chromium-driver` (scripts/test installs them).

use anyhow::{Context, bail, ensure};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long any awaited condition may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(15);
pub const POLL: Duration = Duration::from_millis(50);

/// chromedriver on a free loopback port, in its own process group so that a failed
/// test can still take down the browsers it started.
pub struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    pub async fn start() -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .with_context(|| {
                format!("starting {CHROMEDRIVER} (apt-get install chromium-driver)")
            })?;
        let driver = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(res) = http.get(format!("{}/status", driver.url)).send().await
                && res.status().is_success()
            {
                return Ok(driver);
            }
            if Instant::now() > deadline {
                bail!("chromedriver did not answer on {}", driver.url);
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Driver {
    /// Asks chromedriver to exit (after the session ended) and reaps it.
    pub async fn shutdown(&mut self) {
        let _ = reqwest::get(format!("{}/shutdown", self.url)).await;
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The session was closed already on every path that returns; this is for a
        // panic midway. The group holds chromedriver and the browsers it started.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

/// One browser session on a fresh profile, with a server to talk to.
pub struct Browser {
    pub client: Client,
    pub base: String,
    driver: Driver,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// A window of `width` × `height` (below 500 wide: a phone, emulated).
    pub async fn open(base: &str, (width, height): (u32, u32)) -> anyhow::Result<Self> {
        let driver = Driver::start().await?;
        let profile = tempfile::tempdir()?;
        let args = vec![
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-quic".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--lang=en-US".to_owned(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        let mut options = json!({
            "binary": CHROMIUM,
            "args": args,
            "prefs": {"intl": {"accept_languages": "en-US,en"}},
        });
        if width < 500 {
            // Headless windows have a minimum width; emulation sets a phone's viewport
            // itself, at a phone's pixel density.
            options["mobileEmulation"] =
                json!({"deviceMetrics": {"width": width, "height": height, "pixelRatio": 2.0}});
        }
        caps.insert("goog:chromeOptions".into(), options);
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&driver.url)
            .await
            .context("opening a Chromium session")?;
        Ok(Self {
            client,
            base: base.to_owned(),
            driver,
            _profile: profile,
        })
    }

    /// Ends the browser session (chromedriver stops and reaps Chromium), then the driver.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        self.driver.shutdown().await;
    }

    pub async fn goto(&self, path: &str) -> anyhow::Result<()> {
        self.client.goto(&format!("{}{path}", self.base)).await?;
        Ok(())
    }

    pub async fn js(&self, script: &str) -> anyhow::Result<Value> {
        Ok(self.client.execute(script, vec![]).await?)
    }

    /// Polls a script until it returns something truthy; returns that value.
    pub async fn wait(&self, what: &str, script: &str) -> anyhow::Result<Value> {
        self.wait_at_most(what, script, PATIENCE).await
    }

    pub async fn wait_at_most(
        &self,
        what: &str,
        script: &str,
        limit: Duration,
    ) -> anyhow::Result<Value> {
        let deadline = Instant::now() + limit;
        let mut last: Value;
        loop {
            match self.js(script).await {
                Ok(v) if !matches!(&v, Value::Null | Value::Bool(false)) && v != json!("") => {
                    return Ok(v);
                }
                Ok(v) => last = v,
                Err(e) => last = json!(e.to_string()),
            }
            if Instant::now() > deadline {
                let alert = self
                    .js("var a = document.getElementById('alert'); return a ? a.textContent : null")
                    .await
                    .unwrap_or_default();
                bail!("timed out after {limit:?} waiting for {what}; last {last}; alert {alert}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let tried = async {
                let el = self.client.find(Locator::Css(css)).await?;
                // A thumb scrolls what it wants to the middle, clear of the tab bar.
                self.client
                    .execute(
                        "arguments[0].scrollIntoView({block: 'center'})",
                        vec![serde_json::to_value(&el)?],
                    )
                    .await?;
                el.click().await
            }
            .await;
            match tried {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() > deadline => bail!("clicking {css}: {e}"),
                Err(_) => tokio::time::sleep(POLL).await,
            }
        }
    }

    pub async fn type_into(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let el = self.client.find(Locator::Css(css)).await?;
        el.clear().await?;
        el.send_keys(text).await?;
        Ok(())
    }

    pub async fn text(&self, css: &str) -> anyhow::Result<String> {
        let v = self
            .js(&format!(
                "var e = document.querySelector({}); return e ? e.textContent.trim() : null",
                json!(css)
            ))
            .await?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    /// Fails when the page is wider than the screen (sideways scrolling).
    pub async fn fits_width(&self, what: &str) -> anyhow::Result<()> {
        let sizes = self
            .js("return [document.documentElement.scrollWidth, window.innerWidth]")
            .await?;
        ensure!(
            sizes[0].as_u64() <= sizes[1].as_u64(),
            "{what} overflows: {sizes}"
        );
        Ok(())
    }

    /// A PNG of the window, scrolled to the top, in `artifacts/`.
    pub async fn screenshot(&self, name: &str) -> anyhow::Result<PathBuf> {
        self.js("window.scrollTo(0, 0); document.activeElement.blur(); return true")
            .await?;
        let path = artifacts()?.join(name);
        std::fs::write(&path, self.client.screenshot().await?)?;
        Ok(path)
    }
}

/// `artifacts/` at the repository root (gitignored).
pub fn artifacts() -> anyhow::Result<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../artifacts");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
