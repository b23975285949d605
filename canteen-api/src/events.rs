//! The box's outbox events: what it streams to the cloud and to staff terminals, typed
//! and versioned.
//!
//! An event on the wire is `{seq, kind, aggregate_id, payload, at}`. The `kind` names
//! what happened (`order.placed`, `order.<new state>`, `stock.restocked`,
//! `stock.adjusted`, `stock.sold_out`, `stock.back`, `stock.quota_set`) and decides how
//! the payload is read: [`EventPayload::parse`].
//!
//! # Versions
//!
//! Every payload carries `v`, the payload version ([`EVENT_VERSION`]). Version 1 is what
//! boxes wrote before this crate existed: no `v` field, and a money move told a refund
//! from a payment only by which id it carried. Version 2 adds `v` and an explicit
//! `kind` on money moves. Readers accept every version up to theirs and refuse a newer
//! one ([`EventError::NewerVersion`]) rather than misread it: an older cloud refuses the
//! batch holding such an event (the box keeps it and retries), it does not guess. So a
//! campus upgrades its cloud before its boxes.

use crate::ids::{ItemId, OrderId, PaymentId, StaffId, StudentId};
use crate::order::{OrderEvent, OrderState, OrderView, PaymentMode};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// The payload version this crate writes.
pub const EVENT_VERSION: u16 = 2;

fn v1() -> u16 {
    1
}

fn current() -> u16 {
    EVENT_VERSION
}

/// `order.placed`: the whole order as placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OrderPlaced {
    #[serde(default = "v1")]
    pub v: u16,
    #[serde(flatten)]
    pub order: OrderView,
}

impl OrderPlaced {
    pub fn new(order: OrderView) -> Self {
        Self {
            v: current(),
            order,
        }
    }
}

/// The few fields of `order.placed` an aggregator needs, borrowed from the payload
/// text: parsing the whole order for every event of a catch-up costs several times as
/// much. It reads the same payload as [`OrderPlaced`] (a test keeps them in step).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct OrderPlacedHead<'a> {
    #[serde(default = "v1")]
    pub v: u16,
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    #[serde(borrow)]
    pub service_day: Cow<'a, str>,
    pub total_fen: i64,
}

impl<'a> OrderPlacedHead<'a> {
    /// Reads the head of an `order.placed` payload, refusing a version newer than this
    /// crate's as [`EventPayload::parse`] does.
    pub fn parse(payload: &'a str) -> Result<Self, EventError> {
        let malformed = |e: serde_json::Error| EventError::Malformed {
            kind: "order.placed".to_owned(),
            reason: e.to_string(),
        };
        let head: Self = serde_json::from_str(payload).map_err(malformed)?;
        if head.v > EVENT_VERSION {
            return Err(EventError::NewerVersion {
                kind: "order.placed".to_owned(),
                v: head.v,
            });
        }
        Ok(head)
    }
}

/// Payment or refund.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum MoneyKind {
    Payment,
    Refund,
}

impl MoneyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Payment => "payment",
            Self::Refund => "refund",
        }
    }
}

/// Money that moved with a transition: a payment on `pay`, a refund on the
/// cancellation of a paid order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(try_from = "MoneyWire", into = "MoneyWire")]
pub struct MoneyMove {
    pub kind: MoneyKind,
    /// The payment or refund record.
    pub id: PaymentId,
    pub method: PaymentMode,
    pub amount_fen: i64,
}

/// The stored form of a money move: version 1 had no `kind`, only `payment_id` or
/// `refund_id`; version 2 writes both `kind` and the matching id.
#[derive(Serialize, Deserialize)]
struct MoneyWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kind: Option<MoneyKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    payment_id: Option<PaymentId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refund_id: Option<PaymentId>,
    method: PaymentMode,
    amount_fen: i64,
}

impl TryFrom<MoneyWire> for MoneyMove {
    type Error = String;
    fn try_from(w: MoneyWire) -> Result<Self, String> {
        let (kind, id) =
            match (w.kind, w.payment_id, w.refund_id) {
                (Some(MoneyKind::Payment) | None, Some(id), None) => (MoneyKind::Payment, id),
                (Some(MoneyKind::Refund) | None, None, Some(id)) => (MoneyKind::Refund, id),
                _ => return Err(
                    "a money move has exactly one of payment_id and refund_id, matching its kind"
                        .into(),
                ),
            };
        Ok(Self {
            kind,
            id,
            method: w.method,
            amount_fen: w.amount_fen,
        })
    }
}

