//! Client certificates to the upstream (mutual TLS): a route's
//! `client_cert` names two secrets holding, as PEM text, a certificate
//! chain and its private key. They are parsed from memory, never written
//! anywhere; the key lives in the vault's value and in the rustls config
//! built from it, nowhere else.
//!
//! Invariant: a connection that presented one route's certificate serves
//! only that route's requests. Each route with a certificate gets clients
//! of its own ([`IdentityClients`]) — so pools of its own — per egress
//! rule, besides the shared ones requests without a certificate use. A
//! pooled connection is keyed by scheme and authority only and checked by
//! nothing when it is reused, so a shared pool would hand route A's
//! authenticated connection to a request under route B, or under a route
//! with no certificate at all, and the upstream would take it as A.
//!
//! Clients are built on a route's first request (the secrets come from the
//! vault then), kept in [`Identities`], which lives as long as the loaded
//! config (a reload starts afresh), and built again when the secrets'
//! values change (rotation): the cache knows a value only by its SHA-256
//! digest, which it never prints.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use airlock_policy::RouteId;
use airlock_policy::secrets::SecretValue;

use super::Egress;

/// Why a route's client certificate cannot be used. The words name the
/// secrets, never quote them: a PEM parser's own errors may hold a line of
/// the input, so none is ever passed on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The chain's secret holds no readable `CERTIFICATE` block.
    #[error("secret '{secret}' is not a PEM certificate chain (it needs one or more readable CERTIFICATE blocks)")]
    NotChain {
        /// The secret's name.
        secret: String,
    },
    /// The key's secret holds no readable unencrypted private key block.
    #[error(
        "secret '{secret}' is not a PEM private key (it needs an unencrypted PKCS#8 PRIVATE KEY, PKCS#1 RSA PRIVATE \
         KEY or SEC1 EC PRIVATE KEY block)"
    )]
    NotKey {
        /// The secret's name.
        secret: String,
    },
    /// The key is PEM, but not a key rustls can sign with.
    #[error(
        "the private key in secret '{secret}' cannot be used for TLS (not an RSA, ECDSA or Ed25519 key rustls accepts)"
    )]
    UnusableKey {
        /// The secret's name.
        secret: String,
    },
    /// The first certificate of the chain is not a certificate rustls can
    /// read.
    #[error("the first certificate in secret '{secret}' cannot be read ({reason})")]
    BadLeaf {
        /// The secret's name.
        secret: String,
        /// rustls's words (fixed text, no certificate bytes).
        reason: String,
    },
    /// The key is not the one the chain's first certificate is for.
    #[error("the private key in secret '{key}' does not belong to the first certificate in secret '{cert}'")]
    Mismatch {
        /// The chain's secret.
        cert: String,
        /// The key's secret.
        key: String,
    },
}

/// A certificate chain and its key, parsed and checked to belong together:
/// what rustls presents when the upstream asks.
pub struct ClientIdentity(Arc<CertifiedKey>);

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientIdentity([secret])")
    }
}

impl ClientIdentity {
    /// Parses the chain in `cert` (secret `cert_name`) and the key in `key`
    /// (secret `key_name`), both PEM, from memory; checks the key is one
    /// rustls can sign with and that it belongs to the chain's first
    /// certificate. `airlock check` runs the same.
    pub fn parse(cert_name: &str, cert: &[u8], key_name: &str, key: &[u8]) -> Result<Self, IdentityError> {
        let not_chain = || IdentityError::NotChain { secret: cert_name.to_owned() };
        let chain = CertificateDer::pem_slice_iter(cert).collect::<Result<Vec<_>, _>>().map_err(|_| not_chain())?;
        if chain.is_empty() {
            return Err(not_chain());
        }
        let der =
            PrivateKeyDer::from_pem_slice(key).map_err(|_| IdentityError::NotKey { secret: key_name.to_owned() })?;
        let provider = rustls::crypto::ring::default_provider();
        let signer = provider
            .key_provider
            .load_private_key(der)
            .map_err(|_| IdentityError::UnusableKey { secret: key_name.to_owned() })?;
        let certified = CertifiedKey::new(chain, signer);
        match certified.keys_match() {
            // rustls could not tell (a key type it cannot derive the public
            // key of): the upstream will.
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(rustls::Error::InconsistentKeys(_)) => {
                return Err(IdentityError::Mismatch { cert: cert_name.to_owned(), key: key_name.to_owned() });
            }
            Err(e) => return Err(IdentityError::BadLeaf { secret: cert_name.to_owned(), reason: leaf_reason(&e) }),
        }
        Ok(ClientIdentity(Arc::new(certified)))
    }

