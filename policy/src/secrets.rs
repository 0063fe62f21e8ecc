//! The vault side: where secret values come from, and the type that holds
//! them.
//!
//! This is the one module of the crate that reads the environment or files.
//! A [`SecretValue`] never prints its bytes (`Debug` and `Display` show
//! `[secret]`) and is zeroed when dropped; errors name the secret and the
//! source, never the value, and never quote a vault command's output (a
//! failed command's stderr goes, scrubbed, to the operator's log only).
//!
//! A vault command runs without the variables the config's `env` secrets
//! name (see [`crate::Policy::secret_env_vars`]).

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use zeroize::Zeroizing;

use crate::config::{SecretSource, SecretSpec};

mod keychain;

use keychain::{Keychain, Unanswered};

/// A secret value: printable only as `[secret]`, zeroed on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Zeroizing<Vec<u8>>);

impl SecretValue {
    /// Wraps a value, checking that it can travel in an HTTP header: not
    /// empty, and no control characters (CR, LF and NUL would let a value
    /// inject headers).
    pub fn new(value: Vec<u8>) -> Result<Self, InvalidSecret> {
        let value = Zeroizing::new(value);
        if value.is_empty() {
            return Err(InvalidSecret::Empty);
        }
        if value.iter().any(|&b| b.is_ascii_control() && b != b'\t') {
            return Err(InvalidSecret::ControlCharacters);
        }
        Ok(SecretValue(value))
    }

    /// The raw bytes. Only the injector and the redactor call this.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[secret]")
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[secret]")
    }
}

/// Why a value cannot be a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidSecret {
    /// The value is empty.
    #[error("the value is empty")]
    Empty,
    /// The value holds CR, LF, NUL or another control character.
    #[error("the value contains control characters (newline, NUL, …), which cannot go in an HTTP header")]
    ControlCharacters,
}

/// Why a secret could not be fetched. Never carries the value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The embedded store has no value under this name.
    #[error("secret '{name}' is not in the store; run `airlock secret set {name}` and type the value")]
    NotInStore {
        /// The secret's name.
        name: String,
    },
    /// The environment variable is not set (or not UTF-8).
    #[error("secret '{name}': environment variable {var} is not set in the proxy's environment")]
    EnvMissing {
        /// The secret's name.
        name: String,
        /// The variable.
        var: String,
    },
    /// A secrets file is readable by group or others.
    #[error(
        "secret '{name}': {path} is readable by group or others (mode {mode:o}); run `chmod 600 {path}`",
        path = path.display()
    )]
    LoosePermissions {
        /// The secret's name.
        name: String,
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Reading a file failed.
    #[error("secret '{name}': cannot read {path}: {error}", path = path.display())]
    Io {
        /// The secret's name.
        name: String,
        /// The file.
        path: PathBuf,
        /// The cause (in the message, so denials carry it).
        error: io::Error,
    },
    /// The fetched value is not usable.
    #[error("secret '{name}': {reason}")]
    Invalid {
        /// The secret's name.
        name: String,
        /// Why.
        reason: InvalidSecret,
    },
    /// The command could not be started.
    #[error("secret '{name}': cannot run {program}: {error}")]
    CommandStart {
        /// The secret's name.
        name: String,
        /// argv[0].
        program: String,
        /// Why.
        error: io::Error,
    },
    /// The command ran past its timeout and was killed.
    #[error("secret '{name}': {program} did not finish within {timeout:?} and was stopped")]
    CommandTimeout {
        /// The secret's name.
        name: String,
        /// argv[0].
        program: String,
        /// The limit.
        timeout: std::time::Duration,
    },
    /// The command exited unsuccessfully. The message names the program
    /// and its exit status, never its output: it reaches the agent (in a
    /// `secret_unavailable` denial), and stderr may hold the key or the
    /// vault's own token. The operator reads the summary in the log line
    /// the failure writes, or in [`SecretError::operator_message`].
    #[error("secret '{name}': {program} failed ({status}); what it wrote to stderr is in airlock's log")]
    CommandFailed {
        /// The secret's name.
        name: String,
        /// argv[0].
        program: String,
        /// Exit status.
        status: String,
        /// Its stderr, summarised and scrubbed, for the operator only.
        stderr: StderrSummary,
    },
    /// The keychain has no item for this service and account.
    #[error(
        "secret '{name}': the keychain has no item for service '{service}', account '{account}'; \
         add one (Linux: `secret-tool store --label={name} service {service} username {account}`, \
         macOS: `security add-generic-password -s {service} -a {account} -w`)"
    )]
    KeychainMissing {
        /// The secret's name.
        name: String,
        /// The item's service.
        service: String,
        /// The item's account.
        account: String,
    },
    /// The keychain could not be reached or refused to answer.
    #[error("secret '{name}': the keychain failed: {reason}")]
    KeychainFailed {
        /// The secret's name.
        name: String,
        /// Why (never the value).
        reason: String,
    },
    /// The secret is not declared in `[secrets]`.
    #[error("secret '{name}' is not declared in [secrets]")]
    Undeclared {
        /// The secret's name.
        name: String,
    },
}

