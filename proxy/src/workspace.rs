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
use std::os::unix::fs::OpenOptionsExt;
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
        let names = if self.tenant.is_empty() {
            "cannot be read".to_owned()
        } else {
            format!("names tenant '{}', but this AIRLOCK_HOME did not bind the folder to it", self.tenant)
        };
        write!(
            f,
            "{} {names} (a marker can come with a cloned repository); it is ignored. To use the folder: airlock \
             connect {} --tenant NAME",
            self.path.display(),
            self.path.parent().unwrap_or(Path::new(".")).display()
        )
    }
}

/// The workspace `from` is in, as `home` bound it: the nearest marker,
/// `from` or above, that `home` wrote there for the tenant it names; else
/// None. Markers on the way that `home` did not bind (one a repository
/// brought with it, another home's, one edited since, one that cannot be
/// read) are passed over — so a folder never picks a tenant the operator
/// did not bind it to, and a stray marker below a bound folder does not
/// hide its binding; the nearest is returned as [`Unbound`] for a notice.
pub fn find_bound(home: &Path, from: &Path) -> (Option<Workspace>, Option<Unbound>) {
    let registry = registered(home);
    let mut passed: Option<Unbound> = None;
    let mut from = from.to_owned();
    loop {
        let found = find(&from);
        let next = match &found {
            Ok(Some(ws)) => ws.dir.parent().map(Path::to_owned),
            Ok(None) => None,
            Err(e) => e.path.parent().and_then(Path::parent).map(Path::to_owned),
        };
        match found {
            Ok(Some(ws)) if registry.contains(&ws) => return (Some(ws), passed),
            Ok(Some(ws)) => {
                passed.get_or_insert(Unbound { path: ws.dir.join(MARKER), tenant: ws.tenant });
            }
            Ok(None) => return (None, passed),
            Err(e) => {
                passed.get_or_insert(Unbound { path: e.path, tenant: String::new() });
            }
        }
        match next {
            Some(dir) => from = dir,
            None => return (None, passed),
        }
    }
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
    let _lock = crate::home::lock_beside(&home.join(REGISTRY))?;
    let mut all = registered(home);
    all.retain(|w| w.dir != workspace.dir);
    all.push(workspace.clone());
    all.sort_by(|a, b| a.dir.cmp(&b.dir));
    write_registry(home, &all)?;
    Ok(workspace)
}

/// Forgets every folder bound to `tenant` (its markers are then ignored:
/// a tenant added later under the same name does not inherit them); the
/// folders forgotten.
pub fn unbind_tenant(home: &Path, tenant: &str) -> io::Result<Vec<PathBuf>> {
    let _lock = crate::home::lock_beside(&home.join(REGISTRY))?;
    let (gone, kept): (Vec<Workspace>, Vec<Workspace>) = registered(home).into_iter().partition(|w| w.tenant == tenant);
    if !gone.is_empty() {
        write_registry(home, &kept)?;
    }
    Ok(gone.into_iter().map(|w| w.dir).collect())
}

/// Replaces the registry (0600: it names every client folder and tenant).
fn write_registry(home: &Path, all: &[Workspace]) -> io::Result<()> {
    let json = serde_json::to_string_pretty(all).map_err(io::Error::other)?;
    let tmp = home.join(format!(".{REGISTRY}.{}.tmp", std::process::id()));
    let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    io::Write::write_all(&mut f, (json + "\n").as_bytes())?;
    fs::rename(&tmp, home.join(REGISTRY))
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
        let scratch = crate::TestDir::new("ws");
        let root = scratch.0.clone();
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
        let (none, unbound) = find_bound(&home, &client.join("src"));
        assert!(none.is_none());
        let e = unbound.unwrap();
        assert_eq!(e.path, client.canonicalize().unwrap().join(MARKER));
        assert!(e.to_string().contains("did not bind the folder") && e.to_string().contains("ignored"), "{e}");
        let other = root.join("clients/other");
        fs::create_dir_all(&other).unwrap();
        fs::write(other.join(MARKER), "tenant = \"beta\"\n").unwrap();
        assert!(find_bound(&home, &other).0.is_none(), "a marker no home bound");
        assert!(matches!(find_bound(&home, &root), (None, None)));
        bind(&home, &client, "acme").unwrap();
        assert_eq!(find_bound(&home, &client.join("src/deep")).0.unwrap().tenant, "acme");
        // A stray marker below a bound folder (a cloned repository's), or
        // one that cannot be read, does not hide the binding.
        fs::write(client.join("src").join(MARKER), "tenant = \"demo\"\n").unwrap();
        let (bound, passed) = find_bound(&home, &client.join("src/deep"));
        assert_eq!((bound.unwrap().tenant.as_str(), passed.unwrap().tenant.as_str()), ("acme", "demo"));
        fs::write(client.join("src").join(MARKER), "tenant = [\n").unwrap();
        assert_eq!(find_bound(&home, &client.join("src/deep")).0.unwrap().tenant, "acme");
        fs::remove_file(client.join("src").join(MARKER)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(home.join(REGISTRY)).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(unbind_tenant(&home, "acme").unwrap(), vec![client.canonicalize().unwrap()]);
        assert!(find_bound(&home, &client).0.is_none(), "forgotten with its tenant");
        bind(&home, &client, "acme").unwrap();
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
    }
}
