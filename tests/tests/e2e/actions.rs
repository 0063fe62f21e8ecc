//! Approved-action requests end to end: envelopes POSTed to `/v1/actions`
//! on the real proxy run the same pipeline as intercepted traffic against
//! the real TLS upstream — the upstream sees the real key, the answer
//! carries only the scrubbed body, every denial stops before any upstream
//! connection, and each action leaves one audit record with the answer's
//! request id. `mcp` drives `airlock mcp` with real MCP clients.

mod mcp;

use std::time::Duration;

use airlock_tests::client::{self, Reply, basic_auth};
use airlock_tests::upstream::Protocols;
use airlock_tests::*;
use serde_json::{Value, json};

/// The standard config plus a path-limited and a wildcard acme route, and
/// `limits` in `[limits]`.
fn config(upstream: &Upstream, limits: &str) -> String {
    let port = upstream.port();
    standard_config(
        upstream,
        "",
        &format!(
            r#"
[[tenants.acme.routes]]
name = "limited"
host = "other.test:{port}"
secret = "acme_key"
placeholder = "AIRLOCK_ACME_LIMITED"
paths = ["/v3/a/*"]

[[tenants.acme.routes]]
name = "wild"
host = "*.wild.test:{port}"
secret = "acme_key"
placeholder = "AIRLOCK_ACME_WILD"

[limits]
{limits}
"#
        ),
    )
}

fn acme() -> String {
    basic_auth("acme", ACME_TOKEN)
}

async fn post(proxy: &TestProxy, auth: &str, envelope: &Value) -> Reply {
    client::action(proxy.addr(), &[("authorization", auth)], envelope.to_string()).await.unwrap()
}

/// Waits for the audit record with `request_id`.
async fn audit_record(proxy: &TestProxy, request_id: &str) -> Value {
    let find = || proxy.audit_lines().into_iter().find(|l| l["request_id"] == request_id);
    assert!(wait_for(Duration::from_secs(5), || find().is_some()).await, "no audit record for {request_id}");
    find().unwrap()
}

fn assert_clean(what: &str, text: &str) {
    assert_no_secret(what, text, &[ACME_SECRET, BETA_SECRET]);
}

