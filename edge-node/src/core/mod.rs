//! The pure order core: what the box decides, with no I/O. No rusqlite, tokio or axum
//! here (a test in `tests/layers.rs` checks), no clock reads (times are passed in).
//!
//! - `lifecycle`: `decide(order, event, actor) -> Transition` (stock moves, money moves,
//!   slot release, the event to append),
//! - `pricing`: a request checked and priced against the menu and settings,
//! - `stock`: stock arithmetic (reservations, sales, staff actions, quota changes),
//! - `canteen`: the settings resolved (time zone, opening hours, service day, slots),
//! - `menu`: the menu projection readers use,
//! - `kitchen`: ready-time predictions and slot capacity from the live kitchen,
//! - `pickup`, `payment`: pickup codes and tokens; the campus card's signature,
//! - `clock`: the injected clock and the one timestamp format.

pub mod canteen;
pub mod clock;
pub mod kitchen;
pub mod lifecycle;
pub mod menu;
pub mod payment;
pub mod pickup;
pub mod pricing;
pub mod stock;
