//! The audit log: one JSON line per request and per refused connection,
//! written by a single writer thread so lines never interleave.
//!
//! Records hold names, codes and counts only — never a header value, a
//! query string or a secret.

use std::fs::{self, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::mpsc;
use std::thread;
use std::time::SystemTime;

use serde::Serialize;

/// What airlock did with a request or connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
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
#[derive(Clone, Debug, Serialize)]
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
    pub code: Option<&'static str>,
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
    /// body, or the client went away).
    pub complete: bool,
}

/// Handle to the writer thread. Cloning shares the writer.
#[derive(Clone, Debug)]
pub struct AuditLog {
    tx: mpsc::Sender<Record>,
}

/// Joins the writer thread once every [`AuditLog`] handle is dropped.
#[derive(Debug)]
pub struct AuditWriter {
    thread: thread::JoinHandle<()>,
}

impl AuditWriter {
    /// Waits until every record sent so far is on disk. Call after dropping
    /// every [`AuditLog`] handle.
    pub fn finish(self) {
        let _ = self.thread.join();
    }
}

impl AuditLog {
    /// Opens (appending, 0600, creating directories) the log at `path` and
    /// starts the writer thread.
    pub fn open(path: &Path) -> io::Result<(AuditLog, AuditWriter)> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
        let (tx, rx) = mpsc::channel::<Record>();
        let thread = thread::Builder::new().name("airlock-audit".into()).spawn(move || {
            let mut out = BufWriter::new(file);
            while let Ok(first) = rx.recv() {
                let mut next = Some(first);
                while let Some(record) = next {
                    write_line(&mut out, &record);
                    next = rx.try_recv().ok();
                }
                if let Err(e) = out.flush() {
                    tracing::error!(error = %e, "cannot write the audit log");
                }
            }
        })?;
        Ok((AuditLog { tx }, AuditWriter { thread }))
    }

    /// Queues a record for writing.
    pub fn write(&self, record: Record) {
        if self.tx.send(record).is_err() {
            tracing::error!("audit writer has stopped; a record was lost");
        }
    }
}

fn write_line(out: &mut impl Write, record: &Record) {
    match serde_json::to_vec(record) {
        Ok(mut line) => {
            line.push(b'\n');
            if let Err(e) = out.write_all(&line) {
                tracing::error!(error = %e, "cannot write the audit log");
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot encode an audit record"),
    }
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
mod tests {
    use super::civil_from_days;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_780), (2026, 11, 23));
    }
}
