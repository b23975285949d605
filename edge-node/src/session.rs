//! Authentication: argon2id hashes for PINs and passwords, short-lived JWTs, and the
//! rate limits on logins and order placement.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use chrono::{DateTime, Utc};
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};
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

/// The largest argon2id costs accepted in a hash from elsewhere (the campus cloud):
/// checking a PIN must not let a hostile hash allocate gigabytes or spin for seconds.
pub(crate) const PHC_MEMORY_KIB_MAX: u32 = 64 * 1024;
pub(crate) const PHC_PASSES_MAX: u32 = 8;
pub(crate) const PHC_LANES_MAX: u32 = 4;

/// Checks a PHC string from elsewhere: argon2id, version 0x13, costs within bounds.
pub(crate) fn check_phc(phc: &str) -> Result<(), String> {
    let parsed = PasswordHash::new(phc).map_err(|e| format!("not a PHC hash: {e}"))?;
    if parsed.algorithm.as_str() != "argon2id" {
        return Err(format!(
            "{} hashes are not accepted; argon2id only",
            parsed.algorithm
        ));
    }
    if parsed.version != Some(0x13) {
        return Err("argon2id version 19 only".into());
    }
    let params = Params::try_from(&parsed).map_err(|e| format!("argon2id parameters: {e}"))?;
    if params.m_cost() > PHC_MEMORY_KIB_MAX
        || params.t_cost() > PHC_PASSES_MAX
        || params.p_cost() > PHC_LANES_MAX
    {
        return Err(format!(
            "argon2id costs m={} t={} p={} exceed m={PHC_MEMORY_KIB_MAX} t={PHC_PASSES_MAX} p={PHC_LANES_MAX}",
            params.m_cost(),
            params.t_cost(),
            params.p_cost()
        ));
    }
    if parsed.hash.is_none() || parsed.salt.is_none() {
        return Err("the hash has no salt or output".into());
    }
    Ok(())
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
            whole_seconds(not_until.wait_time_from(DefaultClock::default().now()))
        })
    }

    /// Forgets keys whose budget is full again, so the map stays small.
    pub fn prune(&self) {
        self.inner.retain_recent();
        self.inner.shrink_to_fit();
    }
}

/// Which accounts a login is checked against. Students and staff have separate limiter
/// spaces: failures against a student number never slow down a staff login of the same
/// name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LoginSpace {
    Student,
    Staff,
}

impl LoginSpace {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Student => "student",
            Self::Staff => "staff",
        }
    }
}

/// The network an address belongs to, for limits that must hold across its
/// addresses: an IPv4 address itself, or the /64 of an IPv6 address (one LAN client
/// can use every address of its /64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum NetKey {
    V4(u32),
    V6Prefix(u64),
}

impl NetKey {
    pub(crate) fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self::V4(u32::from(v4)),
            IpAddr::V6(v6) => Self::V6Prefix((u128::from(v6) >> 64) as u64),
        }
    }
}

/// Back-off after failed logins, for the login guard.
#[derive(Debug, Clone, Copy)]
pub struct BackoffPolicy {
    /// Failures allowed before any wait.
    pub free_failures: u32,
    /// The first wait; each further failure doubles it.
    pub base: Duration,
    /// The longest wait.
    pub max: Duration,
    /// Failures are forgotten after this long without one.
    pub forget_after: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self {
            free_failures: 3,
            base: Duration::from_secs(2),
            max: Duration::from_secs(15 * 60),
            forget_after: Duration::from_secs(24 * 3600),
        }
    }
}

impl BackoffPolicy {
    /// The wait after `failures` consecutive failures.
    pub fn wait_after(&self, failures: u32) -> Duration {
        let Some(over) = failures.checked_sub(self.free_failures) else {
            return Duration::ZERO;
        };
        if over == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32.checked_shl(over - 1).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }
}

/// The network an account's failures are remembered by, to tell an attacker moving
/// between addresses from the owner on their own network: an IPv4 /24 or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum FailNet {
    V4(u32),
    V6(u64),
}

impl FailNet {
    fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self::V4(u32::from(v4) >> 8),
            IpAddr::V6(v6) => Self::V6((u128::from(v6) >> 64) as u64),
        }
    }
}

#[derive(Debug, Clone)]
struct Failures {
    count: u32,
    last: Instant,
    until: Instant,
    /// For accounts: the networks failures came from (at most a few are kept).
    nets: Vec<FailNet>,
}

impl Failures {
    /// The count, less one for every quiet hour since the last failure (a phone that
    /// mistypes now and then never climbs the back-off).
    fn decayed(&self, now: Instant) -> u32 {
        let quiet_hours = now.duration_since(self.last).as_secs() / 3600;
        self.count
            .saturating_sub(u32::try_from(quiet_hours).unwrap_or(u32::MAX))
    }
}

