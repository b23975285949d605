//! The box's wire contract, declared once: every body the box's HTTP API takes and
//! answers, its error codes, the outbox events it streams to the cloud, and the facts of
//! the order lifecycle that clients need. The box (`edge-node`), the staff app
//! (`desktop-ui`) and the cloud (`cloud-sync`) all use these types; none re-declares them.
//!
//! # Compatibility
//!
//! Boxes, terminals and the cloud are upgraded on different days, so:
//!
//! - **Responses and events tolerate unknown fields** (no `deny_unknown_fields` on them):
//!   a newer box may add fields and an older terminal ignores them.
//! - **Fields added later are optional or defaulted** (`#[serde(default)]`), so a newer
//!   terminal reads an older box. Removing or renaming a field, or changing its type,
//!   is a breaking change.
//! - **Requests are strict** (`deny_unknown_fields`): the box refuses a field it does not
//!   know rather than silently ignoring what the client meant.
//! - **Enums are closed**: a new order state, event or error code is a breaking change
//!   for clients that match on them; [`error::ErrorCode`] parses an unknown code as
//!   [`error::ErrorCode::Other`], keeping its text, so an older client still shows it.
//! - **Outbox events carry a payload version** ([`events::EVENT_VERSION`]); a reader
//!   refuses a version newer than it knows instead of guessing (see [`events`]).
//!
//! The menu and settings bodies are the documents' own typed values, re-exported from
//! `crdt` ([`menu`]), so they too are declared once.

pub mod accounts;
pub mod error;
pub mod events;
pub mod ids;
pub mod menu;
pub mod order;
pub mod staff;
pub mod stock;

pub use error::{ErrorBody, ErrorCode, ErrorDetail};
pub use ids::{ItemId, OrderId, PaymentId, StaffId, StudentId};
pub use order::{OrderEvent, OrderState, OrderView, PaymentMode};
