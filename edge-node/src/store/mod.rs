//! The store: the only code that uses rusqlite. It opens the database, runs the single
//! writer, and applies what the core decided (orders, stock, pickup, payments, the
//! outbox, the documents' chunks, accounts). It never imports `ops`, `http`, `link`,
//! `server` or `app` (a test in `tests/layers.rs` checks).
//!
//! The writer (`writer`) is generic over what it publishes; the box's effects are
//! [`Effect`], published after each commit into the in-memory views.

pub mod accounts;
pub mod backup;
pub mod db;
pub mod docs;
pub mod kitchen;
pub mod meta;
pub mod orders;
pub mod outbox;
pub mod payments;
pub mod pickup;
pub mod secrets;
pub mod stock;
pub mod writer;

use crate::core::canteen::{Canteen, CanteenStore};
use crate::core::menu::{Menu, MenuStore};
use canteen_api::events::OutboxEvent;
use canteen_api::stock::StockLevel;
use docs::Documents;
use pickup::SlotUsage;
use std::sync::Arc;
use stock::StockView;
use tokio::sync::broadcast;

pub use db::StoreError;
pub use writer::WriteError;

/// Something a committed write changed that in-memory readers must learn about.
#[derive(Debug, Clone)]
pub enum Effect {
    Event(Box<OutboxEvent>),
    Stock(StockLevel),
    Slot(pickup::SlotTaken),
    Menu(Arc<Menu>),
    Settings(Arc<Canteen>),
    /// Accounts created or changed (active, role, blocked).
    Accounts(Vec<(uuid::Uuid, accounts::AccountState)>),
}

/// What a write closure of the box sees.
pub type WriteCtx<'a> = writer::WriteCtx<'a, Effect>;
/// The box's writer.
pub type Writer = writer::Writer<Effect>;

/// Publishes committed effects into the in-memory projections and the event stream.
pub struct Projections {
    pub docs: Arc<Documents>,
    pub menu: Arc<MenuStore>,
    pub canteen: Arc<CanteenStore>,
    pub stock: Arc<StockView>,
    pub slots: Arc<SlotUsage>,
    pub kitchen: Arc<kitchen::KitchenView>,
    pub accounts: Arc<accounts::AccountStates>,
    pub events: broadcast::Sender<OutboxEvent>,
    pub outbox_changed: Arc<tokio::sync::Notify>,
    pub docs_changed: Arc<tokio::sync::Notify>,
}

impl writer::Publisher<Effect> for Projections {
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
                    self.kitchen.apply(&event, &self.menu);
                    // No subscriber is fine: nobody is watching.
                    let _ = self.events.send(*event);
                }
                Effect::Stock(level) => self.stock.apply(level),
                Effect::Slot(taken) => self.slots.apply(taken),
                Effect::Menu(menu) => self.menu.replace(menu),
                Effect::Settings(canteen) => self.canteen.replace(canteen),
                Effect::Accounts(changed) => self.accounts.apply(changed),
            }
        }
    }

    fn rolled_back(&self, conn: &rusqlite::Connection) {
        self.docs.reload(conn);
    }
}
