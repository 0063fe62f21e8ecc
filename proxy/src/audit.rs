//! The audit log: one JSON line per request and per refused connection,
//! each encoded, chained and written whole under one lock, so lines never
//! interleave and the chain follows the file order.
//!
//! Records are written by the task that ends the request, not handed to a
//! writer thread: waking a thread for every record cost more CPU than
//! encoding and writing it (about a fifth of the proxy's CPU per small
//! request, measured by `loadbench`). An append to a local file is as
//! quick as the log lines tracing already writes from the same tasks.
//!
//! Records hold names, codes and counts only — never a header value, a
//! query string or a secret (paths are scrubbed by the redactor first).
//!
//! The log is a hash chain. Each line ends with `"prev"`, the previous
//! line's hash (64 zeros for the first), and `"hash"`, the SHA-256 (hex) of
//! the line itself up to and including `prev` (the line with its `hash`
//! member removed). An edited line fails its own hash; a removed, inserted
//! or reordered line breaks the `prev` of the line after the change. On
//! start the writer continues the chain from the file's last line.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Serialize;

/// What airlock did with a request or connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Forwarded under a route.
    Allow,
    /// Refused.
    Deny,
    /// Passed through untouched (no route, egress = "tunnel").
    Tunnel,
}

/// One audit record (DESIGN.md, "Audit").
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Record {
    /// RFC 3339 UTC time the request arrived.
    pub ts: String,
    /// The request id (also in `x-airlock-request-id`).
    pub request_id: String,
    /// The tenant, when authenticated.
    pub tenant: Option<String>,
    /// The route, when one matched.
    pub route: Option<String>,
    /// The method (`CONNECT` for tunnels and refused connections).
    pub method: String,
    /// Destination host.
    pub host: String,
    /// Destination port.
    pub port: u16,
    /// Path without the query string.
    pub path: String,
    /// allow, deny or tunnel.
    pub decision: Outcome,
    /// The denial code, for denials.
    pub code: Option<String>,
    /// The status sent to the client.
    pub status: u16,
    /// Whether a secret was injected.
    pub injected: bool,
    /// Secrets scrubbed from the response.
    pub redactions: u64,
    /// True only if a secret reached the agent unscrubbed.
    pub secret_exposed: bool,
    /// Request body bytes sent upstream.
    pub bytes_up: u64,
    /// Response body bytes sent to the client.
    pub bytes_down: u64,
    /// Time from arrival to the end of the response, in milliseconds.
    pub duration_ms: u64,
    /// False when the response was cut short (upstream fault, undecodable
    /// body, or the client went away); for a WebSocket, true only when it
    /// ended with a closing handshake.
    pub complete: bool,
    /// WebSocket only: frames relayed from the agent (a fragmented message
    /// is reassembled and counts once; control frames count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames_up: Option<u64>,
    /// WebSocket only: frames relayed to the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames_down: Option<u64>,
    /// Refused proxy authentication only: how many failed authentications
    /// from one address this record stands for (it is the last of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u64>,
}

impl Record {
    /// A record with no tenant, route, code, counts or duration yet; callers
    /// fill in what they know with struct update syntax.
    pub fn new(
        ts: String,
        request_id: String,
        method: String,
        host: String,
        port: u16,
        decision: Outcome,
        status: u16,
    ) -> Self {
        Record {
            ts,
            request_id,
            tenant: None,
            route: None,
            method,
            host,
            port,
            path: String::new(),
            decision,
            code: None,
            status,
            injected: false,
            redactions: 0,
            secret_exposed: false,
            bytes_up: 0,
            bytes_down: 0,
            duration_ms: 0,
            complete: true,
            frames_up: None,
            frames_down: None,
            attempts: None,
        }
    }
}

/// The open log and the hash of its last line.
#[derive(Debug)]
struct Chain {
    /// `None` once [`AuditWriter::finish`] has closed the log.
    file: Option<fs::File>,
    prev: String,
}

/// Handle to the log. Cloning shares it.
#[derive(Clone, Debug)]
pub struct AuditLog {
    chain: Arc<Mutex<Chain>>,
}

/// Closes the log; [`AuditWriter::finish`] is the last write.
#[derive(Debug)]
pub struct AuditWriter {
    chain: Arc<Mutex<Chain>>,
}

impl AuditWriter {
    /// Closes the log after every record written so far (each is already
    /// in the file: lines are written whole, unbuffered). Records written
    /// afterwards are reported as lost.
    pub fn finish(self) {
        let mut chain = self.chain.lock().unwrap_or_else(|p| p.into_inner());
        chain.file = None;
    }
}

