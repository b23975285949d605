//! The order lifecycle as a pure decision: given an order's facts, an event and who
//! causes it, [`decide`] returns the [`Transition`] (new state and version, the stock
//! moves, the money move, the pickup slot to release, the outbox event to append) or
//! refuses. The store applies a transition; nothing here reads or writes anything.
//!
//! ```text
//! placed ──pay──> paid ──> preparing ──> ready ──> picked_up
//!   │               │           │
//!   ├─timeout─> expired         └──(staff)──> cancelled (refund recorded if paid)
//!   └─(student|staff)─> cancelled                 ready ──(closing time)──> unclaimed
//! ```
//!
//! A paid order may still be cancelled by the student or staff before the kitchen
//! starts (a refund is recorded); once preparing, only staff may cancel.

use canteen_api::events::{MoneyKind, OrderMoved};
use canteen_api::ids::{ItemId, OrderId, StaffId, StudentId};
use canteen_api::order::{OrderEvent, OrderLine, OrderState, PaymentMode};
use chrono::NaiveDate;
use std::collections::BTreeMap;

/// Who causes a transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    Student(StudentId),
    Staff(StaffId),
    /// The campus-card system, through its signed webhook, with its transaction id.
    CampusCard(String),
    /// The box itself: expiry and closing time.
    System,
}

impl Actor {
    pub fn describe(&self) -> String {
        match self {
            Self::Student(id) => format!("student:{id}"),
            Self::Staff(id) => format!("staff:{id}"),
            Self::CampusCard(txn) => format!("campus_card:{txn}"),
            Self::System => "system".into(),
        }
    }
}

/// Why a transition is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("this order belongs to someone else")]
    NotYours,
    #[error("cannot {event} an order that is {from}", event = .event.as_str(), from = .from.as_str())]
    NotAllowed { from: OrderState, event: OrderEvent },
    #[error("the kitchen has started on this order; ask at the counter")]
    KitchenStarted,
    #[error("only {allowed} may {event} an order", event = .event.as_str())]
    NotPermitted {
        event: OrderEvent,
        allowed: &'static str,
    },
    #[error("the order changed meanwhile (now version {current}); reload and try again")]
    Stale { current: i64 },
}

/// The lifecycle: the state an event leads to, if `actor` may cause it from `from`.
pub fn next_state(
    from: OrderState,
    event: OrderEvent,
    actor: &Actor,
) -> Result<OrderState, Refusal> {
    use OrderEvent as E;
    use OrderState as S;
    let staff = matches!(actor, Actor::Staff(_));
    let student = matches!(actor, Actor::Student(_));
    let system = matches!(actor, Actor::System);
    let card = matches!(actor, Actor::CampusCard(_));
    let (to, permitted, allowed) = match (from, event) {
        (S::Placed, E::Pay) => (S::Paid, staff || card, "staff or the campus-card system"),
        (S::Placed, E::Expire) => (S::Expired, system, "the box"),
        (S::Placed | S::Paid, E::Cancel) => {
            (S::Cancelled, staff || student, "staff or the student")
        }
        (S::Paid, E::StartPreparing) => (S::Preparing, staff, "staff"),
        (S::Preparing, E::Cancel) => {
            if student {
                return Err(Refusal::KitchenStarted);
            }
            (S::Cancelled, staff, "staff")
        }
        (S::Preparing, E::MarkReady) => (S::Ready, staff, "staff"),
        (S::Ready, E::PickUp) => (S::PickedUp, staff, "staff"),
        (S::Ready, E::MarkUnclaimed) => (S::Unclaimed, system, "the box"),
        _ => return Err(Refusal::NotAllowed { from, event }),
    };
    if !permitted {
        return Err(Refusal::NotPermitted { event, allowed });
    }
    Ok(to)
}

/// What the core needs to know of an order to decide a transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderFacts {
    pub id: OrderId,
    pub student_id: StudentId,
    pub service_day: NaiveDate,
    pub state: OrderState,
    pub version: i64,
    pub total_fen: i64,
    pub payment_mode: PaymentMode,
    /// Portions per item, summed over the lines.
    pub portions: Vec<(ItemId, i64)>,
    pub pickup_slot: Option<String>,
    /// How it was paid, when it was (a refund goes back the same way).
    pub paid_with: Option<PaymentMode>,
}

/// Portions per item of an order's lines, in item order.
pub fn portions(lines: &[OrderLine]) -> Vec<(ItemId, i64)> {
    let mut per_item: BTreeMap<ItemId, i64> = BTreeMap::new();
    for line in lines {
        *per_item.entry(line.item_id).or_default() += line.quantity;
    }
    per_item.into_iter().collect()
}

/// How a transition moves an item's stock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StockMove {
    /// Payment: the reservation becomes a sale.
    Sell,
    /// Expiry or cancellation of an unpaid order: the reservation is given back.
    ReleaseReserved,
    /// Cancellation of a paid order: the sale is given back.
    ReleaseSold,
}

