//! `edge-node status`: what the operator at the shell wants to know about a box. A
//! serving box answers it live on `/status` (loopback clients only); a stopped one is
//! read from its database, read-only, without migrating it.

use crate::app::App;
use crate::store::db::{self, SCHEMA_VERSION, StoreError};
use crate::store::{meta, orders, outbox};
use canteen_api::staff::SyncState;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The box at a glance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BoxStatus {
    /// The release of the binary that answered.
    pub version: String,
    pub node_id: String,
    /// The database's schema version (and the one this release writes).
    pub schema_version: i64,
    pub schema_supported: i64,
    pub data_dir: PathBuf,
    /// Bytes on disk in the data directory (database, WAL, keys, backups kept there).
    pub data_bytes: u64,
    /// Is the box serving? (`false`: read from the database of a stopped box.)
    pub serving: bool,
    /// The service day counted: today's when serving, else the last one with orders.
    pub service_day: Option<NaiveDate>,
    /// Orders of that day by state.
    pub orders: BTreeMap<String, i64>,
    pub outbox_last_seq: i64,
    /// Outbox events the cloud has not acknowledged.
    pub unacked_events: i64,
    /// Writes waiting for the writer, and its queue's bound (serving only).
    pub writer_queue: Option<(usize, usize)>,
    /// The cloud link as the serving box sees it (last error, alarm…).
    pub sync: Option<SyncState>,
}

/// The status of a serving box.
pub async fn live(app: &App) -> Result<BoxStatus, StoreError> {
    let day = app.today();
    let (counts, last) = app
        .readers
        .read(move |c| Ok((orders::count_by_state(c, day)?, outbox::last_seq(c)?)))
        .await?;
    let sync = crate::ops::sync::state(app).await?;
    let data_dir = app.config.data_dir.clone();
    Ok(BoxStatus {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        node_id: app.node_id.clone(),
        schema_version: SCHEMA_VERSION,
        schema_supported: SCHEMA_VERSION,
        data_bytes: tokio::task::spawn_blocking(move || dir_bytes(&data_dir))
            .await
            .unwrap_or(0),
        data_dir: app.config.data_dir.clone(),
        serving: true,
        service_day: Some(day),
        orders: counts
            .into_iter()
            .map(|(s, n)| (s.as_str().to_owned(), n))
            .collect(),
        outbox_last_seq: last,
        unacked_events: sync.unacked_events,
        writer_queue: Some(app.writer.queued()),
        sync: Some(sync),
    })
}

/// The status of a stopped box, from its database (opened read-only).
pub fn from_disk(data_dir: &Path, db_path: &Path) -> Result<BoxStatus, StatusError> {
    if !db_path.exists() {
        return Err(StatusError::NoDatabase(db_path.to_owned()));
    }
    let plan = db::migration_plan(db_path)?;
    let conn = db::open_reader(db_path)?;
    let node_id = meta::get_text(&conn, "node_id")?.unwrap_or_default();
    let service_day = orders::last_service_day(&conn)?;
    let orders = match service_day {
        Some(d) => orders::count_by_state(&conn, d)?
            .into_iter()
            .map(|(s, n)| (s.as_str().to_owned(), n))
            .collect(),
        None => BTreeMap::new(),
    };
    let last = outbox::last_seq(&conn)?;
    let acked = meta::get_u64(&conn, outbox::ACKED_KEY)? as i64;
    Ok(BoxStatus {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        node_id,
        schema_version: plan.found,
        schema_supported: plan.target,
        data_dir: data_dir.to_owned(),
        data_bytes: dir_bytes(data_dir),
        serving: false,
        service_day,
        orders,
        outbox_last_seq: last,
        unacked_events: (last - acked).max(0),
        writer_queue: None,
        sync: None,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("no database at {0}: is --data-dir right?")]
    NoDatabase(PathBuf),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

impl std::fmt::Display for BoxStatus {
    /// The text `edge-node status` prints: one fact a line, `key: value`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = self.data_bytes as f64 / (1024.0 * 1024.0);
        writeln!(
            f,
            "box:            {}",
            if self.serving {
                "serving"
            } else {
                "not running"
            }
        )?;
        writeln!(f, "version:        {}", self.version)?;
        writeln!(f, "node id:        {}", self.node_id)?;
        writeln!(
            f,
            "schema:         {} (this release writes {})",
            self.schema_version, self.schema_supported
        )?;
        writeln!(
            f,
            "data directory: {} ({mib:.1} MiB)",
            self.data_dir.display()
        )?;
        match self.service_day {
            Some(day) => {
                let label = if self.serving {
                    "orders today"
                } else {
                    "orders on"
                };
                let counts: Vec<String> = self
                    .orders
                    .iter()
                    .filter(|(_, n)| **n > 0)
                    .map(|(s, n)| format!("{s} {n}"))
                    .collect();
                let counts = if counts.is_empty() {
                    "none".to_owned()
                } else {
                    counts.join(", ")
                };
                writeln!(f, "{label:<15} {day}: {counts}")?;
            }
            None => writeln!(f, "orders:         none yet")?,
        }
        match self.writer_queue {
            Some((queued, max)) => writeln!(f, "writer queue:   {queued} of {max}")?,
            None => writeln!(f, "writer queue:   - (not running)")?,
        }
        writeln!(
            f,
            "outbox:         last event {}, {} not yet acknowledged by the cloud",
            self.outbox_last_seq, self.unacked_events
        )?;
        match &self.sync {
            None => writeln!(f, "sync:           - (not running)")?,
            Some(s) if !s.configured => writeln!(f, "sync:           no cloud configured")?,
            Some(s) => {
                writeln!(
                    f,
                    "sync:           {}, oldest unacknowledged event {} s old",
                    if s.connected {
                        "connected"
                    } else {
                        "disconnected"
                    },
                    s.oldest_unacked_age_s
                )?;
                if let Some(alarm) = &s.alarm {
                    writeln!(f, "sync alarm:     {alarm}")?;
                }
            }
        }
        let last_error = self.sync.as_ref().and_then(|s| s.last_error.as_deref());
        writeln!(f, "last error:     {}", last_error.unwrap_or("none"))
    }
}
