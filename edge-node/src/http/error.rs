//! The one error type of the HTTP API: a status, a stable machine `code`, a human
//! `message`, and optional details. Internals are never sent to the client; a 5xx
//! carries its cause in a response extension that the logging middleware records once.

use crate::accounts::AccountError;
use crate::db::StoreError;
use crate::menu::MenuError;
use crate::order::{OrderError, PlaceOrderError};
use crate::payment::PaymentError;
use crate::pickup::HandoverError;
use crate::session::AuthError;
use crate::stock::StockError;
use crate::writer::WriteError;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Option<Value>,
    pub retry_after_s: Option<u64>,
    /// Logged, never sent.
    pub internal: Option<String>,
}

/// The JSON body of every error response.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `sold_out`, `stale_version`.
    pub code: String,
    /// A sentence for people.
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

/// What the logging middleware finds on a failed response.
#[derive(Clone, Debug)]
pub struct LoggedError {
    pub code: &'static str,
    pub internal: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
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
        self.details = Some(details);
        self
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_s = Some(seconds.max(1));
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn rate_limited(seconds: u64) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many attempts; try again in {seconds} s"),
        )
        .retry_after(seconds)
    }

    pub fn overloaded() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "the box is busy; try again in a moment",
        )
        .retry_after(1)
    }

    pub fn internal(cause: impl std::fmt::Display) -> Self {
        let mut e = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
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
                code: self.code.to_owned(),
                message: self.message,
                details: self.details,
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
                "shutting_down",
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
            AuthError::Missing => "unauthenticated",
            AuthError::Invalid => "invalid_token",
            AuthError::Expired => "session_expired",
        };
        Self::new(StatusCode::UNAUTHORIZED, code, e.to_string())
    }
}

impl From<StockError> for ApiError {
    fn from(e: StockError) -> Self {
        let message = e.to_string();
        match e {
            StockError::SoldOut { item_id, .. } => Self::conflict("sold_out", message)
                .with_details(json!({ "item_id": item_id, "remaining": 0 })),
            StockError::NotEnough {
                item_id, remaining, ..
            } => Self::conflict("not_enough_stock", message)
                .with_details(json!({ "item_id": item_id, "remaining": remaining })),
            StockError::BelowZero { .. } => Self::conflict("stock_below_zero", message),
            StockError::BadCount => Self::unprocessable("invalid_count", message),
            StockError::Store(e) => e.into(),
            StockError::Write(e) => e.into(),
        }
    }
}

impl From<PlaceOrderError> for ApiError {
    fn from(e: PlaceOrderError) -> Self {
        let message = e.to_string();
        match e {
            PlaceOrderError::LineCount => Self::unprocessable("invalid_lines", message),
            PlaceOrderError::Quantity { line } => Self::unprocessable("invalid_quantity", message)
                .with_details(json!({ "line": line })),
            PlaceOrderError::UnknownItem(id) => {
                Self::unprocessable("unknown_item", message).with_details(json!({ "item_id": id }))
            }
            PlaceOrderError::Unavailable { item_id, .. } => {
                Self::conflict("unavailable", message).with_details(json!({ "item_id": item_id }))
            }
            PlaceOrderError::Options(_) => Self::unprocessable("invalid_options", message),
            PlaceOrderError::PaymentMode(_) => {
                Self::unprocessable("payment_mode_not_offered", message)
            }
            PlaceOrderError::UnknownSlot(_) => Self::unprocessable("unknown_pickup_slot", message),
            PlaceOrderError::SlotFull(_) => Self::conflict("pickup_slot_full", message),
            PlaceOrderError::IdempotencyMismatch => {
                Self::unprocessable("idempotency_key_reused", message)
            }
            PlaceOrderError::BadIdempotencyKey => {
                Self::bad_request("invalid_idempotency_key", message)
            }
            PlaceOrderError::Stock(e) => e.into(),
            PlaceOrderError::Store(e) => e.into(),
            PlaceOrderError::Write(e) => e.into(),
        }
    }
}

