//! The live kitchen in memory: [`core::kitchen::Kitchen`](crate::core::kitchen) fed
//! with every committed order event (published by the writer, like the stock view),
//! rebuilt at start by replaying the service day's events from the outbox, and asked
//! for promises, estimates and slot capacity. Nothing here is written to SQLite: a
//! promise travels in its `order.placed` event, and the measurements are re-made from
//! the day's bumps.

use super::db::StoreError;
use super::outbox;
use crate::core::clock::ts;
use crate::core::kitchen::{Kitchen, Tuning};
use crate::core::menu::{Menu, MenuStore};
use canteen_api::events::{EventPayload, OutboxEvent};
use canteen_api::ids::{OrderId, StudentId};
use canteen_api::order::{OrderLine, OrderState, running_late, whole_minutes};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use rusqlite::{Connection, OptionalExtension};
use std::collections::HashMap;
use std::sync::Mutex;

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

struct State {
    day: Option<NaiveDate>,
    kitchen: Kitchen,
    students: HashMap<OrderId, StudentId>,
    /// What each student was last told.
    told: HashMap<OrderId, DateTime<Utc>>,
}

impl State {
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
}

/// The stations an order's lines need: their dishes' menu categories (a dish no longer
/// on the menu counts as its own station).
pub fn stations(menu: &Menu, lines: &[OrderLine]) -> Vec<String> {
    let mut out: Vec<String> = lines
        .iter()
        .map(|l| {
            menu.get(l.item_id).map_or_else(
                || format!("item:{}", l.item_id),
                |i| i.fields.category.clone(),
            )
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

impl KitchenView {
    pub fn new(tuning: Tuning) -> Self {
        Self {
            tuning,
            state: Mutex::new(State {
                day: None,
                kitchen: Kitchen::new(tuning),
                students: HashMap::new(),
                told: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Rebuilds the kitchen of `day` from the outbox: the events of the last day and a
    /// half (found by sequence number, not by scanning), of that day's orders.
    pub fn load(
        conn: &Connection,
        tuning: Tuning,
        day: NaiveDate,
        now: DateTime<Utc>,
        menu: &MenuStore,
    ) -> Result<Self, StoreError> {
        let view = Self::new(tuning);
        let mut cursor = first_seq_since(conn, now - Duration::hours(36))?.saturating_sub(1);
        loop {
            let page = outbox::after(conn, cursor, outbox::PAGE_MAX)?;
            let Some(last) = page.last() else { break };
            cursor = last.seq;
            for event in &page {
                if event_day(event) == Some(day) {
                    view.apply(event, menu);
                }
            }
        }
        Ok(view)
    }

    /// Takes a committed event into the kitchen (the menu is read for a placed order's
    /// stations only).
    pub fn apply(&self, event: &OutboxEvent, menu: &MenuStore) {
        let Some(day) = event_day(event) else { return };
        let mut s = self.lock();
        match s.day {
            Some(d) if d > day => return,
            Some(d) if d == day => {}
            _ => s.start_day(day, self.tuning),
        }
        let at = event.at;
        match &event.payload {
            EventPayload::OrderPlaced(p) => {
                let o = &p.order;
                let stations = stations(&menu.snapshot(), &o.lines);
                s.kitchen.placed(o.id, at, &stations, o.ready_promised_at);
                if s.kitchen.contains(o.id) {
                    s.students.insert(o.id, o.student_id);
                }
            }
            EventPayload::OrderMoved(m) => {
                let id = m.order_id;
                match m.to {
                    OrderState::Paid => s.kitchen.paid(id, at),
                    OrderState::Preparing => s.kitchen.started(id, at),
                    OrderState::Ready => s.kitchen.ready(id, at),
                    // Handed over (or unclaimed) without a ready bump: it was made.
                    OrderState::PickedUp | OrderState::Unclaimed => s.kitchen.ready(id, at),
                    OrderState::Cancelled | OrderState::Expired => s.kitchen.gone(id, at),
                    OrderState::Placed => {}
                }
                if !matches!(m.to, OrderState::Paid | OrderState::Preparing) {
                    s.students.remove(&id);
                    s.told.remove(&id);
                }
            }
            _ => {}
        }
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
        let s = self.lock();
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
    pub fn moved(&self, now: DateTime<Utc>, today: NaiveDate) -> Vec<EstimateMoved> {
        let mut s = self.lock();
        if s.day.is_some_and(|d| d < today) {
            s.start_day(today, self.tuning);
        }
        s.kitchen.forget_stale(now, STALE_AFTER);
        let estimates = s.kitchen.estimates(now);
        let mut out = Vec::new();
        for (id, estimate) in estimates {
            let Some(&student) = s.students.get(&id) else {
                continue;
            };
            let reference = s.told.get(&id).copied().or(s.kitchen.promised(id));
            let shifted = reference.is_none_or(|r| (estimate - r).abs() >= SHIFT_MIN);
            if shifted {
                s.told.insert(id, estimate);
                let promised = s.kitchen.promised(id);
                let running_late_min = promised
                    .filter(|_| s.kitchen.in_kitchen(id))
                    .and_then(|p| running_late(p, Some(estimate), now))
                    .map(whole_minutes);
                out.push(EstimateMoved {
                    order_id: id,
                    student_id: student,
                    ready_estimate: estimate,
                    ready_promised_at: promised,
                    running_late_min,
                });
            }
        }
        out
    }
}

fn event_day(event: &OutboxEvent) -> Option<NaiveDate> {
    match &event.payload {
        EventPayload::OrderPlaced(p) => Some(p.order.service_day),
        EventPayload::OrderMoved(m) => Some(m.service_day),
        _ => None,
    }
}

/// The first sequence number whose event is at or after `since`: a binary search over
/// the primary key (times grow with sequence numbers; one written out of order by a
/// clock step only moves the start a little).
fn first_seq_since(conn: &Connection, since: DateTime<Utc>) -> Result<i64, StoreError> {
    let since = ts(since);
    let mut at =
        conn.prepare_cached("SELECT at FROM outbox WHERE seq >= ?1 ORDER BY seq LIMIT 1")?;
    let (mut lo, mut hi) = (0i64, outbox::last_seq(conn)? + 1);
    while lo + 1 < hi {
        let mid = lo + (hi - lo) / 2;
        let t: Option<String> = at.query_row([mid], |r| r.get(0)).optional()?;
        match t {
            // The stored form is fixed width: text order is time order.
            Some(t) if t < since => lo = mid,
            _ => hi = mid,
        }
    }
    Ok(hi)
}
