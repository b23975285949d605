//! The menu as the box serves it: an in-memory projection of the menu document.
//!
//! The source of truth is the replicated menu document (`store::docs`); every edit
//! goes through it. After each committed edit the writer publishes a new [`Menu`]
//! snapshot here, so order placement and the menu endpoint never read SQL or parse
//! the document.

use canteen_api::ids::ItemId;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

pub use crdt::Conflict;
pub use crdt::menu::{ItemFields, MenuEdit, MenuItem, OptionChoice, OptionGroup, diff};

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
