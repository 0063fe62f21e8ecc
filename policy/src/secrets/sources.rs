//! The readers of each source: a vault command's stdout, a private file,
//! the OS keychain (through the vault's keychain thread). The environment
//! is read by the vault itself, one call.
//!
//! A value read here is never logged or put in an error. A failed
//! command's stderr is summarised and scrubbed for the operator only.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use zeroize::Zeroizing;

use super::keychain::{self, Keychain, Unanswered};
use super::{SecretError, SecretValue, StderrSummary};

/// Runs a vault command (no shell) and returns its stdout, trimmed. Stdout
/// is never logged or put in an error. When the command fails, its stderr
/// is summarised with every value `known` returns replaced, logged for the
/// operator, and kept out of the error's message (which the agent reads).
///
/// The command inherits airlock's environment except `withheld` (the
/// variables of the config's `env` secrets). It gets no clean, allow-listed
/// environment: vault CLIs read their own credentials and settings from
/// variables no list could name in full (`OP_SERVICE_ACCOUNT_TOKEN`,
/// `OP_SESSION_*`, `VAULT_ADDR`/`VAULT_TOKEN`, `DOPPLER_TOKEN`,
/// `INFISICAL_TOKEN`, `AWS_*`, `GNUPGHOME` for `pass`, the D-Bus address,
/// `HOME`, proxies…), and the command is the operator's own program, trusted
/// with those already. What it never needs is another secret's value.
pub(super) fn run_command(
    name: &str,
    argv: &[String],
    timeout: Duration,
    withheld: &[String],
    known: &dyn Fn() -> Vec<Arc<SecretValue>>,
) -> Result<Vec<u8>, SecretError> {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let program = argv.first().cloned().unwrap_or_default();
    let mut command = Command::new(&program);
    for var in withheld {
        command.env_remove(var);
    }
    // Its own process group: everything it starts is killed with it.
    let mut child = command
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|error| SecretError::CommandStart { name: name.to_owned(), program: program.clone(), error })?;
    let group = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    let kill_group = || {
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    };
    // Read both pipes on their own threads so a chatty command cannot block
    // on a full pipe while we wait for it.
    let out_reader = read_pipe(child.stdout.take(), u64::MAX);
    let err_reader = read_pipe(child.stderr.take(), 64 * 1024);
    let deadline = std::time::Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if std::time::Instant::now() >= deadline => {
                kill_group();
                let _ = child.wait();
                return Err(SecretError::CommandTimeout { name: name.to_owned(), program, timeout });
            }
            Ok(None) => std::thread::sleep(std::time::Duration::from_millis(5)),
            Err(error) => {
                kill_group();
                return Err(SecretError::CommandStart { name: name.to_owned(), program, error });
            }
        }
    };
    // The command is done, and so is anything it left behind: a background
    // process holding its output would keep the pipes open (and the fetch
    // waiting) for as long as it lives.
    kill_group();
    let collect = |rx: std::sync::mpsc::Receiver<zeroize::Zeroizing<Vec<u8>>>| {
        // A process that left the group (setsid) may still hold a pipe: its
        // output is not waited for past the command's timeout.
        rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()).max(Duration::from_millis(100)))
            .unwrap_or_default()
    };
    let stdout = collect(out_reader);
    let stderr = collect(err_reader);
    if !status.success() {
        let known = known();
        let summary = StderrSummary::new(&stderr, known.iter().map(|v| v.expose()));
        let status =
            status.code().map(|c| format!("exit status {c}")).unwrap_or_else(|| "killed by a signal".to_owned());
        tracing::warn!(secret = %name, %program, %status, stderr = summary.as_str(), "vault command failed");
        return Err(SecretError::CommandFailed { name: name.to_owned(), program, status, stderr: summary });
    }
    Ok(stdout.trim_ascii().to_vec())
}

