//! Desktop notifications (through the system's notification service, Tauri's
//! notification plugin): new orders, and a lost link to the box, so a counter terminal
//! whose window is behind another one still tells the staff. The in-app toast and chime
//! stay; notifications are switchable per terminal (`notifications` in the remembered
//! settings, on by default).
//!
//! The link is announced once when it is lost and once when it is back, never on every
//! failed reconnect.

use tauri::{AppHandle, Runtime};
use tauri_plugin_notification::NotificationExt;

/// A notification's text, in the terminal's language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    pub title: String,
    pub body: String,
}

/// At most this many pickup numbers are listed in one notification; the rest are
/// counted.
const NUMBERS_LISTED: usize = 5;

/// New orders on the board, by pickup number.
pub fn new_orders(language: &str, numbers: &[i64]) -> Option<Announcement> {
    if numbers.is_empty() {
        return None;
    }
    let listed: Vec<String> = numbers
        .iter()
        .take(NUMBERS_LISTED)
        .map(|n| format!("#{n}"))
        .collect();
    let more = numbers.len().saturating_sub(NUMBERS_LISTED);
    Some(if language == "en" {
        let mut body = format!("Order {}", listed.join(", "));
        if more > 0 {
            body.push_str(&format!(" and {more} more"));
        }
        Announcement {
            title: if numbers.len() == 1 {
                "New order".into()
            } else {
                format!("{} new orders", numbers.len())
            },
            body,
        }
    } else {
        let mut body = format!("订单 {}", listed.join("、"));
        if more > 0 {
            body.push_str(&format!(" 等 {} 单", numbers.len()));
        }
        Announcement {
            title: if numbers.len() == 1 {
                "新订单".into()
            } else {
                format!("{} 个新订单", numbers.len())
            },
            body,
        }
    })
}

/// The event stream from the box broke (`why` is the reader's reason).
pub fn link_lost(language: &str, why: &str) -> Announcement {
    if language == "en" {
        Announcement {
            title: "Lost the link to the box".into(),
            body: format!("New orders will not show until it is back ({why})."),
        }
    } else {
        Announcement {
            title: "与食堂终端的连接中断".into(),
            body: format!("恢复之前不会显示新订单（{why}）。"),
        }
    }
}

/// The event stream is back after a loss.
pub fn link_back(language: &str) -> Announcement {
    if language == "en" {
        Announcement {
            title: "Link to the box is back".into(),
            body: "The board is up to date again.".into(),
        }
    } else {
        Announcement {
            title: "已重新连接食堂终端".into(),
            body: "看板已更新。".into(),
        }
    }
}

/// Raises `what` as a desktop notification. Where the desktop has no notification
/// service the plugin drops it (and the in-app toast is still there); the call and its
/// text are logged either way.
pub fn raise<R: Runtime>(app: &AppHandle<R>, what: &Announcement) {
    tracing::info!(title = %what.title, body = %what.body, "desktop notification");
    if let Err(e) = app
        .notification()
        .builder()
        .title(&what.title)
        .body(&what.body)
        .show()
    {
        tracing::warn!("desktop notification not shown: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_orders_name_their_pickup_numbers_in_the_terminals_language() {
        assert_eq!(new_orders("en", &[]), None);
        let one = new_orders("en", &[12]).unwrap();
        assert_eq!(
            (one.title.as_str(), one.body.as_str()),
            ("New order", "Order #12")
        );
        let zh = new_orders("zh", &[12, 13]).unwrap();
        assert_eq!(
            (zh.title.as_str(), zh.body.as_str()),
            ("2 个新订单", "订单 #12、#13")
        );
        let many: Vec<i64> = (1..=7).collect();
        let en = new_orders("en", &many).unwrap();
        assert_eq!(en.title, "7 new orders");
        assert_eq!(en.body, "Order #1, #2, #3, #4, #5 and 2 more");
    }

    #[test]
    fn a_lost_link_says_why() {
        let lost = link_lost("en", "connection refused");
        assert!(lost.body.contains("connection refused"), "{lost:?}");
        assert_ne!(link_lost("zh", "x").title, lost.title);
        assert_ne!(link_back("en").title, lost.title);
    }
}
