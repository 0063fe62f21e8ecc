//! The CA itself: created once per `AIRLOCK_HOME`, and from then on loaded
//! from its PEM files.
//!
//! A freshly created CA is loaded back from the files just written, so new
//! and existing CAs take one code path. Loading keeps the certificate
//! exactly as stored: leaves name their authority by the subject key
//! identifier *read from* `ca.pem`, never one recomputed from the key, so
//! the two match byte for byte whatever tool or version made the CA.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use time::OffsetDateTime;
use x509_parser::extensions::ParsedExtension;
use zeroize::Zeroizing;

use crate::leaf::{LEAF_BACKDATE, LEAF_VALIDITY};
use crate::{CaError, files, random};

const CERT_FILE: &str = "ca.pem";
const KEY_FILE: &str = "ca-key.pem";
/// How long a new CA is valid: ten years, leap days included.
const CA_VALIDITY: Duration = Duration::from_secs(3653 * 24 * 3600);
/// How long `load_or_create` waits for a concurrent creator to finish
/// writing the second file before calling the pair incomplete.
const CREATION_WAIT: Duration = Duration::from_secs(2);

/// airlock's local CA: its certificate and the key that signs leaves.
pub struct CertificateAuthority {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    /// The CA's own notAfter; no leaf outlives it.
    pub(crate) not_after: OffsetDateTime,
    /// Subject, stored key identifier and signing key of the CA.
    pub(crate) issuer: Issuer<'static, KeyPair>,
}

// === impl CertificateAuthority ===

impl fmt::Debug for CertificateAuthority {
    /// Never the key: only what is public anyway.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority").field("not_after", &self.not_after).finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// `dir/ca.pem`, the CA certificate agents must trust.
    pub fn cert_path(dir: &Path) -> PathBuf {
        dir.join(CERT_FILE)
    }

    fn key_path(dir: &Path) -> PathBuf {
        dir.join(KEY_FILE)
    }

    /// Loads `dir/ca.pem` + `dir/ca-key.pem`, creating both (and `dir`) if
    /// neither exists.
    ///
    /// Never overwrites or deletes an existing file: when only one of the
    /// two exists this is [`CaError::Incomplete`]. Safe against concurrent
    /// callers on the same directory, in this or other processes: exactly
    /// one creates the CA and all of them load that one.
    pub fn load_or_create(dir: &Path) -> Result<Self, CaError> {
        let (cert, key) = (Self::cert_path(dir), Self::key_path(dir));
        // `create` gives `None` when another creator got there first; then
        // load what that one writes.
        if !exists(&cert)?
            && !exists(&key)?
            && let Some(ca) = Self::create(dir)?
        {
            return Ok(ca);
        }
        // One file without the other is either a creator half-way through
        // (the key is written first, the certificate a moment later) or a
        // broken directory. Give the first a moment before calling it the
        // second.
        let deadline = Instant::now() + CREATION_WAIT;
        while exists(&cert)? != exists(&key)? && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        Self::load(dir)
    }

