//! The CA itself: created once per AIRLOCK_HOME, loaded from its PEM files
//! afterwards, and the leaf minting.

use std::fmt;
use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

use crate::{CaError, normalize_host};

const CERT_FILE: &str = "ca.pem";
const KEY_FILE: &str = "ca-key.pem";
/// How long the CA is valid.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How far back a leaf's notBefore is set, for clients with a slow clock.
const LEAF_BACKDATE: Duration = Duration::from_secs(3600);
/// A leaf's whole validity, notBefore to notAfter: under the 90 days strict
/// clients accept for locally trusted leaves (and Apple's 825-day limit).
pub(crate) const LEAF_VALIDITY: Duration = Duration::from_secs(89 * 24 * 3600);

/// airlock's local CA.
pub struct CertificateAuthority {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority").finish_non_exhaustive()
    }
}

/// A minted leaf: the chain `[leaf, CA]` and the leaf's own key.
pub struct Leaf {
    /// `[leaf, CA]`, DER.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key (never the CA's).
    pub key: PrivateKeyDer<'static>,
}

impl fmt::Debug for Leaf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leaf").field("chain_len", &self.chain.len()).finish_non_exhaustive()
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + '_ {
    move |source| CaError::Io { path: path.to_owned(), source }
}

impl CertificateAuthority {
    /// `dir/ca.pem`.
    pub fn cert_path(dir: &Path) -> PathBuf {
        dir.join(CERT_FILE)
    }

    fn key_path(dir: &Path) -> PathBuf {
        dir.join(KEY_FILE)
    }

    /// Loads `dir/ca.pem` and `dir/ca-key.pem`, creating both (and `dir`)
    /// when neither exists. Never overwrites an existing file.
    pub fn load_or_create(dir: &Path) -> Result<Self, CaError> {
        let (cert, key) = (Self::cert_path(dir), Self::key_path(dir));
        match (cert.exists(), key.exists()) {
            (true, true) => Self::load(dir),
            (false, false) => Self::create(dir),
            (true, false) => Err(CaError::Incomplete { present: cert, missing: key }),
            (false, true) => Err(CaError::Incomplete { present: key, missing: cert }),
        }
    }

    /// Loads an existing CA. The certificate is parsed from its PEM, so its
    /// stored subject key identifier is what leaves name as their authority.
    pub fn load(dir: &Path) -> Result<Self, CaError> {
        let (cert_path, key_path) = (Self::cert_path(dir), Self::key_path(dir));
        let cert_pem = fs::read_to_string(&cert_path).map_err(io_err(&cert_path))?;
        let key_pem = zeroize::Zeroizing::new(fs::read_to_string(&key_path).map_err(io_err(&key_path))?);
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| CaError::Invalid { path: key_path.clone(), reason: format!("not a PEM private key ({e})") })?;
        let invalid = |reason: String| CaError::Invalid { path: cert_path.clone(), reason };
        let cert_der = pem_to_der(&cert_pem).ok_or_else(|| invalid("not a PEM certificate".into()))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|e| invalid(format!("cannot parse the certificate: {e}")))?;
        if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(invalid(format!("the certificate does not match the key in {}", key_path.display())));
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(|e| invalid(format!("cannot use the certificate as an issuer: {e}")))?;
        Ok(CertificateAuthority { cert_pem, cert_der, issuer })
    }

    fn create(dir: &Path) -> Result<Self, CaError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| CaError::Generate(e.to_string()))?;
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        // A per-CA suffix tells two machines' CAs apart in trust stores.
        dn.push(DnType::CommonName, format!("airlock local CA {}", &hex(&random_bytes::<4>())));
        dn.push(DnType::OrganizationName, "airlock");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = now - LEAF_BACKDATE;
        params.not_after = now + CA_VALIDITY;
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key).map_err(|e| CaError::Generate(e.to_string()))?;

        let (cert_path, key_path) = (Self::cert_path(dir), Self::key_path(dir));
        let key_pem = zeroize::Zeroizing::new(key.serialize_pem());
        write_atomically(&key_path, key_pem.as_bytes(), 0o600)?;
        write_atomically(&cert_path, cert.pem().as_bytes(), 0o644)?;
        // Load back from the files just written: one code path for new and
        // existing CAs, and proof the files are usable.
        Self::load(dir)
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// Mints a leaf for `host` (normalised first).
    pub fn mint(&self, host: &str) -> Result<Leaf, CaError> {
        let host = normalize_host(host)?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| CaError::Generate(e.to_string()))?;
        let mut params = CertificateParams::default();
        let san = match host.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(host.clone().try_into().map_err(|_| CaError::InvalidHost(host.clone()))?),
        };
        params.subject_alt_names = vec![san];
        let mut dn = DistinguishedName::new();
        if host.len() < 64 {
            dn.push(DnType::CommonName, host.as_str());
        }
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let not_before = OffsetDateTime::now_utc() - LEAF_BACKDATE;
        params.not_before = not_before;
        params.not_after = not_before + LEAF_VALIDITY;
        params.serial_number = Some(random_serial());
        let cert = params.signed_by(&key, &self.issuer).map_err(|e| CaError::Generate(e.to_string()))?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok(Leaf { chain: vec![cert.der().clone(), self.cert_der.clone()], key })
    }
}

fn pem_to_der(pem: &str) -> Option<CertificateDer<'static>> {
    use rustls_pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes()).ok()
}