    /// The resolver a rustls client config presents it with.
    pub(super) fn resolver(&self) -> Arc<dyn rustls::client::ResolvesClientCert> {
        Arc::new(rustls::sign::SingleCertAndKey::from(Arc::clone(&self.0)))
    }
}

/// Why the leaf cannot be read, for the operator: an X.509 v1 certificate
/// (what `openssl x509 -req` makes without `-extfile`) is named as such;
/// anything else in rustls's words (fixed text, never the certificate's
/// bytes).
fn leaf_reason(e: &rustls::Error) -> String {
    let text = e.to_string();
    if text.contains("UnsupportedCertVersion") {
        return "it is an X.509 v1 certificate; a client certificate must be v3 (openssl x509 -req … -extfile with \
                extendedKeyUsage = clientAuth)"
            .to_owned();
    }
    text
}

/// One route's clients under one egress rule, presenting its certificate:
/// one offering h2 and http/1.1 by ALPN, one HTTP/1.1 only (upgrades).
/// Their pools hold only connections that presented this certificate.
#[derive(Clone, Debug)]
pub struct IdentityClients {
    pub(super) clients: super::Clients,
}

impl IdentityClients {
    /// The client for a request; `h1_only` for an upgrade request.
    pub fn client(&self, h1_only: bool) -> &hyper_util::client::legacy::Client<super::Connector, crate::Body> {
        if h1_only { &self.clients.h1 } else { &self.clients.both }
    }
}

/// The clients built for routes' certificates, by route and egress rule,
/// each with the digest of the values it was built from.
#[derive(Clone, Default)]
pub(super) struct Identities(Arc<Mutex<HashMap<(RouteId, Egress), Built>>>);

struct Built {
    digest: [u8; 32],
    clients: Arc<IdentityClients>,
}

impl fmt::Debug for Identities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.lock().map_or(0, |m| m.len());
        f.debug_struct("Identities").field("built", &n).finish()
    }
}

impl Identities {
    /// The clients for `route` under `egress` presenting the certificate
    /// in `cert` and `key`: those built before when the values are the
    /// same, else new ones from `build` (replacing any older ones: their
    /// connections serve only the requests already holding them).
    pub(super) fn get_or_build(
        &self,
        route: RouteId,
        egress: Egress,
        cert: &SecretValue,
        key: &SecretValue,
        build: impl FnOnce() -> Result<IdentityClients, IdentityError>,
    ) -> Result<Arc<IdentityClients>, IdentityError> {
        let digest = digest(cert, key);
        // The lock is held while building (parsing a key, a rustls config:
        // microseconds to a millisecond), so concurrent first requests
        // share one client, and one pool.
        let mut built = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(b) = built.get(&(route, egress))
            && b.digest == digest
        {
            return Ok(Arc::clone(&b.clients));
        }
        let clients = Arc::new(build()?);
        built.insert((route, egress), Built { digest, clients: Arc::clone(&clients) });
        Ok(clients)
    }
}

