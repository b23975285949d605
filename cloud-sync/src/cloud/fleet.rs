//! The fleet: every canteen an admin may see, its link state, and the alerts that need
//! someone: a box not seen for a while during its opening hours (in its own time zone,
//! from its settings document), and document changes the cloud refused.

use super::admins::AdminAccount;
use super::auth::AdminError;
use super::server::Cloud;
use super::store::NodeRow;
use chrono::{Datelike, Timelike};
use crdt::settings::CanteenSettings;
use serde::Serialize;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alert {
    /// `silent` or `documents_refused`.
    pub code: &'static str,
    /// For `silent`: whole minutes since the box was last seen.
    pub minutes: Option<i64>,
    /// For `documents_refused`: which document and why.
    pub detail: String,
}

impl Alert {
    /// The alert as a sentence, in 简体中文 or English.
    pub fn text(&self, zh: bool) -> String {
        match (self.code, zh) {
            ("silent", false) => format!(
                "not seen for {} min during opening hours",
                self.minutes.unwrap_or(0)
            ),
            ("silent", true) => format!("营业时间内已 {} 分钟未联系", self.minutes.unwrap_or(0)),
            (_, false) => format!("document sync refused: {}", self.detail),
            (_, true) => format!("文档同步被拒绝：{}", self.detail),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct FleetRow {
    #[serde(flatten)]
    pub node: NodeRow,
    pub alerts: Vec<Alert>,
}

/// Is the canteen open at `now` by its weekly hours, in its own time zone?
pub fn open_at(settings: &CanteenSettings, now: chrono::DateTime<chrono::Utc>) -> bool {
    let tz: chrono_tz::Tz = settings.time_zone.parse().unwrap_or(chrono_tz::UTC);
    let local = now.with_timezone(&tz);
    let day = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        [local.weekday().num_days_from_monday() as usize];
    let hhmm = format!("{:02}:{:02}", local.hour(), local.minute());
    settings
        .hours
        .iter()
        .find(|h| h.day == day)
        .is_some_and(|h| !h.closed && h.open.as_str() <= hhmm.as_str() && hhmm < h.close)
}

/// The alerts of one canteen at `now`.
pub fn alerts(
    node: &NodeRow,
    settings: Option<&CanteenSettings>,
    refusals: &[(String, String)],
    now: chrono::DateTime<chrono::Utc>,
    silent_after: Duration,
) -> Vec<Alert> {
    let mut out = Vec::new();
    let last_seen = node
        .last_seen
        .as_deref()
        .and_then(|s| s.parse::<i64>().ok());
    if !node.connected
        && let Some(seen) = last_seen
        && settings.is_some_and(|s| open_at(s, now))
    {
        let silent_s = now.timestamp() - seen;
        if silent_s >= silent_after.as_secs() as i64 {
            out.push(Alert {
                code: "silent",
                minutes: Some(silent_s / 60),
                detail: String::new(),
            });
        }
    }
    for (doc, reason) in refusals {
        out.push(Alert {
            code: "documents_refused",
            minutes: None,
            detail: format!("{doc}: {reason}"),
        });
    }
    out
}

/// Every canteen `account` may see, with its alerts now.
pub async fn fleet(
    cloud: &Cloud,
    account: &AdminAccount,
    silent_after: Duration,
) -> Result<Vec<FleetRow>, AdminError> {
    let nodes = super::admin::visible_nodes(cloud, account).await?;
    let docs = cloud.docs.clone();
    super::admin::on_blocking_pool(move || {
        let now = chrono::Utc::now();
        nodes
            .into_iter()
            .map(|node| {
                let settings = docs.settings(&node.node_id).ok();
                let refusals = docs.refusals(&node.node_id);
                let alerts = alerts(&node, settings.as_ref(), &refusals, now, silent_after);
                FleetRow { node, alerts }
            })
            .collect()
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crdt::settings::DayHours;

    fn settings(open: &str, close: &str) -> CanteenSettings {
        CanteenSettings {
            hours: ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
                .iter()
                .map(|d| DayHours {
                    day: (*d).into(),
                    open: open.into(),
                    close: close.into(),
                    closed: *d == "sun",
                })
                .collect(),
            pickup_slots: Vec::new(),
            payment_modes: Vec::new(),
            unpaid_timeout_s: 900,
            announcement: String::new(),
            time_zone: "Asia/Shanghai".into(),
        }
    }

    fn node(connected: bool, last_seen: i64) -> NodeRow {
        NodeRow {
            node_id: "north".into(),
            acked_seq: 0,
            connected,
            last_seen: Some(last_seen.to_string()),
            incarnation: String::new(),
            timeline: 0,
        }
    }

    #[test]
    fn a_box_silent_during_its_own_opening_hours_raises_an_alert() {
        // Friday 2026-12-04 04:30 UTC is 12:30 in Shanghai.
        let lunch: chrono::DateTime<chrono::Utc> = "2026-12-04T04:30:00Z".parse().unwrap();
        let open = settings("10:30", "20:30");
        let ten_min = Duration::from_secs(600);
        let seen = lunch.timestamp() - 15 * 60;
        let raised = alerts(&node(false, seen), Some(&open), &[], lunch, ten_min);
        assert_eq!(raised.len(), 1);
        assert_eq!(
            raised[0].text(false),
            "not seen for 15 min during opening hours"
        );
        assert!(alerts(&node(true, seen), Some(&open), &[], lunch, ten_min).is_empty());
        let recent = lunch.timestamp() - 60;
        assert!(alerts(&node(false, recent), Some(&open), &[], lunch, ten_min).is_empty());
        // 03:00 in Shanghai: closed, so silence is expected.
        let night: chrono::DateTime<chrono::Utc> = "2026-12-03T19:00:00Z".parse().unwrap();
        assert!(alerts(&node(false, seen), Some(&open), &[], night, ten_min).is_empty());
        // Sunday is closed all day.
        let sunday: chrono::DateTime<chrono::Utc> = "2026-12-06T04:30:00Z".parse().unwrap();
        assert!(!open_at(&open, sunday));
        let refused = alerts(
            &node(true, seen),
            Some(&open),
            &[("menu".into(), "schema 9".into())],
            lunch,
            ten_min,
        );
        assert_eq!(refused[0].code, "documents_refused");
    }
}
