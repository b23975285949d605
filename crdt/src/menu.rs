//! The menu document: items with names, category, price, option groups, allergens,
//! daily quota, availability; typed single-field edits; the validated projection.
//!
//! Layout: `ROOT.items[<item id>]` is a map of scalar fields, plus
//! `allergens[<tag>] = bool` and `option_groups[<group id>]` maps whose `choices[<id>]`
//! are maps too. Maps make concurrent edits of different fields (or different tags,
//! groups, choices) merge; removal is `archived = true` or `allergens[tag] = false`.

use crate::doc::{field, read};
use crate::{DocError, InvalidValue, ItemId, ReplicatedDoc};
use automerge::ReadDoc;
use automerge::hydrate::Map;
use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjId, ObjType, ROOT};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

pub const NAME_MAX_CHARS: usize = 80;
pub const OPTION_GROUPS_MAX: usize = 10;
pub const CHOICES_MAX: usize = 20;
pub const ALLERGENS_MAX: usize = 16;
/// ¥10,000 in fen: anything above is a typo, not a dish.
pub const PRICE_MAX_FEN: i64 = 1_000_000;
pub const QUOTA_MAX: u32 = 100_000;
/// Edits in one call at most.
pub const EDITS_MAX: usize = 200;

pub(crate) fn schema_v1(doc: &mut AutoCommit) -> Result<(), automerge::AutomergeError> {
    doc.put(ROOT, "kind", "menu")?;
    doc.put_object(ROOT, "items", ObjType::Map)?;
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OptionChoice {
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 80, pattern = r"\S")
    )]
    pub id: String,
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 80, pattern = r"\S")
    )]
    pub name_zh: String,
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 80, pattern = r"\S")
    )]
    pub name_en: String,
    /// Added to the item's price when chosen; may be negative (e.g. "no rice").
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = -1_000_000, maximum = 1_000_000))]
    pub price_delta_fen: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OptionGroup {
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 80, pattern = r"\S")
    )]
    pub id: String,
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 80, pattern = r"\S")
    )]
    pub name_zh: String,
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 80, pattern = r"\S")
    )]
    pub name_en: String,
    /// A required group needs at least one choice (and `min_choices` ≥ 1).
    pub required: bool,
    pub min_choices: u32,
    pub max_choices: u32,
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 20))]
    pub choices: Vec<OptionChoice>,
}

/// The editable fields of a menu item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ItemFields {
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 80, pattern = r"\S")
    )]
    pub name_zh: String,
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 80, pattern = r"\S")
    )]
    pub name_en: String,
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 80, pattern = r"\S")
    )]
    pub category: String,
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 1_000_000))]
    pub price_fen: i64,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_items = 10))]
    pub option_groups: Vec<OptionGroup>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_items = 16))]
    pub allergens: Vec<String>,
    /// Portions per service day; `null` means unlimited.
    #[cfg_attr(feature = "openapi", schema(maximum = 100_000))]
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MenuItem {
    pub id: ItemId,
    #[serde(flatten)]
    pub fields: ItemFields,
}

fn check_name(path: &str, value: &str) -> Result<(), InvalidValue> {
    let chars = value.trim().chars().count();
    if chars == 0 || chars > NAME_MAX_CHARS {
        return Err(InvalidValue::new(
            path,
            format!("must be 1 to {NAME_MAX_CHARS} characters"),
        ));
    }
    Ok(())
}

fn check_price(path: &str, fen: i64) -> Result<(), InvalidValue> {
    if !(0..=PRICE_MAX_FEN).contains(&fen) {
        return Err(InvalidValue::new(
            path,
            format!("must be between 0 and {PRICE_MAX_FEN}"),
        ));
    }
    Ok(())
}

fn check_delta(path: &str, fen: i64) -> Result<(), InvalidValue> {
    if fen.abs() > PRICE_MAX_FEN {
        return Err(InvalidValue::new(path, "is out of range"));
    }
    Ok(())
}

fn check_quota(path: &str, quota: Option<u32>) -> Result<(), InvalidValue> {
    if quota.is_some_and(|q| q > QUOTA_MAX) {
        return Err(InvalidValue::new(
            path,
            format!("must be at most {QUOTA_MAX}"),
        ));
    }
    Ok(())
}

fn check_limits(
    path: &str,
    required: bool,
    min: u32,
    max: u32,
    choices: usize,
) -> Result<(), InvalidValue> {
    if min > max || max == 0 || max as usize > choices {
        return Err(InvalidValue::new(
            path,
            "need min_choices ≤ max_choices ≤ number of choices, and max_choices ≥ 1",
        ));
    }
    if required != (min >= 1) {
        return Err(InvalidValue::new(
            path,
            "required groups have min_choices ≥ 1, optional ones 0",
        ));
    }
    Ok(())
}

