//! Writing the CA files: all or nothing, with their final mode from the
//! first byte, and never over an existing file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::random;

/// Creates `path` holding `bytes` with permissions `mode`.
///
/// The bytes go to a temporary sibling created with `mode` (so a key is
/// never readable by others, not even while half written), which is synced
/// and then hard-linked to `path`. Linking, unlike renaming, fails when
/// `path` exists, so a concurrent creator or an existing file is never
/// replaced: the error is then `ErrorKind::AlreadyExists`. Readers see
/// either no file or the whole file.
pub(crate) fn create_new(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let suffix = random::bytes::<8>().map(hex::encode).map_err(io::Error::other)?;
    let tmp = dir.join(format!(".{name}.{suffix}.tmp"));

    let result = write_then_link(&tmp, path, bytes, mode);
    // The temporary name is ours alone; after a link it is a second name of
    // `path`, after a failure it is debris. Either way it goes.
    let _ = fs::remove_file(&tmp);
    result?;
    // Make the new directory entry durable too. Some file systems cannot
    // sync a directory; the file itself is already synced, so that is not
    // worth failing over.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn write_then_link(tmp: &Path, path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut f = OpenOptions::new().write(true).create_new(true).mode(mode).open(tmp)?;
    // The umask may have narrowed `mode` (a 0644 certificate would become
    // unreadable to the agents that must trust it); it can only have
    // narrowed it, so this never loosens a key.
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    match fs::hard_link(tmp, path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(e),
        // A file system without hard links: fall back to a rename, which
        // is atomic but can replace, so check first (the race left open is
        // only between two creators on such a file system).
        Err(_) if path.symlink_metadata().is_ok() => Err(io::ErrorKind::AlreadyExists.into()),
        Err(_) => fs::rename(tmp, path),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;
    use crate::test_support::TempDir;

    #[test]
    fn creates_with_mode_and_leaves_no_debris() {
        let dir = TempDir::new();
        let key = dir.path().join("k.pem");
        create_new(&key, b"secret", 0o600).unwrap();
        let cert = dir.path().join("c.pem");
        create_new(&cert, b"public", 0o644).unwrap();
        assert_eq!(fs::read(&key).unwrap(), b"secret");
        assert_eq!(fs::metadata(&key).unwrap().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(&key).unwrap().nlink(), 1, "the temporary name is gone");
        assert_eq!(fs::metadata(&cert).unwrap().mode() & 0o777, 0o644);
        let mut names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert_eq!(names, ["c.pem", "k.pem"]);
    }

    #[test]
    fn never_replaces_an_existing_file() {
        let dir = TempDir::new();
        let key = dir.path().join("k.pem");
        create_new(&key, b"first", 0o600).unwrap();
        let err = create_new(&key, b"second", 0o600).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&key).unwrap(), b"first");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left behind");
    }
}
