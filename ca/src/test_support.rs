//! Helpers shared by the unit tests.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::CertificateAuthority;
use crate::random;

/// A fresh directory under the system temp dir, removed on drop (also when
/// the test panics).
#[derive(Debug)]
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("airlock-ca-test-{}", hex::encode(random::bytes::<8>().unwrap())));
        std::fs::create_dir(&dir).unwrap();
        TempDir(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A CA created in its own temporary directory.
pub(crate) fn new_ca() -> (Arc<CertificateAuthority>, TempDir) {
    let dir = TempDir::new();
    let ca = CertificateAuthority::load_or_create(&dir.path().join("home")).unwrap();
    (Arc::new(ca), dir)
}

/// PEM armour for a DER certificate, for the command-line tools.
pub(crate) fn der_to_pem(der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for chunk in der.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 0x3f) as usize]));
            } else {
                b64.push('=');
            }
        }
    }
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

#[test]
fn der_to_pem_round_trips_through_the_pem_parser() {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    for len in [1usize, 2, 3, 4, 47, 48, 49, 500] {
        let der: Vec<u8> = (0..len).map(|i| (i * 37 % 256) as u8).collect();
        let back = CertificateDer::from_pem_slice(der_to_pem(&der).as_bytes()).unwrap();
        assert_eq!(back.as_ref(), der.as_slice(), "{len}");
    }
}

/// The subject key identifier of `cert`.
pub(crate) fn ski(cert: &x509_parser::certificate::X509Certificate<'_>) -> Option<Vec<u8>> {
    use x509_parser::extensions::ParsedExtension;
    cert.extensions().iter().find_map(|e| match e.parsed_extension() {
        ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
        _ => None,
    })
}

/// The key identifier in the authority key identifier of `cert`.
pub(crate) fn aki(cert: &x509_parser::certificate::X509Certificate<'_>) -> Option<Vec<u8>> {
    use x509_parser::extensions::ParsedExtension;
    cert.extensions().iter().find_map(|e| match e.parsed_extension() {
        ParsedExtension::AuthorityKeyIdentifier(a) => a.key_identifier.as_ref().map(|k| k.0.to_vec()),
        _ => None,
    })
}
