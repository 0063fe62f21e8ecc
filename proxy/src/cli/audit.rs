//! `airlock audit`: prints the audit log readably (one line per record or
//! event, with its request id) or as stored (`--json`), filtered by tenant,
//! route, request id, time (`--since`) or refusals only (`--deny`), and
//! with `--follow` keeps printing what is appended; with `--verify` checks its hash chain (order, MACs, and that
//! the log still reaches its anchored head) and reports the first failure
//! with exit status 1.

use std::process::ExitCode;

use anyhow::Context;

use super::load_policy;
use airlock::audit::{EpochKey, Event, Line, Record};
use airlock::home::Home;

/// Which records `airlock audit` prints.
#[derive(Debug, Default)]
pub struct Filter {
    tenant: Option<String>,
    deny: bool,
    /// A `ts` (or a prefix of one): records from it on.
    since: Option<String>,
    request_id: Option<String>,
    route: Option<String>,
}

impl Filter {
    /// The filter of the command line; `since` is a duration back from now
    /// (`90s`, `10m`, `2h`, `7d`) or a UTC time as records write it, or a
    /// prefix of one (`2026-11-30`, `2026-11-30T08:00`).
    ///
    /// # Errors
    /// A `since` that is neither.
    pub fn new(
        tenant: Option<String>,
        deny: bool,
        since: Option<&str>,
        request_id: Option<String>,
        route: Option<String>,
    ) -> anyhow::Result<Filter> {
        let since = since.map(since_ts).transpose()?;
        Ok(Filter { tenant, deny, since, request_id, route })
    }

    fn record(&self, r: &Record) -> bool {
        let tenant = self.tenant.as_deref().is_none_or(|t| r.tenant.as_deref() == Some(t));
        let route = self.route.as_deref().is_none_or(|n| r.route.as_deref() == Some(n));
        let id = self.request_id.as_deref().is_none_or(|id| r.request_id == id);
        let since = self.since.as_deref().is_none_or(|s| r.ts.as_str() >= s);
        tenant && route && id && since && (!self.deny || r.decision == airlock::audit::Outcome::Deny)
    }

    fn event(&self, e: &Event) -> bool {
        let tenant = self.tenant.as_deref().is_none_or(|t| e.tenant.as_deref() == Some(t));
        let id = self.request_id.as_deref().is_none_or(|id| e.request_id.as_deref() == Some(id));
        let since = self.since.as_deref().is_none_or(|s| e.ts.as_str() >= s);
        // Events are no request's refusal and name no route.
        tenant && id && since && !self.deny && self.route.is_none()
    }
}

/// A `--since` value as the `ts` it starts at.
fn since_ts(since: &str) -> anyhow::Result<String> {
    let unit = since.chars().last().unwrap_or(' ');
    let seconds = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => 0,
    };
    if let (true, Ok(n)) = (seconds > 0, since[..since.len() - 1].parse::<u64>()) {
        return Ok(airlock::audit::rfc3339_before(std::time::Duration::from_secs(n.saturating_mul(seconds))));
    }
    let looks_like_ts = since.len() >= 4
        && since.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'T' | b':' | b'.' | b'Z'))
        && since.as_bytes()[..4].iter().all(u8::is_ascii_digit);
    anyhow::ensure!(
        looks_like_ts,
        "--since {since:?}: give a duration back from now (90s, 10m, 2h, 7d) or a UTC time (2026-11-30, \
         2026-11-30T08:00)"
    );
    Ok(since.to_owned())
}