/// At most this many entries are tracked per map; beyond it the quietest are
/// forgotten first (an attacker cannot grow the box's memory).
const TRACKED_MAX: usize = 100_000;
/// A network's addresses together may send this many times one address's login rate
/// (an IPv6 /64 may be a whole LAN segment: wide, it only stops one host from
/// rotating addresses to multiply its rate).
const NETWORK_RATE_FACTOR: u32 = 16;
/// Logins in flight at once from one address: a burst cannot have more guesses
/// checked before their failures count (a few, for students behind one NAT address).
const ADDRESS_IN_FLIGHT_MAX: usize = 4;
/// Logins in flight at once from one network (an IPv6 /64).
const NETWORK_IN_FLIGHT_MAX: usize = 32;
/// An account's back-off spares a clean address only while failures against the
/// account came from fewer networks than this, and none from the address's own (an
/// attacker moving between addresses or networks gets at most this many extra tries).
const ACCOUNT_NETWORKS_SPARED: usize = 3;
/// An address that logged in to an account is trusted for it this long: the account's
/// back-off never applies to it (the owner's own phone).
const TRUST_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

/// Why a login was refused before its secret was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginRefusal {
    /// The address has a login in flight already (or its network too many).
    InFlight,
    /// The address sent too many attempts this minute.
    SourceRate,
    /// The address's network sent too many attempts this minute.
    NetworkRate,
    /// The address failed recently and must wait.
    SourceBackoff,
    /// The account failed recently and this address may not skip its wait.
    AccountBackoff,
}

impl LoginRefusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InFlight => "in_flight",
            Self::SourceRate => "source_rate",
            Self::NetworkRate => "network_rate",
            Self::SourceBackoff => "source_backoff",
            Self::AccountBackoff => "account_backoff",
        }
    }
}

/// Guards the login endpoints.
///
/// - A few logins in flight per address and per network, so a burst cannot pass the
///   checks before its failures are counted.
/// - A rate limit per address and a wider one per network.
/// - An exponential back-off per address after its failures.
/// - An exponential back-off per account after its failures, which spares an address
///   that has logged in to that account before, and an address that has not failed
///   itself on a network (IPv4 /24, IPv6 /64) no failure against the account came
///   from, while those came from only a few networks: an attacker guessing someone's
///   PIN slows down their own guesses (from any address of theirs), not the owner on
///   their own phone or network.
///
/// A correct login clears nothing (an attacker cannot reset their back-off by logging
/// in to their own account between guesses); failures fade by one per quiet hour and
/// are forgotten after a quiet day.
pub struct LoginGuard {
    policy: BackoffPolicy,
    address_rate: Limiter<(LoginSpace, IpAddr)>,
    network_rate: Limiter<(LoginSpace, NetKey)>,
    addresses: std::sync::Mutex<HashMap<(LoginSpace, IpAddr), Failures>>,
    accounts: std::sync::Mutex<HashMap<(LoginSpace, String), Failures>>,
    trusted: std::sync::Mutex<HashMap<(LoginSpace, String, IpAddr), Instant>>,
    in_flight: std::sync::Mutex<InFlight>,
}

#[derive(Default)]
struct InFlight {
    addresses: HashMap<(LoginSpace, IpAddr), usize>,
    networks: HashMap<(LoginSpace, NetKey), usize>,
}

fn release<K: Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn remaining(entry: Option<&Failures>, now: Instant) -> Option<Duration> {
    entry
        .map(|f| f.until.saturating_duration_since(now))
        .filter(|w| !w.is_zero())
}

/// Keeps `map` below [`TRACKED_MAX`] before `key` is added: forgets entries older than
/// `keep`, then the oldest.
fn make_room<K: Hash + Eq + Clone, V>(
    map: &mut HashMap<K, V>,
    key: &K,
    keep: Duration,
    now: Instant,
    at: impl Fn(&V) -> Instant,
) {
    if map.len() >= TRACKED_MAX && !map.contains_key(key) {
        map.retain(|_, v| now.duration_since(at(v)) < keep);
        if map.len() >= TRACKED_MAX
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, v)| at(v))
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
    }
}

fn note_failure<K: Hash + Eq + Clone>(
    map: &mut HashMap<K, Failures>,
    key: K,
    net: Option<FailNet>,
    policy: &BackoffPolicy,
    now: Instant,
) {
    make_room(map, &key, policy.forget_after, now, |f| f.last);
    let f = map.entry(key).or_insert(Failures {
        count: 0,
        last: now,
        until: now,
        nets: Vec::new(),
    });
    if now.duration_since(f.last) >= policy.forget_after {
        f.count = 0;
        f.nets.clear();
    }
    f.count = f.decayed(now).saturating_add(1);
    f.last = now;
    f.until = now + policy.wait_after(f.count);
    if let Some(net) = net
        && !f.nets.contains(&net)
        && f.nets.len() <= ACCOUNT_NETWORKS_SPARED
    {
        f.nets.push(net);
    }
}

