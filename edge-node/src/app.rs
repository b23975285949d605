//! The box as a whole: opening the store, the shared state handlers use, background
//! housekeeping, and `run` (serve until a shutdown future resolves).

use crate::config::Config;
use crate::core::canteen::{Canteen, CanteenStore};
use crate::core::clock::Clock;
use crate::core::kitchen::Tuning;
use crate::core::menu::MenuStore;
use crate::metrics::Metrics;
use crate::session::{Limiter, Limits, LoginGuard, StreamPool, Tokens};
use crate::store::accounts::AccountStates;
use crate::store::db::{self, Readers, StoreError};
use crate::store::docs::{DocStoreError, Documents};
use crate::store::kitchen::{self, EstimateMoved, KitchenView};
use crate::store::pickup::SlotUsage;
use crate::store::stock::StockView;
use crate::store::writer::WriterConfig;
use crate::store::{Projections, Writer, meta, secrets};
use canteen_api::events::OutboxEvent;
use canteen_api::order::OrderView;
use chrono::{DateTime, NaiveDate, Utc};
use crdt::settings::PickupSlot;
use std::sync::Arc;
use tokio::sync::{Semaphore, broadcast};
use tokio_util::sync::CancellationToken;

/// Where releases before the key file kept the token signing key.
const LEGACY_TOKEN_SECRET: &str = "token_secret";

/// Live events kept for slow subscribers before they are told to resync.
const EVENT_BUFFER: usize = 4096;

/// Shared state of a running box: cheap to clone.
#[derive(Clone)]
pub struct App {
    inner: Arc<AppInner>,
}

/// A pickup slot as offered now ([`App::slot_offer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotOffer {
    pub capacity: u32,
    pub taken: i64,
    pub full: bool,
    pub offered: bool,
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
    /// The live kitchen: promises, estimates, slot capacity.
    pub kitchen: Arc<KitchenView>,
    /// Estimates that moved by a minute or more, for the students' event streams.
    pub estimates: broadcast::Sender<EstimateMoved>,
    pub accounts: Arc<AccountStates>,
    pub events: broadcast::Sender<OutboxEvent>,
    pub tokens: Tokens,
    pub limits: Limits,
    pub metrics: Metrics,
    pub login_permits: Semaphore,
    pub request_permits: Arc<Semaphore>,
    pub student_streams: StreamPool,
    pub staff_streams: StreamPool,
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

