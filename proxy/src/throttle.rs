//! Failed proxy authentication, per peer address: wrong credentials are
//! answered more and more slowly, and their audit records are coalesced.
//!
//! Without it a local process could try thousands of tokens a second and
//! write an audit line for each, until the disk is full. With it:
//!
//! - **Backoff.** The first [`FREE_FAILURES`] wrong credentials in a row
//!   from one address are answered at once. After that, a request carrying
//!   credentials from that address is looked at only once a delay has
//!   passed since its last failure: [`FIRST_DELAY`], doubling with each
//!   further failure, never more than [`MAX_DELAY`]. A correct credential
//!   resets the address.
//! - **Coalesced records.** A peer's first failure is written to the audit
//!   log at once; later ones at most once per [`RECORD_INTERVAL`], as one
//!   record whose `attempts` says how many failures it stands for (it is
//!   the last of them: its request id, method, host and time). Counts never
//!   get lost: what is pending is written when the interval is over, when
//!   the peer succeeds, when it is forgotten, and at shutdown.
//! - **Bounded memory.** At most [`MAX_PEERS`] addresses are tracked; an
//!   address with no failure for [`FORGET_AFTER`] is forgotten. While the
//!   table is full of live addresses, new ones share one overflow entry,
//!   so a flood of addresses is throttled (and recorded) as one.
//!
//! Why a delay and never a refusal: every local agent reaches airlock from
//! the same loopback address, so refusing an address's credentials unseen
//! would let any local process lock every agent out; and refusing wrong
//! ones quickly while letting right ones through would tell a guesser at
//! full speed which guesses are wrong. Instead a credential from an address
//! in backoff waits out the delay (bounded by [`MAX_DELAY`]) and is then
//! checked as usual: right ones pass, wrong ones get the usual `407
//! unknown_tenant` (`401` on the action API). A guesser gets one answer per
//! delay per connection it holds open; a correct agent on the same address
//! is slowed by at most [`MAX_DELAY`], never refused. A request without
//! credentials (the challenge git and curl start with) is never delayed
//! and never counted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use airlock_policy::inject::basic_credentials;
use airlock_policy::{AuthError, Policy, TenantId};

use crate::audit::{AuditLog, Outcome, Record};

/// Wrong credentials in a row an address may send before it is slowed.
pub(crate) const FREE_FAILURES: u32 = 5;
/// The delay after the first failure past [`FREE_FAILURES`]; it doubles
/// with each further one.
pub(crate) const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest delay, and so the longest a request is held.
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(3);
/// At most one audit record per address per interval, after its first.
pub(crate) const RECORD_INTERVAL: Duration = Duration::from_secs(10);
/// An address with no failure for this long is forgotten.
pub(crate) const FORGET_AFTER: Duration = Duration::from_secs(60);
/// Addresses tracked at most (each entry is under 1 KiB: the record it
/// keeps has a host of at most 253 bytes and a method cut to
/// [`MAX_METHOD`]).
pub(crate) const MAX_PEERS: usize = 4096;
/// The longest method kept in a pending record (a method is a token of any
/// length, and a record waits in memory for its interval).
pub(crate) const MAX_METHOD: usize = 32;
/// The longest host kept in a pending unauthenticated record (a CONNECT
/// target refused as malformed may be anything up to the head limit).
pub(crate) const MAX_HOST: usize = 255;

/// A table's lock; a poisoned one (a panic mid-update) still holds usable
/// counts.
fn lock(table: &Mutex<Throttle<Record>>) -> std::sync::MutexGuard<'_, Throttle<Record>> {
    table.lock().unwrap_or_else(|p| p.into_inner())
}

/// Cuts `s` to at most `max` bytes, at a character boundary.
fn clip(s: &mut String, max: usize) {
    let cut = (0..=max.min(s.len())).rev().find(|&i| s.is_char_boundary(i));
    s.truncate(cut.unwrap_or(0));
}

/// How often pending counts are looked at (see [`AuthThrottle::flush_due`]).
pub(crate) const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// How long a peer with `failures` wrong credentials in a row waits.
fn delay(failures: u32) -> Duration {
    let Some(past) = failures.checked_sub(FREE_FAILURES + 1) else { return Duration::ZERO };
    FIRST_DELAY.checked_mul(1 << past.min(16)).map_or(MAX_DELAY, |d| d.min(MAX_DELAY))
}