impl From<MoneyMove> for MoneyWire {
    fn from(m: MoneyMove) -> Self {
        let (payment_id, refund_id) = match m.kind {
            MoneyKind::Payment => (Some(m.id), None),
            MoneyKind::Refund => (None, Some(m.id)),
        };
        Self {
            kind: Some(m.kind),
            payment_id,
            refund_id,
            method: m.method,
            amount_fen: m.amount_fen,
        }
    }
}

/// `order.<to>`: an order moved along its lifecycle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OrderMoved {
    #[serde(default = "v1")]
    pub v: u16,
    pub order_id: OrderId,
    pub student_id: StudentId,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Date))]
    pub service_day: NaiveDate,
    pub from: OrderState,
    pub to: OrderState,
    pub event: OrderEvent,
    /// The order's version after the move.
    pub version: i64,
    /// Who caused it: `student:<id>`, `staff:<id>`, `campus_card:<transaction>`, `system`.
    pub actor: String,
    /// Money that moved with it, if any.
    #[serde(default)]
    pub payment: Option<MoneyMove>,
}

/// What a staff stock action did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum StockChange {
    Restocked,
    Adjusted,
    SoldOut,
    Back,
}

impl StockChange {
    pub const ALL: [StockChange; 4] = [Self::Restocked, Self::Adjusted, Self::SoldOut, Self::Back];

    pub fn kind(self) -> &'static str {
        match self {
            Self::Restocked => "stock.restocked",
            Self::Adjusted => "stock.adjusted",
            Self::SoldOut => "stock.sold_out",
            Self::Back => "stock.back",
        }
    }
}

/// `stock.restocked`, `stock.adjusted`, `stock.sold_out`, `stock.back`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StockChanged {
    #[serde(default = "v1")]
    pub v: u16,
    /// Which action; version 1 payloads leave it to the event's kind.
    #[serde(default, skip_deserializing)]
    #[cfg_attr(feature = "openapi", schema(value_type = StockChange))]
    pub change: Option<StockChange>,
    pub item_id: ItemId,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Date))]
    pub service_day: NaiveDate,
    pub staff_id: StaffId,
    pub remaining: i64,
    pub sold_out: bool,
}

/// `stock.quota_set`: the daily quota changed for a day already started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QuotaSet {
    #[serde(default = "v1")]
    pub v: u16,
    pub item_id: ItemId,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Date))]
    pub service_day: NaiveDate,
    pub quota: i64,
    pub remaining: i64,
}

/// `stock.ran_out` / `stock.available`: orders took a dish's last portion of the day
/// (or released portions of a dish that had none left), so it sold out (or can be
/// ordered again) without anyone at the counter saying so. What the campus's sold-out
/// board shows beside the staff's own `stock.sold_out` and `stock.back`.
///
/// No other field is allowed (`additionalProperties: false` in the schema): its fields
/// are a subset of `StockChanged`'s, and the event stream's `oneOf` must tell them apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StockAvailability {
    #[serde(default = "v1")]
    pub v: u16,
    pub item_id: ItemId,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Date))]
    pub service_day: NaiveDate,
    pub remaining: i64,
    pub sold_out: bool,
}

/// One event's payload, by kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum EventPayload {
    OrderPlaced(OrderPlaced),
    OrderMoved(OrderMoved),
    StockChanged(StockChanged),
    QuotaSet(QuotaSet),
    AccountBlock(AccountBlock),
    StockAvailability(StockAvailability),
}

/// `account.blocked` / `account.unblocked`: staff stopped (or allowed again) a student
/// ordering at this box, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AccountBlock {
    #[serde(default = "v1")]
    pub v: u16,
    pub student_id: StudentId,
    pub student_number: String,
    pub blocked: bool,
    /// The staff member's reason (for a block).
    pub reason: Option<String>,
    pub staff_id: StaffId,
}

/// Why a stored or received event cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventError {
    UnknownKind(String),
    NewerVersion { kind: String, v: u16 },
    Malformed { kind: String, reason: String },
}

impl std::fmt::Display for EventError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownKind(k) => write!(f, "unknown event kind {k:?}"),
            Self::NewerVersion { kind, v } => write!(
                f,
                "{kind} payload version {v} is newer than this reader's {EVENT_VERSION}"
            ),
            Self::Malformed { kind, reason } => write!(f, "malformed {kind} payload: {reason}"),
        }
    }
}

impl std::error::Error for EventError {}

/// The payload's version, read before anything else.
#[derive(Deserialize)]
struct Version {
    #[serde(default = "v1")]
    v: u16,
}

