//! The menu across canteens: a dish created or changed once and pushed to chosen
//! canteens (or every canteen the admin may change), a campus-wide price change being
//! one such push; per canteen, the state of each push from the documents' heads
//! (sent: in the cloud's replica of the canteen's menu; applied: the box reported heads
//! that contain it; conflicting: the box changed one of the dish's fields at the same
//! time, and both values stand until someone keeps one); and resolving a conflict.
//!
//! A push is a set of single-field edits, written into each canteen's replica of its
//! menu document; the boxes receive them on their next document sync, and a changed
//! quota or availability reaches the box's stock of the day there.

use super::admin::{audit, on_blocking_pool};
use super::admins::AdminAccount;
use super::auth::{AdminError, now_ms};
use super::server::Cloud;
use super::store::MenuPush;
use axum::http::StatusCode;
use crdt::DocKind;
use crdt::menu::{ItemFields, MenuEdit};
use serde::{Deserialize, Serialize};

/// Canteens one push may name, at most.
pub const PUSH_CANTEENS_MAX: usize = 200;
/// Pushes a page lists.
pub const PUSHES_LISTED: usize = 50;

/// A dish created or changed at several canteens. Fields left out are not changed; a
/// canteen whose menu lacks the dish gets it added, which needs both names, the
/// category and the price.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct DishChange {
    /// The dish; a new one when left out.
    pub item: Option<crdt::ItemId>,
    /// Node ids; every canteen the admin may change when empty.
    #[serde(default)]
    pub canteens: Vec<String>,
    pub name_zh: Option<String>,
    pub name_en: Option<String>,
    pub category: Option<String>,
    pub price_fen: Option<i64>,
    /// `Some(None)` sets the quota to unlimited.
    #[serde(default, with = "double_option")]
    pub daily_quota: Option<Option<u32>>,
    pub available: Option<bool>,
}

/// `null` (unlimited) apart from a missing field (unchanged).
mod double_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(
        v: &Option<Option<u32>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        v.serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<u32>>, D::Error> {
        Option::<u32>::deserialize(d).map(Some)
    }
}

impl DishChange {
    /// The edits that bring one canteen's menu to this change (`existing`: whether
    /// the dish is on it).
    pub fn edits(&self, item: crdt::ItemId, existing: bool) -> Result<Vec<MenuEdit>, String> {
        if !existing {
            let (Some(name_zh), Some(name_en), Some(category), Some(price_fen)) = (
                self.name_zh.clone(),
                self.name_en.clone(),
                self.category.clone(),
                self.price_fen,
            ) else {
                return Err(
                    "the dish is not on this canteen's menu: adding it needs both names, the category and the price"
                        .into(),
                );
            };
            return Ok(vec![MenuEdit::AddItem {
                item,
                fields: ItemFields {
                    name_zh,
                    name_en,
                    category,
                    price_fen,
                    option_groups: Vec::new(),
                    allergens: Vec::new(),
                    daily_quota: self.daily_quota.flatten(),
                    available: self.available.unwrap_or(true),
                    archived: false,
                    sort_key: 0,
                },
            }]);
        }
        let mut edits = Vec::new();
        if let Some(name) = &self.name_zh {
            edits.push(MenuEdit::SetNameZh {
                item,
                name: name.clone(),
            });
        }
        if let Some(name) = &self.name_en {
            edits.push(MenuEdit::SetNameEn {
                item,
                name: name.clone(),
            });
        }
        if let Some(category) = &self.category {
            edits.push(MenuEdit::SetCategory {
                item,
                category: category.clone(),
            });
        }
        if let Some(price_fen) = self.price_fen {
            edits.push(MenuEdit::SetPrice { item, price_fen });
        }
        if let Some(daily_quota) = self.daily_quota {
            edits.push(MenuEdit::SetQuota { item, daily_quota });
        }
        if let Some(available) = self.available {
            edits.push(MenuEdit::SetAvailable { item, available });
        }
        if edits.is_empty() {
            return Err("the change names no field".into());
        }
        Ok(edits)
    }
}

/// What a push did at each canteen.
#[derive(Debug, Clone, Serialize)]
pub struct PushOutcome {
    pub push_id: String,
    pub item: crdt::ItemId,
    /// Canteens whose menu took the change.
    pub sent: Vec<String>,
    /// Canteens that refused it, with the reason (their menus are unchanged).
    pub refused: Vec<(String, String)>,
}