/// Reads up to `limit` bytes of a child's pipe on a thread of its own;
/// the receiver gets them once the pipe closes. (They may hold the key,
/// stderr too: zeroed when dropped.)
fn read_pipe<R: std::io::Read + Send + 'static>(
    pipe: Option<R>,
    limit: u64,
) -> std::sync::mpsc::Receiver<zeroize::Zeroizing<Vec<u8>>> {
    use std::io::Read;
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::spawn(move || {
        let mut buf = zeroize::Zeroizing::new(Vec::new());
        if let Some(p) = pipe {
            let _ = p.take(limit).read_to_end(&mut buf);
        }
        let _ = tx.send(buf);
    });
    rx
}

/// Reads one item from the OS keychain through the vault's one keychain
/// thread (see [`super::keychain`]), waiting at most `timeout`: a keychain that
/// never answers (locked, waiting on a prompt nobody sees) costs a timeout,
/// not a stuck request, and not a thread per request.
pub(super) fn read_keychain(
    keychain: &Keychain,
    name: &str,
    service: &str,
    account: &str,
    timeout: Duration,
) -> Result<Vec<u8>, SecretError> {
    let failed = |reason: String| SecretError::KeychainFailed { name: name.to_owned(), reason };
    match keychain.read(service, account, timeout) {
        Ok(keychain::Answer::Value(value)) => Ok(value.to_vec()),
        Ok(keychain::Answer::Missing) => Err(SecretError::KeychainMissing {
            name: name.to_owned(),
            service: service.to_owned(),
            account: account.to_owned(),
        }),
        Ok(keychain::Answer::Failed(reason)) => Err(failed(reason)),
        Err(Unanswered::Timeout) => {
            Err(failed(format!("no answer within {timeout:?} (a locked keychain may be waiting for a prompt)")))
        }
        Err(Unanswered::Busy) => {
            Err(failed(format!("it is not answering: {} other reads already wait for it", keychain::QUEUE)))
        }
        Err(Unanswered::NoThread(e)) => Err(failed(format!("cannot start the keychain reader: {e}"))),
    }
}

/// Reads one item from the OS keychain; blocks as long as the keychain
/// does. Runs on the keychain thread only.
#[cfg(any(target_os = "linux", target_os = "macos"))]
pub(super) fn read_os_keychain(service: &str, account: &str) -> keychain::Answer {
    use keychain::Answer;
    use keyring::Error as K;
    match keyring::Entry::new(service, account).and_then(|entry| entry.get_secret()) {
        Ok(value) => Answer::Value(Zeroizing::new(value)),
        Err(K::NoEntry) => Answer::Missing,
        Err(K::Ambiguous(items)) => Answer::Failed(format!(
            "{} items match service '{service}', account '{account}'; remove all but one",
            items.len()
        )),
        Err(K::NoStorageAccess(e)) => Answer::Failed(format!("cannot access the keychain (is it locked?): {e}")),
        Err(K::PlatformFailure(e)) => Answer::Failed(format!(
            "{e} (on Linux this needs a Secret Service such as gnome-keyring on the session D-Bus)"
        )),
        // The remaining kinds are about attributes, never the value; print
        // only the kind to be sure.
        Err(K::BadEncoding(_)) => Answer::Failed("the item is not valid UTF-8".to_owned()),
        Err(K::TooLong(attr, limit)) => Answer::Failed(format!("{attr} is longer than {limit}")),
        Err(K::Invalid(attr, why)) => Answer::Failed(format!("{attr} is invalid: {why}")),
        Err(_) => Answer::Failed("unexpected keychain error".to_owned()),
    }
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
pub(super) fn read_os_keychain(_service: &str, _account: &str) -> keychain::Answer {
    keychain::Answer::Failed("this build of airlock has no keychain support on this platform".to_owned())
}

/// Reads a file that must be readable by its owner only, trimming one
/// trailing newline (files written by `echo` or editors end with one).
pub(super) fn read_private_file(name: &str, path: &Path) -> Result<Vec<u8>, SecretError> {
    let io_err = |error| SecretError::Io { name: name.to_owned(), path: path.to_owned(), error };
    let meta = fs::metadata(path).map_err(io_err)?;
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretError::LoosePermissions { name: name.to_owned(), path: path.to_owned(), mode });
    }
    let mut value = fs::read(path).map_err(io_err)?;
    trim_newline(&mut value);
    Ok(value)
}