impl From<OrderError> for ApiError {
    fn from(e: OrderError) -> Self {
        let message = e.to_string();
        match e {
            OrderError::NotFound => Self::not_found("order_not_found", message),
            OrderError::NotYours => Self::forbidden(message),
            OrderError::NotAllowed { from, event } => Self::conflict("invalid_transition", message)
                .with_details(json!({ "state": from, "event": event })),
            OrderError::KitchenStarted => Self::conflict("kitchen_started", message),
            OrderError::NotPermitted { .. } => {
                Self::new(StatusCode::FORBIDDEN, "not_permitted", message)
            }
            OrderError::Stale { current } => Self::conflict("stale_version", message)
                .with_details(json!({ "current_version": current })),
            OrderError::Stock(e) => e.into(),
            OrderError::Store(e) => e.into(),
            OrderError::Write(e) => e.into(),
        }
    }
}

impl From<HandoverError> for ApiError {
    fn from(e: HandoverError) -> Self {
        let message = e.to_string();
        match e {
            HandoverError::BadCode => Self::unprocessable("invalid_pickup_code", message),
            HandoverError::NotFound => Self::not_found("pickup_not_found", message),
            HandoverError::AlreadyPickedUp { number } => {
                Self::conflict("already_picked_up", message)
                    .with_details(json!({ "pickup_number": number }))
            }
            HandoverError::NotReady { number, state } => Self::conflict("not_ready", message)
                .with_details(json!({ "pickup_number": number, "state": state })),
            HandoverError::Order(e) => e.into(),
            HandoverError::Store(e) => e.into(),
            HandoverError::Write(e) => e.into(),
        }
    }
}

impl From<PaymentError> for ApiError {
    fn from(e: PaymentError) -> Self {
        let message = e.to_string();
        match e {
            PaymentError::BadTransactionId => {
                Self::unprocessable("invalid_transaction_id", message)
            }
            PaymentError::AmountMismatch { expected, got } => {
                Self::unprocessable("amount_mismatch", message)
                    .with_details(json!({ "expected_fen": expected, "got_fen": got }))
            }
            PaymentError::TransactionReused(_) => Self::conflict("transaction_reused", message),
            PaymentError::Order(e) => e.into(),
            PaymentError::Store(e) => e.into(),
            PaymentError::Write(e) => e.into(),
        }
    }
}

impl From<MenuError> for ApiError {
    fn from(e: MenuError) -> Self {
        match e {
            MenuError::Invalid(m) => Self::unprocessable("invalid_menu_item", m),
            MenuError::NotFound(id) => {
                Self::not_found("item_not_found", format!("no menu item {id}"))
            }
            MenuError::Conflict(m) => Self::conflict("menu_conflict", m),
            MenuError::Store(e) => e.into(),
            MenuError::Write(e) => e.into(),
        }
    }
}

impl From<crate::docs::SettingsError> for ApiError {
    fn from(e: crate::docs::SettingsError) -> Self {
        use crate::docs::SettingsError as E;
        match e {
            E::Invalid(m) => Self::unprocessable("invalid_settings", m),
            E::Store(e) => e.into(),
            E::Write(e) => e.into(),
        }
    }
}

impl From<crdt::InvalidValue> for ApiError {
    fn from(e: crdt::InvalidValue) -> Self {
        Self::unprocessable("invalid_menu_item", e.to_string())
    }
}

impl From<AccountError> for ApiError {
    fn from(e: AccountError) -> Self {
        match e {
            AccountError::Store(e) => e.into(),
            AccountError::Write(e) => e.into(),
            other => Self::unprocessable("invalid_account", other.to_string()),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match &r {
            JsonRejection::JsonDataError(_) => Self::unprocessable("invalid_body", r.body_text()),
            JsonRejection::JsonSyntaxError(_) => Self::bad_request("bad_json", r.body_text()),
            JsonRejection::MissingJsonContentType(_) => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with Content-Type: application/json",
            ),
            _ if r.status() == StatusCode::PAYLOAD_TOO_LARGE => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "the request body is too large",
            ),
            _ => Self::new(r.status(), "bad_body", r.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        Self::bad_request("bad_path", r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::bad_request("bad_query", r.body_text())
    }
}
