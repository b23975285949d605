//! Sales across canteens for a business day or a range of them (each canteen's own
//! business days, as its box named them): per canteen and for the campus, orders,
//! revenue, average ticket, refunds, cancellations, expired and unclaimed orders, and
//! orders per local hour. Read from the rollups kept at ingest, never the events.

use super::admin::blocking;
use super::admins::AdminAccount;
use super::auth::AdminError;
use super::server::Cloud;
use axum::http::StatusCode;
use serde::Serialize;

use super::store::{CloudStore, SOLD};

/// The longest range of business days a page sums.
pub const RANGE_DAYS_MAX: i64 = 366;

/// Business days `from..=to` (`YYYY-MM-DD`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Days {
    pub from: String,
    pub to: String,
}

impl Days {
    /// The days a request names: `day` (or the latest day with orders) through `to`
    /// (or `day` alone). `None` while no canteen has sold anything.
    pub fn resolve(
        store: &CloudStore,
        day: Option<String>,
        to: Option<String>,
    ) -> anyhow::Result<Option<Days>> {
        let from = match day {
            Some(d) => d,
            None => match store.latest_service_day()? {
                Some(d) => d,
                None => return Ok(None),
            },
        };
        let to = to.unwrap_or_else(|| from.clone());
        Ok(Some(Days { from, to }))
    }

    pub fn bounds(&self) -> (&str, &str) {
        (&self.from, &self.to)
    }
}

/// Checks the days of a request: each `YYYY-MM-DD`, `to` not before `day`, at most
/// [`RANGE_DAYS_MAX`] days.
pub fn check_days(day: Option<&str>, to: Option<&str>) -> Result<(), AdminError> {
    for d in day.iter().chain(to.iter()) {
        check_day(d)?;
    }
    if let Some(to) = to {
        let Some(day) = day else {
            return Err(AdminError::new(
                StatusCode::BAD_REQUEST,
                "bad_day",
                "a range needs its first day: ?day=…&to=…",
            ));
        };
        let parse = |d: &str| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d");
        let (Ok(a), Ok(b)) = (parse(day), parse(to)) else {
            return Err(AdminError::new(
                StatusCode::BAD_REQUEST,
                "bad_day",
                format!("{day} or {to} is not a calendar day"),
            ));
        };
        let span = (b - a).num_days();
        if !(0..RANGE_DAYS_MAX).contains(&span) {
            return Err(AdminError::new(
                StatusCode::BAD_REQUEST,
                "bad_range",
                format!("the range must run forward and span at most {RANGE_DAYS_MAX} days"),
            ));
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SalesRow {
    /// A canteen's node id, or `campus` for the total.
    pub canteen: String,
    pub orders: i64,
    /// Payments less refunds.
    pub revenue_fen: i64,
    /// Orders whose money was kept.
    pub tickets: i64,
    /// Revenue per ticket, rounded down (0 without tickets).
    pub average_ticket_fen: i64,
    pub refunds_fen: i64,
    pub cancelled: i64,
    pub expired: i64,
    pub unclaimed: i64,
}

/// Orders placed in each hour of the day, in the canteen's own time zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hourly {
    pub canteen: String,
    pub time_zone: String,
    /// Index 0 is 00:00–00:59 local time.
    pub orders: [u32; 24],
}

#[derive(Debug, Clone, Serialize)]
pub struct Sales {
    /// The first business day (`YYYY-MM-DD`), or `None` while no canteen has sold
    /// anything.
    pub day: Option<String>,
    /// The last business day of the range (the same as `day` for one day).
    pub to: Option<String>,
    pub canteens: Vec<SalesRow>,
    pub campus: SalesRow,
    /// Orders per hour, per canteen (the same canteens as `canteens`).
    pub hourly: Vec<Hourly>,
}

/// Sums orders per hour (Unix time / 3600, as the rollup keeps them) into the local
/// hours of `time_zone` (UTC if unknown). A zone whose offset is not whole hours counts
/// each UTC hour at the local hour it starts in.
pub fn per_hour(hours: &[(i64, i64)], time_zone: &str) -> [u32; 24] {
    use chrono::Timelike;
    let tz: chrono_tz::Tz = time_zone.parse().unwrap_or(chrono_tz::UTC);
    let mut out = [0u32; 24];
    for (hour, n) in hours {
        if let Some(t) = chrono::DateTime::from_timestamp(hour.saturating_mul(3600), 0) {
            let slot = &mut out[t.with_timezone(&tz).hour() as usize];
            *slot = slot.saturating_add(u32::try_from(*n).unwrap_or(0));
        }
    }
    out
}

/// A business day as the boxes write it: `YYYY-MM-DD`.
pub fn check_day(day: &str) -> Result<(), AdminError> {
    let b = day.as_bytes();
    let ok = b.len() == 10
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        });
    if ok {
        Ok(())
    } else {
        Err(AdminError::new(
            StatusCode::BAD_REQUEST,
            "bad_day",
            format!("day {day:?}: expected YYYY-MM-DD"),
        ))
    }
}

