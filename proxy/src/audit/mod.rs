//! The audit log: one JSON line per request and per refused connection,
//! plus a few lines of airlock's own (`event`: the log opened, a request
//! still running, a repair).
//!
//! Tasks encode a record and queue it ([`AuditLog::write`]); one thread
//! ([`writer`]) seals the lines onto the chain and writes them in batches,
//! so no async worker waits on the disk and lines never interleave or tear.
//! A record is queued before its response ends and written moments later
//! (within a few milliseconds):
//! a crash in between loses at most the records still queued. A request
//! running longer than a second gets a `begin` line, so one cut off by a
//! crash still leaves a trace.
//!
//! Records hold names, codes and counts only — never a header value, a
//! query string or a secret (paths are scrubbed by the redactor first).
//!
//! The chain is keyed, forward-secure and anchored: see [`chain`].

pub mod chain;
mod writer;

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

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
    /// Answered `407` for credentials it did not carry: the challenge
    /// clients such as git always start with, not a refusal.
    Challenge,
    /// A credential airlock minted for a route (an access token asked of a
    /// token endpoint), for the request whose id the record carries.
    Mint,
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
    /// The query string, scrubbed and cut like the path; absent when the
    /// request had none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
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
    /// WebSocket on a route with `websocket` kinds only: the agent's
    /// messages in which its placeholder was replaced by the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub injections: Option<u64>,
    /// Refused proxy authentication only: how many failed authentications
    /// from one address this record stands for (it is the last of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u64>,
    /// Placeholders the request body carried upstream as data, unswapped
    /// (a route without `body`, or another route's placeholder); absent
    /// when none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_placeholders: Option<u64>,
    /// A refused connection: what failed, in airlock's words (never a
    /// secret: TLS alert names, timeouts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// A refusal's message, as the agent got it (scrubbed): an operator
    /// looking up a denial by its request id reads what the agent read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// A refusal's next step, as the agent got it (scrubbed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_step: Option<String>,
    /// The request this record ends (not written): see [`AuditLog::begin`].
    #[serde(skip)]
    pub in_flight: Option<InFlight>,
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
            query: None,
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
            injections: None,
            attempts: None,
            body_placeholders: None,
            detail: None,
            message: None,
            next_step: None,
            in_flight: None,
        }
    }
}

pub use chain::{ChainError, EpochKey, GENESIS, Verified, verify};

/// Creates a seal for the log at `log` unless it has one; returns the new
/// verification key (hex) to show the operator, once.
///
/// # Errors
/// The log already has sealed lines but no seal (a new key would hide
/// whatever was done to them: the old seal must be restored, or the log
/// moved aside); or the seal or log cannot be read or written.
pub fn ensure_seal(log: &Path) -> io::Result<Option<zeroize::Zeroizing<String>>> {
    if chain::read_seal(log)?.is_some() {
        return Ok(None);
    }
    // Looked at before opening: opening a pipe would wait for a writer.
    if std::fs::metadata(log).is_ok_and(|m| m.is_file())
        && let Ok(mut f) = std::fs::File::open(log)
        && writer::read_tail(&mut f)?.last.as_deref().and_then(chain::sealed_line).is_some()
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the audit log {} has sealed records but its seal {} is missing: restore the seal, or move the log \
                 and its .head aside to start a new one",
                log.display(),
                chain::seal_path(log).display()
            ),
        ));
    }
    chain::create_seal(log).map(Some)
}

/// What an `event` line records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// airlock opened the log (a start); a new key epoch begins.
    Open,
    /// The key advanced while writing ([`chain::EPOCH_LENGTH`]).
    Epoch,
    /// The end of a key epoch, MACed under its key before the key is
    /// erased: the next `open` or `epoch` line must follow it.
    Close,
    /// A request still running after a second: if airlock dies before it
    /// ends, this is its trace. Its record follows when it ends.
    Begin,
    /// The log ended in a partial line (a crash mid-write); it was cut.
    Repaired,
    /// At start, the log no longer reached its head: records were removed.
    Missing,
    /// Records could not be written (the disk failed); they are lost.
    Lost,
}

