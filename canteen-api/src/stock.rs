//! Stock on the wire: a day's level of one item and what staff can do to it.

use crate::ids::ItemId;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

/// Quota stored for items without a daily quota ("unlimited"): large enough never to
/// run out in a day, small enough that sums cannot overflow.
pub const UNLIMITED_QUOTA: i64 = 1_000_000_000;

/// Restocks and adjustments are capped per call; a bigger number is a typo.
pub const ADJUST_MAX: i64 = 10_000;

/// Length of an adjustment's reason, at most.
pub const REASON_MAX: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StockLevel {
    pub item_id: ItemId,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Date))]
    pub service_day: NaiveDate,
    pub quota: i64,
    pub adjusted: i64,
    pub reserved: i64,
    pub sold: i64,
    /// Set by staff: sold out regardless of the count.
    pub sold_out: bool,
}

impl StockLevel {
    pub fn remaining(&self) -> i64 {
        self.quota + self.adjusted - self.reserved - self.sold
    }

    pub fn is_unlimited(&self) -> bool {
        self.quota >= UNLIMITED_QUOTA
    }

    pub fn is_sold_out(&self) -> bool {
        self.sold_out || self.remaining() <= 0
    }
}

/// What staff can do to stock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum StaffStockAction {
    /// More portions were made: add `count`.
    Restock {
        #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10_000))]
        count: i64,
    },
    /// Correct the count (spilled, miscounted): `delta` may be negative, not zero.
    Adjust {
        #[cfg_attr(feature = "openapi", schema(minimum = -10_000, maximum = 10_000))]
        delta: i64,
        #[cfg_attr(feature = "openapi", schema(max_length = 200))]
        reason: String,
    },
    /// Mark sold out now, whatever the count says. (A variant with no fields, not a
    /// unit variant, so an unknown field is refused here too.)
    SoldOut {},
    /// Undo a sold-out mark.
    Back {},
}
