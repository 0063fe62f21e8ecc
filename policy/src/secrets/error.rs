//! Why a secret could not be fetched, and what a failed vault command's
//! stderr becomes: errors name the secret and the source, never the value,
//! and never quote a vault command's output to the agent.

use std::fmt;
use std::io;
use std::path::PathBuf;

use zeroize::Zeroizing;

use super::InvalidSecret;

/// Why a secret could not be fetched. Never carries the value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The embedded store has no value under this name.
    #[error("secret '{name}' is not in the store; run `airlock secret set {name}` and type the value")]
    NotInStore {
        /// The secret's name.
        name: String,
    },
    /// The environment variable is not set (or not UTF-8).
    #[error("secret '{name}': environment variable {var} is not set in the proxy's environment")]
    EnvMissing {
        /// The secret's name.
        name: String,
        /// The variable.
        var: String,
    },
    /// A secrets file is readable by group or others.
    #[error(
        "secret '{name}': {path} is readable by group or others (mode {mode:o}); run `chmod 600 {path}`",
        path = path.display()
    )]
    LoosePermissions {
        /// The secret's name.
        name: String,
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Reading a file failed.
    #[error("secret '{name}': cannot read {path}: {error}", path = path.display())]
    Io {
        /// The secret's name.
        name: String,
        /// The file.
        path: PathBuf,
        /// The cause (in the message, so denials carry it).
        error: io::Error,
    },
    /// The fetched value is not usable.
    #[error("secret '{name}': {reason}")]
    Invalid {
        /// The secret's name.
        name: String,
        /// Why.
        reason: InvalidSecret,
    },
    /// The command could not be started.
    #[error("secret '{name}': cannot run {program}: {error}")]
    CommandStart {
        /// The secret's name.
        name: String,
        /// `argv[0]`.
        program: String,
        /// Why.
        error: io::Error,
    },
    /// The command ran past its timeout and was killed.
    #[error("secret '{name}': {program} did not finish within {timeout:?} and was stopped")]
    CommandTimeout {
        /// The secret's name.
        name: String,
        /// `argv[0]`.
        program: String,
        /// The limit.
        timeout: std::time::Duration,
    },
    /// The command exited unsuccessfully. The message names the program
    /// and its exit status, never its output: it reaches the agent (in a
    /// `secret_unavailable` denial), and stderr may hold the key or the
    /// vault's own token. The operator reads the summary in the log line
    /// the failure writes, or in [`SecretError::operator_message`].
    #[error("secret '{name}': {program} failed ({status}); what it wrote to stderr is in airlock's log")]
    CommandFailed {
        /// The secret's name.
        name: String,
        /// `argv[0]`.
        program: String,
        /// Exit status.
        status: String,
        /// Its stderr, summarised and scrubbed, for the operator only.
        stderr: StderrSummary,
    },
    /// The keychain has no item for this service and account.
    #[error(
        "secret '{name}': the keychain has no item for service '{service}', account '{account}'; \
         add one (Linux: `secret-tool store --label={name} service {service} username {account}`, \
         macOS: `security add-generic-password -s {service} -a {account} -w`)"
    )]
    KeychainMissing {
        /// The secret's name.
        name: String,
        /// The item's service.
        service: String,
        /// The item's account.
        account: String,
    },
    /// The keychain could not be reached or refused to answer.
    #[error("secret '{name}': the keychain failed: {reason}")]
    KeychainFailed {
        /// The secret's name.
        name: String,
        /// Why (never the value).
        reason: String,
    },
}

impl SecretError {
    /// The name of the secret that could not be fetched.
    pub fn secret(&self) -> &str {
        match self {
            SecretError::NotInStore { name }
            | SecretError::EnvMissing { name, .. }
            | SecretError::LoosePermissions { name, .. }
            | SecretError::Io { name, .. }
            | SecretError::Invalid { name, .. }
            | SecretError::CommandStart { name, .. }
            | SecretError::CommandTimeout { name, .. }
            | SecretError::CommandFailed { name, .. }
            | SecretError::KeychainMissing { name, .. }
            | SecretError::KeychainFailed { name, .. } => name,
        }
    }

    /// The message for the operator (`airlock check`, logs): the `Display`
    /// message, but for a failed command its stderr summary in place of the
    /// pointer to the log. Never for the agent: the summary may hold what
    /// the vault does not know, such as the vault CLI's own token.
    pub fn operator_message(&self) -> String {
        match self {
            SecretError::CommandFailed { name, program, status, stderr } if stderr.as_str().is_empty() => {
                format!("secret '{name}': {program} failed ({status}) and wrote nothing to stderr")
            }
            SecretError::CommandFailed { name, program, status, stderr } => {
                format!("secret '{name}': {program} failed ({status}): {}", stderr.as_str())
            }
            other => other.to_string(),
        }
    }
}

/// A line of a multi-line known value at least this long is known on its
/// own.
const MIN_KNOWN_LINE: usize = 16;

/// A run of base64 characters at least this long in a command's stderr is
/// taken for key material (a PEM line is 64, a token 40 and up) and
/// replaced, known or not: the vault may not know the value yet.
const LONG_RUN: usize = 40;