impl SecretError {
    /// The name of the secret that could not be fetched.
    pub fn secret(&self) -> &str {
        match self {
            SecretError::NotInStore { name }
            | SecretError::EnvMissing { name, .. }
            | SecretError::LoosePermissions { name, .. }
            | SecretError::Io { name, .. }
            | SecretError::Invalid { name, .. }
            | SecretError::CommandStart { name, .. }
            | SecretError::CommandTimeout { name, .. }
            | SecretError::CommandFailed { name, .. }
            | SecretError::KeychainMissing { name, .. }
            | SecretError::KeychainFailed { name, .. }
            | SecretError::Undeclared { name } => name,
        }
    }

    /// The message for the operator (`airlock check`, logs): the `Display`
    /// message, but for a failed command its stderr summary in place of the
    /// pointer to the log. Never for the agent: the summary may hold what
    /// the vault does not know, such as the vault CLI's own token.
    pub fn operator_message(&self) -> String {
        match self {
            SecretError::CommandFailed { name, program, status, stderr } if stderr.as_str().is_empty() => {
                format!("secret '{name}': {program} failed ({status}) and wrote nothing to stderr")
            }
            SecretError::CommandFailed { name, program, status, stderr } => {
                format!("secret '{name}': {program} failed ({status}): {}", stderr.as_str())
            }
            other => other.to_string(),
        }
    }
}

/// How many characters of a failed command's stderr the operator sees.
pub const STDERR_SUMMARY_CHARS: usize = 300;

/// What a failed vault command wrote to stderr, summarised for the
/// operator: every value the vault knew replaced by `[REDACTED]`, its
/// non-empty lines joined with ` | `, control characters dropped, at most
/// [`STDERR_SUMMARY_CHARS`] characters.
///
/// Operator-only: it may still hold what the vault does not know (the vault
/// CLI's own token), so it has no `Display` and its `Debug` prints only its
/// length; [`StderrSummary::as_str`] is the one way to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct StderrSummary(String);

impl StderrSummary {
    /// Summarises `stderr`, replacing every occurrence of every `known`
    /// value first (so truncating cannot leave half a value that no longer
    /// matches).
    fn new<'a>(stderr: &[u8], known: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let known: Vec<&[u8]> = known.into_iter().filter(|v| !v.is_empty()).collect();
        let scrubbed = match aho_corasick::AhoCorasick::builder()
            .match_kind(aho_corasick::MatchKind::LeftmostLongest)
            .build(&known)
        {
            // Leftmost-longest: a value that contains another known value is
            // replaced whole.
            Ok(ac) => Zeroizing::new(ac.replace_all_bytes(stderr, &vec![&b"[REDACTED]"[..]; known.len()])),
            // Only a pattern set too large to compile fails; say nothing
            // rather than something unscrubbed.
            Err(_) => return StderrSummary("(stderr not shown: it could not be scrubbed)".to_owned()),
        };
        let text = String::from_utf8_lossy(&scrubbed);
        let joined = text
            .lines()
            .map(|l| l.chars().filter(|c| !c.is_control()).collect::<String>())
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.trim().to_owned())
            .collect::<Vec<_>>()
            .join(" | ");
        let mut summary: String = joined.chars().take(STDERR_SUMMARY_CHARS).collect();
        if summary.len() < joined.len() {
            summary.push('…');
        }
        StderrSummary(summary)
    }

    /// The summary, for the operator's eyes only.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for StderrSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StderrSummary({} chars)", self.0.chars().count())
    }
}

