//! Configuration: one TOML file, every key overridable by environment variable and by
//! flag (flag > environment > file > default). [`Settings`] is the raw, all-optional
//! form shared by the three sources; [`Config`] is the validated result.

use crate::session::HashCost;
use canteen_api::order::PaymentMode;
use chrono::NaiveTime;
use chrono_tz::Tz;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Every setting of the box. In the TOML file the keys are the same names.
#[derive(Debug, Clone, Default, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Directory holding the database (canteen.db). Created if missing.
    #[arg(long, env = "EDGE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to serve HTTP on, e.g. 0.0.0.0:8080 (port 0 picks a free port).
    #[arg(long, env = "EDGE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Address to serve the staff over HTTPS on, e.g. 0.0.0.0:8443. When set, staff
    /// routes on the plain `listen` address answer only loopback clients: staff
    /// passwords and tokens never cross the LAN in plain HTTP. Needs staff_tls_cert
    /// and staff_tls_key (from `cloud-sync enroll --https-name`, or `edge-node tls init`
    /// for a box without a cloud).
    #[arg(long, env = "EDGE_STAFF_LISTEN")]
    pub staff_listen: Option<SocketAddr>,
    /// The staff HTTPS certificate (PEM).
    #[arg(long, env = "EDGE_STAFF_TLS_CERT")]
    pub staff_tls_cert: Option<PathBuf>,
    /// The staff HTTPS certificate's private key (PEM).
    #[arg(long, env = "EDGE_STAFF_TLS_KEY")]
    pub staff_tls_key: Option<PathBuf>,
    /// The canteen's IANA time zone; service days and opening hours use it.
    /// (This and the next four keys seed a new box's settings document; afterwards
    /// managers change them through the settings API.)
    #[arg(long, env = "EDGE_TIME_ZONE")]
    pub time_zone: Option<String>,
    /// Orders are taken from this local time (HH:MM).
    #[arg(long, env = "EDGE_OPENING_TIME")]
    pub opening_time: Option<String>,
    /// Orders stop at this local time (HH:MM); ready orders not collected by then
    /// become unclaimed.
    #[arg(long, env = "EDGE_CLOSING_TIME")]
    pub closing_time: Option<String>,
    /// Seconds an unpaid order is held before it expires and its stock is released.
    #[arg(long, env = "EDGE_UNPAID_TIMEOUT_S")]
    pub unpaid_timeout_s: Option<u64>,
    /// Payment modes offered: counter, campus_card (comma-separated).
    #[arg(long, env = "EDGE_PAYMENT_MODES", value_delimiter = ',')]
    pub payment_modes: Option<Vec<String>>,
    /// Shared secret of the campus-card webhook (HMAC-SHA256). Required when
    /// campus_card is offered.
    #[arg(long, env = "EDGE_CAMPUS_CARD_SECRET", hide_env_values = true)]
    pub campus_card_secret: Option<String>,
    /// Lifetime of a login token, in minutes.
    #[arg(long, env = "EDGE_TOKEN_TTL_MIN")]
    pub token_ttl_min: Option<u64>,
    /// The token signing key (`token.key` in the data directory) is made anew at a
    /// start once it is this many days old (everyone logs in again).
    #[arg(long, env = "EDGE_TOKEN_KEY_MAX_AGE_DAYS")]
    pub token_key_max_age_days: Option<u64>,
    /// Failed logins of one account (or from one source) before each further failure
    /// doubles the wait, starting at 2 s. A source that has not failed is never slowed
    /// down by other sources' failures against the same account.
    #[arg(long, env = "EDGE_LOGIN_FREE_FAILURES")]
    pub login_free_failures: Option<u32>,
    /// The longest wait after failed logins, in seconds.
    #[arg(long, env = "EDGE_LOGIN_BACKOFF_MAX_S")]
    pub login_backoff_max_s: Option<u64>,
    /// Login attempts allowed per source per minute (an IPv4 address or an IPv6 /64).
    #[arg(long, env = "EDGE_LOGIN_PER_MIN_IP")]
    pub login_per_min_ip: Option<u32>,
    /// Orders a student may place per minute.
    #[arg(long, env = "EDGE_ORDERS_PER_MIN_STUDENT")]
    pub orders_per_min_student: Option<u32>,
    /// Unpaid open orders one student may hold at once (fair share: unpaid orders
    /// reserve portions until they expire). 0 turns the cap off (load tests only).
    #[arg(long, env = "EDGE_UNPAID_ORDERS_PER_STUDENT")]
    pub unpaid_orders_per_student: Option<u32>,
    /// Portions of one dish one order may take, across its lines.
    #[arg(long, env = "EDGE_PORTIONS_PER_DISH")]
    pub portions_per_dish: Option<u32>,
    /// At or below this many portions left, students see "few left" (never the
    /// count; staff see exact counts).
    #[arg(long, env = "EDGE_FEW_LEFT_THRESHOLD")]
    pub few_left_threshold: Option<u32>,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "EDGE_BODY_LIMIT_BYTES")]
    pub body_limit_bytes: Option<usize>,
    /// A request that takes longer is answered 503, in milliseconds.
    #[arg(long, env = "EDGE_REQUEST_TIMEOUT_MS")]
    pub request_timeout_ms: Option<u64>,
    /// Open HTTP connections allowed at once; further connections are closed at once.
    /// Kept below the process's open-file limit (minus a reserve for the database and
    /// the link) whatever is set here.
    #[arg(long, env = "EDGE_CONNECTIONS_MAX")]
    pub connections_max: Option<usize>,
    /// Open HTTP connections allowed from one address (an IPv6 /64 counts as one).
    /// Raise it when phones reach the box through NAT or a proxy on one address.
    #[arg(long, env = "EDGE_CONNECTIONS_PER_ADDRESS")]
    pub connections_per_address: Option<usize>,
    /// A connection must send a request's whole header within this time, in
    /// milliseconds, or it is closed. The same timer closes a keep-alive connection
    /// idle between requests (waiting for the next header).
    #[arg(long, env = "EDGE_HEADER_READ_TIMEOUT_MS")]
    pub header_read_timeout_ms: Option<u64>,
    /// Requests handled at once (event streams excluded); more get 503.
    #[arg(long, env = "EDGE_REQUESTS_IN_FLIGHT_MAX")]
    pub requests_in_flight_max: Option<usize>,
    /// Open student event streams allowed at once (the students' pool).
    #[arg(long, env = "EDGE_EVENT_STREAMS_MAX")]
    pub event_streams_max: Option<usize>,
    /// Open staff event streams allowed at once (a pool of its own, so students
    /// cannot starve the kitchen displays).
    #[arg(long, env = "EDGE_STAFF_EVENT_STREAMS_MAX")]
    pub staff_event_streams_max: Option<usize>,
    /// Event streams one student may hold open (a phone with two tabs).
    #[arg(long, env = "EDGE_EVENT_STREAMS_PER_STUDENT")]
    pub event_streams_per_student: Option<usize>,
    /// Event streams one staff account may hold open (terminals often share one).
    #[arg(long, env = "EDGE_EVENT_STREAMS_PER_STAFF")]
    pub event_streams_per_staff: Option<usize>,
    /// Writes waiting for the writer thread; more get 503.
    #[arg(long, env = "EDGE_WRITER_QUEUE_MAX")]
    pub writer_queue_max: Option<usize>,
    /// Writes committed together in one transaction at most.
    #[arg(long, env = "EDGE_GROUP_COMMIT_MAX")]
    pub group_commit_max: Option<usize>,
    /// Read connections to the database.
    #[arg(long, env = "EDGE_READ_CONNECTIONS")]
    pub read_connections: Option<usize>,
    /// argon2id memory cost for new PIN and password hashes, in KiB.
    #[arg(long, env = "EDGE_ARGON2_MEMORY_KIB")]
    pub argon2_memory_kib: Option<u32>,
    /// argon2id passes for new hashes.
    #[arg(long, env = "EDGE_ARGON2_PASSES")]
    pub argon2_passes: Option<u32>,
    /// Password checks run at once (each takes a core for tens of milliseconds).
    #[arg(long, env = "EDGE_LOGIN_CONCURRENCY")]
    pub login_concurrency: Option<usize>,
    /// How often committed WAL pages are copied into the database file by a background
    /// thread, in milliseconds.
    #[arg(long, env = "EDGE_CHECKPOINT_INTERVAL_MS")]
    pub checkpoint_interval_ms: Option<u64>,
    /// UDP address of the campus cloud (QUIC). Without it the box runs alone.
    #[arg(long, env = "EDGE_CLOUD_ADDR")]
    pub cloud_addr: Option<SocketAddr>,
    /// The name on the cloud's certificate.
    #[arg(long, env = "EDGE_CLOUD_NAME")]
    pub cloud_name: Option<String>,
    /// This box's node id, as enrolled (`cloud-sync enroll --node-id`).
    #[arg(long, env = "EDGE_NODE_ID")]
    pub node_id: Option<String>,
    /// The campus CA certificate (ca.pem from enrolment).
    #[arg(long, env = "EDGE_CLOUD_CA")]
    pub cloud_ca: Option<PathBuf>,
    /// This box's certificate (<node id>.pem).
    #[arg(long, env = "EDGE_CLOUD_CERT")]
    pub cloud_cert: Option<PathBuf>,
    /// This box's private key (<node id>.key).
    #[arg(long, env = "EDGE_CLOUD_KEY")]
    pub cloud_key: Option<PathBuf>,
    /// How often the box reports its status to the cloud (events waiting, clock,
    /// versions, document heads, its own day totals), in seconds.
    #[arg(long, env = "EDGE_CLOUD_STATUS_S")]
    pub cloud_status_s: Option<u64>,
    /// How often expiry and closing are checked, in seconds.
    #[arg(long, env = "EDGE_HOUSEKEEPING_INTERVAL_S")]
    pub housekeeping_interval_s: Option<u64>,
    /// Days the box keeps outbox events the cloud has acknowledged (at least 2: the
    /// kitchen rebuilds its day from the last 36 hours). A cloud restored from a backup
    /// older than this cannot be refilled from this box.
    #[arg(long, env = "EDGE_OUTBOX_KEEP_DAYS")]
    pub outbox_keep_days: Option<u64>,
}