/// `text` with every run of at least [`LONG_RUN`] base64 characters
/// (either alphabet, and `=`) replaced by `[REDACTED]`.
fn redact_long_runs(text: &[u8]) -> Vec<u8> {
    let b64 = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_' | b'=');
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let run = text[i..].iter().take_while(|&&b| b64(b)).count();
        if run >= LONG_RUN {
            out.extend_from_slice(b"[REDACTED]");
        } else {
            out.extend_from_slice(&text[i..i + run]);
        }
        i += run;
        if let Some(&b) = text.get(i) {
            out.push(b);
            i += 1;
        }
    }
    out
}

/// How many characters of a failed command's stderr the operator sees.
pub const STDERR_SUMMARY_CHARS: usize = 300;

/// What a failed vault command wrote to stderr, summarised for the
/// operator: every value the vault knew replaced by `[REDACTED]`, its
/// non-empty lines joined with ` | `, control characters dropped, at most
/// [`STDERR_SUMMARY_CHARS`] characters.
///
/// Operator-only: it may still hold what the vault does not know (the vault
/// CLI's own token), so it has no `Display` and its `Debug` prints only its
/// length; [`StderrSummary::as_str`] is the one way to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct StderrSummary(String);

impl StderrSummary {
    /// Summarises `stderr`, replacing every occurrence of every `known`
    /// value first (so truncating cannot leave half a value that no longer
    /// matches).
    pub(super) fn new<'a>(stderr: &[u8], known: impl IntoIterator<Item = &'a [u8]>) -> Self {
        // A multi-line value (a PEM key) is also known line by line: a
        // command may print some of its lines and not the whole.
        let known: Vec<&[u8]> = known
            .into_iter()
            .flat_map(|v| {
                let lines = v.contains(&b'\n').then(|| v.split(|&b| b == b'\n').map(<[u8]>::trim_ascii));
                std::iter::once(v).chain(lines.into_iter().flatten().filter(|l| l.len() >= MIN_KNOWN_LINE))
            })
            .filter(|v| !v.is_empty())
            .collect();
        let scrubbed = match aho_corasick::AhoCorasick::builder()
            .match_kind(aho_corasick::MatchKind::LeftmostLongest)
            .build(&known)
        {
            // Leftmost-longest: a value that contains another known value is
            // replaced whole.
            Ok(ac) => Zeroizing::new(ac.replace_all_bytes(stderr, &vec![&b"[REDACTED]"[..]; known.len()])),
            // Only a pattern set too large to compile fails; say nothing
            // rather than something unscrubbed.
            Err(_) => return StderrSummary("(stderr not shown: it could not be scrubbed)".to_owned()),
        };
        let scrubbed = Zeroizing::new(redact_long_runs(&scrubbed));
        let text = String::from_utf8_lossy(&scrubbed);
        let joined = text
            .lines()
            .map(|l| l.chars().filter(|c| !c.is_control()).collect::<String>())
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.trim().to_owned())
            .collect::<Vec<_>>()
            .join(" | ");
        let mut summary: String = joined.chars().take(STDERR_SUMMARY_CHARS).collect();
        if summary.len() < joined.len() {
            summary.push('…');
        }
        StderrSummary(summary)
    }

    /// The summary, for the operator's eyes only.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for StderrSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StderrSummary({} chars)", self.0.chars().count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_summaries_hide_key_lines_known_or_not() {
        let key = b"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n-----END PRIVATE KEY-----\n";
        // Two lines of a known key, printed without the rest.
        let stderr = b"bad key: MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nnext: BKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n";
        let s = StderrSummary::new(stderr, [&key[..]]);
        assert_eq!(s.as_str(), "bad key: [REDACTED] | next: [REDACTED]");
        // An unknown one (a first fetch failed): long base64 runs go.
        let line = b"MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKjMzEfYyjiWA4R4";
        let s = StderrSummary::new(&[&b"-----BEGIN PRIVATE KEY-----\n"[..], line, b"\nexit 3"].concat(), []);
        assert_eq!(s.as_str(), "-----BEGIN PRIVATE KEY----- | [REDACTED] | exit 3");
        assert_eq!(
            StderrSummary::new(b"token expired: run vault login", []).as_str(),
            "token expired: run vault login"
        );
    }

    #[test]
    fn stderr_summaries_replace_known_values_and_stay_short() {
        let (key, longer) = (&b"sk_live_key"[..], &b"sk_live_key_and_more"[..]);
        let stderr = b"\n  error: sk_live_key_and_more rejected\r\n\x1b[31mretry with sk_live_key\x1b[0m\n\n";
        let s = StderrSummary::new(stderr, [key, longer, &b""[..]]);
        assert_eq!(s.as_str(), "error: [REDACTED] rejected | [31mretry with [REDACTED][0m");
        assert_eq!(format!("{s:?}"), "StderrSummary(57 chars)", "Debug never prints the text");
        // Scrubbed before it is cut: a value across the cut is not half left.
        let mut long: Vec<u8> = (0..STDERR_SUMMARY_CHARS - 4).map(|i| if i % 2 == 0 { b'x' } else { b' ' }).collect();
        long.extend_from_slice(key);
        let s = StderrSummary::new(&long, [key]);
        assert!(s.as_str().ends_with("x [RED…"), "{}", s.as_str());
        assert_eq!(s.as_str().chars().count(), STDERR_SUMMARY_CHARS + 1);
        assert!(!s.as_str().contains("sk_"));
    }
}
