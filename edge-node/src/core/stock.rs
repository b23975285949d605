//! Stock arithmetic: remaining = quota + adjusted − reserved − sold, never below zero.
//! Placing reserves, payment turns the reservation into a sale, expiry and cancellation
//! give back; staff restock, adjust and mark sold out; a quota change for a day already
//! started never drops below what is reserved and sold. Pure: the store applies what
//! these functions decide (and a CHECK constraint enforces "never below zero" again).

use super::lifecycle::StockMove;
use super::menu::MenuItem;
use canteen_api::events::StockChange;
use canteen_api::stock::{ADJUST_MAX, REASON_MAX, StaffStockAction, StockLevel, UNLIMITED_QUOTA};

pub use canteen_api::stock::StockLevel as Level;

/// Why stock cannot move.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StockRefusal {
    #[error("{name} is sold out")]
    SoldOut {
        item_id: canteen_api::ItemId,
        name: String,
    },
    #[error("not enough {name} left for this order; order fewer")]
    NotEnough {
        item_id: canteen_api::ItemId,
        name: String,
        remaining: i64,
    },
    #[error("that would leave {name} below zero ({remaining} left)")]
    BelowZero { name: String, remaining: i64 },
    #[error("the count must be between 1 and {ADJUST_MAX}")]
    BadCount,
    #[error("the reason must be at most {REASON_MAX} characters")]
    BadReason,
}

/// The quota a day starts with: the menu's daily quota, or "unlimited".
pub fn day_quota(item: &MenuItem) -> i64 {
    item.fields.daily_quota.map_or(UNLIMITED_QUOTA, i64::from)
}

/// Checks that `qty` portions can be reserved.
pub fn check_reserve(level: &StockLevel, item: &MenuItem, qty: i64) -> Result<(), StockRefusal> {
    if level.is_sold_out() {
        return Err(StockRefusal::SoldOut {
            item_id: item.id,
            name: item.fields.name_en.clone(),
        });
    }
    if level.remaining() < qty {
        return Err(StockRefusal::NotEnough {
            item_id: item.id,
            name: item.fields.name_en.clone(),
            remaining: level.remaining(),
        });
    }
    Ok(())
}

/// The level after reserving `qty` (checked with [`check_reserve`]).
pub fn reserved(level: &StockLevel, qty: i64) -> StockLevel {
    StockLevel {
        reserved: level.reserved + qty,
        ..level.clone()
    }
}

/// The level after a transition's move of `qty` portions.
pub fn moved(level: &StockLevel, how: StockMove, qty: i64) -> StockLevel {
    let mut next = level.clone();
    match how {
        StockMove::Sell => {
            next.reserved -= qty;
            next.sold += qty;
        }
        StockMove::ReleaseReserved => next.reserved -= qty,
        StockMove::ReleaseSold => next.sold -= qty,
    }
    next
}

/// What a staff action changes: the ledger entry's delta and the new level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffChange {
    pub change: StockChange,
    /// What the ledger records (portions added or removed; 0 for sold-out marks).
    pub delta: i64,
    pub level: StockLevel,
}

/// Decides a staff stock action against the current level.
pub fn staff_change(
    level: &StockLevel,
    item: &MenuItem,
    action: &StaffStockAction,
) -> Result<StaffChange, StockRefusal> {
    let mut next = level.clone();
    let (change, delta) = match action {
        StaffStockAction::Restock { count } => {
            if !(1..=ADJUST_MAX).contains(count) {
                return Err(StockRefusal::BadCount);
            }
            next.adjusted += count;
            (StockChange::Restocked, *count)
        }
        StaffStockAction::Adjust { delta, reason } => {
            if *delta == 0 || delta.abs() > ADJUST_MAX {
                return Err(StockRefusal::BadCount);
            }
            if reason.chars().count() > REASON_MAX {
                return Err(StockRefusal::BadReason);
            }
            if level.remaining() + delta < 0 {
                return Err(StockRefusal::BelowZero {
                    name: item.fields.name_en.clone(),
                    remaining: level.remaining(),
                });
            }
            next.adjusted += delta;
            (StockChange::Adjusted, *delta)
        }
        StaffStockAction::SoldOut {} => {
            next.sold_out = true;
            (StockChange::SoldOut, 0)
        }
        StaffStockAction::Back {} => {
            next.sold_out = false;
            (StockChange::Back, 0)
        }
    };
    Ok(StaffChange {
        change,
        delta,
        level: next,
    })
}