/// Prints the records `filter` keeps (readably, or with `json` as stored),
/// then with `follow` those written later: the file is polled for what was
/// appended (read from where it was left; from its start again if it was
/// replaced by a shorter one).
pub fn print(home: &Home, filter: &Filter, follow: bool, json: bool) -> anyhow::Result<ExitCode> {
    use std::io::{Read, Seek, SeekFrom};

    let path = load_policy(home)?.audit.path;
    let mut offset = 0u64;
    let mut partial = Vec::new();
    loop {
        let mut appended = Vec::new();
        match std::fs::File::open(&path) {
            Ok(mut file) => {
                let len = file.metadata().map(|m| m.len()).unwrap_or(0);
                if len < offset {
                    offset = 0;
                    partial.clear();
                }
                file.seek(SeekFrom::Start(offset))?;
                file.take(len - offset).read_to_end(&mut appended)?;
                offset = len;
            }
            Err(_) if follow => {}
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
        partial.extend_from_slice(&appended);
        // Whole lines only: a record being written waits for its end.
        let whole = partial.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let lines: Vec<u8> = partial.drain(..whole).collect();
        for line in String::from_utf8_lossy(&lines).lines() {
            print_line(line, filter, json);
        }
        if !follow {
            // A last line without its newline is printed too.
            if !partial.is_empty() {
                print_line(&String::from_utf8_lossy(&partial), filter, json);
            }
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

fn print_line(line: &str, filter: &Filter, json: bool) {
    match serde_json::from_str::<Line>(line) {
        Ok(Line::Record(r)) if filter.record(&r) => {
            if json {
                println!("{line}");
            } else {
                print_record(&r);
            }
        }
        Ok(Line::Event(e)) if filter.event(&e) => {
            if json {
                println!("{line}");
            } else {
                print_event(&e);
            }
        }
        Ok(_) => {}
        Err(_) => println!("(unreadable line) {line}"),
    }
}

/// One record on one line: decision, code, status, where, how much was
/// redacted and how long it took.
fn print_record(r: &Record) {
    // A refusal says what the agent was told.
    let told = match (&r.message, &r.next_step) {
        (Some(m), Some(n)) => format!("\n    {m}\n    next step: {n}"),
        _ => String::new(),
    };
    println!(
        "{} {} {:<6} {:<26} {} {:<10} {:<12} {} {}:{}{}{} redactions={} {}ms{}{}{told}",
        r.ts,
        r.request_id,
        format!("{:?}", r.decision).to_lowercase(),
        r.code.as_deref().unwrap_or("-"),
        r.status,
        r.tenant.as_deref().unwrap_or("-"),
        r.route.as_deref().unwrap_or("-"),
        r.method,
        r.host,
        r.port,
        r.path,
        r.query.as_deref().map(|q| format!("?{q}")).unwrap_or_default(),
        r.redactions,
        r.duration_ms,
        if r.complete { "" } else { " (incomplete)" },
        // A coalesced record of failed authentications.
        r.attempts.map(|n| format!(" attempts={n}")).unwrap_or_default(),
    );
}

/// One of airlock's own lines: a request still running (where it went and
/// its id), or any other event with its sentence for the operator.
fn print_event(e: &Event) {
    let what = format!("{:?}", e.event).to_lowercase();
    match (&e.request_id, &e.host) {
        (Some(id), Some(host)) => println!(
            "{} {what:<6} {} {} {}:{}{} (still running; id {id})",
            e.ts,
            e.tenant.as_deref().unwrap_or("-"),
            e.method.as_deref().unwrap_or("-"),
            host,
            e.port.unwrap_or(0),
            e.path.as_deref().unwrap_or("")
        ),
        _ => println!("{} {what:<6} {}", e.ts, e.detail.as_deref().unwrap_or("")),
    }
}

/// Checks the chain and says what was checked; exit status 1 at the first
/// failure.
pub fn verify(home: &Home, key: Option<&str>) -> anyhow::Result<ExitCode> {
    let path = load_policy(home)?.audit.path;
    let key = match key {
        Some(k) => Some(
            EpochKey::from_verification_key(k)
                .context("--key must be the 64 hex digits printed when the audit seal was created")?,
        ),
        None => None,
    };
    let checked =
        airlock::audit::verify(&path, key.as_ref()).with_context(|| format!("cannot read {}", path.display()))?;
    let v = match checked {
        Ok(v) => v,
        Err(e) => {
            println!("{}: {e}", path.display());
            return Ok(ExitCode::FAILURE);
        }
    };
    let keyed = v.records - v.legacy;
    println!(
        "{}: {} records, chain intact{}",
        path.display(),
        v.records,
        if v.head_checked { " and reaching its head" } else { "" }
    );
    if key.is_some() {
        println!("  every record's MAC checked with the verification key");
    } else if keyed > 0 {
        println!(
            "  {} of {keyed} records' MACs checked (epoch {}, with the current key); pass --key with the verification \
             key to check them all",
            v.authenticated, v.last_epoch
        );
    }
    if v.legacy > 0 {
        println!("  {} records were written before the chain was keyed (plain SHA-256)", v.legacy);
    }
    if v.repaired > 0 {
        println!("  {} partial lines left by a crash were repaired at start", v.repaired);
    }
    if !v.unfinished.is_empty() {
        println!(
            "  {} requests began but have no record (airlock stopped while they ran): {}",
            v.unfinished.len(),
            v.unfinished.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}
