//! The leaves against real, strict verifiers: `openssl verify -x509_strict`,
//! Python's `ssl` with `VERIFY_X509_STRICT` over an actual handshake with
//! the server config [`LeafCache`] builds, and a rustls client. Each check
//! is paired with one that must fail, so a verifier that accepted anything
//! would fail the test. Everything talks to 127.0.0.1 only.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use rustls::ServerConfig;
use x509_parser::prelude::*;

use crate::test_support::{TempDir, aki, der_to_pem, new_ca, ski};
use crate::{CertificateAuthority, LeafCache};

const HOUR: Duration = Duration::from_secs(3600);

fn long_host() -> String {
    format!("{}.example.test", "a".repeat(63))
}

fn openssl_verify(ca_file: &Path, leaf_file: &Path, host: &str) -> Output {
    let mut cmd = Command::new("openssl");
    cmd.args(["verify", "-x509_strict", "-purpose", "sslserver", "-CAfile"]).arg(ca_file);
    if host.parse::<IpAddr>().is_ok() {
        cmd.args(["-verify_ip", host]);
    } else {
        cmd.args(["-verify_hostname", host]);
    }
    cmd.arg(leaf_file).output().expect("the openssl command runs (it is needed to test the leaves)")
}

fn assert_ok(out: &Output, what: &str) {
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{what}: {}\nstdout: {stdout}\nstderr: {stderr}", out.status);
}

fn assert_failed(out: &Output, what: &str) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{what} must fail but succeeded: {stdout}");
}

#[test]
fn openssl_x509_strict_accepts_the_leaves() {
    let (ca, dir) = new_ca();
    let (other_ca, _other_dir) = new_ca();
    let ca_file = CertificateAuthority::cert_path(&dir.path().join("home"));
    let other_ca_file = dir.path().join("other-ca.pem");
    fs::write(&other_ca_file, other_ca.cert_pem()).unwrap();

    for host in ["api.example.test", "127.0.0.1", "::1", long_host().as_str()] {
        let leaf = ca.mint(host).unwrap();
        let leaf_file = dir.path().join("leaf.pem");
        fs::write(&leaf_file, der_to_pem(&leaf.chain[0])).unwrap();

        let out = openssl_verify(&ca_file, &leaf_file, host);
        assert_ok(&out, &format!("openssl verify -x509_strict for {host}"));
        assert!(String::from_utf8_lossy(&out.stdout).trim_end().ends_with(": OK"));

        assert_failed(&openssl_verify(&other_ca_file, &leaf_file, host), &format!("{host} against another CA"));
        let wrong = if host.parse::<IpAddr>().is_ok() { "127.0.0.2" } else { "wrong.example.test" };
        assert_failed(&openssl_verify(&ca_file, &leaf_file, wrong), &format!("{host}'s leaf for {wrong}"));
    }
}

/// A CA made by `openssl req`, whose SKI is a SHA-1 hash where rcgen would
/// use SHA-256: the leaves must still name it by its stored SKI and verify.
#[test]
fn a_ca_made_by_openssl_signs_strict_leaves() {
    let dir = TempDir::new();
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
        .args(["-days", "30", "-subj", "/CN=openssl test CA", "-config", "/dev/null"])
        .args(["-addext", "basicConstraints=critical,CA:true", "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        .args(["-addext", "subjectKeyIdentifier=hash", "-addext", "authorityKeyIdentifier=keyid:always"])
        .arg("-keyout")
        .arg(dir.path().join("ca-key.pem"))
        .arg("-out")
        .arg(dir.path().join("ca.pem"))
        .output()
        .expect("the openssl command runs");
    assert_ok(&out, "openssl req");

    let ca = CertificateAuthority::load_or_create(dir.path()).unwrap();
    let (_, ca_cert) = X509Certificate::from_der(ca.cert_der()).unwrap();
    let stored = ski(&ca_cert).unwrap();
    for host in ["api.example.test", "127.0.0.1"] {
        let leaf = ca.mint(host).unwrap();
        let (_, leaf_cert) = X509Certificate::from_der(&leaf.chain[0]).unwrap();
        assert_eq!(aki(&leaf_cert), Some(stored.clone()), "{host}");
        let leaf_file = dir.path().join("leaf.pem");
        fs::write(&leaf_file, der_to_pem(&leaf.chain[0])).unwrap();
        assert_ok(&openssl_verify(&dir.path().join("ca.pem"), &leaf_file, host), host);
    }
}

/// Serves one TLS handshake with `config` on 127.0.0.1. The thread is not
/// joined: it ends when the client goes away or its socket times out.
fn serve_once(config: Arc<ServerConfig>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        let Ok((mut sock, _)) = listener.accept() else { return };
        let _ = sock.set_read_timeout(Some(Duration::from_secs(10)));
        let _ = sock.set_write_timeout(Some(Duration::from_secs(10)));
        let Ok(mut conn) = rustls::ServerConnection::new(config) else { return };
        while conn.is_handshaking() {
            if conn.complete_io(&mut sock).is_err() {
                return;
            }
        }
        let _ = conn.complete_io(&mut sock);
    });
    addr
}

