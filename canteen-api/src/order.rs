//! Orders on the wire: states, events, what a student sends, what everyone reads, and
//! the lifecycle facts clients need so they never re-derive them.
//!
//! ```text
//! placed ──pay──> paid ──> preparing ──> ready ──> picked_up
//!   │               │           │
//!   ├─timeout─> expired         └──(staff)──> cancelled (refund recorded if paid)
//!   └─(student|staff)─> cancelled                 ready ──(closing time)──> unclaimed
//! ```
//!
//! The box decides every transition (its order core); the facts here ([`OrderState::is_open`],
//! [`OrderState::staff_events`], [`OrderState::student_may_cancel`]) are what a client shows
//! before asking. A test in the box checks they agree with its decisions.

use crate::ids::{ItemId, OrderId, StudentId};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

/// Lines per order, at most.
pub const LINES_MAX: usize = 20;
/// Portions per line, at most.
pub const QUANTITY_MAX: u32 = 20;
/// Length of an `Idempotency-Key`, at most.
pub const IDEMPOTENCY_KEY_MAX: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum OrderState {
    Placed,
    Paid,
    Preparing,
    Ready,
    PickedUp,
    Cancelled,
    Expired,
    Unclaimed,
}

impl OrderState {
    pub const ALL: [OrderState; 8] = [
        Self::Placed,
        Self::Paid,
        Self::Preparing,
        Self::Ready,
        Self::PickedUp,
        Self::Cancelled,
        Self::Expired,
        Self::Unclaimed,
    ];

    /// The states the kitchen and counter still work on (the staff queue's default).
    pub const OPEN: [OrderState; 4] = [Self::Placed, Self::Paid, Self::Preparing, Self::Ready];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Placed => "placed",
            Self::Paid => "paid",
            Self::Preparing => "preparing",
            Self::Ready => "ready",
            Self::PickedUp => "picked_up",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
            Self::Unclaimed => "unclaimed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Still being worked on: not yet handed over, cancelled, expired or unclaimed.
    pub fn is_open(self) -> bool {
        Self::OPEN.contains(&self)
    }

    /// May the order's own student cancel it now? Only before the kitchen starts.
    pub fn student_may_cancel(self) -> bool {
        matches!(self, Self::Placed | Self::Paid)
    }

    /// The events staff may apply in this state, the usual next step first (what a
    /// kitchen display's button does), then cancellation where it is allowed.
    pub fn staff_events(self) -> Vec<OrderEvent> {
        match self {
            Self::Placed => vec![OrderEvent::Pay, OrderEvent::Cancel],
            Self::Paid => vec![OrderEvent::StartPreparing, OrderEvent::Cancel],
            Self::Preparing => vec![OrderEvent::MarkReady, OrderEvent::Cancel],
            Self::Ready => vec![OrderEvent::PickUp],
            Self::PickedUp | Self::Cancelled | Self::Expired | Self::Unclaimed => vec![],
        }
    }

    /// The usual next step staff take (the kitchen display's bump), if any.
    pub fn staff_next_event(self) -> Option<OrderEvent> {
        self.staff_events()
            .into_iter()
            .find(|e| *e != OrderEvent::Cancel)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum OrderEvent {
    Pay,
    StartPreparing,
    MarkReady,
    PickUp,
    Cancel,
    Expire,
    MarkUnclaimed,
}

impl OrderEvent {
    pub const ALL: [OrderEvent; 7] = [
        Self::Pay,
        Self::StartPreparing,
        Self::MarkReady,
        Self::PickUp,
        Self::Cancel,
        Self::Expire,
        Self::MarkUnclaimed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pay => "pay",
            Self::StartPreparing => "start_preparing",
            Self::MarkReady => "mark_ready",
            Self::PickUp => "pick_up",
            Self::Cancel => "cancel",
            Self::Expire => "expire",
            Self::MarkUnclaimed => "mark_unclaimed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PaymentMode {
    /// Paid at the counter; staff confirm.
    Counter,
    /// Paid with the campus card; the card system confirms through its webhook.
    CampusCard,
}

impl PaymentMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::CampusCard => "campus_card",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "counter" => Some(Self::Counter),
            "campus_card" => Some(Self::CampusCard),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ChosenOption {
    /// The option group's id, as in the menu.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 64))]
    pub group: String,
    /// The choice's id within the group.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 64))]
    pub choice: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LineRequest {
    pub item_id: ItemId,
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 20))]
    pub quantity: u32,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_items = 20))]
    pub options: Vec<ChosenOption>,
}

