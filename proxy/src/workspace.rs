//! Workspaces: folders bound to a tenant by `airlock connect`. The binding
//! is a small marker file in the folder ([`MARKER`], holding the tenant's
//! name and no secret), found by walking up from the current directory, so
//! `airlock run`, `env` and `mcp` anywhere inside a client's folder act as
//! its tenant without flags. AIRLOCK_HOME keeps the list of folders it has
//! bound ([`REGISTRY`]), for `airlock status` and to honour only its own
//! bindings: a marker that came with a cloned repository, or that an agent
//! wrote, names no tenant until the operator binds the folder.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The marker file's name.
pub const MARKER: &str = ".airlock-workspace.toml";

/// The list of bound folders, in AIRLOCK_HOME.
pub const REGISTRY: &str = "workspaces.json";

/// A folder bound to a tenant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workspace {
    /// The folder (absolute).
    pub dir: PathBuf,
    /// The tenant's name.
    pub tenant: String,
}

/// A marker that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct MarkerError {
    /// The marker file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub message: String,
}

/// The workspace `from` is in: the nearest folder, `from` or above it,
/// with a marker; None when there is none. Its binding is not checked
/// against a home: see [`find_bound`].
pub fn find(from: &Path) -> Result<Option<Workspace>, MarkerError> {
    for dir in from.ancestors() {
        let path = dir.join(MARKER);
        match read_small(&path) {
            Ok(text) => {
                let tenant = read_marker(&text).map_err(|message| MarkerError { path: path.clone(), message })?;
                let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
                return Ok(Some(Workspace { dir, tenant }));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(MarkerError { path, message: e.to_string() }),
        }
    }
    Ok(None)
}

/// The longest marker read: it holds one short line.
const MAX_MARKER: u64 = 4096;

/// A marker's text: a regular file (not a FIFO or device, which could
/// block or never end) of at most [`MAX_MARKER`] bytes.
fn read_small(path: &Path) -> io::Result<String> {
    let meta = fs::metadata(path)?;
    if !meta.is_file() || meta.len() > MAX_MARKER {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("not a file of at most {MAX_MARKER} bytes")));
    }
    let mut text = String::new();
    io::Read::read_to_string(&mut io::Read::take(fs::File::open(path)?, MAX_MARKER), &mut text)?;
    Ok(text)
}

/// A marker found that `home` did not write (see [`find_bound`]).
#[derive(Debug)]
pub struct Unbound {
    /// The marker file.
    pub path: PathBuf,
    /// The tenant it names.
    pub tenant: String,
}

impl std::fmt::Display for Unbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} names tenant '{}', but this AIRLOCK_HOME did not bind the folder to it (a marker can come with a \
             cloned repository); it is ignored. To use it: airlock connect {} --tenant NAME",
            self.path.display(),
            self.tenant,
            self.path.parent().unwrap_or(Path::new(".")).display()
        )
    }
}

/// The workspace `from` is in, as `home` bound it: the nearest marker
/// when `home` wrote it there for the tenant it names; else None, with
/// the marker found (one a repository brought with it, another home's, or
/// one edited since) as [`Unbound`], so a folder never picks a tenant the
/// operator did not bind it to.
pub fn find_bound(home: &Path, from: &Path) -> Result<(Option<Workspace>, Option<Unbound>), MarkerError> {
    let Some(found) = find(from)? else { return Ok((None, None)) };
    if registered(home).contains(&found) {
        return Ok((Some(found), None));
    }
    Ok((None, Some(Unbound { path: found.dir.join(MARKER), tenant: found.tenant })))
}

/// The tenant a marker names: its one key, `tenant`, a string.
fn read_marker(text: &str) -> Result<String, String> {
    let doc: toml_edit::DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| e.message().to_owned())?;
    if let Some((key, _)) = doc.iter().find(|(k, _)| *k != "tenant") {
        return Err(format!("unknown key {key:?}"));
    }
    doc.get("tenant").and_then(toml_edit::Item::as_str).map(str::to_owned).ok_or_else(|| "no tenant (a string)".into())
}