/// A login that passed the guard: report how it ended. Dropping it without a verdict
/// (an internal error) counts as neither.
pub struct LoginAttempt<'a> {
    guard: &'a LoginGuard,
    space: LoginSpace,
    account: String,
    ip: IpAddr,
}

impl LoginAttempt<'_> {
    /// A wrong secret (or an unknown account).
    pub fn failed(self) {
        let g = self.guard;
        let now = Instant::now();
        note_failure(
            &mut lock(&g.addresses),
            (self.space, self.ip),
            None,
            &g.policy,
            now,
        );
        note_failure(
            &mut lock(&g.accounts),
            (self.space, self.account.clone()),
            Some(FailNet::of(self.ip)),
            &g.policy,
            now,
        );
    }

    /// A correct login: the address is trusted for the account from now on.
    pub fn succeeded(self) {
        let now = Instant::now();
        let mut trusted = lock(&self.guard.trusted);
        let key = (self.space, self.account.clone(), self.ip);
        make_room(&mut trusted, &key, TRUST_FOR, now, |at| *at);
        trusted.insert(key, now);
    }
}

impl Drop for LoginAttempt<'_> {
    fn drop(&mut self) {
        let mut in_flight = lock(&self.guard.in_flight);
        release(&mut in_flight.addresses, &(self.space, self.ip));
        release(&mut in_flight.networks, &(self.space, NetKey::of(self.ip)));
    }
}

impl LoginGuard {
    pub fn new(per_minute_per_address: u32, policy: BackoffPolicy) -> Self {
        let per_network = per_minute_per_address.saturating_mul(NETWORK_RATE_FACTOR);
        Self {
            policy,
            address_rate: Limiter::per_minute(per_minute_per_address, per_minute_per_address),
            network_rate: Limiter::per_minute(per_network, per_network),
            addresses: Default::default(),
            accounts: Default::default(),
            trusted: Default::default(),
            in_flight: Default::default(),
        }
    }

    /// May this attempt go ahead? Then the attempt, to report its verdict on;
    /// otherwise why not and the seconds to wait.
    pub fn check(
        &self,
        space: LoginSpace,
        account: &str,
        ip: IpAddr,
    ) -> Result<LoginAttempt<'_>, (LoginRefusal, u64)> {
        let ip = ip.to_canonical();
        let net = NetKey::of(ip);
        let now = Instant::now();
        let recent = |f: &Failures| now.duration_since(f.last) < self.policy.forget_after;
        // Held while checking, so two requests of one address cannot both pass.
        let mut in_flight = lock(&self.in_flight);
        if in_flight.addresses.get(&(space, ip)).copied().unwrap_or(0) >= ADDRESS_IN_FLIGHT_MAX
            || in_flight.networks.get(&(space, net)).copied().unwrap_or(0) >= NETWORK_IN_FLIGHT_MAX
        {
            return Err((LoginRefusal::InFlight, 1));
        }
        let address = lock(&self.addresses).get(&(space, ip)).cloned();
        if let Some(wait) = remaining(address.as_ref(), now) {
            return Err((LoginRefusal::SourceBackoff, whole_seconds(wait)));
        }
        let address_failed = address.is_some_and(|f| recent(&f) && f.decayed(now) > 0);
        let trusted = lock(&self.trusted)
            .get(&(space, account.to_owned(), ip))
            .is_some_and(|at| now.duration_since(*at) < TRUST_FOR);
        {
            let accounts = lock(&self.accounts);
            let entry = accounts.get(&(space, account.to_owned()));
            let from_elsewhere = entry.is_none_or(|f| {
                !recent(f)
                    || (!f.nets.contains(&FailNet::of(ip))
                        && f.nets.len() < ACCOUNT_NETWORKS_SPARED)
            });
            let spared = trusted || (!address_failed && from_elsewhere);
            if !spared && let Some(wait) = remaining(entry, now) {
                return Err((LoginRefusal::AccountBackoff, whole_seconds(wait)));
            }
        }
        // The wide limit first: a refused request from a new address adds no key.
        self.network_rate
            .check(&(space, net))
            .map_err(|wait| (LoginRefusal::NetworkRate, wait))?;
        self.address_rate
            .check(&(space, ip))
            .map_err(|wait| (LoginRefusal::SourceRate, wait))?;
        *in_flight.addresses.entry((space, ip)).or_insert(0) += 1;
        *in_flight.networks.entry((space, net)).or_insert(0) += 1;
        Ok(LoginAttempt {
            guard: self,
            space,
            account: account.to_owned(),
            ip,
        })
    }

    /// Accounts of `space` whose failures make failing addresses wait right now.
    pub fn accounts_backing_off(&self, space: LoginSpace) -> usize {
        let now = Instant::now();
        lock(&self.accounts)
            .iter()
            .filter(|((s, _), f)| *s == space && f.until > now)
            .count()
    }

    /// Forgets quiet entries, so the maps stay small.
    pub fn prune(&self) {
        let now = Instant::now();
        let forget = self.policy.forget_after;
        lock(&self.accounts).retain(|_, f| now.duration_since(f.last) < forget);
        lock(&self.addresses).retain(|_, f| now.duration_since(f.last) < forget);
        lock(&self.trusted).retain(|_, at| now.duration_since(*at) < TRUST_FOR);
        self.address_rate.prune();
        self.network_rate.prune();
    }
}

