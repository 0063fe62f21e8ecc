//! The sealed chain: how each line is linked to the one before it and
//! authenticated, the key that authenticates it, and the head that anchors
//! the chain's end outside the log.
//!
//! **Lines.** Each line is a JSON object whose last four members are
//! `seq` (1 for the first line), `epoch` (the key epoch), `prev` (the
//! previous line's `hash`, 64 zeros for the first) and `hash`: the
//! HMAC-SHA-256 (RFC 2104), hex, under the epoch's key, of the line up to
//! and including `prev` with the object closed there (the line with its
//! `hash` member removed). A removed, inserted or reordered line breaks the
//! next line's `prev` or `seq`; an edited line fails its MAC.
//!
//! **Keys, forward-secure.** In the spirit of journald's sealing (Marson
//! and Poettering, "Practical Secure Logging: Seekable Sequential Key
//! Generators", ESORICS 2013) but with a plain hash ratchet: the key of
//! epoch `e + 1` is `HMAC-SHA-256(k_e, "airlock audit key evolution")`, and
//! only the current key is kept (in `<log>.seal`, 0600), so a key read
//! from a compromised machine cannot MAC a record of an earlier epoch.
//! Epoch 0's key is the *verification key*: printed once when the seal is
//! created, for the operator to keep elsewhere; from it `airlock audit
//! --verify --key` derives every epoch's key. The epoch advances each
//! time the log is opened (an `open` line) and every [`EPOCH_LENGTH`] of
//! writing (an `epoch` line); the first line is epoch 1 and the epoch
//! changes only at those lines, by one, so old lines cannot be relabelled
//! into a later epoch.
//!
//! **Head.** After every batch the writer replaces `<log>.head` (atomically,
//! by rename) with the last line's `seq` and `hash`, MACed under the current
//! key, so a log whose last lines were deleted (or emptied) no longer
//! reaches its head.
//!
//! Hand-written: no maintained crate does forward-secure log sealing for
//! a JSON Lines file (journald's FSPRG is C inside systemd); the parts are
//! ring's HMAC and SHA-256.

use std::fs;
use std::io::{self, BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ring::hmac;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The `prev` of the first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// How long one key is used while the log is being written.
pub const EPOCH_LENGTH: Duration = Duration::from_secs(15 * 60);

const EVOLVE_LABEL: &[u8] = b"airlock audit key evolution";

/// A key epoch's key (32 bytes), erased from memory when dropped.
#[derive(Clone)]
pub struct EpochKey {
    epoch: u64,
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for EpochKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpochKey").field("epoch", &self.epoch).finish_non_exhaustive()
    }
}

impl EpochKey {
    /// Epoch 0's key from the verification key (64 hex digits).
    pub fn from_verification_key(hex: &str) -> Option<EpochKey> {
        Some(EpochKey { epoch: 0, key: unhex32(hex.trim())? })
    }

    fn random() -> io::Result<EpochKey> {
        let mut key = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut *key).map_err(|e| io::Error::other(format!("no OS randomness: {e}")))?;
        Ok(EpochKey { epoch: 0, key })
    }

    /// The epoch this key MACs.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The next epoch's key; this one should then be dropped.
    pub fn evolve(&self) -> EpochKey {
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &*self.key), EVOLVE_LABEL);
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(tag.as_ref());
        EpochKey { epoch: self.epoch + 1, key }
    }

    /// This key moved forward to `epoch` (None if that is before it).
    pub fn at(&self, epoch: u64) -> Option<EpochKey> {
        let mut k = self.clone();
        if epoch < k.epoch {
            return None;
        }
        while k.epoch < epoch {
            k = k.evolve();
        }
        Some(k)
    }

    /// HMAC-SHA-256 of `data`, hex.
    pub fn mac(&self, data: &[u8]) -> String {
        hex::encode(hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &*self.key), data))
    }

    fn hex_key(&self) -> Zeroizing<String> {
        // A slice: the key passed by value would leave a copy on the stack
        // that nothing zeroes.
        Zeroizing::new(hex::encode(self.key.as_slice()))
    }
}

