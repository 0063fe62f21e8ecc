//! Which AIRLOCK_HOME a listening airlock serves, and proof of it, for
//! `airlock run` and `airlock mcp` deciding whether to send an agent's
//! tenant token to whatever answers on `[proxy] listen`.
//!
//! The health answer names the home's *instance id* (a digest of the
//! home's path: no secret). A client of the same home also sends a fresh
//! random challenge; the proxy answers with an HMAC-SHA256 (RFC 2104) of
//! it, and of the address the client connected to, under a key only the
//! home holds (`instance.key`, 0600). A process squatting the port cannot
//! compute it, and cannot borrow the answer of another airlock of the same
//! home listening elsewhere, since that one's address differs.

use std::fs;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use ring::{digest, hmac};

/// The request header carrying a challenge: 32 to 128 hex digits.
pub const CHALLENGE_HEADER: &str = "x-airlock-challenge";
/// The answer header carrying the proof, hex.
pub const PROOF_HEADER: &str = "x-airlock-proof";
/// The answer header naming the instance.
pub const INSTANCE_HEADER: &str = "x-airlock-instance";

/// The key's file in AIRLOCK_HOME.
const KEY_FILE: &str = "instance.key";

/// The home's identity as a listener presents it.
pub struct Instance {
    id: String,
    key: hmac::Key,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance").field("id", &self.id).finish_non_exhaustive()
    }
}

impl Instance {
    /// The instance of `home`: its key read, or created (32 random bytes,
    /// mode 0600) when there is none.
    ///
    /// # Errors
    /// The key file cannot be read or written, or is not 32 bytes.
    pub fn load_or_create(home: &Path) -> io::Result<Instance> {
        let path = home.join(KEY_FILE);
        let mut key = [0u8; 32];
        match fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path) {
            Ok(mut f) => {
                getrandom::fill(&mut key).map_err(|e| io::Error::other(e.to_string()))?;
                f.write_all(&key)?;
                f.sync_all()?;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // Another process of the home may be writing it this moment.
                let mut bytes = Vec::new();
                for _ in 0..50 {
                    bytes.clear();
                    fs::File::open(&path)?.read_to_end(&mut bytes)?;
                    if bytes.len() == key.len() {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                key = bytes
                    .try_into()
                    .map_err(|_| io::Error::other(format!("{} is not 32 bytes; remove it", path.display())))?;
            }
            Err(e) => return Err(e),
        }
        Ok(Instance { id: instance_id(home), key: hmac::Key::new(hmac::HMAC_SHA256, &key) })
    }

    /// The instance id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The proof for `challenge` received on a connection to `addr`, hex;
    /// None when the challenge is not 32 to 128 hex digits.
    pub fn prove(&self, challenge: &str, addr: SocketAddr) -> Option<String> {
        let valid = (32..=128).contains(&challenge.len()) && challenge.bytes().all(|b| b.is_ascii_hexdigit());
        valid.then(|| hex::encode(hmac::sign(&self.key, &message(challenge, addr))))
    }

    /// Whether `proof` answers `challenge` sent to `addr` (in constant
    /// time).
    pub fn verify(&self, challenge: &str, addr: SocketAddr, proof: &str) -> bool {
        hex::decode(proof).is_ok_and(|p| hmac::verify(&self.key, &message(challenge, addr), &p).is_ok())
    }
}

fn message(challenge: &str, addr: SocketAddr) -> Vec<u8> {
    format!("airlock health proof v1\n{challenge}\n{addr}").into_bytes()
}

/// The instance id of `home`: 16 hex digits of the SHA-256 of its
/// canonical path.
pub fn instance_id(home: &Path) -> String {
    let path = home.canonicalize().unwrap_or_else(|_| home.to_owned());
    let d = digest::digest(&digest::SHA256, path.as_os_str().as_encoded_bytes());
    hex::encode(&d.as_ref()[..8])
}

/// A fresh challenge: 32 random bytes, hex.
pub fn new_challenge() -> String {
    let mut b = [0u8; 32];
    // Without an entropy source there is no safe challenge to make.
    getrandom::fill(&mut b).expect("the OS random number generator is available");
    hex::encode(b)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn proofs_hold_only_for_the_same_key_challenge_and_address() {
        let root = crate::TestDir::new("instance");
        let (a, other) = (root.0.join("a"), root.0.join("b"));
        fs::create_dir_all(&a).unwrap();
        fs::create_dir_all(&other).unwrap();
        let one = Instance::load_or_create(&a).unwrap();
        let again = Instance::load_or_create(&a).unwrap();
        let two = Instance::load_or_create(&other).unwrap();
        assert_eq!(one.id(), again.id());
        assert_ne!(one.id(), two.id());
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let c = new_challenge();
        let proof = one.prove(&c, addr).unwrap();
        assert!(again.verify(&c, addr, &proof));
        assert!(!two.verify(&c, addr, &proof), "another home's key");
        assert!(!one.verify(&new_challenge(), addr, &proof), "another challenge");
        assert!(!one.verify(&c, "127.0.0.1:8081".parse().unwrap(), &proof), "another address");
        assert!(one.prove("short", addr).is_none() && one.prove(&"z".repeat(40), addr).is_none());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(a.join(KEY_FILE)).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