/// One canteen's state of a push.
#[derive(Debug, Clone, Serialize)]
pub struct TargetState {
    pub canteen: String,
    /// `sent`, `applied` or `conflicting`.
    pub state: &'static str,
    /// The dish's conflicted fields at this canteen, with every value.
    pub conflicts: Vec<crdt::Conflict>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PushView {
    #[serde(flatten)]
    pub push: MenuPush,
    pub targets: Vec<TargetState>,
}

fn bad(code: &'static str, message: impl Into<String>) -> AdminError {
    AdminError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
}

/// Pushes a dish change to its canteens; audited.
pub async fn push(
    cloud: &Cloud,
    account: &AdminAccount,
    change: DishChange,
) -> Result<PushOutcome, AdminError> {
    let result = push_unaudited(cloud, account, &change).await;
    let canteens = match &result {
        Ok(o) => o.sent.clone(),
        Err(_) => change.canteens.clone(),
    };
    let detail = match &result {
        Ok(o) => format!(
            "dish {}: sent to {}, refused by {}",
            o.item,
            o.sent.len(),
            o.refused
                .iter()
                .map(|(c, why)| format!("{c} ({why})"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Err(_) => "menu push".into(),
    };
    audit(
        cloud,
        &account.username,
        "menu.push",
        &canteens,
        &result,
        detail,
    )
    .await;
    result
}

async fn push_unaudited(
    cloud: &Cloud,
    account: &AdminAccount,
    change: &DishChange,
) -> Result<PushOutcome, AdminError> {
    if account.role == super::admins::Role::Viewer {
        return Err(AdminError::forbidden("a viewer cannot change menus"));
    }
    if change.canteens.len() > PUSH_CANTEENS_MAX {
        return Err(bad(
            "too_many_canteens",
            format!("a push names at most {PUSH_CANTEENS_MAX} canteens"),
        ));
    }
    let known = super::admin::visible_nodes(cloud, account).await?;
    let canteens: Vec<String> = if change.canteens.is_empty() {
        known
            .iter()
            .map(|n| n.node_id.clone())
            .filter(|n| account.may_change(Some(n)))
            .collect()
    } else {
        for c in &change.canteens {
            if !known.iter().any(|n| &n.node_id == c) {
                return Err(AdminError::new(
                    StatusCode::NOT_FOUND,
                    "unknown_canteen",
                    format!("no canteen {c:?} (or not yours)"),
                ));
            }
            if !account.may_change(Some(c)) {
                return Err(AdminError::forbidden(format!("you cannot change {c:?}")));
            }
        }
        let mut c = change.canteens.clone();
        c.sort();
        c.dedup();
        c
    };
    if canteens.is_empty() {
        return Err(bad("no_canteens", "no canteen to push to"));
    }
    let item = change.item.unwrap_or_default();
    let (docs, store, username) = (
        cloud.docs.clone(),
        cloud.store.clone(),
        account.username.clone(),
    );
    let change = change.clone();
    on_blocking_pool(move || -> Result<PushOutcome, AdminError> {
        let at = now_ms();
        let mut sent = Vec::new();
        let mut refused = Vec::new();
        for node in &canteens {
            let existing = docs
                .menu(node)
                .map_err(AdminError::internal)?
                .0
                .items
                .iter()
                .any(|i| i.id == item);
            let applied = change
                .edits(item, existing)
                .and_then(|edits| docs.push_menu(node, &edits, at).map_err(|e| e.to_string()));
            match applied {
                Ok(heads) => sent.push((node.clone(), heads)),
                Err(why) => refused.push((node.clone(), why)),
            }
        }
        let push_id = crdt::ItemId::new().0.to_string();
        if !sent.is_empty() {
            let change = serde_json::to_string(&change).map_err(AdminError::internal)?;
            store
                .add_menu_push(&MenuPush {
                    push_id: push_id.clone(),
                    at_ms: at,
                    username,
                    item_id: item.to_string(),
                    change,
                    targets: sent.clone(),
                })
                .map_err(AdminError::internal)?;
        }
        if sent.is_empty() {
            return Err(bad(
                "push_refused",
                refused
                    .iter()
                    .map(|(c, why)| format!("{c}: {why}"))
                    .collect::<Vec<_>>()
                    .join("; "),
            ));
        }
        Ok(PushOutcome {
            push_id,
            item,
            sent: sent.into_iter().map(|(c, _)| c).collect(),
            refused,
        })
    })
    .await?
}

/// The newest pushes the account may see, with each canteen's state now.
pub async fn pushes(cloud: &Cloud, account: &AdminAccount) -> Result<Vec<PushView>, AdminError> {
    let (docs, store, account) = (cloud.docs.clone(), cloud.store.clone(), account.clone());
    on_blocking_pool(move || -> anyhow::Result<Vec<PushView>> {
        let mut out = Vec::new();
        for mut push in store.menu_pushes(PUSHES_LISTED)? {
            push.targets.retain(|(c, _)| account.may_read(c));
            if push.targets.is_empty() {
                continue;
            }
            let item = push.item_id.clone();
            let mut targets = Vec::new();
            for (canteen, heads) in &push.targets {
                let (_, all) = docs.menu(canteen)?;
                let conflicts: Vec<crdt::Conflict> = all
                    .into_iter()
                    .filter(|c| c.path.len() == 3 && c.path[0] == "items" && c.path[1] == item)
                    .collect();
                let reported = store.node_status(canteen)?.and_then(|s| {
                    s.docs
                        .into_iter()
                        .find(|d| d.doc == DocKind::Menu.as_str())
                        .map(|d| d.heads)
                });
                let applied = match &reported {
                    Some(have) => docs.applied(canteen, DocKind::Menu, have, heads)?,
                    None => false,
                };
                let state = if !conflicts.is_empty() {
                    "conflicting"
                } else if applied {
                    "applied"
                } else {
                    "sent"
                };
                targets.push(TargetState {
                    canteen: canteen.clone(),
                    state,
                    conflicts,
                });
            }
            out.push(PushView { push, targets });
        }
        Ok(out)
    })
    .await?
    .map_err(AdminError::internal)
}

/// Settles a conflicted field of a canteen's menu on one of its values; audited.
pub async fn resolve(
    cloud: &Cloud,
    account: &AdminAccount,
    canteen: String,
    path: Vec<String>,
    value: String,
) -> Result<(), AdminError> {
    let result = resolve_unaudited(cloud, account, &canteen, &path, &value).await;
    audit(
        cloud,
        &account.username,
        "menu.resolve",
        std::slice::from_ref(&canteen),
        &result,
        format!("{} kept as {value:?}", path.join(".")),
    )
    .await;
    result
}

async fn resolve_unaudited(
    cloud: &Cloud,
    account: &AdminAccount,
    canteen: &str,
    path: &[String],
    value: &str,
) -> Result<(), AdminError> {
    if !account.may_change(Some(canteen)) {
        return Err(AdminError::forbidden(format!(
            "you cannot change {canteen:?}"
        )));
    }
    let (docs, canteen, path, value) = (
        cloud.docs.clone(),
        canteen.to_owned(),
        path.to_vec(),
        value.to_owned(),
    );
    on_blocking_pool(move || -> Result<(), AdminError> {
        let (_, conflicts) = docs.menu(&canteen).map_err(AdminError::internal)?;
        let Some(conflict) = conflicts.iter().find(|c| c.path == path) else {
            return Err(AdminError::new(
                StatusCode::CONFLICT,
                "no_conflict",
                "that field has no conflict (any more)",
            ));
        };
        if !conflict.values.contains(&value) {
            return Err(bad("not_a_value", "keep one of the conflicting values"));
        }
        docs.settle_menu(&canteen, &path, &value, now_ms())
            .map_err(|e| bad("not_resolvable", e.to_string()))?;
        Ok(())
    })
    .await?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_adds_a_missing_dish_only_when_it_names_every_field_needed() {
        let item = crdt::ItemId::default();
        let price = DishChange {
            price_fen: Some(1500),
            ..DishChange::default()
        };
        assert_eq!(
            price.edits(item, true).unwrap(),
            vec![MenuEdit::SetPrice {
                item,
                price_fen: 1500
            }]
        );
        assert!(price.edits(item, false).unwrap_err().contains("both names"));
        assert!(DishChange::default().edits(item, true).is_err());
        let new = DishChange {
            name_zh: Some("麻婆豆腐".into()),
            name_en: Some("Mapo tofu".into()),
            category: Some("mains".into()),
            price_fen: Some(1200),
            daily_quota: Some(Some(80)),
            ..DishChange::default()
        };
        let edits = new.edits(item, false).unwrap();
        assert!(
            matches!(&edits[..], [MenuEdit::AddItem { fields, .. }] if fields.daily_quota == Some(80) && fields.available)
        );
        let unlimited: DishChange = serde_json::from_str(r#"{"daily_quota": null}"#).unwrap();
        assert_eq!(unlimited.daily_quota, Some(None));
        let untouched: DishChange = serde_json::from_str(r#"{}"#).unwrap();
        assert_eq!(untouched.daily_quota, None);
    }
}