/// `<log><suffix>`, next to the log.
fn beside(log: &Path, suffix: &str) -> PathBuf {
    let mut p = log.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// Where the current key of the log at `log` is kept.
pub fn seal_path(log: &Path) -> PathBuf {
    beside(log, ".seal")
}

/// Where the head of the log at `log` is kept.
pub fn head_path(log: &Path) -> PathBuf {
    beside(log, ".head")
}

#[derive(Serialize, Deserialize)]
struct SealFile {
    epoch: u64,
    key: String,
}

/// Reads the current key of the log at `log`; None if it has none.
///
/// # Errors
/// Unreadable or malformed seal file.
pub fn read_seal(log: &Path) -> io::Result<Option<EpochKey>> {
    let path = seal_path(log);
    let text = match fs::read_to_string(&path) {
        Ok(t) => Zeroizing::new(t),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let file: SealFile = serde_json::from_str(&text)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("{} is not an audit seal", path.display())))?;
    let key = Zeroizing::new(file.key);
    let key = unhex32(&key).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, format!("{} is not an audit seal", path.display()))
    })?;
    Ok(Some(EpochKey { epoch: file.epoch, key }))
}

/// Replaces the seal with `key` (written to a new file, synced, renamed
/// over the old one, so the old key is gone and a crash leaves one whole).
pub fn write_seal(log: &Path, key: &EpochKey) -> io::Result<()> {
    let text = Zeroizing::new(format!("{{\"epoch\":{},\"key\":\"{}\"}}\n", key.epoch, &*key.hex_key()));
    replace(&seal_path(log), text.as_bytes(), true)
}

/// Creates a seal (epoch 0) for the log at `log`, replacing any; returns the
/// verification key (hex). See [`super::ensure_seal`].
pub(super) fn create_seal(log: &Path) -> io::Result<Zeroizing<String>> {
    if let Some(dir) = log.parent() {
        fs::create_dir_all(dir)?;
    }
    let key = EpochKey::random()?;
    write_seal(log, &key)?;
    Ok(key.hex_key())
}

/// Writes `bytes` to `path` through a temporary file renamed over it.
fn replace(path: &Path, bytes: &[u8], sync: bool) -> io::Result<()> {
    let tmp = beside(path, ".tmp");
    let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(bytes)?;
    if sync {
        f.sync_all()?;
    }
    fs::rename(&tmp, path)
}

/// The anchored end of the chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// The last line's `seq`.
    pub seq: u64,
    /// The last line's `hash`.
    pub hash: String,
    /// The epoch whose key MACs this head.
    pub epoch: u64,
    /// HMAC of `"{seq}:{hash}"` under that epoch's key.
    pub mac: String,
}

impl Head {
    /// The head after line `seq` with `hash`, MACed under `key`.
    pub fn new(seq: u64, hash: &str, key: &EpochKey) -> Head {
        Head { seq, hash: hash.to_owned(), epoch: key.epoch, mac: key.mac(format!("{seq}:{hash}").as_bytes()) }
    }

    fn authentic(&self, key: &EpochKey) -> bool {
        key.mac(format!("{}:{}", self.seq, self.hash).as_bytes()) == self.mac
    }
}

/// Reads the head of the log at `log`; None if there is none.
pub fn read_head(log: &Path) -> io::Result<Option<Head>> {
    match fs::read(head_path(log)) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "the audit head file is malformed")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Replaces the head of the log at `log`.
pub fn write_head(log: &Path, head: &Head) -> io::Result<()> {
    let mut bytes = serde_json::to_vec(head).map_err(io::Error::other)?;
    bytes.push(b'\n');
    replace(&head_path(log), &bytes, false)
}

/// The chain position after a line: what the next line links to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// The line's `seq` (0 before the first line).
    pub seq: u64,
    /// The line's `hash` ([`GENESIS`] before the first line).
    pub hash: String,
}

impl Link {
    /// Before the first line.
    pub fn genesis() -> Link {
        Link { seq: 0, hash: GENESIS.to_owned() }
    }
}

