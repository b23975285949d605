//! The generic part of a replicated document: genesis, schema upgrade, load and save,
//! conflict listing.

use automerge::transaction::Transactable;
use automerge::{ActorId, AutoCommit, ObjType, ROOT, ReadDoc, ScalarValue, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DocKind {
    Menu,
    Settings,
}

impl DocKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Menu => "menu",
            Self::Settings => "settings",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "menu" => Some(Self::Menu),
            "settings" => Some(Self::Settings),
            _ => None,
        }
    }

    /// The schema version this build writes.
    pub fn schema_version(self) -> u64 {
        self.steps().len() as u64
    }

    /// The schema's steps, in order. Each step is one change of the genesis chain;
    /// a new schema version appends a step and never edits an old one.
    fn steps(self) -> &'static [Step] {
        match self {
            Self::Menu => &[crate::menu::schema_v1],
            Self::Settings => &[crate::settings::schema_v1],
        }
    }

    fn genesis_actor(self) -> ActorId {
        ActorId::from(format!("canteen-genesis-{}", self.as_str()).as_bytes())
    }
}

pub(crate) type Step = fn(&mut AutoCommit) -> Result<(), automerge::AutomergeError>;

#[derive(Debug, thiserror::Error)]
pub enum DocError {
    #[error("the {doc} document could not be read: {reason}")]
    Corrupt { doc: &'static str, reason: String },
    #[error("the {doc} document has schema version {found}; this build supports up to {supported}")]
    SchemaTooNew {
        doc: &'static str,
        found: u64,
        supported: u64,
    },
    #[error("the {doc} document is missing changes it depends on (a chunk is lost or truncated)")]
    MissingChanges { doc: &'static str },
    #[error("the {doc} document is not a {doc} document")]
    WrongKind { doc: &'static str },
    #[error("automerge: {0}")]
    Automerge(#[from] automerge::AutomergeError),
    #[error(transparent)]
    Limit(#[from] crate::limits::LimitError),
}

/// The deterministic genesis of a kind up to schema `version`: the same bytes on every
/// replica, and each version's chain a prefix of the next one's.
fn genesis(kind: DocKind, version: u64) -> Result<AutoCommit, automerge::AutomergeError> {
    let mut doc = AutoCommit::new().with_actor(kind.genesis_actor());
    let steps = kind.steps();
    let upto = usize::try_from(version)
        .unwrap_or(usize::MAX)
        .min(steps.len());
    for (i, step) in steps[..upto].iter().enumerate() {
        step(&mut doc)?;
        doc.put(ROOT, "schema_version", i as u64 + 1)?;
        doc.commit_with(
            automerge::transaction::CommitOptions::default()
                .with_time(0)
                .with_message(format!("{} schema v{}", kind.as_str(), i + 1)),
        );
    }
    Ok(doc)
}

/// One replica of a menu or settings document.
pub struct ReplicatedDoc {
    kind: DocKind,
    doc: AutoCommit,
}

impl ReplicatedDoc {
    /// A new document at the current schema, edited from now on as `actor`.
    pub fn create(kind: DocKind, actor: &[u8]) -> Result<Self, DocError> {
        Self::create_at(kind, kind.schema_version(), actor)
    }

    /// A new document at schema `version` (an older peer's: the cloud keeps each
    /// box's replica at the version the box declared it loads).
    pub fn create_at(kind: DocKind, version: u64, actor: &[u8]) -> Result<Self, DocError> {
        let supported = kind.schema_version();
        if version > supported {
            return Err(DocError::SchemaTooNew {
                doc: kind.as_str(),
                found: version,
                supported,
            });
        }
        let mut doc = genesis(kind, version.max(1))?;
        doc.set_actor(ActorId::from(actor));
        Ok(Self { kind, doc })
    }

    /// Loads stored chunks (a snapshot and/or incremental saves, in order), checks the
    /// result is whole and of the right kind, and upgrades it to the current schema.
    pub fn load<'a>(
        kind: DocKind,
        chunks: impl IntoIterator<Item = &'a [u8]>,
        actor: &[u8],
    ) -> Result<Self, DocError> {
        Self::load_at(kind, chunks, actor, kind.schema_version())
    }

    /// Like [`ReplicatedDoc::load`], upgrading only to schema `upgrade_to` (an older
    /// peer's version); a document of a schema newer than this build is refused.
    pub fn load_at<'a>(
        kind: DocKind,
        chunks: impl IntoIterator<Item = &'a [u8]>,
        actor: &[u8],
        upgrade_to: u64,
    ) -> Result<Self, DocError> {
        let name = kind.as_str();
        // Load all chunks as one buffer, strictly: Automerge's incremental load would
        // quietly stop at a truncated or damaged chunk and keep what came before.
        let bytes: Vec<u8> = chunks.into_iter().flatten().copied().collect();
        let doc = AutoCommit::load_with_options(
            &bytes,
            automerge::LoadOptions::new().on_partial_load(automerge::OnPartialLoad::Error),
        )
        .map_err(|e| DocError::Corrupt {
            doc: name,
            reason: e.to_string(),
        })?;
        // Changes whose dependencies never arrived are queued silently by Automerge;
        // a stored document must never be in that state.
        if !doc.get_missing_deps(&[]).is_empty() {
            return Err(DocError::MissingChanges { doc: name });
        }
        let mut loaded = Self { kind, doc };
        loaded.upgrade_to(upgrade_to)?;
        loaded.doc.set_actor(ActorId::from(actor));
        Ok(loaded)
    }

    /// Brings the document to this build's schema by merging the genesis chain: the
    /// steps it already has are identical changes and merge as no-ops.
    pub fn upgrade(&mut self) -> Result<(), DocError> {
        self.upgrade_to(self.kind.schema_version())
    }

    /// Brings the document to schema `version` at least (never beyond this build's;
    /// a document already past `version` is left as it is).
    pub fn upgrade_to(&mut self, version: u64) -> Result<(), DocError> {
        let name = self.kind.as_str();
        let found = self.schema_version();
        let supported = self.kind.schema_version();
        if found > supported {
            return Err(DocError::SchemaTooNew {
                doc: name,
                found,
                supported,
            });
        }
        if found > 0 {
            let kind = self
                .doc
                .get(ROOT, "kind")?
                .and_then(|(v, _)| v.as_str().map(str::to_owned));
            if kind.as_deref() != Some(name) {
                return Err(DocError::WrongKind { doc: name });
            }
        }
        let target = version.clamp(1, supported);
        if found < target {
            let mut genesis = genesis(self.kind, target)?;
            self.doc.merge(&mut genesis)?;
        }
        Ok(())
    }

    pub fn kind(&self) -> DocKind {
        self.kind
    }

    /// The schema version recorded in the document (0 for an empty one).
    pub fn schema_version(&self) -> u64 {
        self.doc
            .get(ROOT, "schema_version")
            .ok()
            .flatten()
            .and_then(|(v, _)| v.as_u64())
            .unwrap_or(0)
    }

    /// The whole document, compacted.
    pub fn save(&mut self) -> Vec<u8> {
        self.doc.save()
    }

    /// The changes since the last `save` or `save_incremental`.
    pub fn save_incremental(&mut self) -> Vec<u8> {
        self.doc.save_incremental()
    }

    pub fn heads(&mut self) -> Vec<automerge::ChangeHash> {
        self.doc.get_heads()
    }

    /// The heads as hex strings (as they travel in a box's status).
    pub fn heads_hex(&mut self) -> Vec<String> {
        self.heads().iter().map(|h| h.to_string()).collect()
    }

    /// Whether every change up to the heads `target` is in the history of the heads
    /// `have` (hex hashes, e.g. a peer's): has the peer applied `target`? Hashes of
    /// `have` this replica does not know are left out (they are the peer's newer
    /// changes); a `target` this replica does not know, or an unreadable hash, is not
    /// contained.
    pub fn history_contains(&mut self, have: &[String], target: &[String]) -> bool {
        let parse = |v: &[String]| -> Option<Vec<automerge::ChangeHash>> {
            v.iter().map(|h| h.parse().ok()).collect()
        };
        let (Some(have), Some(target)) = (parse(have), parse(target)) else {
            return false;
        };
        let have: Vec<_> = have
            .into_iter()
            .filter(|h| self.doc.get_change_by_hash(h).is_some())
            .collect();
        if target
            .iter()
            .any(|h| self.doc.get_change_by_hash(h).is_none())
        {
            return false;
        }
        let missing: std::collections::HashSet<automerge::ChangeHash> = self
            .doc
            .get_changes(&have)
            .iter()
            .map(|c| c.hash())
            .collect();
        target.iter().all(|t| !missing.contains(t))
    }

    /// Checks that this document, saved, is one a replica would load: the checks of
    /// [`ReplicatedDoc::load`] (whole, right kind, a schema this build knows) and the
    /// size limit. A replica runs it on a trial copy holding a peer's changes before
    /// it takes them, so nothing a peer sends can make its stored document one it
    /// refuses at its next start.
    pub fn check_loadable(&mut self) -> Result<(), DocError> {
        let saved = self.doc.save();
        if saved.len() > crate::limits::DOC_SAVED_MAX {
            return Err(crate::limits::LimitError::DocumentTooLarge(saved.len()).into());
        }
        let actor = self.doc.get_actor().clone();
        Self::load(self.kind, [saved.as_slice()], actor.to_bytes())?;
        Ok(())
    }

    /// An independent copy (same actor): for checking a remote change before taking it.
    pub fn fork(&mut self) -> Self {
        let actor = self.doc.get_actor().clone();
        Self {
            kind: self.kind,
            doc: self.doc.fork().with_actor(actor),
        }
    }

    /// Merges every change of `other` into this replica (local use and tests; peers
    /// use [`crate::sync`]).
    pub fn merge(&mut self, other: &mut ReplicatedDoc) -> Result<(), DocError> {
        self.doc.merge(&mut other.doc)?;
        Ok(())
    }

    pub(crate) fn am(&self) -> &AutoCommit {
        &self.doc
    }

    pub(crate) fn am_mut(&mut self) -> &mut AutoCommit {
        &mut self.doc
    }

    /// Applies `f` as one change: all of it, or (on error) none of it.
    pub(crate) fn change<E>(
        &mut self,
        time_ms: i64,
        f: impl FnOnce(&mut AutoCommit) -> Result<(), E>,
    ) -> Result<(), E> {
        match f(&mut self.doc) {
            Ok(()) => {
                self.doc.commit_with(
                    automerge::transaction::CommitOptions::default().with_time(time_ms),
                );
                Ok(())
            }
            Err(e) => {
                self.doc.rollback();
                Err(e)
            }
        }
    }
}

/// Two or more values set concurrently for one field. `values[0]` is the winner the
/// projection shows (Automerge picks it the same way on every replica).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Conflict {
    /// The field, as a path from the document root, e.g. `["items", "0193…", "price_fen"]`.
    pub path: Vec<String>,
    pub values: Vec<String>,
}

fn render(value: &Value<'_>) -> String {
    match value {
        Value::Object(t) => format!("<{t:?}>"),
        Value::Scalar(s) => match s.as_ref() {
            ScalarValue::Str(text) => text.to_string(),
            other => other.to_string(),
        },
    }
}

/// Every conflicted field of the document.
pub fn conflicts(doc: &ReplicatedDoc) -> Vec<Conflict> {
    conflicts_under(doc, &[])
}

/// The conflicted fields under the map at `prefix` (e.g. `["items", "<id>"]`), which
/// is much cheaper than [`conflicts`] after an edit of one item.
pub fn conflicts_under(doc: &ReplicatedDoc, prefix: &[&str]) -> Vec<Conflict> {
    let am = doc.am();
    let mut start = ROOT;
    for p in prefix {
        match am.get(&start, *p) {
            Ok(Some((Value::Object(ObjType::Map), id))) => start = id,
            _ => return Vec::new(),
        }
    }
    let Ok(automerge::hydrate::Value::Map(root)) = am.hydrate(&start, None) else {
        return Vec::new();
    };
    // Find the conflicted paths in the hydrated tree, then ask the document for all
    // values of just those fields.
    let mut paths = Vec::new();
    let base: Vec<String> = prefix.iter().map(|p| (*p).to_owned()).collect();
    let mut stack: Vec<(&automerge::hydrate::Map, Vec<String>)> = vec![(&root, base)];
    while let Some((map, path)) = stack.pop() {
        for (key, entry) in map.iter() {
            let mut here = path.clone();
            here.push(key.clone());
            if entry.conflict {
                paths.push(here.clone());
            }
            if let automerge::hydrate::Value::Map(inner) = &entry.value {
                stack.push((inner, here));
            }
        }
    }
    let mut found = Vec::new();
    for path in paths {
        let Some((key, parents)) = path.split_last() else {
            continue;
        };
        let mut obj = ROOT;
        for p in parents {
            match am.get(&obj, p.as_str()) {
                Ok(Some((Value::Object(ObjType::Map), id))) => obj = id,
                _ => break,
            }
        }
        let Ok(all) = am.get_all(&obj, key.as_str()) else {
            continue;
        };
        if all.len() < 2 {
            continue;
        }
        // get() returns the winner; put it first.
        let winner = am.get(&obj, key.as_str()).ok().flatten().map(|(_, id)| id);
        let mut values: Vec<(bool, String)> = all
            .iter()
            .map(|(v, id)| (Some(id) == winner.as_ref(), render(v)))
            .collect();
        values.sort_by_key(|(win, _)| !*win);
        found.push(Conflict {
            path,
            values: values.into_iter().map(|(_, v)| v).collect(),
        });
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    found
}

/// The whole document as plain values, in one pass.
pub(crate) fn hydrate(doc: &ReplicatedDoc) -> Result<automerge::hydrate::Map, crate::InvalidValue> {
    match doc.am().hydrate(ROOT, None) {
        Ok(automerge::hydrate::Value::Map(m)) => Ok(m),
        _ => Err(crate::InvalidValue::new(
            "",
            "the document root is not a map",
        )),
    }
}

// ---------------------------------------------------------------------------------
// Reading a hydrated document (one pass over the document, then plain lookups: much
// faster than a `get` per field), and writing single fields.

pub(crate) mod read {
    use crate::InvalidValue;
    use automerge::ScalarValue;
    use automerge::hydrate::{Map, Value};

    pub(crate) fn map<'a>(m: &'a Map, key: &str, path: &str) -> Result<&'a Map, InvalidValue> {
        opt_map(m, key).ok_or_else(|| InvalidValue::new(format!("{path}/{key}"), "expected a map"))
    }

    pub(crate) fn opt_map<'a>(m: &'a Map, key: &str) -> Option<&'a Map> {
        match m.get(key) {
            Some(Value::Map(inner)) => Some(inner),
            _ => None,
        }
    }

    fn scalar<'a>(m: &'a Map, key: &str) -> Option<&'a ScalarValue> {
        match m.get(key) {
            Some(Value::Scalar(s)) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn string(m: &Map, key: &str, path: &str) -> Result<String, InvalidValue> {
        match (scalar(m, key), m.get(key)) {
            (Some(ScalarValue::Str(s)), _) => Ok(s.to_string()),
            (_, Some(Value::Text(t))) => Ok(t.to_string()),
            _ => Err(InvalidValue::new(format!("{path}/{key}"), "expected text")),
        }
    }

    pub(crate) fn int(m: &Map, key: &str, path: &str) -> Result<i64, InvalidValue> {
        match scalar(m, key) {
            Some(ScalarValue::Int(n)) => Ok(*n),
            Some(ScalarValue::Uint(n)) => i64::try_from(*n)
                .map_err(|_| InvalidValue::new(format!("{path}/{key}"), "out of range")),
            _ => Err(InvalidValue::new(
                format!("{path}/{key}"),
                "expected an integer",
            )),
        }
    }

    pub(crate) fn opt_int(m: &Map, key: &str, path: &str) -> Result<Option<i64>, InvalidValue> {
        match scalar(m, key) {
            Some(ScalarValue::Null) | None => Ok(None),
            _ => int(m, key, path).map(Some),
        }
    }

    pub(crate) fn boolean(m: &Map, key: &str, path: &str) -> Result<bool, InvalidValue> {
        match scalar(m, key) {
            Some(ScalarValue::Boolean(b)) => Ok(*b),
            _ => Err(InvalidValue::new(
                format!("{path}/{key}"),
                "expected true or false",
            )),
        }
    }

    /// Keys in sorted order (a hydrated map is a hash map).
    pub(crate) fn keys(m: &Map) -> Vec<&String> {
        let mut keys: Vec<&String> = m.iter().map(|(k, _)| k).collect();
        keys.sort();
        keys
    }
}