impl OptionGroup {
    fn validate(&self, path: &str) -> Result<(), InvalidValue> {
        let path = format!("{path}/option_groups/{}", self.id);
        check_name(&format!("{path}/id"), &self.id)?;
        check_name(&format!("{path}/name_zh"), &self.name_zh)?;
        check_name(&format!("{path}/name_en"), &self.name_en)?;
        if self.choices.is_empty() || self.choices.len() > CHOICES_MAX {
            return Err(InvalidValue::new(
                &path,
                format!("needs 1 to {CHOICES_MAX} choices"),
            ));
        }
        check_limits(
            &path,
            self.required,
            self.min_choices,
            self.max_choices,
            self.choices.len(),
        )?;
        let mut ids = HashSet::new();
        for c in &self.choices {
            let cpath = format!("{path}/choices/{}", c.id);
            check_name(&format!("{cpath}/id"), &c.id)?;
            check_name(&format!("{cpath}/name_zh"), &c.name_zh)?;
            check_name(&format!("{cpath}/name_en"), &c.name_en)?;
            check_delta(&format!("{cpath}/price_delta_fen"), c.price_delta_fen)?;
            if !ids.insert(&c.id) {
                return Err(InvalidValue::new(cpath, "choice id is used twice"));
            }
        }
        Ok(())
    }
}

impl ItemFields {
    /// Checks every field; the error names the first one that is wrong.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        self.validate_at("item")
    }

    fn validate_at(&self, path: &str) -> Result<(), InvalidValue> {
        check_name(&format!("{path}/name_zh"), &self.name_zh)?;
        check_name(&format!("{path}/name_en"), &self.name_en)?;
        check_name(&format!("{path}/category"), &self.category)?;
        check_price(&format!("{path}/price_fen"), self.price_fen)?;
        check_quota(&format!("{path}/daily_quota"), self.daily_quota)?;
        if self.allergens.len() > ALLERGENS_MAX {
            return Err(InvalidValue::new(
                format!("{path}/allergens"),
                format!("at most {ALLERGENS_MAX} tags"),
            ));
        }
        for tag in &self.allergens {
            check_name(&format!("{path}/allergens"), tag)?;
        }
        if self.option_groups.len() > OPTION_GROUPS_MAX {
            return Err(InvalidValue::new(
                format!("{path}/option_groups"),
                format!("at most {OPTION_GROUPS_MAX} groups"),
            ));
        }
        let mut ids = HashSet::new();
        for g in &self.option_groups {
            g.validate(path)?;
            if !ids.insert(&g.id) {
                return Err(InvalidValue::new(
                    format!("{path}/option_groups/{}", g.id),
                    "group id is used twice",
                ));
            }
        }
        Ok(())
    }
}

/// One single-field edit of the menu. Concurrent edits of different fields all
/// survive a merge; concurrent edits of the same field become a conflict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum MenuEdit {
    /// A new item (its id must be new).
    AddItem {
        item: ItemId,
        fields: ItemFields,
    },
    SetNameZh {
        item: ItemId,
        #[cfg_attr(
            feature = "openapi",
            schema(min_length = 1, max_length = 80, pattern = r"\S")
        )]
        name: String,
    },
    SetNameEn {
        item: ItemId,
        #[cfg_attr(
            feature = "openapi",
            schema(min_length = 1, max_length = 80, pattern = r"\S")
        )]
        name: String,
    },
    SetCategory {
        item: ItemId,
        #[cfg_attr(
            feature = "openapi",
            schema(min_length = 1, max_length = 80, pattern = r"\S")
        )]
        category: String,
    },
    SetPrice {
        item: ItemId,
        #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 1_000_000))]
        price_fen: i64,
    },
    SetQuota {
        item: ItemId,
        #[cfg_attr(feature = "openapi", schema(maximum = 100_000))]
        daily_quota: Option<u32>,
    },
    SetAvailable {
        item: ItemId,
        available: bool,
    },
    SetSortKey {
        item: ItemId,
        sort_key: i64,
    },
    /// Adds (`present: true`) or removes an allergen tag.
    SetAllergen {
        item: ItemId,
        #[cfg_attr(
            feature = "openapi",
            schema(min_length = 1, max_length = 80, pattern = r"\S")
        )]
        tag: String,
        present: bool,
    },
    /// Archiving hides an item; it is never deleted.
    SetArchived {
        item: ItemId,
        archived: bool,
    },
    AddOptionGroup {
        item: ItemId,
        group: OptionGroup,
    },
    SetGroupNames {
        item: ItemId,
        group: String,
        #[cfg_attr(
            feature = "openapi",
            schema(min_length = 1, max_length = 80, pattern = r"\S")
        )]
        name_zh: String,
        #[cfg_attr(
            feature = "openapi",
            schema(min_length = 1, max_length = 80, pattern = r"\S")
        )]
        name_en: String,
    },
    SetGroupLimits {
        item: ItemId,
        group: String,
        required: bool,
        min_choices: u32,
        max_choices: u32,
    },
    SetGroupArchived {
        item: ItemId,
        group: String,
        archived: bool,
    },
    AddChoice {
        item: ItemId,
        group: String,
        choice: OptionChoice,
    },
    SetChoiceNames {
        item: ItemId,
        group: String,
        choice: String,
        #[cfg_attr(
            feature = "openapi",
            schema(min_length = 1, max_length = 80, pattern = r"\S")
        )]
        name_zh: String,
        #[cfg_attr(
            feature = "openapi",
            schema(min_length = 1, max_length = 80, pattern = r"\S")
        )]
        name_en: String,
    },
    SetChoicePrice {
        item: ItemId,
        group: String,
        choice: String,
        #[cfg_attr(feature = "openapi", schema(minimum = -1_000_000, maximum = 1_000_000))]
        price_delta_fen: i64,
    },
    SetChoiceArchived {
        item: ItemId,
        group: String,
        choice: String,
        archived: bool,
    },
}

