//! Sales across canteens for one business day (each canteen's own, as its box named
//! it): per canteen and for the campus, orders, revenue, average ticket, refunds,
//! cancellations, expired and unclaimed orders. Read from the cloud's projections of
//! the boxes' events.

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

#[derive(Debug, Clone, Serialize)]
pub struct Sales {
    /// The business day (`YYYY-MM-DD`), or `None` while no canteen has sold anything.
    pub day: Option<String>,
    pub canteens: Vec<SalesRow>,
    pub campus: SalesRow,
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
    let account = account.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<Sales> {
        let day = match day {
            Some(d) => Some(d),
            None => store.latest_service_day()?,
        };
        let mut canteens = Vec::new();
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
        })
    })
    .await
    .map_err(|e| AdminError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
    .map_err(AdminError::from)
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
}
