//! The Tauri commands the web view calls (`window.__TAURI__.core.invoke`). Each returns
//! `Result<T, UiError>`; the page only renders what they return, and listens to the
//! events `board-changed`, `new-order`, `status-changed` and `toast`.

use crate::client::BoxClient;
use crate::error::UiError;
use crate::events::{self, StreamNews};
use crate::kitchen::Board;
use crate::notify::{self, Announcement};
use crate::pickup::PickupInput;
use crate::session::{Shared, Status};
use crate::settings::{self, Remembered};
use canteen_api::menu::{ItemFields, MenuEdit};
use canteen_api::order::DaySummary;
use canteen_api::staff::{BlockRequest, Role, StaffMenu, StudentStanding};
use canteen_api::stock::{ADJUST_MAX, StaffStockAction};
use canteen_api::{ItemId, OrderId, OrderView};
use serde::Serialize;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tauri::{AppHandle, Emitter, Manager, State};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    pub box_url: String,
    pub name: String,
    pub role: Role,
}

#[derive(Debug, Clone, Serialize)]
pub struct Toast {
    pub code: String,
    pub message: String,
}

fn client(shared: &Shared) -> Result<BoxClient, UiError> {
    shared.lock().client.clone().ok_or(UiError::NotLoggedIn)
}

fn manager_client(shared: &Shared) -> Result<BoxClient, UiError> {
    let s = shared.lock();
    if s.role != Some(Role::Manager) {
        return Err(UiError::input("forbidden", "only managers edit the menu"));
    }
    s.client.clone().ok_or(UiError::NotLoggedIn)
}

#[tauri::command]
pub fn remembered(shared: State<'_, Shared>) -> Remembered {
    shared.remembered().clone()
}

/// Switches this terminal's desktop notifications on or off (remembered).
#[tauri::command]
pub fn set_notifications(shared: State<'_, Shared>, enabled: bool) -> Result<(), UiError> {
    let mut r = shared.remembered();
    r.notifications = enabled;
    settings::save(&shared.config_dir, &r)
}

/// Raises the announcement `what` makes in the terminal's language, if this terminal
/// has notifications on.
fn announce(app: &AppHandle, shared: &Shared, what: impl FnOnce(&str) -> Option<Announcement>) {
    let (on, language) = {
        let r = shared.remembered();
        (r.notifications, r.language.clone())
    };
    if on && let Some(a) = what(&language) {
        notify::raise(app, &a);
    }
}

#[tauri::command]
pub fn set_language(shared: State<'_, Shared>, language: String) -> Result<(), UiError> {
    if language != "zh" && language != "en" {
        return Err(UiError::input("bad_language", "zh or en"));
    }
    let mut r = shared.remembered();
    r.language = language;
    settings::save(&shared.config_dir, &r)
}

#[tauri::command]
pub async fn login(
    app: AppHandle,
    shared: State<'_, Shared>,
    address: String,
    username: String,
    password: String,
) -> Result<SessionInfo, UiError> {
    let trust = settings::trust(&shared.config_dir, &shared.remembered().clone())?;
    let anonymous = BoxClient::with_trust(&address, &trust)?;
    let login = anonymous.login(&username, &password).await?;
    let client = anonymous.with_token(login.token);
    let info = SessionInfo {
        box_url: client.base().to_owned(),
        name: login.name,
        role: login.role,
    };
    {
        let mut r = shared.remembered();
        r.box_url = Some(info.box_url.clone());
        r.username = Some(username.trim().to_owned());
        settings::save(&shared.config_dir, &r)?;
    }
    let stop = shared.shutdown.child_token();
    {
        let mut s = shared.lock();
        if let Some(old) = s.stream_stop.replace(stop.clone()) {
            old.cancel();
        }
        s.client = Some(client.clone());
        s.role = Some(info.role);
        s.name = info.name.clone();
        s.orders.clear();
        s.pending = Default::default();
    }
    reload_board(&shared).await?;
    tauri::async_runtime::spawn(follow_stream(app, client, stop));
    Ok(info)
}

#[tauri::command]
pub fn logout(shared: State<'_, Shared>) {
    let mut s = shared.lock();
    if let Some(stop) = s.stream_stop.take() {
        stop.cancel();
    }
    *s = Default::default();
}

/// The display from what the app knows now (no request): ages and recall countdowns
/// move on, orders change with events.
#[tauri::command]
pub fn board(shared: State<'_, Shared>) -> Board {
    shared.lock().board()
}

/// Reloads the open orders and the allergens from the box.
#[tauri::command]
pub async fn reload(shared: State<'_, Shared>) -> Result<Board, UiError> {
    reload_board(&shared).await?;
    Ok(shared.lock().board())
}

