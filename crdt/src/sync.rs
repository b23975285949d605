//! Automerge's own sync protocol, one [`SyncPeer`] per (document, peer). The state is
//! encodable so it can be persisted: a reconnect with a persisted state sends only
//! what the peer lacks. No networking here: callers carry the bytes.

use crate::{DocError, ReplicatedDoc};
use automerge::sync::{self, SyncDoc};

/// Our side of the sync with one peer for one document.
#[derive(Clone)]
pub struct SyncPeer {
    state: sync::State,
}

impl Default for SyncPeer {
    fn default() -> Self {
        Self::new()
    }
}

impl SyncPeer {
    /// A peer we know nothing about.
    pub fn new() -> Self {
        Self {
            state: sync::State::new(),
        }
    }

    /// Restores a persisted state. Only what is durable across connections is kept
    /// (what the peer is known to have), so a restored peer starts a fresh exchange.
    pub fn decode(bytes: &[u8]) -> Result<Self, DocError> {
        let state = sync::State::decode(bytes).map_err(|e| DocError::Corrupt {
            doc: "sync state",
            reason: e.to_string(),
        })?;
        Ok(Self { state })
    }

    pub fn encode(&self) -> Vec<u8> {
        self.state.encode()
    }

    /// The next message to send the peer, if there is anything to say.
    pub fn generate(&mut self, doc: &mut ReplicatedDoc) -> Option<Vec<u8>> {
        doc.am_mut()
            .sync()
            .generate_sync_message(&mut self.state)
            .map(|m| m.encode())
    }

    /// Takes a message from the peer into `doc`. The message is checked against the
    /// size limits first, before and after inflation ([`crate::limits`]).
    pub fn receive(&mut self, doc: &mut ReplicatedDoc, message: &[u8]) -> Result<(), DocError> {
        crate::limits::check_sync_message(message)?;
        self.apply(doc, message)
    }

    /// Takes a message from the peer only if the document it makes is one a replica
    /// would load ([`ReplicatedDoc::check_loadable`]: whole, right kind, a schema this
    /// build knows, within the size limits) and `check` accepts it (the replica's
    /// projection). The message is tried on a copy first: a refused message changes
    /// neither `doc` nor this peer, so nothing a peer sends can make a stored document
    /// one its replica refuses at its next start. An error is a failure of `doc`
    /// itself, not of the message.
    pub fn receive_checked(
        &mut self,
        doc: &mut ReplicatedDoc,
        message: &[u8],
        check: impl FnOnce(&ReplicatedDoc) -> Result<(), String>,
    ) -> Result<Received, DocError> {
        if let Err(e) = crate::limits::check_sync_message(message) {
            return Ok(Received::Refused(e.to_string()));
        }
        let mut trial = doc.fork();
        let mut trial_peer = self.clone();
        let verdict = trial_peer
            .apply(&mut trial, message)
            .and_then(|()| trial.check_loadable())
            .map_err(|e| e.to_string())
            .and_then(|()| check(&trial));
        if let Err(reason) = verdict {
            return Ok(Received::Refused(reason));
        }
        let before = doc.heads();
        self.apply(doc, message)?;
        Ok(Received::Taken {
            changed: doc.heads() != before,
        })
    }

    /// Decodes and applies a message already checked against the limits.
    fn apply(&mut self, doc: &mut ReplicatedDoc, message: &[u8]) -> Result<(), DocError> {
        let message = sync::Message::decode(message).map_err(|e| DocError::Corrupt {
            doc: "sync message",
            reason: e.to_string(),
        })?;
        doc.am_mut()
            .sync()
            .receive_sync_message(&mut self.state, message)?;
        Ok(())
    }
}

/// What became of a sync message from a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// Taken; `changed` when the document gained changes it did not have.
    Taken { changed: bool },
    /// Refused, and why: the document and the sync state are as they were.
    Refused(String),
}
