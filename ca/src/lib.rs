//! airlock's local certificate authority: create or load the CA in
//! AIRLOCK_HOME, mint a leaf certificate per intercepted host, and cache the
//! TLS server configuration built from each leaf.
//!
//! What this crate must never do: know anything of policy (it mints for the
//! host it is given), log or print key material (`Debug` impls omit keys),
//! write the CA key with loose permissions (it is created 0600), sign a leaf
//! with the CA's own key pair as the leaf key, or overwrite an existing CA.
//!
//! Leaves are what strict clients require (Python 3.13 `VERIFY_X509_STRICT`,
//! `openssl verify -x509_strict`, Chromium, Apple): a fresh P-256 key, a
//! random positive serial, notBefore backdated one hour, under 90 days of
//! validity, the host as the only SAN (IP literals as IP SANs), CN only when
//! shorter than 64 characters, keyUsage digitalSignature, extendedKeyUsage
//! serverAuth, and an authority key identifier equal to the CA's stored
//! subject key identifier.
#![deny(missing_docs)]

mod authority;
mod cache;
mod host;

pub use authority::{CertificateAuthority, Leaf};
pub use cache::LeafCache;
pub use host::normalize_host;

use std::path::PathBuf;

/// Why a CA operation failed. Never carries key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// Reading or writing a CA file failed.
    #[error("{path}", path = path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// One of the two CA files exists without the other.
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
    /// A CA file could not be parsed, or the key does not match the
    /// certificate.
    #[error("{path}: {reason}", path = path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The host cannot be put in a certificate.
    #[error("'{0}' is not a valid host name or IP address")]
    InvalidHost(String),
    /// Certificate generation failed.
    #[error("cannot generate a certificate: {0}")]
    Generate(String),
}
