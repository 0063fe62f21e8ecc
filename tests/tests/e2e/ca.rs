//! The local CA as strict clients see it: leaves that verify under
//! `openssl verify -x509_strict` and Python's default context, IP SANs for
//! IP literals, cached leaves, a private key file, and a CA that survives a
//! restart.

use std::os::unix::fs::PermissionsExt;
use tokio::process::Command;

use airlock_tests::client::{self, Http};
use airlock_tests::upstream::Protocols;
use airlock_tests::*;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// The leaf airlock presents for `host`, as PEM.
async fn served_leaf(proxy: &TestProxy, host: &str, port: u16) -> String {
    let reply = client::connect(proxy.addr(), &format!("{host}:{port}"), Some(("acme", ACME_TOKEN))).await.unwrap();
    assert_eq!(reply.status, 200);
    let tls = client::tls(reply.stream, host, &[&proxy.ca_pem()], &[b"http/1.1"]).await.unwrap();
    let der = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let b64 = STANDARD.encode(der.as_ref());
    let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
    format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", lines.join("\n"))
}

#[tokio::test]
async fn leaves_verify_under_openssl_x509_strict() {
    let upstream = Upstream::start(Protocols::Both).await;
    let proxy = TestProxy::start(&standard_config(&upstream, "", "")).await;
    for host in ["api.acme.test", "127.0.0.1"] {
        let leaf = served_leaf(&proxy, host, upstream.port()).await;
        let path = proxy.home.path.join(format!("leaf-{host}.pem"));
        std::fs::write(&path, &leaf).unwrap();
        let out = Command::new("openssl")
            .args(["verify", "-x509_strict", "-purpose", "sslserver", "-CAfile"])
            .arg(proxy.ca_path())
            .arg(&path)
            .output()
            .await
            .expect("openssl is installed");
        assert!(
            out.status.success(),
            "{host}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = Command::new("openssl").args(["x509", "-noout", "-text", "-in"]).arg(&path).output().await.unwrap();
        let text = String::from_utf8_lossy(&text.stdout);
        if host == "127.0.0.1" {
            assert!(text.contains("IP Address:127.0.0.1"), "{text}");
            assert!(!text.contains("DNS:127.0.0.1"), "IP literals must never be DNS SANs: {text}");
        } else {
            assert!(text.contains("DNS:api.acme.test"), "{text}");
        }
    }
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn python_strict_context_trusts_the_leaf_through_the_proxy() {
    let upstream = Upstream::start(Protocols::Both).await;
    let proxy = TestProxy::start(&standard_config(&upstream, "", "")).await;
    let port = upstream.port();
    let script = r#"
import json, ssl, sys, urllib.request
ca, proxy, url, header = sys.argv[1:5]
ctx = ssl.create_default_context(cafile=ca)
ctx.verify_flags |= ssl.VERIFY_X509_STRICT
opener = urllib.request.build_opener(
    urllib.request.ProxyHandler({"https": proxy}),
    urllib.request.HTTPSHandler(context=ctx),
)
req = urllib.request.Request(url, headers={"Authorization": header})
with opener.open(req, timeout=20) as resp:
    body = json.load(resp)
print(json.dumps({"status": resp.status, "path": body["path"]}))
"#;
    for host in ["api.acme.test", "127.0.0.1"] {
        let placeholder = if host == "127.0.0.1" { ACME_IP_PLACEHOLDER } else { ACME_PLACEHOLDER };
        let out = Command::new("python3")
            .args(["-c", script])
            .arg(proxy.ca_path())
            .arg(proxy.proxy_url("acme", ACME_TOKEN))
            .arg(format!("https://{host}:{port}/py"))
            .arg(format!("Bearer {placeholder}"))
            .env_remove("NO_PROXY")
            .env_remove("no_proxy")
            .output()
            .await
            .expect("python3 is installed");
        assert!(out.status.success(), "{host}: {}", String::from_utf8_lossy(&out.stderr));
        let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(got["status"], 200);
        assert_eq!(got["path"], "/py");
        let seen = upstream.seen();
        assert_eq!(seen.last().unwrap().header("authorization"), Some(format!("Bearer {ACME_SECRET}").as_str()));
    }
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn leaves_are_cached_per_host() {
    let upstream = Upstream::start(Protocols::Both).await;
    let proxy = TestProxy::start(&standard_config(&upstream, "", "")).await;
    let ca = proxy.ca_pem();
    let port = upstream.port();
    let first = served_leaf(&proxy, "api.acme.test", port).await;
    assert_eq!(proxy.proxy.leaf_mints(), 1);
    let second = served_leaf(&proxy, "api.acme.test", port).await;
    assert_eq!(first, second, "the second connection must reuse the cached leaf");
    let req = client::get("api.acme.test", port, "/", &[], Http::H2);
    let reply = client::request(proxy.addr(), ("acme", ACME_TOKEN), "api.acme.test", port, &[&ca], Http::H2, req)
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(proxy.proxy.leaf_mints(), 1);
    served_leaf(&proxy, "127.0.0.1", port).await;
    assert_eq!(proxy.proxy.leaf_mints(), 2);
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn the_ca_key_is_private_and_survives_a_restart() {
    let upstream = Upstream::start(Protocols::Both).await;
    let config = standard_config(&upstream, "", "");
    let proxy = TestProxy::start(&config).await;
    let mode = std::fs::metadata(proxy.home.path.join("ca-key.pem")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let mode = std::fs::metadata(proxy.ca_path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    let trusted = proxy.ca_pem();
    let TestProxy { home, proxy } = proxy;
    proxy.shutdown().await;

    // Same home, new process state: the same CA is loaded, so a client that
    // trusted it before still works.
    let restarted = start_in(&home.path, &config).await;
    assert_eq!(std::fs::read_to_string(home.path.join("ca.pem")).unwrap(), trusted);
    let port = upstream.port();
    let req = client::get("api.acme.test", port, "/again", &[("authorization", ACME_PLACEHOLDER)], Http::H1);
    let reply =
        client::request(restarted.addr(), ("acme", ACME_TOKEN), "api.acme.test", port, &[&trusted], Http::H1, req)
            .await
            .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(upstream.seen().last().unwrap().header("authorization"), Some(ACME_SECRET));
    restarted.shutdown().await;
}
