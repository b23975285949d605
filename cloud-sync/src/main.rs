use anyhow::Context;
use clap::{Parser, Subcommand};
use cloud_sync::cloud::admins::{self, Role};
use cloud_sync::cloud::auth::AdminOptions;
use cloud_sync::cloud::{admin, listener, server, store::CloudStore};
use cloud_sync::identity;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

mod demo;

#[derive(Parser)]
#[command(
    name = "cloud-sync",
    version,
    about = "The campus cloud: enrols canteen boxes and aggregates their sync."
)]
struct Cli {
    /// Log format on stderr: text (colour only on a terminal) or json (one object a
    /// line, for the journal and log shippers).
    #[arg(long, env = "CLOUD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    /// The cloud's database on PostgreSQL (`postgres://user:password@host:port/db`),
    /// shared by every replica; without it, SQLite in the data directory.
    #[arg(
        long,
        env = "CLOUD_DATABASE_URL",
        global = true,
        hide_env_values = true
    )]
    database_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// A campus on this machine for a first look: a cloud and three canteen boxes on
    /// loopback, each with a generated day of orders (yesterday), syncing over QUIC;
    /// the console at --admin-listen. A second run serves the same campus again.
    Demo {
        /// Where the campus lives (created on the first run).
        #[arg(long, default_value = "campus-demo")]
        dir: PathBuf,
        /// The console's address (loopback only).
        #[arg(long, default_value = "127.0.0.1:8090")]
        admin_listen: SocketAddr,
        /// The `edge-node` binary (default: next to this one, then on the PATH).
        #[arg(long, env = "EDGE_NODE_BIN")]
        edge_node: Option<PathBuf>,
        /// The third canteen's box starts unlinked and links after this many seconds
        /// (0: at once).
        #[arg(long, default_value_t = 90)]
        offline_seconds: u64,
    },
    /// The campus admins who use the console and the admin API.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// The campus certificate authority.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Writes a certificate and key for one box (offline), plus the CA certificate.
    Enroll {
        /// The box's node id: lowercase letters, digits, dashes.
        #[arg(long)]
        node_id: String,
        /// Directory of the campus CA.
        #[arg(long, env = "CLOUD_CA_DIR", default_value = "ca")]
        ca_dir: PathBuf,
        /// Where to write <node id>.pem, <node id>.key and ca.pem.
        #[arg(long)]
        out: PathBuf,
        /// Also issue the box's staff HTTPS certificate (<node id>-https.pem / .key)
        /// for this host name or IP address, as the staff app reaches the box
        /// (repeat for several).
        #[arg(long = "https-name")]
        https_names: Vec<String>,
        /// Days the certificates are valid (renew by enrolling again before then).
        #[arg(long, default_value_t = 365)]
        valid_days: u64,
    },
    /// Renews the certificates of an enrolled box in place (before they expire): a new
    /// node certificate and, if the box has one, a new staff HTTPS certificate for the
    /// same names. Copy the directory to the box and restart it.
    Renew {
        #[arg(long)]
        node_id: String,
        /// Directory of the campus CA.
        #[arg(long, env = "CLOUD_CA_DIR", default_value = "ca")]
        ca_dir: PathBuf,
        /// The box's enrolment directory (where `enroll --out` wrote it).
        #[arg(long)]
        dir: PathBuf,
        /// Days the new certificates are valid.
        #[arg(long, default_value_t = 365)]
        valid_days: u64,
    },
    /// Revokes every certificate of a box issued up to now (a stolen or retired box):
    /// the cloud refuses it at the next handshake. Enrol the box again to readmit it.
    Revoke {
        #[arg(long)]
        node_id: String,
        /// Directory of the cloud's database.
        #[arg(long, env = "CLOUD_DATA_DIR", default_value = "cloud-data")]
        data_dir: PathBuf,
    },
    /// Writes a consistent copy of the cloud's database while it serves.
    Backup {
        /// The backup file to create.
        path: PathBuf,
        #[arg(long, env = "CLOUD_DATA_DIR", default_value = "cloud-data")]
        data_dir: PathBuf,
    },
    /// Restores a backup into a data directory that holds no database yet. The
    /// restored cloud is a new incarnation: boxes re-fill it from their outboxes and
    /// fetch their accounts and documents again.
    Restore {
        /// The backup file.
        backup: PathBuf,
        #[arg(long, env = "CLOUD_DATA_DIR", default_value = "cloud-data")]
        data_dir: PathBuf,
    },
    /// Health check of a serving cloud on this machine (a container's HEALTHCHECK):
    /// exits 0 when its console listener accepts a connection within 3 s, 1 otherwise.
    Probe {
        /// The console's listen address (0.0.0.0 is asked on 127.0.0.1).
        #[arg(long, env = "CLOUD_ADMIN_LISTEN", default_value = "127.0.0.1:8480")]
        admin_listen: SocketAddr,
    },
    /// Accepts boxes over QUIC and serves the admin API until SIGINT/SIGTERM.
    Serve {
        /// Directory of the cloud's database.
        #[arg(long, env = "CLOUD_DATA_DIR", default_value = "cloud-data")]
        data_dir: PathBuf,
        /// Directory with ca.pem, cloud.pem and cloud.key.
        #[arg(long, env = "CLOUD_CA_DIR", default_value = "ca")]
        ca_dir: PathBuf,
        /// UDP address for QUIC.
        #[arg(long, env = "CLOUD_LISTEN", default_value = "0.0.0.0:4433")]
        listen: SocketAddr,
        /// TCP address of the console and the admin API. Anything but loopback needs
        /// --admin-tls-cert and --admin-tls-key.
        #[arg(long, env = "CLOUD_ADMIN_LISTEN", default_value = "127.0.0.1:8480")]
        admin_listen: SocketAddr,
        /// Certificate (PEM chain) of the admin listener, e.g. from `cloud-sync enroll
        /// --https-name <the console's host name>`.
        #[arg(long, env = "CLOUD_ADMIN_TLS_CERT", requires = "admin_tls_key")]
        admin_tls_cert: Option<PathBuf>,
        /// Its private key (PEM).
        #[arg(long, env = "CLOUD_ADMIN_TLS_KEY", requires = "admin_tls_cert")]
        admin_tls_key: Option<PathBuf>,
        /// Minutes an admin's login lasts.
        #[arg(long, env = "CLOUD_ADMIN_SESSION_MINUTES", default_value_t = 480,
              value_parser = clap::value_parser!(u64).range(1..=10_080))]
        admin_session_minutes: u64,
        /// A box not seen for this many seconds during its opening hours raises an
        /// alert on the fleet page.
        #[arg(long, env = "CLOUD_ALERT_SILENT_SECONDS", default_value_t = 600,
              value_parser = clap::value_parser!(u64).range(1..=86_400))]
        alert_silent_seconds: u64,
        /// A box whose oldest event waiting to be sent is this many seconds old raises
        /// an "outbox not draining" alert.
        #[arg(long, env = "CLOUD_ALERT_OUTBOX_SECONDS", default_value_t = 300,
              value_parser = clap::value_parser!(u64).range(1..=86_400))]
        alert_outbox_seconds: u64,
        /// A box whose clock is off the cloud's by this many seconds raises an alert.
        #[arg(long, env = "CLOUD_ALERT_CLOCK_SECONDS", default_value_t = 120,
              value_parser = clap::value_parser!(u64).range(1..=86_400))]
        alert_clock_seconds: u64,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Creates an admin account, or sets an existing one's role, canteens and password
    /// (reactivating it). The password comes from --password, CLOUD_ADMIN_PASSWORD, or
    /// the first line of standard input.
    Add {
        #[arg(long)]
        username: String,
        #[arg(long, value_enum)]
        role: Role,
        /// A canteen (node id) a canteen_manager runs; repeat for several.
        #[arg(long = "canteen")]
        canteens: Vec<String>,
        #[arg(long, env = "CLOUD_ADMIN_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        #[arg(long, env = "CLOUD_DATA_DIR", default_value = "cloud-data")]
        data_dir: PathBuf,
    },
    /// Deactivates an admin account: its sessions end at once.
    Deactivate {
        #[arg(long)]
        username: String,
        #[arg(long, env = "CLOUD_DATA_DIR", default_value = "cloud-data")]
        data_dir: PathBuf,
    },
    /// Lists the admin accounts.
    List {
        #[arg(long, env = "CLOUD_DATA_DIR", default_value = "cloud-data")]
        data_dir: PathBuf,
    },
    /// Prints a bearer token of an admin for scripts (like a login; audited).
    Token {
        #[arg(long)]
        username: String,
        /// Hours the token lasts.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=720))]
        hours: u64,
        #[arg(long, env = "CLOUD_DATA_DIR", default_value = "cloud-data")]
        data_dir: PathBuf,
    },
}

