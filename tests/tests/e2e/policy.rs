//! Policy end to end: every refusal is an HTTP answer the agent can act on,
//! decided before any upstream connection — the upstream sees nothing.

use std::time::Duration;

use airlock_tests::client::{self, Http};
use airlock_tests::upstream::Protocols;
use airlock_tests::*;

/// A second acme route to another host, plus read-only path-limited beta.
fn config(upstream: &Upstream, egress: &str) -> String {
    let port = upstream.port();
    standard_config(
        upstream,
        &format!("egress = \"{egress}\""),
        &format!(
            r#"
[[tenants.acme.routes]]
name = "other"
host = "other.test:{port}"
secret = "acme_key"
placeholder = "AIRLOCK_ACME_OTHER"

[[tenants.beta.routes]]
name = "beta-limited"
host = "api.acme.test:{port}"
secret = "beta_key"
placeholder = "AIRLOCK_BETA_LIMITED"
paths = ["/v3/a/*"]
"#
        ),
    )
}

struct Case {
    name: &'static str,
    tenant: (&'static str, &'static str),
    host: &'static str,
    method: &'static str,
    path: &'static str,
    header: (&'static str, &'static str),
    code: &'static str,
    status: u16,
}

async fn ask(proxy: &TestProxy, upstream: &Upstream, c: &Case, http: Http) -> client::Reply {
    let port = upstream.port();
    let mut req = client::get(c.host, port, c.path, &[c.header], http);
    *req.method_mut() = c.method.parse().unwrap();
    let ca = proxy.ca_pem();
    client::request(proxy.addr(), c.tenant, c.host, port, &[&ca], http, req).await.unwrap()
}

#[tokio::test]
async fn every_refusal_happens_before_any_upstream_connection() {
    let upstream = Upstream::start(Protocols::Both).await;
    let proxy = TestProxy::start(&config(&upstream, "deny")).await;
    let acme = ("acme", ACME_TOKEN);
    let beta = ("beta", BETA_TOKEN);
    let cases = [
        Case {
            name: "A's placeholder to A's other host",
            tenant: acme,
            host: "other.test",
            method: "GET",
            path: "/",
            header: ("authorization", ACME_PLACEHOLDER),
            code: "placeholder_host_mismatch",
            status: 403,
        },
        Case {
            name: "A's placeholder to B's host",
            tenant: acme,
            host: "api.beta.test",
            method: "GET",
            path: "/",
            header: ("authorization", ACME_PLACEHOLDER),
            code: "placeholder_host_mismatch",
            status: 403,
        },
        Case {
            name: "A's placeholder in an unlisted header",
            tenant: acme,
            host: "api.acme.test",
            method: "GET",
            path: "/",
            header: ("x-other", ACME_PLACEHOLDER),
            code: "placeholder_host_mismatch",
            status: 403,
        },
        Case {
            name: "B uses A's placeholder",
            tenant: beta,
            host: "api.beta.test",
            method: "GET",
            path: "/",
            header: ("authorization", ACME_PLACEHOLDER),
            code: "wrong_tenant",
            status: 403,
        },
        Case {
            name: "B uses A's placeholder on a shared host",
            tenant: beta,
            host: "api.acme.test",
            method: "GET",
            path: "/v3/a/1",
            header: ("authorization", ACME_PLACEHOLDER),
            code: "wrong_tenant",
            status: 403,
        },
        Case {
            name: "POST on a read-only route",
            tenant: beta,
            host: "api.beta.test",
            method: "POST",
            path: "/",
            header: ("authorization", BETA_PLACEHOLDER),
            code: "method_not_allowed",
            status: 403,
        },
        Case {
            name: "path outside the globs",
            tenant: beta,
            host: "api.acme.test",
            method: "GET",
            path: "/v2/x",
            header: ("authorization", "AIRLOCK_BETA_LIMITED"),
            code: "path_not_allowed",
            status: 403,
        },
        Case {
            name: "unrouted host under egress = deny",
            tenant: beta,
            host: "other.test",
            method: "GET",
            path: "/",
            header: ("accept", "*/*"),
            code: "host_not_allowed",
            status: 403,
        },
    ];
    for c in &cases {
        for http in [Http::H1, Http::H2] {
            let reply = ask(&proxy, &upstream, c, http).await;
            assert_eq!(reply.status, c.status, "{}: {}", c.name, reply.text());
            assert_eq!(reply.headers["x-airlock-denied"], c.code, "{}", c.name);
            let json = reply.json();
            let err = &json["error"];
            assert_eq!(err["code"], c.code, "{}", c.name);
            for field in ["message", "next_step", "request_id"] {
                assert!(err[field].as_str().is_some_and(|s| !s.is_empty()), "{}: {field} missing: {json}", c.name);
            }
            assert_eq!(err["request_id"], reply.headers["x-airlock-request-id"].to_str().unwrap());
            assert!(!reply.text().contains(ACME_SECRET) && !reply.text().contains(BETA_SECRET));
        }
    }
    assert_eq!(upstream.connections(), 0, "a denied request must never leave the machine");
    let read_only = cases.iter().find(|c| c.code == "method_not_allowed").unwrap();
    let reply = ask(&proxy, &upstream, read_only, Http::H1).await;
    assert_eq!(
        reply.json()["error"]["next_step"],
        "this route is read-only; ask the operator to enable POST for route 'beta' of tenant 'beta'"
    );
    // Every denial is audited, once.
    assert!(wait_for(Duration::from_secs(5), || proxy.audit_lines().len() == cases.len() * 2 + 1).await);
    assert!(proxy.audit_lines().iter().all(|l| l["decision"] == "deny"));
    proxy.proxy.shutdown().await;
}

