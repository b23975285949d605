//! The box as a whole: opening the store, the shared state handlers use, background
//! housekeeping, and `run` (serve until a shutdown future resolves).

use crate::canteen::{Canteen, CanteenStore};
use crate::clock::Clock;
use crate::config::Config;
use crate::db::{self, Readers, StoreError};
use crate::docs::{DocStoreError, Documents};
use crate::menu::MenuStore;
use crate::metrics::Metrics;
use crate::order::{self, OrderError};
use crate::outbox::OutboxEvent;
use crate::pickup::SlotUsage;
use crate::session::{Limiter, Limits, Tokens};
use crate::stock::StockView;
use crate::writer::{Effect, Publisher, Writer, WriterConfig};
use chrono::NaiveDate;
use rand::RngCore;
use rusqlite::{Connection, OptionalExtension};
use std::future::Future;
use std::sync::Arc;
use tokio::sync::{Semaphore, broadcast};
use tokio_util::sync::CancellationToken;

/// Live events kept for slow subscribers before they are told to resync.
const EVENT_BUFFER: usize = 4096;
/// Orders expired or marked unclaimed per housekeeping write.
const HOUSEKEEPING_BATCH: usize = 500;

/// Shared state of a running box: cheap to clone.
#[derive(Clone)]
pub struct App {
    inner: Arc<AppInner>,
}

pub struct AppInner {
    pub config: Config,
    pub clock: Arc<dyn Clock>,
    pub writer: Writer,
    pub readers: Readers,
    pub docs: Arc<Documents>,
    pub menu: Arc<MenuStore>,
    pub canteen: Arc<CanteenStore>,
    pub stock: Arc<StockView>,
    pub slots: Arc<SlotUsage>,
    pub events: broadcast::Sender<OutboxEvent>,
    pub tokens: Tokens,
    pub limits: Limits,
    pub metrics: Metrics,
    pub login_permits: Semaphore,
    pub request_permits: Arc<Semaphore>,
    pub stream_permits: Arc<Semaphore>,
    pub node_id: String,
    pub shutdown: CancellationToken,
    /// Signalled after commits that appended outbox events (wakes the sync client).
    pub outbox_changed: Arc<tokio::sync::Notify>,
    /// Signalled when the menu or settings projection changed.
    pub docs_changed: Arc<tokio::sync::Notify>,
    pub sync_status: Arc<cloud_sync::client::StatusCell>,
    checkpointer: std::sync::Mutex<Option<db::Checkpointer>>,
}

impl std::ops::Deref for App {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.inner
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create data directory {0}: {1}")]
    DataDir(std::path::PathBuf, std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Documents(#[from] DocStoreError),
}

/// Publishes committed effects into the in-memory projections and the event stream.
struct Projections {
    docs: Arc<Documents>,
    menu: Arc<MenuStore>,
    canteen: Arc<CanteenStore>,
    stock: Arc<StockView>,
    slots: Arc<SlotUsage>,
    events: broadcast::Sender<OutboxEvent>,
    outbox_changed: Arc<tokio::sync::Notify>,
    docs_changed: Arc<tokio::sync::Notify>,
}

impl Publisher for Projections {
    fn publish(&self, effects: Vec<Effect>) {
        if effects.iter().any(|e| matches!(e, Effect::Event(_))) {
            self.outbox_changed.notify_one();
        }
        if effects
            .iter()
            .any(|e| matches!(e, Effect::Menu(_) | Effect::Settings(_)))
        {
            self.docs_changed.notify_waiters();
        }
        for effect in effects {
            match effect {
                Effect::Event(event) => {
                    // No subscriber is fine: nobody is watching.
                    let _ = self.events.send(event);
                }
                Effect::Stock(level) => self.stock.apply(level),
                Effect::Slot(taken) => self.slots.apply(taken),
                Effect::Menu(menu) => self.menu.replace(menu),
                Effect::Settings(canteen) => self.canteen.replace(canteen),
            }
        }
    }

    fn rolled_back(&self, conn: &Connection) {
        self.docs.reload(conn);
    }
}

/// Reads a box_meta value, creating it with `make` on first start.
fn meta_or_init(
    conn: &Connection,
    key: &str,
    make: impl FnOnce() -> String,
) -> Result<String, StoreError> {
    let existing: Option<String> = conn
        .query_row("SELECT value FROM box_meta WHERE key = ?1", [key], |r| {
            r.get(0)
        })
        .optional()?;
    if let Some(v) = existing {
        return Ok(v);
    }
    let value = make();
    conn.execute(
        "INSERT INTO box_meta (key, value) VALUES (?1, ?2)",
        [key, &value],
    )?;
    Ok(value)
}

impl App {
    /// Opens (or creates) the box's database and starts the writer thread.
    pub fn open(config: Config, clock: Arc<dyn Clock>) -> Result<App, StartError> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| StartError::DataDir(config.data_dir.clone(), e))?;
        let path = config.db_path();
        let conn = db::open_writer(&path)?;
        let node_id = meta_or_init(&conn, "node_id", || uuid::Uuid::now_v7().to_string())?;
        let secret = meta_or_init(&conn, "token_secret", || {
            let mut key = [0u8; 32];
            rand::rng().fill_bytes(&mut key);
            hex::encode(key)
        })?;
        let actor = uuid::Uuid::parse_str(&node_id)
            .map(|u| u.as_bytes().to_vec())
            .unwrap_or_else(|_| node_id.as_bytes().to_vec());
        let (docs, menu, canteen) =
            Documents::open(&conn, &actor, &config, clock.now().timestamp_millis())?;
        let today = canteen.service_day(clock.now());
        let docs = Arc::new(docs);
        let menu = Arc::new(MenuStore::new(menu));
        let canteen = Arc::new(CanteenStore::new(canteen));
        let stock = Arc::new(StockView::load(&conn, today)?);
        let slots = Arc::new(SlotUsage::load(&conn, today)?);
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let outbox_changed = Arc::new(tokio::sync::Notify::new());
        let docs_changed = Arc::new(tokio::sync::Notify::new());
        let publisher = Arc::new(Projections {
            outbox_changed: outbox_changed.clone(),
            docs_changed: docs_changed.clone(),
            docs: docs.clone(),
            menu: menu.clone(),
            canteen: canteen.clone(),
            stock: stock.clone(),
            slots: slots.clone(),
            events: events.clone(),
        });
        let writer = Writer::spawn(
            conn,
            clock.clone(),
            publisher,
            WriterConfig {
                queue_max: config.writer_queue_max,
                group_max: config.group_commit_max,
            },
        );
        let limits = Limits {
            login_per_account: Limiter::per_minute(
                config.login_per_min_account,
                config.login_per_min_account,
            ),
            login_per_ip: Limiter::per_minute(config.login_per_min_ip, config.login_per_min_ip),
            orders_per_student: Limiter::per_minute(
                config.orders_per_min_student,
                config.orders_per_min_student,
            ),
        };
        Ok(App {
            inner: Arc::new(AppInner {
                readers: Readers::new(&path, config.read_connections),
                tokens: Tokens::new(secret.as_bytes(), config.token_ttl),
                login_permits: Semaphore::new(config.login_concurrency),
                request_permits: Arc::new(Semaphore::new(config.requests_in_flight_max)),
                stream_permits: Arc::new(Semaphore::new(config.event_streams_max)),
                metrics: Metrics::new(),
                shutdown: CancellationToken::new(),
                outbox_changed,
                docs_changed,
                sync_status: Arc::new(cloud_sync::client::StatusCell::default()),
                checkpointer: std::sync::Mutex::new(Some(db::Checkpointer::spawn(
                    &path,
                    config.checkpoint_interval,
                )?)),
                config,
                clock,
                writer,
                docs,
                menu,
                canteen,
                stock,
                slots,
                events,
                limits,
                node_id,
            }),
        })
    }

