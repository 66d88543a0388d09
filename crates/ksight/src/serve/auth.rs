//! Basic auth against the web config's bcrypt hashes, bounded under a flood of guesses.
//!
//! A bcrypt check costs tens of ms of CPU (cost 10), so:
//! - successes are remembered (by a keyed hash of user, password and stored hash: an edited
//!   password no longer matches), so a scraper pays one check, not one per scrape;
//! - at most [`RUNNING`] checks run at once, off the async threads, and at most [`PENDING`]
//!   wait or run; past that a request gets 429 at once instead of a place in a queue;
//! - one client (an IPv4 address, an IPv6 /64) holds at most [`PER_PEER`] of those places,
//!   so a flood from one client cannot keep a scraper elsewhere out: a valid login waits
//!   behind at most `PENDING - 1` checks;
//! - an unknown user is checked against a configured hash of the highest cost and always
//!   refused, so the answer's timing does not tell which users exist.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::Mutex;

use super::web_config::WebConfig;

/// bcrypt checks running at once (ksight's two cores' worth: the collectors keep the rest).
pub const RUNNING: usize = 2;
/// Checks waiting or running, all clients together.
pub const PENDING: usize = 8;
/// Checks waiting or running for one client address.
pub const PER_PEER: usize = 2;
/// Successful credentials remembered; the set is emptied when it holds more.
const REMEMBERED: usize = 1024;

/// What a request's `Authorization` header earns it.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Denied,
    /// Too many checks pending: try again later (429).
    Busy,
}

pub struct Authenticator {
    seen: Mutex<HashSet<u64>>,
    keys: RandomState,
    checks: tokio::sync::Semaphore,
    /// Checks waiting or running, by client address.
    pending: Mutex<HashMap<IpAddr, usize>>,
}

impl Default for Authenticator {
    fn default() -> Self {
        Authenticator {
            seen: Mutex::new(HashSet::new()),
            keys: RandomState::new(),
            checks: tokio::sync::Semaphore::new(RUNNING),
            pending: Mutex::new(HashMap::new()),
        }
    }
}

impl Authenticator {
    /// Whether the `Authorization` header value from `peer` lets the request through.
    pub async fn check(
        &self,
        config: &WebConfig,
        authorization: Option<&str>,
        peer: IpAddr,
    ) -> Verdict {
        if config.users.is_empty() {
            return Verdict::Allowed;
        }
        let Some((user, password)) = authorization.and_then(basic_credentials) else {
            return Verdict::Denied;
        };
        // An unknown user costs the same check as a known one (its result is ignored).
        let (known, hash) = match config.users.get(&user) {
            Some(hash) => (true, hash.clone()),
            None => (false, dummy_hash(config)),
        };
        let key = self.keys.hash_one((&user, &password, &hash));
        if known && self.remembered(key) {
            return Verdict::Allowed;
        }
        let Some(_place) = Place::take(&self.pending, client(peer)) else {
            return Verdict::Busy;
        };
        let Ok(_permit) = self.checks.acquire().await else {
            return Verdict::Denied;
        };
        let verified =
            tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
                .await
                .unwrap_or(false);
        if !(known && verified) {
            return Verdict::Denied;
        }
        self.remember(key);
        Verdict::Allowed
    }

    fn remembered(&self, key: u64) -> bool {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.contains(&key)
    }

    fn remember(&self, key: u64) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() > REMEMBERED {
            seen.clear(); // bounded, whatever the number of users and passwords tried
        }
        seen.insert(key);
    }
}

/// The configured hash of the highest cost (users are not empty when this is called).
fn dummy_hash(config: &WebConfig) -> String {
    let cost = |h: &String| h.parse::<bcrypt::HashParts>().map_or(0, |p| p.get_cost());
    config
        .users
        .values()
        .max_by_key(|h| cost(h))
        .cloned()
        .unwrap_or_default()
}

/// Whose share a check takes: an IPv4 address (also when it arrives IPv4-mapped on a
/// dual-stack socket), or an IPv6 /64, the block one host usually holds whole.
fn client(peer: IpAddr) -> IpAddr {
    match peer.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(prefix.into())
        }
        v4 => v4,
    }
}

/// A place among the pending checks, given back on drop (also when the client goes away).
struct Place<'a> {
    pending: &'a Mutex<HashMap<IpAddr, usize>>,
    peer: IpAddr,
}

impl<'a> Place<'a> {
    fn take(pending: &'a Mutex<HashMap<IpAddr, usize>>, peer: IpAddr) -> Option<Place<'a>> {
        let mut map = pending.lock().unwrap_or_else(|p| p.into_inner());
        let total: usize = map.values().sum();
        let mine = map.get(&peer).copied().unwrap_or(0);
        if total >= PENDING || mine >= PER_PEER {
            return None;
        }
        map.insert(peer, mine + 1);
        Some(Place { pending, peer })
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        let mut map = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.peer);
            }
        }
    }
}

/// `Basic base64(user:password)`.
fn basic_credentials(value: &str) -> Option<(String, String)> {
    use base64::Engine as _;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials() {
        assert_eq!(
            basic_credentials("Basic dXNlcjpwYXNz"),
            Some(("user".into(), "pass".into()))
        );
        assert_eq!(basic_credentials("Bearer x"), None);
        assert_eq!(basic_credentials("Basic !!!"), None);
    }

    #[test]
    fn places_are_bounded_in_all_and_per_peer() {
        let pending = Mutex::new(HashMap::new());
        let a: IpAddr = [10, 0, 0, 1].into();
        let held: Vec<_> = (0..PER_PEER)
            .map(|_| Place::take(&pending, a).expect("room"))
            .collect();
        assert!(Place::take(&pending, a).is_none(), "one peer's share");
        let others: Vec<_> = (0..PENDING - PER_PEER)
            .map(|n| Place::take(&pending, [10, 0, 1, n as u8].into()).expect("room"))
            .collect();
        assert!(
            Place::take(&pending, [10, 0, 2, 1].into()).is_none(),
            "all full"
        );
        drop(held);
        assert!(Place::take(&pending, a).is_some(), "given back");
        drop(others);
        assert!(pending.lock().expect("lock").is_empty());
    }

    #[test]
    fn one_share_per_ipv4_address_or_ipv6_64() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("address");
        assert_eq!(client(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
        assert_eq!(client(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_ne!(client(ip("2001:db8:1:3::1")), client(ip("2001:db8:1:2::1")));
    }

    #[test]
    fn the_dummy_is_the_costliest_hash() {
        let mut config = WebConfig::plain();
        let cheap = bcrypt::hash("x", 4).expect("hash");
        let dear = bcrypt::hash("x", 6).expect("hash");
        config.users.insert("a".into(), cheap);
        config.users.insert("b".into(), dear.clone());
        assert_eq!(dummy_hash(&config), dear);
    }
}
