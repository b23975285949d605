//! The error body of every refusal: `{"error": {"code", "message", "details"?}}`, with
//! the codes as one enum. The message is for people; clients branch on the code.

use serde::{Deserialize, Serialize};

macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident = $text:literal,)*) => {
        /// Every machine-readable code the box sends.
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
            /// A code this client does not know (sent by a newer box), as it was sent.
            Other(Box<str>),
        }

        impl ErrorCode {
            /// Every code the box may send (`Other` is not one).
            pub const ALL: &'static [ErrorCode] = &[$(Self::$variant,)*];

            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $text,)*
                    Self::Other(text) => text,
                }
            }

            /// The code named `text`; `Other` (keeping the text) for one this client
            /// does not know.
            pub fn parse(text: &str) -> Self {
                match text {
                    $($text => Self::$variant,)*
                    _ => Self::Other(text.into()),
                }
            }
        }
    };
}

error_codes! {
    // Requests the box cannot read.
    /// The body is not JSON.
    BadJson = "bad_json",
    /// The body is JSON of the wrong shape or with out-of-range values.
    InvalidBody = "invalid_body",
    /// The body could not be read.
    BadBody = "bad_body",
    /// A path parameter is malformed (e.g. not a UUID).
    BadPath = "bad_path",
    /// A query parameter is malformed.
    BadQuery = "bad_query",
    UnsupportedMediaType = "unsupported_media_type",
    BodyTooLarge = "body_too_large",
    NotFound = "not_found",
    MethodNotAllowed = "method_not_allowed",
    // Who is asking.
    Unauthenticated = "unauthenticated",
    InvalidToken = "invalid_token",
    SessionExpired = "session_expired",
    InvalidCredentials = "invalid_credentials",
    Forbidden = "forbidden",
    NotPermitted = "not_permitted",
    BadSignature = "bad_signature",
    /// The account was deactivated after the token was issued.
    AccountDisabled = "account_disabled",
    /// Staff blocked this student from ordering; `message` has their reason.
    AccountBlocked = "account_blocked",
    /// Staff routes answer LAN clients only over the box's HTTPS listener.
    TlsRequired = "tls_required",
    /// `access_token` in the query is accepted only by the event streams.
    TokenInQuery = "token_in_query",
    // Limits and the box's own state.
    RateLimited = "rate_limited",
    /// This account already has as many event streams open as allowed.
    TooManyStreams = "too_many_streams",
    Overloaded = "overloaded",
    Timeout = "timeout",
    ShuttingDown = "shutting_down",
    Internal = "internal",
    // Placing orders.
    /// The canteen is not taking orders now; `details` has today's hours.
    Closed = "closed",
    InvalidLines = "invalid_lines",
    InvalidQuantity = "invalid_quantity",
    UnknownItem = "unknown_item",
    Unavailable = "unavailable",
    InvalidOptions = "invalid_options",
    PaymentModeNotOffered = "payment_mode_not_offered",
    UnknownPickupSlot = "unknown_pickup_slot",
    PickupSlotFull = "pickup_slot_full",
    IdempotencyKeyReused = "idempotency_key_reused",
    InvalidIdempotencyKey = "invalid_idempotency_key",
    SoldOut = "sold_out",
    /// The student already has as many unpaid open orders as allowed.
    TooManyUnpaidOrders = "too_many_unpaid_orders",
    /// More portions of one dish than one order may take.
    TooManyPortions = "too_many_portions",
    NotEnoughStock = "not_enough_stock",
    // The lifecycle.
    OrderNotFound = "order_not_found",
    InvalidTransition = "invalid_transition",
    KitchenStarted = "kitchen_started",
    StaleVersion = "stale_version",
    // Hand-over.
    InvalidPickupCode = "invalid_pickup_code",
    PickupNotFound = "pickup_not_found",
    AlreadyPickedUp = "already_picked_up",
    NotReady = "not_ready",
    // Stock and menu.
    StockBelowZero = "stock_below_zero",
    InvalidCount = "invalid_count",
    ItemNotFound = "item_not_found",
    InvalidMenuItem = "invalid_menu_item",
    MenuConflict = "menu_conflict",
    InvalidSettings = "invalid_settings",
    InvalidAccount = "invalid_account",
    // Campus-card payments.
    CampusCardDisabled = "campus_card_disabled",
    InvalidTransactionId = "invalid_transaction_id",
    AmountMismatch = "amount_mismatch",
    TransactionReused = "transaction_reused",
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Ok(Self::parse(&text))
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for ErrorCode {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(Self::ALL.iter().map(|c| c.as_str())))
            .description(Some("Stable machine-readable code."))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for ErrorCode {}

/// The JSON body of every error response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `sold_out`, `stale_version`.
    pub code: ErrorCode,
    /// A sentence for people.
    pub message: String,
    /// Facts about the refusal a client can use (see each code's details type).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub details: Option<serde_json::Value>,
}

/// `details` of `closed`: when the canteen takes orders today, in its time zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClosedDetails {
    /// "HH:MM", the canteen's local time.
    pub opening_time: String,
    pub closing_time: String,
    /// Shut all day today.
    pub closed_today: bool,
    /// IANA name of the canteen's time zone.
    pub time_zone: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "{code} twice");
            assert_eq!(&ErrorCode::parse(code.as_str()), code);
            let json = serde_json::to_string(code).unwrap();
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), *code);
        }
        let newer = ErrorCode::parse("from_a_newer_box");
        assert_eq!(newer, ErrorCode::Other("from_a_newer_box".into()));
        assert_eq!(newer.as_str(), "from_a_newer_box");
    }
}
