//! The type that holds a secret's value.

use std::fmt;

use zeroize::Zeroizing;

/// A secret value: printable only as `[secret]`, zeroed on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Zeroizing<Vec<u8>>);

/// The longest secret value, in bytes: a key, a token, a service-account
/// key file and a certificate chain are a few KiB at most. Every value is
/// also a set of patterns the redactor holds in every spelling, so one of
/// megabytes would slow or exhaust every request.
pub const MAX_SECRET_BYTES: usize = 64 << 10;

impl SecretValue {
    /// Wraps a value, checking that it can travel in an HTTP header: not
    /// empty, and no control characters (CR, LF and NUL would let a value
    /// inject headers).
    pub fn new(value: Vec<u8>) -> Result<Self, InvalidSecret> {
        let value = Zeroizing::new(value);
        if value.is_empty() {
            return Err(InvalidSecret::Empty);
        }
        if value.len() > MAX_SECRET_BYTES {
            return Err(InvalidSecret::TooLong { len: value.len() });
        }
        if value.iter().any(|&b| b.is_ascii_control() && b != b'\t') {
            return Err(InvalidSecret::ControlCharacters);
        }
        Ok(SecretValue(value))
    }

    /// Wraps PEM text (a client certificate chain or its private key):
    /// like [`SecretValue::new`], but line breaks are allowed, since PEM
    /// is made of lines. Such a value never goes in a header: the config
    /// refuses a secret named both by a `client_cert` and where a header
    /// gets its value (see [`crate::SecretSpec::pem`]).
    pub fn new_pem(value: Vec<u8>) -> Result<Self, InvalidSecret> {
        let value = Zeroizing::new(value);
        if value.is_empty() {
            return Err(InvalidSecret::Empty);
        }
        if value.len() > MAX_SECRET_BYTES {
            return Err(InvalidSecret::TooLong { len: value.len() });
        }
        if value.iter().any(|&b| b.is_ascii_control() && !matches!(b, b'\t' | b'\n' | b'\r')) {
            return Err(InvalidSecret::ControlCharacters);
        }
        Ok(SecretValue(value))
    }

    /// The raw bytes. Only the injector and the redactor call this.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[secret]")
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[secret]")
    }
}

/// Why a value cannot be a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidSecret {
    /// The value is empty.
    #[error("the value is empty")]
    Empty,
    /// The value holds CR, LF, NUL or another control character.
    #[error("the value contains control characters (newline, NUL, …), which cannot go in an HTTP header")]
    ControlCharacters,
    /// The value is longer than [`MAX_SECRET_BYTES`].
    #[error("the value is {len} bytes; a secret is at most {MAX_SECRET_BYTES} bytes")]
    TooLong {
        /// Its length.
        len: usize,
    },
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_value_longer_than_the_limit_is_refused() {
        let at = vec![b'a'; MAX_SECRET_BYTES];
        assert!(SecretValue::new(at.clone()).is_ok() && SecretValue::new_pem(at).is_ok());
        let over = vec![b'a'; MAX_SECRET_BYTES + 1];
        assert_eq!(SecretValue::new(over.clone()), Err(InvalidSecret::TooLong { len: MAX_SECRET_BYTES + 1 }));
        assert_eq!(SecretValue::new_pem(over), Err(InvalidSecret::TooLong { len: MAX_SECRET_BYTES + 1 }));
    }

    #[test]
    fn secret_value_never_prints() {
        let v = SecretValue::new(b"sk_live_abc".to_vec()).unwrap();
        assert_eq!(format!("{v:?} {v}"), "[secret] [secret]");
        assert_eq!(SecretValue::new(Vec::new()), Err(InvalidSecret::Empty));
        assert_eq!(SecretValue::new(b"a\r\nb".to_vec()), Err(InvalidSecret::ControlCharacters));
    }

    #[test]
    fn a_pem_value_may_hold_line_breaks_but_no_other_control_character() {
        assert!(SecretValue::new_pem(b"-----BEGIN X-----\r\nAAAA\n-----END X-----\n".to_vec()).is_ok());
        assert_eq!(SecretValue::new_pem(b"a\0b".to_vec()), Err(InvalidSecret::ControlCharacters));
        assert_eq!(SecretValue::new_pem(Vec::new()), Err(InvalidSecret::Empty));
    }
}
