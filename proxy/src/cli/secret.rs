//! `airlock secret set|list|rm`: the embedded secret store. `set` reads the
//! value from stdin (one trailing newline dropped) and never echoes it;
//! `list` shows names and ages, never values.

use std::io::Read;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use airlock::home::Home;
use airlock_policy::secrets::{SecretValue, Store, trim_newline};

/// What `airlock secret` does.
#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Read a value from stdin into the store (0600). Nothing is echoed.
    Set {
        /// The secret's name, as in [secrets.NAME].
        name: String,
    },
    /// List stored names and ages (never values).
    List,
    /// Remove a stored value.
    Rm {
        /// The secret's name.
        name: String,
    },
}

/// Runs `airlock secret COMMAND` on the store in AIRLOCK_HOME.
pub fn run(home: &Home, command: SecretCommand) -> anyhow::Result<ExitCode> {
    let store = Store::new(&home.dir);
    match command {
        SecretCommand::Set { name } => set(&store, &name),
        SecretCommand::List => list(&store),
        SecretCommand::Rm { name } => remove(&store, &name),
    }
}

fn set(store: &Store, name: &str) -> anyhow::Result<ExitCode> {
    let mut raw = Vec::new();
    std::io::stdin().read_to_end(&mut raw).context("cannot read the value from stdin")?;
    let raw = zeroize::Zeroizing::new(raw);
    let mut value = raw.to_vec();
    trim_newline(&mut value);
    // PEM text (a client_cert's chain or key, perhaps after `openssl`'s
    // "Bag Attributes" lines) is made of lines; the config lets such a
    // secret go only where line breaks are safe.
    let pem = value.windows(11).any(|w| w == b"-----BEGIN ");
    let value = if pem { SecretValue::new_pem(value) } else { SecretValue::new(value) };
    let value = value.map_err(|e| anyhow::anyhow!("not stored: {e}"))?;
    store.set(name, &value).with_context(|| format!("cannot write {}", store.dir().display()))?;
    eprintln!("stored secret '{name}' ({} bytes)", value.expose().len());
    if value.expose().trim_ascii().len() != value.expose().len() {
        eprintln!(
            "warning: the value starts or ends with spaces or tabs; HTTP drops them from header values, so the API \
             will get it without them (check for a stray space in what you pasted)"
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn list(store: &Store) -> anyhow::Result<ExitCode> {
    let now = std::time::SystemTime::now();
    for e in store.list()? {
        let age = now.duration_since(e.modified).unwrap_or_default().as_secs();
        println!("{}\t{}", e.name, human_age(age));
    }
    Ok(ExitCode::SUCCESS)
}

/// Exit status 1 when there was nothing to remove.
fn remove(store: &Store, name: &str) -> anyhow::Result<ExitCode> {
    if store.remove(name)? {
        eprintln!("removed secret '{name}'");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("no secret '{name}' in the store");
        Ok(ExitCode::FAILURE)
    }
}

/// An age in seconds, minutes, hours or days: the largest unit of which it
/// is at least two.
fn human_age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s ago"),
        s if s < 7200 => format!("{}m ago", s / 60),
        s if s < 172_800 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86_400),
    }
}
