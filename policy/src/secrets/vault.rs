//! The vault: fetches secret values from their sources and caches them,
//! and knows every value the redactor must scrub.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::keychain::Keychain;
use super::sources::{read_keychain, read_os_keychain, read_private_file, run_command};
use super::{SecretError, SecretSource, SecretSpec, SecretValue, Store};

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
    /// Values airlock minted (OAuth2 access tokens), by the name their
    /// route knows them by.
    minted: HashMap<String, Arc<SecretValue>>,
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
        let value = if spec.pem { SecretValue::new_pem(raw) } else { SecretValue::new(raw) };
        value.map_err(|reason| SecretError::Invalid { name: name.clone(), reason })
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

    /// Makes `value`, which airlock minted (an access token), known to the
    /// redactor under `name`; the value it replaces stays known for
    /// `grace` (at most [`RETIRED_GRACE`]: a provider minting a token per
    /// request must not grow the list for ten minutes).
    pub fn remember_minted(&self, name: &str, value: Arc<SecretValue>, grace: Duration) {
        let mut state = self.state();
        if let Some(old) = state.minted.insert(name.to_owned(), value) {
            state.retired.push((name.to_owned(), old, Instant::now() + grace.min(RETIRED_GRACE)));
        }
        self.version.fetch_add(1, Ordering::Release);
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
        out.extend(state.minted.iter().map(|(k, v)| (k.clone(), Arc::clone(v))));
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
