//! The embedded secret store: one file per secret under
//! `AIRLOCK_HOME/secrets`, each readable by its owner only.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::sources::read_private_file;
use super::{SecretError, SecretValue, valid_name};

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
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;
    use crate::secrets::test_dir as tempdir;

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
