//! `airlock.toml`: loading a config into a checked [`Policy`]. Parsing
//! happens once; after [`Policy::load`] the policy cannot be invalid.
//!
//! Three steps, one module each: `schema` (the raw serde types), `build`
//! (the checks that turn them into a [`Policy`], failing with a
//! [`BuildError`]) and `starter` (the config `airlock init` writes);
//! `error` holds the errors.

use std::path::Path;

use crate::policy::Policy;

mod build;
mod error;
mod schema;
mod starter;

pub use build::{BUNDLE_VARS, NO_PROXY_VARS, PROXY_VARS, RESERVED_ENV, reserved_env};
pub use error::{BuildError, ConfigError, RouteError};
pub use starter::starter_config;

/// A parse error's line, column and message, without the quoted source
/// line toml's own message carries: that line may hold a tenant's token,
/// and the message goes to logs and terminals.
fn parse_message(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end();
    match e.span() {
        Some(span) => {
            let before = &text.as_bytes()[..span.start.min(text.len())];
            let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
            let column = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
            // The key (or table header) on that line names the setting;
            // what follows `=` is never shown.
            let source = text.lines().nth(line - 1).unwrap_or("").trim();
            let key =
                if source.starts_with('[') { Some(source) } else { source.split_once('=').map(|(k, _)| k.trim()) };
            let key_like = |k: &&str| {
                !k.is_empty()
                    && k.len() <= 80
                    && k.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.\"' []".contains(&b))
            };
            match key.filter(key_like) {
                Some(key) => format!("line {line}, column {column} ({key}): {message}"),
                None => format!("line {line}, column {column}: {message}"),
            }
        }
        None => message.to_owned(),
    }
}

impl Policy {
    /// Reads and checks a config file. Relative paths in `[proxy]` and
    /// `[secrets]` are relative to the file's directory; the audit path is
    /// relative to `home`.
    pub fn load(path: &Path, home: &Path) -> Result<Policy, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Policy::from_toml(&text, &path.display().to_string(), base, home)
    }

    /// Parses and checks config text. `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str, base: &Path, home: &Path) -> Result<Policy, ConfigError> {
        let raw: schema::RawConfig = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { origin: origin.to_owned(), message: parse_message(text, &e) })?;
        build::build(raw, base, home)
            .map_err(|error| ConfigError::Invalid { origin: origin.to_owned(), error: Box::new(error) })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Policy, ConfigError> {
        Policy::from_toml(text, "test.toml", Path::new("/etc/airlock"), Path::new("/home/u/.local/share/airlock"))
    }

    const TOKEN: &str = "0123456789abcdef0123";

    /// A route's `env` may not name a variable airlock sets for the agent
    /// (here `NO_PROXY`, which Go reads before `no_proxy`, would send route
    /// hosts around airlock) or one that changes how programs run.
    #[test]
    fn route_env_may_not_name_a_variable_airlock_sets() {
        for env in [
            "NO_PROXY",
            "https_proxy",
            "SSL_CERT_FILE",
            "PATH",
            "LD_PRELOAD",
            "AIRLOCK_HOME",
            "DYLD_X",
            "GIT_CONFIG_GLOBAL",
            "npm_config_proxy",
            "GLOBAL_AGENT_HTTPS_PROXY",
            "SOCKS_PROXY",
            "NODE_PATH",
        ] {
            let text = format!(
                "[secrets.k]\nsource = \"store\"\n[tenants.a]\ntoken = \"{TOKEN}\"\n[[tenants.a.routes]]\nname = \"r\"\n\
                 host = \"api.example.com\"\nsecret = \"k\"\nplaceholder = \"AIRLOCK_A_KEY\"\nenv = \"{env}\"\n"
            );
            let e = load(&text).unwrap_err().to_string();
            assert!(e.contains(&format!("env '{env}' is a variable airlock sets")), "{env}: {e}");
        }
        let ok = "[secrets.k]\nsource = \"store\"\n[tenants.a]\ntoken = \"0123456789abcdef0123\"\n[[tenants.a.routes]]\n\
                  name = \"r\"\nhost = \"api.example.com\"\nsecret = \"k\"\nplaceholder = \"AIRLOCK_A_KEY\"\nenv = \"OPENAI_API_KEY\"\n";
        load(ok).unwrap();
    }

    #[test]
    fn parse_errors_give_the_place_but_never_quote_the_line() {
        // A token with a stray quote: toml's own message would print the
        // line, token and all.
        let text = format!("[tenants.acme]\ntoken = \"{TOKEN}\"x\"\n");
        let e = load(&text).unwrap_err().to_string();
        assert!(e.contains("test.toml") && e.contains("line 2, column"), "{e}");
        assert!(!e.contains(TOKEN), "{e}");
    }

    #[test]
    fn unknown_keys_name_key_and_line() {
        let err = load("[proxy]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n").unwrap_err().to_string();
        assert!(err.contains("lisen") && err.contains("line 3"), "{err}");
        let text = format!(
            "[secrets.s]\nsource = \"store\"\n[tenants.a]\ntoken = \"{TOKEN}\"\n[[tenants.a.routes]]\nname = \"r\"\n\
             host = \"a.test\"\nsecret = \"s\"\nplaceholder = \"AIRLOCK_A1\"\nheader = [\"x\"]\n"
        );
        let err = load(&text).unwrap_err().to_string();
        assert!(err.contains("header") && err.contains("line 10"), "{err}");
    }
}