/// Reloads the board; returns the pickup numbers of orders that were not on it before.
async fn reload_board(shared: &Shared) -> Result<Vec<i64>, UiError> {
    let c = client(shared)?;
    let (orders, menu) = tokio::try_join!(c.open_orders(), c.staff_menu())?;
    let allergens: HashMap<ItemId, Vec<String>> = menu
        .items
        .into_iter()
        .map(|i| (i.id, i.fields.allergens))
        .collect();
    let mut s = shared.lock();
    let fresh = orders
        .iter()
        .filter(|o| !s.orders.iter().any(|known| known.id == o.id))
        .map(|o| o.pickup_number)
        .collect();
    s.orders = orders;
    s.allergens = allergens;
    Ok(fresh)
}

/// Bumps an order to its next state after the recall window.
#[tauri::command]
pub fn bump(shared: State<'_, Shared>, order_id: OrderId) -> Result<Board, UiError> {
    let mut s = shared.lock();
    let order = s
        .orders
        .iter()
        .find(|o| o.id == order_id)
        .cloned()
        .ok_or_else(|| UiError::input("order_not_shown", "that order is no longer open"))?;
    s.pending.schedule(&order, Instant::now());
    Ok(s.board())
}

/// Takes back a bump still inside its recall window.
#[tauri::command]
pub fn recall(shared: State<'_, Shared>, order_id: OrderId) -> Result<Board, UiError> {
    let mut s = shared.lock();
    if !s.pending.recall(&order_id) {
        return Err(UiError::input(
            "too_late_to_recall",
            "that bump was already sent",
        ));
    }
    Ok(s.board())
}

#[tauri::command]
pub async fn hand_over(shared: State<'_, Shared>, code: String) -> Result<OrderView, UiError> {
    let input = PickupInput::parse(&code)?;
    let c = client(&shared)?;
    let order = c.hand_over(&input.code()).await?;
    shared.lock().orders.retain(|o| o.id != order.id);
    Ok(order)
}

/// What staff do about a student at the counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StudentAction {
    CancelUnpaid,
    Block,
    Unblock,
}

/// A student number as the box accepts it (1 to 32 letters, digits or dashes), checked
/// before it goes into a URL.
fn student_number(input: &str) -> Result<String, UiError> {
    let n = input.trim();
    if n.is_empty() || n.len() > 32 || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(UiError::input(
            "bad_student_number",
            "a student number is 1 to 32 letters, digits or dashes",
        ));
    }
    Ok(n.to_owned())
}

/// Cancels a student's unpaid orders, blocks the student (with a reason, cancelling
/// their unpaid orders too) or unblocks them.
#[tauri::command]
pub async fn student_action(
    shared: State<'_, Shared>,
    number: String,
    action: StudentAction,
    reason: Option<String>,
) -> Result<StudentStanding, UiError> {
    let number = student_number(&number)?;
    let c = client(&shared)?;
    let standing = match action {
        StudentAction::CancelUnpaid => c.cancel_unpaid(&number).await?,
        StudentAction::Unblock => c.unblock(&number).await?,
        StudentAction::Block => {
            let reason = reason.unwrap_or_default().trim().to_owned();
            if reason.is_empty() {
                return Err(UiError::input(
                    "reason_required",
                    "say why the student is blocked",
                ));
            }
            c.block(
                &number,
                &BlockRequest {
                    reason,
                    cancel_unpaid: true,
                },
            )
            .await?
        }
    };
    let cancelled: std::collections::HashSet<_> = standing.cancelled.iter().copied().collect();
    shared.lock().orders.retain(|o| !cancelled.contains(&o.id));
    Ok(standing)
}

#[derive(Debug, Clone, Serialize)]
pub struct StockRow {
    pub id: ItemId,
    pub name_zh: String,
    pub name_en: String,
    pub available: bool,
    pub sold_out: bool,
    pub remaining: Option<i64>,
    pub daily_quota: Option<u32>,
}

#[tauri::command]
pub async fn stock(shared: State<'_, Shared>) -> Result<Vec<StockRow>, UiError> {
    stock_rows(&client(&shared)?).await
}

async fn stock_rows(c: &BoxClient) -> Result<Vec<StockRow>, UiError> {
    let (menu, today) = tokio::try_join!(c.staff_menu(), c.menu())?;
    let levels: HashMap<_, _> = today.items.into_iter().map(|l| (l.id, l)).collect();
    let mut items = menu.items;
    items.retain(|i| !i.fields.archived);
    items.sort_by_key(|i| i.fields.sort_key);
    Ok(items
        .into_iter()
        .map(|i| {
            let level = levels.get(&i.id);
            StockRow {
                sold_out: level.is_some_and(|l| l.sold_out),
                remaining: level.and_then(|l| l.remaining),
                id: i.id,
                name_zh: i.fields.name_zh,
                name_en: i.fields.name_en,
                available: i.fields.available,
                daily_quota: i.fields.daily_quota,
            }
        })
        .collect())
}

/// Refuses, before asking the box, a restock count the box refuses anyway.
fn check_stock_action(action: &StaffStockAction) -> Result<(), UiError> {
    match action {
        StaffStockAction::Restock { count } if !(1..=ADJUST_MAX).contains(count) => Err(
            UiError::input("bad_count", format!("restock 1 to {ADJUST_MAX} portions")),
        ),
        _ => Ok(()),
    }
}