/// Opens the cloud's database: PostgreSQL at `database_url`, else SQLite in
/// `data_dir` (creating both if needed).
fn open_store(
    database_url: Option<&str>,
    data_dir: &std::path::Path,
) -> anyhow::Result<CloudStore> {
    if let Some(url) = database_url {
        return Ok(CloudStore::open_postgres(url)?);
    }
    std::fs::create_dir_all(data_dir)?;
    Ok(CloudStore::open(&data_dir.join("cloud.db"))?)
}

/// Backups and restores of a PostgreSQL store are PostgreSQL's own.
fn sqlite_only(database_url: Option<&str>, what: &str) -> anyhow::Result<()> {
    if database_url.is_some() {
        anyhow::bail!(
            "{what} works on the SQLite store; on PostgreSQL use pg_dump / pg_restore or the \
             service's point-in-time recovery; see deploy/OPERATIONS.md"
        );
    }
    Ok(())
}

fn admin_command(url: Option<&str>, command: AdminCommand) -> anyhow::Result<()> {
    let now = cloud_sync::cloud::auth::now_ms();
    match command {
        AdminCommand::Add {
            username,
            role,
            canteens,
            password,
            data_dir,
        } => {
            admins::check_username(&username).map_err(anyhow::Error::msg)?;
            for c in &canteens {
                identity::check_node_id(c)?;
            }
            if role == Role::CanteenManager && canteens.is_empty() {
                anyhow::bail!("a canteen_manager needs at least one --canteen");
            }
            if role != Role::CanteenManager && !canteens.is_empty() {
                anyhow::bail!(
                    "--canteen is for canteen_manager accounts; {} sees every canteen",
                    role.as_str()
                );
            }
            let password = match password {
                Some(p) => p,
                None => {
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line)?;
                    line.trim_end_matches(['\r', '\n']).to_owned()
                }
            };
            let hash = admins::hash_password(&password).map_err(anyhow::Error::msg)?;
            let store = open_store(url, &data_dir)?;
            store.admin_upsert(&username, role, &canteens, &hash, now)?;
            store.audit_append(
                now,
                "(shell)",
                "admin.add",
                &canteens,
                "ok",
                &format!("{username} as {}", role.as_str()),
            )?;
            println!("admin {username} ({}) saved", role.as_str());
        }
        AdminCommand::Deactivate { username, data_dir } => {
            let store = open_store(url, &data_dir)?;
            if !store.admin_set_active(&username, false)? {
                anyhow::bail!("no admin named {username}");
            }
            store.audit_append(now, "(shell)", "admin.deactivate", &[], "ok", &username)?;
            println!("admin {username} deactivated; their sessions have ended");
        }
        AdminCommand::List { data_dir } => {
            for a in open_store(url, &data_dir)?.admins()? {
                println!(
                    "{}\t{}\t{}\t{}",
                    a.username,
                    a.role.as_str(),
                    if a.active { "active" } else { "inactive" },
                    a.canteens.join(",")
                );
            }
        }
        AdminCommand::Token {
            username,
            hours,
            data_dir,
        } => {
            let store = open_store(url, &data_dir)?;
            if !store
                .admins()?
                .iter()
                .any(|a| a.username == username && a.active)
            {
                anyhow::bail!("no active admin named {username}");
            }
            let token = store.session_open(&username, now, (hours * 3_600_000) as i64)?;
            store.audit_append(
                now,
                &username,
                "token",
                &[],
                "ok",
                &format!("from the shell, {hours} h"),
            )?;
            println!("{token}");
        }
    }
    Ok(())
}