impl MenuEdit {
    pub fn item(&self) -> ItemId {
        match self {
            Self::AddItem { item, .. }
            | Self::SetNameZh { item, .. }
            | Self::SetNameEn { item, .. }
            | Self::SetCategory { item, .. }
            | Self::SetPrice { item, .. }
            | Self::SetQuota { item, .. }
            | Self::SetAvailable { item, .. }
            | Self::SetSortKey { item, .. }
            | Self::SetAllergen { item, .. }
            | Self::SetArchived { item, .. }
            | Self::AddOptionGroup { item, .. }
            | Self::SetGroupNames { item, .. }
            | Self::SetGroupLimits { item, .. }
            | Self::SetGroupArchived { item, .. }
            | Self::AddChoice { item, .. }
            | Self::SetChoiceNames { item, .. }
            | Self::SetChoicePrice { item, .. }
            | Self::SetChoiceArchived { item, .. } => *item,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error(transparent)]
    Invalid(#[from] InvalidValue),
    #[error("no menu item {0}")]
    NoItem(ItemId),
    #[error("menu item {0} already exists")]
    ItemExists(ItemId),
    #[error("item {item} has no option group {group:?}")]
    NoGroup { item: ItemId, group: String },
    #[error("option group {group:?} of item {item} already exists")]
    GroupExists { item: ItemId, group: String },
    #[error("group {group:?} of item {item} has no choice {choice:?}")]
    NoChoice {
        item: ItemId,
        group: String,
        choice: String,
    },
    #[error("choice {choice:?} already exists in group {group:?}")]
    ChoiceExists { group: String, choice: String },
    #[error("at most {EDITS_MAX} edits at once")]
    TooMany,
    #[error(transparent)]
    Doc(#[from] DocError),
}

impl From<automerge::AutomergeError> for EditError {
    fn from(e: automerge::AutomergeError) -> Self {
        Self::Doc(e.into())
    }
}

fn items(doc: &AutoCommit) -> Result<ObjId, InvalidValue> {
    field::map(doc, &ROOT, "items", "")
}

fn item_obj(doc: &AutoCommit, item: ItemId) -> Result<ObjId, EditError> {
    field::opt_map(doc, &items(doc)?, &item.to_string()).ok_or(EditError::NoItem(item))
}

fn group_obj(doc: &AutoCommit, item: ItemId, group: &str) -> Result<ObjId, EditError> {
    let groups = field::map(doc, &item_obj(doc, item)?, "option_groups", "item")?;
    field::opt_map(doc, &groups, group).ok_or_else(|| EditError::NoGroup {
        item,
        group: group.into(),
    })
}

fn choice_obj(
    doc: &AutoCommit,
    item: ItemId,
    group: &str,
    choice: &str,
) -> Result<ObjId, EditError> {
    let choices = field::map(doc, &group_obj(doc, item, group)?, "choices", "group")?;
    field::opt_map(doc, &choices, choice).ok_or_else(|| EditError::NoChoice {
        item,
        group: group.into(),
        choice: choice.into(),
    })
}

fn write_choice(
    doc: &mut AutoCommit,
    choices: &ObjId,
    c: &OptionChoice,
    position: usize,
) -> Result<(), EditError> {
    let obj = doc.put_object(choices, c.id.as_str(), ObjType::Map)?;
    doc.put(&obj, "name_zh", c.name_zh.trim())?;
    doc.put(&obj, "name_en", c.name_en.trim())?;
    doc.put(&obj, "price_delta_fen", c.price_delta_fen)?;
    doc.put(&obj, "position", position as i64)?;
    doc.put(&obj, "archived", false)?;
    Ok(())
}

fn write_group(
    doc: &mut AutoCommit,
    groups: &ObjId,
    g: &OptionGroup,
    position: usize,
) -> Result<(), EditError> {
    let obj = doc.put_object(groups, g.id.as_str(), ObjType::Map)?;
    doc.put(&obj, "name_zh", g.name_zh.trim())?;
    doc.put(&obj, "name_en", g.name_en.trim())?;
    doc.put(&obj, "required", g.required)?;
    doc.put(&obj, "min_choices", i64::from(g.min_choices))?;
    doc.put(&obj, "max_choices", i64::from(g.max_choices))?;
    doc.put(&obj, "position", position as i64)?;
    doc.put(&obj, "archived", false)?;
    let choices = doc.put_object(&obj, "choices", ObjType::Map)?;
    for (i, c) in g.choices.iter().enumerate() {
        write_choice(doc, &choices, c, i)?;
    }
    Ok(())
}

fn apply_one(doc: &mut AutoCommit, edit: &MenuEdit) -> Result<(), EditError> {
    let ipath = |item: &ItemId| format!("items/{item}");
    match edit {
        MenuEdit::AddItem { item, fields } => {
            fields.validate_at(&ipath(item))?;
            let all = items(doc)?;
            if field::opt_map(doc, &all, &item.to_string()).is_some() {
                return Err(EditError::ItemExists(*item));
            }
            let obj = doc.put_object(&all, item.to_string(), ObjType::Map)?;
            doc.put(&obj, "name_zh", fields.name_zh.trim())?;
            doc.put(&obj, "name_en", fields.name_en.trim())?;
            doc.put(&obj, "category", fields.category.trim())?;
            doc.put(&obj, "price_fen", fields.price_fen)?;
            match fields.daily_quota {
                Some(q) => doc.put(&obj, "daily_quota", i64::from(q))?,
                None => doc.put(&obj, "daily_quota", automerge::ScalarValue::Null)?,
            }
            doc.put(&obj, "available", fields.available)?;
            doc.put(&obj, "archived", fields.archived)?;
            doc.put(&obj, "sort_key", fields.sort_key)?;
            let tags = doc.put_object(&obj, "allergens", ObjType::Map)?;
            for tag in &fields.allergens {
                doc.put(&tags, tag.trim(), true)?;
            }
            let groups = doc.put_object(&obj, "option_groups", ObjType::Map)?;
            for (i, g) in fields.option_groups.iter().enumerate() {
                write_group(doc, &groups, g, i)?;
            }
        }
        MenuEdit::SetNameZh { item, name } => {
            check_name(&format!("{}/name_zh", ipath(item)), name)?;
            let obj = item_obj(doc, *item)?;
            field::set(doc, &obj, "name_zh", name.trim())?;
        }
        MenuEdit::SetNameEn { item, name } => {
            check_name(&format!("{}/name_en", ipath(item)), name)?;
            let obj = item_obj(doc, *item)?;
            field::set(doc, &obj, "name_en", name.trim())?;
        }
        MenuEdit::SetCategory { item, category } => {
            check_name(&format!("{}/category", ipath(item)), category)?;
            let obj = item_obj(doc, *item)?;
            field::set(doc, &obj, "category", category.trim())?;
        }
        MenuEdit::SetPrice { item, price_fen } => {
            check_price(&format!("{}/price_fen", ipath(item)), *price_fen)?;
            let obj = item_obj(doc, *item)?;
            field::set(doc, &obj, "price_fen", *price_fen)?;
        }
        MenuEdit::SetQuota { item, daily_quota } => {
            check_quota(&format!("{}/daily_quota", ipath(item)), *daily_quota)?;
            let obj = item_obj(doc, *item)?;
            match daily_quota {
                Some(q) => field::set(doc, &obj, "daily_quota", i64::from(*q))?,
                None => field::set(doc, &obj, "daily_quota", automerge::ScalarValue::Null)?,
            }
        }
        MenuEdit::SetAvailable { item, available } => {
            let obj = item_obj(doc, *item)?;
            field::set(doc, &obj, "available", *available)?;
        }
        MenuEdit::SetSortKey { item, sort_key } => {
            let obj = item_obj(doc, *item)?;
            field::set(doc, &obj, "sort_key", *sort_key)?;
        }
        MenuEdit::SetAllergen { item, tag, present } => {
            check_name(&format!("{}/allergens", ipath(item)), tag)?;
            let obj = item_obj(doc, *item)?;
            let tags = field::ensure_map(doc, &obj, "allergens")?;
            field::set(doc, &tags, tag.trim(), *present)?;
        }
        MenuEdit::SetArchived { item, archived } => {
            let obj = item_obj(doc, *item)?;
            field::set(doc, &obj, "archived", *archived)?;
        }
        MenuEdit::AddOptionGroup { item, group } => {
            group.validate(&ipath(item))?;
            let obj = item_obj(doc, *item)?;
            let groups = field::ensure_map(doc, &obj, "option_groups")?;
            if field::opt_map(doc, &groups, &group.id).is_some() {
                return Err(EditError::GroupExists {
                    item: *item,
                    group: group.id.clone(),
                });
            }
            let position = field::keys(doc, &groups).len();
            write_group(doc, &groups, group, position)?;
        }
        MenuEdit::SetGroupNames {
            item,
            group,
            name_zh,
            name_en,
        } => {
            let path = format!("{}/option_groups/{group}", ipath(item));
            check_name(&format!("{path}/name_zh"), name_zh)?;
            check_name(&format!("{path}/name_en"), name_en)?;
            let obj = group_obj(doc, *item, group)?;
            field::set(doc, &obj, "name_zh", name_zh.trim())?;
            field::set(doc, &obj, "name_en", name_en.trim())?;
        }
        MenuEdit::SetGroupLimits {
            item,
            group,
            required,
            min_choices,
            max_choices,
        } => {
            let obj = group_obj(doc, *item, group)?;
            let choices = field::map(doc, &obj, "choices", "group")?;
            let live = field::keys(doc, &choices)
                .iter()
                .filter(|c| {
                    field::opt_map(doc, &choices, c)
                        .is_some_and(|o| !field::boolean(doc, &o, "archived", "").unwrap_or(false))
                })
                .count();
            let path = format!("{}/option_groups/{group}", ipath(item));
            check_limits(&path, *required, *min_choices, *max_choices, live)?;
            field::set(doc, &obj, "required", *required)?;
            field::set(doc, &obj, "min_choices", i64::from(*min_choices))?;
            field::set(doc, &obj, "max_choices", i64::from(*max_choices))?;
        }
        MenuEdit::SetGroupArchived {
            item,
            group,
            archived,
        } => {
            let obj = group_obj(doc, *item, group)?;
            field::set(doc, &obj, "archived", *archived)?;
        }
        MenuEdit::AddChoice {
            item,
            group,
            choice,
        } => {
            let path = format!(
                "{}/option_groups/{group}/choices/{}",
                ipath(item),
                choice.id
            );
            check_name(&format!("{path}/id"), &choice.id)?;
            check_name(&format!("{path}/name_zh"), &choice.name_zh)?;
            check_name(&format!("{path}/name_en"), &choice.name_en)?;
            check_delta(&format!("{path}/price_delta_fen"), choice.price_delta_fen)?;
            let obj = group_obj(doc, *item, group)?;
            let choices = field::ensure_map(doc, &obj, "choices")?;
            if field::opt_map(doc, &choices, &choice.id).is_some() {
                return Err(EditError::ChoiceExists {
                    group: group.clone(),
                    choice: choice.id.clone(),
                });
            }
            let count = field::keys(doc, &choices).len();
            if count >= CHOICES_MAX {
                return Err(
                    InvalidValue::new(path, format!("at most {CHOICES_MAX} choices")).into(),
                );
            }
            write_choice(doc, &choices, choice, count)?;
        }
        MenuEdit::SetChoiceNames {
            item,
            group,
            choice,
            name_zh,
            name_en,
        } => {
            let path = format!("{}/option_groups/{group}/choices/{choice}", ipath(item));
            check_name(&format!("{path}/name_zh"), name_zh)?;
            check_name(&format!("{path}/name_en"), name_en)?;
            let obj = choice_obj(doc, *item, group, choice)?;
            field::set(doc, &obj, "name_zh", name_zh.trim())?;
            field::set(doc, &obj, "name_en", name_en.trim())?;
        }
        MenuEdit::SetChoicePrice {
            item,
            group,
            choice,
            price_delta_fen,
        } => {
            let path = format!(
                "{}/option_groups/{group}/choices/{choice}/price_delta_fen",
                ipath(item)
            );
            check_delta(&path, *price_delta_fen)?;
            let obj = choice_obj(doc, *item, group, choice)?;
            field::set(doc, &obj, "price_delta_fen", *price_delta_fen)?;
        }
        MenuEdit::SetChoiceArchived {
            item,
            group,
            choice,
            archived,
        } => {
            let obj = choice_obj(doc, *item, group, choice)?;
            field::set(doc, &obj, "archived", *archived)?;
        }
    }
    Ok(())
}

/// Applies edits as one change, all or nothing; `time_ms` is the change's timestamp.
/// The resulting menu is validated as a whole before the change is kept.
pub fn apply(doc: &mut ReplicatedDoc, edits: &[MenuEdit], time_ms: i64) -> Result<(), EditError> {
    if edits.len() > EDITS_MAX {
        return Err(EditError::TooMany);
    }
    doc.change(time_ms, |am| {
        for edit in edits {
            apply_one(am, edit)?;
        }
        // Edits valid one by one can still combine into an invalid item (e.g. a
        // group's limits against archived choices): check the items touched.
        for item in edits.iter().map(MenuEdit::item).collect::<HashSet<_>>() {
            let all = items(am)?;
            if let Some(obj) = field::opt_map(am, &all, &item.to_string())
                && let Ok(automerge::hydrate::Value::Map(m)) = am.hydrate(&obj, None)
            {
                read_item(item, &m)?;
            }
        }
        Ok(())
    })
}

/// The menu as plain values, in display order (category, sort key, English name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MenuView {
    pub items: Vec<MenuItem>,
}

fn read_item(id: ItemId, obj: &Map) -> Result<MenuItem, InvalidValue> {
    let path = format!("items/{id}");
    let p = path.as_str();
    let quota = read::opt_int(obj, "daily_quota", p)?;
    let daily_quota =
        match quota {
            None => None,
            Some(q) => Some(u32::try_from(q).map_err(|_| {
                InvalidValue::new(format!("{p}/daily_quota"), "must not be negative")
            })?),
        };
    let mut allergens = Vec::new();
    if let Some(tags) = read::opt_map(obj, "allergens") {
        for tag in read::keys(tags) {
            if read::boolean(tags, tag, &format!("{p}/allergens"))? {
                allergens.push(tag.clone());
            }
        }
    }
    let mut option_groups = Vec::new();
    if let Some(groups) = read::opt_map(obj, "option_groups") {
        let mut found = Vec::new();
        for gid in read::keys(groups) {
            let gpath = format!("{p}/option_groups/{gid}");
            let g = read::map(groups, gid, &format!("{p}/option_groups"))?;
            if read::boolean(g, "archived", &gpath)? {
                continue;
            }
            let choices_obj = read::map(g, "choices", &gpath)?;
            let mut choices = Vec::new();
            for cid in read::keys(choices_obj) {
                let cpath = format!("{gpath}/choices/{cid}");
                let c = read::map(choices_obj, cid, &format!("{gpath}/choices"))?;
                if read::boolean(c, "archived", &cpath)? {
                    continue;
                }
                let position = read::int(c, "position", &cpath)?;
                choices.push((
                    position,
                    OptionChoice {
                        name_zh: read::string(c, "name_zh", &cpath)?,
                        name_en: read::string(c, "name_en", &cpath)?,
                        price_delta_fen: read::int(c, "price_delta_fen", &cpath)?,
                        id: cid.clone(),
                    },
                ));
            }
            choices.sort_by(|a, b| (a.0, &a.1.id).cmp(&(b.0, &b.1.id)));
            let int_u32 = |key: &str| -> Result<u32, InvalidValue> {
                u32::try_from(read::int(g, key, &gpath)?)
                    .map_err(|_| InvalidValue::new(format!("{gpath}/{key}"), "out of range"))
            };
            found.push((
                read::int(g, "position", &gpath)?,
                OptionGroup {
                    name_zh: read::string(g, "name_zh", &gpath)?,
                    name_en: read::string(g, "name_en", &gpath)?,
                    required: read::boolean(g, "required", &gpath)?,
                    min_choices: int_u32("min_choices")?,
                    max_choices: int_u32("max_choices")?,
                    choices: choices.into_iter().map(|(_, c)| c).collect(),
                    id: gid.clone(),
                },
            ));
        }
        found.sort_by(|a, b| (a.0, &a.1.id).cmp(&(b.0, &b.1.id)));
        option_groups = found.into_iter().map(|(_, g)| g).collect();
    }
    let fields = ItemFields {
        name_zh: read::string(obj, "name_zh", p)?,
        name_en: read::string(obj, "name_en", p)?,
        category: read::string(obj, "category", p)?,
        price_fen: read::int(obj, "price_fen", p)?,
        option_groups,
        allergens,
        daily_quota,
        available: read::boolean(obj, "available", p)?,
        archived: read::boolean(obj, "archived", p)?,
        sort_key: read::int(obj, "sort_key", p)?,
    };
    fields.validate_at(p)?;
    Ok(MenuItem { id, fields })
}

/// Reads and validates one item (`None` if the document has no such item): the
/// cheap refresh after a local edit of a few items.
pub fn project_item(doc: &ReplicatedDoc, id: ItemId) -> Result<Option<MenuItem>, InvalidValue> {
    let am = doc.am();
    let Some(obj) = field::opt_map(am, &items(am)?, &id.to_string()) else {
        return Ok(None);
    };
    match am.hydrate(&obj, None) {
        Ok(automerge::hydrate::Value::Map(m)) => read_item(id, &m).map(Some),
        _ => Err(InvalidValue::new(format!("items/{id}"), "expected a map")),
    }
}

/// Display order of the menu: category, sort key, English name.
pub fn sort_items(items: &mut [MenuItem]) {
    items.sort_by(|a, b| {
        (&a.fields.category, a.fields.sort_key, &a.fields.name_en).cmp(&(
            &b.fields.category,
            b.fields.sort_key,
            &b.fields.name_en,
        ))
    });
}

/// Reads and validates the whole menu. Any invalid value (from a buggy or hostile
/// peer) refuses the document with the path of the value.
pub fn project(doc: &ReplicatedDoc) -> Result<MenuView, InvalidValue> {
    let root = crate::doc::hydrate(doc)?;
    let all = read::map(&root, "items", "")?;
    let mut out = Vec::new();
    for key in read::keys(all) {
        let id: ItemId = key
            .parse()
            .map_err(|_| InvalidValue::new(format!("items/{key}"), "item key is not a UUID"))?;
        out.push(read_item(id, read::map(all, key, "items")?)?);
    }
    sort_items(&mut out);
    Ok(MenuView { items: out })
}

/// The edit that settles a conflicted field of an item (a path from
/// [`crate::conflicts`], e.g. `["items", "<id>", "price_fen"]`) on one of its values:
/// a new write of that value supersedes every concurrent one. `None` for a field that
/// is not an item's scalar, or a value that does not fit the field.
pub fn keep_value(path: &[String], value: &str) -> Option<MenuEdit> {
    let [items, id, field] = path else {
        return None;
    };
    if items != "items" {
        return None;
    }
    let item: ItemId = id.parse().ok()?;
    Some(match field.as_str() {
        "name_zh" => MenuEdit::SetNameZh {
            item,
            name: value.to_owned(),
        },
        "name_en" => MenuEdit::SetNameEn {
            item,
            name: value.to_owned(),
        },
        "category" => MenuEdit::SetCategory {
            item,
            category: value.to_owned(),
        },
        "price_fen" => MenuEdit::SetPrice {
            item,
            price_fen: value.parse().ok()?,
        },
        "daily_quota" => MenuEdit::SetQuota {
            item,
            daily_quota: match value {
                "null" => None,
                v => Some(v.parse().ok()?),
            },
        },
        "available" => MenuEdit::SetAvailable {
            item,
            available: value.parse().ok()?,
        },
        "archived" => MenuEdit::SetArchived {
            item,
            archived: value.parse().ok()?,
        },
        "sort_key" => MenuEdit::SetSortKey {
            item,
            sort_key: value.parse().ok()?,
        },
        _ => return None,
    })
}

/// Settles a conflicted field of an item on `value` (one of its values, see
/// [`keep_value`]): written again even when it is the value the projection shows, so
/// the new write supersedes every concurrent one and the conflict is gone everywhere
/// once it syncs. The value is checked as an edit of the field would be.
pub fn settle(
    doc: &mut ReplicatedDoc,
    path: &[String],
    value: &str,
    time_ms: i64,
) -> Result<(), EditError> {
    let unfit = || InvalidValue::new(path.join("/"), "not an item field this value fits");
    let edit = keep_value(path, value).ok_or_else(unfit)?;
    apply(&mut doc.fork(), std::slice::from_ref(&edit), time_ms)?;
    let scalar: automerge::ScalarValue = match &edit {
        MenuEdit::SetNameZh { name, .. } | MenuEdit::SetNameEn { name, .. } => name.trim().into(),
        MenuEdit::SetCategory { category, .. } => category.trim().into(),
        MenuEdit::SetPrice { price_fen, .. } => (*price_fen).into(),
        MenuEdit::SetQuota { daily_quota, .. } => {
            daily_quota.map_or(automerge::ScalarValue::Null, |q| i64::from(q).into())
        }
        MenuEdit::SetAvailable { available, .. } => (*available).into(),
        MenuEdit::SetArchived { archived, .. } => (*archived).into(),
        MenuEdit::SetSortKey { sort_key, .. } => (*sort_key).into(),
        _ => return Err(unfit().into()),
    };
    let (item, key) = (edit.item(), path[2].clone());
    doc.change(time_ms, |am| {
        let obj = item_obj(am, item)?;
        am.put(&obj, key.as_str(), scalar)?;
        Ok(())
    })
}

/// The single-field edits that turn `old` into `new` (e.g. from a form that sends a
/// whole item): only what changed is written, so a concurrent edit of another field
/// by someone else survives. Groups or choices missing from `new` are archived.
pub fn diff(old: Option<&MenuItem>, new: &MenuItem) -> Vec<MenuEdit> {
    let item = new.id;
    let Some(old) = old else {
        return vec![MenuEdit::AddItem {
            item,
            fields: new.fields.clone(),
        }];
    };
    let (o, n) = (&old.fields, &new.fields);
    let mut edits = Vec::new();
    if o.name_zh != n.name_zh {
        edits.push(MenuEdit::SetNameZh {
            item,
            name: n.name_zh.clone(),
        });
    }
    if o.name_en != n.name_en {
        edits.push(MenuEdit::SetNameEn {
            item,
            name: n.name_en.clone(),
        });
    }
    if o.category != n.category {
        edits.push(MenuEdit::SetCategory {
            item,
            category: n.category.clone(),
        });
    }
    if o.price_fen != n.price_fen {
        edits.push(MenuEdit::SetPrice {
            item,
            price_fen: n.price_fen,
        });
    }
    if o.daily_quota != n.daily_quota {
        edits.push(MenuEdit::SetQuota {
            item,
            daily_quota: n.daily_quota,
        });
    }
    if o.available != n.available {
        edits.push(MenuEdit::SetAvailable {
            item,
            available: n.available,
        });
    }
    if o.archived != n.archived {
        edits.push(MenuEdit::SetArchived {
            item,
            archived: n.archived,
        });
    }
    if o.sort_key != n.sort_key {
        edits.push(MenuEdit::SetSortKey {
            item,
            sort_key: n.sort_key,
        });
    }
    for tag in &n.allergens {
        if !o.allergens.contains(tag) {
            edits.push(MenuEdit::SetAllergen {
                item,
                tag: tag.clone(),
                present: true,
            });
        }
    }
    for tag in &o.allergens {
        if !n.allergens.contains(tag) {
            edits.push(MenuEdit::SetAllergen {
                item,
                tag: tag.clone(),
                present: false,
            });
        }
    }
    for g in &n.option_groups {
        let Some(og) = o.option_groups.iter().find(|x| x.id == g.id) else {
            // New group, or an archived one brought back under the same id: add (a
            // re-used id of an archived group is unarchived and updated below).
            edits.push(MenuEdit::AddOptionGroup {
                item,
                group: g.clone(),
            });
            continue;
        };
        if (&og.name_zh, &og.name_en) != (&g.name_zh, &g.name_en) {
            edits.push(MenuEdit::SetGroupNames {
                item,
                group: g.id.clone(),
                name_zh: g.name_zh.clone(),
                name_en: g.name_en.clone(),
            });
        }
        let mut limits_changed = (og.required, og.min_choices, og.max_choices)
            != (g.required, g.min_choices, g.max_choices);
        for c in &g.choices {
            match og.choices.iter().find(|x| x.id == c.id) {
                None => {
                    edits.push(MenuEdit::AddChoice {
                        item,
                        group: g.id.clone(),
                        choice: c.clone(),
                    });
                    limits_changed = true;
                }
                Some(oc) => {
                    if (&oc.name_zh, &oc.name_en) != (&c.name_zh, &c.name_en) {
                        edits.push(MenuEdit::SetChoiceNames {
                            item,
                            group: g.id.clone(),
                            choice: c.id.clone(),
                            name_zh: c.name_zh.clone(),
                            name_en: c.name_en.clone(),
                        });
                    }
                    if oc.price_delta_fen != c.price_delta_fen {
                        edits.push(MenuEdit::SetChoicePrice {
                            item,
                            group: g.id.clone(),
                            choice: c.id.clone(),
                            price_delta_fen: c.price_delta_fen,
                        });
                    }
                }
            }
        }
        for oc in &og.choices {
            if !g.choices.iter().any(|c| c.id == oc.id) {
                edits.push(MenuEdit::SetChoiceArchived {
                    item,
                    group: g.id.clone(),
                    choice: oc.id.clone(),
                    archived: true,
                });
                limits_changed = true;
            }
        }
        if limits_changed {
            edits.push(MenuEdit::SetGroupLimits {
                item,
                group: g.id.clone(),
                required: g.required,
                min_choices: g.min_choices,
                max_choices: g.max_choices,
            });
        }
    }
    for og in &o.option_groups {
        if !n.option_groups.iter().any(|g| g.id == og.id) {
            edits.push(MenuEdit::SetGroupArchived {
                item,
                group: og.id.clone(),
                archived: true,
            });
        }
    }
    edits
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DocKind;

    fn item() -> ItemFields {
        ItemFields {
            name_zh: "汤".into(),
            name_en: "Soup".into(),
            category: "Soup".into(),
            price_fen: 300,
            option_groups: vec![],
            allergens: vec![],
            daily_quota: None,
            available: true,
            archived: false,
            sort_key: 0,
        }
    }

    /// A peer that bypasses the typed edits (a bug or a hostile replica) and writes
    /// raw values: the projection refuses the document and names the value.
    #[test]
    fn values_from_a_peer_are_validated_not_trusted() {
        let mut doc = ReplicatedDoc::create(DocKind::Menu, b"box").unwrap();
        let id = ItemId::new();
        apply(
            &mut doc,
            &[MenuEdit::AddItem {
                item: id,
                fields: item(),
            }],
            1,
        )
        .unwrap();
        let mut peer = doc.fork();
        {
            let am = peer.am_mut();
            let items = field::map(am, &ROOT, "items", "").unwrap();
            let obj = field::opt_map(am, &items, &id.to_string()).unwrap();
            am.put(&obj, "price_fen", -5_i64).unwrap();
            am.commit();
        }
        doc.merge(&mut peer).unwrap();
        let err = project(&doc).unwrap_err();
        assert_eq!(err.path, format!("items/{id}/price_fen"));

        let mut doc = ReplicatedDoc::create(DocKind::Menu, b"box").unwrap();
        apply(
            &mut doc,
            &[MenuEdit::AddItem {
                item: id,
                fields: item(),
            }],
            1,
        )
        .unwrap();
        let mut peer = doc.fork();
        {
            let am = peer.am_mut();
            let items = field::map(am, &ROOT, "items", "").unwrap();
            let obj = field::opt_map(am, &items, &id.to_string()).unwrap();
            am.put(&obj, "name_en", "x".repeat(500)).unwrap();
            am.put(&obj, "available", "yes").unwrap();
            am.commit();
        }
        doc.merge(&mut peer).unwrap();
        let err = project(&doc).unwrap_err();
        assert!(
            err.path.ends_with("available") || err.path.ends_with("name_en"),
            "{err}"
        );
    }
}
