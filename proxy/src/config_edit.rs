//! Editing `airlock.toml` in place, for `airlock tenant` and `airlock
//! route`: with `toml_edit`, so that the operator's comments, order and
//! layout survive. Every edit is checked by loading the result as the
//! proxy does ([`Policy::from_toml`]) before it replaces the file; the new
//! file is written beside the old one with its mode (0600 when new) and
//! renamed over it, so a running `airlock serve` — which reloads the
//! config when it changes — sees the old file or the new, never half. An
//! edit holds a lock (`flock` on `.airlock.toml.lock` beside the file)
//! from reading the file to replacing it, so two edits at once are made
//! one after the other, neither lost; a config that is a symlink has its
//! target replaced, the link kept.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use toml_edit::{ArrayOfTables, DocumentMut, Item, Table};

use airlock_policy::{ConfigError, Policy};

/// A config file read for editing.
#[derive(Debug)]
pub struct ConfigFile {
    path: PathBuf,
    home: PathBuf,
    doc: DocumentMut,
    /// Held from reading the file until this is dropped.
    _lock: nix::fcntl::Flock<fs::File>,
}

/// Why an edit was not made.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The file is not TOML.
    #[error("{path} is not valid TOML: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// The edit names what the config does not have, or already has.
    #[error("{0}")]
    Refused(String),
    /// The edited config would not load; the file is unchanged.
    #[error("the change was not written, as the config would not load")]
    Invalid(#[from] Box<ConfigError>),
}

impl ConfigFile {
    /// Reads `path` (the config of AIRLOCK_HOME `home`), once no other
    /// edit holds it; it stays held until the returned value is dropped.
    pub fn open(path: &Path, home: &Path) -> Result<ConfigFile, EditError> {
        // A symlinked config is edited where it points.
        let path = &fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
        let io = |source| EditError::Io { path: path.to_owned(), source };
        let lock = crate::home::lock_beside(path).map_err(io)?;
        let text = fs::read_to_string(path).map_err(io)?;
        let doc = text.parse().map_err(|e: toml_edit::TomlError| EditError::Parse {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })?;
        Ok(ConfigFile { path: path.to_owned(), home: home.to_owned(), doc, _lock: lock })
    }

    /// The top-level table `key` (`tenants`, `secrets`), created implicit
    /// (no `[key]` header of its own) when there is none.
    fn top_table(&mut self, key: &str) -> Result<&mut Table, EditError> {
        let item = self.doc.entry(key).or_insert_with(|| {
            let mut t = Table::new();
            t.set_implicit(true);
            Item::Table(t)
        });
        item.as_table_mut().ok_or_else(|| EditError::Refused(format!("`{key}` in the config is not a table")))
    }

    fn tenants_mut(&mut self) -> Result<&mut Table, EditError> {
        self.top_table("tenants")
    }

    fn tenant_mut(&mut self, name: &str) -> Result<&mut Table, EditError> {
        self.tenants_mut()?
            .get_mut(name)
            .and_then(Item::as_table_mut)
            .ok_or_else(|| EditError::Refused(format!("the config has no tenant '{name}'")))
    }

    /// Adds `[tenants.NAME]` with `token`, after the last tenant.
    pub fn add_tenant(&mut self, name: &str, token: &str) -> Result<(), EditError> {
        let tenants = self.tenants_mut()?;
        if tenants.contains_key(name) {
            return Err(EditError::Refused(format!("the config already has a tenant '{name}'")));
        }
        let mut table = Table::new();
        table.insert("token", toml_edit::value(token));
        table.decor_mut().set_prefix("\n");
        tenants.insert(name, Item::Table(table));
        Ok(())
    }

    /// Removes `[tenants.NAME]` and its routes; the number of routes removed.
    pub fn remove_tenant(&mut self, name: &str) -> Result<usize, EditError> {
        let routes = self.tenant_mut(name)?.get("routes").and_then(Item::as_array_of_tables).map_or(0, |r| r.len());
        self.tenants_mut()?.remove(name);
        Ok(routes)
    }