/// One of airlock's own lines.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Event {
    /// RFC 3339 UTC time.
    pub ts: String,
    /// What happened.
    pub event: EventKind,
    /// `begin`: the request's id, tenant, method and destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// `begin`: the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// `begin`: the method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// `begin`: the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `begin`: the port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `begin`: the path (scrubbed, no query).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// A sentence for the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Event {
    /// An event of `kind`, now, with nothing else.
    pub fn new(event: EventKind) -> Event {
        Event {
            ts: now_rfc3339(),
            event,
            request_id: None,
            tenant: None,
            method: None,
            host: None,
            port: None,
            path: None,
            detail: None,
        }
    }
}

/// A line of the log: a record, or one of airlock's own events.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(untagged)]
pub enum Line {
    /// One of airlock's own lines (it has `event`).
    Event(Event),
    /// A request or refused connection.
    Record(Box<Record>),
}

/// The longest path a record keeps, in bytes; a longer one is cut (at a
/// character boundary) and ends in `…`, so a request cannot make every
/// record of it as long as the head limit allows.
pub const MAX_PATH: usize = 1024;

/// `path` cut to [`MAX_PATH`].
pub fn clip_path(mut path: String) -> String {
    if path.len() > MAX_PATH {
        let cut = (0..=MAX_PATH).rev().find(|&i| path.is_char_boundary(i)).unwrap_or(0);
        path.truncate(cut);
        path.push('…');
    }
    path
}

/// How long [`AuditWriter::finish`] waits for the disk.
pub const FINISH_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Watched requests past which [`AuditLog::begin`] prunes ended ones.
const PRUNE_AT: usize = 4096;

/// A request the writer watches until its record is written: past
/// [`writer::BEGIN_AFTER`] it gets a `begin` line.
#[derive(Debug)]
pub(crate) struct Begun {
    started: Instant,
    /// The `begin` line to write.
    line: Event,
    ended: AtomicBool,
}

/// Ties a record to its request's [`Begun`] entry; writing the record ends
/// it. Dropped unwritten, the writer forgets the request.
#[derive(Clone, Debug)]
pub struct InFlight(Arc<Begun>);

/// Handle to the log. Cloning shares it.
#[derive(Clone, Debug)]
pub struct AuditLog {
    tx: SyncSender<writer::Msg>,
    registry: Arc<writer::Registry>,
}

/// Closes the log; [`AuditWriter::finish`] is the last write.
#[derive(Debug)]
pub struct AuditWriter {
    tx: SyncSender<writer::Msg>,
    /// Disconnected when the writer thread has finished.
    done: std::sync::mpsc::Receiver<()>,
}