impl Settings {
    /// Fills every key unset in `self` from `lower`.
    pub fn or(self, lower: Settings) -> Settings {
        macro_rules! pick {
            ($($f:ident),*) => { Settings { $($f: self.$f.or(lower.$f)),* } };
        }
        pick!(
            data_dir,
            listen,
            staff_listen,
            staff_tls_cert,
            staff_tls_key,
            time_zone,
            opening_time,
            closing_time,
            unpaid_timeout_s,
            payment_modes,
            campus_card_secret,
            token_ttl_min,
            token_key_max_age_days,
            login_free_failures,
            login_backoff_max_s,
            login_per_min_ip,
            orders_per_min_student,
            unpaid_orders_per_student,
            portions_per_dish,
            few_left_threshold,
            body_limit_bytes,
            request_timeout_ms,
            connections_max,
            connections_per_address,
            header_read_timeout_ms,
            requests_in_flight_max,
            event_streams_max,
            staff_event_streams_max,
            event_streams_per_student,
            event_streams_per_staff,
            writer_queue_max,
            group_commit_max,
            read_connections,
            argon2_memory_kib,
            argon2_passes,
            login_concurrency,
            checkpoint_interval_ms,
            cloud_addr,
            cloud_name,
            node_id,
            cloud_ca,
            cloud_cert,
            cloud_key,
            cloud_status_s,
            housekeeping_interval_s,
            outbox_keep_days
        )
    }

