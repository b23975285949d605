//! The canteen's settings as the box uses them: opening hours, pickup slots, payment
//! modes, unpaid timeout, announcement, time zone. An in-memory projection of the
//! settings document (`store::docs`), resolved into typed values and refreshed
//! after every committed edit.

use canteen_api::order::PaymentMode;
use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, Utc};
use chrono_tz::Tz;
use crdt::settings::{CanteenSettings, PickupSlot};
use std::sync::{Arc, RwLock};

/// Resolved settings.
#[derive(Debug, Clone)]
pub struct Canteen {
    pub raw: CanteenSettings,
    pub conflicts: Vec<crdt::Conflict>,
    pub time_zone: Tz,
    /// Monday first: (open, close, closed).
    hours: Vec<(NaiveTime, NaiveTime, bool)>,
    pub payment_modes: Vec<PaymentMode>,
    pub unpaid_timeout: chrono::Duration,
}

#[derive(Debug, thiserror::Error)]
#[error("settings {field}: {reason}")]
pub struct SettingsInvalid {
    pub field: String,
    pub reason: String,
}

fn invalid(field: &str, reason: impl Into<String>) -> SettingsInvalid {
    SettingsInvalid {
        field: field.into(),
        reason: reason.into(),
    }
}

impl Canteen {
    pub fn resolve(
        raw: CanteenSettings,
        conflicts: Vec<crdt::Conflict>,
    ) -> Result<Self, SettingsInvalid> {
        let time_zone: Tz = raw.time_zone.parse().map_err(|_| {
            invalid(
                "time_zone",
                format!("{:?} is not an IANA time zone", raw.time_zone),
            )
        })?;
        let time = |t: &str| {
            NaiveTime::parse_from_str(t, "%H:%M")
                .map_err(|_| invalid("hours", format!("{t:?} is not HH:MM")))
        };
        let hours = raw
            .hours
            .iter()
            .map(|h| Ok((time(&h.open)?, time(&h.close)?, h.closed)))
            .collect::<Result<Vec<_>, SettingsInvalid>>()?;
        if hours.len() != 7 {
            return Err(invalid("hours", "need all seven days"));
        }
        let payment_modes = raw
            .payment_modes
            .iter()
            .map(|m| {
                PaymentMode::parse(m)
                    .ok_or_else(|| invalid("payment_modes", format!("unknown mode {m:?}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            time_zone,
            hours,
            payment_modes,
            unpaid_timeout: chrono::Duration::seconds(i64::from(raw.unpaid_timeout_s)),
            raw,
            conflicts,
        })
    }

    pub fn service_day(&self, now: DateTime<Utc>) -> NaiveDate {
        super::clock::service_day(now, self.time_zone)
    }

    /// (open, close, closed) of the local day of `now`.
    pub fn hours_on(&self, now: DateTime<Utc>) -> (NaiveTime, NaiveTime, bool) {
        let local = now.with_timezone(&self.time_zone);
        self.hours[local.weekday().num_days_from_monday() as usize]
    }

    /// Is the canteen taking orders at this instant?
    pub fn is_open(&self, now: DateTime<Utc>) -> bool {
        let (open, close, closed) = self.hours_on(now);
        let local = now.with_timezone(&self.time_zone).time();
        !closed && open <= local && local < close
    }

    /// The last service day whose closing time has passed: ready orders of that day
    /// and earlier are unclaimed.
    pub fn closed_through(&self, now: DateTime<Utc>) -> NaiveDate {
        let local = now.with_timezone(&self.time_zone);
        let (_, close, closed) = self.hours_on(now);
        if closed || local.time() >= close {
            local.date_naive()
        } else {
            local.date_naive().pred_opt().unwrap_or(local.date_naive())
        }
    }

    /// A slot's start and end on `day`, in UTC. Slot times were checked as HH:MM when
    /// the settings were edited; one that does not parse (or falls in a gap of a
    /// time-zone change) counts as the whole day.
    pub fn slot_span(&self, day: NaiveDate, slot: &PickupSlot) -> (DateTime<Utc>, DateTime<Utc>) {
        let at = |t: &str, fallback: NaiveTime| {
            let time = NaiveTime::parse_from_str(t, "%H:%M").unwrap_or(fallback);
            day.and_time(time)
                .and_local_timezone(self.time_zone)
                .earliest()
                .map_or_else(|| day.and_time(time).and_utc(), |t| t.with_timezone(&Utc))
        };
        (
            at(&slot.start, NaiveTime::MIN),
            at(
                &slot.end,
                NaiveTime::from_hms_opt(23, 59, 59).unwrap_or(NaiveTime::MIN),
            ),
        )
    }

    pub fn slot(&self, id: &str) -> Option<&PickupSlot> {
        self.raw.pickup_slots.iter().find(|s| s.id == id)
    }
}

/// The in-memory projection readers use.
pub struct CanteenStore {
    current: RwLock<Arc<Canteen>>,
}

impl CanteenStore {
    pub fn new(canteen: Canteen) -> Self {
        Self {
            current: RwLock::new(Arc::new(canteen)),
        }
    }

    pub fn snapshot(&self) -> Arc<Canteen> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn replace(&self, canteen: Arc<Canteen>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = canteen;
    }
}