/// Whose failures an entry counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Key {
    Peer(IpAddr),
    /// Every address that arrived while the table was full.
    Overflow,
}

/// One address's failures. `T` is what a record is made from (the last
/// failure's audit record).
#[derive(Debug)]
struct Entry<T> {
    /// Wrong credentials in a row.
    failures: u32,
    last_failure: Instant,
    /// Failures not yet in a record, and the last of them.
    unreported: u64,
    latest: Option<T>,
    /// When the last record was written.
    last_record: Option<Instant>,
}

impl<T> Entry<T> {
    fn new(now: Instant) -> Self {
        Entry { failures: 0, last_failure: now, unreported: 0, latest: None, last_record: None }
    }

    /// When a credential from this address may next be looked at.
    fn not_before(&self) -> Instant {
        self.last_failure + delay(self.failures)
    }

    /// The pending count and the last failure, for a record.
    fn take(&mut self, now: Instant) -> Option<Due<T>> {
        let latest = self.latest.take()?;
        let attempts = std::mem::take(&mut self.unreported);
        self.last_record = Some(now);
        Some(Due { attempts, latest })
    }

    fn expired(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last_failure) >= FORGET_AFTER
    }
}

/// A record to write: the last failure, standing for `attempts` failures.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Due<T> {
    pub(crate) attempts: u64,
    pub(crate) latest: T,
}

/// The per-address state, with time passed in (so it can be tested
/// without waiting).
#[derive(Debug)]
pub(crate) struct Throttle<T> {
    entries: HashMap<Key, Entry<T>>,
    /// Addresses in `entries` (the overflow entry is not one).
    peers: usize,
    capacity: usize,
    last_sweep: Option<Instant>,
}

impl<T> Throttle<T> {
    pub(crate) fn new(capacity: usize) -> Self {
        Throttle { entries: HashMap::new(), peers: 0, capacity, last_sweep: None }
    }

    /// The entry counting `ip`'s failures, if one would.
    fn key(&self, ip: IpAddr) -> Key {
        let key = Key::Peer(ip);
        if self.entries.contains_key(&key) || self.peers < self.capacity { key } else { Key::Overflow }
    }

    /// How long a request with credentials from `ip` must wait before they
    /// are looked at. Never more than [`MAX_DELAY`].
    pub(crate) fn wait(&self, ip: IpAddr, now: Instant) -> Duration {
        self.entries.get(&self.key(ip)).map_or(Duration::ZERO, |e| e.not_before().saturating_duration_since(now))
    }

    /// Counts a failure from `ip`; `record` is its audit record. Returns the
    /// records to write now: this address's, if one is due, and those of
    /// addresses forgotten to make room.
    pub(crate) fn fail(&mut self, ip: IpAddr, now: Instant, record: T) -> Vec<Due<T>> {
        let mut due = Vec::new();
        if !self.entries.contains_key(&Key::Peer(ip)) && self.peers >= self.capacity {
            due = self.sweep(now);
        }
        let key = self.key(ip);
        if matches!(key, Key::Peer(_)) && !self.entries.contains_key(&key) {
            self.peers += 1;
        }
        let entry = self.entries.entry(key).or_insert_with(|| Entry::new(now));
        entry.failures = entry.failures.saturating_add(1);
        entry.last_failure = now;
        entry.unreported += 1;
        entry.latest = Some(record);
        if entry.last_record.is_none_or(|t| now.saturating_duration_since(t) >= RECORD_INTERVAL) {
            due.extend(entry.take(now));
        }
        due
    }

    /// A correct credential from `ip`: forgets its failures. Returns the
    /// record of those not yet written.
    pub(crate) fn succeed(&mut self, ip: IpAddr, now: Instant) -> Option<Due<T>> {
        let mut entry = self.entries.remove(&Key::Peer(ip))?;
        self.peers -= 1;
        entry.take(now)
    }

