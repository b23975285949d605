//! A throwaway PostgreSQL server for tests and benchmarks: Debian's `postgresql`
//! binaries, a temporary data directory, a loopback port; as the `postgres` user
//! (`runuser`) when run as root, since PostgreSQL refuses to run as root. The server
//! stops and its directory goes when the value is dropped, and, should the process die
//! first, when a small watchdog sees it gone.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub struct PgServer {
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
    as_postgres: bool,
}

/// The newest `/usr/lib/postgresql/<version>/bin` (or `PG_BIN_DIR`).
fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL is not installed (/usr/lib/postgresql); the test command installs Debian's postgresql")?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .context("no PostgreSQL server binaries under /usr/lib/postgresql")
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl PgServer {
    /// Starts a server on 127.0.0.1 and returns once it accepts connections.
    pub fn start() -> anyhow::Result<Self> {
        let bin = bin_dir()?;
        let as_postgres = nix::unistd::Uid::effective().is_root();
        let dir = tempfile::Builder::new()
            .prefix("canteen-pg-")
            .tempdir()?
            .keep();
        let mut server = Self {
            dir,
            bin,
            port: 0,
            as_postgres,
        };
        if as_postgres {
            let status = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&server.dir)
                .status()?;
            if !status.success() {
                bail!("chown postgres {} failed", server.dir.display());
            }
        }
        server.watchdog()?;
        let data = server.dir.join("data");
        server.run(
            "initdb",
            &[
                "-D",
                path_str(&data)?,
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        )?;
        // A port that was free a moment ago may be taken by now: try a few.
        let mut last = None;
        for _ in 0..5 {
            let port = free_port()?;
            let options = format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300 \
                 -c shared_buffers=128MB",
                path_str(&server.dir)?
            );
            let log = server.dir.join("server.log");
            match server.run(
                "pg_ctl",
                &[
                    "-D",
                    path_str(&data)?,
                    "-l",
                    path_str(&log)?,
                    "-o",
                    &options,
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
            ) {
                Ok(()) => {
                    server.port = port;
                    return Ok(server);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("PostgreSQL did not start")))
    }

    fn run(&self, tool: &str, args: &[&str]) -> anyhow::Result<()> {
        let program = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let out = cmd
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", program.display()))?;
        if !out.status.success() {
            let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
            bail!(
                "{tool} failed: {}{}\n{log}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Stops the server and removes its directory when this process ends, however it
    /// ends (a test that panics, or is killed, leaves no server behind).
    fn watchdog(&self) -> anyhow::Result<()> {
        let stop = if self.as_postgres {
            "runuser -u postgres -- \"$2/pg_ctl\""
        } else {
            "\"$2/pg_ctl\""
        };
        let script = format!(
            "while kill -0 \"$0\" 2>/dev/null; do sleep 1; done; \
             {stop} -D \"$1/data\" -m immediate stop >/dev/null 2>&1; rm -rf \"$1\""
        );
        Command::new("sh")
            .args(["-c", &script])
            .arg(std::process::id().to_string())
            .arg(&self.dir)
            .arg(&self.bin)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the PostgreSQL watchdog")?;
        Ok(())
    }

    /// The URL of database `db` as the superuser.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates a new, empty database and returns its URL.
    pub fn fresh_database(&self) -> anyhow::Result<String> {
        let name = format!("t_{}", crate::cloud::store::new_incarnation());
        self.execute(&format!("CREATE DATABASE {name}"))?;
        Ok(self.url(&name))
    }

    /// Runs `sql` as the superuser in the `postgres` database.
    pub fn execute(&self, sql: &str) -> anyhow::Result<()> {
        let url = self.url("postgres");
        let sql = sql.to_owned();
        // On a thread of its own: callers may be inside a runtime already.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let (client, connection) =
                    tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
                let driver = tokio::spawn(connection);
                client.batch_execute(&sql).await?;
                drop(client);
                let _ = driver.await;
                Ok::<_, anyhow::Error>(())
            })
        })
        .join()
        .map_err(|_| anyhow::anyhow!("a statement's thread panicked"))?
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        if let Some(data) = data.to_str() {
            let _ = self.run("pg_ctl", &["-D", data, "-m", "immediate", "stop"]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn path_str(p: &Path) -> anyhow::Result<&str> {
    p.to_str().context("a non-UTF-8 temporary path")
}

/// One server for a whole test process, started on first use (tests that share it
/// each take a database of their own: [`PgServer::fresh_database`]).
pub fn shared() -> &'static PgServer {
    static SERVER: std::sync::OnceLock<PgServer> = std::sync::OnceLock::new();
    SERVER.get_or_init(|| match PgServer::start() {
        Ok(s) => s,
        Err(e) => panic!("this test needs PostgreSQL and could not start it: {e:#}"),
    })
}
