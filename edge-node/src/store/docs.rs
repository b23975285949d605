//! The replicated documents (menu, settings) at the box.
//!
//! Stored like automerge-repo stores them: a compacted snapshot plus incremental
//! change chunks in `doc_chunk`, each appended in the same transaction as the edit
//! that made it, and compacted into a new snapshot once the chunks outgrow it. Loaded
//! strictly at start: a damaged or truncated chunk stops the box with an error naming
//! the document rather than serving a wrong menu.
//!
//! Edits run on the writer thread: the document is changed in memory, its new chunk is
//! appended, and the new projection is published after the commit. If anything after
//! the in-memory change fails (the append, or the group's commit), the document is
//! reloaded from what is stored, so memory never runs ahead of the disk.

use super::db::StoreError;
use super::{Effect, WriteCtx};
use crate::config::Config;
use crate::core::canteen::Canteen;
use crate::core::menu::{Menu, MenuEdit};
use canteen_api::ids::ItemId;
use crdt::settings::SettingsEdit;
use crdt::sync::Received;
use crdt::{DocKind, ReplicatedDoc};
use rusqlite::{Connection, OptionalExtension, params};
use std::sync::{Arc, Mutex};

/// Below this many bytes of chunks a document is not worth compacting.
const COMPACT_MIN_BYTES: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum DocStoreError {
    #[error("cannot load the {doc} document: {source}")]
    Load {
        doc: &'static str,
        #[source]
        source: Box<crdt::DocError>,
    },
    #[error("the stored {doc} document is invalid ({reason}); refusing to serve it")]
    Invalid { doc: &'static str, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for DocStoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Store(e.into())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Write(#[from] super::WriteError),
}

impl From<crdt::settings::SettingsError> for SettingsError {
    fn from(e: crdt::settings::SettingsError) -> Self {
        match e {
            crdt::settings::SettingsError::Doc(d) => {
                Self::Store(StoreError::Corrupt(d.to_string()))
            }
            other => Self::Invalid(other.to_string()),
        }
    }
}

impl From<rusqlite::Error> for SettingsError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Store(e.into())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MenuError {
    #[error("{0}")]
    Invalid(String),
    #[error("no menu item {0}")]
    NotFound(ItemId),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Write(#[from] super::WriteError),
}

impl From<crdt::menu::EditError> for MenuError {
    fn from(e: crdt::menu::EditError) -> Self {
        use crdt::menu::EditError as E;
        match e {
            E::Invalid(v) => Self::Invalid(v.to_string()),
            E::NoItem(id) => Self::NotFound(id),
            E::TooMany => Self::Invalid(e.to_string()),
            E::ItemExists(_) | E::GroupExists { .. } | E::ChoiceExists { .. } => {
                Self::Conflict(e.to_string())
            }
            E::NoGroup { .. } | E::NoChoice { .. } => Self::Invalid(e.to_string()),
            E::Doc(d) => Self::Store(StoreError::Corrupt(d.to_string())),
        }
    }
}

impl From<rusqlite::Error> for MenuError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Store(e.into())
    }
}

/// An immutable snapshot of the menu, in display order, with its open conflicts.
struct Slot {
    doc: ReplicatedDoc,
    snapshot_bytes: usize,
    incremental_bytes: usize,
}

/// Both documents of the box.
pub struct Documents {
    actor: Vec<u8>,
    menu: Mutex<Slot>,
    settings: Mutex<Slot>,
    /// The menu projection as of the writer's latest edit.
    menu_view: Mutex<Arc<Menu>>,
    /// Sync with the cloud, per document (in memory; persisted after each message).
    peers: Mutex<std::collections::HashMap<DocKind, crdt::sync::SyncPeer>>,
}

/// The peer name of the campus cloud in `doc_sync_state`.
pub const CLOUD_PEER: &str = "cloud";

