//! The app's state while it runs: the logged-in box, the last open orders, allergens
//! per item, pending bumps and the link state. One `std::sync::Mutex`, never held
//! across an `.await`: commands copy what they need (the client is cheap to clone),
//! talk to the box, then lock again to store the answer.

use crate::client::BoxClient;
use crate::kitchen::{self, Board, PendingBumps};
use crate::settings::Remembered;
use canteen_api::staff::{Role, SyncState};
use canteen_api::{ItemId, OrderView};
use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Default)]
pub struct Session {
    pub client: Option<BoxClient>,
    /// The logged-in account's role (`None`: logged out).
    pub role: Option<Role>,
    pub name: String,
    pub orders: Vec<OrderView>,
    pub allergens: HashMap<ItemId, Vec<String>>,
    pub pending: PendingBumps,
    pub lan_connected: bool,
    pub lan_error: Option<String>,
    /// A lost link was announced and its return not yet.
    pub link_loss_announced: bool,
    pub sync: Option<SyncState>,
    /// Stops the event-stream reader of the current login.
    pub stream_stop: Option<CancellationToken>,
}

impl Session {
    pub fn board(&self) -> Board {
        kitchen::board(
            &self.orders,
            &self.allergens,
            &self.pending,
            chrono::Utc::now(),
            Instant::now(),
        )
    }

    /// Stores an order the box returned: replaced in place, or added.
    pub fn upsert(&mut self, order: OrderView) {
        match self.orders.iter_mut().find(|o| o.id == order.id) {
            Some(slot) => *slot = order,
            None => self.orders.push(order),
        }
    }
}

/// Managed by Tauri; shared by commands and the background tasks.
#[derive(Debug)]
pub struct Shared {
    session: Mutex<Session>,
    pub config_dir: PathBuf,
    pub remembered: Mutex<Remembered>,
    /// Cancelled when the app exits: ends every background task.
    pub shutdown: CancellationToken,
}

impl Shared {
    pub fn new(config_dir: PathBuf, remembered: Remembered) -> Self {
        Self {
            session: Mutex::new(Session::default()),
            config_dir,
            remembered: Mutex::new(remembered),
            shutdown: CancellationToken::new(),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Session> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.session.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn remembered(&self) -> MutexGuard<'_, Remembered> {
        self.remembered.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the status bar shows.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub box_url: Option<String>,
    pub name: String,
    pub role: Option<Role>,
    pub lan_connected: bool,
    pub lan_error: Option<String>,
    pub sync: Option<SyncState>,
}