    /// Appends `route` (a `[[tenants.T.routes]]` table with its `name`) to
    /// `tenant`'s routes.
    pub fn add_route(&mut self, tenant: &str, mut route: Table) -> Result<(), EditError> {
        let name = route.get("name").and_then(Item::as_str).unwrap_or_default().to_owned();
        let table = self.tenant_mut(tenant)?;
        let routes = table
            .entry("routes")
            .or_insert_with(|| Item::ArrayOfTables(ArrayOfTables::new()))
            .as_array_of_tables_mut()
            .ok_or_else(|| EditError::Refused(format!("tenant '{tenant}''s routes are not a list of tables")))?;
        if routes.iter().any(|r| r.get("name").and_then(Item::as_str) == Some(name.as_str())) {
            return Err(EditError::Refused(format!("tenant '{tenant}' already has a route '{name}'")));
        }
        if route.decor().prefix().is_none() {
            route.decor_mut().set_prefix("\n");
        }
        routes.push(route);
        Ok(())
    }

    /// Removes `tenant`'s route `name`; the secret names it used are
    /// returned (the secrets themselves stay).
    pub fn remove_route(&mut self, tenant: &str, name: &str) -> Result<(), EditError> {
        let routes = self.tenant_mut(tenant)?.get_mut("routes").and_then(Item::as_array_of_tables_mut);
        let index =
            routes.as_ref().and_then(|r| r.iter().position(|t| t.get("name").and_then(Item::as_str) == Some(name)));
        match (routes, index) {
            (Some(routes), Some(i)) => {
                routes.remove(i);
                Ok(())
            }
            _ => Err(EditError::Refused(format!("tenant '{tenant}' has no route '{name}'"))),
        }
    }

    /// Declares `[secrets.NAME]` with `source = "store"` unless it is
    /// declared; whether it was added.
    pub fn declare_secret(&mut self, name: &str) -> Result<bool, EditError> {
        let secrets = self.top_table("secrets")?;
        if secrets.contains_key(name) {
            return Ok(false);
        }
        let mut table = Table::new();
        table.insert("source", toml_edit::value("store"));
        table.decor_mut().set_prefix(format!("\n# Give it a value with:  airlock secret set {name}\n"));
        secrets.insert(name, Item::Table(table));
        Ok(true)
    }

    /// The edited text.
    pub fn text(&self) -> String {
        self.doc.to_string()
    }

    /// Checks the edited config as the proxy loads it and, when it loads,
    /// replaces the file with it; the loaded config is returned.
    pub fn save(&self) -> Result<Policy, EditError> {
        let text = self.text();
        let base = self.path.parent().unwrap_or(Path::new("."));
        let policy = Policy::from_toml(&text, &self.path.display().to_string(), base, &self.home).map_err(Box::new)?;
        replace(&self.path, text.as_bytes()).map_err(|source| EditError::Io { path: self.path.clone(), source })?;
        Ok(policy)
    }
}

/// Writes `bytes` to a new file beside `path` with `path`'s mode (0600
/// when it has none), flushed, then renames it over `path`.
fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mode = fs::metadata(path).map(|m| m.permissions().mode() & 0o777).unwrap_or(0o600);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"# the operator's config
[proxy]
listen = "127.0.0.1:8080"   # where agents connect

# acme's workspace
[tenants.acme]
token = "0123456789abcdef0123"

[[tenants.acme.routes]]
name = "example"            # the first route
host = "api.example.com"
secret = "example"
placeholder = "AIRLOCK_EXAMPLE"