#[tokio::test]
async fn an_allowed_action_injects_the_key_and_answers_scrubbed() {
    let upstream = Upstream::start(Protocols::Both).await;
    let proxy = TestProxy::start(&config(&upstream, "")).await;
    let envelope = json!({
        "tenant": "acme", "service": "echo", "verb": "api_bridge.request",
        "method": "GET", "path": "/echo",
        "query": {"page": 2, "q": "a b&c", "tag": ["x", "y"]},
        "headers": {"authorization": format!("Bearer {ACME_PLACEHOLDER}"), "accept": "application/json"},
        "body": null,
    });
    let reply = post(&proxy, &acme(), &envelope).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_clean("the action answer", &reply.text());
    let answer = reply.json();
    assert_eq!(answer["decision"], "allow");
    assert_eq!(answer["status"], 200);
    assert_eq!(answer["body_encoding"], "utf-8");
    assert_eq!(answer["truncated"], false);
    assert_eq!(answer["secret_exposed"], false);
    assert_eq!(answer["headers"]["content-type"], "application/json");
    assert!(answer["headers"].get("content-length").is_none(), "{answer}");
    assert!(answer["redactions"].as_u64().unwrap() >= 1, "the echoed key was scrubbed: {answer}");
    let request_id = answer["request_id"].as_str().unwrap();
    assert_eq!(reply.headers["x-airlock-request-id"], request_id);

    // The upstream got the real key, on the route's host, with the query.
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("authorization"), Some(format!("Bearer {ACME_SECRET}").as_str()));
    assert_eq!(seen[0].path, "/echo?page=2&q=a%20b%26c&tag=x&tag=y");
    assert!(seen[0].header("proxy-authorization").is_none() && seen[0].header("x-airlock-request-id").is_none());

    // The body is the upstream's echo, with the key scrubbed back to the
    // placeholder.
    let echoed: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
    let auth = echoed["headers"].as_array().unwrap().iter().find(|h| h[0] == "authorization").unwrap();
    assert_eq!(auth[1], format!("Bearer {ACME_PLACEHOLDER}"));

    let record = audit_record(&proxy, request_id).await;
    assert_eq!(record["decision"], "allow");
    assert_eq!(record["tenant"], "acme");
    assert_eq!(record["route"], "echo");
    assert_eq!(record["method"], "GET");
    assert_eq!(record["host"], "api.acme.test");
    assert_eq!(record["port"], upstream.port());
    assert_eq!(record["path"], "/echo");
    assert_eq!(record["status"], 200);
    assert_eq!(record["injected"], true);
    assert_eq!(record["secret_exposed"], false);
    assert_eq!(record["redactions"], answer["redactions"]);
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn actions_carry_bodies_and_scrub_headers_and_encoded_bodies() {
    let upstream = Upstream::start(Protocols::Http1).await;
    let proxy = TestProxy::start(&config(&upstream, "")).await;
    let auth = format!("Bearer {ACME_PLACEHOLDER}");
    // A JSON body on a route that allows POST, credentials as
    // Proxy-Authorization this time.
    let envelope = json!({
        "tenant": "acme", "service": "echo", "method": "post", "path": "/items",
        "headers": {"x-api-key": ACME_PLACEHOLDER}, "body": {"name": "widget", "n": 3},
    });
    let reply = client::action(proxy.addr(), &[("proxy-authorization", &acme())], envelope.to_string()).await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    let answer = reply.json();
    let echoed: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
    assert_eq!(echoed["method"], "POST");
    assert_eq!(echoed["body_len"], json!({"name": "widget", "n": 3}).to_string().len());
    let seen = upstream.seen();
    assert_eq!(seen[0].header("x-api-key"), Some(ACME_SECRET));
    assert_eq!(seen[0].header("content-type"), Some("application/json"));

    // A base64 body arrives as bytes.
    let envelope = json!({
        "tenant": "acme", "service": "echo", "method": "POST", "path": "/raw",
        "headers": {"authorization": auth}, "body": "AAEC/w==", "body_encoding": "base64",
    });
    let answer = post(&proxy, &acme(), &envelope).await.json();
    let echoed: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
    assert_eq!(echoed["body_len"], 4);

    // Secrets echoed in response headers and in a gzip body are scrubbed.
    for path in ["/header", "/gzip"] {
        let envelope = json!({"tenant": "acme", "service": "echo", "method": "GET", "path": path, "headers": {"authorization": auth}});
        let reply = post(&proxy, &acme(), &envelope).await;
        assert_clean(&format!("the answer for {path}"), &reply.text());
        let answer = reply.json();
        assert_eq!(answer["decision"], "allow", "{answer}");
        assert!(answer["redactions"].as_u64().unwrap() >= 1, "{path}: {answer}");
        if path == "/header" {
            assert_eq!(answer["headers"]["x-echo-auth"], auth);
        } else {
            assert!(answer["headers"].get("content-encoding").is_none(), "sent decoded: {answer}");
            assert!(answer["body"].as_str().unwrap().contains(&auth), "{answer}");
        }
    }

    // curl, as the README shows it.
    require_tool("curl", "curl");
    let envelope = json!({"tenant": "acme", "service": "echo", "method": "GET", "path": "/curl", "headers": {"authorization": auth}});
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "20", "-u", &format!("acme:{ACME_TOKEN}")])
        .arg(format!("http://{}/v1/actions", proxy.addr()))
        .args(["-H", "content-type: application/json", "-d", &envelope.to_string()])
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .env_remove("ALL_PROXY")
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_clean("curl's output", &text);
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["decision"], "allow");
    assert!(answer["body"].as_str().unwrap().contains(&auth));
    assert_eq!(upstream.seen().last().unwrap().header("authorization"), Some(format!("Bearer {ACME_SECRET}").as_str()));

    // An agent under `airlock run` has HTTP_PROXY set to airlock itself:
    // the action API, asked for through the proxy, still answers (with the
    // proxy credentials), for 127.0.0.1 and localhost.
    for host in ["127.0.0.1", "localhost"] {
        let before = upstream.seen().len();
        let out = tokio::process::Command::new("curl")
            .args(["-sS", "--max-time", "20"])
            .arg(format!("http://{host}:{}/v1/actions", proxy.addr().port()))
            .args(["-H", "content-type: application/json", "-d", &envelope.to_string()])
            .env("HTTP_PROXY", proxy.proxy_url("acme", ACME_TOKEN))
            .env("http_proxy", proxy.proxy_url("acme", ACME_TOKEN))
            .env_remove("NO_PROXY")
            .env_remove("no_proxy")
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let answer: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{host} ({e}): {text}"));
        assert_eq!(answer["decision"], "allow", "{host}: {answer}");
        assert_eq!(upstream.seen().len(), before + 1);
    }
    proxy.proxy.shutdown().await;
}

