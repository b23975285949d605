//! Sales across canteens for one business day (each canteen's own, as its box named
//! it): per canteen and for the campus, orders, revenue, average ticket, refunds,
//! cancellations, expired and unclaimed orders. Read from the cloud's projections of
//! the boxes' events.

use super::admin::blocking;
use super::admins::AdminAccount;
use super::auth::AdminError;
use super::server::Cloud;
use axum::http::StatusCode;
use serde::Serialize;

/// Order states whose money was taken and kept (the day's tickets).
const SOLD: &[&str] = &["paid", "preparing", "ready", "picked_up", "unclaimed"];

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
    /// The business day (`YYYY-MM-DD`), or `None` while no canteen has sold anything.
    pub day: Option<String>,
    pub canteens: Vec<SalesRow>,
    pub campus: SalesRow,
    /// Orders per hour, per canteen (the same canteens as `canteens`).
    pub hourly: Vec<Hourly>,
}

/// Counts placement times (RFC 3339) per local hour of `time_zone` (UTC if unknown).
pub fn per_hour(placed: &[String], time_zone: &str) -> [u32; 24] {
    use chrono::Timelike;
    let tz: chrono_tz::Tz = time_zone.parse().unwrap_or(chrono_tz::UTC);
    let mut out = [0u32; 24];
    for at in placed {
        if let Ok(t) = chrono::DateTime::parse_from_rfc3339(at) {
            out[t.with_timezone(&tz).hour() as usize] += 1;
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

/// The day's sales of every canteen `account` may see (`day` `None`: the latest day
/// with orders).
pub async fn sales(
    cloud: &Cloud,
    account: &AdminAccount,
    day: Option<String>,
) -> Result<Sales, AdminError> {
    if let Some(d) = &day {
        check_day(d)?;
    }
    let store = cloud.store.clone();
    let docs = cloud.docs.clone();
    let account = account.clone();
    blocking(move || -> anyhow::Result<Sales> {
        let day = match day {
            Some(d) => Some(d),
            None => store.latest_service_day()?,
        };
        let mut canteens = Vec::new();
        let mut hourly = Vec::new();
        let mut campus = SalesRow {
            canteen: "campus".into(),
            ..SalesRow::default()
        };
        if let Some(day) = &day {
            for node in store.nodes()? {
                if !account.may_read(&node.node_id) {
                    continue;
                }
                let s = store.summary(&node.node_id, Some(day))?;
                let count = |state: &str| s.by_state.get(state).copied().unwrap_or(0);
                let time_zone = docs.time_zone(&node.node_id)?;
                hourly.push(Hourly {
                    canteen: node.node_id.clone(),
                    orders: per_hour(&store.placed_times(&node.node_id, day)?, &time_zone),
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
            day,
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
        let placed = [
            "2026-12-06T03:59:59Z".to_owned(), // 11:59 in Shanghai
            "2026-12-06T04:00:00Z".to_owned(), // 12:00
            "2026-12-06T04:30:00+00:00".to_owned(),
            "not a time".to_owned(),
        ];
        let hours = per_hour(&placed, "Asia/Shanghai");
        assert_eq!((hours[11], hours[12]), (1, 2));
        assert_eq!(hours.iter().sum::<u32>(), 3);
        assert_eq!(
            per_hour(&placed, "Mars/Olympus")[4],
            2,
            "unknown zones count in UTC"
        );
    }
}
