//! The menu on the wire. The menu and settings values are the documents' own typed
//! values (`crdt`), re-exported so every client takes them from here; the students'
//! menu with live stock is declared here.

use crate::ids::ItemId;
use crate::order::PaymentMode;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

pub use crdt::Conflict;
pub use crdt::menu::{ItemFields, MenuEdit, MenuItem, OptionChoice, OptionGroup};
pub use crdt::settings::{CanteenSettings, DayHours, PickupSlot, SettingsEdit};

/// One dish of today's menu, with live stock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MenuEntry {
    pub id: ItemId,
    pub name_zh: String,
    pub name_en: String,
    pub category: String,
    pub price_fen: i64,
    pub option_groups: Vec<OptionGroup>,
    pub allergens: Vec<String>,
    /// False when staff took it off today's menu.
    pub available: bool,
    pub sold_out: bool,
    /// Portions left today, exactly: sent only to staff (with a staff token), so
    /// nobody can size an order to take the last portions; `null` for students and
    /// when the item has no quota.
    #[serde(default)]
    pub remaining: Option<i64>,
    /// Only a few portions are left (at or below the box's `few_left_threshold`):
    /// what students see instead of the count.
    #[serde(default)]
    pub few_left: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SlotEntry {
    pub id: String,
    /// "HH:MM" in the canteen's time zone.
    pub start: String,
    pub end: String,
    /// Orders the slot takes today: what the kitchen's measured rate makes in its
    /// length, at most `ceiling`.
    pub capacity: u32,
    pub taken: i64,
    pub full: bool,
    /// The manager's ceiling (the slot's capacity setting); 0 from an older box.
    #[serde(default)]
    pub ceiling: u32,
    /// Can the kitchen have an order placed now ready before the slot ends, and does
    /// the slot have room? Only offered slots are taken. (A box from before ready-time
    /// predictions does not send it: read as offered unless `full`.)
    #[serde(default = "offered_by_default")]
    pub offered: bool,
}

fn offered_by_default() -> bool {
    true
}

/// Today's menu as students see it (`GET /api/menu`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MenuResponse {
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Date))]
    pub service_day: NaiveDate,
    pub open: bool,
    /// Today's hours, "HH:MM" local time; `closed_today` when the canteen is shut all day.
    pub opening_time: String,
    pub closing_time: String,
    pub closed_today: bool,
    /// IANA name of the canteen's time zone.
    pub time_zone: String,
    /// The canteen's announcement, if any.
    pub announcement: Option<String>,
    pub payment_modes: Vec<PaymentMode>,
    /// Pickup slots of today, when the canteen offers them.
    #[serde(default)]
    pub pickup_slots: Vec<SlotEntry>,
    /// The first offered slot: the next one the kitchen can meet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_slot: Option<String>,
    /// When an order placed now would be ready, from the live kitchen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_estimate: Option<DateTime<Utc>>,
    pub items: Vec<MenuEntry>,
}
