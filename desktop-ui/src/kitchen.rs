//! The kitchen display's state, without I/O: which column an order sits in, oldest
//! first, what is overdue, what a bump does, and the recall window.
//!
//! The lifecycle has no way back (ready does not return to preparing), so a bump is not
//! sent at once: it waits `RECALL_WINDOW_MS` in `PendingBumps`, during which staff can
//! recall it; only then does the app send the transition. Time is passed in.
//!
//! What a bump sends is the box's lifecycle fact (`canteen_api`): the order's
//! `next_events` as the box sent them, or `OrderState::staff_next_event` from an older
//! box that does not send them. It is never re-derived here.

use canteen_api::{ItemId, OrderEvent, OrderId, OrderState, OrderView};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// An order older than this stands out on the display.
pub const OVERDUE_AFTER_S: i64 = 10 * 60;
/// How long a bump can be recalled before it is sent to the box.
pub const RECALL_WINDOW_MS: u64 = 4_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Column {
    /// Placed (unpaid, counter payment) and paid.
    New,
    Preparing,
    Ready,
}

impl Column {
    pub const ALL: [Column; 3] = [Column::New, Column::Preparing, Column::Ready];
}

/// Where an open order is shown; `None` once it has left the display.
pub fn column_of(state: OrderState) -> Option<Column> {
    match state {
        OrderState::Placed | OrderState::Paid => Some(Column::New),
        OrderState::Preparing => Some(Column::Preparing),
        OrderState::Ready => Some(Column::Ready),
        OrderState::PickedUp
        | OrderState::Cancelled
        | OrderState::Expired
        | OrderState::Unclaimed => None,
    }
}

/// What bumping an order sends: the usual next step staff take (the first of the
/// order's `next_events` that is not a cancellation). A ready order leaves by the
/// hand-over field (which checks the pickup number or QR code), not by a bump, so
/// `pick_up` is never a bump.
pub fn bump_event(order: &OrderView) -> Option<OrderEvent> {
    let next = if order.next_events.is_empty() {
        // An older box without lifecycle facts: the same fact, from the state.
        order.state.staff_next_event()
    } else {
        order
            .next_events
            .iter()
            .copied()
            .find(|e| *e != OrderEvent::Cancel)
    };
    next.filter(|e| *e != OrderEvent::PickUp)
}

/// A bump waiting out its recall window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingBump {
    pub order_id: OrderId,
    pub event: OrderEvent,
    /// The order version the bump was made against (stale → the box refuses).
    pub version: i64,
    pub due: Instant,
}

#[derive(Debug, Default)]
pub struct PendingBumps {
    by_order: HashMap<OrderId, PendingBump>,
}

impl PendingBumps {
    /// Schedules the bump of `order`; `None` when its state has no bump or one is
    /// already pending.
    pub fn schedule(&mut self, order: &OrderView, now: Instant) -> Option<&PendingBump> {
        let event = bump_event(order)?;
        if self.by_order.contains_key(&order.id) {
            return None;
        }
        let bump = PendingBump {
            order_id: order.id,
            event,
            version: order.version,
            due: now + Duration::from_millis(RECALL_WINDOW_MS),
        };
        self.by_order.insert(order.id, bump);
        self.by_order.get(&order.id)
    }

    /// Cancels a pending bump; false when there was none (already sent or never made).
    pub fn recall(&mut self, order_id: &OrderId) -> bool {
        self.by_order.remove(order_id).is_some()
    }

    /// Removes and returns the bumps whose window has passed, to be sent now.
    pub fn take_due(&mut self, now: Instant) -> Vec<PendingBump> {
        let due: Vec<OrderId> = self
            .by_order
            .values()
            .filter(|b| b.due <= now)
            .map(|b| b.order_id)
            .collect();
        let mut out: Vec<PendingBump> = due
            .iter()
            .filter_map(|id| self.by_order.remove(id))
            .collect();
        out.sort_by_key(|b| b.due);
        out
    }