/// Money a transition records: a payment or a refund of the whole order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoneyDecision {
    pub kind: MoneyKind,
    pub method: PaymentMode,
    pub amount_fen: i64,
    /// The campus-card transaction id, for payments by card.
    pub external_txn_id: Option<String>,
    /// The staff member who took or refunded the money.
    pub staff: Option<StaffId>,
}

/// Everything a transition changes, for the store to apply in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub order: OrderId,
    pub to: OrderState,
    pub version: i64,
    /// (item, portions, how) for every item of the order.
    pub stock: Vec<(ItemId, i64, StockMove)>,
    pub money: Option<MoneyDecision>,
    /// The pickup slot the order gives back.
    pub release_slot: Option<String>,
    /// The outbox event; the store fills in `payment` once the money is recorded.
    pub event: OrderMoved,
}

/// Decides `event` on `order` by `actor`: ownership, version, lifecycle, permissions,
/// then what moves.
pub fn decide(
    order: &OrderFacts,
    event: OrderEvent,
    actor: &Actor,
    expected_version: Option<i64>,
) -> Result<Transition, Refusal> {
    if let Actor::Student(me) = actor
        && *me != order.student_id
    {
        return Err(Refusal::NotYours);
    }
    if let Some(seen) = expected_version
        && seen != order.version
    {
        return Err(Refusal::Stale {
            current: order.version,
        });
    }
    let from = order.state;
    let to = next_state(from, event, actor)?;
    let staff = match actor {
        Actor::Staff(s) => Some(*s),
        _ => None,
    };
    let (stock_move, money) = match (from, to) {
        (OrderState::Placed, OrderState::Paid) => {
            let (method, txn) = match actor {
                Actor::CampusCard(txn) => (PaymentMode::CampusCard, Some(txn.clone())),
                _ => (PaymentMode::Counter, None),
            };
            (
                Some(StockMove::Sell),
                Some(MoneyDecision {
                    kind: MoneyKind::Payment,
                    method,
                    amount_fen: order.total_fen,
                    external_txn_id: txn,
                    staff,
                }),
            )
        }
        (OrderState::Placed, OrderState::Cancelled | OrderState::Expired) => {
            (Some(StockMove::ReleaseReserved), None)
        }
        (OrderState::Paid | OrderState::Preparing, OrderState::Cancelled) => (
            Some(StockMove::ReleaseSold),
            Some(MoneyDecision {
                kind: MoneyKind::Refund,
                method: order.paid_with.unwrap_or(order.payment_mode),
                amount_fen: order.total_fen,
                external_txn_id: None,
                staff,
            }),
        ),
        _ => (None, None),
    };
    let stock = stock_move.map_or_else(Vec::new, |how| {
        order
            .portions
            .iter()
            .map(|(item, qty)| (*item, *qty, how))
            .collect()
    });
    let release_slot = match to {
        OrderState::Cancelled | OrderState::Expired => order.pickup_slot.clone(),
        _ => None,
    };
    Ok(Transition {
        order: order.id,
        to,
        version: order.version + 1,
        stock,
        money,
        release_slot,
        event: OrderMoved {
            v: canteen_api::events::EVENT_VERSION,
            order_id: order.id,
            student_id: order.student_id,
            service_day: order.service_day,
            from,
            to,
            event,
            version: order.version + 1,
            actor: actor.describe(),
            payment: None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use OrderEvent as E;
    use OrderState as S;

    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    enum Who {
        Staff,
        Student,
        Card,
        System,
    }

    fn actor(who: Who, student: StudentId) -> Actor {
        match who {
            Who::Staff => Actor::Staff(StaffId::new()),
            Who::Student => Actor::Student(student),
            Who::Card => Actor::CampusCard("t1".into()),
            Who::System => Actor::System,
        }
    }

    /// Every (state, event) pair with exactly who may cause it and where it leads.
    /// Everything not in the table is refused; a swapped permission fails here.
    #[test]
    fn permissions_table() {
        use Who::*;
        let table: &[(S, E, S, &[Who])] = &[
            (S::Placed, E::Pay, S::Paid, &[Staff, Card]),
            (S::Placed, E::Expire, S::Expired, &[System]),
            (S::Placed, E::Cancel, S::Cancelled, &[Staff, Student]),
            (S::Paid, E::Cancel, S::Cancelled, &[Staff, Student]),
            (S::Paid, E::StartPreparing, S::Preparing, &[Staff]),
            (S::Preparing, E::Cancel, S::Cancelled, &[Staff]),
            (S::Preparing, E::MarkReady, S::Ready, &[Staff]),
            (S::Ready, E::PickUp, S::PickedUp, &[Staff]),
            (S::Ready, E::MarkUnclaimed, S::Unclaimed, &[System]),
        ];
        let student = StudentId::new();
        for from in S::ALL {
            for event in E::ALL {
                let row = table.iter().find(|r| r.0 == from && r.1 == event);
                for who in [Staff, Student, Card, System] {
                    let got = next_state(from, event, &actor(who, student));
                    match row {
                        Some((_, _, to, allowed)) if allowed.contains(&who) => {
                            assert_eq!(got, Ok(*to), "{from:?} + {event:?} by {who:?}")
                        }
                        Some(_) => assert!(
                            matches!(
                                got,
                                Err(Refusal::NotPermitted { .. } | Refusal::KitchenStarted)
                            ),
                            "{from:?} + {event:?} by {who:?}: {got:?}"
                        ),
                        None => assert_eq!(
                            got,
                            Err(Refusal::NotAllowed { from, event }),
                            "{from:?} + {event:?} by {who:?}"
                        ),
                    }
                }
            }
        }
        assert_eq!(
            next_state(S::Preparing, E::Cancel, &actor(Student, student)),
            Err(Refusal::KitchenStarted)
        );
    }

    /// The facts clients read from `canteen-api` agree with what the core decides.
    #[test]
    fn client_facts_agree_with_the_core() {
        let student = StudentId::new();
        let staff = Actor::Staff(StaffId::new());
        for state in S::ALL {
            let may_cancel = next_state(state, E::Cancel, &Actor::Student(student)).is_ok();
            assert_eq!(state.student_may_cancel(), may_cancel, "{state:?}");
            let staff_can: Vec<E> = E::ALL
                .into_iter()
                .filter(|e| next_state(state, *e, &staff).is_ok())
                .collect();
            let mut listed = state.staff_events();
            listed.sort_by_key(|e| e.as_str());
            let mut staff_can_sorted = staff_can.clone();
            staff_can_sorted.sort_by_key(|e| e.as_str());
            assert_eq!(listed, staff_can_sorted, "{state:?}");
            assert_eq!(state.is_open(), !staff_can.is_empty(), "{state:?}");
        }
    }

    fn facts(state: S) -> OrderFacts {
        OrderFacts {
            id: OrderId::new(),
            student_id: StudentId::new(),
            service_day: "2026-11-23".parse().unwrap(),
            state,
            version: 4,
            total_fen: 2300,
            payment_mode: PaymentMode::Counter,
            portions: vec![(ItemId::new(), 2), (ItemId::new(), 1)],
            pickup_slot: Some("s1200".into()),
            paid_with: Some(PaymentMode::CampusCard),
        }
    }

    #[test]
    fn a_transition_lists_what_moves() {
        let staff = StaffId::new();
        let paid = decide(&facts(S::Placed), E::Pay, &Actor::Staff(staff), Some(4)).unwrap();
        assert_eq!(paid.to, S::Paid);
        assert_eq!(paid.version, 5);
        assert!(paid.stock.iter().all(|m| m.2 == StockMove::Sell));
        assert_eq!(paid.stock.len(), 2);
        let money = paid.money.unwrap();
        assert_eq!(
            (money.kind, money.method, money.amount_fen, money.staff),
            (MoneyKind::Payment, PaymentMode::Counter, 2300, Some(staff))
        );
        assert_eq!(paid.release_slot, None);

        let order = facts(S::Paid);
        let refund = decide(&order, E::Cancel, &Actor::Student(order.student_id), None).unwrap();
        assert!(refund.stock.iter().all(|m| m.2 == StockMove::ReleaseSold));
        let money = refund.money.unwrap();
        // Refunded the way it was paid.
        assert_eq!(
            (money.kind, money.method),
            (MoneyKind::Refund, PaymentMode::CampusCard)
        );
        assert_eq!(refund.release_slot.as_deref(), Some("s1200"));

        let expired = decide(&facts(S::Placed), E::Expire, &Actor::System, None).unwrap();
        assert!(
            expired
                .stock
                .iter()
                .all(|m| m.2 == StockMove::ReleaseReserved)
        );
        assert_eq!(expired.money, None);

        let ready = decide(
            &facts(S::Preparing),
            E::MarkReady,
            &Actor::Staff(staff),
            None,
        )
        .unwrap();
        assert!(ready.stock.is_empty() && ready.money.is_none() && ready.release_slot.is_none());
    }

    #[test]
    fn strangers_and_stale_versions_are_refused_before_anything() {
        let order = facts(S::Placed);
        assert_eq!(
            decide(&order, E::Cancel, &Actor::Student(StudentId::new()), None),
            Err(Refusal::NotYours)
        );
        assert_eq!(
            decide(&order, E::Pay, &Actor::Staff(StaffId::new()), Some(3)),
            Err(Refusal::Stale { current: 4 })
        );
    }
}
