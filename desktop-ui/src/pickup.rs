//! What staff type (or a USB scanner types) into the hand-over field: a pickup number,
//! or the 64-hex-character token from the student's QR code. Checked here so a slip of
//! the finger is named plainly before the box is asked.

use crate::error::UiError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PickupInput {
    Number(u32),
    Token(String),
}

impl PickupInput {
    pub fn parse(input: &str) -> Result<Self, UiError> {
        let s = input.trim();
        if s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit()) {
            return Ok(Self::Token(s.to_ascii_lowercase()));
        }
        if !s.is_empty() && s.len() <= 6 && s.chars().all(|c| c.is_ascii_digit()) {
            if let Ok(n) = s.parse::<u32>() {
                if n > 0 {
                    return Ok(Self::Number(n));
                }
            }
        }
        Err(UiError::input(
            "invalid_pickup_code",
            "not a pickup number or a pickup QR code",
        ))
    }

    /// The `code` the box's hand-over takes.
    pub fn code(&self) -> String {
        match self {
            Self::Number(n) => n.to_string(),
            Self::Token(t) => t.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_tokens_are_told_apart() {
        assert_eq!(PickupInput::parse(" 17 ").unwrap(), PickupInput::Number(17));
        let token = "AB".repeat(32);
        assert_eq!(PickupInput::parse(&token).unwrap().code(), "ab".repeat(32));
        for bad in [
            "",
            "0",
            "12a",
            "1234567",
            &"ab".repeat(31),
            &"zz".repeat(32),
        ] {
            assert_eq!(
                PickupInput::parse(bad).unwrap_err().code(),
                "invalid_pickup_code",
                "{bad}"
            );
        }
    }
}
