//! The redactor end to end: whatever the upstream echoes, the client sees no
//! form of the secret, while the upstream saw the real key.

use std::time::Duration;

use airlock_tests::client::{self, Http};
use airlock_tests::upstream::Protocols;
use airlock_tests::*;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http_body_util::BodyExt;

fn assert_no_secret(what: &str, text: &str) {
    airlock_tests::assert_no_secret(what, text, &[ACME_SECRET]);
}

async fn setup() -> (Upstream, TestProxy) {
    let upstream = Upstream::start(Protocols::Both).await;
    let proxy = TestProxy::start(&standard_config(&upstream, "", "")).await;
    (upstream, proxy)
}

async fn get(proxy: &TestProxy, upstream: &Upstream, path: &str, auth: &str, http: Http) -> client::Reply {
    let req = client::get("api.acme.test", upstream.port(), path, &[("authorization", auth)], http);
    let ca = proxy.ca_pem();
    client::request(proxy.addr(), ("acme", ACME_TOKEN), "api.acme.test", upstream.port(), &[&ca], http, req)
        .await
        .unwrap()
}

fn bearer() -> String {
    format!("Bearer {ACME_PLACEHOLDER}")
}

#[tokio::test]
async fn echoed_authorization_comes_back_as_the_placeholder() {
    let (upstream, proxy) = setup().await;
    for http in [Http::H1, Http::H2] {
        let reply = get(&proxy, &upstream, "/echo", &bearer(), http).await;
        assert_eq!(reply.status, 200);
        let text = reply.text();
        assert_no_secret("echo body", &text);
        assert!(text.contains(&format!("Bearer {ACME_PLACEHOLDER}")), "{text}");
    }
    for seen in upstream.seen() {
        assert_eq!(seen.header("authorization"), Some(format!("Bearer {ACME_SECRET}").as_str()));
    }

    // Basic credentials through curl: the echoed header value maps back to
    // what curl sent.
    let out = proxy
        .curl()
        .args(["-u", &format!("{ACME_PLACEHOLDER}:")])
        .arg(format!("https://api.acme.test:{}/echo", upstream.port()))
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_no_secret("curl basic echo", &text);
    let sent = format!("Basic {}", STANDARD.encode(format!("{ACME_PLACEHOLDER}:")));
    assert!(text.contains(&sent), "{text}");
    let upstream_saw = format!("Basic {}", STANDARD.encode(format!("{ACME_SECRET}:")));
    assert_eq!(upstream.seen().last().unwrap().header("authorization"), Some(upstream_saw.as_str()));

    // The audit counts the redactions and never holds the secret.
    assert!(wait_for(Duration::from_secs(5), || proxy.audit_lines().len() >= 3).await);
    let audit = std::fs::read_to_string(proxy.home.path.join("audit.jsonl")).unwrap();
    assert_no_secret("audit log", &audit);
    assert!(proxy.audit_lines().iter().all(|l| l["redactions"].as_u64().unwrap() >= 1 && l["secret_exposed"] == false));

    // The proxy's debug log (captured for the whole suite, and searched for
    // every secret whenever a test home goes away) saw these requests.
    let logs = captured_logs();
    for line in proxy.audit_lines() {
        let id = line["request_id"].as_str().unwrap();
        assert!(logs.contains(&format!("request_id={id}")), "request {id} is not in the captured log");
    }
    assert!(logs.contains("response ended") && logs.contains("forwarded"), "debug lines are captured");
    assert_logs_clean();
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn compressed_bodies_are_decoded_and_scrubbed() {
    let (upstream, proxy) = setup().await;
    for path in ["/gzip", "/deflate", "/br", "/zstd", "/gzip-br"] {
        for http in [Http::H1, Http::H2] {
            let reply = get(&proxy, &upstream, path, &bearer(), http).await;
            assert_eq!(reply.status, 200, "{path}");
            assert!(!reply.headers.contains_key("content-encoding"), "{path}: sent decoded");
            let json = reply.json();
            assert_eq!(json["you_sent"], format!("Bearer {ACME_PLACEHOLDER}"), "{path}");
            assert_no_secret(path, &reply.text());
        }
    }
    // airlock asked for identity every time.
    assert!(upstream.seen().iter().all(|s| s.header("accept-encoding") == Some("identity")));
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn unscannable_bodies_are_never_passed_through() {
    let (upstream, proxy) = setup().await;
    let reply = get(&proxy, &upstream, "/unknown-encoding", &bearer(), Http::H1).await;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.json()["error"]["code"], "unredactable_body");
    assert_no_secret("unknown encoding", &reply.text());

    // A corrupt gzip body fails once streaming has begun: the stream aborts.
    for http in [Http::H1, Http::H2] {
        let outcome = fetch(&proxy, &upstream, "/corrupt-gzip", http).await;
        assert!(outcome.is_err(), "{http:?}: a body that fails to decode must not end cleanly: {outcome:?}");
    }
    proxy.proxy.shutdown().await;
}

/// Sends one request and reads the whole body. An error anywhere — the
/// connection closing before the head (HTTP/1.1 drops a buffered head when
/// the body fails right after it) or mid-body — is the aborted stream a
/// client must see.
async fn fetch(proxy: &TestProxy, upstream: &Upstream, path: &str, http: Http) -> Result<(u16, bytes::Bytes), String> {
    let ca = proxy.ca_pem();
    let mut sender =
        client::open(proxy.addr(), ("acme", ACME_TOKEN), "api.acme.test", upstream.port(), &[&ca], http).await.unwrap();
    let resp =
        sender.send(client::get("api.acme.test", upstream.port(), path, &[], http)).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect())
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    Ok((status, body.to_bytes()))
}

