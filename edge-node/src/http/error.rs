//! The one error type of the HTTP API: a status, a stable machine `code`, a human
//! `message`, and optional details. Internals are never sent to the client; a 5xx
//! carries its cause in a response extension that the logging middleware records once.

use crate::core::lifecycle::Refusal;
use crate::core::pickup::HandoverRefusal;
use crate::core::pricing::PriceError;
use crate::core::stock::StockRefusal;
use crate::ops::orders::OrderError;
use crate::ops::stock::StockError;
use crate::session::AuthError;
use crate::store::accounts::AccountError;
use crate::store::docs::{MenuError, SettingsError};
use crate::store::{StoreError, WriteError};
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
pub use canteen_api::error::{ErrorBody, ErrorCode, ErrorDetail};
use serde_json::{Value, json};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    /// Boxed: refusals travel as `Result` errors, and most carry no details.
    pub details: Option<Box<Value>>,
    pub retry_after_s: Option<u64>,
    /// Logged, never sent.
    pub internal: Option<String>,
}

/// What the logging middleware finds on a failed response.
#[derive(Clone, Debug)]
pub struct LoggedError {
    pub code: ErrorCode,
    pub internal: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: None,
            retry_after_s: None,
            internal: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(Box::new(details));
        self
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_s = Some(seconds.max(1));
        self
    }

    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unprocessable(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn not_found(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn conflict(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
    }

    pub fn rate_limited(seconds: u64) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            format!("too many attempts; try again in {seconds} s"),
        )
        .retry_after(seconds)
    }

    pub fn overloaded() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Overloaded,
            "the box is busy; try again in a moment",
        )
        .retry_after(1)
    }

    pub fn internal(cause: impl std::fmt::Display) -> Self {
        let mut e = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "something went wrong on the box",
        );
        e.internal = Some(cause.to_string());
        e
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.clone(),
                message: self.message,
                details: self.details.map(|d| *d),
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after_s
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response.extensions_mut().insert(LoggedError {
            code: self.code,
            internal: self.internal,
        });
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::internal(e)
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Overloaded => Self::overloaded(),
            WriteError::ShuttingDown => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::ShuttingDown,
                "the box is restarting",
            )
            .retry_after(5),
            WriteError::Commit(cause) => Self::internal(cause),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let code = match e {
            AuthError::Missing => ErrorCode::Unauthenticated,
            AuthError::Invalid => ErrorCode::InvalidToken,
            AuthError::Expired => ErrorCode::SessionExpired,
        };
        Self::new(StatusCode::UNAUTHORIZED, code, e.to_string())
    }
}

impl From<StockRefusal> for ApiError {
    fn from(e: StockRefusal) -> Self {
        let message = e.to_string();
        match e {
            StockRefusal::SoldOut { item_id, .. } => Self::conflict(ErrorCode::SoldOut, message)
                .with_details(json!({ "item_id": item_id })),
            // The count left is not told: it is what a hoarder would size an order by.
            StockRefusal::NotEnough { item_id, .. } => {
                Self::conflict(ErrorCode::NotEnoughStock, message)
                    .with_details(json!({ "item_id": item_id }))
            }
            StockRefusal::BelowZero { .. } => Self::conflict(ErrorCode::StockBelowZero, message),
            StockRefusal::BadCount | StockRefusal::BadReason => {
                Self::unprocessable(ErrorCode::InvalidCount, message)
            }
        }
    }
}

impl From<StockError> for ApiError {
    fn from(e: StockError) -> Self {
        match e {
            StockError::ItemNotFound(id) => {
                Self::not_found(ErrorCode::ItemNotFound, format!("no menu item {id}"))
            }
            StockError::Refused(r) => r.into(),
            StockError::Store(e) => e.into(),
            StockError::Write(e) => e.into(),
        }
    }
}

