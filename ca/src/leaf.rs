//! Minting leaf certificates: one per host, each with its own key.
//!
//! Every field is chosen for the strictest clients in use (Python 3.13's
//! default `VERIFY_X509_STRICT`, `openssl verify -x509_strict`, Chromium,
//! Apple): the exact host as the only SAN, with IP literals as IP SANs;
//! a CN only when it fits the 64-character limit of X.520 (when the
//! subject is empty rcgen marks the SAN critical, as RFC 5280 requires);
//! keyUsage digitalSignature (critical) and extendedKeyUsage serverAuth,
//! which are what an ECDSA TLS server key needs and no more; an authority
//! key identifier for path building; a random positive serial; notBefore an
//! hour back for clients whose clock runs slow; and a validity under the 90
//! days that locally trusted leaves are held to.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

use crate::{CaError, CertificateAuthority, normalize_host, random};

/// How far back a leaf's notBefore is set, for clients with a slow clock.
pub(crate) const LEAF_BACKDATE: Duration = Duration::from_secs(3600);
/// A leaf's whole validity, notBefore to notAfter: clearly under 90 days.
pub(crate) const LEAF_VALIDITY: Duration = Duration::from_secs(89 * 24 * 3600);
/// The longest CN X.520 allows (`ub-common-name`); longer hosts go in the
/// SAN only.
const MAX_CN_LEN: usize = 63;

/// A minted leaf: the chain `[leaf, CA]` and the leaf's own private key.
pub struct Leaf {
    /// `[leaf, CA]`, DER.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key, PKCS#8 (never the CA's).
    pub key: PrivateKeyDer<'static>,
}

// === impl Leaf ===

impl fmt::Debug for Leaf {
    /// The chain's length only; never the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leaf").field("chain", &self.chain.len()).finish_non_exhaustive()
    }
}

// === impl CertificateAuthority ===

impl CertificateAuthority {
    /// Mints a leaf for `host`, normalised first (see [`normalize_host`]).
    /// Returns the chain `[leaf, CA]` and the leaf's freshly generated key.
    pub fn mint(&self, host: &str) -> Result<Leaf, CaError> {
        let host = normalize_host(host)?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CaError::Generate)?;

