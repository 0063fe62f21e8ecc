//! The vault side: where secret values come from, and the type that holds
//! them.
//!
//! This is the one module of the crate that reads the environment or files.
//! A [`SecretValue`] never prints its bytes (`Debug` and `Display` show
//! `[secret]`) and is zeroed when dropped; errors name the secret and the
//! source, never the value.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use zeroize::Zeroizing;

use crate::config::{SecretSource, SecretSpec};

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
    /// The secret is not declared in `[secrets]`.
    #[error("secret '{name}' is not declared in [secrets]")]
    Undeclared {
        /// The secret's name.
        name: String,
    },
}

/// Whether a name can be a secret's name (and a file name in the store).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Fetches the current value of one secret from its source.
pub fn fetch(spec: &SecretSpec, store: &Store) -> Result<SecretValue, SecretError> {
    let name = &spec.name;
    let raw = match &spec.source {
        SecretSource::Store => store.read(name)?,
        SecretSource::Env { var } => std::env::var_os(var)
            .map(|v| v.into_encoded_bytes())
            .ok_or_else(|| SecretError::EnvMissing { name: name.clone(), var: var.clone() })?,
        SecretSource::File { path } => read_private_file(name, path)?,
    };
    SecretValue::new(raw).map_err(|reason| SecretError::Invalid { name: name.clone(), reason })
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

    fn path(&self, name: &str) -> PathBuf {
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

/// Fetches and caches secret values for one loaded config. Values from
/// `store`, `env` and `file` are fetched once per config load.
#[derive(Debug)]
pub struct Vault {
    store: Store,
    cache: Mutex<HashMap<String, Arc<SecretValue>>>,
    /// Bumped whenever a value is added or changes, so the redactor knows
    /// to rebuild its patterns.
    version: std::sync::atomic::AtomicU64,
}

impl Vault {
    /// A vault over the store in `home`.
    pub fn new(home: &Path) -> Self {
        Vault { store: Store::new(home), cache: Mutex::new(HashMap::new()), version: Default::default() }
    }

    /// The current value of a secret, fetched on first use.
    pub fn get(&self, spec: &SecretSpec) -> Result<Arc<SecretValue>, SecretError> {
        if let Some(v) = self.lock().get(&spec.name) {
            return Ok(Arc::clone(v));
        }
        let value = Arc::new(fetch(spec, &self.store)?);
        self.lock().insert(spec.name.clone(), Arc::clone(&value));
        self.version.fetch_add(1, std::sync::atomic::Ordering::Release);
        Ok(value)
    }

    /// Fetches every declared secret now, so the redactor knows all values
    /// before the first response. Returns the failures.
    pub fn prefetch<'a>(&self, specs: impl Iterator<Item = &'a SecretSpec>) -> Vec<SecretError> {
        specs.filter_map(|s| self.get(s).err()).collect()
    }

    /// Every value fetched so far, by secret name.
    pub fn known(&self) -> Vec<(String, Arc<SecretValue>)> {
        self.lock().iter().map(|(k, v)| (k.clone(), Arc::clone(v))).collect()
    }

    /// Changes whenever the set of known values changes.
    pub fn version(&self) -> u64 {
        self.version.load(std::sync::atomic::Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<SecretValue>>> {
        // A poisoned lock only means another thread panicked mid-insert; the
        // map itself is still consistent.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
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
