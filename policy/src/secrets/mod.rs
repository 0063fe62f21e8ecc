//! The vault side: where secret values come from, and the type that holds
//! them.
//!
//! This is the one module of the crate that reads the environment or files
//! or runs vault commands (its readers, [`Store`] and [`Vault`]); what the
//! config says about a secret ([`SecretSpec`]) and the value type
//! ([`SecretValue`]) are pure. A [`SecretValue`] never prints
//! its bytes (`Debug` and `Display` show `[secret]`) and is zeroed when
//! dropped; errors name the secret and the source, never the value, and
//! never quote a vault command's output (a failed command's stderr goes,
//! scrubbed, to the operator's log only).
//!
//! A vault command runs without the variables the config's `env` secrets
//! name (see [`crate::Policy::secret_env_vars`]).
//!
//! Layout, each depending only on those above it: `spec` and `value`
//! (pure), `error`, `keychain` (the keychain thread), `sources` (the
//! readers), `store`, `vault` (the cache).

mod error;
mod keychain;
mod sources;
mod spec;
mod store;
mod value;
mod vault;

pub use error::{STDERR_SUMMARY_CHARS, SecretError, StderrSummary};
pub use sources::trim_newline;
pub(crate) use spec::env_vars;
pub use spec::{DEFAULT_COMMAND_TIMEOUT, DEFAULT_COMMAND_TTL, SecretSource, SecretSpec, valid_name};
pub use store::{Store, StoreEntry};
pub use value::{InvalidSecret, SecretValue};
pub use vault::{RETIRED_GRACE, Vault};

/// A fresh directory under the system's temporary directory, for tests.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
fn test_dir(tag: &str) -> std::path::PathBuf {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).unwrap();
    let d = std::env::temp_dir().join(format!("airlock-secrets-{tag}-{:x}", u64::from_le_bytes(b)));
    std::fs::create_dir_all(&d).unwrap();
    d
}
