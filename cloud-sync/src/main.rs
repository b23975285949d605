use anyhow::Context;
use clap::{Parser, Subcommand};
use cloud_sync::cloud::{admin, server, store::CloudStore};
use cloud_sync::identity;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

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
        /// TCP address of the admin HTTP API (keep it on loopback or a private network).
        #[arg(long, env = "CLOUD_ADMIN_LISTEN", default_value = "127.0.0.1:8480")]
        admin_listen: SocketAddr,
    },
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
            let db = data_dir.join("cloud.db");
            if !db.exists() {
                anyhow::bail!("no cloud database at {}", db.display());
            }
            CloudStore::backup_file(&db, &path)?;
            println!("backup written to {}", path.display());
        }
        Command::Restore { backup, data_dir } => {
            std::fs::create_dir_all(&data_dir)?;
            let incarnation = CloudStore::restore(&backup, &data_dir.join("cloud.db"))?;
            println!(
                "restored into {} as incarnation {incarnation}; start it with `cloud-sync serve`",
                data_dir.display()
            );
        }
        Command::Revoke { node_id, data_dir } => {
            identity::check_node_id(&node_id)?;
            std::fs::create_dir_all(&data_dir)?;
            let store = CloudStore::open(&data_dir.join("cloud.db"))?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            store.revoke(&node_id, now)?;
            println!("every certificate of {node_id} issued until now is revoked");
        }
        Command::Serve {
            data_dir,
            ca_dir,
            listen,
            admin_listen,
        } => {
            std::fs::create_dir_all(&data_dir)?;
            let store = Arc::new(CloudStore::open(&data_dir.join("cloud.db"))?);
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
            println!("admin listening on http://{}", admin.local_addr()?);
            let stop = CancellationToken::new();
            let quic = tokio::spawn(server::serve(endpoint, cloud.clone(), stop.clone()));
            let http = axum::serve(admin, admin::router(cloud)).with_graceful_shutdown({
                let stop = stop.clone();
                async move { stop.cancelled().await }
            });
            let http = tokio::spawn(async move { http.await });
            shutdown_signal().await;
            stop.cancel();
            let _ = quic.await;
            let _ = http.await;
        }
    }
    Ok(())
}
