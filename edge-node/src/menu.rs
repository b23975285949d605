//! The menu as the box serves it: an in-memory projection of the menu document.
//!
//! The source of truth is the replicated menu document ([`crate::docs`]); every edit
//! goes through it. After each committed edit the writer publishes a new [`Menu`]
//! snapshot here, so order placement and the menu endpoint never read SQL or parse
//! the document.

use crate::db::StoreError;
use crate::ids::ItemId;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

pub use crdt::Conflict;
pub use crdt::menu::{ItemFields, MenuEdit, MenuItem, OptionChoice, OptionGroup, diff};

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
    Write(#[from] crate::writer::WriteError),
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
#[derive(Debug, Default)]
pub struct Menu {
    items: Vec<MenuItem>,
    index: HashMap<ItemId, usize>,
    conflicts: Vec<Conflict>,
}

impl Menu {
    pub fn new(items: Vec<MenuItem>, conflicts: Vec<Conflict>) -> Self {
        let index = items.iter().enumerate().map(|(i, it)| (it.id, i)).collect();
        Self {
            items,
            index,
            conflicts,
        }
    }

    pub fn get(&self, id: ItemId) -> Option<&MenuItem> {
        self.index.get(&id).map(|&i| &self.items[i])
    }

    /// Every item, archived ones included, in display order.
    pub fn items(&self) -> &[MenuItem] {
        &self.items
    }

    /// Fields that two editors set concurrently; the items show the winner.
    pub fn conflicts(&self) -> &[Conflict] {
        &self.conflicts
    }
}

/// The in-memory projection of the menu that readers use.
pub struct MenuStore {
    current: RwLock<Arc<Menu>>,
}

impl MenuStore {
    pub fn new(menu: Arc<Menu>) -> Self {
        Self {
            current: RwLock::new(menu),
        }
    }

    pub fn snapshot(&self) -> Arc<Menu> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Called after a committed edit with the new projection.
    pub fn replace(&self, menu: Arc<Menu>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = menu;
    }
}