#[tokio::test]
async fn a_secret_split_across_delayed_frames_is_replaced() {
    let (upstream, proxy) = setup().await;
    for http in [Http::H1, Http::H2] {
        let reply = get(&proxy, &upstream, "/split", &bearer(), http).await;
        assert_eq!(reply.text(), format!("before Bearer {ACME_PLACEHOLDER} after"));
    }
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn secrets_in_response_headers_are_scrubbed() {
    let (upstream, proxy) = setup().await;
    let reply = get(&proxy, &upstream, "/header", &bearer(), Http::H1).await;
    assert_eq!(reply.headers["x-echo-auth"], format!("Bearer {ACME_PLACEHOLDER}").as_str());
    for name in ["location", "set-cookie", "www-authenticate"] {
        let v = reply.headers[name].to_str().unwrap();
        assert_no_secret(name, v);
        assert!(v.contains(ACME_PLACEHOLDER), "{name}: {v}");
    }
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn base64_embedded_secrets_are_redacted() {
    let (upstream, proxy) = setup().await;
    let reply = get(&proxy, &upstream, "/b64", &bearer(), Http::H2).await;
    let text = reply.text();
    assert_no_secret("b64", &text);
    let json = reply.json();
    for field in ["basic", "shifted", "header"] {
        assert!(json[field].as_str().unwrap().contains("[REDACTED]"), "{field}: {text}");
    }
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn sse_events_are_not_held_back() {
    let (upstream, proxy) = setup().await;
    let ca = proxy.ca_pem();
    for http in [Http::H1, Http::H2] {
        let mut sender =
            client::open(proxy.addr(), ("acme", ACME_TOKEN), "api.acme.test", upstream.port(), &[&ca], http)
                .await
                .unwrap();
        let resp = sender
            .send(client::get("api.acme.test", upstream.port(), "/sse", &[("authorization", &bearer())], http))
            .await
            .unwrap();
        let mut body = resp.into_body();
        // The first event must arrive while the upstream is still waiting to
        // send the second.
        let mut got = Vec::new();
        while !got.ends_with(b"\n\n") {
            let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
                .await
                .expect("the first event was held back")
                .unwrap()
                .unwrap();
            if let Ok(data) = frame.into_data() {
                got.extend_from_slice(&data);
            }
        }
        let first = String::from_utf8(got).unwrap();
        assert_eq!(first, format!("data: {{\"n\": 1, \"auth\": \"Bearer {ACME_PLACEHOLDER}\"}}\n\n"));
        upstream.release_sse();
        let rest = body.collect().await.unwrap().to_bytes();
        assert_eq!(&rest[..], b"data: {\"n\": 2}\n\n");
    }
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn trailers_are_forwarded_and_scrubbed() {
    let (upstream, proxy) = setup().await;
    let reply = get(&proxy, &upstream, "/trailers", &bearer(), Http::H2).await;
    assert_eq!(reply.text(), "body");
    let trailers = reply.trailers.expect("trailers arrive over HTTP/2");
    assert_eq!(trailers["x-echo-auth"], format!("Bearer {ACME_PLACEHOLDER}").as_str());
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn upstream_faults_abort_the_stream_and_are_audited() {
    let (upstream, proxy) = setup().await;
    for http in [Http::H1, Http::H2] {
        let outcome = fetch(&proxy, &upstream, "/truncated", http).await;
        assert!(outcome.is_err(), "{http:?}: a truncated upstream body must not look complete: {outcome:?}");
    }
    assert!(
        wait_for(Duration::from_secs(5), || {
            proxy.audit_lines().iter().filter(|l| l["path"] == "/truncated" && l["complete"] == false).count() == 2
        })
        .await
    );
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn range_requests_are_sent_whole() {
    let (upstream, proxy) = setup().await;
    let req =
        client::get("api.acme.test", upstream.port(), "/echo", &[("range", "bytes=0-10"), ("if-range", "x")], Http::H1);
    let ca = proxy.ca_pem();
    let reply =
        client::request(proxy.addr(), ("acme", ACME_TOKEN), "api.acme.test", upstream.port(), &[&ca], Http::H1, req)
            .await
            .unwrap();
    assert_eq!(reply.status, 200);
    let seen = upstream.seen();
    assert!(seen[0].header("range").is_none() && seen[0].header("if-range").is_none());
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn a_secret_in_the_request_path_is_kept_out_of_logs_and_the_audit() {
    // An agent that got hold of a real key and put it in a URL: the request
    // is served, but no log line, audit record or answer shows the key.
    let (upstream, proxy) = setup().await;
    for http in [Http::H1, Http::H2] {
        let reply = get(&proxy, &upstream, &format!("/echo/{ACME_SECRET}/x?t={ACME_SECRET}"), &bearer(), http).await;
        assert_eq!(reply.status, 200);
        assert_no_secret("the answer", &reply.text());
        assert!(reply.text().contains(&format!("/echo/{ACME_PLACEHOLDER}/x")), "{}", reply.text());
    }
    let audit = proxy.audit_lines();
    assert_eq!(audit.iter().filter(|l| l["path"] == format!("/echo/{ACME_PLACEHOLDER}/x")).count(), 2, "{audit:?}");
    // The query too: recorded, and scrubbed like the path.
    assert_eq!(audit.iter().filter(|l| l["query"] == format!("t={ACME_PLACEHOLDER}")).count(), 2, "{audit:?}");
    let logs = captured_logs();
    assert!(logs.contains(&format!("path=/echo/{ACME_PLACEHOLDER}/x")), "the request's log lines name its path");
    assert_logs_clean();
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn a_secret_as_the_request_method_is_kept_out_of_logs_and_the_audit() {
    // A method is any token the agent chooses: one holding a real key is
    // refused (no route allows it), and no log line or record shows it.
    let (upstream, proxy) = setup().await;
    let ca = proxy.ca_pem();
    for http in [Http::H1, Http::H2] {
        let mut req = client::get("api.acme.test", upstream.port(), "/echo", &[], http);
        *req.method_mut() = http::Method::from_bytes(ACME_SECRET.as_bytes()).unwrap();
        let reply =
            client::request(proxy.addr(), ("acme", ACME_TOKEN), "api.acme.test", upstream.port(), &[&ca], http, req)
                .await
                .unwrap();
        assert_eq!(reply.status, 403, "{}", reply.text());
        assert_no_secret("the answer", &reply.text());
    }
    let audit = proxy.audit_lines();
    assert_eq!(audit.iter().filter(|l| l["method"] == ACME_PLACEHOLDER).count(), 2, "{audit:?}");
    assert_no_secret("the audit", &format!("{audit:?}"));
    assert_logs_clean();
    proxy.proxy.shutdown().await;
}

/// What the agent receives of `path?guess=G`: with `until` set, the bytes
/// that arrive before the upstream goes on (read until `until` bytes came,
/// or, for `None`, until nothing more arrives for 1 s), then the upstream
/// is released; for `/probe-abort`, everything before the stream fails.
async fn probe(proxy: &TestProxy, upstream: &Upstream, path: &str, guess: &str, until: Option<usize>) -> Vec<u8> {
    let ca = proxy.ca_pem();
    let mut sender =
        client::open(proxy.addr(), ("acme", ACME_TOKEN), "api.acme.test", upstream.port(), &[&ca], Http::H1)
            .await
            .unwrap();
    let req = client::get("api.acme.test", upstream.port(), &format!("{path}?guess={guess}"), &[], Http::H1);
    let mut body = sender.send(req).await.unwrap().into_body();
    let mut got = Vec::new();
    let abort = path == "/probe-abort";
    loop {
        if !abort && until.is_some_and(|n| got.len() >= n) {
            break;
        }
        let wait = if abort || until.is_some() { Duration::from_secs(10) } else { Duration::from_secs(1) };
        match tokio::time::timeout(wait, body.frame()).await {
            Ok(Some(Ok(frame))) => got.extend_from_slice(frame.data_ref().map(|d| &d[..]).unwrap_or_default()),
            // The abort variant ends here; so does the pause variant if the
            // stream ended early.
            Ok(Some(Err(_)) | None) => break,
            Err(_) if abort => panic!("the aborted stream never ended"),
            Err(_) => break,
        }
    }
    upstream.release_sse();
    got
}

#[tokio::test]
async fn the_hold_back_reveals_nothing_about_secrets() {
    // Finding: text an agent makes an upstream echo as the last bytes of a
    // write was held back only while it could start a known secret, so the
    // timing (or, when the upstream then failed, the loss) of those bytes
    // told the agent whether its guess starts any tenant's key. Whatever
    // the guess, the same bytes must arrive.
    let (upstream, proxy) = setup().await;
    let len = "sk_live_beta_fedc".len();
    let pairs = [
        // Another tenant's key, and this tenant's own.
        ("sk_live_beta_fedc", "sk_live_beta_fedx"),
        ("sk_live_acme_0123", "sk_live_acme_012z"),
    ];
    for (prefix, other) in pairs {
        assert_eq!((prefix.len(), other.len()), (len, len));
        // The abort variant: the held tail is dropped either way.
        let a = probe(&proxy, &upstream, "/probe-abort", prefix, None).await;
        let b = probe(&proxy, &upstream, "/probe-abort", other, None).await;
        assert_eq!(a.len(), b.len(), "aborted: a prefix of a secret lost other bytes than a non-prefix");
        assert_eq!(a.strip_suffix(prefix.as_bytes()).is_some(), b.strip_suffix(other.as_bytes()).is_some());
    }
    // The pause variant, replayed as the attack ran: from the key format's
    // public prefix, try each next character and watch what arrives before
    // the pause. A baseline guess that starts nothing sets what a pause
    // shows; every candidate must show exactly as much.
    let baseline = probe(&proxy, &upstream, "/probe", "zzzzzzzzzzzzzz", None).await;
    assert!(baseline.starts_with(b"line one\n"), "{}", String::from_utf8_lossy(&baseline));
    for c in "0123456789abcdef".chars() {
        let guess = format!("sk_live_beta_{c}");
        assert_eq!(guess.len(), "zzzzzzzzzzzzzz".len());
        let got = probe(&proxy, &upstream, "/probe", &guess, Some(baseline.len())).await;
        assert_eq!(got.len(), baseline.len(), "candidate {c}: the pause showed a different amount");
    }
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn every_spelling_is_scrubbed_through_gzip_in_small_frames() {
    // The key percent-encoded (either case, partly), as JSON \u escapes (Go's
    // HTML-safe form too), as HTML character references, and inside base64
    // wrapped at 76 columns with the break in the key: gzipped, in 3-byte
    // frames, so every spelling is split across frames.
    let (upstream, proxy) = setup().await;
    let sent = spellings(ACME_SECRET);
    assert!(sent.contains("%73%6B") && sent.contains("\\u0073") && sent.contains("&#x73;") && sent.contains("\r\n"));
    for http in [Http::H1, Http::H2] {
        let reply = get(&proxy, &upstream, "/spellings", &bearer(), http).await;
        assert_eq!(reply.status, 200);
        let text = reply.text();
        assert_no_secret("spellings", &text);
        let (got, want): (Vec<&str>, Vec<&str>) = (text.lines().collect(), sent.lines().collect());
        for (i, (g, w)) in got.iter().zip(&want).take(7).enumerate() {
            assert_ne!(g, w, "{http:?}: spelling {i} passed unscrubbed");
            assert!(g.contains(ACME_PLACEHOLDER), "{http:?}: spelling {i}: {g}");
        }
        let mime = got[7..].join("\n");
        assert!(mime.contains("[REDACTED]"), "{http:?}: the wrapped base64: {mime}");
    }
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn a_secret_stored_with_stray_whitespace_is_scrubbed_as_the_upstream_sees_it() {
    // HTTP drops the whitespace around a field value, so the upstream gets,
    // and echoes, the key without the space or tab a paste left around it.
    let upstream = Upstream::start(Protocols::Both).await;
    let home = TempHome::new("space");
    store_standard_secrets(&home.path);
    let padded = format!(" {ACME_SECRET}\t");
    let store = airlock_policy::secrets::Store::new(&home.path);
    store.set("acme_key", &airlock_policy::secrets::SecretValue::new(padded.into_bytes()).unwrap()).unwrap();
    let running = start_in(&home.path, &standard_config(&upstream, "", "")).await;
    let proxy = TestProxy { home, proxy: running };
    for path in ["/echo", "/header", "/b64"] {
        for http in [Http::H1, Http::H2] {
            let reply = get(&proxy, &upstream, path, &bearer(), http).await;
            assert_no_secret(path, &(format!("{:?}", reply.headers) + &reply.text()));
        }
    }
    assert!(upstream.seen().iter().any(|s| s.header("authorization").is_some_and(|a| a.contains(ACME_SECRET))));
    proxy.proxy.shutdown().await;
}