    pub fn from_toml_file(path: &Path) -> Result<Settings, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.to_owned(), e))?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse(path.to_owned(), e.to_string()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("config {0}: {1}")]
    Parse(PathBuf, String),
    #[error("setting {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// The validated configuration the box runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub staff_tls: Option<StaffTls>,
    pub time_zone: Tz,
    pub opening_time: NaiveTime,
    pub closing_time: NaiveTime,
    pub unpaid_timeout: chrono::Duration,
    pub payment_modes: Vec<PaymentMode>,
    pub campus_card_secret: Option<Vec<u8>>,
    pub token_ttl: chrono::Duration,
    pub token_key_max_age: Duration,
    pub login_backoff: crate::session::BackoffPolicy,
    pub login_per_min_ip: u32,
    pub orders_per_min_student: u32,
    pub unpaid_orders_per_student: usize,
    pub portions_per_dish: i64,
    pub few_left_threshold: i64,
    pub body_limit_bytes: usize,
    pub request_timeout: Duration,
    pub connections_max: usize,
    pub connections_per_address: usize,
    pub header_read_timeout: Duration,
    pub requests_in_flight_max: usize,
    pub event_streams_max: usize,
    pub staff_event_streams_max: usize,
    pub event_streams_per_student: usize,
    pub event_streams_per_staff: usize,
    pub writer_queue_max: usize,
    pub group_commit_max: usize,
    pub read_connections: usize,
    pub hash_cost: HashCost,
    pub login_concurrency: usize,
    pub checkpoint_interval: Duration,
    pub housekeeping_interval: Duration,
    /// Acknowledged outbox events older than this are pruned.
    pub outbox_keep: chrono::Duration,
    pub cloud: Option<CloudConfig>,
}

