//! The live kitchen in memory: [`core::kitchen::Kitchen`](crate::core::kitchen) fed
//! with every committed order event (published by the writer, like the stock view),
//! rebuilt at start by replaying the service day's events from the outbox, and asked
//! for promises, estimates and slot capacity. Nothing here is written to SQLite: a
//! promise travels in its `order.placed` event, and the measurements are re-made from
//! the day's bumps.

use super::db::StoreError;
use super::outbox;
use crate::core::clock::parse_ts;
use crate::core::kitchen::{Kitchen, Tuning};
use crate::core::menu::{Menu, MenuStore};
use canteen_api::events::{EventPayload, OutboxEvent};
use canteen_api::ids::{ItemId, OrderId, StudentId};
use canteen_api::order::{OrderLine, OrderState, running_late, whole_minutes};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use rusqlite::{Connection, OptionalExtension};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

/// A paid order nobody started for this long is forgotten by the kitchen.
pub const STALE_AFTER: Duration = Duration::hours(2);

/// An estimate moves for its student when it shifts by at least this much.
pub const SHIFT_MIN: Duration = Duration::minutes(1);

/// An order's estimate moved by a minute or more (sent on the student's event stream).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EstimateMoved {
    pub order_id: OrderId,
    #[serde(skip)]
    pub student_id: StudentId,
    pub ready_estimate: DateTime<Utc>,
    pub ready_promised_at: Option<DateTime<Utc>>,
    /// Whole minutes it is running late against the promise, while it is (only an
    /// order the kitchen has, paid, can be).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running_late_min: Option<i64>,
}

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct State {
    day: Option<NaiveDate>,
    kitchen: Kitchen,
    students: imbl::HashMap<OrderId, StudentId>,
    /// What each student was last told.
    told: imbl::HashMap<OrderId, DateTime<Utc>>,
    /// The last outbox event taken in (0: none).
    #[serde(default)]
    seq: i64,
}

/// The kitchen as it stood after outbox event `state.seq`, kept in a file beside the
/// database so that a restart replays only the events after it: replaying a day of a
/// million orders took seconds. A cache, never the truth: it is used only when the
/// database still holds that same event (same kind, order and time: not a restored
/// or another database), for the same service day and constants; else the day is
/// replayed from the outbox.
#[derive(serde::Serialize, serde::Deserialize)]
struct Snapshot {
    format: u32,
    kind: String,
    aggregate_id: String,
    at: String,
    state: State,
}

const SNAPSHOT_FORMAT: u32 = 1;

/// A file written in synced steps of [`SYNC_STEP`] bytes. Left to the kernel, a
/// snapshot's megabytes were written out all at once when the rename replaced the last
/// one, and the writer's WAL fsync queued behind them at the disk: a group commit then
/// took 40–80 ms instead of one. Synced in steps, the disk never has more than a step
/// of it to write in front of the WAL.
struct SyncedSteps {
    file: std::fs::File,
    unsynced: usize,
}

const SYNC_STEP: usize = 1 << 20;

impl SyncedSteps {
    fn sync(&mut self) -> std::io::Result<()> {
        self.unsynced = 0;
        self.file.sync_data()
    }
}

impl std::io::Write for SyncedSteps {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.unsynced += n;
        if self.unsynced >= SYNC_STEP {
            self.sync()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// The snapshot's file name in the data directory.
pub const SNAPSHOT_FILE: &str = "kitchen.snapshot";

/// The outbox event `seq` as a snapshot names it: (kind, aggregate id, time).
fn event_key(conn: &Connection, seq: i64) -> Result<Option<(String, String, String)>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT kind, aggregate_id, at FROM outbox WHERE seq = ?1")?
        .query_row([seq], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?)
}

impl State {
    fn apply(
        &mut self,
        seq: i64,
        event: KitchenEvent,
        at: DateTime<Utc>,
        menu: &Menu,
        tuning: Tuning,
    ) {
        self.seq = self.seq.max(seq);
        let day = event.day();
        match self.day {
            Some(d) if d > day => return,
            Some(d) if d == day => {}
            _ => self.start_day(day, tuning),
        }
        match event {
            KitchenEvent::Placed {
                id,
                student,
                items,
                promised,
                ..
            } => {
                let stations = stations_of(menu, items.into_iter());
                self.kitchen.placed(id, at, &stations, promised);
                if self.kitchen.contains(id) {
                    self.students.insert(id, student);
                }
            }
            KitchenEvent::Moved { id, to, .. } => {
                match to {
                    OrderState::Paid => self.kitchen.paid(id, at),
                    OrderState::Preparing => self.kitchen.started(id, at),
                    OrderState::Ready => self.kitchen.ready(id, at),
                    // Handed over (or unclaimed) without a ready bump: it was made.
                    OrderState::PickedUp | OrderState::Unclaimed => self.kitchen.ready(id, at),
                    OrderState::Cancelled | OrderState::Expired => self.kitchen.gone(id, at),
                    OrderState::Placed => {}
                }
                if !matches!(to, OrderState::Paid | OrderState::Preparing) {
                    self.students.remove(&id);
                    self.told.remove(&id);
                }
            }
        }
    }