pub(crate) mod field {
    use crate::InvalidValue;
    use automerge::transaction::Transactable;
    use automerge::{AutoCommit, ObjId, ObjType, ReadDoc, ScalarValue, Value};

    pub(crate) fn map(
        doc: &AutoCommit,
        obj: &ObjId,
        key: &str,
        path: &str,
    ) -> Result<ObjId, InvalidValue> {
        match doc.get(obj, key) {
            Ok(Some((Value::Object(ObjType::Map), id))) => Ok(id),
            _ => Err(InvalidValue::new(format!("{path}/{key}"), "expected a map")),
        }
    }

    pub(crate) fn opt_map(doc: &AutoCommit, obj: &ObjId, key: &str) -> Option<ObjId> {
        match doc.get(obj, key) {
            Ok(Some((Value::Object(ObjType::Map), id))) => Some(id),
            _ => None,
        }
    }

    fn scalar(doc: &AutoCommit, obj: &ObjId, key: &str) -> Option<ScalarValue> {
        match doc.get(obj, key) {
            Ok(Some((Value::Scalar(s), _))) => Some(s.into_owned()),
            _ => None,
        }
    }

    pub(crate) fn boolean(
        doc: &AutoCommit,
        obj: &ObjId,
        key: &str,
        path: &str,
    ) -> Result<bool, InvalidValue> {
        match scalar(doc, obj, key) {
            Some(ScalarValue::Boolean(b)) => Ok(b),
            _ => Err(InvalidValue::new(
                format!("{path}/{key}"),
                "expected true or false",
            )),
        }
    }

    /// Keys of a map, sorted (map keys come back sorted from Automerge already).
    pub(crate) fn keys(doc: &AutoCommit, obj: &ObjId) -> Vec<String> {
        doc.keys(obj).collect()
    }

    /// Sets a scalar only if it differs: an unchanged value must not create a change
    /// that could conflict with a peer's real edit.
    pub(crate) fn set(
        doc: &mut AutoCommit,
        obj: &ObjId,
        key: &str,
        value: impl Into<ScalarValue>,
    ) -> Result<(), automerge::AutomergeError> {
        let value = value.into();
        if scalar(doc, obj, key).as_ref() != Some(&value) {
            doc.put(obj, key, value)?;
        }
        Ok(())
    }

    /// The map at `key`, created if missing. Never replaces an existing map.
    pub(crate) fn ensure_map(
        doc: &mut AutoCommit,
        obj: &ObjId,
        key: &str,
    ) -> Result<ObjId, automerge::AutomergeError> {
        if let Some(id) = opt_map(doc, obj, key) {
            return Ok(id);
        }
        doc.put_object(obj, key, ObjType::Map)
    }
}