/// The staff HTTPS listener.
#[derive(Debug, Clone)]
pub struct StaffTls {
    pub listen: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Where the campus cloud is and who this box is to it.
#[derive(Debug, Clone)]
pub struct CloudConfig {
    pub addr: SocketAddr,
    pub name: String,
    pub node_id: String,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// How often the box sends its status.
    pub status_every: std::time::Duration,
}

impl Config {
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join(DB_FILE)
    }

    /// Validates settings, filling defaults for what is unset.
    pub fn resolve(s: Settings) -> Result<Config, ConfigError> {
        let time = |key, value: Option<String>, default: &str| {
            let text = value.unwrap_or_else(|| default.to_owned());
            NaiveTime::parse_from_str(&text, "%H:%M")
                .map_err(|_| invalid(key, format!("{text:?} is not HH:MM")))
        };
        let tz_name = s.time_zone.unwrap_or_else(|| "Asia/Shanghai".into());
        let time_zone: Tz = tz_name
            .parse()
            .map_err(|_| invalid("time_zone", format!("{tz_name:?} is not an IANA time zone")))?;
        let payment_modes = s
            .payment_modes
            .unwrap_or_else(|| vec!["counter".into()])
            .iter()
            .map(|m| {
                PaymentMode::parse(m.trim()).ok_or_else(|| {
                    invalid(
                        "payment_modes",
                        format!("{m:?} is not counter or campus_card"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if payment_modes.is_empty() {
            return Err(invalid("payment_modes", "offer at least one payment mode"));
        }
        let campus_card_secret = s.campus_card_secret.map(String::into_bytes);
        if payment_modes.contains(&PaymentMode::CampusCard)
            && campus_card_secret.as_ref().is_none_or(|k| k.len() < 16)
        {
            return Err(invalid(
                "campus_card_secret",
                "campus_card is offered, so a secret of at least 16 bytes is required",
            ));
        }
        let positive = |key, v: Option<u64>, default: u64| match v.unwrap_or(default) {
            0 => Err(invalid(key, "must be greater than 0")),
            n => Ok(n),
        };
        let count = |key, v: Option<usize>, default: usize| match v.unwrap_or(default) {
            0 => Err(invalid(key, "must be greater than 0")),
            n => Ok(n),
        };
        let per_min = |key, v: Option<u32>, default: u32| match v.unwrap_or(default) {
            0 => Err(invalid(key, "must be greater than 0")),
            n => Ok(n),
        };
        let cloud = match s.cloud_addr {
            None => None,
            Some(addr) => {
                let need = |key: &'static str, v: Option<PathBuf>| {
                    v.ok_or_else(|| invalid(key, "required when cloud_addr is set"))
                };
                Some(CloudConfig {
                    addr,
                    name: s
                        .cloud_name
                        .clone()
                        .unwrap_or_else(|| "cloud.canteen".into()),
                    node_id: s
                        .node_id
                        .clone()
                        .ok_or_else(|| invalid("node_id", "required when cloud_addr is set"))?,
                    ca: need("cloud_ca", s.cloud_ca.clone())?,
                    cert: need("cloud_cert", s.cloud_cert.clone())?,
                    key: need("cloud_key", s.cloud_key.clone())?,
                    status_every: std::time::Duration::from_secs(positive(
                        "cloud_status_s",
                        s.cloud_status_s,
                        30,
                    )?),
                })
            }
        };
        let staff_tls = match (s.staff_listen, s.staff_tls_cert, s.staff_tls_key) {
            (None, None, None) => None,
            (Some(listen), Some(cert), Some(key)) => Some(StaffTls { listen, cert, key }),
            _ => {
                return Err(invalid(
                    "staff_listen",
                    "staff_listen, staff_tls_cert and staff_tls_key go together",
                ));
            }
        };
        Ok(Config {
            cloud,
            staff_tls,
            data_dir: s.data_dir.unwrap_or_else(|| PathBuf::from("data")),
            listen: s
                .listen
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 8080))),
            time_zone,
            opening_time: time("opening_time", s.opening_time, "00:00")?,
            closing_time: time("closing_time", s.closing_time, "23:59")?,
            unpaid_timeout: chrono::Duration::seconds(positive(
                "unpaid_timeout_s",
                s.unpaid_timeout_s,
                900,
            )? as i64),
            payment_modes,
            campus_card_secret,
            token_ttl: chrono::Duration::minutes(
                positive("token_ttl_min", s.token_ttl_min, 240)? as i64
            ),
            token_key_max_age: Duration::from_secs(
                positive("token_key_max_age_days", s.token_key_max_age_days, 30)? * 86_400,
            ),
            login_backoff: crate::session::BackoffPolicy {
                free_failures: s.login_free_failures.unwrap_or(3),
                max: Duration::from_secs(positive(
                    "login_backoff_max_s",
                    s.login_backoff_max_s,
                    15 * 60,
                )?),
                ..Default::default()
            },
            login_per_min_ip: per_min("login_per_min_ip", s.login_per_min_ip, 120)?,
            orders_per_min_student: per_min("orders_per_min_student", s.orders_per_min_student, 6)?,
            unpaid_orders_per_student: s.unpaid_orders_per_student.unwrap_or(2) as usize,
            portions_per_dish: i64::from(per_min("portions_per_dish", s.portions_per_dish, 5)?),
            few_left_threshold: i64::from(s.few_left_threshold.unwrap_or(10)),
            body_limit_bytes: count("body_limit_bytes", s.body_limit_bytes, 64 * 1024)?,
            request_timeout: Duration::from_millis(positive(
                "request_timeout_ms",
                s.request_timeout_ms,
                10_000,
            )?),
            connections_max: count("connections_max", s.connections_max, 8192)?,
            connections_per_address: count(
                "connections_per_address",
                s.connections_per_address,
                256,
            )?,
            header_read_timeout: Duration::from_millis(positive(
                "header_read_timeout_ms",
                s.header_read_timeout_ms,
                10_000,
            )?),
            requests_in_flight_max: count(
                "requests_in_flight_max",
                s.requests_in_flight_max,
                2048,
            )?,
            event_streams_max: count("event_streams_max", s.event_streams_max, 4096)?,
            staff_event_streams_max: count(
                "staff_event_streams_max",
                s.staff_event_streams_max,
                64,
            )?,
            event_streams_per_student: count(
                "event_streams_per_student",
                s.event_streams_per_student,
                2,
            )?,
            event_streams_per_staff: count(
                "event_streams_per_staff",
                s.event_streams_per_staff,
                16,
            )?,
            writer_queue_max: count("writer_queue_max", s.writer_queue_max, 8192)?,
            group_commit_max: count("group_commit_max", s.group_commit_max, 512)?,
            read_connections: count("read_connections", s.read_connections, 4)?,
            hash_cost: HashCost {
                memory_kib: per_min("argon2_memory_kib", s.argon2_memory_kib, 19 * 1024)?,
                passes: per_min("argon2_passes", s.argon2_passes, 2)?,
            },
            login_concurrency: count("login_concurrency", s.login_concurrency, 2)?,
            checkpoint_interval: Duration::from_millis(positive(
                "checkpoint_interval_ms",
                s.checkpoint_interval_ms,
                250,
            )?),
            housekeeping_interval: Duration::from_secs(positive(
                "housekeeping_interval_s",
                s.housekeeping_interval_s,
                5,
            )?),
            outbox_keep: match s.outbox_keep_days.unwrap_or(OUTBOX_KEEP_DAYS) {
                d @ 2..=3650 => chrono::Duration::days(d as i64),
                d => {
                    return Err(invalid(
                        "outbox_keep_days",
                        format!(
                            "{d} days: between 2 (the kitchen rebuilds its day from the last 36 hours) and 3650"
                        ),
                    ));
                }
            },
        })
    }
}

pub const DB_FILE: &str = "canteen.db";

/// Days acknowledged outbox events are kept by default: a cloud restored from a backup
/// up to two weeks old is refilled from the boxes.
pub const OUTBOX_KEEP_DAYS: u64 = 14;

#[cfg(test)]
mod tests {
    use super::*;

    /// The example in deploy/ is a configuration this build accepts.
    #[test]
    fn the_deploy_example_is_valid() {
        let file: Settings = toml::from_str(include_str!("../../deploy/edge.toml")).unwrap();
        let cfg = Config::resolve(file).unwrap();
        assert_eq!(
            cfg.cloud.as_ref().map(|c| c.node_id.as_str()),
            Some("canteen-north")
        );
        assert_eq!(cfg.payment_modes.len(), 2);
    }

    /// The unit gives the box more files than its default connection cap needs.
    #[test]
    fn the_unit_raises_the_file_limit_above_the_connection_cap() {
        let unit = include_str!("../../deploy/debian/edge-node.service");
        let limit: usize = unit
            .lines()
            .find_map(|l| l.strip_prefix("LimitNOFILE="))
            .and_then(|v| v.trim().parse().ok())
            .expect("LimitNOFILE in the unit");
        let cfg = Config::resolve(Settings::default()).unwrap();
        assert!(limit > cfg.connections_max + 1024, "{limit}");
    }

    #[test]
    fn higher_sources_win_and_bad_values_name_their_key() {
        let flags = Settings {
            listen: Some("127.0.0.1:9000".parse().unwrap()),
            ..Default::default()
        };
        let file: Settings =
            toml::from_str("listen = \"0.0.0.0:1\"\nunpaid_timeout_s = 60\n").unwrap();
        let cfg = Config::resolve(flags.or(file)).unwrap();
        assert_eq!(cfg.listen.port(), 9000);
        assert_eq!(cfg.unpaid_timeout.num_seconds(), 60);

        let err = Config::resolve(Settings {
            time_zone: Some("Mars/Olympus".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("time_zone"));
        let err = Config::resolve(Settings {
            payment_modes: Some(vec!["campus_card".into()]),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("campus_card_secret"));
        assert!(toml::from_str::<Settings>("no_such_key = 1").is_err());
    }
}
