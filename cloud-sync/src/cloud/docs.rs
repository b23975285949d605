//! The cloud's replica of each box's menu and settings documents, with one sync state
//! per (box, document). Admin edits change the replica; the box's connection task is
//! woken to offer them.

use super::store::CloudStore;
use crdt::menu::MenuEdit;
use crdt::settings::SettingsEdit;
use crdt::sync::{Received, SyncPeer};
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

type ReplicaKey = (String, DocKind);
type Replicas = HashMap<ReplicaKey, Arc<Mutex<Replica>>>;

pub struct DocHub {
    store: Arc<CloudStore>,
    /// This process's Automerge actor: new at every start, so a cloud restored from a
    /// backup never repeats an (actor, seq) its boxes already hold (they would refuse
    /// the document from then on).
    actor: Vec<u8>,
    replicas: Mutex<Replicas>,
    wakers: Mutex<HashMap<String, Arc<Notify>>>,
    /// The last refusal of a box's document changes, per (box, document), until its
    /// changes are taken again: shown to admins.
    refusals: Mutex<HashMap<(String, DocKind), String>>,
    /// The document schema versions each box declared it loads (`HelloV2`); a box
    /// that declared none loads version 1.
    schemas: Mutex<HashMap<(String, DocKind), u64>>,
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
            refusals: Mutex::new(HashMap::new()),
            schemas: Mutex::new(HashMap::new()),
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

