//! `UiError`: the one error type the web view sees. Every command returns
//! `Result<T, UiError>`; it serialises as `{kind, code, message}` so the page can pick a
//! translated sentence by `code` and fall back to the box's own `message`.

use serde::Serialize;

#[derive(Debug, thiserror::Error, Serialize, Clone, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum UiError {
    /// The box answered with an error body (`{error:{code,message}}`).
    #[error("{message} ({code})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// The box could not be reached (connection refused, timeout, bad address).
    #[error("cannot reach the box: {message}")]
    Unreachable { message: String },
    /// The box answered something that is not the API's shape.
    #[error("unexpected answer from the box: {message}")]
    Protocol { message: String },
    /// The user typed something the app refuses before asking the box.
    #[error("{message}")]
    Input { code: String, message: String },
    /// No box address or no login yet.
    #[error("not logged in")]
    NotLoggedIn,
    /// Reading or writing the remembered-box file failed.
    #[error("settings file: {message}")]
    Settings { message: String },
}

impl UiError {
    pub fn input(code: &str, message: impl Into<String>) -> Self {
        Self::Input {
            code: code.to_owned(),
            message: message.into(),
        }
    }

    /// The machine code, for tests and for the page's translations.
    pub fn code(&self) -> &str {
        match self {
            Self::Api { code, .. } | Self::Input { code, .. } => code,
            Self::Unreachable { .. } => "unreachable",
            Self::Protocol { .. } => "protocol",
            Self::NotLoggedIn => "not_logged_in",
            Self::Settings { .. } => "settings",
        }
    }
}

impl From<reqwest::Error> for UiError {
    fn from(e: reqwest::Error) -> Self {
        if e.is_decode() {
            Self::Protocol {
                message: e.to_string(),
            }
        } else {
            Self::Unreachable {
                message: e.to_string(),
            }
        }
    }
}