fn read_chunks(conn: &Connection, kind: DocKind) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT kind, data FROM doc_chunk WHERE doc = ?1 ORDER BY seq")?;
    let rows = stmt.query_map([kind.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn load_slot(
    conn: &Connection,
    kind: DocKind,
    actor: &[u8],
) -> Result<Option<Slot>, DocStoreError> {
    let chunks = read_chunks(conn, kind)?;
    if chunks.is_empty() {
        return Ok(None);
    }
    let doc = ReplicatedDoc::load(kind, chunks.iter().map(|(_, d)| d.as_slice()), actor).map_err(
        |source| DocStoreError::Load {
            doc: kind.as_str(),
            source: Box::new(source),
        },
    )?;
    let size = |k: &str| {
        chunks
            .iter()
            .filter(|(kind, _)| kind == k)
            .map(|(_, d)| d.len())
            .sum()
    };
    Ok(Some(Slot {
        doc,
        snapshot_bytes: size("snapshot"),
        incremental_bytes: size("incremental"),
    }))
}

fn append(
    conn: &Connection,
    kind: DocKind,
    chunk_kind: &str,
    data: &[u8],
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO doc_chunk (doc, seq, kind, data)
         VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM doc_chunk WHERE doc = ?1), ?2, ?3)",
    )?
    .execute(params![kind.as_str(), chunk_kind, data])?;
    Ok(())
}

/// Replaces every chunk of the document by one snapshot, in the caller's transaction.
fn compact(conn: &Connection, slot: &mut Slot) -> Result<(), StoreError> {
    let kind = slot.doc.kind();
    let snapshot = slot.doc.save();
    conn.prepare_cached("DELETE FROM doc_chunk WHERE doc = ?1")?
        .execute([kind.as_str()])?;
    append(conn, kind, "snapshot", &snapshot)?;
    slot.snapshot_bytes = snapshot.len();
    slot.incremental_bytes = 0;
    Ok(())
}

/// Appends the document's changes since the last save as a chunk, compacting when
/// the chunks have outgrown the snapshot.
fn store_changes(conn: &Connection, slot: &mut Slot) -> Result<(), StoreError> {
    let chunk = slot.doc.save_incremental();
    if chunk.is_empty() {
        return Ok(());
    }
    append(conn, slot.doc.kind(), "incremental", &chunk)?;
    slot.incremental_bytes += chunk.len();
    if slot.incremental_bytes > slot.snapshot_bytes.max(COMPACT_MIN_BYTES) {
        compact(conn, slot)?;
    }
    Ok(())
}

/// The edits that give a new box's settings document the values of its config.
pub fn seed_edits(config: &Config) -> Vec<SettingsEdit> {
    let hhmm = |t: chrono::NaiveTime| t.format("%H:%M").to_string();
    let mut edits = vec![
        SettingsEdit::SetTimeZone {
            time_zone: config.time_zone.name().to_owned(),
        },
        SettingsEdit::SetUnpaidTimeout {
            seconds: config.unpaid_timeout.num_seconds() as u32,
        },
    ];
    for day in crdt::settings::WEEKDAYS {
        edits.push(SettingsEdit::SetHours {
            day: day.into(),
            open: hhmm(config.opening_time),
            close: hhmm(config.closing_time),
            closed: false,
        });
    }
    for mode in [
        canteen_api::order::PaymentMode::Counter,
        canteen_api::order::PaymentMode::CampusCard,
    ] {
        edits.push(SettingsEdit::SetPaymentMode {
            mode: mode.as_str().into(),
            enabled: config.payment_modes.contains(&mode),
        });
    }
    edits
}

fn menu_projection(doc: &ReplicatedDoc) -> Result<Menu, String> {
    let view = crdt::menu::project(doc).map_err(|e| e.to_string())?;
    Ok(Menu::new(view.items, crdt::conflicts(doc)))
}

fn canteen_projection(doc: &ReplicatedDoc) -> Result<Canteen, String> {
    let raw = crdt::settings::project(doc).map_err(|e| e.to_string())?;
    Canteen::resolve(raw, crdt::conflicts(doc)).map_err(|e| e.to_string())
}