/// A host no certificate can name — a label starting or ending in `-`, a
/// last label that is a number (clients read `127.1` as an IPv4 address) —
/// is refused at CONNECT with a denial the agent can read, and audited,
/// even under `egress = "deny"`, where every other host is intercepted.
/// Before, the policy accepted these hosts and the CA refused them: the
/// CONNECT was answered 200, then the TLS handshake failed with no denial.
#[tokio::test]
async fn a_host_no_certificate_can_name_is_refused_at_connect() {
    let upstream = Upstream::start(Protocols::Both).await;
    let proxy = TestProxy::start(&config(&upstream, "deny")).await;
    let hosts = ["a-.test", "-a.test", "127.1", "0x7f.1", "1.2.3.999"];
    for host in hosts {
        let authority = format!("{host}:{}", upstream.port());
        let reply = client::connect(proxy.addr(), &authority, Some(("acme", ACME_TOKEN))).await.unwrap();
        assert_eq!(reply.status, 400, "CONNECT {authority}: {}", reply.head);
        assert!(reply.head.contains("x-airlock-denied: bad_request"), "{}", reply.head);
        let json: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(json["error"]["code"], "bad_request", "{json}");
        assert!(json["error"]["next_step"].as_str().is_some_and(|s| !s.is_empty()), "{json}");
    }
    let TestProxy { home, proxy } = proxy;
    proxy.shutdown().await;
    // Refusals before authentication are coalesced per address: every one
    // is counted, in one record or a few.
    let records = audit_records(&home.path.join("audit.jsonl"));
    let refused: u64 = records
        .iter()
        .filter(|r| r["code"] == "bad_request" && r["status"] == 400 && r["decision"] == "deny")
        .map(|r| r["attempts"].as_u64().unwrap_or(1))
        .sum();
    assert_eq!(refused, hosts.len() as u64, "{records:?}");
    assert_eq!(upstream.connections(), 0);
}

#[tokio::test]
async fn curl_shows_the_denial_inside_the_tls_session() {
    let upstream = Upstream::start(Protocols::Both).await;
    let proxy = TestProxy::start(&config(&upstream, "tunnel")).await;
    let out = proxy
        .curl()
        .args(["-o", "-", "-w", "\n%{http_code}"])
        .args(["-X", "DELETE", "-H", &format!("Authorization: Bearer {ACME_PLACEHOLDER}")])
        .arg(format!("https://api.acme.test:{}/x", upstream.port()))
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, code) = text.rsplit_once('\n').unwrap();
    assert_eq!(code, "403");
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(json["error"]["code"], "method_not_allowed");
    assert_eq!(upstream.connections(), 0);
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn airlock_never_connects_to_itself() {
    let upstream = Upstream::start(Protocols::Both).await;
    let proxy = TestProxy::start(&standard_config(&upstream, "deny_private_egress = false", "")).await;
    let own = proxy.addr().to_string();
    let reply = client::connect(proxy.addr(), &own, Some(("acme", ACME_TOKEN))).await.unwrap();
    assert_eq!(reply.status, 502, "{}", reply.head);
    assert!(reply.head.contains("x-airlock-denied: upstream_unreachable"), "{}", reply.head);
    assert!(reply.body.contains("airlock's own listening address"), "{}", reply.body);
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn audit_chain_holds_under_concurrency_and_catches_tampering() {
    let upstream = Upstream::start(Protocols::Both).await;
    let proxy = TestProxy::start(&standard_config(&upstream, "", "")).await;
    let ca = proxy.ca_pem();
    let port = upstream.port();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let ca = ca.clone();
        let addr = proxy.addr();
        tasks.push(tokio::spawn(async move {
            let auth = format!("Bearer {ACME_PLACEHOLDER}");
            // Every fourth request is a denial (a write the route refuses).
            let mut req = client::get("api.acme.test", port, &format!("/n/{i}"), &[("authorization", &auth)], Http::H2);
            if i % 4 == 0 {
                *req.method_mut() = http::Method::DELETE;
            }
            client::request(addr, ("acme", ACME_TOKEN), "api.acme.test", port, &[&ca], Http::H2, req)
                .await
                .unwrap()
                .status
        }));
    }
    for t in tasks {
        let status = t.await.unwrap();
        assert!(status == 200 || status == 403);
    }
    let path = proxy.home.path.join("audit.jsonl");
    assert!(wait_for(Duration::from_secs(10), || proxy.audit_lines().len() == 200).await);
    let TestProxy { home, proxy } = proxy;
    proxy.shutdown().await;
    let text = std::fs::read_to_string(&path).unwrap();
    // 200 records, among the `open` line and a `begin` line for each
    // request that took over a second.
    assert_eq!(audit_records(&path).len(), 200);
    assert_eq!(airlock::audit::verify(&path, None).unwrap().map(|v| v.records), Ok(text.lines().count() as u64));
    assert_no_secret("the audit log", &text, &[ACME_SECRET, BETA_SECRET, ACME_TOKEN, BETA_TOKEN]);
    // Tamper with the record at or after line 57 (not a `begin` line): its
    // MAC fails exactly there.
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let at = (56..lines.len()).find(|&i| lines[i].contains("\"status\":")).unwrap();
    lines[at] = lines[at].replace("\"status\":", "\"status\":1");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    assert_eq!(
        airlock::audit::verify(&path, None).unwrap().map(|v| v.records),
        Err(airlock::audit::ChainError::Forged { line: at + 1 })
    );
    drop(home);
}