/// Appends to `out` the line for `entry` (a JSON object, as serialized)
/// after `link`, MACed under `key`; returns the new link.
pub fn seal_line(out: &mut Vec<u8>, entry: &[u8], link: &Link, key: &EpochKey) -> Link {
    let start = out.len();
    let body = entry.strip_suffix(b"}").unwrap_or(entry);
    out.extend_from_slice(body);
    let seq = link.seq + 1;
    let sep = if body.ends_with(b"{") { "" } else { "," };
    out.extend_from_slice(
        format!("{sep}\"seq\":{seq},\"epoch\":{},\"prev\":\"{}\"}}", key.epoch, link.hash).as_bytes(),
    );
    let hash = key.mac(&out[start..]);
    out.pop();
    out.extend_from_slice(b",\"hash\":\"");
    out.extend_from_slice(hash.as_bytes());
    out.extend_from_slice(b"\"}\n");
    Link { seq, hash }
}

/// Splits a written line into the bytes its hash covers and the hash.
pub fn split_hash(line: &[u8]) -> Option<(Vec<u8>, &str)> {
    const SUFFIX: usize = ",\"hash\":\"".len() + 64 + "\"}".len();
    let cut = line.len().checked_sub(SUFFIX)?;
    let tail = std::str::from_utf8(&line[cut..]).ok()?;
    let hash = tail.strip_prefix(",\"hash\":\"")?.strip_suffix("\"}")?;
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut covered = line[..cut].to_vec();
    covered.push(b'}');
    Some((covered, hash))
}

/// The chain members of a written line.
#[derive(Deserialize)]
struct Chained {
    seq: Option<u64>,
    epoch: Option<u64>,
    prev: Option<String>,
    event: Option<String>,
    request_id: Option<String>,
    detail: Option<String>,
}

/// A written sealed line, as the writer needs it at start.
#[derive(Debug)]
pub struct Sealed {
    /// Where the chain stands after it.
    pub link: Link,
    /// Its epoch.
    pub epoch: u64,
    /// Whether it is a `close` line (the end of its epoch).
    pub closes: bool,
    /// The bytes its MAC covers.
    pub covered: Vec<u8>,
}

/// The line, if it is a sealed line.
pub fn sealed_line(line: &[u8]) -> Option<Sealed> {
    let (covered, hash) = split_hash(line)?;
    let c: Chained = serde_json::from_slice(&covered).ok()?;
    Some(Sealed {
        link: Link { seq: c.seq?, hash: hash.to_owned() },
        epoch: c.epoch?,
        closes: c.event.as_deref() == Some("close"),
        covered,
    })
}

/// SHA-256 of a line, hex (the unkeyed hash of lines written before the
/// chain was keyed).
pub fn sha256_hex(line: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, line))
}

/// Why the log does not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChainError {
    /// A line is not an audit line.
    #[error("line {line}: not an audit record")]
    Malformed {
        /// 1-based line number.
        line: usize,
    },
    /// A line does not follow the one before it.
    #[error("line {line}: the chain is broken here (the line, or the one before it, was changed, removed or inserted)")]
    Broken {
        /// 1-based line number.
        line: usize,
    },
    /// A line's MAC is wrong under its epoch's key.
    #[error("line {line}: the record was changed after it was written (its MAC does not match)")]
    Forged {
        /// 1-based line number.
        line: usize,
    },
    /// The log ends before its anchored head.
    #[error("the log ends at record {last} but its head ({head}) says {anchored}: records at the end were removed")]
    Truncated {
        /// The last record's `seq`.
        last: u64,
        /// The `seq` the head anchors.
        anchored: u64,
        /// The head file.
        head: String,
    },
    /// The seal or the head belongs to a later key epoch than the log's
    /// last record.
    #[error(
        "the log ends in key epoch {last_epoch}, but its seal or head has moved past it: records at the end were \
         removed"
    )]
    KeyAhead {
        /// The last record's epoch.
        last_epoch: u64,
    },
    /// The head does not match the log, or is not authentic.
    #[error("the head ({head}) does not match the log: {why}")]
    BadHead {
        /// The head file.
        head: String,
        /// What does not match.
        why: &'static str,
    },
    /// No verification key was given and the seal is gone: only order
    /// could be checked.
    #[error(
        "the seal ({seal}) is missing, so no record's MAC could be checked: pass --key with the verification key, \
         or restore the seal"
    )]
    NoSeal {
        /// The seal file.
        seal: String,
    },
    /// airlock found records missing when it opened the log, and said so.
    #[error("line {line}: when airlock started, it found the log changed: {detail}")]
    FoundMissing {
        /// 1-based line number of the `missing` line.
        line: usize,
        /// What was missing.
        detail: String,
    },
}