impl AuditLog {
    /// Opens (appending, 0600, creating directories) the log at `path`,
    /// continuing the chain from its last line.
    pub fn open(path: &Path) -> io::Result<(AuditLog, AuditWriter)> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let prev = match last_line(path)? {
            Some(line) => split_hash(&line).map(|(_, h)| h.to_owned()).unwrap_or_else(|| GENESIS.to_owned()),
            None => GENESIS.to_owned(),
        };
        let file = OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
        let chain = Arc::new(Mutex::new(Chain { file: Some(file), prev }));
        Ok((AuditLog { chain: Arc::clone(&chain) }, AuditWriter { chain }))
    }

    /// Returns once every record written so far is in the file. Each
    /// `write` has written its line before returning, so this only waits
    /// for one in progress on another thread.
    pub fn sync(&self) {
        drop(self.chain.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Writes a record as one line (one `write` of the whole line).
    pub fn write(&self, record: Record) {
        // A poisoned lock means a write panicked; the chain state is only
        // replaced after a line is written whole, so it is still valid.
        let mut chain = self.chain.lock().unwrap_or_else(|p| p.into_inner());
        let Chain { file, prev } = &mut *chain;
        let Some(file) = file else {
            tracing::error!("the audit log is closed; a record was lost");
            return;
        };
        if let Some(hash) = write_line(file, &record, prev) {
            *prev = hash;
        }
    }
}

/// The `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Serialize)]
struct Chained<'a> {
    #[serde(flatten)]
    record: &'a Record,
    prev: &'a str,
}

/// Writes one line; returns its hash, the next line's `prev`.
fn write_line(out: &mut impl Write, record: &Record, prev: &str) -> Option<String> {
    match serde_json::to_vec(&Chained { record, prev }) {
        Ok(mut line) => {
            let hash = sha256_hex(&line);
            line.pop(); // the closing brace
            line.extend_from_slice(b",\"hash\":\"");
            line.extend_from_slice(hash.as_bytes());
            line.extend_from_slice(b"\"}\n");
            if let Err(e) = out.write_all(&line) {
                tracing::error!(error = %e, "cannot write the audit log");
                return None;
            }
            Some(hash)
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot encode an audit record");
            None
        }
    }
}

/// Splits a written line into the bytes its hash covers and the hash.
fn split_hash(line: &[u8]) -> Option<(Vec<u8>, &str)> {
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

/// SHA-256 of a line, hex.
pub fn sha256_hex(line: &[u8]) -> String {
    crate::hex(ring::digest::digest(&ring::digest::SHA256, line).as_ref())
}

/// The last complete line of a file, if any.
fn last_line(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let data = match fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(data.split(|&b| b == b'\n').rfind(|l| !l.is_empty()).map(<[u8]>::to_vec))
}

/// Why the chain does not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChainError {
    /// A line is not a JSON record with a `prev`.
    #[error("line {line}: not an audit record")]
    Malformed {
        /// 1-based line number.
        line: usize,
    },
    /// A line's `prev` is not the hash of the line before it.
    #[error("line {line}: the chain is broken here (the line, or the one before it, was changed, removed or inserted)")]
    Broken {
        /// 1-based line number.
        line: usize,
    },
}

/// Checks the hash chain of an audit log's text. Returns the number of
/// records, or the first line that fails.
pub fn verify(text: &str) -> Result<usize, ChainError> {
    let mut prev = GENESIS.to_owned();
    let mut n = 0;
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let (covered, hash) = split_hash(line.as_bytes()).ok_or(ChainError::Malformed { line: line_no })?;
        let value: serde_json::Value =
            serde_json::from_slice(&covered).map_err(|_| ChainError::Malformed { line: line_no })?;
        if sha256_hex(&covered) != hash {
            return Err(ChainError::Broken { line: line_no });
        }
        if value.get("prev").and_then(|p| p.as_str()) != Some(prev.as_str()) {
            return Err(ChainError::Broken { line: line_no });
        }
        prev = hash.to_owned();
        n += 1;
    }
    Ok(n)
}

/// The current time as RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    let since = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day)
/// (Howard Hinnant's civil-from-days algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn chain_detects_tampering_at_the_line() {
        let mut out = Vec::new();
        let mut prev = GENESIS.to_owned();
        for i in 0..5 {
            let r = Record {
                tenant: Some("acme".into()),
                ..Record::new(now_rfc3339(), format!("r{i}"), "GET".into(), "h".into(), 443, Outcome::Allow, 200)
            };
            prev = write_line(&mut out, &r, &prev).unwrap();
        }
        let text = String::from_utf8(out).unwrap();
        assert_eq!(verify(&text), Ok(5));
        let tampered = text.replacen("\"status\":200", "\"status\":201", 3);
        let lines: Vec<&str> = text.lines().collect();
        let t_lines: Vec<&str> = tampered.lines().collect();
        let mut edited = lines.clone();
        edited[2] = t_lines[2];
        assert_eq!(verify(&(edited.join("\n") + "\n")), Err(ChainError::Broken { line: 3 }));
        let mut swapped = lines.clone();
        swapped.swap(1, 3);
        assert_eq!(verify(&(swapped.join("\n") + "\n")), Err(ChainError::Broken { line: 2 }));
        let mut removed = lines.clone();
        removed.remove(1);
        assert_eq!(verify(&(removed.join("\n") + "\n")), Err(ChainError::Broken { line: 2 }));
        assert_eq!(verify("not json\n"), Err(ChainError::Malformed { line: 1 }));
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_780), (2026, 11, 23));
    }
}