impl AuditWriter {
    /// Writes every record queued so far and closes the log, waiting at
    /// most [`FINISH_WAIT`] for a disk that has stopped taking writes
    /// (then the records still queued are reported as lost). Records
    /// written afterwards are reported as lost.
    pub fn finish(self) {
        let deadline = Instant::now() + FINISH_WAIT;
        let mut close = writer::Msg::Close;
        loop {
            match self.tx.try_send(close) {
                Ok(()) => break,
                Err(std::sync::mpsc::TrySendError::Full(msg)) if Instant::now() < deadline => {
                    close = msg;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(_) => break,
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = self.done.recv_timeout(left) {
            tracing::error!("the audit log did not take the last records within {FINISH_WAIT:?}; they are lost");
        }
    }
}

impl AuditLog {
    /// Opens (appending, 0600, creating directories and a seal) the log at
    /// `path` and starts its writer: see [`writer`] for what opening checks
    /// and writes.
    ///
    /// # Errors
    /// The log, its seal or its head cannot be read or written, or another
    /// airlock holds it.
    pub fn open(path: &Path) -> io::Result<(AuditLog, AuditWriter)> {
        let registry = Arc::new(Mutex::new(Vec::new()));
        let w = writer::open(path, Arc::clone(&registry))?;
        let (tx, done) = writer::spawn(w)?;
        Ok((AuditLog { tx: tx.clone(), registry }, AuditWriter { tx, done }))
    }

    /// Returns once every record queued so far is written.
    pub fn sync(&self) {
        let (ack, done) = std::sync::mpsc::channel();
        if self.tx.send(writer::Msg::Sync(ack)).is_ok() {
            let _ = done.recv();
        }
    }

    /// Starts watching a request (`begin`: its `begin` line, written if
    /// it runs past [`writer::BEGIN_AFTER`]): the record that ends it
    /// carries the returned [`InFlight`] (`Record::in_flight`).
    pub(crate) fn begin(&self, begin: Event) -> InFlight {
        let begun = Arc::new(Begun { started: Instant::now(), line: begin, ended: AtomicBool::new(false) });
        let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        // The writer prunes it every tick; while the disk stalls the
        // writer, requests prune it themselves.
        if registry.len() >= PRUNE_AT && registry.len().is_power_of_two() {
            registry.retain(|w| w.upgrade().is_some_and(|b| !b.ended.load(Ordering::Acquire)));
        }
        registry.push(Arc::downgrade(&begun));
        drop(registry);
        InFlight(begun)
    }

    /// Queues a record as one line. Waits only when [`writer::QUEUE_LINES`]
    /// records are already queued (the disk is that far behind).
    pub fn write(&self, mut record: Record) {
        if let Some(InFlight(b)) = record.in_flight.take() {
            b.ended.store(true, Ordering::Release);
        }
        match serde_json::to_vec(&record) {
            Ok(entry) => self.send(entry),
            Err(e) => tracing::error!(error = %e, "cannot encode an audit record"),
        }
    }

    /// Queues one of airlock's own lines.
    pub fn event(&self, event: &Event) {
        match serde_json::to_vec(event) {
            Ok(entry) => self.send(entry),
            Err(e) => tracing::error!(error = %e, "cannot encode an audit event"),
        }
    }

    fn send(&self, entry: Vec<u8>) {
        let msg = match self.tx.try_send(writer::Msg::Line(entry)) {
            Ok(()) => return,
            Err(std::sync::mpsc::TrySendError::Full(msg)) => msg,
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => {
                tracing::error!("the audit log is closed; a record was lost");
                return;
            }
        };
        // Back-pressure: the disk is far behind.
        tracing::warn!("the audit queue is full; waiting for the disk");
        if self.tx.send(msg).is_err() {
            tracing::error!("the audit log is closed; a record was lost");
        }
    }
}

/// The current time as RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    rfc3339(OffsetDateTime::now_utc())
}

/// The time `ago` before now, as a record's `ts` writes it (so it compares
/// with one as text).
pub fn rfc3339_before(ago: std::time::Duration) -> String {
    rfc3339(OffsetDateTime::now_utc() - ago)
}

/// `2026-11-23T08:05:09.042Z`: always milliseconds (truncated, never
/// rounded) and `Z`, so every `ts` has the same width and sorts as text.
fn rfc3339(t: OffsetDateTime) -> String {
    const FORMAT: &[BorrowedFormatItem<'_>] =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    t.to_offset(UtcOffset::UTC)
        .format(FORMAT)
        .expect("a date-time has every component the format names, and a String takes any write")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn long_paths_are_cut_at_a_character() {
        assert_eq!(clip_path("/short".into()), "/short");
        let long = format!("/{}", "é".repeat(MAX_PATH));
        let cut = clip_path(long);
        assert!(cut.len() <= MAX_PATH + '…'.len_utf8() && cut.ends_with('…'));
    }

    #[test]
    fn timestamps_are_utc_with_milliseconds() {
        let at = |secs: i64, nanos: i64| {
            rfc3339(
                OffsetDateTime::from_unix_timestamp_nanos(i128::from(secs) * 1_000_000_000 + i128::from(nanos))
                    .unwrap(),
            )
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(11_016 * 86_400 + 3_661, 7_000_000), "2000-02-29T01:01:01.007Z");
        assert_eq!(at(20_780 * 86_400 + 86_399, 999_999_999), "2026-11-23T23:59:59.999Z", "truncated");
        let cet = OffsetDateTime::from_unix_timestamp(0).unwrap().to_offset(time::macros::offset!(+1));
        assert_eq!(rfc3339(cet), "1970-01-01T00:00:00.000Z", "always written in UTC");
        let now = now_rfc3339();
        assert_eq!((now.len(), now.as_bytes()[10], now.as_bytes()[19]), (24, b'T', b'.'), "{now}");
        assert!(now.ends_with('Z'), "{now}");
    }
}
