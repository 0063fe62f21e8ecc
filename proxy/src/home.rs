//! AIRLOCK_HOME: where the config, the CA, the embedded secret store and the
//! audit log live, and its first-run initialisation.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use airlock_ca::CertificateAuthority;
use airlock_policy::starter_config;

/// The config file name inside AIRLOCK_HOME.
pub const CONFIG_FILE: &str = "airlock.toml";

/// Resolved locations.
#[derive(Clone, Debug)]
pub struct Home {
    /// AIRLOCK_HOME.
    pub dir: PathBuf,
    /// The config file.
    pub config: PathBuf,
    /// Whether the config is the default one inside `dir` (not named by
    /// `--config` or `AIRLOCK_CONFIG`).
    pub config_is_default: bool,
}

/// What [`Home::init`] created.
#[derive(Clone, Debug, Default)]
pub struct Created {
    /// The CA was created.
    pub ca: bool,
    /// The starter config was written.
    pub config: bool,
}

impl Home {
    /// Resolves the config (`--config`, else `$AIRLOCK_CONFIG`, else
    /// `AIRLOCK_HOME/airlock.toml`) and AIRLOCK_HOME: `$AIRLOCK_HOME`; else,
    /// for a config named by `--config` or `$AIRLOCK_CONFIG`, the config's
    /// folder (so that the CA, secrets and audit log it relies on live
    /// beside it, not in a default home shared with other configs); else
    /// `$XDG_DATA_HOME/airlock`, else `~/.local/share/airlock`.
    pub fn resolve(config_flag: Option<PathBuf>) -> io::Result<Home> {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        let named = config_flag.or_else(|| var("AIRLOCK_CONFIG"));
        let beside = named.as_deref().map(|c| match c.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        });
        let dir = match var("AIRLOCK_HOME").or(beside) {
            Some(d) => d,
            None => match var("XDG_DATA_HOME") {
                Some(x) => x.join("airlock"),
                None => var("HOME")
                    .map(|h| h.join(".local/share/airlock"))
                    .ok_or_else(|| io::Error::other("neither AIRLOCK_HOME nor HOME is set"))?,
            },
        };
        let (config, config_is_default) = match named {
            Some(c) => (c, false),
            None => (dir.join(CONFIG_FILE), true),
        };
        Ok(Home { dir, config, config_is_default })
    }

    /// Creates what is missing: the directory (0700), the CA, and a
    /// starter config with one tenant and a fresh token where the config
    /// is to be (0600: it holds tenant tokens). Never overwrites.
    pub fn init(&self) -> io::Result<Created> {
        let mut created = Created::default();
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.dir)?;
        if !CertificateAuthority::cert_path(&self.dir).exists() {
            created.ca = true;
        }
        CertificateAuthority::load_or_create(&self.dir).map_err(io::Error::other)?;
        if !self.config.exists() {
            write_new(&self.config, starter_config(&generate_token()).as_bytes())?;
            created.config = true;
        }
        Ok(created)
    }
}

/// Warnings about who else can reach what airlock keeps: the config file
/// (it holds every tenant's token) readable or writable by the group or
/// others, and the home (the CA key, the secret store, the audit log)
/// writable by them or open to others. One sentence each, with the fix.
pub fn exposure(dir: &Path, config: &Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mode = |p: &Path| fs::metadata(p).ok().map(|m| m.permissions().mode() & 0o777);
    if let Some(m) = mode(config).filter(|m| m & 0o077 != 0) {
        out.push(format!(
            "{} is readable or writable by other users (mode {m:04o}) and holds every tenant's token; run chmod 600 {}",
            config.display(),
            config.display()
        ));
    }
    if let Some(m) = mode(dir).filter(|m| m & 0o027 != 0) {
        out.push(format!(
            "{} is open to other users (mode {m:04o}) and holds the CA key, the secret store and the audit log; run \
             chmod 700 {}",
            dir.display(),
            dir.display()
        ));
    }
    out
}

/// An exclusive lock for changing the file at `path`, held until the
/// returned value is dropped: an `flock` on `.NAME.lock` beside it (0600,
/// created when missing), so read-change-write cycles of `path` by several
/// processes run one after another. Waits for the holder.
///
/// # Errors
/// The lock file cannot be opened or locked.
pub fn lock_beside(path: &Path) -> io::Result<nix::fcntl::Flock<fs::File>> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path.with_file_name(format!(".{name}.lock")))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, errno)| io::Error::from(errno))
}

/// Writes a new file with mode 0600, failing if it exists.
fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// A fresh tenant token: 16 random bytes, hex.
pub fn generate_token() -> String {
    let mut b = [0u8; 16];
    // Without an entropy source there is no safe token to make.
    getrandom::fill(&mut b).expect("the OS random number generator is available");
    hex::encode(b)
}
