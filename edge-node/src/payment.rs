//! Payments and refunds: at the counter (staff confirm) or by campus card (the card
//! system calls a webhook signed with HMAC-SHA256 over the raw body).

use crate::clock::ts;
use crate::db::StoreError;
use crate::ids::{OrderId, PaymentId, StaffId};
use crate::order::{self, Actor, OrderError, OrderEvent, OrderView};
use crate::writer::WriteCtx;
use chrono::NaiveDate;
use hmac::{Hmac, Mac};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

pub const TXN_ID_MAX: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentMode {
    /// Pay at the counter; staff confirm.
    Counter,
    /// The campus card system confirms through its webhook.
    CampusCard,
}

impl PaymentMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::CampusCard => "campus_card",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "counter" => Some(Self::Counter),
            "campus_card" => Some(Self::CampusCard),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Payment,
    Refund,
}

/// Inserts a payment or refund row.
#[allow(clippy::too_many_arguments)]
pub fn record(
    ctx: &mut WriteCtx<'_>,
    order: OrderId,
    day: NaiveDate,
    kind: Kind,
    method: PaymentMode,
    amount_fen: i64,
    external_txn_id: Option<&str>,
    staff: Option<StaffId>,
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
            match kind {
                Kind::Payment => "payment",
                Kind::Refund => "refund",
            },
            method.as_str(),
            amount_fen,
            external_txn_id,
            staff.map(|s| s.to_string()),
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

/// The body the campus-card system posts.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampusCardPayment {
    /// The card system's own transaction id; a retry carries the same one.
    pub transaction_id: String,
    pub order_id: OrderId,
    pub amount_fen: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    #[error("transaction_id must be 1 to {TXN_ID_MAX} characters")]
    BadTransactionId,
    #[error("amount {got} fen does not match the order total {expected} fen")]
    AmountMismatch { expected: i64, got: i64 },
    #[error("transaction {0} was already used for another order")]
    TransactionReused(String),
    #[error(transparent)]
    Order(#[from] OrderError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Write(#[from] crate::writer::WriteError),
}

impl From<rusqlite::Error> for PaymentError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Store(e.into())
    }
}

/// Applies a campus-card payment exactly once per transaction id. A replay of a
/// transaction already applied returns the order as it is now, and changes nothing.
pub fn campus_card(
    ctx: &mut WriteCtx<'_>,
    p: &CampusCardPayment,
) -> Result<(OrderView, bool), PaymentError> {
    if p.transaction_id.is_empty() || p.transaction_id.len() > TXN_ID_MAX {
        return Err(PaymentError::BadTransactionId);
    }
    let seen: Option<String> = ctx
        .conn
        .prepare_cached("SELECT order_id FROM payment WHERE external_txn_id = ?1")?
        .query_row([&p.transaction_id], |r| r.get(0))
        .optional()?;
    if let Some(order_id) = seen {
        if order_id != p.order_id.to_string() {
            return Err(PaymentError::TransactionReused(p.transaction_id.clone()));
        }
        let order = order::load(ctx.conn, p.order_id)?.ok_or(OrderError::NotFound)?;
        return Ok((order, true));
    }
    let order = order::load(ctx.conn, p.order_id)?.ok_or(OrderError::NotFound)?;
    if order.total_fen != p.amount_fen {
        return Err(PaymentError::AmountMismatch {
            expected: order.total_fen,
            got: p.amount_fen,
        });
    }
    let order = order::apply_event(
        ctx,
        p.order_id,
        OrderEvent::Pay,
        &Actor::CampusCard(p.transaction_id.clone()),
        None,
    )?;
    Ok((order, false))
}

/// Checks the webhook's signature: lowercase hex HMAC-SHA256 of the raw body, with an
/// optional `sha256=` prefix. Constant-time comparison.
pub fn signature_ok(secret: &[u8], body: &[u8], header: &str) -> bool {
    let hex_part = header
        .trim()
        .strip_prefix("sha256=")
        .unwrap_or(header.trim());
    let Ok(given) = hex::decode(hex_part) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

/// Signs a body the way the campus-card system does (for tests and the demo tool).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_for_the_exact_body_and_key() {
        let sig = sign(b"secret", b"{\"a\":1}");
        assert!(signature_ok(b"secret", b"{\"a\":1}", &sig));
        assert!(signature_ok(
            b"secret",
            b"{\"a\":1}",
            &format!("sha256={sig}")
        ));
        assert!(!signature_ok(b"secret", b"{\"a\":2}", &sig));
        assert!(!signature_ok(b"other", b"{\"a\":1}", &sig));
        assert!(!signature_ok(b"secret", b"{\"a\":1}", "not hex"));
    }
}
