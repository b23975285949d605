//! Payments and refunds in SQLite: one row each, written with the transition that
//! moved the money; campus-card transactions are unique.

use super::WriteCtx;
use super::db::StoreError;
use crate::core::clock::ts;
use crate::core::lifecycle::MoneyDecision;
use canteen_api::ids::{OrderId, PaymentId};
use canteen_api::order::PaymentMode;
use chrono::NaiveDate;
use rusqlite::{Connection, OptionalExtension, params};

/// Inserts the payment or refund a transition decided.
pub fn record(
    ctx: &mut WriteCtx<'_>,
    order: OrderId,
    day: NaiveDate,
    money: &MoneyDecision,
) -> Result<PaymentId, StoreError> {
    let id = PaymentId::new();
    ctx.conn
        .prepare_cached(
            "INSERT INTO payment (id, order_id, kind, method, amount_fen, external_txn_id, staff_id, service_day, at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![
            id.to_string(),
            order.to_string(),
            money.kind.as_str(),
            money.method.as_str(),
            money.amount_fen,
            money.external_txn_id.as_deref(),
            money.staff.map(|s| s.to_string()),
            day.to_string(),
            ts(ctx.now),
        ])?;
    Ok(id)
}

/// How an order was paid, if it was.
pub fn paid_with(conn: &Connection, order: OrderId) -> Result<Option<PaymentMode>, StoreError> {
    let method: Option<String> = conn
        .prepare_cached(
            "SELECT method FROM payment WHERE order_id = ?1 AND kind = 'payment' LIMIT 1",
        )?
        .query_row([order.to_string()], |r| r.get(0))
        .optional()?;
    Ok(method.as_deref().and_then(PaymentMode::parse))
}

/// The order a campus-card transaction id was already used for, if any.
pub fn order_of_transaction(conn: &Connection, txn: &str) -> Result<Option<OrderId>, StoreError> {
    let seen: Option<String> = conn
        .prepare_cached("SELECT order_id FROM payment WHERE external_txn_id = ?1")?
        .query_row([txn], |r| r.get(0))
        .optional()?;
    seen.map(|id| {
        id.parse()
            .map_err(|_| StoreError::Corrupt(format!("payment for order {id}")))
    })
    .transpose()
}
