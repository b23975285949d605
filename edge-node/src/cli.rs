//! The command line: `serve`, `demo`, `status`, `migrate`, `roster import`,
//! `staff add`, `backup`, `backup-key`, `restore`, `tls init`. Each subcommand takes
//! only the options it uses; the others come from the config file.
//!
//! Exit codes: 0 success; 1 an error (the message is on stderr); 2 a usage error
//! (clap's); 3 `status` found the box not running (what it read from the database is
//! printed); 4 `migrate --check` found migrations to run.

use crate::app::App;
use crate::config::{Config, Settings};
use crate::core::clock::SystemClock;
use crate::demo;
use crate::session::{Role, hash_secret};
use crate::store::{accounts, backup};
use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(
    name = "edge-node",
    version,
    about = "The canteen box: takes orders on the LAN, durably, with or without the cloud."
)]
pub struct Cli {
    /// TOML config file. Its keys are the flags' names with underscores
    /// (e.g. unpaid_timeout_s = 600). Flags and environment variables override it.
    #[arg(long, short, env = "EDGE_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(
        long,
        env = "EDGE_LOG_FORMAT",
        value_enum,
        default_value_t,
        global = true
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// The options of a command that works on the box's database only.
#[derive(clap::Args, Debug, Default)]
pub struct DataArgs {
    /// Directory holding the database (canteen.db).
    #[arg(long, env = "EDGE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

impl From<DataArgs> for Settings {
    /// `--data-dir`, over every other setting from the environment (`EDGE_*`): a
    /// command that does not show a setting as a flag still honours its variable.
    fn from(args: DataArgs) -> Self {
        /// Reads every setting from its environment variable, none from arguments.
        #[derive(Parser)]
        struct FromEnv {
            #[command(flatten)]
            settings: Settings,
        }
        // An invalid variable is a usage error, reported as `serve` would.
        let from_env = FromEnv::try_parse_from(["edge-node"])
            .unwrap_or_else(|e| e.exit())
            .settings;
        Settings {
            data_dir: args.data_dir,
            ..Default::default()
        }
        .or(from_env)
    }
}

/// How log lines are written.
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One line of text per event; colour only when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line (for the journal and log shippers), with the
    /// request's span (method, path, request id).
    Json,
}

/// Exit code of `status` when the box is not serving.
pub const EXIT_NOT_RUNNING: u8 = 3;
/// Exit code of `migrate --check` when migrations would run.
pub const EXIT_MIGRATIONS_PENDING: u8 = 4;

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the box until SIGINT or SIGTERM.
    Serve {
        #[command(flatten)]
        settings: Settings,
    },
    /// Create a fresh demo canteen (menu, roster, staff), print the logins, and serve it.
    /// Uses ./demo-data and 127.0.0.1:8080 unless told otherwise; an earlier demo data
    /// directory is replaced.
    Demo {
        #[command(flatten)]
        settings: Settings,
        /// Create the data but do not serve.
        #[arg(long)]
        no_serve: bool,
        /// Also play a generated business day of orders on this date (YYYY-MM-DD, e.g.
        /// yesterday) on a simulated clock: lunch and dinner peaks, sold-out dishes, a
        /// refund, expired and unclaimed orders. Its events sync like any others.
        #[arg(long)]
        play_day: Option<chrono::NaiveDate>,
        /// How busy the played day is (1.0: about 450 orders).
        #[arg(long, default_value_t = 1.0)]
        demand: f64,
    },
    /// What the box is doing: version, schema, data directory and its size, orders
    /// today by state, the writer's queue, the cloud link and its last error. Asks
    /// the serving box (on its listen address, from this machine); a stopped box is
    /// read from its database (exit code 3).
    Status {
        #[command(flatten)]
        data: DataArgs,
        /// The serving box's address, if not the configured `listen`.
        #[arg(long)]
        url: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The database's schema: with --check, what this release would migrate when it
    /// opens the database (nothing is changed; exit code 4 when migrations are due);
    /// without, run them now.
    Migrate {
        #[command(flatten)]
        data: DataArgs,
        /// Only say what would be done.
        #[arg(long)]
        check: bool,
    },
    /// The student roster.
    Roster {
        #[command(subcommand)]
        command: RosterCommand,
    },
    /// Staff accounts.
    Staff {
        #[command(subcommand)]
        command: StaffCommand,
    },
    /// Online backup of the database into a new file (0600), while the box keeps
    /// serving; progress on stderr. Restore it with `edge-node restore`.
    Backup {
        /// The backup file to create.
        path: PathBuf,
        /// Encrypt the backup with this key file (made by `edge-node backup-key`);
        /// keep the key apart from the backups.
        #[arg(long)]
        encrypt_with: Option<PathBuf>,
        #[command(flatten)]
        data: DataArgs,
    },
    /// The staff HTTPS certificate of a box without a campus cloud.
    Tls {
        #[command(subcommand)]
        command: TlsCommand,
    },
    /// Make a new key file (0600) for encrypting backups.
    BackupKey {
        /// The key file to create.
        path: PathBuf,
    },
    /// Restore a backup into a data directory that holds no database yet. The box
    /// makes a new token signing key there: sessions from before are not honoured.
    Restore {
        /// The backup file (plain or encrypted).
        backup: PathBuf,
        /// The key file an encrypted backup was made with.
        #[arg(long)]
        key: Option<PathBuf>,
        #[command(flatten)]
        data: DataArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum TlsCommand {
    /// Make a CA of this box's own and the staff HTTPS certificate it signs, in DIR
    /// (ca.pem, ca.key, https.pem, https.key). Give ca.pem to the staff app; set
    /// staff_listen, staff_tls_cert and staff_tls_key. (A box enrolled with a campus
    /// cloud gets its certificate from `cloud-sync enroll --https-name` instead.)
    Init {
        /// Directory to create the files in (refused if it holds a CA already).
        #[arg(long)]
        dir: PathBuf,
        /// A host name or IP address the staff app uses to reach the box (repeat for
        /// several).
        #[arg(long = "name", required = true)]
        names: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum RosterCommand {
    /// Import students from a CSV with the header student_number,name,pin. Existing
    /// student numbers are updated. Nothing is stored if any row is invalid.
    Import {
        csv: PathBuf,
        #[command(flatten)]
        data: DataArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum StaffCommand {
    /// Add a staff account, or reset its password and role.
    Add {
        #[arg(long)]
        username: String,
        /// Name shown in the staff app.
        #[arg(long)]
        name: String,
        /// staff or manager.
        #[arg(long, default_value = "staff")]
        role: String,
        #[arg(long, env = "EDGE_STAFF_PASSWORD", hide_env_values = true)]
        password: String,
        #[command(flatten)]
        data: DataArgs,
    },
}

fn resolve(file: &Option<PathBuf>, settings: Settings, preset: Settings) -> anyhow::Result<Config> {
    let from_file = match file {
        Some(path) => Settings::from_toml_file(path)?,
        None => Settings::default(),
    };
    Ok(Config::resolve(settings.or(from_file).or(preset))?)
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("EDGE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tower_http=warn"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        // Colour only for a person at a terminal: log files and the journal get text.
        LogFormat::Text => fmt
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => fmt.json().with_current_span(true).try_init(),
    };
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down: finishing in-flight requests and commits");
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let staff = match &config.staff_tls {
        None => None,
        Some(tls) => {
            let server = cloud_sync::identity::https_server_config(&tls.cert, &tls.key)
                .context("the staff HTTPS certificate")?;
            let listener = tokio::net::TcpListener::bind(tls.listen)
                .await
                .with_context(|| format!("cannot listen on {}", tls.listen))?;
            Some(crate::server::StaffHttps {
                listener,
                tls: Arc::new(server),
            })
        }
    };
    let app = App::open(config, Arc::new(SystemClock))?;
    let addr = listener.local_addr()?;
    // Tests and scripts read these lines to learn the ports.
    println!("listening on http://{addr}");
    if let Some(staff) = &staff {
        println!("staff https on https://{}", staff.listener.local_addr()?);
    }
    std::io::stdout().flush()?;
    tracing::info!(%addr, node_id = %app.node_id, "serving");
    crate::server::run_with_staff(listener, staff, app, shutdown_signal()).await?;
    Ok(())
}

/// Runs a command; `Ok` carries the exit code of a command that ended as planned
/// (0, or [`EXIT_NOT_RUNNING`] / [`EXIT_MIGRATIONS_PENDING`]).
pub async fn run(cli: Cli) -> anyhow::Result<u8> {
    init_logging(cli.log_format);
    match cli.command {
        Command::Status { data, url, json } => status(&cli.config, data, url, json).await,
        Command::Migrate { data, check } => {
            let config = resolve(&cli.config, data.into(), Settings::default())?;
            let path = config.db_path();
            let plan = crate::store::db::migration_plan(&path)?;
            if plan.pending.is_empty() {
                println!(
                    "{}: schema {} is this release's; nothing to migrate",
                    path.display(),
                    plan.found
                );
                return Ok(0);
            }
            let what = format!(
                "schema {} → {}: {}",
                plan.found,
                plan.target,
                plan.pending.join(", ")
            );
            if check {
                println!("{}: would migrate {what}", path.display());
                return Ok(EXIT_MIGRATIONS_PENDING);
            }
            if !path.exists() {
                bail!("no database at {}: is --data-dir right?", path.display());
            }
            crate::store::db::open_writer(&path)?;
            println!("{}: migrated {what}", path.display());
            Ok(0)
        }
        command => run_other(&cli.config, command).await.map(|()| 0),
    }
}

/// `edge-node status`: the serving box's own answer, else the database's.
async fn status(
    file: &Option<PathBuf>,
    data: DataArgs,
    url: Option<String>,
    json: bool,
) -> anyhow::Result<u8> {
    let config = resolve(file, data.into(), Settings::default())?;
    let url = url.unwrap_or_else(|| {
        // A box listening on every address answers on loopback too.
        let mut addr = config.listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{addr}")
    });
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()?;
    let answer = client
        .get(format!("{}/status", url.trim_end_matches('/')))
        .send()
        .await;
    let (found, code) = match answer {
        Ok(res) if res.status().is_success() => {
            (res.json::<crate::ops::status::BoxStatus>().await?, 0)
        }
        Ok(res) => bail!("the box at {url} answered {}", res.status()),
        // Nothing listening: the box is stopped; its database says the rest.
        Err(e) if e.is_connect() => {
            let (dir, db) = (config.data_dir.clone(), config.db_path());
            let found =
                tokio::task::spawn_blocking(move || crate::ops::status::from_disk(&dir, &db))
                    .await??;
            (found, EXIT_NOT_RUNNING)
        }
        Err(e) => bail!("asking the box at {url}: {e}"),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&found)?);
    } else {
        print!("{found}");
    }
    Ok(code)
}

async fn run_other(file: &Option<PathBuf>, command: Command) -> anyhow::Result<()> {
    let cli_config = file;
    match command {
        Command::Status { .. } | Command::Migrate { .. } => unreachable!("handled in run"),
        Command::Serve { settings } => {
            serve(resolve(cli_config, settings, Settings::default())?).await
        }
        Command::Demo {
            settings,
            no_serve,
            play_day,
            demand,
        } => {
            let preset = Settings {
                data_dir: Some("demo-data".into()),
                listen: Some("127.0.0.1:8080".parse()?),
                payment_modes: Some(vec!["counter".into(), "campus_card".into()]),
                campus_card_secret: Some(demo::DEMO_CAMPUS_CARD_SECRET.into()),
                ..Default::default()
            };
            let config = resolve(cli_config, settings, preset)?;
            prepare_demo_dir(&config.data_dir)?;
            let app = App::open(config.clone(), Arc::new(SystemClock))?;
            let items = demo::seed(&app, demo::DEMO_STUDENTS).await?;
            app.close().await;
            if let Some(day) = play_day {
                let played = demo::play_day(config.clone(), day, demand.clamp(0.0, 20.0)).await?;
                println!(
                    "Played {day}: {} orders ({} picked up, {} refunded, {} expired; {} refused for sold-out dishes).",
                    played.orders,
                    played.picked_up,
                    played.refunded,
                    played.expired,
                    played.sold_out_refusals
                );
            }
            let base = format!("http://{}", config.listen);
            println!(
                "Demo canteen created in {} with {} dishes.",
                config.data_dir.display(),
                items.len()
            );
            println!("  students' page: {base}/");
            println!("  API:         {base}/api/menu   (OpenAPI: {base}/api/openapi.json)");
            println!(
                "  students:    2024001 … 2024{:03}, PIN {}  (POST {base}/api/student/login)",
                demo::DEMO_STUDENTS,
                demo::DEMO_PIN
            );
            println!(
                "  staff:       {} / {}",
                demo::DEMO_STAFF.0,
                demo::DEMO_STAFF.1
            );
            println!(
                "  manager:     {} / {}",
                demo::DEMO_MANAGER.0,
                demo::DEMO_MANAGER.1
            );
            println!(
                "  campus card: webhook secret {:?}",
                demo::DEMO_CAMPUS_CARD_SECRET
            );
            if no_serve {
                return Ok(());
            }
            serve(config).await
        }
        Command::Roster {
            command: RosterCommand::Import { csv, data },
        } => {
            let config = resolve(cli_config, data.into(), Settings::default())?;
            let file = std::fs::File::open(&csv)
                .with_context(|| format!("cannot open {}", csv.display()))?;
            let cost = config.hash_cost;
            let rows = tokio::task::spawn_blocking(move || accounts::read_roster_csv(file, cost))
                .await??;
            let app = App::open(config, Arc::new(SystemClock))?;
            let n = crate::ops::accounts::import_roster(&app, rows).await;
            app.close().await;
            println!("imported {} students", n?);
            Ok(())
        }
        Command::Staff {
            command:
                StaffCommand::Add {
                    username,
                    name,
                    role,
                    password,
                    data,
                },
        } => {
            let config = resolve(cli_config, data.into(), Settings::default())?;
            let role = match Role::parse(&role) {
                Some(r @ (Role::Staff | Role::Manager)) => r,
                _ => bail!("--role must be staff or manager"),
            };
            canteen_api::accounts::check_staff_password(&password).map_err(anyhow::Error::msg)?;
            let hash = hash_secret(&password, config.hash_cost);
            let app = App::open(config, Arc::new(SystemClock))?;
            let id = crate::ops::accounts::add_staff(&app, username, name, role, hash).await;
            app.close().await;
            println!("staff account {} ready", id?);
            Ok(())
        }
        Command::Backup {
            path,
            encrypt_with,
            data,
        } => {
            let config = resolve(cli_config, data.into(), Settings::default())?;
            let db = config.db_path();
            let out = path.clone();
            let report = tokio::task::spawn_blocking(move || {
                backup::backup(&db, &out, encrypt_with.as_deref(), &|done, total| {
                    eprintln!(
                        "backup: {} MiB written (database {} MiB)",
                        done >> 20,
                        total >> 20
                    );
                })
            })
            .await??;
            println!(
                "backup written to {} ({} bytes{}, outbox up to seq {})",
                path.display(),
                report.bytes,
                if report.encrypted { ", encrypted" } else { "" },
                report.outbox_last_seq
            );
            Ok(())
        }
        Command::Tls {
            command: TlsCommand::Init { dir, names },
        } => {
            cloud_sync::identity::local_ca(&dir, &names)?;
            println!(
                "CA and staff HTTPS certificate written to {dir}\n\
                 give {dir}/ca.pem to the staff app, and set:\n  \
                 staff_listen = \"0.0.0.0:8443\"\n  \
                 staff_tls_cert = \"{dir}/https.pem\"\n  \
                 staff_tls_key = \"{dir}/https.key\"",
                dir = dir.display()
            );
            Ok(())
        }
        Command::BackupKey { path } => {
            backup::make_key_file(&path)?;
            println!(
                "backup key written to {} (keep a copy apart from the backups)",
                path.display()
            );
            Ok(())
        }
        Command::Restore {
            backup: file,
            key,
            data,
        } => {
            let config = resolve(cli_config, data.into(), Settings::default())?;
            let dir = config.data_dir.clone();
            let last = tokio::task::spawn_blocking(move || {
                backup::restore(&file, &dir, crate::config::DB_FILE, key.as_deref())
            })
            .await??;
            println!(
                "restored into {} (outbox up to seq {last}); start the box with `edge-node serve`",
                config.data_dir.display()
            );
            Ok(())
        }
    }
}

/// A marker file that says a directory holds demo data and may be replaced.
const DEMO_MARKER: &str = ".demo-data";

fn prepare_demo_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    if dir.exists() {
        let is_demo = dir.join(DEMO_MARKER).exists();
        let empty = std::fs::read_dir(dir)?.next().is_none();
        if !is_demo && !empty {
            bail!(
                "{} exists and does not hold demo data; refusing to replace it (choose another --data-dir)",
                dir.display()
            );
        }
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join(DEMO_MARKER),
        "created by `edge-node demo`; replaced by the next demo run\n",
    )?;
    Ok(())
}
