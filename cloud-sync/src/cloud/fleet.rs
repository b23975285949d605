//! The fleet: every canteen an admin may see, its link state, what the box reports of
//! itself (events waiting and the oldest's age, clock offset, software and schema,
//! whether its documents have caught up with the cloud's), and the alerts that need
//! someone: a box not seen for a while during its opening hours (in its own time zone,
//! from its settings document), an outbox not draining, a clock off, and document
//! changes the cloud refused.

use super::admins::AdminAccount;
use super::auth::AdminError;
use super::server::Cloud;
use super::store::{NodeRow, NodeStatus};
use chrono::{Datelike, Timelike};
use crdt::DocKind;
use crdt::settings::CanteenSettings;
use serde::Serialize;
use std::time::Duration;

/// When the fleet raises an alert.
#[derive(Debug, Clone, Copy)]
pub struct AlertLimits {
    /// A box silent this long during its opening hours.
    pub silent: Duration,
    /// A box whose oldest waiting event is this old (its outbox is not draining).
    pub outbox: Duration,
    /// A box whose clock is this far off the cloud's.
    pub clock: Duration,
}

impl Default for AlertLimits {
    fn default() -> Self {
        Self {
            silent: Duration::from_secs(600),
            outbox: Duration::from_secs(300),
            clock: Duration::from_secs(120),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alert {
    /// `silent`, `outbox_stuck`, `clock_off` or `documents_refused`.
    pub code: &'static str,
    /// For `silent`: whole minutes since the box was last seen; for `outbox_stuck`:
    /// the age of the oldest waiting event in minutes; for `clock_off`: the offset in
    /// seconds (positive: the box is ahead).
    pub minutes: Option<i64>,
    /// For `documents_refused`: which document and why.
    pub detail: String,
}

impl Alert {
    /// The alert as a sentence, in 简体中文 or English.
    pub fn text(&self, zh: bool) -> String {
        let n = self.minutes.unwrap_or(0);
        match (self.code, zh) {
            ("silent", false) => format!("not seen for {n} min during opening hours"),
            ("silent", true) => format!("营业时间内已 {n} 分钟未联系"),
            ("outbox_stuck", false) => {
                format!("outbox not draining: oldest waiting event {n} min old")
            }
            ("outbox_stuck", true) => format!("待上传事件未减少：最早一条已等待 {n} 分钟"),
            ("clock_off", false) => format!("clock off by {n} s"),
            ("clock_off", true) => format!("时钟偏差 {n} 秒"),
            (_, false) => format!("document sync refused: {}", self.detail),
            (_, true) => format!("文档同步被拒绝：{}", self.detail),
        }
    }
}

/// Whether a box has applied the cloud's version of a document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DocState {
    pub doc: &'static str,
    /// The box's reported heads contain every change the cloud holds for it.
    pub applied: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct FleetRow {
    #[serde(flatten)]
    pub node: NodeRow,
    /// The protocol version of the box's latest connection (0: never connected).
    pub protocol: u16,
    /// The box's latest status (boxes of protocol version 3 and later).
    pub status: Option<NodeStatus>,
    /// Events waiting at the box, as it last reported.
    pub waiting_events: Option<u64>,
    /// The age of the box's oldest waiting event, in seconds, by the cloud's clock.
    pub oldest_waiting_s: Option<i64>,
    pub documents: Vec<DocState>,
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

/// The age at `now` (cloud clock) of the box's oldest waiting event, in seconds: the
/// box stamped it by its own clock, so its offset is taken off.
pub fn oldest_waiting_s(status: &NodeStatus, now: chrono::DateTime<chrono::Utc>) -> Option<i64> {
    if status.last_seq <= status.acked_seq {
        return None;
    }
    let at = chrono::DateTime::parse_from_rfc3339(status.oldest_waiting_at.as_deref()?).ok()?;
    let at_cloud_ms = at.timestamp_millis() - status.clock_offset_ms;
    Some(((now.timestamp_millis() - at_cloud_ms) / 1000).max(0))
}

/// Events waiting at the box: what its last status said, less what the cloud has
/// received since (a box that just reconnected reports its whole backlog, then sends
/// it within seconds).
pub fn waiting(status: &NodeStatus, cloud_acked: u64) -> u64 {
    status
        .last_seq
        .saturating_sub(status.acked_seq.max(cloud_acked))
}

/// The alerts of one canteen at `now`.
pub fn alerts(
    node: &NodeRow,
    status: Option<&NodeStatus>,
    settings: Option<&CanteenSettings>,
    refusals: &[(String, String)],
    now: chrono::DateTime<chrono::Utc>,
    limits: AlertLimits,
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
        if silent_s >= limits.silent.as_secs() as i64 {
            out.push(Alert {
                code: "silent",
                minutes: Some(silent_s / 60),
                detail: String::new(),
            });
        }
    }
    if let Some(status) = status {
        if waiting(status, node.acked_seq) > 0
            && let Some(age) = oldest_waiting_s(status, now)
            && age >= limits.outbox.as_secs() as i64
        {
            out.push(Alert {
                code: "outbox_stuck",
                minutes: Some(age / 60),
                detail: String::new(),
            });
        }
        if status.clock_offset_ms.unsigned_abs() >= limits.clock.as_millis() as u64 {
            out.push(Alert {
                code: "clock_off",
                minutes: Some(status.clock_offset_ms / 1000),
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

/// Every canteen `account` may see, with what its box reports and its alerts now.
pub async fn fleet(
    cloud: &Cloud,
    account: &AdminAccount,
    limits: AlertLimits,
) -> Result<Vec<FleetRow>, AdminError> {
    let nodes = super::admin::visible_nodes(cloud, account).await?;
    let (docs, store) = (cloud.docs.clone(), cloud.store.clone());
    super::admin::on_blocking_pool(move || -> anyhow::Result<Vec<FleetRow>> {
        let now = chrono::Utc::now();
        nodes
            .into_iter()
            .map(|node| {
                let settings = docs.settings(&node.node_id).ok();
                let refusals = docs.refusals(&node.node_id);
                let status = store.node_status(&node.node_id)?;
                let protocol = store.protocol(&node.node_id)?;
                let mut documents = Vec::new();
                if let Some(s) = &status {
                    for kind in [DocKind::Menu, DocKind::Settings] {
                        let Some(have) = s.docs.iter().find(|d| d.doc == kind.as_str()) else {
                            continue;
                        };
                        let target = docs.heads(&node.node_id, kind)?;
                        documents.push(DocState {
                            doc: kind.as_str(),
                            applied: docs.applied(&node.node_id, kind, &have.heads, &target)?,
                        });
                    }
                }
                let alerts = alerts(
                    &node,
                    status.as_ref(),
                    settings.as_ref(),
                    &refusals,
                    now,
                    limits,
                );
                Ok(FleetRow {
                    waiting_events: status.as_ref().map(|s| waiting(s, node.acked_seq)),
                    oldest_waiting_s: status
                        .as_ref()
                        .filter(|s| waiting(s, node.acked_seq) > 0)
                        .and_then(|s| oldest_waiting_s(s, now)),
                    node,
                    protocol,
                    status,
                    documents,
                    alerts,
                })
            })
            .collect()
    })
    .await?
    .map_err(AdminError::internal)
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

    #[test]
    fn a_stuck_outbox_and_a_clock_off_raise_alerts_judged_by_the_clouds_clock() {
        let now: chrono::DateTime<chrono::Utc> = "2026-12-04T04:30:00Z".parse().unwrap();
        let limits = AlertLimits::default();
        // The box's clock is 10 minutes ahead: its oldest waiting event, stamped 04:24
        // by that clock, was written at 04:14 by the cloud's, 16 minutes ago.
        let status = NodeStatus {
            received_at_ms: now.timestamp_millis(),
            clock_offset_ms: 600_000,
            software: "0.1.0".into(),
            schema: 9,
            last_seq: 50,
            acked_seq: 20,
            oldest_waiting_at: Some("2026-12-04T04:24:00Z".into()),
            docs: Vec::new(),
            protocol: 3,
        };
        assert_eq!(oldest_waiting_s(&status, now), Some(960));
        let raised = alerts(
            &node(true, now.timestamp()),
            Some(&status),
            None,
            &[],
            now,
            limits,
        );
        let codes: Vec<_> = raised.iter().map(|a| a.code).collect();
        assert_eq!(codes, ["outbox_stuck", "clock_off"]);
        assert_eq!(raised[1].text(false), "clock off by 600 s");
        // The cloud has received them since the status was sent: nothing is stuck.
        let mut received = node(true, now.timestamp());
        received.acked_seq = 50;
        let raised = alerts(&received, Some(&status), None, &[], now, limits);
        assert!(
            raised.iter().all(|a| a.code != "outbox_stuck"),
            "{raised:?}"
        );
        assert_eq!(waiting(&status, 50), 0);
        assert_eq!(waiting(&status, 30), 20);
        let drained = NodeStatus {
            acked_seq: 50,
            clock_offset_ms: -1_000,
            ..status
        };
        assert_eq!(oldest_waiting_s(&drained, now), None);
        assert!(
            alerts(
                &node(true, now.timestamp()),
                Some(&drained),
                None,
                &[],
                now,
                limits
            )
            .is_empty()
        );
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
        let ten_min = AlertLimits::default();
        let seen = lunch.timestamp() - 15 * 60;
        let raised = alerts(&node(false, seen), None, Some(&open), &[], lunch, ten_min);
        assert_eq!(raised.len(), 1);
        assert_eq!(
            raised[0].text(false),
            "not seen for 15 min during opening hours"
        );
        assert!(alerts(&node(true, seen), None, Some(&open), &[], lunch, ten_min).is_empty());
        let recent = lunch.timestamp() - 60;
        assert!(alerts(&node(false, recent), None, Some(&open), &[], lunch, ten_min).is_empty());
        // 03:00 in Shanghai: closed, so silence is expected.
        let night: chrono::DateTime<chrono::Utc> = "2026-12-03T19:00:00Z".parse().unwrap();
        assert!(alerts(&node(false, seen), None, Some(&open), &[], night, ten_min).is_empty());
        // Sunday is closed all day.
        let sunday: chrono::DateTime<chrono::Utc> = "2026-12-06T04:30:00Z".parse().unwrap();
        assert!(!open_at(&open, sunday));
        let refused = alerts(
            &node(true, seen),
            None,
            Some(&open),
            &[("menu".into(), "schema 9".into())],
            lunch,
            ten_min,
        );
        assert_eq!(refused[0].code, "documents_refused");
    }
}
