//! Campus-card payments, the pure part: the webhook's signature and what a notice must
//! hold. (Recording payments is the store's; applying one is a use case in `ops`.)

use hmac::{Hmac, Mac};

/// Longest campus-card transaction id accepted.
pub const TXN_ID_MAX: usize = 128;

/// Is `id` an acceptable campus-card transaction id?
pub fn transaction_id_ok(id: &str) -> bool {
    !id.is_empty() && id.len() <= TXN_ID_MAX
}

/// Checks the webhook's signature: lowercase hex HMAC-SHA256 of the raw body, with an
/// optional `sha256=` prefix. Constant-time comparison.
pub fn signature_ok(secret: &[u8], body: &[u8], header: &str) -> bool {
    let hex_part = header
        .trim()
        .strip_prefix("sha256=")
        .unwrap_or(header.trim());
    let Ok(given) = hex::decode(hex_part) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

/// Signs a body the way the campus-card system does (for tests and the demo tool).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231, test case 2: a known answer, not the code checking itself.
    #[test]
    fn the_signature_is_hmac_sha256_by_rfc_4231() {
        let expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        assert_eq!(sign(b"Jefe", b"what do ya want for nothing?"), expected);
        assert!(signature_ok(
            b"Jefe",
            b"what do ya want for nothing?",
            expected
        ));
        assert!(signature_ok(
            b"Jefe",
            b"what do ya want for nothing?",
            &expected.to_uppercase()
        ));
    }

    #[test]
    fn signatures_verify_only_for_the_exact_body_and_key() {
        let sig = sign(b"secret", b"{\"a\":1}");
        assert!(signature_ok(b"secret", b"{\"a\":1}", &sig));
        assert!(signature_ok(
            b"secret",
            b"{\"a\":1}",
            &format!("sha256={sig}")
        ));
        assert!(!signature_ok(b"secret", b"{\"a\":2}", &sig));
        assert!(!signature_ok(b"other", b"{\"a\":1}", &sig));
        assert!(!signature_ok(b"secret", b"{\"a\":1}", "not hex"));
    }
}
