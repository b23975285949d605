//! Staff stock actions: restock, adjust, sold out, back.

use crate::app::App;
use crate::core::stock::StockRefusal;
use crate::store::{self, StoreError, WriteError};
use canteen_api::ids::{ItemId, StaffId};
use canteen_api::stock::{StaffStockAction, StockLevel};

#[derive(Debug, thiserror::Error)]
pub enum StockError {
    #[error("no menu item {0}")]
    ItemNotFound(ItemId),
    #[error(transparent)]
    Refused(#[from] StockRefusal),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// Applies a staff stock action to today's stock of an item on the menu.
pub async fn staff_action(
    app: &App,
    staff: StaffId,
    item_id: ItemId,
    action: StaffStockAction,
) -> Result<StockLevel, StockError> {
    let item = app
        .menu
        .snapshot()
        .get(item_id)
        .cloned()
        .ok_or(StockError::ItemNotFound(item_id))?;
    let day = app.today();
    app.writer
        .write(move |ctx| {
            Ok(store::stock::staff_action(
                ctx, &item, day, &action, staff,
            )??)
        })
        .await
}