#[derive(Subcommand)]
enum CaCommand {
    /// Creates the campus CA and the cloud's certificate in DIR.
    Init {
        #[arg(long, default_value = "ca")]
        dir: PathBuf,
        /// The name boxes will expect on the cloud's certificate.
        #[arg(long, default_value = identity::DEFAULT_CLOUD_NAME)]
        cloud_name: String,
    },
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CLOUD_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr);
    let _ = match cli.log_format {
        // Colour only for a person at a terminal: log files and the journal get text.
        LogFormat::Text => fmt
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => fmt.json().try_init(),
    };
    let url = cli.database_url.as_deref();
    match cli.command {
        Command::Ca {
            command: CaCommand::Init { dir, cloud_name },
        } => {
            identity::ca_init(&dir, &cloud_name)?;
            println!(
                "campus CA and the certificate of {cloud_name:?} written to {}",
                dir.display()
            );
        }
        Command::Enroll {
            node_id,
            ca_dir,
            out,
            https_names,
            valid_days,
        } => {
            if valid_days == 0 {
                anyhow::bail!("--valid-days must be at least 1");
            }
            identity::enroll_for(
                &ca_dir,
                &node_id,
                &out,
                &https_names,
                std::time::Duration::from_secs(valid_days.saturating_mul(86_400)),
            )?;
            println!("certificate for {node_id} written to {}", out.display());
        }
        Command::Renew {
            node_id,
            ca_dir,
            dir,
            valid_days,
        } => {
            if valid_days == 0 {
                anyhow::bail!("--valid-days must be at least 1");
            }
            let names = identity::renew(
                &ca_dir,
                &node_id,
                &dir,
                std::time::Duration::from_secs(valid_days.saturating_mul(86_400)),
            )?;
            println!(
                "certificates of {node_id} renewed for {valid_days} days in {}{}",
                dir.display(),
                if names.is_empty() {
                    String::new()
                } else {
                    format!(" (staff HTTPS for {})", names.join(", "))
                }
            );
        }
        Command::Backup { path, data_dir } => {
            sqlite_only(url, "backup")?;
            let db = data_dir.join("cloud.db");
            if !db.exists() {
                anyhow::bail!("no cloud database at {}", db.display());
            }
            CloudStore::backup_file(&db, &path)?;
            println!("backup written to {}", path.display());
        }
        Command::Restore { backup, data_dir } => {
            sqlite_only(url, "restore")?;
            std::fs::create_dir_all(&data_dir)?;
            let incarnation = CloudStore::restore(&backup, &data_dir.join("cloud.db"))?;
            println!(
                "restored into {} as incarnation {incarnation}; start it with `cloud-sync serve`",
                data_dir.display()
            );
        }
        Command::Revoke { node_id, data_dir } => {
            identity::check_node_id(&node_id)?;
            let store = open_store(url, &data_dir)?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            store.revoke(&node_id, now)?;
            println!("every certificate of {node_id} issued until now is revoked");
        }
        Command::Admin { command } => admin_command(url, command)?,
        Command::Probe { mut admin_listen } => {
            if admin_listen.ip().is_unspecified() {
                admin_listen.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            let connect = tokio::net::TcpStream::connect(admin_listen);
            match tokio::time::timeout(std::time::Duration::from_secs(3), connect).await {
                Ok(Ok(_)) => println!("the cloud answers on {admin_listen}"),
                _ => anyhow::bail!("nothing answers on {admin_listen}"),
            }
        }
        Command::Demo {
            dir,
            admin_listen,
            edge_node,
            offline_seconds,
        } => {
            demo::run(
                demo::DemoArgs {
                    dir,
                    admin_listen,
                    edge_node,
                    offline: std::time::Duration::from_secs(offline_seconds),
                },
                shutdown_signal(),
            )
            .await?
        }
        Command::Serve {
            data_dir,
            ca_dir,
            listen,
            admin_listen,
            admin_tls_cert,
            admin_tls_key,
            admin_session_minutes,
            alert_silent_seconds,
            alert_outbox_seconds,
            alert_clock_seconds,
        } => {
            let admin_tls = match (&admin_tls_cert, &admin_tls_key) {
                (Some(cert), Some(key)) => {
                    Some(Arc::new(identity::https_server_config(cert, key)?))
                }
                _ => None,
            };
            listener::check_address(admin_listen, admin_tls.is_some())?;
            let store = Arc::new(open_store(url, &data_dir)?);
            let config = identity::server_config(
                &ca_dir.join(identity::CA_CERT),
                &ca_dir.join(identity::CLOUD_CERT),
                &ca_dir.join(identity::CLOUD_KEY),
            )?;
            let endpoint = quinn::Endpoint::server(config, listen)
                .with_context(|| format!("cannot listen on {listen}"))?;
            let cloud = server::Cloud::new(store)?;
            let admin = tokio::net::TcpListener::bind(admin_listen).await?;
            println!("quic listening on {}", endpoint.local_addr()?);
            println!(
                "admin listening on {}://{}",
                if admin_tls.is_some() { "https" } else { "http" },
                admin.local_addr()?
            );
            let options = AdminOptions {
                session_ttl: std::time::Duration::from_secs(admin_session_minutes * 60),
                tls: admin_tls.is_some(),
                alerts: cloud_sync::cloud::fleet::AlertLimits {
                    silent: std::time::Duration::from_secs(alert_silent_seconds),
                    outbox: std::time::Duration::from_secs(alert_outbox_seconds),
                    clock: std::time::Duration::from_secs(alert_clock_seconds),
                },
                ..AdminOptions::default()
            };
            let stop = CancellationToken::new();
            let quic = tokio::spawn(server::serve(endpoint, cloud.clone(), stop.clone()));
            let http = tokio::spawn(listener::serve(
                admin,
                admin::router(cloud, options),
                admin_tls,
                stop.clone(),
            ));
            shutdown_signal().await;
            stop.cancel();
            let _ = quic.await;
            let _ = http.await;
        }
    }
    Ok(())
}