impl Documents {
    /// Loads both documents, creating them on a new box (the settings from `config`),
    /// and returns their projections. Runs before the writer thread starts.
    pub fn open(
        conn: &Connection,
        actor: &[u8],
        config: &Config,
        now_ms: i64,
    ) -> Result<(Self, Arc<Menu>, Canteen), DocStoreError> {
        let open_one = |kind: DocKind,
                        seed: &dyn Fn(&mut ReplicatedDoc) -> Result<(), String>|
         -> Result<Slot, DocStoreError> {
            if let Some(slot) = load_slot(conn, kind, actor)? {
                return Ok(slot);
            }
            let mut doc =
                ReplicatedDoc::create(kind, actor).map_err(|source| DocStoreError::Load {
                    doc: kind.as_str(),
                    source: Box::new(source),
                })?;
            seed(&mut doc).map_err(|reason| DocStoreError::Invalid {
                doc: kind.as_str(),
                reason,
            })?;
            let snapshot = doc.save();
            append(conn, kind, "snapshot", &snapshot)?;
            Ok(Slot {
                doc,
                snapshot_bytes: snapshot.len(),
                incremental_bytes: 0,
            })
        };
        let menu = open_one(DocKind::Menu, &|_| Ok(()))?;
        let seeds = seed_edits(config);
        let settings = open_one(DocKind::Settings, &|doc| {
            crdt::settings::apply(doc, &seeds, now_ms).map_err(|e| e.to_string())
        })?;
        let menu_view =
            Arc::new(
                menu_projection(&menu.doc).map_err(|reason| DocStoreError::Invalid {
                    doc: "menu",
                    reason,
                })?,
            );
        let canteen =
            canteen_projection(&settings.doc).map_err(|reason| DocStoreError::Invalid {
                doc: "settings",
                reason,
            })?;
        Ok((
            Self {
                actor: actor.to_vec(),
                menu: Mutex::new(menu),
                settings: Mutex::new(settings),
                menu_view: Mutex::new(menu_view.clone()),
                peers: Mutex::new(std::collections::HashMap::new()),
            },
            menu_view,
            canteen,
        ))
    }

    /// Applies `change` to one document and appends its chunk; on any failure after
    /// the document changed, reloads it from the store. `change` itself is all or
    /// nothing (the crdt edits roll back on error).
    fn edit<E: From<StoreError>>(
        &self,
        ctx: &mut WriteCtx<'_>,
        kind: DocKind,
        change: impl FnOnce(&mut ReplicatedDoc) -> Result<(), E>,
        project: impl FnOnce(&ReplicatedDoc) -> Result<Effect, String>,
    ) -> Result<(), E> {
        let mut slot = self.slot(kind).lock().unwrap_or_else(|e| e.into_inner());
        change(&mut slot.doc)?;
        let result = store_changes(ctx.conn, &mut slot)
            .and_then(|()| project(&slot.doc).map_err(StoreError::Corrupt));
        match result {
            Ok(effect) => {
                ctx.effect(effect);
                Ok(())
            }
            Err(e) => {
                if let Ok(Some(fresh)) = load_slot(ctx.conn, kind, &self.actor) {
                    *slot = fresh;
                }
                Err(e.into())
            }
        }
    }