/// What `verify` checked.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verified {
    /// Lines in the log.
    pub records: u64,
    /// Lines whose MAC was checked.
    pub authenticated: u64,
    /// Lines written before the chain was keyed (plain SHA-256).
    pub legacy: u64,
    /// The last epoch in the log.
    pub last_epoch: u64,
    /// Torn tails airlock repaired at start (crashes mid-write).
    pub repaired: u64,
    /// Requests with a `begin` line and no record: airlock stopped while
    /// they ran.
    pub unfinished: Vec<String>,
    /// Whether the head was found and checked.
    pub head_checked: bool,
    /// Whether the last line is a `close`.
    pub ends_closed: bool,
}

/// Checks the log at `log` (read line by line) against its head, with
/// `key` (epoch 0's, from the verification key) when given, else with the
/// current key in the seal when readable (lines of its epoch only).
pub fn verify(log: &Path, key: Option<&EpochKey>) -> io::Result<Result<Verified, ChainError>> {
    // Looked at before opening: opening a pipe would wait for a writer.
    if !fs::metadata(log)?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{} is not a regular file", log.display())));
    }
    let reader = io::BufReader::new(fs::File::open(log)?);
    let current = read_seal(log)?;
    let head = read_head(log)?;
    let head_name = head_path(log).display().to_string();
    let verified = verify_lines(reader, key.or(current.as_ref()), head.as_ref(), &head_name)?;
    Ok(match verified {
        Ok(v) if key.is_none() && current.is_none() && v.records > v.legacy => {
            Err(ChainError::NoSeal { seal: seal_path(log).display().to_string() })
        }
        // The key and the head only move forward with the log: a seal two
        // epochs past the last record (or one past it, without a `close`
        // last), or a head of a later epoch, means records at the end were
        // removed, whatever the head now says.
        Ok(v)
            if current
                .as_ref()
                .is_some_and(|k| k.epoch() > v.last_epoch + 1 || (k.epoch() == v.last_epoch + 1 && !v.ends_closed))
                || head.as_ref().is_some_and(|h| h.epoch > v.last_epoch) =>
        {
            Err(ChainError::KeyAhead { last_epoch: v.last_epoch })
        }
        other => other,
    })
}