    /// Loads an existing CA from `dir/ca.pem` + `dir/ca-key.pem`.
    ///
    /// Fails, naming the file, when either is missing or unreadable, is
    /// not PEM, when the certificate is not a CA or has expired, or when
    /// the key is not the certificate's.
    pub fn load(dir: &Path) -> Result<Self, CaError> {
        let (cert_path, key_path) = (Self::cert_path(dir), Self::key_path(dir));
        match (exists(&cert_path)?, exists(&key_path)?) {
            (true, false) => return Err(CaError::Incomplete { present: cert_path, missing: key_path }),
            (false, true) => return Err(CaError::Incomplete { present: key_path, missing: cert_path }),
            // Both exist, or neither does and reading says so.
            _ => {}
        }
        let cert_pem = fs::read_to_string(&cert_path).map_err(io_err(&cert_path))?;
        let key_pem = Zeroizing::new(fs::read_to_string(&key_path).map_err(io_err(&key_path))?);
        warn_if_readable_by_others(&key_path);

        let invalid_key = |reason: String| CaError::Invalid { path: key_path.clone(), reason };
        let invalid_cert = |reason: String| CaError::Invalid { path: cert_path.clone(), reason };
        // rcgen's parse errors name the problem, never the bytes.
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| invalid_key(format!("not a PEM private key airlock can sign with ({e})")))?;
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|_| invalid_cert("holds no PEM certificate".into()))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|e| invalid_cert(format!("cannot parse the certificate ({e})")))?;

        if !parsed.is_ca() {
            return Err(invalid_cert("is not a CA certificate (no basicConstraints CA:true)".into()));
        }
        if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(invalid_key(format!("is not the key of the certificate in {}", cert_path.display())));
        }
        let not_after = parsed.validity().not_after.to_datetime();
        let now = OffsetDateTime::now_utc();
        if not_after <= now {
            return Err(invalid_cert(format!(
                "the CA expired on {}; move {CERT_FILE} and {KEY_FILE} away to create a new CA \
                 (agents must then trust the new one)",
                not_after.date()
            )));
        }
        if not_after - now < LEAF_VALIDITY + LEAF_BACKDATE {
            tracing::warn!(path = %cert_path.display(), expires = %not_after.date(), "the local CA expires soon");
        }
        let has_ski = parsed
            .extensions()
            .iter()
            .any(|e| matches!(e.parsed_extension(), ParsedExtension::SubjectKeyIdentifier(_)));
        if !has_ski {
            // rcgen would then derive the leaves' AKI from the key, which
            // strict clients cannot match to a CA without an SKI.
            tracing::warn!(path = %cert_path.display(), "the CA has no subject key identifier; strict TLS clients will reject its leaves");
        }

        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(|e| invalid_cert(format!("cannot be used to issue certificates ({e})")))?;
        Ok(CertificateAuthority { cert_pem, cert_der, not_after, issuer })
    }

    /// Creates a new CA in `dir`. `None` when another creator wrote the key
    /// first, so this one wrote nothing.
    fn create(dir: &Path) -> Result<Option<Self>, CaError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CaError::Generate)?;
        let now = OffsetDateTime::now_utc();

        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        // The date and a random suffix tell one machine's CA from another's
        // (and from an older one) in trust stores and certificate viewers.
        let suffix = hex::encode(random::bytes::<4>()?);
        dn.push(DnType::CommonName, format!("airlock local CA {} {suffix}", now.date()));
        dn.push(DnType::OrganizationName, "airlock");
        params.distinguished_name = dn;
        // Path length 0: this CA signs leaves only, never another CA.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        // SKI (rcgen writes it for every CA) and, as `openssl req -x509`
        // does, an AKI equal to it.
        params.use_authority_key_identifier_extension = true;
        params.not_before = now - LEAF_BACKDATE;
        params.not_after = now + CA_VALIDITY;
        params.serial_number = Some(random::serial()?);
        let cert = params.self_signed(&key).map_err(CaError::Generate)?;

        let (cert_path, key_path) = (Self::cert_path(dir), Self::key_path(dir));
        let key_pem = Zeroizing::new(key.serialize_pem());
        // The key first: whoever links it owns the creation; everyone else
        // finds it there and waits for the certificate.
        match files::create_new(&key_path, key_pem.as_bytes(), 0o600) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(None),
            Err(source) => return Err(CaError::Io { path: key_path, source }),
        }
        if let Err(source) = files::create_new(&cert_path, cert.pem().as_bytes(), 0o644) {
            // A key without its certificate is useless and would make every
            // later start fail as incomplete; it is ours, so remove it.
            let _ = fs::remove_file(&key_path);
            return Err(CaError::Io { path: cert_path, source });
        }
        tracing::info!(path = %cert_path.display(), "created a new local CA; agents must trust this certificate");
        Self::load(dir).map(Some)
    }

    /// The CA certificate, PEM, exactly as stored in `ca.pem`.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CaError + '_ {
    move |source| CaError::Io { path: path.to_owned(), source }
}

fn exists(path: &Path) -> Result<bool, CaError> {
    // An unreadable directory is an error, not "no CA yet": creating one
    // would then fail anyway, or worse, succeed somewhere unexpected.
    path.try_exists().map_err(io_err(path))
}

