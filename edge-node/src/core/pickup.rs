//! Pickup codes, the pure part: the unguessable token, what staff may type or scan at
//! hand-over, and whether an order can be handed over.

use canteen_api::ids::OrderId;
use canteen_api::order::OrderState;
use rand::RngCore;

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

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandoverRefusal {
    #[error("not a pickup number or token")]
    BadCode,
    #[error("no order with that pickup code today")]
    NotFound,
    #[error("order {number} was already picked up")]
    AlreadyPickedUp { number: i64 },
    #[error("order {number} is {state}, not ready", state = .state.as_str())]
    NotReady { number: i64, state: OrderState },
}

impl PickupCode {
    /// A number of 1 to 6 digits, or a 64-character hex token (a USB scanner types it).
    pub fn parse(text: &str) -> Result<Self, HandoverRefusal> {
        let text = text.trim();
        if !text.is_empty() && text.len() <= 6 && text.bytes().all(|b| b.is_ascii_digit()) {
            return text
                .parse()
                .map(Self::Number)
                .map_err(|_| HandoverRefusal::BadCode);
        }
        if text.len() == TOKEN_CHARS && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(Self::Token(text.to_ascii_lowercase()));
        }
        Err(HandoverRefusal::BadCode)
    }
}

/// Checks an order found by its code can be handed over now.
pub fn check_hand_over(state: OrderState, number: i64) -> Result<(), HandoverRefusal> {
    match state {
        OrderState::Ready => Ok(()),
        OrderState::PickedUp => Err(HandoverRefusal::AlreadyPickedUp { number }),
        state => Err(HandoverRefusal::NotReady { number, state }),
    }
}
