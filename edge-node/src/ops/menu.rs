//! Menu and settings edits, from a manager at the box or from the cloud: both go
//! through here, so a change made on either side has the same effects (a new daily
//! quota reaches today's stock whichever side set it).

use crate::app::App;
use crate::core::canteen::Canteen;
use crate::core::menu::{self, ItemFields, Menu, MenuEdit, MenuItem};
use crate::store::docs::{MenuError, SettingsError};
use crate::store::{StoreError, WriteCtx, stock};
use canteen_api::ids::ItemId;
use chrono::NaiveDate;
use crdt::DocKind;
use crdt::settings::SettingsEdit;
use crdt::sync::Received;
use std::sync::Arc;

/// Carries quota changes between two menus into `day`'s stock rows (days already
/// started for an item; a day not started takes the new quota on its first order).
fn carry_quotas(
    ctx: &mut WriteCtx<'_>,
    before: &Menu,
    after: &Menu,
    day: NaiveDate,
) -> Result<(), StoreError> {
    for item in after.items() {
        let old = before.get(item.id).map(|i| i.fields.daily_quota);
        if old != Some(item.fields.daily_quota) {
            stock::set_quota(ctx, item, day)?;
        }
    }
    Ok(())
}

/// Applies menu edits in one change, and carries quota changes into today's stock.
pub async fn edit(app: &App, edits: Vec<MenuEdit>) -> Result<Arc<Menu>, MenuError> {
    let day = app.today();
    let docs = app.docs.clone();
    app.writer
        .write(move |ctx| {
            let before = docs.menu_view();
            let after = docs.edit_menu(ctx, &edits)?;
            carry_quotas(ctx, &before, &after, day)?;
            Ok(after)
        })
        .await
}

/// Adds an item.
pub async fn create_item(app: &App, fields: ItemFields) -> Result<MenuItem, MenuError> {
    fields
        .validate()
        .map_err(|e| MenuError::Invalid(e.to_string()))?;
    let item = MenuItem {
        id: ItemId::new(),
        fields,
    };
    let menu = edit(app, menu::diff(None, &item)).await?;
    menu.get(item.id)
        .cloned()
        .ok_or(MenuError::NotFound(item.id))
}

/// Replaces an item's fields. Only the fields that differ from the menu as it is now
/// are written, so a concurrent edit of another field by someone else is kept.
pub async fn update_item(app: &App, id: ItemId, fields: ItemFields) -> Result<MenuItem, MenuError> {
    fields
        .validate()
        .map_err(|e| MenuError::Invalid(e.to_string()))?;
    let current = app
        .menu
        .snapshot()
        .get(id)
        .cloned()
        .ok_or(MenuError::NotFound(id))?;
    let edits = menu::diff(Some(&current), &MenuItem { id, fields });
    if edits.is_empty() {
        return Ok(current);
    }
    let menu = edit(app, edits).await?;
    menu.get(id).cloned().ok_or(MenuError::NotFound(id))
}

/// Applies settings edits, all or nothing.
pub async fn edit_settings(
    app: &App,
    edits: Vec<SettingsEdit>,
) -> Result<Arc<Canteen>, SettingsError> {
    let docs = app.docs.clone();
    app.writer
        .write(move |ctx| docs.edit_settings(ctx, &edits))
        .await
}

/// Takes a document sync message from the cloud: validated and stored by the store;
/// a menu change's new quotas reach today's stock as a manager's would. Says whether
/// the changes were taken or refused (and why).
pub async fn receive_from_cloud(
    app: &App,
    doc: DocKind,
    data: Vec<u8>,
) -> Result<Received, super::sync::LinkError> {
    let day = app.today();
    let docs = app.docs.clone();
    app.writer
        .write(move |ctx| {
            let before = docs.menu_view();
            let received = docs.sync_receive(ctx, doc, &data)?;
            if matches!(received, Received::Taken { changed: true }) && doc == DocKind::Menu {
                carry_quotas(ctx, &before, &docs.menu_view(), day)?;
            }
            Ok(received)
        })
        .await
}