const PYTHON_CLIENT: &str = r#"
import socket, ssl, sys
cafile, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(cafile=cafile)
ctx.verify_flags |= ssl.VERIFY_X509_STRICT
ctx.set_alpn_protocols(["h2", "http/1.1"])
with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
    with ctx.wrap_socket(sock, server_hostname=name) as tls:
        print(tls.version(), tls.selected_alpn_protocol())
"#;

fn python_handshake(ca_file: &Path, addr: SocketAddr, name: &str) -> Output {
    Command::new("python3")
        .arg("-c")
        .arg(PYTHON_CLIENT)
        .arg(ca_file)
        .arg(addr.port().to_string())
        .arg(name)
        .output()
        .expect("python3 runs (it is needed to test the leaves)")
}

#[tokio::test]
async fn python_strict_handshakes_verify() {
    let (ca, dir) = new_ca();
    let (other_ca, _other_dir) = new_ca();
    let ca_file = CertificateAuthority::cert_path(&dir.path().join("home"));
    let other_ca_file = dir.path().join("other-ca.pem");
    fs::write(&other_ca_file, other_ca.cert_pem()).unwrap();
    let cache = LeafCache::new(Arc::clone(&ca), vec![b"h2".to_vec(), b"http/1.1".to_vec()], 16, HOUR);

    for host in ["api.example.test", "127.0.0.1", long_host().as_str()] {
        let config = cache.server_config(host).await.unwrap();

        let out = python_handshake(&ca_file, serve_once(Arc::clone(&config)), host);
        assert_ok(&out, &format!("python strict handshake for {host}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(stdout.trim(), "TLSv1.3 h2", "{host}");

        let out = python_handshake(&other_ca_file, serve_once(Arc::clone(&config)), host);
        assert_failed(&out, &format!("{host} against another CA"));
        assert!(String::from_utf8_lossy(&out.stderr).contains("CERTIFICATE_VERIFY_FAILED"), "{host}");
        let wrong = if host.parse::<IpAddr>().is_ok() { "127.0.0.2" } else { "wrong.example.test" };
        let out = python_handshake(&ca_file, serve_once(Arc::clone(&config)), wrong);
        assert_failed(&out, &format!("{host}'s leaf for {wrong}"));
    }
}

/// rustls's own (webpki) verification, which needs no outside tool.
#[tokio::test]
async fn rustls_clients_verify() {
    let (ca, _dir) = new_ca();
    let (other_ca, _other_dir) = new_ca();
    let cache = LeafCache::new(Arc::clone(&ca), vec![b"http/1.1".to_vec()], 16, HOUR);
    for host in ["api.example.test", "127.0.0.1", "::1", long_host().as_str()] {
        let config = cache.server_config(host).await.unwrap();
        let handshake = |trusted: &CertificateAuthority, name: &str| {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(trusted.cert_der().clone()).unwrap();
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut client = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            client.alpn_protocols = vec![b"http/1.1".to_vec()];
            let name = rustls_pki_types::ServerName::try_from(name.to_owned()).unwrap();
            let mut conn = rustls::ClientConnection::new(Arc::new(client), name).unwrap();
            let mut sock = TcpStream::connect(serve_once(Arc::clone(&config))).unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            while conn.is_handshaking() {
                conn.complete_io(&mut sock)?;
            }
            Ok::<_, std::io::Error>(conn.alpn_protocol().map(<[u8]>::to_vec))
        };
        assert_eq!(handshake(&ca, host).unwrap(), Some(b"http/1.1".to_vec()), "{host}");
        assert!(handshake(&other_ca, host).is_err(), "{host} against another CA");
        let wrong = if host.parse::<IpAddr>().is_ok() { "127.0.0.2" } else { "wrong.example.test" };
        assert!(handshake(&ca, wrong).is_err(), "{host}'s leaf for {wrong}");
    }
}