/// A key file others can read is not refused (mounted secrets are often
/// 0644) but it is worth a word.
fn warn_if_readable_by_others(path: &Path) {
    if let Ok(meta) = fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format_args!("{mode:o}"), "the CA key is readable by group or others; chmod 600 it");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::unix::fs::MetadataExt;
    use std::sync::Arc;

    use x509_parser::prelude::*;

    use super::*;
    use crate::test_support::{TempDir, aki, ski};

    #[test]
    fn created_once_with_strict_modes_then_reloaded_from_disk() {
        let tmp = TempDir::new();
        // A directory that does not exist yet, two levels deep.
        let dir = tmp.path().join("home/airlock");
        let ca = CertificateAuthority::load_or_create(&dir).unwrap();
        let key_meta = fs::metadata(dir.join("ca-key.pem")).unwrap();
        assert_eq!(key_meta.mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(dir.join("ca.pem")).unwrap().mode() & 0o777, 0o644);
        assert_eq!(fs::read_to_string(CertificateAuthority::cert_path(&dir)).unwrap(), ca.cert_pem());

        let again = CertificateAuthority::load_or_create(&dir).unwrap();
        assert_eq!(ca.cert_pem(), again.cert_pem());
        assert_eq!(ca.cert_der(), again.cert_der());
        let loaded = CertificateAuthority::load(&dir).unwrap();
        assert_eq!(ca.cert_pem(), loaded.cert_pem());
        assert_eq!(fs::metadata(dir.join("ca-key.pem")).unwrap().ino(), key_meta.ino(), "the key was not rewritten");
        let mut names: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert_eq!(names, ["ca-key.pem", "ca.pem"]);
    }

    #[test]
    fn the_ca_certificate_is_a_strict_ca() {
        let tmp = TempDir::new();
        let ca = CertificateAuthority::load_or_create(tmp.path()).unwrap();
        let (_, cert) = X509Certificate::from_der(ca.cert_der()).unwrap();

        let bc = cert.basic_constraints().unwrap().unwrap();
        assert!(bc.critical && bc.value.ca);
        assert_eq!(bc.value.path_len_constraint, Some(0));
        let ku = cert.key_usage().unwrap().unwrap();
        assert!(ku.critical && ku.value.key_cert_sign() && ku.value.crl_sign() && !ku.value.digital_signature());
        let ski = ski(&cert).unwrap();
        assert_eq!(ski.len(), 20);
        assert_eq!(aki(&cert), Some(ski), "self-signed: AKI names its own SKI");

        assert_eq!(cert.public_key().algorithm.algorithm, x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY);
        assert_eq!(
            cert.public_key().algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok()),
            Some(x509_parser::oid_registry::OID_EC_P256)
        );
        let v = cert.validity();
        let days = (v.not_after.timestamp() - v.not_before.timestamp()) / 86_400;
        assert!((3650..=3654).contains(&days), "{days} days");
        assert!(cert.raw_serial()[0] & 0x80 == 0 && cert.raw_serial().len() == 16);

        let cn = cert.subject().iter_common_name().next().unwrap().as_str().unwrap().to_owned();
        let today = OffsetDateTime::now_utc().date().to_string();
        assert!(cn.starts_with(&format!("airlock local CA {today} ")) && cn.len() == 17 + 10 + 1 + 8, "{cn}");
        let org = cert.subject().iter_organization().next().unwrap().as_str().unwrap().to_owned();
        assert_eq!(org, "airlock");
        assert_eq!(cert.subject(), cert.issuer());
    }

    #[test]
    fn two_cas_are_distinguishable() {
        let (a, b) = (TempDir::new(), TempDir::new());
        let a = CertificateAuthority::load_or_create(a.path()).unwrap();
        let b = CertificateAuthority::load_or_create(b.path()).unwrap();
        let subject = |ca: &CertificateAuthority| {
            let (_, c) = X509Certificate::from_der(ca.cert_der()).unwrap();
            c.subject().to_string()
        };
        assert_ne!(subject(&a), subject(&b));
    }

    #[test]
    fn debug_never_shows_the_key() {
        let tmp = TempDir::new();
        let ca = CertificateAuthority::load_or_create(tmp.path()).unwrap();
        let key_pem = fs::read_to_string(tmp.path().join("ca-key.pem")).unwrap();
        let body: String = key_pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let debug = format!("{ca:?} {ca:#?}");
        assert!(!debug.contains("PRIVATE") && !debug.contains(&body[..40]), "{debug}");
        let leaf = ca.mint("a.test").unwrap();
        let debug = format!("{leaf:?}");
        assert!(!debug.contains("Pkcs8") && debug.contains("chain"), "{debug}");
    }

    #[test]
    fn a_lone_file_is_an_error_naming_both_and_is_never_replaced() {
        let tmp = TempDir::new();
        CertificateAuthority::load_or_create(tmp.path()).unwrap();
        let (cert, key) = (tmp.path().join("ca.pem"), tmp.path().join("ca-key.pem"));
        let key_bytes = fs::read(&key).unwrap();
        let cert_bytes = fs::read(&cert).unwrap();

        fs::remove_file(&cert).unwrap();
        for result in [CertificateAuthority::load_or_create(tmp.path()), CertificateAuthority::load(tmp.path())] {
            let err = result.unwrap_err();
            assert!(matches!(&err, CaError::Incomplete { present, missing } if *present == key && *missing == cert));
            let msg = err.to_string();
            assert!(msg.contains(&*key.to_string_lossy()) && msg.contains(&*cert.to_string_lossy()), "{msg}");
        }
        assert_eq!(fs::read(&key).unwrap(), key_bytes, "the key is untouched");
        assert!(!cert.exists(), "no certificate was made up for the old key");

        fs::write(&cert, &cert_bytes).unwrap();
        fs::remove_file(&key).unwrap();
        let err = CertificateAuthority::load_or_create(tmp.path()).unwrap_err();
        assert!(matches!(&err, CaError::Incomplete { present, missing } if *present == cert && *missing == key));
        assert_eq!(fs::read(&cert).unwrap(), cert_bytes);
        assert!(!key.exists());
    }

    #[test]
    fn a_key_of_another_ca_is_refused_naming_the_key() {
        let (a, b) = (TempDir::new(), TempDir::new());
        CertificateAuthority::load_or_create(a.path()).unwrap();
        CertificateAuthority::load_or_create(b.path()).unwrap();
        fs::copy(b.path().join("ca-key.pem"), a.path().join("ca-key.pem")).unwrap();
        let err = CertificateAuthority::load_or_create(a.path()).unwrap_err();
        let key = a.path().join("ca-key.pem");
        assert!(matches!(&err, CaError::Invalid { path, .. } if *path == key), "{err:?}");
        assert!(err.to_string().contains("is not the key of the certificate"), "{err}");
    }

    #[test]
    fn garbage_and_non_ca_files_are_refused_naming_the_file() {
        let tmp = TempDir::new();
        CertificateAuthority::load_or_create(tmp.path()).unwrap();
        let (cert, key) = (tmp.path().join("ca.pem"), tmp.path().join("ca-key.pem"));
        let good_cert = fs::read(&cert).unwrap();
        let good_key = fs::read(&key).unwrap();

        fs::write(&cert, "not a certificate").unwrap();
        let err = CertificateAuthority::load(tmp.path()).unwrap_err();
        assert!(matches!(&err, CaError::Invalid { path, .. } if *path == cert), "{err:?}");

        // A leaf of this very CA, with the CA key: parses, matches nothing.
        fs::write(&cert, &good_cert).unwrap();
        let ca = CertificateAuthority::load(tmp.path()).unwrap();
        let leaf = ca.mint("a.test").unwrap();
        fs::write(&cert, crate::test_support::der_to_pem(&leaf.chain[0])).unwrap();
        let err = CertificateAuthority::load(tmp.path()).unwrap_err();
        assert!(matches!(&err, CaError::Invalid { path, reason } if *path == cert && reason.contains("not a CA")));

        fs::write(&cert, &good_cert).unwrap();
        fs::write(&key, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").unwrap();
        let err = CertificateAuthority::load(tmp.path()).unwrap_err();
        assert!(matches!(&err, CaError::Invalid { path, .. } if *path == key), "{err:?}");
        assert!(!err.to_string().contains("AAAA"));

        fs::write(&key, &good_key).unwrap();
        CertificateAuthority::load(tmp.path()).unwrap();
    }

    #[test]
    fn a_missing_ca_is_an_io_error_naming_the_certificate() {
        let tmp = TempDir::new();
        let err = CertificateAuthority::load(tmp.path()).unwrap_err();
        let cert = tmp.path().join("ca.pem");
        assert!(
            matches!(&err, CaError::Io { path, source } if *path == cert && source.kind() == io::ErrorKind::NotFound),
            "{err:?}"
        );
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0, "load never creates");
    }

    #[test]
    fn concurrent_creators_agree_on_one_ca() {
        let tmp = TempDir::new();
        let dir = Arc::new(tmp.path().join("home"));
        let threads: Vec<_> = (0..6)
            .map(|_| {
                let dir = Arc::clone(&dir);
                thread::spawn(move || CertificateAuthority::load_or_create(&dir).map(|ca| ca.cert_pem().to_owned()))
            })
            .collect();
        let pems: Vec<String> = threads.into_iter().map(|t| t.join().unwrap().unwrap()).collect();
        assert!(pems.windows(2).all(|w| w[0] == w[1]), "every caller loaded the same CA");
        assert_eq!(fs::read_to_string(dir.join("ca.pem")).unwrap(), pems[0]);
        assert_eq!(fs::read_dir(&*dir).unwrap().count(), 2, "no temporary files left behind");
    }
}