    /// Records whose interval is over, and the pending counts of addresses
    /// forgotten now.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<Due<T>> {
        let mut due = self.sweep(now);
        for entry in self.entries.values_mut() {
            if entry.last_record.is_some_and(|t| now.saturating_duration_since(t) >= RECORD_INTERVAL) {
                due.extend(entry.take(now));
            }
        }
        due
    }

    /// Everything pending (at shutdown).
    pub(crate) fn drain(&mut self, now: Instant) -> Vec<Due<T>> {
        self.peers = 0;
        self.entries.drain().filter_map(|(_, mut e)| e.take(now)).collect()
    }

    /// Forgets expired addresses (at most once a second: it walks the
    /// table), returning their pending counts.
    fn sweep(&mut self, now: Instant) -> Vec<Due<T>> {
        if self.last_sweep.is_some_and(|t| now.saturating_duration_since(t) < FLUSH_EVERY) {
            return Vec::new();
        }
        self.last_sweep = Some(now);
        let mut due = Vec::new();
        self.entries.retain(|key, entry| {
            if !entry.expired(now) {
                return true;
            }
            due.extend(entry.take(now));
            if matches!(key, Key::Peer(_)) {
                self.peers -= 1;
            }
            false
        });
        due
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

// === impl AuthThrottle ===

/// Proxy authentication under the throttle, writing the coalesced records
/// to the audit log. Shared by the listener and the action API.
#[derive(Debug)]
pub(crate) struct AuthThrottle {
    state: Mutex<Throttle<Record>>,
    /// Requests without credentials, per address: only coalesced (their
    /// "failures" are never looked at for a delay, and a success does not
    /// reset them), so a flood of them cannot fill the disk either.
    challenges: Mutex<Throttle<Record>>,
    /// Requests refused before any credential was looked at (malformed,
    /// not a proxy request, over a limit), per address: coalesced the
    /// same way, as anyone can send them without a token.
    unauthenticated: Mutex<Throttle<Record>>,
    audit: AuditLog,
}

impl AuthThrottle {
    pub(crate) fn new(audit: AuditLog) -> Self {
        AuthThrottle {
            state: Mutex::new(Throttle::new(MAX_PEERS)),
            challenges: Mutex::new(Throttle::new(MAX_PEERS)),
            unauthenticated: Mutex::new(Throttle::new(MAX_PEERS)),
            audit,
        }
    }

    /// The audit record of a request from `peer` refused before its
    /// credentials were looked at: coalesced per address like wrong
    /// credentials (the record written stands for `attempts` such
    /// refusals, of whatever kind; it is the last of them).
    pub(crate) fn refused_unauthenticated(&self, peer: IpAddr, record: Record) {
        let mut record = record;
        clip(&mut record.method, MAX_METHOD);
        clip(&mut record.host, MAX_HOST);
        let due = lock(&self.unauthenticated).fail(peer.to_canonical(), Instant::now(), record);
        self.write(due);
    }

    /// Each table, in the order: wrong credentials, challenges, refusals
    /// before authentication.
    fn tables(&self) -> [&Mutex<Throttle<Record>>; 3] {
        [&self.state, &self.challenges, &self.unauthenticated]
    }

    /// Resolves the tenant of a `Proxy-Authorization` (or `Authorization`)
    /// value from `peer`. Credentials from an address in backoff are looked
    /// at once its delay is over; none at all are answered at once. A
    /// wrong credential's record goes to [`AuthThrottle::refused`].
    pub(crate) async fn authenticate(
        &self,
        policy: &Policy,
        peer: IpAddr,
        header: Option<&[u8]>,
    ) -> Result<TenantId, AuthError> {
        let peer = peer.to_canonical();
        if header.and_then(basic_credentials).is_some() {
            let wait = lock(&self.state).wait(peer, Instant::now());
            if !wait.is_zero() {
                tracing::debug!(?wait, "credentials from an address with failures in a row: held");
                tokio::time::sleep(wait).await;
            }
        }
        let tenant = policy.authenticate(header)?;
        let due = lock(&self.state).succeed(peer, Instant::now());
        self.write(due);
        Ok(tenant)
    }

    /// The audit record of a refused authentication from `peer`: written at
    /// once for missing credentials; coalesced for wrong ones.
    pub(crate) fn refused(&self, peer: IpAddr, error: AuthError, record: Record) {
        let mut record = record;
        clip(&mut record.method, MAX_METHOD);
        let due = match error {
            // The challenge clients such as git always start with (DESIGN,
            // "Audit"): not a failure.
            AuthError::Missing => {
                record.decision = Outcome::Challenge;
                lock(&self.challenges).fail(peer.to_canonical(), Instant::now(), record)
            }
            AuthError::Unknown => lock(&self.state).fail(peer.to_canonical(), Instant::now(), record),
        };
        self.write(due);
    }

    /// Writes the records whose interval is over (called every
    /// [`FLUSH_EVERY`]).
    pub(crate) fn flush_due(&self) {
        for table in self.tables() {
            let due = lock(table).due(Instant::now());
            self.write(due);
        }
    }

    /// Writes every pending count (at shutdown).
    pub(crate) fn flush_all(&self) {
        for table in self.tables() {
            let due = lock(table).drain(Instant::now());
            self.write(due);
        }
    }

    fn write(&self, due: impl IntoIterator<Item = Due<Record>>) {
        for Due { attempts, latest } in due {
            self.audit.write(Record { attempts: Some(attempts), ..latest });
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x7f00_0000 + n))
    }

    fn total(due: &[Due<u32>]) -> u64 {
        due.iter().map(|d| d.attempts).sum()
    }

    #[test]
    fn the_delay_doubles_past_the_free_failures_up_to_the_cap() {
        assert_eq!(delay(0), Duration::ZERO);
        assert_eq!(delay(FREE_FAILURES), Duration::ZERO);
        assert_eq!(delay(FREE_FAILURES + 1), FIRST_DELAY);
        assert_eq!(delay(FREE_FAILURES + 2), FIRST_DELAY * 2);
        assert_eq!(delay(FREE_FAILURES + 3), FIRST_DELAY * 4);
        assert_eq!(delay(FREE_FAILURES + 20), MAX_DELAY);
        assert_eq!(delay(u32::MAX), MAX_DELAY);
    }

    #[test]
    fn a_peer_waits_after_its_free_failures_and_a_success_resets_it() {
        let mut t = Throttle::new(16);
        let now = Instant::now();
        for _ in 0..FREE_FAILURES {
            assert_eq!(t.wait(ip(1), now), Duration::ZERO);
            t.fail(ip(1), now, 0);
        }
        assert_eq!(t.wait(ip(1), now), Duration::ZERO);
        t.fail(ip(1), now, 0);
        assert_eq!(t.wait(ip(1), now), FIRST_DELAY);
        assert_eq!(t.wait(ip(1), now + FIRST_DELAY / 2), FIRST_DELAY / 2);
        assert_eq!(t.wait(ip(1), now + FIRST_DELAY), Duration::ZERO);
        // The wait grows with each failure, and is bounded.
        let mut at = now;
        for _ in 0..30 {
            at += t.wait(ip(1), at);
            t.fail(ip(1), at, 0);
            assert!(t.wait(ip(1), at) <= MAX_DELAY);
        }
        assert_eq!(t.wait(ip(1), at), MAX_DELAY);
        // Another address is not slowed.
        assert_eq!(t.wait(ip(2), at), Duration::ZERO);
        // A correct credential resets the address, and writes what was pending.
        let pending = t.succeed(ip(1), at).unwrap();
        assert!(pending.attempts > 1);
        assert_eq!(t.wait(ip(1), at), Duration::ZERO);
        assert_eq!(t.succeed(ip(1), at), None);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn failures_are_coalesced_into_one_record_per_interval_and_none_is_lost() {
        let mut t = Throttle::new(16);
        let start = Instant::now();
        let mut written = Vec::new();
        // The first failure is recorded at once.
        let first = t.fail(ip(1), start, 1);
        assert_eq!(first, vec![Due { attempts: 1, latest: 1 }]);
        written.extend(first);
        // 500 more within the interval: none written yet…
        for i in 2..=501 {
            let at = start + RECORD_INTERVAL * (i - 2) / 600;
            assert!(t.fail(ip(1), at, i).is_empty());
        }
        assert!(t.due(start + RECORD_INTERVAL / 2).is_empty());
        // …then one record for all of them, carrying the last.
        let flushed = t.due(start + RECORD_INTERVAL);
        assert_eq!(flushed, vec![Due { attempts: 500, latest: 501 }]);
        written.extend(flushed);
        // The next failure waits for the next interval.
        assert!(t.fail(ip(1), start + RECORD_INTERVAL * 3 / 2, 502).is_empty());
        let at_interval = t.fail(ip(1), start + RECORD_INTERVAL * 2, 503);
        assert_eq!(at_interval, vec![Due { attempts: 2, latest: 503 }]);
        written.extend(at_interval);
        assert!(t.fail(ip(1), start + RECORD_INTERVAL * 2, 504).is_empty());
        // Shutdown writes the rest.
        written.extend(t.drain(start + RECORD_INTERVAL * 2));
        assert_eq!(total(&written), 504);
        assert_eq!(written.len(), 4);
    }

    #[test]
    fn memory_is_bounded_and_a_flood_of_addresses_is_throttled_as_one() {
        const CAP: usize = 64;
        let mut t = Throttle::new(CAP);
        let now = Instant::now();
        let mut written = Vec::new();
        for n in 0..10_000 {
            written.extend(t.fail(ip(n), now, n));
        }
        assert_eq!(t.len(), CAP + 1, "the table holds CAP addresses and the overflow entry");
        // The addresses past the table share one entry, slowed as one.
        assert_eq!(t.wait(ip(9_999), now), MAX_DELAY);
        assert_eq!(t.wait(ip(20_000), now), MAX_DELAY);
        assert_eq!(t.wait(ip(1), now), Duration::ZERO, "a tracked address keeps its own count");
        // CAP first failures and the overflow's first: written at once.
        assert_eq!(written.len(), CAP + 1);
        // Once every address is forgotten, the counts are all written and
        // the table is empty.
        let later = now + FORGET_AFTER;
        written.extend(t.due(later));
        assert_eq!(t.len(), 0);
        assert_eq!(total(&written), 10_000);
        // A new address is tracked on its own again.
        t.fail(ip(20_000), later, 0);
        assert_eq!(t.wait(ip(20_000), later), Duration::ZERO);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn records_are_written_with_their_count_and_a_bounded_method() {
        use crate::audit::Outcome;
        let dir = std::env::temp_dir().join(format!("airlock-throttle-{}", crate::respond::request_id()));
        let path = dir.join("audit.jsonl");
        let (audit, writer) = AuditLog::open(&path).unwrap();
        let throttle = AuthThrottle::new(audit);
        let record = |method: String| Record::new("ts".into(), "id".into(), method, "h".into(), 1, Outcome::Deny, 407);
        throttle.refused(ip(1), AuthError::Missing, record("CONNECT".into()));
        for _ in 0..3 {
            throttle.refused(ip(1), AuthError::Unknown, record("X".repeat(10_000)));
        }
        throttle.flush_all();
        writer.finish();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|l| l.get("event").is_none())
            .collect();
        let counted: Vec<_> = lines.iter().map(|l| (l["decision"].as_str(), l["attempts"].as_u64())).collect();
        assert_eq!(
            counted,
            [(Some("challenge"), Some(1)), (Some("deny"), Some(1)), (Some("deny"), Some(2))],
            "the challenge is counted apart from the failures"
        );
        assert!(lines.iter().all(|l| l["method"].as_str().unwrap().len() <= MAX_METHOD));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_full_table_forgets_expired_addresses_to_make_room() {
        let mut t = Throttle::new(2);
        let now = Instant::now();
        t.fail(ip(1), now, 1);
        t.fail(ip(2), now, 2);
        t.fail(ip(1), now, 3);
        let later = now + FORGET_AFTER;
        // ip(3) finds the table full of expired addresses: they are
        // forgotten (their pending count written) and ip(3) gets its own.
        let due = t.fail(ip(3), later, 4);
        let due: Vec<_> = due.into_iter().map(|d| (d.attempts, d.latest)).collect();
        assert_eq!(due, vec![(1, 3), (1, 4)], "ip(1)'s pending failure, and ip(3)'s first");
        assert_eq!(t.len(), 1);
        assert_eq!(t.key(ip(3)), Key::Peer(ip(3)));
    }
}