#[tauri::command]
pub async fn stock_action(
    shared: State<'_, Shared>,
    item_id: ItemId,
    action: StaffStockAction,
) -> Result<Vec<StockRow>, UiError> {
    check_stock_action(&action)?;
    let c = client(&shared)?;
    c.stock(item_id, &action).await?;
    stock_rows(&c).await
}

#[tauri::command]
pub async fn menu(shared: State<'_, Shared>) -> Result<StaffMenu, UiError> {
    client(&shared)?.staff_menu().await
}

#[tauri::command]
pub async fn update_item(
    shared: State<'_, Shared>,
    item_id: ItemId,
    fields: ItemFields,
) -> Result<StaffMenu, UiError> {
    let c = manager_client(&shared)?;
    c.update_item(item_id, &fields).await?;
    c.staff_menu().await
}

/// Single-field edits; also how a manager settles a conflict (setting the field again).
#[tauri::command]
pub async fn menu_edits(
    shared: State<'_, Shared>,
    edits: Vec<MenuEdit>,
) -> Result<StaffMenu, UiError> {
    manager_client(&shared)?.menu_edits(&edits).await
}

#[tauri::command]
pub async fn summary(shared: State<'_, Shared>) -> Result<DaySummary, UiError> {
    client(&shared)?.summary().await
}

#[tauri::command]
pub fn status(shared: State<'_, Shared>) -> Status {
    let s = shared.lock();
    Status {
        box_url: s.client.as_ref().map(|c| c.base().to_owned()),
        name: s.name.clone(),
        role: s.role,
        lan_connected: s.lan_connected,
        lan_error: s.lan_error.clone(),
        sync: s.sync.clone(),
    }
}

/// Follows the box's event stream for one login, reloading the board on every order or
/// stock event and announcing new orders.
async fn follow_stream(app: AppHandle, client: BoxClient, stop: CancellationToken) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<StreamNews>(16);
    let reader = events::follow(client, stop.clone(), move |news| {
        // A full queue already holds a reload that covers this one.
        let _ = tx.try_send(news);
    });
    let handler = async {
        while let Some(news) = rx.recv().await {
            let shared = app.state::<Shared>();
            match news {
                StreamNews::Connected => {
                    let was_lost = {
                        let mut s = shared.lock();
                        s.lan_connected = true;
                        s.lan_error = None;
                        std::mem::take(&mut s.link_loss_announced)
                    };
                    if was_lost {
                        announce(&app, &shared, |l| Some(notify::link_back(l)));
                    }
                }
                StreamNews::Disconnected(why) => {
                    let newly_lost = {
                        let mut s = shared.lock();
                        let newly = s.lan_connected;
                        s.lan_connected = false;
                        s.lan_error = Some(why.clone());
                        s.link_loss_announced |= newly;
                        newly
                    };
                    if newly_lost {
                        announce(&app, &shared, |l| Some(notify::link_lost(l, &why)));
                    }
                }
                StreamNews::Changed { new_order } => match reload_board(&shared).await {
                    Ok(fresh) => {
                        let _ = app.emit("board-changed", ());
                        if new_order && !fresh.is_empty() {
                            announce(&app, &shared, |l| notify::new_orders(l, &fresh));
                            let _ = app.emit("new-order", fresh);
                        }
                    }
                    Err(e) => tracing::warn!("reloading the board: {e}"),
                },
            }
            let _ = app.emit("status-changed", ());
        }
    };
    tokio::join!(reader, handler);
}

/// Every quarter second: sends bumps whose recall window has passed. Every ten
/// seconds: reads the box's cloud-sync state for the status bar. Ends at exit.
pub async fn housekeeping(app: AppHandle, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut last_sync_poll: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let shared = app.state::<Shared>();
        let (due, c) = {
            let mut s = shared.lock();
            (s.pending.take_due(Instant::now()), s.client.clone())
        };
        let Some(c) = c else { continue };
        for bump in due {
            match c.transition(bump.order_id, bump.event, bump.version).await {
                Ok(order) => shared.lock().upsert(order),
                Err(e) => {
                    let _ = app.emit(
                        "toast",
                        Toast {
                            code: e.code().to_owned(),
                            message: e.to_string(),
                        },
                    );
                    if let Err(e) = reload_board(&shared).await {
                        tracing::warn!("reloading the board: {e}");
                    }
                }
            }
            let _ = app.emit("board-changed", ());
        }
        if last_sync_poll.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            last_sync_poll = Some(Instant::now());
            let sync = c.sync_state().await.ok();
            shared.lock().sync = sync;
            let _ = app.emit("status-changed", ());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A student number goes into the box's URL: anything else is refused before.
    #[test]
    fn student_numbers_are_checked_before_they_reach_a_url() {
        assert_eq!(student_number(" 2024003 ").unwrap(), "2024003");
        for bad in ["", "../staff/orders", "2024 003", "a/b", &"9".repeat(33)] {
            assert_eq!(
                student_number(bad).unwrap_err().code(),
                "bad_student_number",
                "{bad}"
            );
        }
    }
}