/// SHA-256 over both values, each preceded by its length (so no two pairs
/// share an input).
fn digest(cert: &SecretValue, key: &SecretValue) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for v in [cert.expose(), key.expose()] {
        ctx.update(&(v.len() as u64).to_le_bytes());
        ctx.update(v);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use rcgen::{CertificateParams, KeyPair};

    use super::*;

    /// A self-signed certificate's PEM and its key's PKCS#8 PEM.
    fn pair() -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["client.test".to_owned()]).unwrap().self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// The SEC1 `EC PRIVATE KEY` inside a PKCS#8 one: its last element, an
    /// OCTET STRING (short-form lengths: a P-256 key is small).
    fn sec1(pkcs8_pem: &str) -> String {
        use base64::Engine;
        let der = PrivateKeyDer::from_pem_slice(pkcs8_pem.as_bytes()).unwrap();
        let der = der.secret_der();
        let (mut i, end) = (2, der.len());
        assert_eq!(der[0], 0x30);
        let mut last = None;
        while i < end {
            let (tag, len, hdr) = match der[i + 1] {
                n if n < 0x80 => (der[i], n as usize, 2),
                0x81 => (der[i], der[i + 2] as usize, 3),
                _ => panic!("unexpected length form"),
            };
            if tag == 0x04 {
                last = Some(&der[i + hdr..i + hdr + len]);
            }
            i += hdr + len;
        }
        let body = base64::engine::general_purpose::STANDARD.encode(last.unwrap());
        format!("-----BEGIN EC PRIVATE KEY-----\n{body}\n-----END EC PRIVATE KEY-----\n")
    }

    #[test]
    fn a_chain_and_its_key_parse_from_memory_in_pkcs8_and_sec1() {
        let (cert, key) = pair();
        assert!(ClientIdentity::parse("c", cert.as_bytes(), "k", key.as_bytes()).is_ok());
        let sec1 = sec1(&key);
        assert!(ClientIdentity::parse("c", cert.as_bytes(), "k", sec1.as_bytes()).is_ok());
        // One secret holding both, the key first.
        let both = format!("{key}{cert}");
        assert!(ClientIdentity::parse("b", both.as_bytes(), "b", both.as_bytes()).is_ok());
        assert_eq!(
            format!("{:?}", ClientIdentity::parse("c", cert.as_bytes(), "k", key.as_bytes()).unwrap()),
            "ClientIdentity([secret])"
        );
    }

    #[test]
    fn what_is_wrong_is_named_and_no_value_is_quoted() {
        let (cert, key) = pair();
        let (_, other_key) = pair();
        let key_line = key.lines().nth(1).unwrap().to_owned();
        let check = |c: &str, k: &str, want: &str| {
            let e = ClientIdentity::parse("tls_cert", c.as_bytes(), "tls_key", k.as_bytes()).unwrap_err().to_string();
            assert_eq!(e, want);
            assert!(!e.contains(&key_line) && !e.contains("MII"), "{e}");
        };
        let not_key = "secret 'tls_key' is not a PEM private key (it needs an unencrypted PKCS#8 PRIVATE KEY, PKCS#1 \
                       RSA PRIVATE KEY or SEC1 EC PRIVATE KEY block)";
        let not_chain = "secret 'tls_cert' is not a PEM certificate chain (it needs one or more readable CERTIFICATE \
                         blocks)";
        check(&cert, "sk_live_not_a_key", not_key);
        check(&cert, &cert, not_key);
        // A PEM parser's error would quote this line.
        check(&cert, &format!("-----BEGIN PRIVATE KEY-----\n{key_line}\n"), not_key);
        check(&cert, &key.replace("PRIVATE KEY", "ENCRYPTED PRIVATE KEY"), not_key);
        check(&key, &key, not_chain);
        check("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n", &key, not_chain);
        check(
            &cert,
            &format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", &key_line[..40]),
            "the private key in secret 'tls_key' cannot be used for TLS (not an RSA, ECDSA or Ed25519 key rustls \
             accepts)",
        );
        check(
            &cert,
            &other_key,
            "the private key in secret 'tls_key' does not belong to the first certificate in secret 'tls_cert'",
        );
    }
}