        let mut params = CertificateParams::default();
        let san = match host.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            // normalize_host allows only ASCII, so this cannot fail; an
            // error rather than a panic all the same.
            Err(_) => SanType::DnsName(host.as_str().try_into().map_err(|_| CaError::InvalidHost(host.clone()))?),
        };
        params.subject_alt_names = vec![san];
        // Replaces rcgen's default subject ("rcgen self signed cert").
        let mut dn = DistinguishedName::new();
        if host.len() <= MAX_CN_LEN {
            dn.push(DnType::CommonName, host.as_str());
        }
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        // rcgen takes the identifier from the issuer as loaded from ca.pem,
        // so it is the stored SKI.
        params.use_authority_key_identifier_extension = true;
        let not_before = OffsetDateTime::now_utc() - LEAF_BACKDATE;
        params.not_before = not_before;
        // No leaf outlives its CA: clients reject a chain where it does.
        params.not_after = (not_before + LEAF_VALIDITY).min(self.not_after);
        params.serial_number = Some(random::serial()?);

        let cert = params.signed_by(&key, &self.issuer).map_err(CaError::Generate)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok(Leaf { chain: vec![cert.der().clone(), self.cert_der().clone()], key })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::fs;

    use rcgen::{BasicConstraints, KeyIdMethod};
    use x509_parser::extensions::GeneralName;
    use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY};
    use x509_parser::prelude::*;

    use super::*;
    use crate::test_support::{TempDir, aki, new_ca, ski};

    fn parse(der: &[u8]) -> X509Certificate<'_> {
        X509Certificate::from_der(der).unwrap().1
    }

    /// What each host must come out as: its SAN and whether it has a CN.
    enum Want {
        Dns(&'static str),
        Ip(&'static [u8]),
        DnsOwned(String),
    }

    #[test]
    fn leaves_are_what_strict_clients_require() {
        let (ca, _dir) = new_ca();
        let ca_cert = parse(ca.cert_der());
        let ca_ski = ski(&ca_cert).unwrap();
        let cn_max = format!("{}.test", "c".repeat(58)); // 63 characters
        let too_long_for_cn = format!("{}.test", "d".repeat(59)); // 64 characters
        let long = format!("{}.{}.example.test", "a".repeat(63), "b".repeat(40));
        let cases = [
            ("API.Example.test.", Want::Dns("api.example.test"), true),
            ("localhost", Want::Dns("localhost"), true),
            ("127.0.0.1", Want::Ip(&[127, 0, 0, 1]), true),
            ("[::1]", Want::Ip(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]), true),
            (cn_max.as_str(), Want::DnsOwned(cn_max.clone()), true),
            (too_long_for_cn.as_str(), Want::DnsOwned(too_long_for_cn.clone()), false),
            (long.as_str(), Want::DnsOwned(long.clone()), false),
        ];
        let now = OffsetDateTime::now_utc().unix_timestamp();
        for (host, want, has_cn) in cases {
            let leaf = ca.mint(host).unwrap();
            assert_eq!(leaf.chain.len(), 2, "{host}");
            assert_eq!(leaf.chain[1], *ca.cert_der(), "{host}: the chain ends with the CA");
            let cert = parse(&leaf.chain[0]);

            // SAN: exactly one, of the right kind; critical when the
            // subject is empty (RFC 5280 4.2.1.6).
            let san = cert.subject_alternative_name().unwrap().unwrap();
            assert_eq!(san.value.general_names.len(), 1, "{host}");
            match (&san.value.general_names[0], &want) {
                (GeneralName::DNSName(got), Want::Dns(w)) => assert_eq!(got, w),
                (GeneralName::DNSName(got), Want::DnsOwned(w)) => assert_eq!(got, w),
                (GeneralName::IPAddress(got), Want::Ip(w)) => assert_eq!(got, w),
                (got, _) => panic!("{host}: unexpected SAN {got:?}"),
            }
            let cn = cert.subject().iter_common_name().next().map(|c| c.as_str().unwrap().to_owned());
            if has_cn {
                assert_eq!(cn.as_deref(), Some(normalize_host(host).unwrap().as_str()), "{host}");
                assert!(!san.critical, "{host}");
            } else {
                assert_eq!(cn, None, "{host}: no CN of 64 characters or more");
                assert!(cert.subject().iter().next().is_none(), "{host}: empty subject");
                assert!(san.critical, "{host}: SAN is critical when the subject is empty");
            }

            assert_eq!(cert.issuer(), ca_cert.subject(), "{host}");
            assert_eq!(aki(&cert).unwrap(), ca_ski, "{host}: AKI is the CA's stored SKI");
            let ku = cert.key_usage().unwrap().unwrap();
            assert!(ku.critical && ku.value.digital_signature(), "{host}");
            assert!(!ku.value.key_cert_sign() && !ku.value.crl_sign() && !ku.value.key_encipherment(), "{host}");
            let eku = cert.extended_key_usage().unwrap().unwrap().value;
            assert!(eku.server_auth && !eku.client_auth && !eku.any && eku.other.is_empty(), "{host}");
            let bc = cert.basic_constraints().unwrap().unwrap();
            assert!(!bc.value.ca && bc.value.path_len_constraint.is_none(), "{host}");

            let v = cert.validity();
            let total = v.not_after.timestamp() - v.not_before.timestamp();
            assert!(total < 90 * 86_400 && total > 80 * 86_400, "{host}: {total} s of validity");
            let backdate = now - v.not_before.timestamp();
            assert!((3600 - 120..=3600 + 120).contains(&backdate), "{host}: notBefore {backdate} s ago");

            let spki = cert.public_key();
            assert_eq!(spki.algorithm.algorithm, OID_KEY_TYPE_EC_PUBLIC_KEY);
            assert_eq!(spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok()), Some(OID_EC_P256));
            assert_ne!(spki.raw, ca_cert.public_key().raw, "{host}: the leaf has its own key");
            let key = KeyPair::try_from(&leaf.key).unwrap();
            assert_eq!(key.public_key_raw(), spki.subject_public_key.data.as_ref(), "{host}: key matches cert");

            let serial = cert.raw_serial();
            assert!(serial.len() == 16 && serial[0] & 0x80 == 0, "{host}: positive 16-byte serial");
        }
    }

    #[test]
    fn every_mint_has_a_new_key_and_serial() {
        let (ca, _dir) = new_ca();
        let (a, b) = (ca.mint("a.test").unwrap(), ca.mint("a.test").unwrap());
        let (ca_, cb) = (parse(&a.chain[0]), parse(&b.chain[0]));
        assert_ne!(ca_.raw_serial(), cb.raw_serial());
        assert_ne!(ca_.public_key().raw, cb.public_key().raw);
        assert_ne!(a.key.secret_der(), b.key.secret_der());
    }

    #[test]
    fn invalid_hosts_are_refused() {
        let (ca, _dir) = new_ca();
        for host in ["", "a b", "*.a.test", "a/b", "[a.test]"] {
            assert!(matches!(ca.mint(host), Err(CaError::InvalidHost(_))), "{host:?}");
        }
    }

    /// Every kind of host the shared normaliser accepts gets a leaf naming
    /// it, so the policy admits no host the CA then cannot mint for.
    #[test]
    fn every_host_the_normaliser_accepts_is_minted() {
        let (ca, _dir) = new_ca();
        let longest = format!("{}.test", ["a"; 124].join("."));
        let hosts = ["_a.test", "a_b.test", "xn--bcher-kva.example", "1.example", "x.0xg", "A.Test.", longest.as_str()];
        for host in hosts {
            let name = airlock_host::normalize(host).unwrap();
            let leaf = ca.mint(host).unwrap_or_else(|e| panic!("{host:?}: {e}"));
            let cert = parse(&leaf.chain[0]);
            let san = cert.subject_alternative_name().unwrap().unwrap();
            assert!(matches!(san.value.general_names[..], [GeneralName::DNSName(n)] if n == name), "{host:?}");
        }
        let leaf = ca.mint("[::ffff:1.2.3.4]").unwrap();
        let cert = parse(&leaf.chain[0]);
        let san = cert.subject_alternative_name().unwrap().unwrap();
        assert!(matches!(san.value.general_names[..], [GeneralName::IPAddress(_)]), "{san:?}");
    }

    /// A CA made elsewhere: its SKI is random bytes (no hash of the key
    /// gives them) and it expires in ten days. A leaf's AKI can only match
    /// if it is read from the stored certificate, and the leaf must not
    /// outlive the CA.
    #[test]
    fn a_ca_from_elsewhere_keeps_its_stored_ski_and_caps_leaf_validity() {
        let dir = TempDir::new();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        let stored_ski = random::bytes::<20>().unwrap().to_vec();
        params.key_identifier_method = KeyIdMethod::PreSpecified(stored_ski.clone());
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::from_secs(86_400);
        params.not_after = now + Duration::from_secs(10 * 86_400);
        let cert = params.self_signed(&key).unwrap();
        fs::write(dir.path().join("ca.pem"), cert.pem()).unwrap();
        fs::write(dir.path().join("ca-key.pem"), key.serialize_pem()).unwrap();

        let ca = CertificateAuthority::load(dir.path()).unwrap();
        assert_eq!(ski(&parse(ca.cert_der())), Some(stored_ski.clone()));
        let leaf = ca.mint("a.test").unwrap();
        let leaf_cert = parse(&leaf.chain[0]);
        assert_eq!(aki(&leaf_cert), Some(stored_ski));
        let ca_not_after = parse(ca.cert_der()).validity().not_after.timestamp();
        assert_eq!(leaf_cert.validity().not_after.timestamp(), ca_not_after, "capped at the CA's notAfter");
    }

    #[test]
    fn an_expired_ca_is_refused() {
        let dir = TempDir::new();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::from_secs(20 * 86_400);
        params.not_after = now - Duration::from_secs(86_400);
        let cert = params.self_signed(&key).unwrap();
        fs::write(dir.path().join("ca.pem"), cert.pem()).unwrap();
        fs::write(dir.path().join("ca-key.pem"), key.serialize_pem()).unwrap();
        let err = CertificateAuthority::load_or_create(dir.path()).unwrap_err();
        assert!(matches!(&err, CaError::Invalid { reason, .. } if reason.contains("expired")), "{err:?}");
    }
}