[secrets.example]
source = "store"
"#;

    fn file(text: &str) -> (crate::TestDir, ConfigFile) {
        let dir = crate::TestDir::new("edit");
        let path = dir.0.join("airlock.toml");
        fs::write(&path, text).unwrap();
        let f = ConfigFile::open(&path, &dir.0).unwrap();
        (dir, f)
    }

    fn route(name: &str, host: &str, secret: &str, placeholder: &str) -> Table {
        let mut t = Table::new();
        t.insert("name", toml_edit::value(name));
        t.insert("host", toml_edit::value(host));
        t.insert("secret", toml_edit::value(secret));
        t.insert("placeholder", toml_edit::value(placeholder));
        t
    }

    #[test]
    fn edits_keep_comments_and_order_and_load() {
        let (_dir, mut f) = file(CONFIG);
        f.add_tenant("beta", "fedcba9876543210fedc").unwrap();
        f.add_route("acme", route("second", "api.second.test", "second", "AIRLOCK_SECOND")).unwrap();
        f.declare_secret("second").unwrap();
        f.add_route("beta", route("b", "api.b.test", "example", "AIRLOCK_B")).unwrap();
        let policy = f.save().unwrap();
        assert_eq!(policy.tenants().count(), 2);
        let text = fs::read_to_string(&f.path).unwrap();
        for kept in ["# the operator's config", "# where agents connect", "# acme's workspace", "# the first route"] {
            assert!(text.contains(kept), "{kept}: {text}");
        }
        // acme's new route follows its first, before beta's table.
        let at = |s: &str| text.find(s).unwrap_or_else(|| panic!("{s}: {text}"));
        assert!(at("name = \"example\"") < at("name = \"second\""));
        assert!(at("name = \"second\"") < at("[tenants.beta]"), "{text}");
        assert!(at("[tenants.beta]") < at("name = \"b\""), "{text}");
        assert_eq!(fs::metadata(&f.path).unwrap().permissions().mode() & 0o777, 0o644 & 0o777);

        let (_dir2, mut g) = file(&text);
        g.remove_route("acme", "second").unwrap();
        assert_eq!(g.remove_tenant("beta").unwrap(), 1);
        g.save().unwrap();
        let back = fs::read_to_string(&g.path).unwrap();
        assert!(!back.contains("[tenants.beta]") && !back.contains("api.second.test"), "{back}");
        assert!(back.contains("# the first route"), "{back}");
    }

    /// Edits made at once, each in its own thread (as separate `airlock`
    /// processes would), all land: none reads the file before another's
    /// write and writes over it.
    #[test]
    fn concurrent_edits_are_made_one_after_the_other() {
        let (dir, f) = file(CONFIG);
        let path = f.path.clone();
        drop(f);
        let threads: Vec<_> = (0..12)
            .map(|i| {
                let (path, home) = (path.clone(), dir.0.clone());
                std::thread::spawn(move || {
                    let mut f = ConfigFile::open(&path, &home).unwrap();
                    f.add_tenant(&format!("t{i}"), "0123456789abcdef0123").unwrap();
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    f.save().unwrap();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let policy = Policy::load(&path, &dir.0).unwrap();
        assert_eq!(policy.tenants().count(), 13);
    }

    #[test]
    fn an_edit_that_would_not_load_leaves_the_file_alone() {
        let (_dir, mut f) = file(CONFIG);
        // The placeholder is bound to another route already.
        f.add_route("acme", route("dup", "api.dup.test", "example", "AIRLOCK_EXAMPLE")).unwrap();
        let e = f.save().unwrap_err();
        assert!(matches!(e, EditError::Invalid(_)), "{e}");
        assert_eq!(fs::read_to_string(&f.path).unwrap(), CONFIG);
        assert!(f.add_tenant("acme", "x").unwrap_err().to_string().contains("already has a tenant 'acme'"));
        assert!(f.remove_route("acme", "nope").unwrap_err().to_string().contains("has no route 'nope'"));
        assert!(f.remove_tenant("nope").unwrap_err().to_string().contains("no tenant 'nope'"));
    }
}