fn whole_seconds(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

/// Places with a cap in all and one per key, so one holder cannot take every place:
/// event streams per account (a pool for students, one for staff, so students cannot
/// starve the kitchen displays) and HTTP connections per address.
pub struct KeyedPool<K: Hash + Eq + Copy> {
    inner: std::sync::Arc<KeyedPoolInner<K>>,
}

struct KeyedPoolInner<K> {
    total: std::sync::Arc<tokio::sync::Semaphore>,
    per_key: usize,
    open: std::sync::Mutex<HashMap<K, usize>>,
}

/// Why a place was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolRefusal {
    /// Every place is taken.
    Full,
    /// This key holds its share (the share).
    KeyFull(usize),
}

/// Held while the place is used; dropping it gives the place back.
pub struct PoolPermit<K: Hash + Eq + Copy> {
    pool: std::sync::Arc<KeyedPoolInner<K>>,
    key: K,
    _total: tokio::sync::OwnedSemaphorePermit,
}

impl<K: Hash + Eq + Copy> KeyedPool<K> {
    pub fn new(total: usize, per_key: usize) -> Self {
        Self {
            inner: std::sync::Arc::new(KeyedPoolInner {
                total: std::sync::Arc::new(tokio::sync::Semaphore::new(total)),
                per_key: per_key.max(1),
                open: Default::default(),
            }),
        }
    }

    pub fn open(&self, key: K) -> Result<PoolPermit<K>, PoolRefusal> {
        let mut open = lock(&self.inner.open);
        let mine = open.get(&key).copied().unwrap_or(0);
        if mine >= self.inner.per_key {
            return Err(PoolRefusal::KeyFull(self.inner.per_key));
        }
        let total = self
            .inner
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| PoolRefusal::Full)?;
        open.insert(key, mine + 1);
        Ok(PoolPermit {
            pool: self.inner.clone(),
            key,
            _total: total,
        })
    }
}

impl<K: Hash + Eq + Copy> Drop for PoolPermit<K> {
    fn drop(&mut self) {
        release(&mut lock(&self.pool.open), &self.key);
    }
}

/// Open event streams of one kind of account, capped per account.
pub(crate) type StreamPool = KeyedPool<Uuid>;

/// Every rate limit of the box.
pub struct Limits {
    pub login: LoginGuard,
    pub orders_per_student: Limiter<Uuid>,
}

impl Limits {
    pub fn prune(&self) {
        self.login.prune();
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

    /// A burst cannot have more than a few logins of one address checked before their
    /// failures count; a finished attempt gives its place back.
    #[test]
    fn a_few_logins_per_address_are_in_flight_at_once() {
        let guard = LoginGuard::new(1000, BackoffPolicy::default());
        let ip: IpAddr = "192.168.3.3".parse().unwrap();
        let held: Vec<_> = (0..ADDRESS_IN_FLIGHT_MAX)
            .map(|_| guard.check(LoginSpace::Student, "2024001", ip).unwrap())
            .collect();
        let refused = guard.check(LoginSpace::Student, "2024001", ip).err();
        assert_eq!(refused.map(|(why, _)| why), Some(LoginRefusal::InFlight));
        // Another address is not held up.
        let other: IpAddr = "192.168.3.4".parse().unwrap();
        assert!(guard.check(LoginSpace::Student, "2024001", other).is_ok());
        drop(held);
        assert!(guard.check(LoginSpace::Student, "2024001", ip).is_ok());
    }

    #[test]
    fn hashes_from_elsewhere_are_argon2id_within_bounds() {
        let cost = HashCost {
            memory_kib: 64,
            passes: 1,
        };
        assert_eq!(check_phc(&hash_secret("135790", cost)), Ok(()));
        let huge = "$argon2id$v=19$m=4194304,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA";
        assert!(check_phc(huge).unwrap_err().contains("exceed"));
        let argon2i =
            "$argon2i$v=19$m=64,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA";
        assert!(check_phc(argon2i).unwrap_err().contains("argon2id only"));
        assert!(check_phc("$2b$12$abcdefghijklmnopqrstuv").is_err());
        assert!(check_phc("plain").is_err());
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
