//! The canteen settings document: opening hours per weekday, pickup slots with
//! capacity, payment modes, unpaid timeout, announcement, time zone.
//!
//! Layout: `ROOT.hours[mon..sun] = {open, close, closed}`, `ROOT.slots[<id>] =
//! {start, end, capacity, archived}`, `ROOT.payment_modes[<mode>] = bool`, and scalars
//! `unpaid_timeout_s`, `announcement`, `time_zone` at the root.

use crate::doc::{field, read};
use crate::{InvalidValue, ReplicatedDoc};
use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjType, ROOT};
use serde::{Deserialize, Serialize};

pub const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
pub const PAYMENT_MODES: [&str; 2] = ["counter", "campus_card"];
pub const ANNOUNCEMENT_MAX_CHARS: usize = 500;
pub const SLOTS_MAX: usize = 48;
pub const SLOT_CAPACITY_MAX: u32 = 10_000;
pub const UNPAID_TIMEOUT_MAX_S: u32 = 24 * 3600;

/// Version 1 of the schema, with the defaults a new canteen starts from: open
/// 10:30–20:30 every day, counter payment, 15 minutes to pay, Asia/Shanghai.
pub(crate) fn schema_v1(doc: &mut AutoCommit) -> Result<(), automerge::AutomergeError> {
    doc.put(ROOT, "kind", "settings")?;
    let hours = doc.put_object(ROOT, "hours", ObjType::Map)?;
    for day in WEEKDAYS {
        let d = doc.put_object(&hours, day, ObjType::Map)?;
        doc.put(&d, "open", "10:30")?;
        doc.put(&d, "close", "20:30")?;
        doc.put(&d, "closed", false)?;
    }
    doc.put_object(ROOT, "slots", ObjType::Map)?;
    let modes = doc.put_object(ROOT, "payment_modes", ObjType::Map)?;
    doc.put(&modes, "counter", true)?;
    doc.put(&modes, "campus_card", false)?;
    doc.put(ROOT, "unpaid_timeout_s", 900_i64)?;
    doc.put(ROOT, "announcement", "")?;
    doc.put(ROOT, "time_zone", "Asia/Shanghai")?;
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DayHours {
    /// `mon` … `sun`.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^(mon|tue|wed|thu|fri|sat|sun)$")
    )]
    pub day: String,
    /// "HH:MM", local time.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    )]
    pub open: String,
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    )]
    pub close: String,
    pub closed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PickupSlot {
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 80, pattern = r"\S")
    )]
    pub id: String,
    /// "HH:MM", local time.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    )]
    pub start: String,
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    )]
    pub end: String,
    /// Orders the kitchen takes for this slot per day.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10_000))]
    pub capacity: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CanteenSettings {
    /// `mon` … `sun`, in that order.
    pub hours: Vec<DayHours>,
    /// Active slots, by start time.
    pub pickup_slots: Vec<PickupSlot>,
    /// Enabled modes: `counter`, `campus_card`.
    pub payment_modes: Vec<String>,
    pub unpaid_timeout_s: u32,
    pub announcement: String,
    /// IANA name, e.g. `Asia/Shanghai`.
    pub time_zone: String,
}

