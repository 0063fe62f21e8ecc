//! `airlock secret set|list|rm`: the embedded secret store. `set` reads the
//! value at a prompt with echo off when stdin is a terminal (one line), and
//! from stdin to its end otherwise (one trailing newline dropped); it
//! stores only names `airlock.toml` declares with `source = "store"`
//! unless told to. `list` shows every declared secret with its source and
//! state, and stored names with their ages, never values.
//!
//! The prompt is written here, on `termios` through `nix`: the password
//! crates print their prompt before they turn echo off, so what a person
//! types (or pastes) the moment the prompt shows can be echoed. Here echo
//! goes off, pending input is dropped, and only then is the prompt shown.

use std::io::{IsTerminal, Read};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use airlock::home::Home;
use airlock_policy::Policy;
use airlock_policy::secrets::{SecretSource, SecretValue, Store, trim_newline};

/// What `airlock secret` does.
#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Store a value (0600): typed at a prompt with echo off (Enter ends
    /// it), or read from stdin to its end when piped. Nothing is echoed.
    Set {
        /// The secret's name, as in [secrets.NAME] (source = "store").
        name: String,
        /// Store it even if airlock.toml does not declare it as a store
        /// secret.
        #[arg(long)]
        force: bool,
    },
    /// List declared secrets (source, state) and stored names with their
    /// ages; never values.
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
        SecretCommand::Set { name, force } => set(home, &store, &name, force),
        SecretCommand::List => list(home, &store),
        SecretCommand::Rm { name } => remove(&store, &name),
    }
}

fn set(home: &Home, store: &Store, name: &str, force: bool) -> anyhow::Result<ExitCode> {
    if !force && let Some(refusal) = undeclared(home, name) {
        anyhow::bail!("{refusal}; to store it anyway, pass --force");
    }
    let raw = zeroize::Zeroizing::new(if std::io::stdin().is_terminal() {
        let prompt = format!("value for secret '{name}' (typing is not shown; Enter ends it): ");
        read_hidden(&prompt).context("cannot read the value from the terminal")?
    } else {
        let mut raw = Vec::new();
        std::io::stdin().read_to_end(&mut raw).context("cannot read the value from stdin")?;
        raw
    });
    if raw.is_empty() {
        anyhow::bail!("not stored: the value is empty");
    }
    let mut value = raw.to_vec();
    trim_newline(&mut value);
    // PEM text (a client_cert's chain or key, perhaps after `openssl`'s
    // "Bag Attributes" lines) is made of lines; the config lets such a
    // secret go only where line breaks are safe.
    let pem = value.windows(11).any(|w| w == b"-----BEGIN ");
    let value = if pem { SecretValue::new_pem(value) } else { SecretValue::new(value) };
    let value = value.map_err(|e| anyhow::anyhow!("not stored: {e}"))?;
    store.set(name, &value).with_context(|| format!("cannot write {}", store.dir().display()))?;
    eprintln!("stored secret '{name}' ({} bytes) in {}", value.expose().len(), store.dir().display());
    if value.expose().trim_ascii().len() != value.expose().len() {
        eprintln!(
            "warning: the value starts or ends with spaces or tabs; HTTP drops them from header values, so the API \
             will get it without them (check for a stray space in what you pasted)"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// One line typed at the terminal on stdin, not shown: echo off (the
/// line's end still shown), what was typed before dropped, then `prompt`
/// on stderr; the terminal is restored however the read ends.
fn read_hidden(prompt: &str) -> std::io::Result<Vec<u8>> {
    use std::io::{BufRead, Write};

    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};

    struct Restore(nix::sys::termios::Termios);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.0);
        }
    }
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin)?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    quiet.local_flags.insert(LocalFlags::ECHONL | LocalFlags::ICANON);
    let _restore = Restore(saved);
    tcsetattr(&stdin, SetArg::TCSAFLUSH, &quiet)?;
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    let mut line = Vec::new();
    stdin.lock().read_until(b'\n', &mut line)?;
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    Ok(line)
}

/// Why `name` should not be stored: airlock.toml does not declare it, or
/// declares it with another source (a stored value would never be read).
/// None when it is a declared store secret, or when the config cannot be
/// read (said as a warning: storing must not need a valid config).
fn undeclared(home: &Home, name: &str) -> Option<String> {
    let policy = match Policy::load(&home.config, &home.dir) {
        Ok(policy) => policy,
        Err(e) => {
            eprintln!("warning: cannot read {} to check the name ({e})", home.config.display());
            return None;
        }
    };
    match policy.secret(name) {
        Some(spec) if matches!(spec.source, SecretSource::Store) => None,
        Some(spec) => Some(format!(
            "secret '{name}' is declared with source = \"{}\" in {}: a stored value would never be read",
            source_kind(&spec.source),
            home.config.display()
        )),
        None => {
            let declared: Vec<&str> =
                policy.secrets().filter(|s| matches!(s.source, SecretSource::Store)).map(|s| s.name.as_str()).collect();
            let known = if declared.is_empty() { "none".to_owned() } else { declared.join(", ") };
            Some(format!(
                "secret '{name}' is not declared in {} (store secrets declared: {known}); add [secrets.{name}] with \
                 source = \"store\" (a typo would leave the real one missing)",
                home.config.display()
            ))
        }
    }
}

fn source_kind(source: &SecretSource) -> &'static str {
    match source {
        SecretSource::Store => "store",
        SecretSource::Env { .. } => "env",
        SecretSource::File { .. } => "file",
        SecretSource::Command { .. } => "command",
        SecretSource::Keychain { .. } => "keychain",
        _ => "other",
    }
}

/// Every declared secret with its source and state (stored and its age, or
/// missing, for the store; present or missing for `env` and `file`; fetched
/// when used for `command` and `keychain`), then stored names no config
/// declares.
fn list(home: &Home, store: &Store) -> anyhow::Result<ExitCode> {
    let now = std::time::SystemTime::now();
    let stored = store.list()?;
    let age = |name: &str| {
        stored
            .iter()
            .find(|e| e.name == name)
            .map(|e| human_age(now.duration_since(e.modified).unwrap_or_default().as_secs()))
    };
    let policy = Policy::load(&home.config, &home.dir).ok();
    if policy.is_none() {
        eprintln!("warning: cannot read {}; listing the store only", home.config.display());
    }
    let mut declared = Vec::new();
    for spec in policy.iter().flat_map(|p| p.secrets()) {
        let state = match &spec.source {
            SecretSource::Store => {
                age(&spec.name).map_or("MISSING: airlock secret set".to_owned(), |a| format!("stored {a}"))
            }
            SecretSource::Env { var } if std::env::var_os(var).is_some() => format!("${var} set here"),
            SecretSource::Env { var } => format!("${var} not set here (airlock serve reads its own)"),
            SecretSource::File { path } if path.exists() => format!("{} exists", path.display()),
            SecretSource::File { path } => format!("MISSING: {}", path.display()),
            _ => "fetched when used (airlock check tries it)".to_owned(),
        };
        println!("{}\t{}\t{state}", spec.name, source_kind(&spec.source));
        declared.push(spec.name.as_str());
    }
    for e in stored.iter().filter(|e| !declared.contains(&e.name.as_str())) {
        println!(
            "{}\tstore\tstored {}, not declared",
            e.name,
            human_age(now.duration_since(e.modified).unwrap_or_default().as_secs())
        );
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