    pub fn get(&self, order_id: &OrderId) -> Option<&PendingBump> {
        self.by_order.get(order_id)
    }

    pub fn is_empty(&self) -> bool {
        self.by_order.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LineView {
    pub quantity: i64,
    pub name_zh: String,
    pub name_en: String,
    pub options_zh: Vec<String>,
    pub options_en: Vec<String>,
    pub allergens: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CardView {
    pub id: OrderId,
    pub pickup_number: i64,
    pub state: OrderState,
    pub unpaid: bool,
    pub pickup_slot: Option<String>,
    pub lines: Vec<LineView>,
    /// Every allergen of the order, sorted, for the card's banner.
    pub allergens: Vec<String>,
    pub age_s: i64,
    pub overdue: bool,
    /// When the box promised the student it would be ready.
    pub promised_at: Option<DateTime<Utc>>,
    /// Minutes it is running late against that promise (rounded up), when it is.
    pub late_min: Option<i64>,
    /// What a bump sends now (`None`: no bump from this state).
    pub next_event: Option<OrderEvent>,
    /// Milliseconds left to recall a pending bump.
    pub recall_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ColumnView {
    pub column: Column,
    pub cards: Vec<CardView>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Board {
    pub columns: Vec<ColumnView>,
    pub overdue: usize,
}

/// Builds the display from the open orders: three columns, oldest first in each.
pub fn board(
    orders: &[OrderView],
    allergens: &HashMap<ItemId, Vec<String>>,
    pending: &PendingBumps,
    now: DateTime<Utc>,
    now_instant: Instant,
) -> Board {
    let mut columns: Vec<ColumnView> = Column::ALL
        .iter()
        .map(|&column| ColumnView {
            column,
            cards: Vec::new(),
        })
        .collect();
    let mut sorted: Vec<&OrderView> = orders.iter().collect();
    sorted.sort_by(|a, b| {
        a.placed_at
            .cmp(&b.placed_at)
            .then(a.pickup_number.cmp(&b.pickup_number))
    });
    let mut overdue = 0;
    for order in sorted {
        let Some(column) = column_of(order.state) else {
            continue;
        };
        let age_s = (now - order.placed_at).num_seconds().max(0);
        let is_overdue = age_s > OVERDUE_AFTER_S;
        if is_overdue {
            overdue += 1;
        }
        let late_min = order.late_min(now);
        let mut all_allergens = HashSet::new();
        let lines = order
            .lines
            .iter()
            .map(|l| {
                let item_allergens = allergens.get(&l.item_id).cloned().unwrap_or_default();
                all_allergens.extend(item_allergens.iter().cloned());
                LineView {
                    quantity: l.quantity,
                    name_zh: l.name_zh.clone(),
                    name_en: l.name_en.clone(),
                    options_zh: l.options.iter().map(|o| o.name_zh.clone()).collect(),
                    options_en: l.options.iter().map(|o| o.name_en.clone()).collect(),
                    allergens: item_allergens,
                }
            })
            .collect();
        let mut all_allergens: Vec<String> = all_allergens.into_iter().collect();
        all_allergens.sort();
        let card = CardView {
            id: order.id,
            pickup_number: order.pickup_number,
            state: order.state,
            unpaid: order.state == OrderState::Placed,
            pickup_slot: order.pickup_slot.clone(),
            lines,
            allergens: all_allergens,
            age_s,
            overdue: is_overdue,
            promised_at: order.ready_promised_at,
            late_min,
            next_event: bump_event(order),
            recall_ms: pending.get(&order.id).map(|b| {
                u64::try_from(b.due.saturating_duration_since(now_instant).as_millis())
                    .unwrap_or(u64::MAX)
            }),
        };
        if let Some(col) = columns.iter_mut().find(|c| c.column == column) {
            col.cards.push(card);
        }
    }
    Board { columns, overdue }
}

#[cfg(test)]
mod tests {
    use super::*;
    use canteen_api::PaymentMode;
    use canteen_api::order::{OrderLine, PricedOption};
    use chrono::TimeZone;

    fn at(min: u32, sec: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, 12, min, sec).unwrap()
    }

    /// The order id for pickup number `number` (the tests tell orders by number).
    fn id(number: i64) -> OrderId {
        format!("0190a000-0000-7000-8000-{number:012x}")
            .parse()
            .unwrap()
    }

    fn noodles() -> ItemId {
        "0190a000-0000-7000-8000-00000000beef".parse().unwrap()
    }

    /// An order as the box sends it, lifecycle facts included.
    fn order(number: i64, state: OrderState, placed: DateTime<Utc>) -> OrderView {
        OrderView {
            id: id(number),
            student_id: "0190a000-0000-7000-8000-0000000000aa".parse().unwrap(),
            service_day: placed.date_naive(),
            pickup_number: number,
            pickup_token: "ab".repeat(32),
            state,
            version: 3,
            total_fen: 1500,
            payment_mode: PaymentMode::Counter,
            pickup_slot: None,
            lines: vec![OrderLine {
                item_id: noodles(),
                name_zh: "花生面".into(),
                name_en: "Peanut noodles".into(),
                quantity: 2,
                unit_price_fen: 700,
                line_total_fen: 1500,
                options: vec![PricedOption {
                    group: "size".into(),
                    choice: "large".into(),
                    name_zh: "大份".into(),
                    name_en: "Large".into(),
                    price_delta_fen: 100,
                }],
            }],
            placed_at: placed,
            expires_at: placed + chrono::Duration::minutes(15),
            updated_at: placed,
            can_cancel: false,
            next_events: vec![],
            ready_promised_at: None,
            ready_estimate: None,
            running_late_min: None,
        }
        .with_facts()
    }

    fn allergens() -> HashMap<ItemId, Vec<String>> {
        HashMap::from([(noodles(), vec!["peanut".to_owned(), "gluten".to_owned()])])
    }

    fn numbers(b: &Board) -> Vec<Vec<i64>> {
        b.columns
            .iter()
            .map(|c| c.cards.iter().map(|k| k.pickup_number).collect())
            .collect()
    }

    #[test]
    fn orders_fall_into_columns_oldest_first() {
        let orders = vec![
            order(3, OrderState::Paid, at(5, 0)),
            order(1, OrderState::Placed, at(1, 0)),
            order(2, OrderState::Preparing, at(2, 0)),
            order(4, OrderState::Ready, at(3, 0)),
            order(5, OrderState::PickedUp, at(0, 0)),
            order(6, OrderState::Paid, at(4, 0)),
        ];
        let b = board(
            &orders,
            &allergens(),
            &PendingBumps::default(),
            at(6, 0),
            Instant::now(),
        );
        assert_eq!(numbers(&b), vec![vec![1, 6, 3], vec![2], vec![4]]);
        assert_eq!(b.columns[0].cards[0].id, id(1));
        assert!(b.columns[0].cards[0].unpaid);
        assert!(!b.columns[0].cards[1].unpaid);
    }

    #[test]
    fn overdue_after_ten_minutes_and_allergens_carried() {
        let orders = vec![
            order(1, OrderState::Preparing, at(0, 0)),
            order(2, OrderState::Preparing, at(0, 30)),
            order(3, OrderState::Paid, at(9, 0)),
        ];
        let b = board(
            &orders,
            &allergens(),
            &PendingBumps::default(),
            at(10, 30),
            Instant::now(),
        );
        let prep = &b.columns[1].cards;
        assert_eq!(prep[0].age_s, 630);
        assert!(prep[0].overdue);
        // Exactly ten minutes is not yet overdue.
        assert_eq!(prep[1].age_s, 600);
        assert!(!prep[1].overdue);
        assert!(!b.columns[0].cards[0].overdue);
        assert_eq!(b.overdue, 1);
        assert_eq!(prep[0].allergens, vec!["gluten", "peanut"]);
        assert_eq!(prep[0].lines[0].options_en, vec!["Large"]);
    }

    #[test]
    fn bump_targets_are_the_boxs_next_step() {
        let bump = |state| bump_event(&order(1, state, at(0, 0)));
        assert_eq!(bump(OrderState::Placed), Some(OrderEvent::Pay));
        assert_eq!(bump(OrderState::Paid), Some(OrderEvent::StartPreparing));
        assert_eq!(bump(OrderState::Preparing), Some(OrderEvent::MarkReady));
        // Ready leaves by the hand-over field, not by a bump.
        assert_eq!(bump(OrderState::Ready), None);
        assert_eq!(bump(OrderState::PickedUp), None);
        assert_eq!(bump(OrderState::Cancelled), None);
        assert_eq!(column_of(OrderState::Cancelled), None);
        for state in OrderState::ALL {
            // An older box sends no `next_events`: the same bump, from the state.
            let mut old = order(1, state, at(0, 0));
            old.next_events.clear();
            assert_eq!(bump_event(&old), bump(state), "{state:?}");
        }
        // What the box sent wins: it decides the lifecycle.
        let mut only_cancel = order(1, OrderState::Paid, at(0, 0));
        only_cancel.next_events = vec![OrderEvent::Cancel];
        assert_eq!(bump_event(&only_cancel), None);
    }

    #[test]
    fn a_bump_waits_out_the_recall_window_and_can_be_recalled() {
        let t0 = Instant::now();
        let mut pending = PendingBumps::default();
        let o = order(1, OrderState::Preparing, at(0, 0));
        let b = pending.schedule(&o, t0).cloned().unwrap();
        assert_eq!(b.event, OrderEvent::MarkReady);
        assert_eq!(b.version, 3);
        // A second bump of the same order while one is pending does nothing.
        assert!(pending.schedule(&o, t0).is_none());
        let window = Duration::from_millis(RECALL_WINDOW_MS);
        assert!(pending.take_due(t0 + window / 2).is_empty());
        let shown = board(
            std::slice::from_ref(&o),
            &allergens(),
            &pending,
            at(1, 0),
            t0 + window / 2,
        );
        assert_eq!(
            shown.columns[1].cards[0].recall_ms,
            Some(RECALL_WINDOW_MS / 2)
        );
        assert!(pending.recall(&o.id));
        assert!(!pending.recall(&o.id));
        assert!(pending.take_due(t0 + window * 2).is_empty());

        // Not recalled: due exactly at the end of the window, sent once.
        pending.schedule(&o, t0).unwrap();
        let due = pending.take_due(t0 + window);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].order_id, o.id);
        assert!(pending.take_due(t0 + window * 2).is_empty());
        assert!(!pending.recall(&o.id), "too late to recall a sent bump");
        // A ready order has no bump to schedule.
        let ready = order(2, OrderState::Ready, at(0, 0));
        assert!(pending.schedule(&ready, t0).is_none());
        assert!(pending.is_empty());
    }

    #[test]
    fn cards_serialise_as_the_page_reads_them() {
        let o = order(7, OrderState::Paid, at(0, 0));
        let b = board(
            std::slice::from_ref(&o),
            &allergens(),
            &PendingBumps::default(),
            at(1, 0),
            Instant::now(),
        );
        let card = serde_json::to_value(&b.columns[0].cards[0]).unwrap();
        assert_eq!(card["id"], o.id.to_string());
        assert_eq!(card["state"], "paid");
        assert_eq!(card["next_event"], "start_preparing");
        assert_eq!(card["recall_ms"], serde_json::Value::Null);
        assert_eq!(card["lines"][0]["allergens"][0], "peanut");
    }
}