/// What a student sends to place an order. Prices are never taken from the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct OrderRequest {
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 20))]
    pub lines: Vec<LineRequest>,
    pub payment_mode: PaymentMode,
    /// One of the canteen's pickup slots, when it offers them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pickup_slot: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PricedOption {
    pub group: String,
    pub choice: String,
    pub name_zh: String,
    pub name_en: String,
    pub price_delta_fen: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OrderLine {
    pub item_id: ItemId,
    pub name_zh: String,
    pub name_en: String,
    pub quantity: i64,
    /// The dish's price plus its options' deltas, never below zero.
    pub unit_price_fen: i64,
    pub line_total_fen: i64,
    #[serde(default)]
    pub options: Vec<PricedOption>,
}

/// An order as students and staff see it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OrderView {
    pub id: OrderId,
    pub student_id: StudentId,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Date))]
    pub service_day: NaiveDate,
    /// What the counter calls out; counts from 1 each service day.
    pub pickup_number: i64,
    /// Unguessable; shown as a QR code and checked at hand-over.
    pub pickup_token: String,
    pub state: OrderState,
    /// Increases on every change; staff send the version they saw.
    pub version: i64,
    pub total_fen: i64,
    pub payment_mode: PaymentMode,
    /// The pickup slot chosen, if the canteen offers slots.
    #[serde(default)]
    pub pickup_slot: Option<String>,
    pub lines: Vec<OrderLine>,
    pub placed_at: DateTime<Utc>,
    /// When an unpaid order expires.
    pub expires_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// May the student who placed it cancel it now (the kitchen has not started)?
    #[serde(default)]
    pub can_cancel: bool,
    /// The events staff may send next, the usual next step first.
    #[serde(default)]
    pub next_events: Vec<OrderEvent>,
    /// When the box promised, as the order was placed, it would be ready: from the
    /// queue ahead of it and the kitchen's measured rate, not a fixed number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_promised_at: Option<DateTime<Utc>>,
    /// When the kitchen now expects it ready; only while it is paid or being prepared
    /// (or placed and unpaid: as if paid now). Moves as the kitchen works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_estimate: Option<DateTime<Utc>>,
    /// Whole minutes (rounded up) the order is running late against its promise,
    /// while it is ([`OrderView::late_min`]): the box says so, pages do not work it
    /// out from states.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_late_min: Option<i64>,
}

/// How late an order in the kitchen runs against `promised`: by how much its current
/// estimate (or now, once the promise has passed) is beyond it; `None` within a minute.
pub fn running_late(
    promised: DateTime<Utc>,
    estimate: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<chrono::Duration> {
    let behind = estimate.unwrap_or(now).max(now) - promised;
    (behind >= chrono::Duration::minutes(1)).then_some(behind)
}

/// A lateness in whole minutes, rounded up (59 s late is a minute late).
pub fn whole_minutes(late: chrono::Duration) -> i64 {
    (late.num_seconds() + 59) / 60
}

impl OrderView {
    /// How late the order is running against the promise made when it was placed: by
    /// how much its current estimate (or now, once the promise has passed) is beyond
    /// it. `None` while it is within a minute of the promise, when there is no promise,
    /// while it is not paid (the kitchen does not have it yet), and once it is no
    /// longer being made (ready, handed over, cancelled…).
    pub fn late_by(&self, now: DateTime<Utc>) -> Option<chrono::Duration> {
        let promised = self.ready_promised_at?;
        if !matches!(self.state, OrderState::Paid | OrderState::Preparing) {
            return None;
        }
        running_late(promised, self.ready_estimate, now)
    }

    /// [`OrderView::late_by`] in whole minutes, rounded up.
    pub fn late_min(&self, now: DateTime<Utc>) -> Option<i64> {
        self.late_by(now).map(whole_minutes)
    }

    /// Sets the lifecycle facts (`can_cancel`, `next_events`) from the state.
    pub fn with_facts(mut self) -> Self {
        self.can_cancel = self.state.student_may_cancel();
        self.next_events = self.state.staff_events();
        self
    }
}

/// Daily summary of one item.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ItemCount {
    pub item_id: ItemId,
    pub name_zh: String,
    pub name_en: String,
    pub quantity: i64,
    pub revenue_fen: i64,
}

