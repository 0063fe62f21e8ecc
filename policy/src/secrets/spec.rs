//! What the config says about a secret: its name and where its value
//! lives. Pure data, built by the config loader and read by the vault.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

/// Where a secret's value lives.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SecretSource {
    /// The embedded store, `AIRLOCK_HOME/secrets/<name>`.
    Store,
    /// The proxy's own environment.
    Env {
        /// The variable name.
        var: String,
    },
    /// A file readable only by its owner.
    File {
        /// Absolute path.
        path: PathBuf,
    },
    /// A command's stdout (argv, no shell): `op read …`, `infisical`,
    /// `doppler`, `vault kv get`, `pass`.
    Command {
        /// Program and arguments.
        argv: Vec<String>,
        /// How long the command may run.
        timeout: Duration,
        /// Variables removed from the command's environment: every one an
        /// `env` secret of the same config names (see
        /// [`crate::Policy::secret_env_vars`]). Filled in at load, so a spec is
        /// all it takes to run the command safely.
        withheld_env: Vec<String>,
    },
    /// The OS keychain (the Secret Service on Linux, Keychain Services on
    /// macOS): the item with this service and account.
    Keychain {
        /// The item's service (Secret Service attribute `service`).
        service: String,
        /// The item's account (Secret Service attribute `username`).
        account: String,
        /// How long the keychain may take to answer (a locked keychain may
        /// wait for a prompt nobody sees).
        timeout: Duration,
    },
}

/// How long a `command` source may run unless `timeout` says otherwise.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `command` and `keychain` values are cached unless `ttl` says
/// otherwise.
pub const DEFAULT_COMMAND_TTL: Duration = Duration::from_secs(300);

/// One `[secrets.NAME]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretSpec {
    /// The secret's name.
    pub name: String,
    /// Where its value comes from.
    pub source: SecretSource,
    /// How long a fetched value is cached (`None`: until the config is
    /// reloaded or, for `store` and `file`, the file changes). `command`
    /// and `keychain` default to [`DEFAULT_COMMAND_TTL`].
    pub ttl: Option<Duration>,
    /// A route's `client_cert` names it: the value is PEM text (a
    /// certificate chain or a private key), so it may hold line breaks
    /// ([`crate::secrets::SecretValue::new_pem`]), and no header ever gets it.
    pub pem: bool,
}

/// Whether a name can be a secret's name (and a file name in the store).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// The variables the `env` secrets among `specs` read, each once, in order.
pub(crate) fn env_vars<'a>(specs: impl Iterator<Item = &'a SecretSpec>) -> impl Iterator<Item = &'a str> {
    let mut seen = HashSet::new();
    specs
        .filter_map(|s| match &s.source {
            SecretSource::Env { var } => Some(var.as_str()),
            _ => None,
        })
        .filter(move |v| seen.insert(*v))
}
