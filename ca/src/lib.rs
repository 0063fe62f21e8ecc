//! airlock's local certificate authority: create or load the CA in
//! `AIRLOCK_HOME`, mint a leaf certificate per intercepted host, and cache
//! the TLS server configuration built from each leaf.
//!
//! What this crate must never do:
//!
//! - know anything of policy: it mints for whatever host it is given, and
//!   deciding whether a host may be intercepted is the proxy's job;
//! - log, print or format key material: the `Debug` impls of
//!   [`CertificateAuthority`] and [`Leaf`] omit keys, errors never carry
//!   them, and the CA key's PEM is zeroed after use;
//! - write the CA key with loose permissions: `ca-key.pem` is created with
//!   mode 0600 from its first byte, never chmod-ed down afterwards;
//! - overwrite an existing CA file, or give a leaf the CA's own key.
//!
//! Leaves are what strict clients require (Python 3.13
//! `VERIFY_X509_STRICT`, `openssl verify -x509_strict`, Chromium, Apple): a
//! fresh P-256 key, a random positive serial, notBefore backdated one hour,
//! under 90 days of validity, the host as the only SAN (IP literals as IP
//! SANs), a CN only when the host is shorter than 64 characters, keyUsage
//! digitalSignature, extendedKeyUsage serverAuth, and an authority key
//! identifier equal, byte for byte, to the subject key identifier stored in
//! the CA certificate.
#![deny(missing_docs)]

mod authority;
mod cache;
mod files;
mod host;
mod leaf;
mod random;

#[cfg(test)]
mod strict_clients;
#[cfg(test)]
mod test_support;

pub use authority::CertificateAuthority;
pub use cache::LeafCache;
pub use host::normalize_host;
pub use leaf::Leaf;

use std::path::PathBuf;

/// Why a CA operation failed. Never carries key material.
///
/// Display strings do not repeat their `source`, so printing the error chain
/// shows each cause once.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// Reading or writing a CA file or directory failed.
    #[error("{path}", path = path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// One of the two CA files exists without the other. Nothing was
    /// written: creating a new CA here would orphan the existing file.
    #[error(
        "{present} exists but {missing} does not; restore the missing file, or move both away to create a new CA \
         (agents must then trust the new one)",
        present = present.display(),
        missing = missing.display()
    )]
    Incomplete {
        /// The file that exists.
        present: PathBuf,
        /// The file that is missing.
        missing: PathBuf,
    },
    /// A CA file could not be parsed, is not usable as a CA, or the key does
    /// not belong to the certificate.
    #[error("{path}: {reason}", path = path.display())]
    Invalid {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The host cannot be put in a certificate: not a DNS name of letters,
    /// digits, `-` and `_`, nor an IP literal. Holds at most the first 80
    /// characters of the input.
    #[error("{0:?} is not a valid host name or IP address")]
    InvalidHost(String),
    /// Generating a key or signing a certificate failed.
    #[error("cannot generate a certificate")]
    Generate(#[source] rcgen::Error),
    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator failed: {0}")]
    Random(getrandom::Error),
    /// rustls refused the minted leaf for a server configuration.
    #[error("cannot build a TLS server configuration for the leaf")]
    Tls(#[source] rustls::Error),
}
