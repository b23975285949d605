//! The menu: items, option groups, allergens, daily quotas.
//!
//! This module is the only one that touches the menu tables. Everyone else reads the
//! in-memory [`MenuStore`] projection, which is refreshed after each committed edit, so
//! order placement never queries SQL for prices. (The menu's source of truth will move
//! into a replicated document; only this module will change.)

use crate::db::StoreError;
use crate::ids::ItemId;
use crate::writer::{Effect, WriteCtx};
use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

pub const NAME_MAX_CHARS: usize = 80;
pub const OPTION_GROUPS_MAX: usize = 10;
pub const CHOICES_MAX: usize = 20;
pub const ALLERGENS_MAX: usize = 16;
/// ¥10,000 in fen: anything above is a typo, not a dish.
pub const PRICE_MAX_FEN: i64 = 1_000_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OptionChoice {
    pub id: String,
    pub name_zh: String,
    pub name_en: String,
    /// Added to the item's price when chosen; may be negative (e.g. "no rice").
    #[serde(default)]
    pub price_delta_fen: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OptionGroup {
    pub id: String,
    pub name_zh: String,
    pub name_en: String,
    /// A required group needs at least one choice (and `min_choices` ≥ 1).
    pub required: bool,
    pub min_choices: u32,
    pub max_choices: u32,
    pub choices: Vec<OptionChoice>,
}

/// The editable fields of a menu item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ItemFields {
    pub name_zh: String,
    pub name_en: String,
    pub category: String,
    pub price_fen: i64,
    #[serde(default)]
    pub option_groups: Vec<OptionGroup>,
    #[serde(default)]
    pub allergens: Vec<String>,
    /// Portions per service day; `null` means unlimited.
    pub daily_quota: Option<u32>,
    #[serde(default = "yes")]
    pub available: bool,
    #[serde(default)]
    pub archived: bool,
    #[serde(default)]
    pub sort_key: i64,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MenuItem {
    pub id: ItemId,
    #[serde(flatten)]
    pub fields: ItemFields,
}

#[derive(Debug, thiserror::Error)]
pub enum MenuError {
    #[error("{0}")]
    Invalid(String),
    #[error("no menu item {0}")]
    NotFound(ItemId),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Write(#[from] crate::writer::WriteError),
}

impl From<rusqlite::Error> for MenuError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Store(e.into())
    }
}

fn check_name(what: &str, value: &str) -> Result<(), MenuError> {
    let chars = value.trim().chars().count();
    if chars == 0 || chars > NAME_MAX_CHARS {
        return Err(MenuError::Invalid(format!(
            "{what} must be 1 to {NAME_MAX_CHARS} characters"
        )));
    }
    Ok(())
}

impl ItemFields {
    /// Checks every field; the error names the first one that is wrong.
    pub fn validate(&self) -> Result<(), MenuError> {
        check_name("name_zh", &self.name_zh)?;
        check_name("name_en", &self.name_en)?;
        check_name("category", &self.category)?;
        if !(0..=PRICE_MAX_FEN).contains(&self.price_fen) {
            return Err(MenuError::Invalid(format!(
                "price_fen must be between 0 and {PRICE_MAX_FEN}"
            )));
        }
        if self.allergens.len() > ALLERGENS_MAX {
            return Err(MenuError::Invalid(format!(
                "at most {ALLERGENS_MAX} allergen tags"
            )));
        }
        for tag in &self.allergens {
            check_name("allergen tag", tag)?;
        }
        if self.option_groups.len() > OPTION_GROUPS_MAX {
            return Err(MenuError::Invalid(format!(
                "at most {OPTION_GROUPS_MAX} option groups"
            )));
        }
        let mut group_ids = std::collections::HashSet::new();
        for group in &self.option_groups {
            check_name("option group id", &group.id)?;
            check_name("option group name_zh", &group.name_zh)?;
            check_name("option group name_en", &group.name_en)?;
            if !group_ids.insert(&group.id) {
                return Err(MenuError::Invalid(format!(
                    "option group id {:?} is used twice",
                    group.id
                )));
            }
            if group.choices.is_empty() || group.choices.len() > CHOICES_MAX {
                return Err(MenuError::Invalid(format!(
                    "option group {:?} needs 1 to {CHOICES_MAX} choices",
                    group.id
                )));
            }
            let max = group.choices.len() as u32;
            if group.min_choices > group.max_choices
                || group.max_choices == 0
                || group.max_choices > max
            {
                return Err(MenuError::Invalid(format!(
                    "option group {:?}: need min_choices ≤ max_choices ≤ number of choices, and max_choices ≥ 1",
                    group.id
                )));
            }
            if group.required != (group.min_choices >= 1) {
                return Err(MenuError::Invalid(format!(
                    "option group {:?}: required groups have min_choices ≥ 1, optional ones 0",
                    group.id
                )));
            }
            let mut choice_ids = std::collections::HashSet::new();
            for choice in &group.choices {
                check_name("choice id", &choice.id)?;
                check_name("choice name_zh", &choice.name_zh)?;
                check_name("choice name_en", &choice.name_en)?;
                if !choice_ids.insert(&choice.id) {
                    return Err(MenuError::Invalid(format!(
                        "choice id {:?} is used twice in group {:?}",
                        choice.id, group.id
                    )));
                }
                if choice.price_delta_fen.abs() > PRICE_MAX_FEN {
                    return Err(MenuError::Invalid("price_delta_fen is out of range".into()));
                }
            }
        }
        Ok(())
    }
}

/// An immutable snapshot of the menu, in display order.
#[derive(Debug, Default)]
pub struct Menu {
    items: Vec<MenuItem>,
    index: HashMap<ItemId, usize>,
}