    /// Records the schema versions a box loads. Its replicas are kept at
    /// `min(the box's, this build's)`: a newer cloud never upgrades a box's documents
    /// to a schema the box would refuse, so an older box keeps syncing the fields it
    /// knows. A loaded replica is upgraded when the box now loads a newer schema.
    pub fn set_box_schemas(&self, node: &str, declared: &[(String, u64)]) -> anyhow::Result<()> {
        for kind in [DocKind::Menu, DocKind::Settings] {
            let version = declared
                .iter()
                .find(|(d, _)| d == kind.as_str())
                .map_or(1, |(_, v)| *v);
            self.schemas
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert((node.to_owned(), kind), version);
            let loaded = self
                .replicas
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&(node.to_owned(), kind))
                .cloned();
            if let Some(replica) = loaded {
                let mut r = replica.lock().unwrap_or_else(|e| e.into_inner());
                r.doc.upgrade_to(self.box_schema(node, kind))?;
                self.persist(node, kind, &mut r)?;
            }
        }
        Ok(())
    }

    /// The schema a box's replica is kept at.
    fn box_schema(&self, node: &str, kind: DocKind) -> u64 {
        self.schemas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(node.to_owned(), kind))
            .copied()
            .unwrap_or(1)
            .clamp(1, kind.schema_version())
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
        // A new document is made before asking: cheap, and the store keeps it only
        // when no replica stored one first.
        let mut fresh = ReplicatedDoc::create_at(kind, self.box_schema(node, kind), &self.actor)?;
        let doc = match self
            .store
            .doc_chunks_or_first(node, kind.as_str(), &fresh.save())?
        {
            Some(chunks) => self.load(node, kind, &chunks)?,
            None => fresh,
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

    /// A box's document from its stored chunks, at the schema its replica is kept at.
    fn load(&self, node: &str, kind: DocKind, chunks: &[Vec<u8>]) -> anyhow::Result<ReplicatedDoc> {
        Ok(ReplicatedDoc::load_at(
            kind,
            chunks.iter().map(Vec::as_slice),
            &self.actor,
            self.box_schema(node, kind),
        )?)
    }

    fn persist(&self, node: &str, kind: DocKind, r: &mut Replica) -> anyhow::Result<()> {
        let chunk = r.doc.save_incremental();
        if !chunk.is_empty() {
            r.chunk_bytes += chunk.len();
            if r.chunk_bytes > COMPACT_BYTES {
                // Another replica's chunks are merged first: the snapshot replaces
                // every chunk stored.
                self.store.compact_chunks(node, kind.as_str(), |stored| {
                    r.doc.merge(&mut self.load(node, kind, &stored)?)?;
                    Ok(r.doc.save())
                })?;
                r.chunk_bytes = 0;
            } else {
                self.store.put_chunk(node, kind.as_str(), &chunk)?;
            }
        }
        Ok(())
    }

    /// Takes what another replica stored of a box's document (`None`: of every
    /// document this replica holds) and wakes the box's connection to offer it.
    pub fn reload(&self, node: Option<&str>, kind: Option<DocKind>) -> anyhow::Result<()> {
        let loaded: Vec<(ReplicaKey, Arc<Mutex<Replica>>)> = self
            .replicas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|((n, k), _)| {
                node.is_none_or(|node| node == n) && kind.is_none_or(|kind| kind == *k)
            })
            .map(|(key, r)| (key.clone(), r.clone()))
            .collect();
        for ((n, k), replica) in loaded {
            let chunks = self.store.doc_chunks(&n, k.as_str())?;
            if chunks.is_empty() {
                continue;
            }
            let mut theirs = self.load(&n, k, &chunks)?;
            let changed = {
                let mut r = replica.lock().unwrap_or_else(|e| e.into_inner());
                let before = r.doc.heads_hex();
                r.doc.merge(&mut theirs)?;
                // What came from the store is stored: the next chunk starts after it.
                let _ = r.doc.save_incremental();
                before != r.doc.heads_hex()
            };
            if changed {
                self.waker(&n).notify_waiters();
            }
        }
        Ok(())
    }

    /// Forgets what the cloud believed a box has of its documents (the box came back
    /// with another incarnation): the next exchange starts from nothing.
    pub fn forget_peer(&self, node: &str) {
        let replicas = self.replicas.lock().unwrap_or_else(|e| e.into_inner());
        for ((n, _), replica) in replicas.iter() {
            if n == node {
                replica.lock().unwrap_or_else(|e| e.into_inner()).peer = SyncPeer::new();
            }
        }
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

    /// Takes a box's sync message. Like the box, the cloud takes it only if the
    /// document it makes passes the checks of loading and the projection
    /// ([`SyncPeer::receive_checked`]); a refused message changes nothing, is logged,
    /// and is kept for admins to see ([`DocHub::refusals`]) until changes are taken.
    pub fn receive(&self, node: &str, kind: DocKind, data: &[u8]) -> anyhow::Result<()> {
        let replica = self.replica(node, kind)?;
        let mut r = replica.lock().unwrap_or_else(|e| e.into_inner());
        let r = &mut *r;
        let received = r
            .peer
            .receive_checked(&mut r.doc, data, |trial| match kind {
                DocKind::Menu => crdt::menu::project(trial)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                DocKind::Settings => crdt::settings::project(trial)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            })?;
        let key = (node.to_owned(), kind);
        match received {
            Received::Refused(reason) => {
                tracing::warn!(%node, doc = kind.as_str(), %reason, "refused a box's document changes");
                self.refusals_lock().insert(key, reason);
            }
            Received::Taken { .. } => {
                self.persist(node, kind, r)?;
                self.store
                    .save_sync_state(node, kind.as_str(), &r.peer.encode())?;
                self.refusals_lock().remove(&key);
            }
        }
        Ok(())
    }

    fn refusals_lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, DocKind), String>> {
        self.refusals.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The standing refusals of a box's documents: (document, reason).
    pub fn refusals(&self, node: &str) -> Vec<(String, String)> {
        let mut out: Vec<_> = self
            .refusals_lock()
            .iter()
            .filter(|((n, _), _)| n == node)
            .map(|((_, d), reason)| (d.as_str().to_owned(), reason.clone()))
            .collect();
        out.sort();
        out
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

    /// The canteen's settings (hours, time zone, …) from its replica.
    pub fn settings(&self, node: &str) -> anyhow::Result<crdt::settings::CanteenSettings> {
        let replica = self.replica(node, DocKind::Settings)?;
        let r = replica.lock().unwrap_or_else(|e| e.into_inner());
        Ok(crdt::settings::project(&r.doc)?)
    }

    /// The canteen's time zone (IANA name) from its settings replica.
    pub fn time_zone(&self, node: &str) -> anyhow::Result<String> {
        Ok(self.settings(node)?.time_zone)
    }

    pub fn menu(&self, node: &str) -> anyhow::Result<(crdt::menu::MenuView, Vec<crdt::Conflict>)> {
        let replica = self.replica(node, DocKind::Menu)?;
        let r = replica.lock().unwrap_or_else(|e| e.into_inner());
        Ok((crdt::menu::project(&r.doc)?, crdt::conflicts(&r.doc)))
    }

    /// Settles a conflicted field of a box's menu on one of its values.
    pub fn settle_menu(
        &self,
        node: &str,
        path: &[String],
        value: &str,
        time_ms: i64,
    ) -> anyhow::Result<()> {
        let replica = self.replica(node, DocKind::Menu)?;
        {
            let mut r = replica.lock().unwrap_or_else(|e| e.into_inner());
            crdt::menu::settle(&mut r.doc, path, value, time_ms)?;
            self.persist(node, DocKind::Menu, &mut r)?;
        }
        self.waker(node).notify_waiters();
        Ok(())
    }

    /// The cloud's heads of a box's document (hex).
    pub fn heads(&self, node: &str, kind: DocKind) -> anyhow::Result<Vec<String>> {
        let replica = self.replica(node, kind)?;
        let mut r = replica.lock().unwrap_or_else(|e| e.into_inner());
        Ok(r.doc.heads_hex())
    }

    /// Has the box applied everything of its document up to `target` (hex heads),
    /// given the heads it reported (`have`)?
    pub fn applied(
        &self,
        node: &str,
        kind: DocKind,
        have: &[String],
        target: &[String],
    ) -> anyhow::Result<bool> {
        let replica = self.replica(node, kind)?;
        let mut r = replica.lock().unwrap_or_else(|e| e.into_inner());
        Ok(r.doc.history_contains(have, target))
    }

    /// Applies the same menu edits to a box's menu and returns the heads after them.
    pub fn push_menu(
        &self,
        node: &str,
        edits: &[MenuEdit],
        time_ms: i64,
    ) -> anyhow::Result<Vec<String>> {
        let replica = self.replica(node, DocKind::Menu)?;
        let heads = {
            let mut r = replica.lock().unwrap_or_else(|e| e.into_inner());
            crdt::menu::apply(&mut r.doc, edits, time_ms)?;
            self.persist(node, DocKind::Menu, &mut r)?;
            r.doc.heads_hex()
        };
        self.waker(node).notify_waiters();
        Ok(heads)
    }
}