    /// Edits the menu; the new projection is published after commit. Only the items
    /// the edits touched are read again (local edits cannot change other items), so
    /// a menu edit costs the writer a fraction of a full projection.
    pub fn edit_menu(
        &self,
        ctx: &mut WriteCtx<'_>,
        edits: &[MenuEdit],
    ) -> Result<Arc<Menu>, MenuError> {
        let time_ms = ctx.now.timestamp_millis();
        // The writer's own view: it includes earlier edits of the same group commit,
        // which readers will only see once the group is committed.
        let current = self
            .menu_view
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut published = None;
        self.edit(
            ctx,
            DocKind::Menu,
            |doc| crdt::menu::apply(doc, edits, time_ms).map_err(MenuError::from),
            |doc| {
                let touched: std::collections::BTreeSet<_> =
                    edits.iter().map(MenuEdit::item).collect();
                let mut items: Vec<_> = current
                    .items()
                    .iter()
                    .filter(|i| !touched.contains(&i.id))
                    .cloned()
                    .collect();
                let mut conflicts: Vec<_> = current
                    .conflicts()
                    .iter()
                    .filter(|c| {
                        !(c.path.len() > 1
                            && c.path[0] == "items"
                            && touched.iter().any(|t| c.path[1] == t.to_string()))
                    })
                    .cloned()
                    .collect();
                for id in touched {
                    if let Some(item) =
                        crdt::menu::project_item(doc, id).map_err(|e| e.to_string())?
                    {
                        items.push(item);
                    }
                    conflicts.extend(crdt::conflicts_under(doc, &["items", &id.to_string()]));
                }
                crdt::menu::sort_items(&mut items);
                conflicts.sort_by(|a, b| a.path.cmp(&b.path));
                let menu = Arc::new(Menu::new(items, conflicts));
                published = Some(menu.clone());
                Ok(Effect::Menu(menu))
            },
        )?;
        let menu = published.ok_or_else(|| {
            MenuError::Store(StoreError::Corrupt("menu projection missing".into()))
        })?;
        *self.menu_view.lock().unwrap_or_else(|e| e.into_inner()) = menu.clone();
        Ok(menu)
    }

    /// Edits the settings; the new projection is published after commit.
    pub fn edit_settings(
        &self,
        ctx: &mut WriteCtx<'_>,
        edits: &[SettingsEdit],
    ) -> Result<Arc<Canteen>, SettingsError> {
        // The document checks the form of a time zone name; the zone database is here.
        for edit in edits {
            if let SettingsEdit::SetTimeZone { time_zone } = edit
                && time_zone.parse::<chrono_tz::Tz>().is_err()
            {
                return Err(SettingsError::Invalid(format!(
                    "time_zone: {time_zone:?} is not an IANA time zone"
                )));
            }
        }
        let time_ms = ctx.now.timestamp_millis();
        let mut published = None;
        self.edit(
            ctx,
            DocKind::Settings,
            |doc| crdt::settings::apply(doc, edits, time_ms).map_err(SettingsError::from),
            |doc| {
                let canteen = Arc::new(canteen_projection(doc)?);
                published = Some(canteen.clone());
                Ok(Effect::Settings(canteen))
            },
        )?;
        published.ok_or_else(|| {
            SettingsError::Store(StoreError::Corrupt("settings projection missing".into()))
        })
    }