    /// The canteen's settings as of now.
    pub fn canteen(&self) -> Arc<Canteen> {
        self.canteen.snapshot()
    }

    /// Today's service day in the canteen's time zone.
    pub fn today(&self) -> NaiveDate {
        self.canteen().service_day(self.clock.now())
    }

    /// One round of housekeeping: expire unpaid orders whose time is up, and mark ready
    /// orders unclaimed once their day's closing time has passed.
    pub async fn housekeeping(&self) -> Result<(usize, usize), OrderError> {
        let expired = self
            .writer
            .write(|ctx| order::expire_due(ctx, HOUSEKEEPING_BATCH))
            .await?;
        let through = self.canteen().closed_through(self.clock.now());
        let unclaimed = self
            .writer
            .write(move |ctx| order::mark_unclaimed(ctx, through, HOUSEKEEPING_BATCH))
            .await?;
        Ok((expired, unclaimed))
    }

    /// Stops background work and finishes every queued write.
    pub async fn close(&self) {
        self.shutdown.cancel();
        self.writer.shutdown().await;
        let checkpointer = self
            .checkpointer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(c) = checkpointer {
            let _ = tokio::task::spawn_blocking(move || drop(c)).await;
        }
    }
}

/// Serves the box on `listener` until `shutdown` resolves; then stops accepting,
/// lets in-flight requests finish, and drains the writer so every acknowledged write
/// is committed.
pub async fn run(
    listener: tokio::net::TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = crate::http::router(app.clone());
    let mut tasks = tokio::task::JoinSet::new();
    {
        let app = app.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(app.config.housekeeping_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut prune = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                tokio::select! {
                    () = app.shutdown.cancelled() => break,
                    _ = tick.tick() => {
                        if let Err(e) = app.housekeeping().await {
                            tracing::warn!(error = %e, "housekeeping failed; will retry");
                        }
                    }
                    _ = prune.tick() => app.limits.prune(),
                }
            }
        });
    }
    if let Some(cloud) = &app.config.cloud {
        match crate::sync::client_config(cloud) {
            Ok(config) => {
                let link = Arc::new(crate::sync::BoxLink { app: app.clone() });
                tasks.spawn(cloud_sync::client::run(
                    link,
                    config,
                    app.sync_status.clone(),
                    app.shutdown.clone(),
                ));
            }
            // The box keeps selling without the cloud; the reason is in the log and
            // in the staff API's sync state.
            Err(e) => tracing::error!(error = %e, "cloud sync is configured but cannot start"),
        }
    }
    let stop = app.shutdown.clone();
    let server = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        tokio::select! {
            () = shutdown => {}
            () = stop.cancelled() => {}
        }
        // Event streams never end on their own; tell them to.
        stop.cancel();
    });
    let result = server.await;
    app.close().await;
    while tasks.join_next().await.is_some() {}
    result
}