fn verify_lines(
    reader: impl BufRead,
    key: Option<&EpochKey>,
    head: Option<&Head>,
    head_name: &str,
) -> io::Result<Result<Verified, ChainError>> {
    let mut v = Verified::default();
    let mut link = Link::genesis();
    let mut epoch_key: Option<EpochKey> = None;
    let mut epoch = 0u64;
    let mut begun = std::collections::BTreeSet::new();
    let mut head_seen = false;
    // The last line was a `close`.
    let mut closed = false;
    for (i, line) in reader.split(b'\n').enumerate() {
        let line = line?;
        let line_no = i + 1;
        let Some((covered, hash)) = split_hash(&line) else { return Ok(Err(ChainError::Malformed { line: line_no })) };
        let Ok(c) = serde_json::from_slice::<Chained>(&covered) else {
            return Ok(Err(ChainError::Malformed { line: line_no }));
        };
        if c.prev.as_deref() != Some(link.hash.as_str()) {
            return Ok(Err(ChainError::Broken { line: line_no }));
        }
        match (c.seq, c.epoch) {
            // Written before the chain was keyed: only before keyed lines.
            (None, None) if epoch == 0 => {
                if sha256_hex(&covered) != hash {
                    return Ok(Err(ChainError::Forged { line: line_no }));
                }
                v.legacy += 1;
            }
            (Some(seq), Some(e)) => {
                // An epoch starts (by one) only right after the last one's
                // `close`, which its own key MACs: with a later key alone,
                // no one can cut the end of an earlier epoch and relink.
                let starts_epoch = matches!(c.event.as_deref(), Some("open" | "epoch"));
                let expected = if starts_epoch { epoch + 1 } else { epoch };
                let first_keyed = epoch == 0;
                if seq != link.seq + 1
                    || e != expected
                    || (first_keyed && !starts_epoch)
                    || (starts_epoch && !first_keyed && !closed)
                    || (closed && !starts_epoch)
                {
                    return Ok(Err(ChainError::Broken { line: line_no }));
                }
                closed = c.event.as_deref() == Some("close");
                epoch = e;
                if let Some(k) = key {
                    if epoch_key.as_ref().is_none_or(|ek| ek.epoch != e) {
                        epoch_key = match &epoch_key {
                            Some(ek) if ek.epoch < e => ek.at(e),
                            _ => k.at(e),
                        };
                    }
                    if let Some(ek) = &epoch_key {
                        if ek.mac(&covered) != hash {
                            return Ok(Err(ChainError::Forged { line: line_no }));
                        }
                        v.authenticated += 1;
                    }
                }
            }
            _ => return Ok(Err(ChainError::Broken { line: line_no })),
        }
        link = Link { seq: link.seq + 1, hash: hash.to_owned() };
        v.records += 1;
        if let Some(h) = head
            && h.seq == link.seq
        {
            if h.hash != link.hash {
                return Ok(Err(ChainError::BadHead {
                    head: head_name.to_owned(),
                    why: "its hash is not that record's",
                }));
            }
            head_seen = true;
        }
        match (c.event.as_deref(), c.request_id) {
            (Some("begin"), Some(id)) => {
                begun.insert(id);
            }
            (Some("repaired"), _) => v.repaired += 1,
            (Some("missing"), _) => {
                return Ok(Err(ChainError::FoundMissing { line: line_no, detail: c.detail.unwrap_or_default() }));
            }
            (None, Some(id)) => {
                begun.remove(&id);
            }
            _ => {}
        }
    }
    v.last_epoch = epoch;
    v.ends_closed = closed;
    v.unfinished = begun.into_iter().collect();
    match head {
        Some(h) if h.seq > link.seq => {
            return Ok(Err(ChainError::Truncated { last: link.seq, anchored: h.seq, head: head_name.to_owned() }));
        }
        Some(h) => {
            if !head_seen && h.seq > 0 {
                return Ok(Err(ChainError::BadHead { head: head_name.to_owned(), why: "no record has its seq" }));
            }
            if let Some(k) = key.and_then(|k| k.at(h.epoch))
                && !h.authentic(&k)
            {
                return Ok(Err(ChainError::BadHead { head: head_name.to_owned(), why: "its MAC is wrong" }));
            }
            v.head_checked = true;
        }
        None if v.records > v.legacy => {
            return Ok(Err(ChainError::BadHead { head: head_name.to_owned(), why: "the head file is missing" }));
        }
        None => {}
    }
    Ok(Ok(v))
}