/// Writes a file via a temporary sibling created with `mode`, then renames
/// it into place, refusing to replace an existing file.
fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CaError> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let result = (|| {
        let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        // The umask may have narrowed the mode; the cert must be readable.
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
        if path.exists() {
            return Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "refusing to overwrite"));
        }
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_err(path))
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // Without an OS entropy source no safe certificate can be made at all.
    getrandom::fill(&mut b).expect("the OS random number generator is available");
    b
}

/// 16 random bytes as a positive serial: the top bit cleared (DER integers
/// are signed) and the first byte non-zero (so it keeps all 16 bytes).
fn random_serial() -> SerialNumber {
    let mut b = random_bytes::<16>();
    b[0] &= 0x7f;
    b[0] |= 0x01;
    SerialNumber::from_slice(&b)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use std::os::unix::fs::MetadataExt;

    use x509_parser::extensions::{GeneralName, ParsedExtension};
    use x509_parser::prelude::*;

    use super::*;

    pub(crate) fn unique() -> String {
        hex(&random_bytes::<8>())
    }

    fn tempdir() -> PathBuf {
        std::env::temp_dir().join(format!("airlock-ca-{}", unique()))
    }

    fn ski(cert: &X509Certificate<'_>) -> Vec<u8> {
        cert.extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
                _ => None,
            })
            .unwrap()
    }

    fn aki(cert: &X509Certificate<'_>) -> Vec<u8> {
        cert.extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(k) => k.key_identifier.as_ref().map(|k| k.0.to_vec()),
                _ => None,
            })
            .unwrap()
    }

    #[test]
    fn created_once_then_loaded_with_private_key_file() {
        let dir = tempdir();
        let ca = CertificateAuthority::load_or_create(&dir).unwrap();
        assert_eq!(fs::metadata(dir.join("ca-key.pem")).unwrap().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(dir.join("ca.pem")).unwrap().mode() & 0o777, 0o644);
        let again = CertificateAuthority::load_or_create(&dir).unwrap();
        assert_eq!(ca.cert_pem(), again.cert_pem());
        assert!(!format!("{ca:?}").contains("PRIVATE"));

        let (_, cert) = X509Certificate::from_der(ca.cert_der()).unwrap();
        let bc = cert.basic_constraints().unwrap().unwrap();
        assert!(bc.critical && bc.value.ca);
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign() && ku.crl_sign());
        let years = (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp()) / (365 * 86_400);
        assert!(years >= 9, "{years}");

        fs::remove_file(dir.join("ca.pem")).unwrap();
        let err = CertificateAuthority::load_or_create(&dir).unwrap_err().to_string();
        assert!(err.contains("ca-key.pem") && err.contains("does not"), "{err}");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn leaves_are_what_strict_clients_require() {
        let dir = tempdir();
        CertificateAuthority::load_or_create(&dir).unwrap();
        // Loaded from PEM: the leaves' AKI must equal the stored SKI.
        let ca = CertificateAuthority::load(&dir).unwrap();
        let (_, ca_cert) = X509Certificate::from_der(ca.cert_der()).unwrap();
        let long = format!("{}.example.test", "a".repeat(60));
        let mut serials = Vec::new();
        for host in ["API.Example.test.", "127.0.0.1", "[::1]", long.as_str()] {
            let leaf = ca.mint(host).unwrap();
            assert_eq!(leaf.chain.len(), 2);
            let (_, cert) = X509Certificate::from_der(&leaf.chain[0]).unwrap();
            assert_eq!(aki(&cert), ski(&ca_cert), "{host}");
            let sans = cert.subject_alternative_name().unwrap().unwrap().value.general_names.clone();
            assert_eq!(sans.len(), 1);
            match (&sans[0], host) {
                (GeneralName::DNSName(n), "API.Example.test.") => assert_eq!(*n, "api.example.test"),
                (GeneralName::IPAddress(ip), "127.0.0.1") => assert_eq!(*ip, [127, 0, 0, 1]),
                (GeneralName::IPAddress(ip), "[::1]") => assert_eq!(ip.len(), 16),
                (GeneralName::DNSName(n), _) => assert_eq!(*n, long),
                other => panic!("unexpected SAN {other:?}"),
            }
            let cn = cert.subject().iter_common_name().next().map(|c| c.as_str().unwrap().to_owned());
            if host == long {
                assert_eq!(cn, None)
            } else {
                assert!(cn.is_some())
            }
            let v = cert.validity();
            let total = v.not_after.timestamp() - v.not_before.timestamp();
            assert!(total < 90 * 86_400, "{total}");
            let backdate = OffsetDateTime::now_utc().unix_timestamp() - v.not_before.timestamp();
            assert!((3500..3700).contains(&backdate), "{backdate}");
            let ku = cert.key_usage().unwrap().unwrap().value;
            assert!(ku.digital_signature() && !ku.key_cert_sign());
            assert!(cert.extended_key_usage().unwrap().unwrap().value.server_auth);
            assert_ne!(cert.public_key().raw, ca_cert.public_key().raw, "the leaf has its own key");
            assert!(cert.raw_serial()[0] & 0x80 == 0);
            serials.push(cert.raw_serial().to_vec());
        }
        serials.sort();
        serials.dedup();
        assert_eq!(serials.len(), 4);
        fs::remove_dir_all(dir).unwrap();
    }
}