impl App {
    /// Opens (or creates) the box's database and starts the writer thread.
    pub fn open(config: Config, clock: Arc<dyn Clock>) -> Result<App, StartError> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| StartError::DataDir(config.data_dir.clone(), e))?;
        secrets::private_dir(&config.data_dir).map_err(StoreError::from)?;
        let path = config.db_path();
        let conn = db::open_writer(&path)?;
        let node_id = meta::get_or_init(&conn, "node_id", || uuid::Uuid::now_v7().to_string())?;
        meta::get_or_init(&conn, meta::INCARNATION_KEY, meta::new_incarnation)?;
        // Releases before the key file kept the signing key in the database, so every
        // backup could mint tokens: it is dropped and a key file made in its place.
        if meta::remove(&conn, LEGACY_TOKEN_SECRET)? {
            tracing::warn!("removed the token key from the database; everyone logs in again");
        }
        let (secret, origin) = secrets::token_key(&config.data_dir, config.token_key_max_age)
            .map_err(StoreError::from)?;
        if origin != secrets::KeyOrigin::Kept {
            tracing::info!(
                ?origin,
                "made a new token signing key; earlier sessions end"
            );
        }
        // A new Automerge actor at every start: a box restored from a backup (or
        // started on a copy) never repeats an (actor, seq) the cloud already holds,
        // which would make both sides refuse the document from then on.
        let actor = uuid::Uuid::new_v4().as_bytes().to_vec();
        let (docs, menu, canteen) =
            Documents::open(&conn, &actor, &config, clock.now().timestamp_millis())?;
        let today = canteen.service_day(clock.now());
        let docs = Arc::new(docs);
        let menu = Arc::new(MenuStore::new(menu));
        let canteen = Arc::new(CanteenStore::new(canteen));
        let stock = Arc::new(StockView::load(&conn, today)?);
        let slots = Arc::new(SlotUsage::load(&conn, today)?);
        let kitchen = Arc::new(KitchenView::load(
            &conn,
            Tuning::default(),
            today,
            clock.now(),
            &menu,
            Some(&config.data_dir.join(kitchen::SNAPSHOT_FILE)),
        )?);
        let (estimates, _) = broadcast::channel(EVENT_BUFFER);
        let accounts = Arc::new(AccountStates::load(&conn)?);
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
            kitchen: kitchen.clone(),
            accounts: accounts.clone(),
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
            login: LoginGuard::new(config.login_per_min_ip, config.login_backoff),
            orders_per_student: Limiter::per_minute(
                config.orders_per_min_student,
                config.orders_per_min_student,
            ),
        };
        Ok(App {
            inner: Arc::new(AppInner {
                readers: Readers::new(&path, config.read_connections),
                tokens: Tokens::new(&secret, config.token_ttl),
                login_permits: Semaphore::new(config.login_concurrency),
                request_permits: Arc::new(Semaphore::new(config.requests_in_flight_max)),
                student_streams: StreamPool::new(
                    config.event_streams_max,
                    config.event_streams_per_student,
                ),
                staff_streams: StreamPool::new(
                    config.staff_event_streams_max,
                    config.event_streams_per_staff,
                ),
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
                kitchen,
                estimates,
                accounts,
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

    /// What a pickup slot offers now: its capacity from the kitchen's measured rate
    /// (at most the slot's own capacity, the manager's ceiling), the places taken, and
    /// whether the kitchen can have an order placed now ready before it ends
    /// (`next_ready`, from [`KitchenView::next_ready`], asked once per request).
    pub fn slot_offer(
        &self,
        canteen: &Canteen,
        slot: &PickupSlot,
        day: NaiveDate,
        now: DateTime<Utc>,
        next_ready: DateTime<Utc>,
    ) -> SlotOffer {
        let taken = self.slots.get(day, &slot.id);
        let (capacity, end) = self.slot_capacity(canteen, slot, day, now);
        let full = taken >= i64::from(capacity);
        let can_meet = next_ready <= end;
        SlotOffer {
            capacity,
            taken,
            full,
            offered: can_meet && !full,
        }
    }

    /// A pickup slot's capacity now (the kitchen's measured rate over its length, at
    /// most the slot's own capacity) and when it ends.
    pub fn slot_capacity(
        &self,
        canteen: &Canteen,
        slot: &PickupSlot,
        day: NaiveDate,
        now: DateTime<Utc>,
    ) -> (u32, DateTime<Utc>) {
        let (start, end) = canteen.slot_span(day, slot);
        let capacity = self.kitchen.slot_capacity(end - start, slot.capacity, now);
        (capacity, end)
    }

    /// Sends every estimate that moved by a minute or more to its student's event
    /// streams (the server does this every few seconds).
    pub fn publish_estimates(&self) {
        let now = self.clock.now();
        let today = self.canteen().service_day(now);
        for moved in self.kitchen.moved(now, today) {
            // No subscriber is fine: nobody is watching.
            let _ = self.estimates.send(moved);
        }
    }

    /// Fills in the kitchen's promise and current estimate of orders it still has, and
    /// how late they are running.
    pub fn with_estimates(&self, orders: &mut [OrderView]) {
        let now = self.clock.now();
        let fill = |o: &mut OrderView, (promised, estimate)| {
            o.ready_promised_at = promised;
            o.ready_estimate = Some(estimate);
            o.running_late_min = o.late_min(now);
        };
        if let [one] = orders {
            if let Some(known) = self.kitchen.of(one.id, now) {
                fill(one, known);
            }
            return;
        }
        let all = self.kitchen.all(now);
        for o in orders {
            if let Some(known) = all.get(&o.id) {
                fill(o, *known);
            }
        }
    }

    /// Stops background work and finishes every queued write.
    /// Writes the kitchen's snapshot if it moved since the last one (so a restart
    /// replays only the events after it).
    pub async fn save_kitchen(&self) -> Result<bool, StoreError> {
        let kitchen = self.kitchen.clone();
        let path = self.config.data_dir.join(kitchen::SNAPSHOT_FILE);
        self.readers.read(move |c| kitchen.save(c, &path)).await
    }

    pub async fn close(&self) {
        self.shutdown.cancel();
        self.writer.shutdown().await;
        if let Err(e) = self.save_kitchen().await {
            tracing::warn!(error = %e, "could not keep the kitchen's snapshot; the next start replays the day");
        }
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
