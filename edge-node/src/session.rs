//! Authentication: argon2id hashes for PINs and passwords, short-lived JWTs, and the
//! rate limits on logins and order placement.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use chrono::{DateTime, Utc};
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use uuid::Uuid;

pub(crate) use canteen_api::staff::Role;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: Uuid,
    pub role: Role,
    pub iat: i64,
    pub exp: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing or malformed bearer token")]
    Missing,
    #[error("the token is invalid")]
    Invalid,
    #[error("the session has expired; log in again")]
    Expired,
}

/// Issues and checks tokens (HS256 with the box's secret).
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl: chrono::Duration,
}

impl Tokens {
    pub fn new(secret: &[u8], ttl: chrono::Duration) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            ttl,
        }
    }

    pub fn issue(&self, sub: Uuid, role: Role, now: DateTime<Utc>) -> (String, DateTime<Utc>) {
        let exp = now + self.ttl;
        let claims = Claims {
            sub,
            role,
            iat: now.timestamp(),
            exp: exp.timestamp(),
        };
        let token = jsonwebtoken::encode(&Header::default(), &claims, &self.encoding)
            .expect("HS256 signing of a plain struct cannot fail");
        (token, exp)
    }

    /// Checks signature and expiry; expiry against the box's clock, not the host's.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Claims, AuthError> {
        let mut validation = Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map_err(|_| AuthError::Invalid)?;
        if data.claims.exp <= now.timestamp() {
            return Err(AuthError::Expired);
        }
        Ok(data.claims)
    }
}

/// argon2id cost. The production default follows OWASP's recommendation
/// (19 MiB, 2 passes); tests and the load generator may lower it.
#[derive(Debug, Clone, Copy)]
pub struct HashCost {
    pub memory_kib: u32,
    pub passes: u32,
}

pub(crate) fn hash_secret(secret: &str, cost: HashCost) -> String {
    let params =
        Params::new(cost.memory_kib.max(8), cost.passes.max(1), 1, None).unwrap_or_default();
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let mut salt = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut salt);
    let salt = SaltString::encode_b64(&salt).expect("16 bytes is a valid salt");
    argon
        .hash_password(secret.as_bytes(), &salt)
        .expect("argon2 hashing with valid params")
        .to_string()
}

/// Verifies against a stored PHC string (its own parameters are used).
pub(crate) fn verify_secret(phc: &str, secret: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    Argon2::default()
        .verify_password(secret.as_bytes(), &parsed)
        .is_ok()
}

/// A keyed rate limiter whose refusal says how long to wait.
pub struct Limiter<K: Hash + Eq + Clone> {
    inner: DefaultKeyedRateLimiter<K>,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    /// `per_minute` requests per minute, with bursts of `burst`.
    pub fn per_minute(per_minute: u32, burst: u32) -> Self {
        let rate = NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
        Self {
            inner: RateLimiter::keyed(Quota::per_minute(rate).allow_burst(burst)),
        }
    }

    /// `Ok` if allowed now; otherwise the whole seconds to wait.
    pub fn check(&self, key: &K) -> Result<(), u64> {
        self.inner.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }

    /// Forgets keys whose budget is full again, so the map stays small.
    pub fn prune(&self) {
        self.inner.retain_recent();
        self.inner.shrink_to_fit();
    }
}

/// Every rate limit of the box.
pub struct Limits {
    pub login_per_account: Limiter<String>,
    pub login_per_ip: Limiter<IpAddr>,
    pub orders_per_student: Limiter<Uuid>,
}

impl Limits {
    pub fn prune(&self) {
        self.login_per_account.prune();
        self.login_per_ip.prune();
        self.orders_per_student.prune();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_expire_on_the_box_clock() {
        let tokens = Tokens::new(b"k", chrono::Duration::minutes(10));
        let now = Utc::now();
        let id = Uuid::now_v7();
        let (token, _) = tokens.issue(id, Role::Staff, now);
        let claims = tokens.verify(&token, now).unwrap();
        assert_eq!((claims.sub, claims.role), (id, Role::Staff));
        assert!(matches!(
            tokens.verify(&token, now + chrono::Duration::minutes(11)),
            Err(AuthError::Expired)
        ));
        let other = Tokens::new(b"other", chrono::Duration::minutes(10));
        assert!(matches!(other.verify(&token, now), Err(AuthError::Invalid)));
    }

    #[test]
    fn argon2_hashes_verify() {
        let cost = HashCost {
            memory_kib: 64,
            passes: 1,
        };
        let h = hash_secret("1234", cost);
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_secret(&h, "1234"));
        assert!(!verify_secret(&h, "1235"));
    }

    #[test]
    fn limiter_refuses_with_a_wait() {
        let l = Limiter::per_minute(1, 2);
        assert!(l.check(&"a".to_string()).is_ok());
        assert!(l.check(&"a".to_string()).is_ok());
        let wait = l.check(&"a".to_string()).unwrap_err();
        assert!((1..=60).contains(&wait));
        assert!(l.check(&"b".to_string()).is_ok());
    }
}
