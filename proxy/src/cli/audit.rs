//! `airlock audit`: prints the audit log readably (one line per record or
//! event, optionally one tenant's only) and with `--follow` keeps printing
//! as it grows; with `--verify` checks its hash chain (order, MACs, and that
//! the log still reaches its anchored head) and reports the first failure
//! with exit status 1.

use std::process::ExitCode;

use anyhow::Context;

use super::load_policy;
use airlock::audit::{EpochKey, Event, Line, Record};
use airlock::home::Home;

/// Prints the records (of `tenant` only, if given), then with `follow`
/// those written later, polling the file.
pub fn print(home: &Home, tenant: Option<&str>, follow: bool) -> anyhow::Result<ExitCode> {
    let path = load_policy(home)?.audit.path;
    let read = || std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()));
    let mut printed = 0usize;
    loop {
        let text = match read() {
            Ok(t) => t,
            Err(_) if follow => String::new(),
            Err(e) => return Err(e),
        };
        let lines: Vec<&str> = text.lines().collect();
        for line in lines.iter().skip(printed) {
            let r = match serde_json::from_str::<Line>(line) {
                Ok(Line::Record(r)) => r,
                Ok(Line::Event(e)) => {
                    if tenant.is_none() || e.tenant.as_deref() == tenant {
                        print_event(&e);
                    }
                    continue;
                }
                Err(_) => {
                    println!("(unreadable line) {line}");
                    continue;
                }
            };
            if tenant.is_some_and(|t| r.tenant.as_deref() != Some(t)) {
                continue;
            }
            print_record(&r);
        }
        printed = printed.max(lines.len());
        if !follow {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// One record on one line: decision, code, status, where, how much was
/// redacted and how long it took.
fn print_record(r: &Record) {
    println!(
        "{} {:<6} {:<26} {} {:<10} {:<12} {} {}:{}{}{} redactions={} {}ms{}{}",
        r.ts,
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