/// The quota a started day takes when the menu's quota changes: the new one, but never
/// below what is already reserved and sold (net of adjustments).
pub fn requota(level: &StockLevel, quota: i64) -> i64 {
    quota.max(level.reserved + level.sold - level.adjusted)
}

#[cfg(test)]
mod tests {
    //! A model of one service day driven through the core alone: random sequences of
    //! place / pay / cancel / expire / restock / adjust / hand-over must keep every
    //! item's stock at or above zero, and `reserved + sold` equal to the portions of
    //! the orders that hold them.

    use super::*;
    use crate::core::lifecycle::{Actor, OrderFacts, decide};
    use canteen_api::ids::{ItemId, OrderId, StaffId, StudentId};
    use canteen_api::order::{OrderEvent, OrderState, PaymentMode};
    use crdt::menu::ItemFields;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn item(quota: u32) -> MenuItem {
        MenuItem {
            id: ItemId::new(),
            fields: ItemFields {
                name_zh: "菜".into(),
                name_en: "Dish".into(),
                category: "main".into(),
                price_fen: 1000,
                option_groups: vec![],
                allergens: vec![],
                daily_quota: Some(quota),
                available: true,
                archived: false,
                sort_key: 0,
            },
        }
    }

    #[derive(Debug, Clone)]
    enum Step {
        Place { lines: Vec<(usize, i64)> },
        Pay(usize),
        Cancel(usize),
        Expire(usize),
        Prepare(usize),
        Ready(usize),
        HandOver(usize),
        Restock(usize, i64),
        Adjust(usize, i64),
        SoldOut(usize),
        Back(usize),
        Requota(usize, u32),
    }

    fn step() -> impl Strategy<Value = Step> {
        let idx = 0usize..8;
        prop_oneof![
            4 => prop::collection::vec((0usize..3, 1i64..6), 1..4).prop_map(|lines| Step::Place { lines }),
            3 => idx.clone().prop_map(Step::Pay),
            1 => idx.clone().prop_map(Step::Cancel),
            1 => idx.clone().prop_map(Step::Expire),
            2 => idx.clone().prop_map(Step::Prepare),
            2 => idx.clone().prop_map(Step::Ready),
            2 => idx.clone().prop_map(Step::HandOver),
            1 => (0usize..3, -3i64..20).prop_map(|(i, n)| Step::Restock(i, n)),
            1 => (0usize..3, -15i64..15).prop_map(|(i, n)| Step::Adjust(i, n)),
            1 => (0usize..3).prop_map(Step::SoldOut),
            1 => (0usize..3).prop_map(Step::Back),
            1 => (0usize..3, 0u32..30).prop_map(|(i, q)| Step::Requota(i, q)),
        ]
    }

    struct Day {
        items: Vec<MenuItem>,
        levels: BTreeMap<ItemId, StockLevel>,
        orders: Vec<OrderFacts>,
    }

    impl Day {
        fn new() -> Self {
            let items = vec![item(10), item(3), item(25)];
            let levels = items
                .iter()
                .map(|it| {
                    (
                        it.id,
                        StockLevel {
                            item_id: it.id,
                            service_day: "2026-11-23".parse().unwrap(),
                            quota: day_quota(it),
                            adjusted: 0,
                            reserved: 0,
                            sold: 0,
                            sold_out: false,
                        },
                    )
                })
                .collect();
            Self {
                items,
                levels,
                orders: vec![],
            }
        }

        fn event(&mut self, n: usize, event: OrderEvent, actor: Actor) {
            let Some(order) = self.orders.get(n % self.orders.len().max(1)).cloned() else {
                return;
            };
            let Ok(t) = decide(&order, event, &actor, Some(order.version)) else {
                return;
            };
            for (item, qty, how) in &t.stock {
                let level = &self.levels[item];
                self.levels.insert(*item, moved(level, *how, *qty));
            }
            let at = n % self.orders.len();
            let o = &mut self.orders[at];
            o.state = t.to;
            o.version = t.version;
            if t.money.is_some() && t.to == OrderState::Paid {
                o.paid_with = Some(PaymentMode::Counter);
            }
        }

