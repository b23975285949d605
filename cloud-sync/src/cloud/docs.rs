//! The cloud's replica of each box's menu and settings documents, with one sync state
//! per (box, document). Admin edits change the replica; the box's connection task is
//! woken to offer them.

use super::store::CloudStore;
use crdt::menu::MenuEdit;
use crdt::settings::SettingsEdit;
use crdt::sync::SyncPeer;
use crdt::{DocKind, ReplicatedDoc};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Compact a replica once its chunks outgrow this many bytes.
const COMPACT_BYTES: usize = 256 * 1024;

struct Replica {
    doc: ReplicatedDoc,
    peer: SyncPeer,
    chunk_bytes: usize,
}

type Replicas = HashMap<(String, DocKind), Arc<Mutex<Replica>>>;

pub struct DocHub {
    store: Arc<CloudStore>,
    /// This process's Automerge actor: new at every start, so a cloud restored from a
    /// backup never repeats an (actor, seq) its boxes already hold (they would refuse
    /// the document from then on).
    actor: Vec<u8>,
    replicas: Mutex<Replicas>,
    wakers: Mutex<HashMap<String, Arc<Notify>>>,
}

impl DocHub {
    pub fn new(store: Arc<CloudStore>) -> Self {
        let mut actor = b"campus-cloud-".to_vec();
        let mut random = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut random);
        actor.extend_from_slice(&random);
        Self {
            store,
            actor,
            replicas: Mutex::new(HashMap::new()),
            wakers: Mutex::new(HashMap::new()),
        }
    }

    /// Signalled when a box's replicas changed at the cloud.
    pub fn waker(&self, node: &str) -> Arc<Notify> {
        self.wakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(node.to_owned())
            .or_default()
            .clone()
    }

    fn replica(&self, node: &str, kind: DocKind) -> anyhow::Result<Arc<Mutex<Replica>>> {
        let key = (node.to_owned(), kind);
        if let Some(r) = self
            .replicas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(r.clone());
        }
        let chunks = self.store.doc_chunks(node, kind.as_str())?;
        let doc = if chunks.is_empty() {
            let mut doc = ReplicatedDoc::create(kind, &self.actor)?;
            self.store
                .put_chunk(node, kind.as_str(), &doc.save(), true)?;
            doc
        } else {
            ReplicatedDoc::load(kind, chunks.iter().map(Vec::as_slice), &self.actor)?
        };
        let peer = match self.store.sync_state(node, kind.as_str())? {
            Some(bytes) => SyncPeer::decode(&bytes)?,
            None => SyncPeer::new(),
        };
        let replica = Arc::new(Mutex::new(Replica {
            doc,
            peer,
            chunk_bytes: 0,
        }));
        Ok(self
            .replicas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_insert(replica)
            .clone())
    }

    fn persist(&self, node: &str, kind: DocKind, r: &mut Replica) -> anyhow::Result<()> {
        let chunk = r.doc.save_incremental();
        if !chunk.is_empty() {
            r.chunk_bytes += chunk.len();
            if r.chunk_bytes > COMPACT_BYTES {
                self.store
                    .put_chunk(node, kind.as_str(), &r.doc.save(), true)?;
                r.chunk_bytes = 0;
            } else {
                self.store.put_chunk(node, kind.as_str(), &chunk, false)?;
            }
        }
        Ok(())
    }

    /// A new connection: restart the exchange from the persisted sync state.
    pub fn begin(&self, node: &str, kind: DocKind) -> anyhow::Result<()> {
        let replica = self.replica(node, kind)?;
        let mut r = replica.lock().unwrap_or_else(|e| e.into_inner());
        r.peer = SyncPeer::decode(&r.peer.encode())?;
        Ok(())
    }

    pub fn generate(&self, node: &str, kind: DocKind) -> anyhow::Result<Option<Vec<u8>>> {
        let replica = self.replica(node, kind)?;
        let mut r = replica.lock().unwrap_or_else(|e| e.into_inner());
        let r = &mut *r;
        let message = r.peer.generate(&mut r.doc);
        self.store
            .save_sync_state(node, kind.as_str(), &r.peer.encode())?;
        Ok(message)
    }

    pub fn receive(&self, node: &str, kind: DocKind, data: &[u8]) -> anyhow::Result<()> {
        let replica = self.replica(node, kind)?;
        let mut r = replica.lock().unwrap_or_else(|e| e.into_inner());
        let r = &mut *r;
        r.peer.receive(&mut r.doc, data)?;
        self.persist(node, kind, r)?;
        self.store
            .save_sync_state(node, kind.as_str(), &r.peer.encode())?;
        if let DocKind::Menu = kind
            && let Err(e) = crdt::menu::project(&r.doc)
        {
            tracing::warn!(%node, error = %e, "the box's menu holds an invalid value");
        }
        Ok(())
    }

    pub fn edit_menu(
        &self,
        node: &str,
        edits: &[MenuEdit],
        time_ms: i64,
    ) -> anyhow::Result<crdt::menu::MenuView> {
        let replica = self.replica(node, DocKind::Menu)?;
        let view = {
            let mut r = replica.lock().unwrap_or_else(|e| e.into_inner());
            crdt::menu::apply(&mut r.doc, edits, time_ms)?;
            self.persist(node, DocKind::Menu, &mut r)?;
            crdt::menu::project(&r.doc)?
        };
        self.waker(node).notify_waiters();
        Ok(view)
    }

    pub fn edit_settings(
        &self,
        node: &str,
        edits: &[SettingsEdit],
        time_ms: i64,
    ) -> anyhow::Result<crdt::settings::CanteenSettings> {
        let replica = self.replica(node, DocKind::Settings)?;
        let view = {
            let mut r = replica.lock().unwrap_or_else(|e| e.into_inner());
            crdt::settings::apply(&mut r.doc, edits, time_ms)?;
            self.persist(node, DocKind::Settings, &mut r)?;
            crdt::settings::project(&r.doc)?
        };
        self.waker(node).notify_waiters();
        Ok(view)
    }

    pub fn menu(&self, node: &str) -> anyhow::Result<(crdt::menu::MenuView, Vec<crdt::Conflict>)> {
        let replica = self.replica(node, DocKind::Menu)?;
        let r = replica.lock().unwrap_or_else(|e| e.into_inner());
        Ok((crdt::menu::project(&r.doc)?, crdt::conflicts(&r.doc)))
    }
}