/// Binds `dir` to `tenant`: writes its marker (replacing one there) and
/// adds it to `home`'s registry.
pub fn bind(home: &Path, dir: &Path, tenant: &str) -> io::Result<Workspace> {
    let dir = dir.canonicalize()?;
    let text = format!(
        "# This folder is an airlock workspace: `airlock run`, `airlock env` and `airlock mcp`\n# run here (and in \
         every folder below) as this tenant. It holds no secret.\ntenant = {}\n",
        toml_edit::value(tenant).into_value().map(|v| v.to_string()).unwrap_or_default().trim()
    );
    let marker = dir.join(MARKER);
    if fs::symlink_metadata(&marker).is_ok_and(|m| !m.is_file()) {
        return Err(io::Error::other(format!("{} is not a regular file; not written", marker.display())));
    }
    fs::write(&marker, text)?;
    let workspace = Workspace { dir, tenant: tenant.to_owned() };
    // The registry is read, changed and written under a lock, so bindings
    // made at once all land.
    let lock =
        fs::OpenOptions::new().create(true).truncate(false).write(true).open(home.join(format!(".{REGISTRY}.lock")))?;
    let _lock =
        nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| io::Error::from(e))?;
    let mut all = registered(home);
    all.retain(|w| w.dir != workspace.dir);
    all.push(workspace.clone());
    all.sort_by(|a, b| a.dir.cmp(&b.dir));
    let json = serde_json::to_string_pretty(&all).map_err(io::Error::other)?;
    let tmp = home.join(format!(".{REGISTRY}.{}.tmp", std::process::id()));
    fs::write(&tmp, json + "\n")?;
    fs::rename(&tmp, home.join(REGISTRY))?;
    Ok(workspace)
}

/// The folders `home` has bound, as its registry lists them (an
/// unreadable registry lists none).
pub fn registered(home: &Path) -> Vec<Workspace> {
    fs::read_to_string(home.join(REGISTRY)).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_is_found_from_any_folder_below_it() {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).unwrap();
        let root = std::env::temp_dir().join(format!("airlock-ws-{}", hex::encode(b)));
        let (home, client) = (root.join("home"), root.join("clients/acme"));
        fs::create_dir_all(client.join("src/deep")).unwrap();
        fs::create_dir_all(&home).unwrap();
        assert_eq!(find(&client.join("src/deep")).unwrap(), None);
        let bound = bind(&home, &client, "acme \"quoted\"").unwrap();
        let found = find(&client.join("src/deep")).unwrap().unwrap();
        assert_eq!(found, bound);
        assert_eq!(found.tenant, "acme \"quoted\"");
        assert_eq!(registered(&home), vec![bound.clone()]);
        bind(&home, &client, "beta").unwrap();
        assert_eq!(registered(&home).len(), 1, "bound again, listed once");
        // A marker this home did not write for that tenant names nothing.
        fs::write(client.join(MARKER), "tenant = \"acme\"\n").unwrap();
        let (none, unbound) = find_bound(&home, &client.join("src")).unwrap();
        assert!(none.is_none());
        let e = unbound.unwrap();
        assert_eq!(e.path, client.canonicalize().unwrap().join(MARKER));
        assert!(e.to_string().contains("did not bind the folder") && e.to_string().contains("ignored"), "{e}");
        let other = root.join("clients/other");
        fs::create_dir_all(&other).unwrap();
        fs::write(other.join(MARKER), "tenant = \"beta\"\n").unwrap();
        assert!(find_bound(&home, &other).unwrap().0.is_none(), "a marker no home bound");
        assert!(matches!(find_bound(&home, &root).unwrap(), (None, None)));
        bind(&home, &client, "acme").unwrap();
        assert_eq!(find_bound(&home, &client.join("src/deep")).unwrap().0.unwrap().tenant, "acme");
        // Not a small regular file: refused, not read (a FIFO would block).
        let fifo = root.join("fifo");
        fs::create_dir_all(&fifo).unwrap();
        nix::unistd::mkfifo(&fifo.join(MARKER), nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(find(&fifo).unwrap_err().to_string().contains("not a file"));
        let big = root.join("big");
        fs::create_dir_all(&big).unwrap();
        fs::File::create(big.join(MARKER)).unwrap().set_len(1 << 30).unwrap();
        assert!(find(&big).is_err());
        fs::write(client.join(MARKER), "tenant = 3\n").unwrap();
        assert!(find(&client).unwrap_err().to_string().contains(MARKER));
        fs::remove_dir_all(&root).unwrap();
    }
}
