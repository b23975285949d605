//! Logins, the staff API's requests and answers, and the campus-card notice.

use crate::ids::{OrderId, StaffId, StudentId};
use crate::order::OrderEvent;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use crate::events::OutboxEvent;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Student,
    Staff,
    /// Staff who may also edit the menu and settings.
    Manager,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Student => "student",
            Self::Staff => "staff",
            Self::Manager => "manager",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "student" => Some(Self::Student),
            "staff" => Some(Self::Staff),
            "manager" => Some(Self::Manager),
            _ => None,
        }
    }

    /// Staff and managers work the counter and kitchen.
    pub fn is_staff(self) -> bool {
        matches!(self, Self::Staff | Self::Manager)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StudentLogin {
    #[cfg_attr(feature = "openapi", schema(max_length = 64))]
    pub student_number: String,
    #[cfg_attr(feature = "openapi", schema(max_length = 128))]
    pub pin: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StaffLogin {
    #[cfg_attr(feature = "openapi", schema(max_length = 64))]
    pub username: String,
    #[cfg_attr(feature = "openapi", schema(max_length = 128))]
    pub password: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoginResponse {
    /// A bearer token for `Authorization: Bearer …`.
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub role: Role,
    /// The student's or staff account's id.
    pub account_id: uuid::Uuid,
    pub name: String,
}

impl LoginResponse {
    pub fn student_id(&self) -> Option<StudentId> {
        (self.role == Role::Student).then_some(StudentId(self.account_id))
    }

    pub fn staff_id(&self) -> Option<StaffId> {
        self.role.is_staff().then_some(StaffId(self.account_id))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TransitionRequest {
    pub event: OrderEvent,
    /// The order version this terminal saw; a newer one on the box gives 409.
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub version: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HandOverRequest {
    /// Today's pickup number (1 to 6 digits), or the 64-hex token from the QR code.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^\s*([0-9]{1,6}|[0-9a-fA-F]{64})\s*$")
    )]
    pub code: String,
}

/// The menu as managers edit it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StaffMenu {
    /// Every item, archived ones included.
    pub items: Vec<crate::menu::MenuItem>,
    /// Fields two editors set concurrently; `values[0]` is the one in effect. Setting
    /// the field again resolves the conflict.
    pub conflicts: Vec<crate::menu::Conflict>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StaffSettings {
    pub settings: crate::menu::CanteenSettings,
    pub conflicts: Vec<crate::menu::Conflict>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OutboxPage {
    pub events: Vec<OutboxEvent>,
    /// Highest sequence number on the box.
    pub last_seq: i64,
    /// Events up to this sequence number were pruned after the cloud acknowledged
    /// them (0: none): a page after an earlier `after_seq` starts after the gap.
    #[serde(default)]
    pub pruned_through: i64,
}

/// The box's link to the campus cloud, as staff and metrics see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SyncState {
    /// Is a cloud configured at all?
    pub configured: bool,
    pub connected: bool,
    /// Outbox events the cloud has not acknowledged yet.
    pub unacked_events: i64,
    /// Age of the oldest of them, in seconds (0 when none).
    pub oldest_unacked_age_s: i64,
    /// Seconds since the epoch of the last successful exchange.
    pub last_success_unix: Option<u64>,
    pub last_error: Option<String>,
    /// What an operator must know about the link's history, e.g. that this box's
    /// database was found restored and its history re-based with the cloud.
    #[serde(default)]
    pub alarm: Option<String>,
    /// A document the box refused from the cloud (it would not load here), and why;
    /// the box keeps serving its own and tries again later.
    #[serde(default)]
    pub refused_documents: Vec<String>,
}

/// The campus-card system's payment notice (signed; see the webhook).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CampusCardPayment {
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 128))]
    pub transaction_id: String,
    pub order_id: OrderId,
    pub amount_fen: i64,
}

/// Longest reason for blocking a student.
pub const BLOCK_REASON_MAX: usize = 200;

/// `POST /api/staff/students/{student_number}/block`: stop a student ordering at this
/// box (their paid orders can still be collected).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BlockRequest {
    /// Why, for the record (1 to 200 characters); shown to the student.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 200))]
    pub reason: String,
    /// Also cancel every unpaid open order of the student, in the same write.
    #[serde(default)]
    pub cancel_unpaid: bool,
}

/// A student as staff manage them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StudentStanding {
    pub student_id: crate::ids::StudentId,
    pub student_number: String,
    /// Why staff blocked the student; `null` when not blocked.
    pub blocked_reason: Option<String>,
    /// Orders cancelled by this request (unpaid open orders).
    pub cancelled: Vec<crate::ids::OrderId>,
}
