//! The canteen's multi-writer data as Automerge documents: the menu and the canteen
//! settings. Staff at a box and admins in the cloud edit them, also while partitioned;
//! the documents merge field by field.
//!
//! Pure: no I/O, no clock (callers pass the time of an edit), no async. The box stores
//! the bytes this crate produces, and the sync layer carries its sync messages.
//!
//! Rules kept here, so that no edit is silently lost:
//! - every edit changes single fields; a map that exists is never replaced;
//! - deletion is archiving: keys are never removed;
//! - documents start from a deterministic genesis (fixed actor, time 0), so replicas
//!   created or upgraded independently share the same schema changes;
//! - where two replicas set the same field concurrently, both values are kept as a
//!   conflict: [`conflicts`] exposes them, the projection shows Automerge's
//!   deterministic winner;
//! - a projection validates every value (a remote peer is not trusted).

mod doc;
mod ids;
pub mod limits;
pub mod menu;
pub mod settings;
pub mod sync;

pub use doc::{Conflict, DocError, DocKind, ReplicatedDoc, conflicts, conflicts_under};
pub use ids::ItemId;

/// Why a document's contents were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct InvalidValue {
    /// Where in the document, e.g. `items/0193…/price_fen`.
    pub path: String,
    pub reason: String,
}

impl InvalidValue {
    pub(crate) fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
