//! The remembered box: a small JSON file in the app's config directory, so a terminal
//! starts where it left off. Passwords and tokens are never written.

use crate::error::UiError;
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const FILE_NAME: &str = "box.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remembered {
    /// `http://host:port` of the box.
    pub box_url: Option<String>,
    pub username: Option<String>,
    /// `zh` or `en`.
    #[serde(default = "default_language")]
    pub language: String,
    /// The demo switch: allow plain `http://` to a box on another computer (staff
    /// passwords and tokens then cross the LAN in the clear). Set by hand in this
    /// file, or with `CANTEEN_STAFF_INSECURE_HTTP=1`; never by the app.
    #[serde(default)]
    pub allow_plain_http: bool,
    /// Desktop notifications for new orders and a lost link (on unless switched off
    /// in the app).
    #[serde(default = "on")]
    pub notifications: bool,
}

impl Default for Remembered {
    fn default() -> Self {
        Self {
            box_url: None,
            username: None,
            language: default_language(),
            allow_plain_http: false,
            notifications: true,
        }
    }
}

fn on() -> bool {
    true
}

/// The campus CA certificate the terminal was given at set-up: `ca.pem` in the app's
/// config directory (beside this file).
pub const CA_FILE: &str = "ca.pem";

/// How this terminal trusts boxes: the campus CA from `$CANTEEN_STAFF_CA` or the config
/// directory's `ca.pem`, and the demo switch.
pub fn trust(dir: &Path, remembered: &Remembered) -> Result<crate::client::Trust, UiError> {
    let ca_path = std::env::var_os("CANTEEN_STAFF_CA")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| dir.join(CA_FILE));
    let ca_pem = match std::fs::read(&ca_path) {
        Ok(pem) => Some(pem),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(UiError::Settings {
                message: format!("{}: {e}", ca_path.display()),
            });
        }
    };
    Ok(crate::client::Trust {
        ca_pem,
        allow_plain_http: remembered.allow_plain_http
            || std::env::var("CANTEEN_STAFF_INSECURE_HTTP").is_ok_and(|v| v == "1"),
    })
}

fn default_language() -> String {
    "zh".into()
}

/// The remembered box; a missing or unreadable file means a first start.
pub fn load(dir: &Path) -> Remembered {
    std::fs::read(dir.join(FILE_NAME))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// Writes the file atomically (temporary file, then rename).
pub fn save(dir: &Path, remembered: &Remembered) -> Result<(), UiError> {
    let err = |e: std::io::Error| UiError::Settings {
        message: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    let json = serde_json::to_vec_pretty(remembered).map_err(|e| UiError::Settings {
        message: e.to_string(),
    })?;
    let tmp = dir.join(format!("{FILE_NAME}.tmp"));
    std::fs::write(&tmp, json).map_err(err)?;
    std::fs::rename(&tmp, dir.join(FILE_NAME)).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_box_across_starts() {
        let dir = tempfile::tempdir().unwrap();
        let first = load(dir.path());
        assert_eq!(first.box_url, None);
        assert_eq!(first.language, "zh");
        assert!(first.notifications);
        let r = Remembered {
            box_url: Some("http://127.0.0.1:8080".into()),
            username: Some("staff".into()),
            language: "en".into(),
            allow_plain_http: false,
            notifications: false,
        };
        save(&dir.path().join("nested"), &r).unwrap();
        assert_eq!(load(&dir.path().join("nested")), r);
        std::fs::write(dir.path().join(FILE_NAME), b"{not json").unwrap();
        assert_eq!(load(dir.path()).box_url, None);
        // A file from before notifications were switchable has them on.
        std::fs::write(dir.path().join(FILE_NAME), br#"{"language":"en"}"#).unwrap();
        assert!(load(dir.path()).notifications);
    }
}