/// The end-of-day summary.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DaySummary {
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Date))]
    pub service_day: NaiveDate,
    /// Every order placed that day, whatever became of it.
    pub orders: i64,
    pub by_state: std::collections::BTreeMap<String, i64>,
    /// Payments minus refunds.
    pub revenue_fen: i64,
    pub refunds_fen: i64,
    /// Items of orders that were paid and not cancelled.
    pub items: Vec<ItemCount>,
    pub cancelled: i64,
    pub expired: i64,
    pub unclaimed: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_their_names() {
        for s in OrderState::ALL {
            assert_eq!(OrderState::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for e in OrderEvent::ALL {
            assert_eq!(serde_json::to_value(e).unwrap(), e.as_str());
        }
        assert_eq!(OrderState::parse("shipped"), None);
    }

    #[test]
    fn an_order_is_late_when_its_estimate_or_the_clock_passes_its_promise_by_a_minute() {
        let old = r#"{"id":"0190a000-0000-7000-8000-000000000001","student_id":"0190a000-0000-7000-8000-000000000002",
            "service_day":"2026-11-23","pickup_number":3,"pickup_token":"t","state":"paid","version":2,"total_fen":1200,
            "payment_mode":"counter","lines":[],"placed_at":"2026-11-23T04:00:00Z","expires_at":"2026-11-23T04:15:00Z",
            "updated_at":"2026-11-23T04:01:00Z"}"#;
        let mut order: OrderView = serde_json::from_str(old).unwrap();
        let at = |m: i64| order.placed_at + chrono::Duration::minutes(m);
        let now = at(2);
        assert_eq!(order.late_by(now), None, "no promise, never late");
        order.ready_promised_at = Some(at(10));
        order.ready_estimate = Some(at(10) + chrono::Duration::seconds(50));
        assert_eq!(order.late_by(now), None, "within a minute");
        order.ready_estimate = Some(at(14));
        assert_eq!(order.late_by(now), Some(chrono::Duration::minutes(4)));
        order.ready_estimate = Some(at(14) + chrono::Duration::seconds(1));
        assert_eq!(order.late_min(now), Some(5), "whole minutes, rounded up");
        // Past the promise, the clock counts even when the estimate lags behind it.
        order.ready_estimate = None;
        assert_eq!(order.late_by(at(13)), Some(chrono::Duration::minutes(3)));
        order.state = OrderState::Ready;
        assert_eq!(order.late_by(at(13)), None, "made: no longer late");
        order.state = OrderState::Placed;
        assert_eq!(order.late_by(at(13)), None, "not paid: not the kitchen's");
    }

    #[test]
    fn an_older_box_without_lifecycle_facts_still_parses() {
        let old = r#"{"id":"0190a000-0000-7000-8000-000000000001","student_id":"0190a000-0000-7000-8000-000000000002",
            "service_day":"2026-11-23","pickup_number":3,"pickup_token":"t","state":"paid","version":2,"total_fen":1200,
            "payment_mode":"counter","lines":[],"placed_at":"2026-11-23T04:00:00Z","expires_at":"2026-11-23T04:15:00Z",
            "updated_at":"2026-11-23T04:01:00Z","field_from_the_future":true}"#;
        let order: OrderView = serde_json::from_str(old).unwrap();
        assert_eq!(order.state, OrderState::Paid);
        assert_eq!(order.ready_promised_at, None);
        assert_eq!(order.pickup_slot, None);
        assert!(order.next_events.is_empty());
        let order = order.with_facts();
        assert!(order.can_cancel);
        assert_eq!(
            order.next_events,
            [OrderEvent::StartPreparing, OrderEvent::Cancel]
        );
    }
}