    /// Reloads both documents from the store (after a failed group commit).
    pub fn reload(&self, conn: &Connection) {
        for (kind, slot) in [
            (DocKind::Menu, &self.menu),
            (DocKind::Settings, &self.settings),
        ] {
            match load_slot(conn, kind, &self.actor) {
                Ok(Some(fresh)) => *slot.lock().unwrap_or_else(|e| e.into_inner()) = fresh,
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e, "reloading a document after a failed commit"),
            }
        }
    }

    /// The menu as the writer sees it (includes edits of the group being committed).
    pub fn menu_view(&self) -> Arc<Menu> {
        self.menu_view
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The document's heads (hex), as the box's status reports them.
    pub fn heads_hex(&self, kind: DocKind) -> Vec<String> {
        self.slot(kind)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .doc
            .heads_hex()
    }

    /// Starts a sync exchange with the cloud from the persisted state (what the cloud
    /// is known to have); messages in flight on an earlier connection are forgotten.
    pub fn sync_begin(&self, conn: &Connection, kind: DocKind) -> Result<(), StoreError> {
        let peer = match load_sync_state(conn, kind, CLOUD_PEER)? {
            Some(bytes) => crdt::sync::SyncPeer::decode(&bytes).unwrap_or_default(),
            None => crdt::sync::SyncPeer::new(),
        };
        self.peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(kind, peer);
        Ok(())
    }

    /// The next sync message for the cloud, if any; persists the sync state.
    pub fn sync_generate(
        &self,
        ctx: &mut WriteCtx<'_>,
        kind: DocKind,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let slot = self.slot(kind);
        let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let peer = peers.entry(kind).or_default();
        let message = peer.generate(&mut slot.doc);
        save_sync_state(ctx, kind, CLOUD_PEER, &peer.encode())?;
        Ok(message)
    }

    /// Takes a sync message from the cloud. The changes are first applied to a copy,
    /// which must pass the checks a stored document passes when the box starts (whole,
    /// right kind, a schema this build knows, within the size limits: a newer or
    /// hostile cloud cannot make the box's stored document one it refuses to load),
    /// and the projection (a negative price, a name too long). A refused message
    /// changes nothing: the box keeps serving what it had, and says why.
    pub fn sync_receive(
        &self,
        ctx: &mut WriteCtx<'_>,
        kind: DocKind,
        data: &[u8],
    ) -> Result<Received, StoreError> {
        let slot_lock = self.slot(kind);
        let mut slot = slot_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let peer = peers.entry(kind).or_default();
        let received = peer
            .receive_checked(&mut slot.doc, data, |trial| match kind {
                DocKind::Menu => menu_projection(trial).map(|_| ()),
                DocKind::Settings => canteen_projection(trial).map(|_| ()),
            })
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        if let Received::Refused(reason) = &received {
            tracing::warn!(doc = kind.as_str(), %reason, "refused the cloud's changes");
            return Ok(received);
        }
        let result = (|| -> Result<Effect, StoreError> {
            store_changes(ctx.conn, &mut slot)?;
            save_sync_state(ctx, kind, CLOUD_PEER, &peer.encode())?;
            Ok(match kind {
                DocKind::Menu => {
                    let menu = Arc::new(menu_projection(&slot.doc).map_err(StoreError::Corrupt)?);
                    *self.menu_view.lock().unwrap_or_else(|e| e.into_inner()) = menu.clone();
                    Effect::Menu(menu)
                }
                DocKind::Settings => Effect::Settings(Arc::new(
                    canteen_projection(&slot.doc).map_err(StoreError::Corrupt)?,
                )),
            })
        })();
        match result {
            Ok(effect) => {
                ctx.effect(effect);
                Ok(received)
            }
            Err(e) => {
                if let Ok(Some(fresh)) = load_slot(ctx.conn, kind, &self.actor) {
                    *slot = fresh;
                }
                Err(e)
            }
        }
    }

    fn slot(&self, kind: DocKind) -> &Mutex<Slot> {
        match kind {
            DocKind::Menu => &self.menu,
            DocKind::Settings => &self.settings,
        }
    }
}

/// Persists the sync state of one document with one peer.
pub fn save_sync_state(
    ctx: &mut WriteCtx<'_>,
    kind: DocKind,
    peer: &str,
    state: &[u8],
) -> Result<(), StoreError> {
    ctx.conn
        .prepare_cached(
            "INSERT INTO doc_sync_state (doc, peer, state, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (doc, peer) DO UPDATE SET state = ?3, updated_at = ?4",
        )?
        .execute(params![
            kind.as_str(),
            peer,
            state,
            crate::core::clock::ts(ctx.now)
        ])?;
    Ok(())
}

/// Forgets every document's sync state with `peer` (the peer's database is another
/// incarnation, or this one is): the next exchange starts from nothing.
pub fn forget_sync_states(conn: &Connection, peer: &str) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM doc_sync_state WHERE peer = ?1")?
        .execute([peer])?;
    Ok(())
}

/// The persisted sync state of one document with one peer, if any.
pub fn load_sync_state(
    conn: &Connection,
    kind: DocKind,
    peer: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT state FROM doc_sync_state WHERE doc = ?1 AND peer = ?2")?
        .query_row(params![kind.as_str(), peer], |r| r.get(0))
        .optional()?)
}