/// One single-field edit of the settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum SettingsEdit {
    SetHours {
        #[cfg_attr(
            feature = "openapi",
            schema(pattern = r"^(mon|tue|wed|thu|fri|sat|sun)$")
        )]
        day: String,
        #[cfg_attr(
            feature = "openapi",
            schema(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
        )]
        open: String,
        #[cfg_attr(
            feature = "openapi",
            schema(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
        )]
        close: String,
        closed: bool,
    },
    SetAnnouncement {
        #[cfg_attr(feature = "openapi", schema(max_length = 500))]
        text: String,
    },
    SetUnpaidTimeout {
        #[cfg_attr(feature = "openapi", schema(minimum = 60, maximum = 86_400))]
        seconds: u32,
    },
    SetTimeZone {
        #[cfg_attr(
            feature = "openapi",
            schema(min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_+/-]+$")
        )]
        time_zone: String,
    },
    SetPaymentMode {
        #[cfg_attr(feature = "openapi", schema(pattern = r"^(counter|campus_card)$"))]
        mode: String,
        enabled: bool,
    },
    AddSlot {
        slot: PickupSlot,
    },
    SetSlotTimes {
        #[cfg_attr(
            feature = "openapi",
            schema(min_length = 1, max_length = 80, pattern = r"\S")
        )]
        id: String,
        #[cfg_attr(
            feature = "openapi",
            schema(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
        )]
        start: String,
        #[cfg_attr(
            feature = "openapi",
            schema(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
        )]
        end: String,
    },
    SetSlotCapacity {
        #[cfg_attr(
            feature = "openapi",
            schema(min_length = 1, max_length = 80, pattern = r"\S")
        )]
        id: String,
        #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10_000))]
        capacity: u32,
    },
    SetSlotArchived {
        #[cfg_attr(
            feature = "openapi",
            schema(min_length = 1, max_length = 80, pattern = r"\S")
        )]
        id: String,
        archived: bool,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Invalid(#[from] InvalidValue),
    #[error("no pickup slot {0:?}")]
    NoSlot(String),
    #[error("pickup slot {0:?} already exists")]
    SlotExists(String),
    #[error(transparent)]
    Doc(#[from] crate::DocError),
}

impl From<automerge::AutomergeError> for SettingsError {
    fn from(e: automerge::AutomergeError) -> Self {
        Self::Doc(e.into())
    }
}

/// Minutes since midnight of an "HH:MM" text.
pub fn minutes(text: &str) -> Option<u32> {
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

fn check_span(path: &str, start: &str, end: &str) -> Result<(), InvalidValue> {
    match (minutes(start), minutes(end)) {
        (Some(a), Some(b)) if a < b => Ok(()),
        (Some(_), Some(_)) => Err(InvalidValue::new(path, "must start before it ends")),
        _ => Err(InvalidValue::new(path, "times are HH:MM")),
    }
}

fn check_slot_id(path: &str, id: &str) -> Result<(), InvalidValue> {
    if id.is_empty()
        || id.len() > 32
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_:".contains(&b))
    {
        return Err(InvalidValue::new(
            path,
            "slot ids are 1 to 32 letters, digits, '-', '_' or ':'",
        ));
    }
    Ok(())
}

fn check_settings_value(edit: &SettingsEdit) -> Result<(), InvalidValue> {
    match edit {
        SettingsEdit::SetHours {
            day, open, close, ..
        } => {
            if !WEEKDAYS.contains(&day.as_str()) {
                return Err(InvalidValue::new(
                    "hours",
                    format!("{day:?} is not mon … sun"),
                ));
            }
            check_span(&format!("hours/{day}"), open, close)
        }
        SettingsEdit::SetAnnouncement { text } => {
            if text.chars().count() > ANNOUNCEMENT_MAX_CHARS {
                return Err(InvalidValue::new(
                    "announcement",
                    format!("at most {ANNOUNCEMENT_MAX_CHARS} characters"),
                ));
            }
            Ok(())
        }
        SettingsEdit::SetUnpaidTimeout { seconds } => {
            if *seconds < 60 || *seconds > UNPAID_TIMEOUT_MAX_S {
                return Err(InvalidValue::new(
                    "unpaid_timeout_s",
                    format!("must be 60 to {UNPAID_TIMEOUT_MAX_S}"),
                ));
            }
            Ok(())
        }
        SettingsEdit::SetTimeZone { time_zone } => {
            if time_zone.is_empty() || time_zone.len() > 64 || !time_zone.is_ascii() {
                return Err(InvalidValue::new(
                    "time_zone",
                    "expected an IANA time zone name",
                ));
            }
            Ok(())
        }
        SettingsEdit::SetPaymentMode { mode, .. } => {
            if !PAYMENT_MODES.contains(&mode.as_str()) {
                return Err(InvalidValue::new(
                    "payment_modes",
                    format!("{mode:?} is not counter or campus_card"),
                ));
            }
            Ok(())
        }
        SettingsEdit::AddSlot { slot } => {
            let path = format!("slots/{}", slot.id);
            check_slot_id(&path, &slot.id)?;
            check_span(&path, &slot.start, &slot.end)?;
            check_capacity(&path, slot.capacity)
        }
        SettingsEdit::SetSlotTimes { id, start, end } => {
            check_span(&format!("slots/{id}"), start, end)
        }
        SettingsEdit::SetSlotCapacity { id, capacity } => {
            check_capacity(&format!("slots/{id}"), *capacity)
        }
        SettingsEdit::SetSlotArchived { .. } => Ok(()),
    }
}

fn check_capacity(path: &str, capacity: u32) -> Result<(), InvalidValue> {
    if capacity == 0 || capacity > SLOT_CAPACITY_MAX {
        return Err(InvalidValue::new(
            format!("{path}/capacity"),
            format!("must be 1 to {SLOT_CAPACITY_MAX}"),
        ));
    }
    Ok(())
}

fn apply_one(doc: &mut AutoCommit, edit: &SettingsEdit) -> Result<(), SettingsError> {
    check_settings_value(edit)?;
    match edit {
        SettingsEdit::SetHours {
            day,
            open,
            close,
            closed,
        } => {
            let hours = field::ensure_map(doc, &ROOT, "hours")?;
            let d = field::ensure_map(doc, &hours, day)?;
            field::set(doc, &d, "open", open.as_str())?;
            field::set(doc, &d, "close", close.as_str())?;
            field::set(doc, &d, "closed", *closed)?;
        }
        SettingsEdit::SetAnnouncement { text } => {
            field::set(doc, &ROOT, "announcement", text.trim())?
        }
        SettingsEdit::SetUnpaidTimeout { seconds } => {
            field::set(doc, &ROOT, "unpaid_timeout_s", i64::from(*seconds))?
        }
        SettingsEdit::SetTimeZone { time_zone } => {
            field::set(doc, &ROOT, "time_zone", time_zone.as_str())?
        }
        SettingsEdit::SetPaymentMode { mode, enabled } => {
            let modes = field::ensure_map(doc, &ROOT, "payment_modes")?;
            field::set(doc, &modes, mode, *enabled)?;
        }
        SettingsEdit::AddSlot { slot } => {
            let slots = field::ensure_map(doc, &ROOT, "slots")?;
            if field::opt_map(doc, &slots, &slot.id).is_some() {
                return Err(SettingsError::SlotExists(slot.id.clone()));
            }
            if field::keys(doc, &slots).len() >= SLOTS_MAX {
                return Err(
                    InvalidValue::new("slots", format!("at most {SLOTS_MAX} slots")).into(),
                );
            }
            let s = doc.put_object(&slots, slot.id.as_str(), ObjType::Map)?;
            doc.put(&s, "start", slot.start.as_str())?;
            doc.put(&s, "end", slot.end.as_str())?;
            doc.put(&s, "capacity", i64::from(slot.capacity))?;
            doc.put(&s, "archived", false)?;
        }
        SettingsEdit::SetSlotTimes { id, start, end } => {
            let s = slot_obj(doc, id)?;
            field::set(doc, &s, "start", start.as_str())?;
            field::set(doc, &s, "end", end.as_str())?;
        }
        SettingsEdit::SetSlotCapacity { id, capacity } => {
            let s = slot_obj(doc, id)?;
            field::set(doc, &s, "capacity", i64::from(*capacity))?;
        }
        SettingsEdit::SetSlotArchived { id, archived } => {
            let s = slot_obj(doc, id)?;
            field::set(doc, &s, "archived", *archived)?;
        }
    }
    Ok(())
}

fn slot_obj(doc: &AutoCommit, id: &str) -> Result<automerge::ObjId, SettingsError> {
    let slots = field::map(doc, &ROOT, "slots", "")?;
    field::opt_map(doc, &slots, id).ok_or_else(|| SettingsError::NoSlot(id.to_owned()))
}

/// Applies edits as one change, all or nothing.
pub fn apply(
    doc: &mut ReplicatedDoc,
    edits: &[SettingsEdit],
    time_ms: i64,
) -> Result<(), SettingsError> {
    if edits.len() > crate::menu::EDITS_MAX {
        return Err(InvalidValue::new("edits", "too many edits at once").into());
    }
    doc.change(time_ms, |am| {
        for edit in edits {
            apply_one(am, edit)?;
        }
        Ok(())
    })
}

/// Reads and validates the settings.
pub fn project(doc: &ReplicatedDoc) -> Result<CanteenSettings, InvalidValue> {
    let root = crate::doc::hydrate(doc)?;
    let hours_obj = read::map(&root, "hours", "")?;
    let mut hours = Vec::new();
    for day in WEEKDAYS {
        let path = format!("hours/{day}");
        let d = read::map(hours_obj, day, "hours")?;
        let h = DayHours {
            day: day.to_owned(),
            open: read::string(d, "open", &path)?,
            close: read::string(d, "close", &path)?,
            closed: read::boolean(d, "closed", &path)?,
        };
        check_span(&path, &h.open, &h.close)?;
        hours.push(h);
    }
    let slots_obj = read::map(&root, "slots", "")?;
    let mut pickup_slots = Vec::new();
    for id in read::keys(slots_obj) {
        let path = format!("slots/{id}");
        let s = read::map(slots_obj, id, "slots")?;
        if read::boolean(s, "archived", &path)? {
            continue;
        }
        let capacity = u32::try_from(read::int(s, "capacity", &path)?)
            .map_err(|_| InvalidValue::new(format!("{path}/capacity"), "out of range"))?;
        let slot = PickupSlot {
            start: read::string(s, "start", &path)?,
            end: read::string(s, "end", &path)?,
            capacity,
            id: id.clone(),
        };
        check_slot_id(&path, &slot.id)?;
        check_span(&path, &slot.start, &slot.end)?;
        check_capacity(&path, slot.capacity)?;
        pickup_slots.push(slot);
    }
    pickup_slots.sort_by(|a, b| (&a.start, &a.id).cmp(&(&b.start, &b.id)));
    let modes_obj = read::map(&root, "payment_modes", "")?;
    let mut payment_modes = Vec::new();
    for mode in PAYMENT_MODES {
        if read::boolean(modes_obj, mode, "payment_modes").unwrap_or(false) {
            payment_modes.push(mode.to_owned());
        }
    }
    let timeout = read::int(&root, "unpaid_timeout_s", "")?;
    let settings = CanteenSettings {
        hours,
        pickup_slots,
        payment_modes,
        unpaid_timeout_s: u32::try_from(timeout)
            .map_err(|_| InvalidValue::new("unpaid_timeout_s", "out of range"))?,
        announcement: read::string(&root, "announcement", "")?,
        time_zone: read::string(&root, "time_zone", "")?,
    };
    check_settings_value(&SettingsEdit::SetUnpaidTimeout {
        seconds: settings.unpaid_timeout_s,
    })?;
    check_settings_value(&SettingsEdit::SetAnnouncement {
        text: settings.announcement.clone(),
    })?;
    check_settings_value(&SettingsEdit::SetTimeZone {
        time_zone: settings.time_zone.clone(),
    })?;
    if settings.payment_modes.is_empty() {
        return Err(InvalidValue::new(
            "payment_modes",
            "at least one payment mode must be enabled",
        ));
    }
    Ok(settings)
}
