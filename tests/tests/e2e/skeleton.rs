//! The walking skeleton: intercept, inject, forward.

use std::time::Duration;
use tokio::process::Command;

use airlock_tests::client::{self, Http};
use airlock_tests::upstream::Protocols;
use airlock_tests::*;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// curl through the proxy (`HTTPS_PROXY`, `--cacert` the airlock CA).
async fn curl(proxy: &TestProxy, user: &str, token: &str, args: &[&str]) -> std::process::Output {
    proxy.curl_as(user, token).args(args).output().await.expect("curl is installed (.ci/run installs it)")
}

fn seen_json(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "curl failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[tokio::test]
async fn curl_placeholder_is_swapped_for_the_secret() {
    let upstream = Upstream::start(Protocols::Both).await;
    let proxy = TestProxy::start(&standard_config(&upstream, "", "")).await;
    let url = format!("https://api.acme.test:{}/v1/things?page=2", upstream.port());

    let out =
        curl(&proxy, "acme", ACME_TOKEN, &["-H", &format!("Authorization: Bearer {ACME_PLACEHOLDER}"), &url]).await;
    let echoed = seen_json(&out);
    assert_eq!(echoed["path"], "/v1/things?page=2");
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("authorization"), Some(format!("Bearer {ACME_SECRET}").as_str()));
    assert!(seen[0].header("proxy-authorization").is_none(), "Proxy-Authorization must never go upstream");
    assert!(!seen[0].headers.iter().any(|(_, v)| v.contains(ACME_TOKEN)), "the tenant token leaked upstream");

    // Basic credentials: placeholder as the user name (curl -u), swapped
    // inside the decoded credentials and re-encoded.
    let out = curl(&proxy, "acme", ACME_TOKEN, &["-u", &format!("{ACME_PLACEHOLDER}:"), &url]).await;
    seen_json(&out);
    let seen = upstream.seen();
    let want = format!("Basic {}", STANDARD.encode(format!("{ACME_SECRET}:")));
    assert_eq!(seen[1].header("authorization"), Some(want.as_str()));

    // The audit log has one allow record per request, and no secret.
    assert!(wait_for(Duration::from_secs(5), || proxy.audit_lines().len() >= 2).await);
    let audit = std::fs::read_to_string(proxy.home.path.join("audit.jsonl")).unwrap();
    assert!(!audit.contains(ACME_SECRET));
    let lines = proxy.audit_lines();
    assert!(lines.iter().all(|l| l["decision"] == "allow" && l["injected"] == true && l["route"] == "echo"));
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn rust_client_over_http1_and_http2() {
    for (offered, http, want_version) in [
        (Protocols::Http1, Http::H1, "HTTP/1.1"),
        (Protocols::Http2, Http::H2, "HTTP/2.0"),
        (Protocols::Http2, Http::H1, "HTTP/2.0"),
        (Protocols::Http1, Http::H2, "HTTP/1.1"),
    ] {
        let upstream = Upstream::start(offered).await;
        let proxy = TestProxy::start(&standard_config(&upstream, "", "")).await;
        let ca = proxy.ca_pem();
        let req = client::get("api.acme.test", upstream.port(), "/x", &[("x-api-key", ACME_PLACEHOLDER)], http);
        let reply =
            client::request(proxy.addr(), ("acme", ACME_TOKEN), "api.acme.test", upstream.port(), &[&ca], http, req)
                .await
                .unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.version, if http == Http::H2 { http::Version::HTTP_2 } else { http::Version::HTTP_11 });
        assert!(reply.headers.contains_key("x-airlock-request-id"));
        let seen = upstream.seen();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].header("x-api-key"), Some(ACME_SECRET));
        assert_eq!(seen[0].version, want_version, "client {http:?}, upstream offers {offered:?}");
        proxy.proxy.shutdown().await;
    }
}