        fn apply(&mut self, step: &Step) {
            let staff = Actor::Staff(StaffId::new());
            match step {
                Step::Place { lines } => {
                    let mut portions: BTreeMap<ItemId, i64> = BTreeMap::new();
                    for (i, qty) in lines {
                        *portions.entry(self.items[*i].id).or_default() += qty;
                    }
                    let mut next = self.levels.clone();
                    for (id, qty) in &portions {
                        let it = self.items.iter().find(|it| it.id == *id).unwrap();
                        if check_reserve(&next[id], it, *qty).is_err() {
                            return;
                        }
                        next.insert(*id, reserved(&next[id], *qty));
                    }
                    self.levels = next;
                    self.orders.push(OrderFacts {
                        id: OrderId::new(),
                        student_id: StudentId::new(),
                        service_day: "2026-11-23".parse().unwrap(),
                        state: OrderState::Placed,
                        version: 1,
                        total_fen: 1000,
                        payment_mode: PaymentMode::Counter,
                        portions: portions.into_iter().collect(),
                        pickup_slot: None,
                        paid_with: None,
                    });
                }
                Step::Pay(n) => self.event(*n, OrderEvent::Pay, staff),
                Step::Cancel(n) => {
                    let student = self
                        .orders
                        .get(n % self.orders.len().max(1))
                        .map(|o| o.student_id);
                    if let Some(s) = student {
                        self.event(*n, OrderEvent::Cancel, Actor::Student(s));
                    }
                    self.event(*n, OrderEvent::Cancel, staff);
                }
                Step::Expire(n) => self.event(*n, OrderEvent::Expire, Actor::System),
                Step::Prepare(n) => self.event(*n, OrderEvent::StartPreparing, staff),
                Step::Ready(n) => self.event(*n, OrderEvent::MarkReady, staff),
                Step::HandOver(n) => self.event(*n, OrderEvent::PickUp, staff),
                Step::Restock(i, count) => {
                    self.staff(*i, &StaffStockAction::Restock { count: *count })
                }
                Step::Adjust(i, delta) => self.staff(
                    *i,
                    &StaffStockAction::Adjust {
                        delta: *delta,
                        reason: "spilled".into(),
                    },
                ),
                Step::SoldOut(i) => self.staff(*i, &StaffStockAction::SoldOut {}),
                Step::Back(i) => self.staff(*i, &StaffStockAction::Back {}),
                Step::Requota(i, q) => {
                    let id = self.items[*i].id;
                    let level = self.levels[&id].clone();
                    let quota = requota(&level, i64::from(*q));
                    self.levels.insert(id, StockLevel { quota, ..level });
                }
            }
        }

        fn staff(&mut self, i: usize, action: &StaffStockAction) {
            let it = self.items[i].clone();
            if let Ok(c) = staff_change(&self.levels[&it.id], &it, action) {
                self.levels.insert(it.id, c.level);
            }
        }

        fn check(&self) {
            for it in &self.items {
                let level = &self.levels[&it.id];
                let held = |states: &[OrderState]| -> i64 {
                    self.orders
                        .iter()
                        .filter(|o| states.contains(&o.state))
                        .flat_map(|o| o.portions.iter())
                        .filter(|(id, _)| *id == it.id)
                        .map(|(_, q)| q)
                        .sum()
                };
                assert!(level.remaining() >= 0, "{level:?}");
                assert!(level.reserved >= 0 && level.sold >= 0, "{level:?}");
                assert_eq!(level.reserved, held(&[OrderState::Placed]), "reserved");
                assert_eq!(
                    level.sold,
                    held(&[
                        OrderState::Paid,
                        OrderState::Preparing,
                        OrderState::Ready,
                        OrderState::PickedUp
                    ]),
                    "sold"
                );
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn stock_never_goes_negative_and_matches_the_orders(steps in prop::collection::vec(step(), 1..80)) {
            let mut day = Day::new();
            for s in &steps {
                day.apply(s);
                day.check();
            }
        }
    }

    #[test]
    fn a_reservation_beyond_what_is_left_is_refused_with_the_count() {
        let it = item(3);
        let level = StockLevel {
            item_id: it.id,
            service_day: "2026-11-23".parse().unwrap(),
            quota: 3,
            adjusted: 0,
            reserved: 2,
            sold: 0,
            sold_out: false,
        };
        assert!(matches!(
            check_reserve(&level, &it, 2),
            Err(StockRefusal::NotEnough { remaining: 1, .. })
        ));
        assert_eq!(check_reserve(&level, &it, 1), Ok(()));
        let marked = StockLevel {
            sold_out: true,
            ..level
        };
        assert!(matches!(
            check_reserve(&marked, &it, 1),
            Err(StockRefusal::SoldOut { .. })
        ));
    }
}