    /// A new service day: an empty kitchen, nobody to tell anything.
    fn start_day(&mut self, day: NaiveDate, tuning: Tuning) {
        self.day = Some(day);
        self.kitchen = Kitchen::new(tuning);
        self.students.clear();
        self.told.clear();
    }
}

/// The kitchen view the box reads.
pub struct KitchenView {
    tuning: Tuning,
    state: Mutex<State>,
    /// The event the last snapshot written stands after.
    saved: AtomicI64,
    /// Held while a snapshot is written: the 30-second tick and a stop's last save use
    /// the same temporary file.
    saving: Mutex<()>,
}

/// The stations an order's lines need: their dishes' menu categories (a dish no longer
/// on the menu counts as its own station).
pub fn stations(menu: &Menu, lines: &[OrderLine]) -> Vec<String> {
    stations_of(menu, lines.iter().map(|l| l.item_id))
}

fn stations_of(menu: &Menu, items: impl Iterator<Item = ItemId>) -> Vec<String> {
    let mut out: Vec<String> = items
        .map(|item| {
            menu.get(item)
                .map_or_else(|| format!("item:{item}"), |i| i.fields.category.clone())
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// What the kitchen reads of an order event. At start it is read straight from the
/// stored payload (only these fields, not the whole order): parsing each whole order
/// of a busy day made a restart at a million orders take seconds.
enum KitchenEvent {
    Placed {
        id: OrderId,
        student: StudentId,
        day: NaiveDate,
        items: Vec<ItemId>,
        promised: Option<DateTime<Utc>>,
    },
    Moved {
        id: OrderId,
        day: NaiveDate,
        to: OrderState,
    },
}

#[derive(serde::Deserialize)]
struct PlacedPayload {
    id: OrderId,
    student_id: StudentId,
    service_day: NaiveDate,
    lines: Vec<LinePayload>,
    #[serde(default)]
    ready_promised_at: Option<DateTime<Utc>>,
}

#[derive(serde::Deserialize)]
struct LinePayload {
    item_id: ItemId,
}

#[derive(serde::Deserialize)]
struct MovedPayload {
    order_id: OrderId,
    service_day: NaiveDate,
    to: OrderState,
}

impl KitchenEvent {
    fn of(event: &OutboxEvent) -> Option<Self> {
        match &event.payload {
            EventPayload::OrderPlaced(p) => Some(Self::Placed {
                id: p.order.id,
                student: p.order.student_id,
                day: p.order.service_day,
                items: p.order.lines.iter().map(|l| l.item_id).collect(),
                promised: p.order.ready_promised_at,
            }),
            EventPayload::OrderMoved(m) => Some(Self::Moved {
                id: m.order_id,
                day: m.service_day,
                to: m.to,
            }),
            _ => None,
        }
    }

    /// From a stored `order.placed` or `order.<state>` (a move) payload.
    fn parse(kind: &str, payload: &str) -> Result<Self, serde_json::Error> {
        Ok(if kind == "order.placed" {
            let p: PlacedPayload = serde_json::from_str(payload)?;
            Self::Placed {
                id: p.id,
                student: p.student_id,
                day: p.service_day,
                items: p.lines.into_iter().map(|l| l.item_id).collect(),
                promised: p.ready_promised_at,
            }
        } else {
            let m: MovedPayload = serde_json::from_str(payload)?;
            Self::Moved {
                id: m.order_id,
                day: m.service_day,
                to: m.to,
            }
        })
    }

    fn day(&self) -> NaiveDate {
        match self {
            Self::Placed { day, .. } | Self::Moved { day, .. } => *day,
        }
    }
}

impl KitchenView {
    pub fn new(tuning: Tuning) -> Self {
        Self {
            tuning,
            state: Mutex::new(State {
                day: None,
                kitchen: Kitchen::new(tuning),
                students: imbl::HashMap::new(),
                told: imbl::HashMap::new(),
                seq: 0,
            }),
            saved: AtomicI64::new(0),
            saving: Mutex::new(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Rebuilds the kitchen of `day`: from the snapshot in `snapshot` if it still
    /// applies, else from the events of the last day and a half (found by sequence
    /// number, not by scanning); then the day's order events after it.
    pub fn load(
        conn: &Connection,
        tuning: Tuning,
        day: NaiveDate,
        now: DateTime<Utc>,
        menu: &MenuStore,
        snapshot: Option<&Path>,
    ) -> Result<Self, StoreError> {
        let view = Self::new(tuning);
        let mut from = outbox::first_seq_since(conn, now - Duration::hours(36))?;
        if let Some(kept) = snapshot.and_then(|p| Self::read_snapshot(conn, p, tuning, day)) {
            from = kept.seq + 1;
            view.saved.store(kept.seq, Ordering::Relaxed);
            *view.lock() = kept;
        }
        let mut rows = conn.prepare(
            "SELECT seq, kind, payload, at FROM outbox \
             WHERE seq >= ?1 AND kind GLOB 'order.*' ORDER BY seq",
        )?;
        let mut rows = rows.query([from])?;
        let menu = menu.snapshot();
        let mut s = view.lock();
        while let Some(row) = rows.next()? {
            let seq: i64 = row.get(0)?;
            let corrupt =
                |e: &dyn std::fmt::Display| StoreError::Corrupt(format!("outbox {seq}: {e}"));
            let text = |i| row.get_ref(i)?.as_str().map_err(|e| corrupt(&e));
            let event = KitchenEvent::parse(text(1)?, text(2)?).map_err(|e| corrupt(&e))?;
            if event.day() != day {
                continue;
            }
            let at = parse_ts(text(3)?).ok_or_else(|| corrupt(&"bad time"))?;
            s.apply(seq, event, at, &menu, tuning);
        }
        drop(s);
        Ok(view)
    }

    /// The kitchen kept in `path`, if it is of `day`, made with `tuning`, and stands
    /// after an event this database holds as it was.
    fn read_snapshot(
        conn: &Connection,
        path: &Path,
        tuning: Tuning,
        day: NaiveDate,
    ) -> Option<State> {
        let bytes = std::fs::read(path).ok()?;
        let snap: Snapshot = match serde_json::from_slice(&bytes) {
            Ok(snap) => snap,
            Err(e) => {
                tracing::warn!(error = %e, "the kitchen's snapshot is unreadable; replaying the day");
                return None;
            }
        };
        let same_event =
            event_key(conn, snap.state.seq)
                .ok()
                .flatten()
                .is_some_and(|(kind, aggregate, at)| {
                    kind == snap.kind && aggregate == snap.aggregate_id && at == snap.at
                });
        (snap.format == SNAPSHOT_FORMAT
            && snap.state.day == Some(day)
            && snap.state.kitchen.tuning() == tuning
            && same_event)
            .then_some(snap.state)
    }

    /// Writes the kitchen to `path` (through a temporary file and a rename) if it took
    /// in events since the last time; `conn` reads the last event's identity.
    pub fn save(&self, conn: &Connection, path: &Path) -> Result<bool, StoreError> {
        let _one_at_a_time = self.saving.lock().unwrap_or_else(|e| e.into_inner());
        let state = {
            let s = self.lock();
            if s.seq == 0 || s.seq == self.saved.load(Ordering::Relaxed) {
                return Ok(false);
            }
            // A few pointers: the writer goes on while the copy is written out.
            s.clone()
        };
        let Some((kind, aggregate_id, at)) = event_key(conn, state.seq)? else {
            return Ok(false);
        };
        let seq = state.seq;
        let snap = Snapshot {
            format: SNAPSHOT_FORMAT,
            kind,
            aggregate_id,
            at,
            state,
        };
        let io =
            |e: std::io::Error| StoreError::Corrupt(format!("writing {}: {e}", path.display()));
        // Private like the database (it names students' orders), owned like it; written
        // straight to the file (a busy day's kitchen is megabytes of JSON), synced as
        // it goes (see `SyncedSteps`).
        let tmp = path.with_extension("tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut file = std::io::BufWriter::new(SyncedSteps {
            file: super::secrets::create_private(&tmp)?,
            unsynced: 0,
        });
        serde_json::to_writer(&mut file, &snap)
            .map_err(|e| StoreError::Corrupt(format!("kitchen snapshot: {e}")))?;
        let mut file = file.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync().map_err(io)?;
        drop(file);
        super::secrets::give_to_dir_owner(&tmp)?;
        std::fs::rename(&tmp, path).map_err(io)?;
        self.saved.store(seq, Ordering::Relaxed);
        Ok(true)
    }

    /// Takes a committed event into the kitchen (the menu is read for a placed order's
    /// stations only).
    pub fn apply(&self, event: &OutboxEvent, menu: &MenuStore) {
        let Some(e) = KitchenEvent::of(event) else {
            return;
        };
        let menu = menu.snapshot();
        self.lock()
            .apply(event.seq, e, event.at, &menu, self.tuning);
    }

    /// (promise, current estimate) of an order the kitchen still has.
    pub fn of(
        &self,
        id: OrderId,
        now: DateTime<Utc>,
    ) -> Option<(Option<DateTime<Utc>>, DateTime<Utc>)> {
        let s = self.lock();
        let estimate = s.kitchen.estimate(id, now)?;
        Some((s.kitchen.promised(id), estimate))
    }

    /// Every tracked order's (promise, estimate): for a list of orders.
    pub fn all(
        &self,
        now: DateTime<Utc>,
    ) -> HashMap<OrderId, (Option<DateTime<Utc>>, DateTime<Utc>)> {
        // On a copy (a few pointers): working out every estimate takes milliseconds
        // on a busy day, and the writer must not wait for it.
        let s = self.lock().clone();
        s.kitchen
            .estimates(now)
            .into_iter()
            .map(|(id, e)| (id, (s.kitchen.promised(id), e)))
            .collect()
    }

    /// What to promise an order needing `stations`, placed (and paid) now.
    pub fn promise(&self, stations: &[String], now: DateTime<Utc>) -> DateTime<Utc> {
        self.lock().kitchen.estimate_new(stations, now)
    }

    /// When an order of any dishes placed now would be ready.
    pub fn next_ready(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        self.lock().kitchen.estimate_any(now)
    }

    /// Orders a pickup slot of `length` takes, at most `ceiling`.
    pub fn slot_capacity(&self, length: Duration, ceiling: u32, now: DateTime<Utc>) -> u32 {
        self.lock().kitchen.slot_capacity(length, ceiling, now)
    }

    /// Estimates that moved by [`SHIFT_MIN`] or more since their students were last
    /// told (or from the promise), recorded as told (an unpaid order's "if paid now"
    /// moves with the clock, so its student hears about once a minute). Also where
    /// the day moves on (a new service day starts an empty kitchen) and orders nobody
    /// started for [`STALE_AFTER`] are forgotten.
    ///
    /// Works on a copy of the kitchen (a few pointers), then records what was told in
    /// slices of [`MOVED_SLICE`] orders, taking the lock for each: on a day of 50,000
    /// open orders one pass holding the lock took 10–20 ms, and the writer, which
    /// feeds the kitchen every committed order, waited that long. An order that went
    /// away meanwhile is skipped.
    pub fn moved(&self, now: DateTime<Utc>, today: NaiveDate) -> Vec<EstimateMoved> {
        let copy = {
            let mut s = self.lock();
            if s.day.is_some_and(|d| d < today) {
                s.start_day(today, self.tuning);
            }
            s.kitchen.forget_stale(now, STALE_AFTER);
            s.clone()
        };
        let mut shifted = Vec::new();
        for (id, estimate) in copy.kitchen.estimates(now) {
            let Some(&student) = copy.students.get(&id) else {
                continue;
            };
            let promised = copy.kitchen.promised(id);
            let reference = copy.told.get(&id).copied().or(promised);
            if reference.is_none_or(|r| (estimate - r).abs() >= SHIFT_MIN) {
                let running_late_min = promised
                    .filter(|_| copy.kitchen.in_kitchen(id))
                    .and_then(|p| running_late(p, Some(estimate), now))
                    .map(whole_minutes);
                shifted.push(EstimateMoved {
                    order_id: id,
                    student_id: student,
                    ready_estimate: estimate,
                    ready_promised_at: promised,
                    running_late_min,
                });
            }
        }
        drop(copy);
        let mut out = Vec::with_capacity(shifted.len());
        let mut shifted = shifted.into_iter().peekable();
        while shifted.peek().is_some() {
            let mut s = self.lock();
            for moved in shifted.by_ref().take(MOVED_SLICE) {
                if s.students.contains_key(&moved.order_id) {
                    s.told.insert(moved.order_id, moved.ready_estimate);
                    out.push(moved);
                }
            }
        }
        out
    }
}

/// Orders recorded as told per taking of the kitchen's lock in [`KitchenView::moved`].
const MOVED_SLICE: usize = 4096;