/// Whether a name can be a secret's name (and a file name in the store).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

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
fn run_command(
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
/// thread (see [`keychain`]), waiting at most `timeout`: a keychain that
/// never answers (locked, waiting on a prompt nobody sees) costs a timeout,
/// not a stuck request, and not a thread per request.
fn read_keychain(
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
fn read_os_keychain(service: &str, account: &str) -> keychain::Answer {
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
fn read_os_keychain(_service: &str, _account: &str) -> keychain::Answer {
    keychain::Answer::Failed("this build of airlock has no keychain support on this platform".to_owned())
}

/// Reads a file that must be readable by its owner only, trimming one
/// trailing newline (files written by `echo` or editors end with one).
fn read_private_file(name: &str, path: &Path) -> Result<Vec<u8>, SecretError> {
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

// === impl Store ===

/// The embedded secret store: one file per secret under
/// `AIRLOCK_HOME/secrets`, mode 0600, written atomically.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
}

/// One entry of [`Store::list`]: a name and when it was last written.
#[derive(Clone, Debug)]
pub struct StoreEntry {
    /// The secret's name.
    pub name: String,
    /// When its value was last written.
    pub modified: SystemTime,
}

impl Store {
    /// The store under `home/secrets`.
    pub fn new(home: &Path) -> Self {
        Store { dir: home.join("secrets") }
    }

    /// The directory holding the values.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where a secret's value is stored.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes a value atomically (temporary file, fsync, rename), creating
    /// the directory (0700) if needed. The file is 0600 from its creation.
    pub fn set(&self, name: &str, value: &SecretValue) -> io::Result<()> {
        if !valid_name(name) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("'{name}' is not a valid secret name (letters, digits, '_', '-', '.')"),
            ));
        }
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.dir)?;
        let tmp = self.dir.join(format!(".{name}.tmp{}", std::process::id()));
        let result = (|| {
            let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
            f.write_all(value.expose())?;
            f.sync_all()?;
            fs::rename(&tmp, self.path(name))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Reads a value; refuses a file readable by group or others.
    pub fn read(&self, name: &str) -> Result<Vec<u8>, SecretError> {
        let path = self.path(name);
        match read_private_file(name, &path) {
            Err(SecretError::Io { error, .. }) if error.kind() == io::ErrorKind::NotFound => {
                Err(SecretError::NotInStore { name: name.to_owned() })
            }
            other => other,
        }
    }

    /// Removes a value. Returns whether it existed.
    pub fn remove(&self, name: &str) -> io::Result<bool> {
        match fs::remove_file(self.path(name)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Lists the names in the store with their ages; never reads a value.
    pub fn list(&self) -> io::Result<Vec<StoreEntry>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else { continue };
            if !valid_name(&name) {
                continue;
            }
            out.push(StoreEntry { name, modified: entry.metadata()?.modified()? });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Sets a file's permissions to 0600 (used to repair).
    pub fn restrict(path: &Path) -> io::Result<()> {
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))
    }
}

// === impl Vault ===

/// How long a replaced value stays in [`Vault::known`], so responses that
/// still echo the old key (in-flight requests, upstream caches) are
/// scrubbed after a rotation.
pub const RETIRED_GRACE: Duration = Duration::from_secs(600);

/// What identifies a file's content without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = fs::metadata(path).ok()?;
    Some(Stamp { modified: m.modified().ok(), len: m.len(), inode: m.ino() })
}

#[derive(Debug)]
struct Entry {
    value: Arc<SecretValue>,
    fetched: Instant,
    stamp: Option<Stamp>,
    /// The spec it was fetched under: a reload keeps the value while the
    /// spec stays the same.
    spec: SecretSpec,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<String, Entry>,
    retired: Vec<(String, Arc<SecretValue>, Instant)>,
}

/// Fetches and caches secret values.
///
/// - `store` and `file` values are re-read when the file changes (checked
///   with one `stat` per use), so `airlock secret set` takes effect on the
///   next request; `env` values are read once per config load;
///   `command` values are cached for their `ttl` (default 5 minutes).
/// - Concurrent uses that need a fetch share one fetch. Keychain reads all
///   go through one thread per vault, each caller waiting at most its
///   `timeout` (see the `keychain` module).
/// - A failed refresh keeps serving the last good value, with a warning,
///   until it is twice its `ttl` old.
/// - A replaced value stays known for [`RETIRED_GRACE`] so the redactor
///   still scrubs it.
#[derive(Debug)]
pub struct Vault {
    store: Store,
    state: Mutex<State>,
    fetch_locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// The one thread that reads the OS keychain.
    keychain: Keychain,
    /// Bumped whenever the set of known values changes, so the redactor
    /// knows to rebuild its patterns.
    version: AtomicU64,
    fetches: AtomicU64,
}

impl Vault {
    /// A vault over the store in `home`.
    pub fn new(home: &Path) -> Self {
        Vault {
            store: Store::new(home),
            state: Mutex::new(State::default()),
            fetch_locks: Mutex::new(HashMap::new()),
            keychain: Keychain::new(Arc::new(read_os_keychain)),
            version: AtomicU64::new(0),
            fetches: AtomicU64::new(0),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means another thread panicked mid-update; the
        // maps themselves stay consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn file_of(&self, spec: &SecretSpec) -> Option<PathBuf> {
        match &spec.source {
            SecretSource::Store => Some(self.store.path(&spec.name)),
            SecretSource::File { path } => Some(path.clone()),
            _ => None,
        }
    }

    /// The cached value when it is still good, without fetching.
    pub fn cached(&self, spec: &SecretSpec) -> Option<Arc<SecretValue>> {
        let (value, then) = {
            let state = self.state();
            let e = state.entries.get(&spec.name)?;
            if spec.ttl.is_some_and(|ttl| e.fetched.elapsed() >= ttl) {
                return None;
            }
            (Arc::clone(&e.value), e.stamp)
        };
        // The file is looked at outside the lock every request takes.
        if let Some(path) = self.file_of(spec)
            && stamp(&path) != then
        {
            return None;
        }
        Some(value)
    }

    /// Fetches the current value of one secret from its source.
    fn fetch(&self, spec: &SecretSpec) -> Result<SecretValue, SecretError> {
        let name = &spec.name;
        let raw = match &spec.source {
            SecretSource::Store => self.store.read(name)?,
            SecretSource::Env { var } => std::env::var_os(var)
                .map(|v| v.into_encoded_bytes())
                .ok_or_else(|| SecretError::EnvMissing { name: name.clone(), var: var.clone() })?,
            SecretSource::File { path } => read_private_file(name, path)?,
            SecretSource::Command { argv, timeout, withheld_env } => {
                let known = || self.known().into_iter().map(|(_, v)| v).collect();
                run_command(name, argv, *timeout, withheld_env, &known)?
            }
            SecretSource::Keychain { service, account, timeout } => {
                read_keychain(&self.keychain, name, service, account, *timeout)?
            }
        };
        SecretValue::new(raw).map_err(|reason| SecretError::Invalid { name: name.clone(), reason })
    }

    /// The current value of a secret, fetching when the cached one is
    /// missing or stale. May block (a `command` source runs a process):
    /// call it off the async runtime's worker threads.
    pub fn get(&self, spec: &SecretSpec) -> Result<Arc<SecretValue>, SecretError> {
        if let Some(v) = self.cached(spec) {
            return Ok(v);
        }
        let lock = {
            let mut locks = self.fetch_locks.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(locks.entry(spec.name.clone()).or_default())
        };
        // The keychain reader shares one read among concurrent callers
        // itself, each waiting only its own timeout; queued behind this
        // lock, the n-th caller of a hanging keychain would wait n timeouts.
        let _one_fetch = match spec.source {
            SecretSource::Keychain { .. } => None,
            _ => Some(lock.lock().unwrap_or_else(|p| p.into_inner())),
        };
        // Someone else may have fetched while we waited.
        if let Some(v) = self.cached(spec) {
            return Ok(v);
        }
        let before = self.file_of(spec).and_then(|p| stamp(&p));
        self.fetches.fetch_add(1, Ordering::Relaxed);
        match self.fetch(spec) {
            Ok(value) => {
                let value = Arc::new(value);
                let mut state = self.state();
                let old = state.entries.insert(
                    spec.name.clone(),
                    Entry { value: Arc::clone(&value), fetched: Instant::now(), stamp: before, spec: spec.clone() },
                );
                match old {
                    Some(old) if old.value != value => {
                        state.retired.push((spec.name.clone(), old.value, Instant::now() + RETIRED_GRACE));
                        self.version.fetch_add(1, Ordering::Release);
                    }
                    Some(_) => {}
                    None => {
                        self.version.fetch_add(1, Ordering::Release);
                    }
                }
                Ok(value)
            }
            Err(e) => {
                let state = self.state();
                if let Some(old) = state.entries.get(&spec.name) {
                    let usable = match spec.ttl {
                        Some(ttl) => old.fetched.elapsed() < ttl * 2,
                        None => false,
                    };
                    if usable {
                        tracing::warn!(secret = %spec.name, error = %e, "refresh failed; serving the last good value");
                        return Ok(Arc::clone(&old.value));
                    }
                }
                Err(e)
            }
        }
    }

    /// Fetches every declared secret now, so the redactor knows all values
    /// before the first response. Returns the failures.
    ///
    /// `command` secrets come last: a failing command's stderr is scrubbed
    /// of the values the vault knows, so it should know the others first.
    pub fn prefetch<'a>(&self, specs: impl Iterator<Item = &'a SecretSpec>) -> Vec<SecretError> {
        let (commands, others): (Vec<_>, Vec<_>) =
            specs.partition(|s| matches!(s.source, SecretSource::Command { .. }));
        others.into_iter().chain(commands).filter_map(|s| self.get(s).err()).collect()
    }

    /// Forgets the cached values a new config changes (a reload): those of
    /// secrets it no longer declares or declares differently, and every
    /// `env` one (read once per config load). The rest are kept, not
    /// fetched again (a slow `command` is not rerun for an unrelated
    /// edit). Forgotten values stay known for [`RETIRED_GRACE`] so the
    /// redactor still knows them.
    pub fn retire_changed<'a>(&self, specs: impl Iterator<Item = &'a SecretSpec>) {
        let specs: HashMap<&str, &SecretSpec> = specs.map(|s| (s.name.as_str(), s)).collect();
        let mut state = self.state();
        let until = Instant::now() + RETIRED_GRACE;
        let names: Vec<String> = state.entries.keys().cloned().collect();
        let mut changed = false;
        for name in names {
            let keep = specs.get(name.as_str()).is_some_and(|spec| {
                **spec == state.entries[&name].spec && !matches!(spec.source, SecretSource::Env { .. })
            });
            if !keep && let Some(e) = state.entries.remove(&name) {
                state.retired.push((name, e.value, until));
                changed = true;
            }
        }
        if changed {
            self.version.fetch_add(1, Ordering::Release);
        }
    }

    /// Every value the redactor must scrub: current and recently replaced,
    /// by secret name.
    pub fn known(&self) -> Vec<(String, Arc<SecretValue>)> {
        let mut state = self.state();
        let now = Instant::now();
        let before = state.retired.len();
        state.retired.retain(|(_, _, until)| *until > now);
        if state.retired.len() != before {
            self.version.fetch_add(1, Ordering::Release);
        }
        let mut out: Vec<(String, Arc<SecretValue>)> =
            state.entries.iter().map(|(k, e)| (k.clone(), Arc::clone(&e.value))).collect();
        out.extend(state.retired.iter().map(|(k, v, _)| (k.clone(), Arc::clone(v))));
        out
    }

    /// Changes whenever the set of known values changes.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Fetches performed so far (for tests and `airlock check`).
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tempdir(tag: &str) -> PathBuf {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).unwrap();
        let d = std::env::temp_dir().join(format!("airlock-secrets-{tag}-{:x}", u64::from_le_bytes(b)));
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn secret_value_never_prints() {
        let v = SecretValue::new(b"sk_live_abc".to_vec()).unwrap();
        assert_eq!(format!("{v:?} {v}"), "[secret] [secret]");
        assert_eq!(SecretValue::new(Vec::new()), Err(InvalidSecret::Empty));
        assert_eq!(SecretValue::new(b"a\r\nb".to_vec()), Err(InvalidSecret::ControlCharacters));
    }

    #[test]
    fn stderr_summaries_replace_known_values_and_stay_short() {
        let (key, longer) = (&b"sk_live_key"[..], &b"sk_live_key_and_more"[..]);
        let stderr = b"\n  error: sk_live_key_and_more rejected\r\n\x1b[31mretry with sk_live_key\x1b[0m\n\n";
        let s = StderrSummary::new(stderr, [key, longer, &b""[..]]);
        assert_eq!(s.as_str(), "error: [REDACTED] rejected | [31mretry with [REDACTED][0m");
        assert_eq!(format!("{s:?}"), "StderrSummary(57 chars)", "Debug never prints the text");
        // Scrubbed before it is cut: a value across the cut is not half left.
        let mut long = vec![b'x'; STDERR_SUMMARY_CHARS - 4];
        long.extend_from_slice(key);
        let s = StderrSummary::new(&long, [key]);
        assert!(s.as_str().ends_with("xxxx[RED…"), "{}", s.as_str());
        assert_eq!(s.as_str().chars().count(), STDERR_SUMMARY_CHARS + 1);
        assert!(!s.as_str().contains("sk_"));
    }

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

    #[test]
    fn store_round_trip_is_private() {
        let home = tempdir("store");
        let store = Store::new(&home);
        let v = SecretValue::new(b"value-1".to_vec()).unwrap();
        store.set("k", &v).unwrap();
        let mode = fs::metadata(home.join("secrets/k")).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(store.read("k").unwrap(), b"value-1");
        assert_eq!(store.list().unwrap().iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["k"]);
        assert!(matches!(store.read("missing"), Err(SecretError::NotInStore { .. })));
        assert!(store.set("../x", &v).is_err());
        fs::set_permissions(home.join("secrets/k"), fs::Permissions::from_mode(0o644)).unwrap();
        let err = store.read("k").unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        assert!(store.remove("k").unwrap());
        assert!(!store.remove("k").unwrap());
        fs::remove_dir_all(home).unwrap();
    }
}