impl From<PriceError> for ApiError {
    fn from(e: PriceError) -> Self {
        let message = e.to_string();
        match e {
            PriceError::LineCount => Self::unprocessable(ErrorCode::InvalidLines, message),
            PriceError::Quantity { line } => {
                Self::unprocessable(ErrorCode::InvalidQuantity, message)
                    .with_details(json!({ "line": line }))
            }
            PriceError::UnknownItem(id) => Self::unprocessable(ErrorCode::UnknownItem, message)
                .with_details(json!({ "item_id": id })),
            PriceError::Unavailable { item_id, .. } => {
                Self::conflict(ErrorCode::Unavailable, message)
                    .with_details(json!({ "item_id": item_id }))
            }
            PriceError::Options(_) => Self::unprocessable(ErrorCode::InvalidOptions, message),
            PriceError::PaymentMode(_) => {
                Self::unprocessable(ErrorCode::PaymentModeNotOffered, message)
            }
            PriceError::UnknownSlot(_) => {
                Self::unprocessable(ErrorCode::UnknownPickupSlot, message)
            }
            PriceError::BadIdempotencyKey => {
                Self::bad_request(ErrorCode::InvalidIdempotencyKey, message)
            }
            PriceError::TooManyPortions { item_id, max, .. } => {
                Self::unprocessable(ErrorCode::TooManyPortions, message)
                    .with_details(json!({ "item_id": item_id, "max": max }))
            }
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(e: Refusal) -> Self {
        let message = e.to_string();
        match e {
            Refusal::NotYours => Self::forbidden(message),
            Refusal::NotAllowed { from, event } => {
                Self::conflict(ErrorCode::InvalidTransition, message)
                    .with_details(json!({ "state": from, "event": event }))
            }
            Refusal::KitchenStarted => Self::conflict(ErrorCode::KitchenStarted, message),
            Refusal::NotPermitted { .. } => {
                Self::new(StatusCode::FORBIDDEN, ErrorCode::NotPermitted, message)
            }
            Refusal::Stale { current } => Self::conflict(ErrorCode::StaleVersion, message)
                .with_details(json!({ "current_version": current })),
        }
    }
}

impl From<HandoverRefusal> for ApiError {
    fn from(e: HandoverRefusal) -> Self {
        let message = e.to_string();
        match e {
            HandoverRefusal::BadCode => Self::unprocessable(ErrorCode::InvalidPickupCode, message),
            HandoverRefusal::NotFound => Self::not_found(ErrorCode::PickupNotFound, message),
            HandoverRefusal::AlreadyPickedUp { number } => {
                Self::conflict(ErrorCode::AlreadyPickedUp, message)
                    .with_details(json!({ "pickup_number": number }))
            }
            HandoverRefusal::NotReady { number, state } => {
                Self::conflict(ErrorCode::NotReady, message)
                    .with_details(json!({ "pickup_number": number, "state": state }))
            }
        }
    }
}

impl From<OrderError> for ApiError {
    fn from(e: OrderError) -> Self {
        let message = e.to_string();
        match e {
            OrderError::NotFound => Self::not_found(ErrorCode::OrderNotFound, message),
            OrderError::Closed { hours, .. } => Self::conflict(ErrorCode::Closed, message)
                .with_details(serde_json::to_value(hours).unwrap_or_default()),
            OrderError::Price(e) => e.into(),
            OrderError::Stock(e) => e.into(),
            OrderError::Refused(e) => e.into(),
            OrderError::Handover(e) => e.into(),
            OrderError::SlotFull(_) | OrderError::SlotUnreachable { .. } => {
                Self::conflict(ErrorCode::PickupSlotFull, message)
            }
            OrderError::IdempotencyMismatch => {
                Self::unprocessable(ErrorCode::IdempotencyKeyReused, message)
            }
            OrderError::BadTransactionId => {
                Self::unprocessable(ErrorCode::InvalidTransactionId, message)
            }
            OrderError::AmountMismatch { expected, got } => {
                Self::unprocessable(ErrorCode::AmountMismatch, message)
                    .with_details(json!({ "expected_fen": expected, "got_fen": got }))
            }
            OrderError::TransactionReused(_) => {
                Self::conflict(ErrorCode::TransactionReused, message)
            }
            OrderError::TooManyUnpaid(max) => {
                Self::conflict(ErrorCode::TooManyUnpaidOrders, message)
                    .with_details(json!({ "max": max }))
            }
            OrderError::Blocked(_) => {
                Self::new(StatusCode::FORBIDDEN, ErrorCode::AccountBlocked, message)
            }
            OrderError::UnknownStudent(_) => Self::not_found(ErrorCode::NotFound, message),
            OrderError::Store(e) => e.into(),
            OrderError::Write(e) => e.into(),
        }
    }
}

impl From<MenuError> for ApiError {
    fn from(e: MenuError) -> Self {
        match e {
            MenuError::Invalid(m) => Self::unprocessable(ErrorCode::InvalidMenuItem, m),
            MenuError::NotFound(id) => {
                Self::not_found(ErrorCode::ItemNotFound, format!("no menu item {id}"))
            }
            MenuError::Conflict(m) => Self::conflict(ErrorCode::MenuConflict, m),
            MenuError::Store(e) => e.into(),
            MenuError::Write(e) => e.into(),
        }
    }
}

impl From<SettingsError> for ApiError {
    fn from(e: SettingsError) -> Self {
        match e {
            SettingsError::Invalid(m) => Self::unprocessable(ErrorCode::InvalidSettings, m),
            SettingsError::Store(e) => e.into(),
            SettingsError::Write(e) => e.into(),
        }
    }
}

impl From<crdt::InvalidValue> for ApiError {
    fn from(e: crdt::InvalidValue) -> Self {
        Self::unprocessable(ErrorCode::InvalidMenuItem, e.to_string())
    }
}

impl From<AccountError> for ApiError {
    fn from(e: AccountError) -> Self {
        match e {
            AccountError::Store(e) => e.into(),
            AccountError::Write(e) => e.into(),
            other => Self::unprocessable(ErrorCode::InvalidAccount, other.to_string()),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match &r {
            JsonRejection::JsonDataError(_) => {
                Self::unprocessable(ErrorCode::InvalidBody, r.body_text())
            }
            JsonRejection::JsonSyntaxError(_) => {
                Self::bad_request(ErrorCode::BadJson, r.body_text())
            }
            JsonRejection::MissingJsonContentType(_) => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::UnsupportedMediaType,
                "send the body as JSON with Content-Type: application/json",
            ),
            _ if r.status() == StatusCode::PAYLOAD_TOO_LARGE => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::BodyTooLarge,
                "the request body is too large",
            ),
            _ => Self::new(r.status(), ErrorCode::BadBody, r.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        Self::bad_request(ErrorCode::BadPath, r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::bad_request(ErrorCode::BadQuery, r.body_text())
    }
}