struct Case {
    name: &'static str,
    method: &'static str,
    headers: Vec<(&'static str, String)>,
    body: String,
    status: u16,
    code: &'static str,
}

fn envelope(tenant: &str, service: &str, method: &str, path: &str, headers: Value) -> String {
    json!({"tenant": tenant, "service": service, "method": method, "path": path, "headers": headers}).to_string()
}

#[tokio::test]
async fn every_denial_through_the_envelope_stops_before_the_upstream() {
    let upstream = Upstream::start(Protocols::Both).await;
    let proxy = TestProxy::start(&config(&upstream, "max_request_body = \"64KiB\"")).await;
    let acme_auth = vec![("authorization", acme())];
    let beta_auth = vec![("authorization", basic_auth("beta", BETA_TOKEN))];
    let bearer = json!({"authorization": format!("Bearer {ACME_PLACEHOLDER}")});
    let cases = vec![
        Case {
            name: "unknown service",
            method: "POST",
            headers: acme_auth.clone(),
            body: envelope("acme", "stripe", "GET", "/", bearer.clone()),
            status: 403,
            code: "host_not_allowed",
        },
        Case {
            name: "a wildcard route names no host",
            method: "POST",
            headers: acme_auth.clone(),
            body: envelope("acme", "wild", "GET", "/", json!({})),
            status: 403,
            code: "host_not_allowed",
        },
        Case {
            name: "another tenant in the envelope",
            method: "POST",
            headers: acme_auth.clone(),
            body: envelope("beta", "echo", "GET", "/", bearer.clone()),
            status: 403,
            code: "wrong_tenant",
        },
        Case {
            name: "write on a read-only route",
            method: "POST",
            headers: beta_auth.clone(),
            body: envelope("beta", "beta", "DELETE", "/", json!({"authorization": format!("Bearer {BETA_PLACEHOLDER}")})),
            status: 403,
            code: "method_not_allowed",
        },
        Case {
            name: "path outside the globs",
            method: "POST",
            headers: acme_auth.clone(),
            body: envelope("acme", "limited", "GET", "/v2/x", json!({"authorization": "Bearer AIRLOCK_ACME_LIMITED"})),
            status: 403,
            code: "path_not_allowed",
        },
        Case {
            name: "dot segments",
            method: "POST",
            headers: acme_auth.clone(),
            body: envelope("acme", "limited", "GET", "/v3/a/../../admin", json!({})),
            status: 403,
            code: "path_not_allowed",
        },
        Case {
            name: "another tenant's placeholder in a header",
            method: "POST",
            headers: acme_auth.clone(),
            body: envelope("acme", "echo", "GET", "/", json!({"authorization": format!("Bearer {BETA_PLACEHOLDER}")})),
            status: 403,
            code: "wrong_tenant",
        },
        Case {
            name: "another route's placeholder",
            method: "POST",
            headers: acme_auth.clone(),
            body: envelope("acme", "echo", "GET", "/", json!({"authorization": format!("Bearer {ACME_IP_PLACEHOLDER}")})),
            status: 403,
            code: "placeholder_host_mismatch",
        },
        Case {
            name: "the placeholder in an unlisted header",
            method: "POST",
            headers: acme_auth.clone(),
            body: envelope("acme", "echo", "GET", "/", json!({"x-other": ACME_PLACEHOLDER})),
            status: 403,
            code: "placeholder_host_mismatch",
        },
        Case {
            name: "the placeholder in the query",
            method: "POST",
            headers: acme_auth.clone(),
            body: json!({"tenant": "acme", "service": "echo", "method": "GET", "path": "/", "query": {"key": ACME_PLACEHOLDER}})
                .to_string(),
            status: 403,
            code: "placeholder_host_mismatch",
        },
        Case {
            name: "no credentials",
            method: "POST",
            headers: vec![],
            body: envelope("acme", "echo", "GET", "/", bearer.clone()),
            status: 401,
            code: "proxy_auth_required",
        },
        Case {
            name: "a wrong token",
            method: "POST",
            headers: vec![("authorization", basic_auth("acme", "not-the-token-at-all"))],
            body: envelope("acme", "echo", "GET", "/", bearer.clone()),
            status: 401,
            code: "unknown_tenant",
        },
        Case {
            name: "malformed JSON",
            method: "POST",
            headers: acme_auth.clone(),
            body: "{\"tenant\": \"acme\", ".into(),
            status: 400,
            code: "bad_request",
        },
        Case {
            name: "an unknown field",
            method: "POST",
            headers: acme_auth.clone(),
            body: json!({"tenant": "acme", "service": "echo", "method": "GET", "path": "/", "host": "evil.test"}).to_string(),
            status: 400,
            code: "bad_request",
        },
        Case {
            name: "a Host header in the envelope",
            method: "POST",
            headers: acme_auth.clone(),
            body: envelope("acme", "echo", "GET", "/", json!({"host": "evil.test"})),
            status: 400,
            code: "bad_request",
        },
        Case {
            name: "a path that is no path",
            method: "POST",
            headers: acme_auth.clone(),
            body: envelope("acme", "echo", "GET", "http://evil.test/", json!({})),
            status: 400,
            code: "bad_request",
        },
        Case {
            name: "CONNECT as the action's method",
            method: "POST",
            headers: acme_auth.clone(),
            body: envelope("acme", "echo", "CONNECT", "/", json!({})),
            status: 400,
            code: "bad_request",
        },
        Case {
            name: "GET instead of POST",
            method: "GET",
            headers: acme_auth.clone(),
            body: String::new(),
            status: 405,
            code: "bad_request",
        },
        Case {
            name: "from a web page",
            method: "POST",
            headers: vec![("authorization", acme()), ("origin", "https://evil.test".into())],
            body: envelope("acme", "echo", "GET", "/", bearer.clone()),
            status: 403,
            code: "bad_request",
        },
        Case {
            name: "an envelope over max_request_body",
            method: "POST",
            headers: acme_auth.clone(),
            body: json!({"tenant": "acme", "service": "echo", "method": "POST", "path": "/", "body": "x".repeat(70_000)})
                .to_string(),
            status: 413,
            code: "request_too_large",
        },
    ];
    let mut ids = Vec::new();
    for c in &cases {
        let headers: Vec<(&str, &str)> = c.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let reply = client::action_with(c.method, proxy.addr(), &headers, c.body.clone()).await.unwrap();
        assert_eq!(reply.status, c.status, "{}: {}", c.name, reply.text());
        assert_eq!(reply.headers["x-airlock-denied"], c.code, "{}", c.name);
        assert_clean(c.name, &reply.text());
        let answer = reply.json();
        assert_eq!(answer["decision"], "deny", "{}", c.name);
        assert_eq!(answer["error"]["code"], c.code, "{}: {answer}", c.name);
        for field in ["message", "next_step"] {
            assert!(answer["error"][field].as_str().is_some_and(|s| !s.is_empty()), "{}: {answer}", c.name);
        }
        let id = answer["request_id"].as_str().unwrap().to_owned();
        assert_eq!(reply.headers["x-airlock-request-id"], id.as_str());
        if c.status == 401 {
            assert_eq!(reply.headers["www-authenticate"], "Basic realm=\"airlock\"", "{}", c.name);
        }
        ids.push(id);
    }
    assert_eq!(upstream.connections(), 0, "a denied action must never leave the machine");
    // One audit record per action, with the answer's request id (the
    // refusals before authentication are coalesced per address: the second
    // is written at shutdown).
    let TestProxy { home, proxy } = proxy;
    proxy.shutdown().await;
    let lines = audit_records(&home.path.join("audit.jsonl"));
    assert_eq!(lines.len(), cases.len(), "{lines:?}");
    for (c, id) in cases.iter().zip(&ids) {
        let record = lines.iter().find(|l| l["request_id"] == id.as_str()).unwrap_or_else(|| panic!("{}", c.name));
        let decision = if c.code == "proxy_auth_required" { "challenge" } else { "deny" };
        assert_eq!(record["decision"], decision, "{}", c.name);
        assert_eq!(record["code"], c.code, "{}", c.name);
        assert_eq!(record["status"], c.status, "{}", c.name);
    }
    // The read-only route's next step says what to ask for.
    let read_only = &lines.iter().find(|l| l["code"] == "method_not_allowed").unwrap();
    assert_eq!(read_only["route"], "beta");
    drop(home);
}

#[tokio::test]
async fn a_long_body_is_cut_after_scrubbing_never_inside_a_placeholder() {
    const CAP: usize = 160;
    let upstream = Upstream::start(Protocols::Http1).await;
    let proxy = TestProxy::start(&config(&upstream, &format!("max_action_response = {CAP}"))).await;
    let auth = format!("Bearer {ACME_PLACEHOLDER}");
    // The echo lists the headers in order: a padding header shifts where
    // the (injected, then scrubbed) key lands, one byte per request, so
    // the cap falls before, inside and after it.
    let mut cut_before_placeholder = 0;
    let mut whole_placeholder = 0;
    for pad in 60..140 {
        let envelope = json!({
            "tenant": "acme", "service": "echo", "method": "GET", "path": "/echo",
            "headers": {"a-pad": "x".repeat(pad + 1), "authorization": auth},
        });
        let reply = post(&proxy, &acme(), &envelope).await;
        assert_clean("a truncated answer", &reply.text());
        let answer = reply.json();
        assert_eq!(answer["decision"], "allow", "{answer}");
        assert_eq!(answer["truncated"], true, "{answer}");
        assert_eq!(answer["body_encoding"], "utf-8");
        let body = answer["body"].as_str().unwrap();
        assert!(body.len() <= CAP, "{} > {CAP}", body.len());
        assert!(body.len() + ACME_PLACEHOLDER.len() >= CAP, "cut no further back than one placeholder: {body}");
        // No part of the key, and no part of a placeholder, at the edge.
        for k in 4..=ACME_SECRET.len() {
            assert!(!body.ends_with(&ACME_SECRET[..k]), "{body}");
        }
        for k in 1..ACME_PLACEHOLDER.len() {
            assert!(!body.ends_with(&ACME_PLACEHOLDER[..k]), "a placeholder cut at {k}: {body}");
        }
        if body.ends_with("\"Bearer ") {
            cut_before_placeholder += 1;
        }
        if body.contains(&auth) {
            whole_placeholder += 1;
        }
        assert_eq!(
            upstream.seen().last().unwrap().header("authorization"),
            Some(format!("Bearer {ACME_SECRET}").as_str())
        );
        let record = audit_record(&proxy, answer["request_id"].as_str().unwrap()).await;
        assert_eq!(record["decision"], "allow");
    }
    assert!(cut_before_placeholder > 1, "the cap fell inside the placeholder in some requests");
    assert!(whole_placeholder > 1, "and after it in others");
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn an_upstream_that_fails_is_a_denial_never_a_short_body() {
    let upstream = Upstream::start(Protocols::Http1).await;
    let limits = "upstream_read_timeout = \"1s\"\nupstream_response_timeout = \"1s\"";
    let proxy = TestProxy::start(&config(&upstream, limits)).await;
    let auth = format!("Bearer {ACME_PLACEHOLDER}");
    for (path, status, code, complete) in [
        ("/truncated", 502, "upstream_unreachable", Some(false)),
        ("/drip", 504, "upstream_timeout", Some(false)),
        ("/corrupt-gzip", 502, "unredactable_body", Some(false)),
        ("/unknown-encoding", 502, "unredactable_body", None),
        ("/hang", 504, "upstream_timeout", None),
    ] {
        let envelope = json!({"tenant": "acme", "service": "echo", "method": "GET", "path": path, "headers": {"authorization": auth}});
        let reply = tokio::time::timeout(Duration::from_secs(20), post(&proxy, &acme(), &envelope)).await.unwrap();
        assert_eq!(reply.status, status, "{path}: {}", reply.text());
        assert_eq!(reply.headers["x-airlock-denied"], code, "{path}");
        assert_clean(path, &reply.text());
        let answer = reply.json();
        assert_eq!(answer["decision"], "deny", "{path}");
        assert!(answer["error"]["next_step"].as_str().is_some_and(|s| !s.is_empty()), "{path}: {answer}");
        // The record: the pipeline's allow marked incomplete when the head
        // had arrived, else the denial.
        let record = audit_record(&proxy, answer["request_id"].as_str().unwrap()).await;
        match complete {
            Some(complete) => {
                assert_eq!(record["decision"], "allow", "{path}: {record}");
                assert_eq!(record["complete"], complete, "{path}: {record}");
            }
            None => assert_eq!(record["code"], code, "{path}: {record}"),
        }
    }
    proxy.proxy.shutdown().await;
}