#[tokio::test]
async fn missing_or_wrong_credentials_get_407_and_the_connection_stays_usable() {
    let upstream = Upstream::start(Protocols::Both).await;
    let proxy = TestProxy::start(&standard_config(&upstream, "", "")).await;
    let authority = format!("api.acme.test:{}", upstream.port());
    for creds in [None, Some(("acme", "wrong-token-0123456789")), Some(("nobody", ACME_TOKEN))] {
        let reply = client::connect(proxy.addr(), &authority, creds).await.unwrap();
        assert_eq!(reply.status, 407, "{creds:?}");
        assert!(reply.head.to_ascii_lowercase().contains("proxy-authenticate: basic realm=\"airlock\""));
        let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        let want = if creds.is_none() { "proxy_auth_required" } else { "unknown_tenant" };
        assert_eq!(body["error"]["code"], want);
        assert!(body["error"]["next_step"].as_str().unwrap().contains("HTTPS_PROXY") || want == "unknown_tenant");
        assert!(!reply.body.contains(ACME_TOKEN));
        // The same connection takes the retry with credentials.
        let retry = client::connect_on(reply.stream, &authority, Some(("acme", ACME_TOKEN))).await.unwrap();
        assert_eq!(retry.status, 200);
    }
    // curl reports the 407 as a failed CONNECT.
    let out = curl(&proxy, "acme", "wrong-token-0123456789", &[&format!("https://{authority}/")]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("407"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(upstream.connections(), 0, "nothing reaches the upstream without valid credentials");
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn unrouted_hosts_are_tunnelled_untouched() {
    let upstream = Upstream::start(Protocols::Both).await;
    // The upstream is on 127.0.0.1, so private egress must be allowed for
    // this test's tunnel.
    let proxy = TestProxy::start(&standard_config(&upstream, "deny_private_egress = false", "")).await;
    let port = upstream.port();
    let airlock_ca = proxy.ca_pem();
    let upstream_ca = upstream.ca.pem();

    // A client trusting only airlock's CA fails: the certificate it gets is
    // the upstream's own (from the test CA), because airlock did not
    // intercept.
    let req = client::get("other.test", port, "/", &[], Http::H1);
    let err = client::request(proxy.addr(), ("acme", ACME_TOKEN), "other.test", port, &[&airlock_ca], Http::H1, req)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("UnknownIssuer") || err.to_string().contains("certificate"), "{err}");

    // Trusting the upstream's CA works end to end, and the placeholder
    // arrives unchanged: tunnels are never touched.
    let req = client::get("other.test", port, "/", &[("authorization", ACME_PLACEHOLDER)], Http::H1);
    let reply = client::request(proxy.addr(), ("acme", ACME_TOKEN), "other.test", port, &[&upstream_ca], Http::H1, req)
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    assert!(!reply.headers.contains_key("x-airlock-request-id"));
    let seen = upstream.seen();
    assert_eq!(seen.last().unwrap().header("authorization"), Some(ACME_PLACEHOLDER));
    assert!(proxy.audit_lines().iter().any(|l| l["decision"] == "tunnel" && l["host"] == "other.test"));
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn tunnels_to_private_addresses_are_refused_by_default() {
    let upstream = Upstream::start(Protocols::Both).await;
    let proxy = TestProxy::start(&standard_config(&upstream, "", "")).await;
    let reply = client::connect(proxy.addr(), &format!("other.test:{}", upstream.port()), Some(("acme", ACME_TOKEN)))
        .await
        .unwrap();
    assert_eq!(reply.status, 403);
    assert!(reply.head.contains("x-airlock-denied: private_egress_denied"), "{}", reply.head);
    // The code in the status line, which is all most clients show of a
    // refused CONNECT.
    assert!(reply.head.starts_with("HTTP/1.1 403 airlock private_egress_denied\r\n"), "{}", reply.head);
    let no_creds = client::connect(proxy.addr(), &format!("other.test:{}", upstream.port()), None).await.unwrap();
    assert!(no_creds.head.starts_with("HTTP/1.1 407 airlock proxy_auth_required\r\n"), "{}", no_creds.head);
    // python requests shows it in its error.
    let script = "import requests, sys\n\
                  try:\n    requests.get(sys.argv[1], proxies={'https': sys.argv[2]}, timeout=20)\n\
                  except requests.exceptions.ProxyError as e:\n    print(e)\n";
    let out = tokio::process::Command::new(crate::conformance::venv_python())
        .args(["-c", script, &format!("https://other.test:{}/", upstream.port())])
        .arg(proxy.proxy_url("acme", ACME_TOKEN))
        .output()
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("403 airlock private_egress_denied"), "{said}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(upstream.connections(), 0);
    proxy.proxy.shutdown().await;
}

/// A CONNECT refused once admitted, to a port whose clients speak TLS, is
/// answered inside TLS with a leaf for the name asked for, so that
/// ordinary clients show the code and next step: git (plain text, which
/// it prints as `remote:` lines), pip and requests (the reason phrase, in
/// their HTTP errors), curl (the JSON body). Nothing reaches the address,
/// and the refusal is recorded once.
#[tokio::test]
async fn refused_connects_on_tls_ports_show_the_denial_in_git_pip_requests_and_curl() {
    require_tool("git", "git");
    let upstream = Upstream::start(Protocols::Both).await;
    let proxy = TestProxy::start(&standard_config(&upstream, "", "")).await;
    let proxy_url = proxy.proxy_url("acme", ACME_TOKEN);
    let ca = proxy.ca_path();
    // other.test resolves to 127.0.0.1: a tunnel there is refused.
    let agent = |program: &str| {
        let mut cmd = Command::new(program);
        for var in
            ["https_proxy", "http_proxy", "HTTP_PROXY", "NO_PROXY", "no_proxy", "PIP_INDEX_URL", "PIP_FIND_LINKS"]
        {
            cmd.env_remove(var);
        }
        for var in ["GIT_SSL_CAINFO", "REQUESTS_CA_BUNDLE", "PIP_CERT", "SSL_CERT_FILE", "CURL_CA_BUNDLE"] {
            cmd.env(var, &ca);
        }
        cmd.env("HTTPS_PROXY", &proxy_url).env("GIT_TERMINAL_PROMPT", "0");
        cmd
    };
    let said = |out: std::process::Output| {
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    };

    let git = said(agent("git").args(["ls-remote", "https://other.test/acme/repo.git"]).output().await.unwrap());
    assert!(git.contains("remote: airlock refused this request: private_egress_denied"), "git: {git}");
    assert!(git.contains("remote: Next step: "), "git: {git}");

    let python = crate::conformance::venv_python();
    let script = "import requests, sys\n\
                  r = requests.get('https://other.test/v1/things', verify=sys.argv[1], timeout=20)\n\
                  print(r.status_code, r.reason, r.json()['error']['next_step'])\n";
    let requests = said(agent(&python).args(["-c", script]).arg(&ca).output().await.unwrap());
    assert!(requests.starts_with("403 airlock private_egress_denied "), "requests: {requests}");

    let scratch = TempHome::new("pip");
    let pip = agent(&python)
        .args(["-m", "pip", "download", "--no-deps", "--retries", "0", "--timeout", "20"])
        .arg("-d")
        .arg(&scratch.path)
        .arg("https://other.test/packages/left_pad-1.0-py3-none-any.whl")
        .output()
        .await
        .unwrap();
    let pip = said(pip);
    assert!(pip.contains("403 Client Error: airlock private_egress_denied"), "pip: {pip}");

    let out = proxy.curl().args(["-i", "https://other.test/"]).output().await.unwrap();
    let curl = said(out);
    assert!(curl.contains("x-airlock-denied: private_egress_denied"), "curl: {curl}");
    assert!(curl.contains("\"code\":\"private_egress_denied\""), "curl: {curl}");

    assert_eq!(upstream.connections(), 0);
    let denials: Vec<_> = proxy.audit_lines().into_iter().filter(|r| r["decision"] == "deny").collect();
    assert_eq!(denials.len(), 4, "one record per refused CONNECT: {denials:?}");
    assert!(
        denials.iter().all(|r| r["code"] == "private_egress_denied" && r["host"] == "other.test" && r["port"] == 443)
    );
    proxy.proxy.shutdown().await;
}

/// Only global unicast addresses are tunnelled to: IPv6 forms that embed
/// the cloud metadata address (NAT64, IPv4-compatible, 6to4), Teredo,
/// multicast and reserved IPv4 are refused before any connection, as are
/// names that resolve to them.
#[tokio::test]
async fn tunnels_to_every_non_global_address_form_are_refused() {
    let upstream = Upstream::start(Protocols::Both).await;
    let resolve = r#"resolve = { "api.acme.test" = "127.0.0.1", "meta.test" = "64:ff9b::a9fe:a9fe" }"#;
    let config = standard_config(&upstream, "", "").replace(
        r#"resolve = { "api.acme.test" = "127.0.0.1", "api.beta.test" = "127.0.0.1", "other.test" = "127.0.0.1" }"#,
        resolve,
    );
    let proxy = TestProxy::start(&config).await;
    for target in [
        "[64:ff9b::a9fe:a9fe]:80",
        "[::a9fe:a9fe]:80",
        "[2002:a9fe:a9fe::1]:80",
        "[2001:0:4136:e378:8000:63bf:3fff:fdd2]:80",
        "[ff02::1]:80",
        "224.0.0.1:80",
        "240.0.0.1:80",
        "192.0.0.170:80",
        "meta.test:80",
    ] {
        let reply = client::connect(proxy.addr(), target, Some(("acme", ACME_TOKEN))).await.unwrap();
        assert_eq!(reply.status, 403, "{target}: {}", reply.head);
        assert!(reply.head.contains("x-airlock-denied: private_egress_denied"), "{target}: {}", reply.head);
    }
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn spoofed_host_inside_a_tunnel_is_refused_with_421() {
    let upstream = Upstream::start(Protocols::Both).await;
    let proxy = TestProxy::start(&standard_config(&upstream, "", "")).await;
    let ca = proxy.ca_pem();
    let port = upstream.port();
    for http in [Http::H1, Http::H2] {
        // CONNECT to acme's host, then name beta's host inside.
        let req = client::get("api.beta.test", port, "/", &[("authorization", ACME_PLACEHOLDER)], http);
        let reply = client::request(proxy.addr(), ("acme", ACME_TOKEN), "api.acme.test", port, &[&ca], http, req)
            .await
            .unwrap();
        assert_eq!(reply.status, 421, "{http:?}: {}", reply.text());
        assert_eq!(reply.json()["error"]["code"], "misdirected_request");
        assert_eq!(reply.headers["x-airlock-denied"], "misdirected_request");
    }
    assert_eq!(upstream.connections(), 0, "the upstream must see nothing");
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn sni_must_match_the_connect_host() {
    let upstream = Upstream::start(Protocols::Both).await;
    let proxy = TestProxy::start(&standard_config(&upstream, "", "")).await;
    let ca = proxy.ca_pem();
    let reply =
        client::connect(proxy.addr(), &format!("api.acme.test:{}", upstream.port()), Some(("acme", ACME_TOKEN)))
            .await
            .unwrap();
    assert_eq!(reply.status, 200);
    let err = client::tls(reply.stream, "api.beta.test", &[&ca], &[b"http/1.1"]).await;
    assert!(err.is_err(), "a TLS session naming another host must be refused");
    assert_eq!(upstream.connections(), 0);
    // The refused connection is audited.
    assert!(wait_for(Duration::from_secs(5), || !proxy.audit_lines().is_empty()).await);
    let audit = proxy.audit_lines();
    assert_eq!((audit[0]["decision"].as_str(), audit[0]["code"].as_str()), (Some("deny"), Some("misdirected_request")));
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn websocket_upgrade_passes_through_after_injection() {
    use airlock_tests::ws::{self, tungstenite::Message};
    use futures_util::{SinkExt, StreamExt};

    let upstream = Upstream::start(Protocols::Both).await;
    let proxy = TestProxy::start(&standard_config(&upstream, "", "")).await;
    let ca = proxy.ca_pem();
    let auth = format!("Bearer {ACME_PLACEHOLDER}");
    let headers = [("authorization", auth.as_str()), ("sec-websocket-extensions", "permessage-deflate")];
    let (mut socket, resp) =
        ws::connect(proxy.addr(), ("acme", ACME_TOKEN), "api.acme.test", upstream.port(), "/ws", &[&ca], &headers)
            .await
            .unwrap();
    assert_eq!(resp.status(), 101);
    assert!(resp.headers().get("x-airlock-request-id").is_some());
    socket.send(Message::text("hello")).await.unwrap();
    assert_eq!(ws::next_data(&mut socket).await, Some(Message::text("hello")));
    socket.send(Message::binary(vec![0u8, 1, 2])).await.unwrap();
    assert_eq!(ws::next_data(&mut socket).await, Some(Message::binary(vec![0u8, 1, 2])));
    socket.close(None).await.unwrap();
    while let Some(Ok(_)) = socket.next().await {}

    let seen = upstream.seen();
    assert_eq!(seen[0].header("authorization"), Some(format!("Bearer {ACME_SECRET}").as_str()));
    assert_eq!(seen[0].header("upgrade"), Some("websocket"));
    assert_eq!(seen[0].header("sec-websocket-extensions"), None, "permessage-deflate is negotiated off");
    assert_eq!(seen[1].header("message"), Some("hello"));
    // One record for the connection, written when it closed cleanly.
    assert!(wait_for(Duration::from_secs(5), || !proxy.audit_lines().is_empty()).await);
    let audit = proxy.audit_lines();
    assert_eq!(audit.len(), 1, "{audit:?}");
    let r = &audit[0];
    assert_eq!(
        (r["status"].as_u64(), r["decision"].as_str(), r["injected"].as_bool()),
        (Some(101), Some("allow"), Some(true))
    );
    // Two messages and a close each way.
    assert_eq!((r["frames_up"].as_u64(), r["frames_down"].as_u64()), (Some(3), Some(3)), "{r}");
    assert_eq!(r["complete"], true, "{r}");
    assert_eq!(r["secret_exposed"], false);
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn plain_http_absolute_form_follows_the_same_policy() {
    let upstream = Upstream::start(Protocols::Plain).await;
    let proxy = TestProxy::start(&standard_config(&upstream, "", "")).await;
    let port = upstream.port();
    let send = |path: &str, placeholder: Option<&str>| {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "20", "-x", &proxy.proxy_url("acme", ACME_TOKEN)]);
        if let Some(p) = placeholder {
            cmd.args(["-H", &format!("X-Api-Key: {p}")]);
        }
        cmd.arg(format!("http://api.acme.test:{port}{path}")).env_remove("NO_PROXY").env_remove("no_proxy").output()
    };
    let echoed = seen_json(&send("/plain", None).await.unwrap());
    assert_eq!(echoed["path"], "/plain");
    let seen = upstream.seen();
    assert!(seen[0].header("proxy-authorization").is_none());
    // A placeholder would put the secret on the wire in cleartext: refused
    // before any upstream request.
    let out = send("/secret", Some(ACME_PLACEHOLDER)).await.unwrap();
    let denial: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(denial["error"]["code"], "insecure_upstream");
    // Another tenant's placeholder is refused as such.
    let out = send("/other", Some(BETA_PLACEHOLDER)).await.unwrap();
    let denial: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(denial["error"]["code"], "wrong_tenant");
    assert_eq!(upstream.seen().len(), 1);
    proxy.proxy.shutdown().await;
}

/// Log lines carry the spans of DESIGN.md ("Inside the proxy"): the
/// connection (`conn`), the CONNECT (`tunnel`, its own id), and the request
/// (`request`: the id the agent and audit see, the tenant, the host and the
/// route decided).
#[tokio::test]
async fn log_lines_name_the_connection_tunnel_request_and_route() {
    let upstream = Upstream::start(Protocols::Both).await;
    let home = TempHome::new("spans");
    std::fs::write(home.path.join("airlock.toml"), standard_config(&upstream, "", "")).unwrap();
    store_standard_secrets(&home.path);
    let serve = Served::start(&home.path, "debug").await;
    // curl to acme's echo route through the served proxy, its body dropped.
    let curl = |args: &[&str]| {
        Command::new("curl")
            .args(["-sS", "--max-time", "20", "-o", "/dev/null", "--cacert"])
            .arg(home.path.join("ca.pem"))
            .args(args)
            .arg(format!("https://api.acme.test:{}/echo", upstream.port()))
            .env("HTTPS_PROXY", format!("http://acme:{ACME_TOKEN}@{}", serve.addr))
            .env_remove("https_proxy")
            .env_remove("NO_PROXY")
            .env_remove("no_proxy")
            .output()
    };
    let out = curl(&["-D", "-", "-H", &format!("Authorization: Bearer {ACME_PLACEHOLDER}")]).await.unwrap();
    let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(head.starts_with("http/") && head.contains(" 200"), "{head}");
    let id = head
        .lines()
        .find_map(|l| l.strip_prefix("x-airlock-request-id: "))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| panic!("no request id: {head}"));
    let ok = wait_for(Duration::from_secs(5), || serve.log().contains(" forwarded")).await;
    let log = serve.log();
    assert!(ok, "{log}");
    let line = log.lines().find(|l| l.contains(" forwarded")).unwrap();
    for part in [
        "conn{peer=127.0.0.1:".to_owned(),
        "tunnel{tunnel_id=".to_owned(),
        format!("request{{request_id={id} tenant=acme host=api.acme.test"),
        "route=echo".to_owned(),
    ] {
        assert!(line.contains(&part), "{part:?} is not in {line}");
    }
    // A denial the policy ties to a route names it too.
    let out = curl(&["-X", "DELETE"]).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let refused = |log: &str| log.lines().any(|l| l.contains("method_not_allowed") && l.contains("route=echo"));
    let ok = wait_for(Duration::from_secs(5), || refused(&serve.log())).await;
    let log = serve.log();
    assert!(ok, "{log}");
    assert!(!log.contains(ACME_SECRET), "{log}");
}