/// The key that 64 hex digits (either case) spell, decoded straight into
/// memory zeroed on drop.
fn unhex32(s: &str) -> Option<Zeroizing<[u8; 32]>> {
    let mut key = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(s, &mut *key).ok()?;
    Some(key)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn key0() -> EpochKey {
        EpochKey::from_verification_key(&"ab".repeat(32)).unwrap()
    }

    /// A log of `lines` (entry JSON, epoch-starting or not), sealed from
    /// `key0`, and its head.
    fn sealed(entries: &[&str]) -> (Vec<u8>, Head) {
        let mut out = Vec::new();
        let mut link = Link::genesis();
        let mut key = key0();
        for e in entries {
            if e.contains("\"event\":\"open\"") || e.contains("\"event\":\"epoch\"") {
                key = key.evolve();
            }
            link = seal_line(&mut out, e.as_bytes(), &link, &key);
        }
        let head = Head::new(link.seq, &link.hash, &key);
        (out, head)
    }

    fn check(log: &[u8], key: Option<&EpochKey>, head: &Head) -> Result<Verified, ChainError> {
        verify_lines(log, key, Some(head), "head").unwrap()
    }

    const OPEN: &str = r#"{"ts":"t","event":"open"}"#;
    const CLOSE: &str = r#"{"ts":"t","event":"close"}"#;

    #[test]
    fn a_sealed_log_verifies_and_each_kind_of_change_is_named() {
        let entries = [OPEN, r#"{"request_id":"a"}"#, r#"{"request_id":"b"}"#, CLOSE, OPEN, r#"{"request_id":"c"}"#];
        let (log, head) = sealed(&entries);
        let v = check(&log, Some(&key0()), &head).unwrap();
        assert_eq!((v.records, v.authenticated, v.last_epoch), (6, 6, 2));
        let lines: Vec<&[u8]> = log.split_inclusive(|&b| b == b'\n').collect();
        let join = |ls: &[&[u8]]| ls.concat();

        // Edited in place, hash kept: the MAC fails.
        let edited =
            String::from_utf8(log.clone()).unwrap().replacen("\"request_id\":\"b\"", "\"request_id\":\"x\"", 1);
        assert_eq!(check(edited.as_bytes(), Some(&key0()), &head), Err(ChainError::Forged { line: 3 }));
        // Removed, swapped: the next line's prev.
        assert_eq!(
            check(&join(&[lines[0], lines[2], lines[3], lines[4], lines[5]]), None, &head),
            Err(ChainError::Broken { line: 2 })
        );
        assert_eq!(
            check(&join(&[lines[0], lines[2], lines[1], lines[3], lines[4], lines[5]]), None, &head),
            Err(ChainError::Broken { line: 2 })
        );
        // The close removed: the next epoch may not start.
        assert!(check(&join(&[lines[0], lines[1], lines[2], lines[4], lines[5]]), None, &head).is_err());
        // The last two removed, or everything: the head says more.
        assert!(matches!(
            check(&join(&lines[..3]), None, &head),
            Err(ChainError::Truncated { last: 3, anchored: 6, .. })
        ));
        assert!(matches!(check(b"", None, &head), Err(ChainError::Truncated { last: 0, anchored: 6, .. })));
        assert_eq!(check(b"not json\n", None, &head), Err(ChainError::Malformed { line: 1 }));
    }

    #[test]
    fn a_chain_recomputed_with_a_later_key_fails_with_the_verification_key() {
        // The attacker holds epoch 2's key (the seal after a restart) and
        // rewrites epoch 1's records, relinking everything.
        let (log, _) = sealed(&[OPEN, r#"{"request_id":"a","status":200}"#, CLOSE, OPEN, r#"{"request_id":"c"}"#]);
        let stolen = key0().evolve().evolve();
        let text = String::from_utf8(log).unwrap();
        let mut forged = Vec::new();
        let mut link = Link::genesis();
        for line in text.lines() {
            let (covered, _) = split_hash(line.as_bytes()).unwrap();
            let mut v: serde_json::Value = serde_json::from_slice(&covered).unwrap();
            let o = v.as_object_mut().unwrap();
            for k in ["seq", "epoch", "prev"] {
                o.remove(k);
            }
            if o.get("status").is_some() {
                o.insert("status".into(), 500.into());
            }
            // Relabelled as epoch 2, or kept at epoch 1: both fail.
            link = seal_line(&mut forged, &serde_json::to_vec(&v).unwrap(), &link, &stolen);
        }
        let head = Head::new(link.seq, &link.hash, &stolen);
        // Order-only checking cannot tell; the verification key can.
        assert!(matches!(check(&forged, None, &head), Err(ChainError::Broken { line: 1 })));
        assert!(check(&forged, Some(&key0()), &head).is_err());
        // Labelled with the right epochs but MACed with the wrong key.
        let mut relabelled = Vec::new();
        let mut link = Link::genesis();
        let mut epoch_key = stolen.clone();
        for line in text.lines() {
            let (covered, _) = split_hash(line.as_bytes()).unwrap();
            let mut v: serde_json::Value = serde_json::from_slice(&covered).unwrap();
            let o = v.as_object_mut().unwrap();
            let epoch = o["epoch"].as_u64().unwrap();
            for k in ["seq", "epoch", "prev"] {
                o.remove(k);
            }
            epoch_key.epoch = epoch;
            link = seal_line(&mut relabelled, &serde_json::to_vec(&v).unwrap(), &link, &epoch_key);
        }
        let head = Head::new(link.seq, &link.hash, &stolen);
        assert_eq!(check(&relabelled, None, &head).map(|v| v.records), Ok(5));
        assert_eq!(check(&relabelled, Some(&key0()), &head), Err(ChainError::Forged { line: 1 }));
    }

    #[test]
    fn unfinished_requests_and_repairs_are_reported() {
        let (log, head) = sealed(&[
            OPEN,
            r#"{"ts":"t","event":"begin","request_id":"a"}"#,
            r#"{"ts":"t","event":"begin","request_id":"b"}"#,
            r#"{"request_id":"a"}"#,
            CLOSE,
            OPEN,
            r#"{"ts":"t","event":"repaired","detail":"12 bytes"}"#,
        ]);
        let v = check(&log, Some(&key0()), &head).unwrap();
        assert_eq!(v.unfinished, vec!["b".to_owned()]);
        assert_eq!(v.repaired, 1);
    }

    #[test]
    fn the_end_of_a_closed_epoch_cannot_be_cut_with_a_later_key() {
        // Epoch 2 is `open, b, c, close`; someone holding epoch 3's key cuts
        // `c` and relinks: a close for epoch 2 needs epoch 2's key.
        let entries = [OPEN, r#"{"request_id":"a"}"#, CLOSE, OPEN, r#"{"request_id":"b"}"#];
        let (kept, _) = sealed(&entries);
        let text = String::from_utf8(kept.clone()).unwrap();
        let last = text.lines().last().unwrap();
        let (covered, hash) = split_hash(last.as_bytes()).unwrap();
        let c: Chained = serde_json::from_slice(&covered).unwrap();
        let mut link = Link { seq: c.seq.unwrap(), hash: hash.to_owned() };
        let stolen = key0().at(3).unwrap();
        // Relinked straight to the new epoch: no close, so not allowed.
        let mut direct = kept.clone();
        let mut l = seal_line(&mut direct, OPEN.as_bytes(), &link, &stolen);
        l = seal_line(&mut direct, br#"{"request_id":"d"}"#, &l, &stolen);
        let head = Head::new(l.seq, &l.hash, &stolen);
        assert_eq!(check(&direct, Some(&key0()), &head), Err(ChainError::Broken { line: 6 }));
        // With a close made with the later key: its MAC fails.
        let mut forged = kept;
        let mut as_epoch_2 = stolen.clone();
        as_epoch_2.epoch = 2;
        link = seal_line(&mut forged, CLOSE.as_bytes(), &link, &as_epoch_2);
        link = seal_line(&mut forged, OPEN.as_bytes(), &link, &stolen);
        link = seal_line(&mut forged, br#"{"request_id":"d"}"#, &link, &stolen);
        let head = Head::new(link.seq, &link.hash, &stolen);
        assert_eq!(check(&forged, Some(&key0()), &head), Err(ChainError::Forged { line: 6 }));
    }

    #[test]
    fn keys_evolve_one_way() {
        let k = key0();
        assert_eq!(k.at(3).unwrap().mac(b"x"), k.evolve().evolve().evolve().mac(b"x"));
        assert_ne!(k.evolve().mac(b"x"), k.mac(b"x"));
        assert!(k.evolve().at(0).is_none());
        assert!(EpochKey::from_verification_key("zz").is_none());
    }

    #[test]
    fn keys_and_hashes_are_lower_case_hex_and_keys_read_back_in_either_case() {
        assert_eq!(*key0().hex_key(), "ab".repeat(32));
        let upper = EpochKey::from_verification_key(&format!(" {}\n", "AB".repeat(32))).unwrap();
        assert_eq!(upper.mac(b"x"), key0().mac(b"x"));
        assert!(key0().mac(b"x").bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
        for bad in [
            "ab".repeat(31) + "a",
            "ab".repeat(32) + "a",
            "ab".repeat(33),
            "ab".repeat(31) + "ag",
            "ab".repeat(31) + "é",
        ] {
            assert!(EpochKey::from_verification_key(&bad).is_none(), "{bad}");
        }
        assert_eq!(sha256_hex(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}