impl EventPayload {
    /// The event's kind, e.g. `order.placed`, `order.paid`, `stock.sold_out`.
    pub fn kind(&self) -> Cow<'static, str> {
        match self {
            Self::OrderPlaced(_) => Cow::Borrowed("order.placed"),
            Self::OrderMoved(m) => Cow::Owned(format!("order.{}", m.to.as_str())),
            Self::StockChanged(s) => {
                Cow::Borrowed(s.change.map_or("stock.changed", StockChange::kind))
            }
            Self::QuotaSet(_) => Cow::Borrowed("stock.quota_set"),
            Self::StockAvailability(a) => Cow::Borrowed(if a.sold_out {
                "stock.ran_out"
            } else {
                "stock.available"
            }),
            Self::AccountBlock(b) => Cow::Borrowed(if b.blocked {
                "account.blocked"
            } else {
                "account.unblocked"
            }),
        }
    }

    /// The order an order event is about, with its student.
    pub fn order(&self) -> Option<(OrderId, StudentId)> {
        match self {
            Self::OrderPlaced(p) => Some((p.order.id, p.order.student_id)),
            Self::OrderMoved(m) => Some((m.order_id, m.student_id)),
            Self::StockChanged(_)
            | Self::QuotaSet(_)
            | Self::AccountBlock(_)
            | Self::StockAvailability(_) => None,
        }
    }

    /// The id the event is about (an order or an item), as stored beside it.
    pub fn aggregate_id(&self) -> String {
        match self {
            Self::OrderPlaced(p) => p.order.id.to_string(),
            Self::OrderMoved(m) => m.order_id.to_string(),
            Self::StockChanged(s) => s.item_id.to_string(),
            Self::QuotaSet(q) => q.item_id.to_string(),
            Self::StockAvailability(a) => a.item_id.to_string(),
            Self::AccountBlock(b) => b.student_id.to_string(),
        }
    }

    /// Reads a payload of `kind` from its JSON text. The payload is parsed once; only
    /// when that fails is its version read on its own, to tell a newer version (whose
    /// shape this reader may not know) from a malformed payload.
    pub fn parse(kind: &str, payload: &str) -> Result<Self, EventError> {
        match Self::parse_as(kind, payload) {
            Ok(parsed) if parsed.version() > EVENT_VERSION => Err(EventError::NewerVersion {
                kind: kind.to_owned(),
                v: parsed.version(),
            }),
            Ok(parsed) => Ok(parsed),
            Err(e @ EventError::Malformed { .. }) => match serde_json::from_str(payload) {
                Ok(Version { v }) if v > EVENT_VERSION => Err(EventError::NewerVersion {
                    kind: kind.to_owned(),
                    v,
                }),
                _ => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// The payload's version.
    pub fn version(&self) -> u16 {
        match self {
            Self::OrderPlaced(p) => p.v,
            Self::OrderMoved(m) => m.v,
            Self::StockChanged(s) => s.v,
            Self::QuotaSet(q) => q.v,
            Self::StockAvailability(a) => a.v,
            Self::AccountBlock(b) => b.v,
        }
    }

    fn parse_as(kind: &str, payload: &str) -> Result<Self, EventError> {
        let malformed = |e: serde_json::Error| EventError::Malformed {
            kind: kind.to_owned(),
            reason: e.to_string(),
        };
        let parsed = match kind {
            "order.placed" => Self::OrderPlaced(serde_json::from_str(payload).map_err(malformed)?),
            "stock.quota_set" => Self::QuotaSet(serde_json::from_str(payload).map_err(malformed)?),
            "stock.ran_out" | "stock.available" => {
                let a: StockAvailability = serde_json::from_str(payload).map_err(malformed)?;
                if a.sold_out != (kind == "stock.ran_out") {
                    return Err(EventError::Malformed {
                        kind: kind.to_owned(),
                        reason: format!("the payload says sold_out = {}", a.sold_out),
                    });
                }
                Self::StockAvailability(a)
            }
            "account.blocked" | "account.unblocked" => {
                let b: AccountBlock = serde_json::from_str(payload).map_err(malformed)?;
                if b.blocked != (kind == "account.blocked") {
                    return Err(EventError::Malformed {
                        kind: kind.to_owned(),
                        reason: format!("the payload says blocked = {}", b.blocked),
                    });
                }
                Self::AccountBlock(b)
            }
            _ => {
                if let Some(change) = StockChange::ALL.into_iter().find(|c| c.kind() == kind) {
                    let mut s: StockChanged = serde_json::from_str(payload).map_err(malformed)?;
                    s.change = Some(change);
                    Self::StockChanged(s)
                } else if let Some(to) = kind.strip_prefix("order.").and_then(OrderState::parse) {
                    let m: OrderMoved = serde_json::from_str(payload).map_err(malformed)?;
                    if m.to != to {
                        return Err(EventError::Malformed {
                            kind: kind.to_owned(),
                            reason: format!("the payload moves to {}", m.to.as_str()),
                        });
                    }
                    Self::OrderMoved(m)
                } else {
                    return Err(EventError::UnknownKind(kind.to_owned()));
                }
            }
        };
        Ok(parsed)
    }

    /// The payload as stored and sent.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("event payloads serialise")
    }
}

/// One outbox event, as the staff API and the event streams show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(try_from = "RawEvent")]
pub struct OutboxEvent {
    /// Per-box sequence number, starting at 1, without gaps.
    pub seq: i64,
    /// What happened, e.g. `order.placed`, `order.paid`, `stock.restocked`.
    pub kind: String,
    /// The order or item the event is about.
    pub aggregate_id: String,
    pub payload: EventPayload,
    pub at: DateTime<Utc>,
}

impl OutboxEvent {
    pub fn new(seq: i64, payload: EventPayload, at: DateTime<Utc>) -> Self {
        Self {
            seq,
            kind: payload.kind().into_owned(),
            aggregate_id: payload.aggregate_id(),
            payload,
            at,
        }
    }
}

#[derive(Deserialize)]
struct RawEvent {
    seq: i64,
    kind: String,
    aggregate_id: String,
    payload: serde_json::Value,
    at: DateTime<Utc>,
}

impl TryFrom<RawEvent> for OutboxEvent {
    type Error = EventError;
    fn try_from(r: RawEvent) -> Result<Self, EventError> {
        Ok(Self {
            payload: EventPayload::parse(&r.kind, &r.payload.to_string())?,
            seq: r.seq,
            kind: r.kind,
            aggregate_id: r.aggregate_id,
            at: r.at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::order::OrderLine;

    fn order() -> OrderView {
        OrderView {
            id: OrderId::new(),
            student_id: StudentId::new(),
            service_day: "2026-11-23".parse().unwrap(),
            pickup_number: 7,
            pickup_token: "tok".into(),
            state: OrderState::Placed,
            version: 1,
            total_fen: 1500,
            payment_mode: PaymentMode::Counter,
            pickup_slot: None,
            lines: vec![OrderLine {
                item_id: ItemId::new(),
                name_zh: "饭".into(),
                name_en: "Rice".into(),
                quantity: 1,
                unit_price_fen: 1500,
                line_total_fen: 1500,
                options: vec![],
            }],
            placed_at: Utc::now(),
            expires_at: Utc::now(),
            updated_at: Utc::now(),
            can_cancel: true,
            next_events: vec![OrderEvent::Pay, OrderEvent::Cancel],
            ready_promised_at: None,
            ready_estimate: None,
            running_late_min: None,
        }
        .with_facts()
    }

    #[test]
    fn every_payload_round_trips_through_its_kind() {
        let o = order();
        let payloads = [
            EventPayload::OrderPlaced(OrderPlaced::new(o.clone())),
            EventPayload::OrderMoved(OrderMoved {
                v: EVENT_VERSION,
                order_id: o.id,
                student_id: o.student_id,
                service_day: o.service_day,
                from: OrderState::Paid,
                to: OrderState::Cancelled,
                event: OrderEvent::Cancel,
                version: 3,
                actor: "system".into(),
                payment: Some(MoneyMove {
                    kind: MoneyKind::Refund,
                    id: PaymentId::new(),
                    method: PaymentMode::CampusCard,
                    amount_fen: 1500,
                }),
            }),
            EventPayload::StockChanged(StockChanged {
                v: EVENT_VERSION,
                change: Some(StockChange::SoldOut),
                item_id: ItemId::new(),
                service_day: o.service_day,
                staff_id: StaffId::new(),
                remaining: 4,
                sold_out: true,
            }),
            EventPayload::QuotaSet(QuotaSet {
                v: EVENT_VERSION,
                item_id: ItemId::new(),
                service_day: o.service_day,
                quota: 40,
                remaining: 12,
            }),
            EventPayload::StockAvailability(StockAvailability {
                v: EVENT_VERSION,
                item_id: ItemId::new(),
                service_day: o.service_day,
                remaining: 0,
                sold_out: true,
            }),
            EventPayload::StockAvailability(StockAvailability {
                v: EVENT_VERSION,
                item_id: ItemId::new(),
                service_day: o.service_day,
                remaining: 2,
                sold_out: false,
            }),
        ];
        let available = payloads.last().unwrap().to_json();
        assert!(matches!(
            EventPayload::parse("stock.ran_out", &available),
            Err(EventError::Malformed { .. })
        ));
        for p in payloads {
            let kind = p.kind();
            let back = EventPayload::parse(&kind, &p.to_json()).unwrap();
            assert_eq!(back, p, "{kind}");
            let event = OutboxEvent::new(9, p, Utc::now());
            let json = serde_json::to_string(&event).unwrap();
            assert_eq!(serde_json::from_str::<OutboxEvent>(&json).unwrap(), event);
        }
    }

    #[test]
    fn the_aggregator_head_reads_what_the_box_writes() {
        let o = order();
        let text = EventPayload::OrderPlaced(OrderPlaced::new(o.clone())).to_json();
        let head = OrderPlacedHead::parse(&text).unwrap();
        assert_eq!(head.v, EVENT_VERSION);
        assert_eq!(head.id, o.id.to_string());
        assert_eq!(head.service_day, "2026-11-23");
        assert_eq!(head.total_fen, 1500);
        assert!(matches!(
            OrderPlacedHead::parse(r#"{"v":99,"id":"x","service_day":"d","total_fen":1}"#),
            Err(EventError::NewerVersion { v: 99, .. })
        ));
        assert!(matches!(
            OrderPlacedHead::parse("{}"),
            Err(EventError::Malformed { .. })
        ));
    }

    #[test]
    fn version_1_payloads_written_before_the_contract_still_read() {
        let refund = format!(
            r#"{{"order_id":"{o}","student_id":"{s}","service_day":"2026-11-23","from":"paid","to":"cancelled",
            "event":"cancel","version":3,"actor":"student:{s}","payment":{{"refund_id":"{p}","method":"counter","amount_fen":900}}}}"#,
            o = OrderId::new(),
            s = StudentId::new(),
            p = PaymentId::new()
        );
        let EventPayload::OrderMoved(m) = EventPayload::parse("order.cancelled", &refund).unwrap()
        else {
            panic!("not a move")
        };
        assert_eq!(m.v, 1);
        assert_eq!(m.payment.unwrap().kind, MoneyKind::Refund);
        assert_eq!(m.payment.unwrap().amount_fen, 900);
        let no_money = format!(
            r#"{{"order_id":"{o}","student_id":"{s}","service_day":"2026-11-23","from":"placed","to":"expired",
            "event":"expire","version":2,"actor":"system","payment":null}}"#,
            o = OrderId::new(),
            s = StudentId::new()
        );
        let EventPayload::OrderMoved(m) = EventPayload::parse("order.expired", &no_money).unwrap()
        else {
            panic!("not a move")
        };
        assert_eq!(m.payment, None);
        let stock = format!(
            r#"{{"item_id":"{i}","service_day":"2026-11-23","staff_id":"{s}","remaining":0,"sold_out":true}}"#,
            i = ItemId::new(),
            s = StaffId::new()
        );
        let EventPayload::StockChanged(s) = EventPayload::parse("stock.sold_out", &stock).unwrap()
        else {
            panic!("not stock")
        };
        assert_eq!(s.change, Some(StockChange::SoldOut));
    }

    #[test]
    fn newer_versions_unknown_kinds_and_contradictions_are_refused() {
        assert!(matches!(
            EventPayload::parse("order.placed", r#"{"v":99}"#),
            Err(EventError::NewerVersion { v: 99, .. })
        ));
        assert!(matches!(
            EventPayload::parse("order.teleported", r#"{"v":2}"#),
            Err(EventError::UnknownKind(_))
        ));
        assert!(matches!(
            EventPayload::parse("order.placed", "not json"),
            Err(EventError::Malformed { .. })
        ));
        let o = order();
        let moved = EventPayload::OrderMoved(OrderMoved {
            v: 2,
            order_id: o.id,
            student_id: o.student_id,
            service_day: o.service_day,
            from: OrderState::Placed,
            to: OrderState::Paid,
            event: OrderEvent::Pay,
            version: 2,
            actor: "system".into(),
            payment: None,
        });
        assert!(matches!(
            EventPayload::parse("order.cancelled", &moved.to_json()),
            Err(EventError::Malformed { .. })
        ));
        // Both ids on one money move is a contradiction, not a guess.
        let both = format!(
            r#"{{"payment_id":"{p}","refund_id":"{p}","method":"counter","amount_fen":1}}"#,
            p = PaymentId::new()
        );
        assert!(serde_json::from_str::<MoneyMove>(&both).is_err());
    }
}