impl SalesRow {
    fn add(&mut self, other: &SalesRow) {
        self.orders += other.orders;
        self.revenue_fen += other.revenue_fen;
        self.tickets += other.tickets;
        self.refunds_fen += other.refunds_fen;
        self.cancelled += other.cancelled;
        self.expired += other.expired;
        self.unclaimed += other.unclaimed;
        self.average_ticket_fen = average(self.revenue_fen, self.tickets);
    }
}

fn average(revenue_fen: i64, tickets: i64) -> i64 {
    if tickets > 0 {
        revenue_fen / tickets
    } else {
        0
    }
}

/// The sales of every canteen `account` may see over business days `day..=to` (`day`
/// `None`: the latest day with orders; `to` `None`: that day alone).
pub async fn sales(
    cloud: &Cloud,
    account: &AdminAccount,
    day: Option<String>,
    to: Option<String>,
) -> Result<Sales, AdminError> {
    check_days(day.as_deref(), to.as_deref())?;
    let store = cloud.store.clone();
    let docs = cloud.docs.clone();
    let account = account.clone();
    blocking(move || -> anyhow::Result<Sales> {
        let days = Days::resolve(&store, day, to)?;
        let mut canteens = Vec::new();
        let mut hourly = Vec::new();
        let mut campus = SalesRow {
            canteen: "campus".into(),
            ..SalesRow::default()
        };
        if let Some(days) = &days {
            for node in store.nodes()? {
                if !account.may_read(&node.node_id) {
                    continue;
                }
                let s = store.summary_range(&node.node_id, days.bounds())?;
                let count = |state: &str| s.by_state.get(state).copied().unwrap_or(0);
                let time_zone = docs.time_zone(&node.node_id)?;
                hourly.push(Hourly {
                    canteen: node.node_id.clone(),
                    orders: per_hour(
                        &store.placed_hours(&node.node_id, days.bounds())?,
                        &time_zone,
                    ),
                    time_zone,
                });
                let tickets = SOLD.iter().map(|st| count(st)).sum();
                let row = SalesRow {
                    canteen: node.node_id,
                    orders: s.orders,
                    revenue_fen: s.revenue_fen,
                    tickets,
                    average_ticket_fen: average(s.revenue_fen, tickets),
                    refunds_fen: s.refunds_fen,
                    cancelled: count("cancelled"),
                    expired: count("expired"),
                    unclaimed: count("unclaimed"),
                };
                campus.add(&row);
                canteens.push(row);
            }
        }
        Ok(Sales {
            day: days.as_ref().map(|d| d.from.clone()),
            to: days.map(|d| d.to),
            canteens,
            campus,
            hourly,
        })
    })
    .await
}

/// `¥12.34` from fen, in integer arithmetic.
pub fn yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    let f = fen.unsigned_abs();
    format!("{sign}¥{}.{:02}", f / 100, f % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_money_are_checked_and_written_exactly() {
        assert!(check_day("2026-12-06").is_ok());
        for bad in ["%", "2026-12-0%", "2026/12/06", "", "2026-12-061"] {
            assert_eq!(check_day(bad).unwrap_err().code, "bad_day", "{bad}");
        }
        assert_eq!(yuan(1234), "¥12.34");
        assert_eq!(yuan(-5), "-¥0.05");
        let mut campus = SalesRow::default();
        campus.add(&SalesRow {
            revenue_fen: 1001,
            tickets: 3,
            ..SalesRow::default()
        });
        assert_eq!(campus.average_ticket_fen, 333);
    }

    #[test]
    fn orders_fall_into_the_canteens_local_hours() {
        let hour = |at: &str| {
            chrono::DateTime::parse_from_rfc3339(at)
                .unwrap()
                .timestamp()
                .div_euclid(3600)
        };
        let placed = [
            (hour("2026-12-06T03:59:59Z"), 1), // 11:59 in Shanghai
            (hour("2026-12-06T04:00:00Z"), 2), // 12:00
            (hour("2026-12-07T04:10:00Z"), 5), // 12:10 the next day (a range)
            (i64::MAX, 7),                     // not a time: left out
        ];
        let hours = per_hour(&placed, "Asia/Shanghai");
        assert_eq!((hours[11], hours[12]), (1, 7));
        assert_eq!(hours.iter().sum::<u32>(), 8);
        assert_eq!(
            per_hour(&placed, "Mars/Olympus")[4],
            7,
            "unknown zones count in UTC"
        );
    }

    #[test]
    fn ranges_run_forward_and_are_bounded() {
        assert!(check_days(Some("2026-12-01"), Some("2026-12-06")).is_ok());
        assert!(check_days(None, None).is_ok());
        for (day, to, code) in [
            (Some("2026-12-06"), Some("2026-12-01"), "bad_range"),
            (Some("2025-01-01"), Some("2026-12-06"), "bad_range"),
            (None, Some("2026-12-06"), "bad_day"),
            (Some("2026-02-30"), Some("2026-03-01"), "bad_day"),
        ] {
            assert_eq!(
                check_days(day, to).unwrap_err().code,
                code,
                "{day:?} {to:?}"
            );
        }
    }
}