/// Removes one trailing `\n` or `\r\n`.
pub fn trim_newline(value: &mut Vec<u8>) {
    if value.last() == Some(&b'\n') {
        value.pop();
        if value.last() == Some(&b'\r') {
            value.pop();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::secrets::test_dir as tempdir;

    #[test]
    fn a_failed_command_is_summarised_for_the_operator_only() {
        let argv: Vec<String> =
            ["sh", "-c", "echo 'vault: denied for sk_known_value_1 (token hvs_abc)' >&2; echo sk_stdout; exit 7"]
                .map(String::from)
                .into();
        let known = || vec![Arc::new(SecretValue::new(b"sk_known_value_1".to_vec()).unwrap())];
        let e = run_command("k", &argv, Duration::from_secs(10), &[], &known).unwrap_err();
        let agent = e.to_string();
        assert_eq!(agent, "secret 'k': sh failed (exit status 7); what it wrote to stderr is in airlock's log");
        assert_eq!(e.secret(), "k");
        let operator = e.operator_message();
        assert_eq!(operator, "secret 'k': sh failed (exit status 7): vault: denied for [REDACTED] (token hvs_abc)");
        assert!(!format!("{e:?}").contains("hvs_abc"), "Debug never prints stderr");
        let quiet: Vec<String> = ["sh", "-c", "exit 1"].map(String::from).into();
        let e = run_command("q", &quiet, Duration::from_secs(10), &[], &Vec::new).unwrap_err();
        assert!(e.operator_message().ends_with("wrote nothing to stderr"), "{}", e.operator_message());
    }

    #[test]
    fn a_command_inherits_the_environment_but_withheld_variables() {
        // Set by cargo for the test process; changing the environment of a
        // multi-threaded test process is not sound.
        let var = "CARGO_MANIFEST_DIR";
        assert!(std::env::var_os(var).is_some(), "cargo sets {var} for tests");
        let argv: Vec<String> =
            ["sh", "-c", "printf '%s/%s' \"${CARGO_MANIFEST_DIR-withheld}\" \"${CARGO_PKG_NAME-withheld}\""]
                .map(String::from)
                .into();
        let out = run_command("e", &argv, Duration::from_secs(10), &[var.to_owned()], &Vec::new).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), format!("withheld/{}", env!("CARGO_PKG_NAME")));
    }

    /// A command that leaves a process behind holding its output (a
    /// background job, a daemon that did not close its stdio) is done when
    /// the command is: the process is killed with the command's group, and
    /// the value is what the command wrote. Before, the read waited for the
    /// grandchild to exit, and it lived on after the fetch.
    #[test]
    fn a_process_a_command_leaves_behind_does_not_hold_the_fetch() {
        let marker = tempdir("grandchild").join("alive");
        let script = format!("(sleep 3; touch {}) & echo sk_from_parent", marker.display());
        let argv = vec!["sh".to_owned(), "-c".to_owned(), script];
        let started = std::time::Instant::now();
        let out = run_command("g", &argv, Duration::from_secs(2), &[], &Vec::new).unwrap();
        assert_eq!(out, b"sk_from_parent");
        assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
        // The grandchild went with the group: it never got to touch the file.
        std::thread::sleep(Duration::from_secs(4));
        assert!(!marker.exists(), "the left-behind process lived on");
    }

    /// A command that times out is killed with everything it started, and
    /// the fetch returns at the timeout, not when the last of them exits.
    #[test]
    fn a_timed_out_command_is_killed_with_its_group() {
        let marker = tempdir("timeout").join("alive");
        let script = format!("(sleep 3; touch {}) & sleep 60", marker.display());
        let argv = vec!["sh".to_owned(), "-c".to_owned(), script];
        let started = std::time::Instant::now();
        let e = run_command("t", &argv, Duration::from_secs(1), &[], &Vec::new).unwrap_err();
        assert!(matches!(e, SecretError::CommandTimeout { .. }), "{e}");
        assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
        std::thread::sleep(Duration::from_secs(4));
        assert!(!marker.exists(), "a process of the timed-out command lived on");
    }
}
