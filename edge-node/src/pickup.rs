//! Pickup: a short number per service day (what the counter calls out) and an
//! unguessable token (the QR code). Hand-over checks either.

use crate::db::StoreError;
use crate::ids::{OrderId, StaffId};
use crate::order::{self, Actor, OrderError, OrderEvent, OrderState, OrderView};
use crate::writer::WriteCtx;
use chrono::NaiveDate;
use rand::RngCore;
use rusqlite::params;

/// The next pickup number of `day`, starting at 1.
pub fn next_number(ctx: &mut WriteCtx<'_>, day: NaiveDate) -> Result<i64, StoreError> {
    Ok(ctx
        .conn
        .prepare_cached(
            "INSERT INTO pickup_counter (service_day, last_number) VALUES (?1, 1)
             ON CONFLICT (service_day) DO UPDATE SET last_number = last_number + 1
             RETURNING last_number",
        )?
        .query_row(params![day.to_string()], |r| r.get(0))?)
}

/// The order id's 32 hex digits, then 128 random bits as 32 more: unguessable, and
/// found through the order's primary key.
pub fn new_token(order: OrderId) -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    format!("{}{}", order.0.simple(), hex::encode(bytes))
}

/// Length of a pickup token in characters.
pub const TOKEN_CHARS: usize = 64;

/// What staff type or scan at hand-over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PickupCode {
    Number(i64),
    Token(String),
}

#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error("not a pickup number or token")]
    BadCode,
    #[error("no order with that pickup code today")]
    NotFound,
    #[error("order {number} was already picked up")]
    AlreadyPickedUp { number: i64 },
    #[error("order {number} is {state}, not ready", state = .state.as_str())]
    NotReady { number: i64, state: OrderState },
    #[error(transparent)]
    Order(#[from] OrderError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Write(#[from] crate::writer::WriteError),
}

impl PickupCode {
    /// A number of 1 to 6 digits, or a 64-character hex token (a USB scanner types it).
    pub fn parse(text: &str) -> Result<Self, HandoverError> {
        let text = text.trim();
        if !text.is_empty() && text.len() <= 6 && text.bytes().all(|b| b.is_ascii_digit()) {
            return text
                .parse()
                .map(Self::Number)
                .map_err(|_| HandoverError::BadCode);
        }
        if text.len() == TOKEN_CHARS && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(Self::Token(text.to_ascii_lowercase()));
        }
        Err(HandoverError::BadCode)
    }
}

/// Hands an order over: finds it by code (numbers are today's), checks it is ready,
/// and marks it picked up.
pub fn hand_over(
    ctx: &mut WriteCtx<'_>,
    day: NaiveDate,
    code: &PickupCode,
    staff: StaffId,
) -> Result<OrderView, HandoverError> {
    let found = match code {
        PickupCode::Number(n) => order::find_by_number(ctx.conn, day, *n)?,
        PickupCode::Token(t) => order::find_by_token(ctx.conn, t)?,
    };
    let order = found.ok_or(HandoverError::NotFound)?;
    match order.state {
        OrderState::Ready => {}
        OrderState::PickedUp => {
            return Err(HandoverError::AlreadyPickedUp {
                number: order.pickup_number,
            });
        }
        state => {
            return Err(HandoverError::NotReady {
                number: order.pickup_number,
                state,
            });
        }
    }
    Ok(order::apply_event(
        ctx,
        order.id,
        OrderEvent::PickUp,
        &Actor::Staff(staff),
        None,
    )?)
}