impl Menu {
    fn from_items(mut items: Vec<MenuItem>) -> Self {
        items.sort_by(|a, b| {
            (&a.fields.category, a.fields.sort_key, &a.fields.name_en).cmp(&(
                &b.fields.category,
                b.fields.sort_key,
                &b.fields.name_en,
            ))
        });
        let index = items.iter().enumerate().map(|(i, it)| (it.id, i)).collect();
        Self { items, index }
    }

    pub fn get(&self, id: ItemId) -> Option<&MenuItem> {
        self.index.get(&id).map(|&i| &self.items[i])
    }

    /// Every item, archived ones included, in display order.
    pub fn items(&self) -> &[MenuItem] {
        &self.items
    }
}

/// The in-memory projection of the menu that readers use.
pub struct MenuStore {
    current: RwLock<Arc<Menu>>,
}

impl MenuStore {
    pub fn load(conn: &Connection) -> Result<Self, StoreError> {
        Ok(Self {
            current: RwLock::new(Arc::new(Menu::from_items(load_items(conn)?))),
        })
    }

    pub fn snapshot(&self) -> Arc<Menu> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Called after a committed edit: swaps in a new snapshot with `item` replaced.
    pub fn apply(&self, item: MenuItem) {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        let mut items: Vec<MenuItem> = current
            .items
            .iter()
            .filter(|it| it.id != item.id)
            .cloned()
            .collect();
        items.push(item);
        *current = Arc::new(Menu::from_items(items));
    }
}

fn load_items(conn: &Connection) -> Result<Vec<MenuItem>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT id, name_zh, name_en, category, price_fen, option_groups, allergens,
                daily_quota, available, archived, sort_key FROM menu_item",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            ItemFields {
                name_zh: r.get(1)?,
                name_en: r.get(2)?,
                category: r.get(3)?,
                price_fen: r.get(4)?,
                option_groups: Vec::new(),
                allergens: Vec::new(),
                daily_quota: r.get(7)?,
                available: r.get(8)?,
                archived: r.get(9)?,
                sort_key: r.get(10)?,
            },
            r.get::<_, String>(5)?,
            r.get::<_, String>(6)?,
        ))
    })?;
    let mut items = Vec::new();
    for row in rows {
        let (id, mut fields, groups, allergens) = row?;
        let corrupt =
            |e: &dyn std::fmt::Display| StoreError::Corrupt(format!("menu item {id}: {e}"));
        fields.option_groups = serde_json::from_str(&groups).map_err(|e| corrupt(&e))?;
        fields.allergens = serde_json::from_str(&allergens).map_err(|e| corrupt(&e))?;
        let id = id.parse().map_err(|e| corrupt(&e))?;
        items.push(MenuItem { id, fields });
    }
    Ok(items)
}

/// Inserts or replaces an item inside the caller's transaction. Validates first.
pub fn save_item(ctx: &mut WriteCtx<'_>, item: &MenuItem) -> Result<(), MenuError> {
    item.fields.validate()?;
    let f = &item.fields;
    let groups =
        serde_json::to_string(&f.option_groups).map_err(|e| MenuError::Invalid(e.to_string()))?;
    let allergens =
        serde_json::to_string(&f.allergens).map_err(|e| MenuError::Invalid(e.to_string()))?;
    ctx.conn
        .prepare_cached(
            "INSERT INTO menu_item (id, name_zh, name_en, category, price_fen, option_groups,
                allergens, daily_quota, available, archived, sort_key, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
             ON CONFLICT (id) DO UPDATE SET name_zh = ?2, name_en = ?3, category = ?4,
                price_fen = ?5, option_groups = ?6, allergens = ?7, daily_quota = ?8,
                available = ?9, archived = ?10, sort_key = ?11, updated_at = ?12",
        )?
        .execute(params![
            item.id.to_string(),
            f.name_zh.trim(),
            f.name_en.trim(),
            f.category.trim(),
            f.price_fen,
            groups,
            allergens,
            f.daily_quota,
            f.available,
            f.archived,
            f.sort_key,
            crate::clock::ts(ctx.now),
        ])?;
    ctx.effect(Effect::MenuItem(Box::new(item.clone())));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn noodles() -> ItemFields {
        ItemFields {
            name_zh: "牛肉面".into(),
            name_en: "Beef noodles".into(),
            category: "Noodles".into(),
            price_fen: 1800,
            option_groups: vec![OptionGroup {
                id: "size".into(),
                name_zh: "份量".into(),
                name_en: "Size".into(),
                required: true,
                min_choices: 1,
                max_choices: 1,
                choices: vec![
                    OptionChoice {
                        id: "regular".into(),
                        name_zh: "标准".into(),
                        name_en: "Regular".into(),
                        price_delta_fen: 0,
                    },
                    OptionChoice {
                        id: "large".into(),
                        name_zh: "大份".into(),
                        name_en: "Large".into(),
                        price_delta_fen: 300,
                    },
                ],
            }],
            allergens: vec!["gluten".into()],
            daily_quota: Some(100),
            available: true,
            archived: false,
            sort_key: 0,
        }
    }

    #[test]
    fn validation_names_the_wrong_field() {
        assert!(noodles().validate().is_ok());
        let mut f = noodles();
        f.price_fen = -1;
        assert!(f.validate().unwrap_err().to_string().contains("price_fen"));
        let mut f = noodles();
        f.name_en = "x".repeat(81);
        assert!(f.validate().unwrap_err().to_string().contains("name_en"));
        let mut f = noodles();
        f.option_groups[0].max_choices = 3;
        assert!(f.validate().unwrap_err().to_string().contains("size"));
        let mut f = noodles();
        f.option_groups[0].required = false;
        assert!(f.validate().unwrap_err().to_string().contains("required"));
    }
}
