//! Every channel between agent and upstream, walked with a hostile
//! upstream that tries to hand the injected key back through it (README,
//! "Every channel, and what airlock does with it"): the status line, 1xx
//! heads, trailers, header names and values, transfer codings, upgrades
//! (h2c, unknown tokens, WebSocket frames), plain HTTP, CONNECT inside a
//! tunnel and airlock's own messages. The agent, the logs and the audit
//! never hold a secret byte (`TempHome` searches the audit log and the
//! captured logs when each test's home goes away).

use std::time::Duration;

use airlock_tests::client::{self, Http};
use airlock_tests::upstream::Protocols;
use airlock_tests::ws::{self, tungstenite::Message};
use airlock_tests::*;
use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

fn bearer() -> String {
    format!("Bearer {ACME_PLACEHOLDER}")
}

fn assert_clean(what: &str, text: &str) {
    airlock_tests::assert_no_secret(what, text, &[ACME_SECRET]);
}

/// curl through the proxy to `https://api.acme.test:PORT{path}` with the
/// placeholder; `-i` shows every response head curl received.
async fn curl(proxy: &TestProxy, port: u16, path: &str, extra: &[&str]) -> (bool, String) {
    let out = proxy
        .curl()
        .args(["-i", "-H", &format!("Authorization: {}", bearer())])
        .args(extra)
        .arg(format!("https://api.acme.test:{port}{path}"))
        .output()
        .await
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// The audit record of the request to `path` (waiting until it is there).
async fn record(proxy: &TestProxy, path: &str) -> serde_json::Value {
    let found = || proxy.audit_lines().into_iter().rev().find(|l| l["path"] == path);
    assert!(wait_for(Duration::from_secs(5), || found().is_some()).await, "no record for {path}");
    found().unwrap()
}

/// One GET through the Rust client (h1 or h2) with the placeholder.
async fn get(
    proxy: &TestProxy,
    port: u16,
    path: &str,
    http: Http,
) -> (u16, http::HeaderMap, String, Option<http::HeaderMap>) {
    let mut sender = client::open(proxy.addr(), ("acme", ACME_TOKEN), "api.acme.test", port, &[&proxy.ca_pem()], http)
        .await
        .unwrap();
    let auth = bearer();
    let req = client::get("api.acme.test", port, path, &[("authorization", &auth), ("te", "trailers")], http);
    let resp = sender.send(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    let text = String::from_utf8_lossy(&collected.to_bytes()).into_owned();
    (parts.status.as_u16(), parts.headers, text, trailers)
}

fn dump(headers: &http::HeaderMap) -> String {
    headers.iter().map(|(n, v)| format!("{n}: {}\n", String::from_utf8_lossy(v.as_bytes()))).collect()
}

#[tokio::test]
async fn the_status_line_carries_only_the_canonical_reason() {
    let upstream = RawUpstream::start().await;
    let proxy = TestProxy::start(&standard_config(&upstream, "", "")).await;
    let port = upstream.addr.port();
    // h1: curl shows the status line as the agent received it.
    let (_, text) = curl(&proxy, port, "/reason", &["--http1.1"]).await;
    assert_clean("curl -i", &text);
    // After the proxy's own answer to CONNECT.
    assert!(text.contains("\r\n\r\nHTTP/1.1 401 Unauthorized\r\n"), "{text}");
    assert!(!text.contains("bad key"), "the upstream's reason phrase passed: {text}");
    // A status with no registered reason gets an empty one.
    let (_, text) = curl(&proxy, port, "/reason-299", &["--http1.1"]).await;
    assert_clean("curl -i", &text);
    assert!(text.contains("\r\n\r\nHTTP/1.1 299 \r\n"), "{text}");
    // h2 has no reason phrase; the status passes.
    let (status, headers, body, _) = get(&proxy, port, "/reason", Http::H2).await;
    assert_eq!(status, 401);
    assert_clean("h2 answer", &(dump(&headers) + &body));
    // The reason held a secret: counted as scrubbed.
    assert!(record(&proxy, "/reason").await["redactions"].as_u64().unwrap() >= 1);
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn informational_responses_never_reach_the_agent() {
    let upstream = RawUpstream::start().await;
    let proxy = TestProxy::start(&standard_config(&upstream, "", "")).await;
    let port = upstream.addr.port();
    let (ok, text) = curl(&proxy, port, "/informational", &["--http1.1"]).await;
    assert!(ok, "{text}");
    assert_clean("curl -i", &text);
    // A status line, not the digits: a random request id may hold "103".
    assert!(!text.contains("HTTP/1.1 103") && !text.contains("100 Continue") && !text.contains("x-echo"), "{text}");
    assert!(text.contains("200 OK") && text.ends_with("ok"), "{text}");
    let (ok, text) = curl(&proxy, port, "/informational", &["--http2"]).await;
    assert!(ok, "{text}");
    assert_clean("curl -i --http2", &text);
    assert!(!text.contains("HTTP/2 103") && !text.contains("x-echo"), "{text}");
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn trailers_are_scrubbed_for_h1_and_h2_agents() {
    // An h1 upstream sending a raw chunked trailer, and an h2 one.
    let raw = RawUpstream::start().await;
    let proxy = TestProxy::start(&standard_config(&raw, "", "")).await;
    for http in [Http::H1, Http::H2] {
        let (status, headers, body, trailers) = get(&proxy, raw.addr.port(), "/trailers", http).await;
        assert_eq!((status, body.as_str()), (200, "body"), "{http:?}");
        let trailers = trailers.unwrap_or_else(|| panic!("{http:?}: no trailers arrived"));
        assert_clean("trailers", &(dump(&headers) + &dump(&trailers)));
        assert_eq!(trailers["x-echo"], bearer().as_str(), "{http:?}");
    }
    assert!(record(&proxy, "/trailers").await["redactions"].as_u64().unwrap() >= 1);
    proxy.proxy.shutdown().await;

    // An h2 upstream's trailers, undeclared (no `Trailer` field): the h2
    // agent gets them scrubbed; HTTP/1.1 sends only declared trailer fields,
    // so the h1 agent gets none, and certainly no secret.
    let upstream = Upstream::start(Protocols::Http2).await;
    let proxy = TestProxy::start(&standard_config(&upstream, "", "")).await;
    let (_, _, _, trailers) = get(&proxy, upstream.port(), "/trailers", Http::H2).await;
    let trailers = trailers.expect("no trailers arrived");
    assert_clean("trailers", &dump(&trailers));
    assert_eq!(trailers["x-echo-auth"], bearer().as_str());
    let (_, headers, _, trailers) = get(&proxy, upstream.port(), "/trailers", Http::H1).await;
    assert_clean("h1 head and trailers", &(dump(&headers) + &trailers.as_ref().map(dump).unwrap_or_default()));
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn header_names_and_values_holding_the_key_are_scrubbed() {
    let raw = RawUpstream::start().await;
    let proxy = TestProxy::start(&standard_config(&raw, "", "")).await;
    for http in [Http::H1, Http::H2] {
        let (status, headers, _, _) = get(&proxy, raw.addr.port(), "/header-name", http).await;
        assert_eq!(status, 200);
        assert_clean("header names", &dump(&headers));
        assert_eq!(headers["x-kept"], "3", "other headers stay");
    }
    assert!(record(&proxy, "/header-name").await["redactions"].as_u64().unwrap() >= 2);
    proxy.proxy.shutdown().await;

    // Values: Set-Cookie, Location, WWW-Authenticate.
    let upstream = Upstream::start(Protocols::Both).await;
    let proxy = TestProxy::start(&standard_config(&upstream, "", "")).await;
    for http in [Http::H1, Http::H2] {
        let (_, headers, _, _) = get(&proxy, upstream.port(), "/header", http).await;
        let text = dump(&headers);
        assert_clean("header values", &text);
        assert!(headers.contains_key("set-cookie") && headers.contains_key("location"), "{text}");
    }
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn transfer_codings_are_decoded_before_scanning_or_refused() {
    let raw = RawUpstream::start().await;
    let proxy = TestProxy::start(&standard_config(&raw, "", "")).await;
    let port = raw.addr.port();
    for http in [Http::H1, Http::H2] {
        for path in ["/te-gzip", "/te-gzip-close"] {
            let (status, headers, body, _) = get(&proxy, port, path, http).await;
            assert_eq!(status, 200, "{path}");
            assert_clean(path, &body);
            assert_eq!(body, format!("you sent {}", bearer()), "{path} {http:?}");
            // Sent decoded: no content coding, and no transfer coding but the
            // agent connection's own chunked framing.
            assert!(!headers.contains_key("content-encoding"), "{}", dump(&headers));
            assert!(headers.get("transfer-encoding").is_none_or(|te| te == "chunked"), "{}", dump(&headers));
        }
        let (status, headers, body, _) = get(&proxy, port, "/te-unknown", http).await;
        assert_eq!((status, headers["x-airlock-denied"].to_str().unwrap()), (502, "unredactable_body"), "{body}");
        assert_clean("refusal", &body);
    }
    // The refusal came after the key went upstream: the record says so.
    let r = record(&proxy, "/te-unknown").await;
    assert_eq!((r["decision"].as_str(), r["injected"].as_bool()), (Some("deny"), Some(true)), "{r}");
    proxy.proxy.shutdown().await;
}

/// Reads whatever arrives until the peer closes or 3 s pass.
async fn read_all(io: &mut (impl AsyncRead + Unpin)) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), io.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Two requests on one connection: an upgrade offer to `first`, then a
/// DELETE (not allowed by the route). Returns everything the agent got.
async fn upgrade_then_delete(
    io: &mut (impl AsyncRead + AsyncWriteExt + Unpin),
    authority: &str,
    target: &str,
    upgrade: &str,
) -> String {
    let auth = bearer();
    let offer = format!(
        "GET {target} HTTP/1.1\r\nHost: {authority}\r\nAuthorization: {auth}\r\nConnection: Upgrade, HTTP2-Settings\r\n\
         Upgrade: {upgrade}\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n"
    );
    io.write_all(offer.as_bytes()).await.unwrap();
    let (status, head, body) =
        tokio::time::timeout(Duration::from_secs(10), client::read_response_head(io)).await.unwrap().unwrap();
    let delete =
        target.replace("/upgrade", "/admin/delete-everything").replace("/always-101", "/admin/delete-everything");
    let second =
        format!("DELETE {delete} HTTP/1.1\r\nHost: {authority}\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n");
    let _ = io.write_all(second.as_bytes()).await;
    format!("{status}\n{head}{body}{}", read_all(io).await)
}

#[tokio::test]
async fn no_upgrade_but_websocket_ever_becomes_a_pipe() {
    for tls in [true, false] {
        let raw = if tls { RawUpstream::start().await } else { RawUpstream::start_plain().await };
        let proxy = TestProxy::start(&standard_config(&raw, "", "")).await;
        let port = raw.addr.port();
        let authority = format!("api.acme.test:{port}");
        for upgrade in ["h2c", "x-unknown/1", "H2C, foo"] {
            for path in ["/upgrade", "/always-101"] {
                // The placeholder goes only over TLS; plain HTTP sends none.
                let got = if tls {
                    let reply = client::connect(proxy.addr(), &authority, Some(("acme", ACME_TOKEN))).await.unwrap();
                    let mut io =
                        client::tls(reply.stream, "api.acme.test", &[&proxy.ca_pem()], &[b"http/1.1"]).await.unwrap();
                    upgrade_then_delete(&mut io, &authority, path, upgrade).await
                } else {
                    let mut io = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
                    let creds = client::basic("acme", ACME_TOKEN);
                    let target = format!("http://{authority}{path}");
                    upgrade_then_delete_plain(&mut io, &authority, &target, upgrade, &creds).await
                };
                assert_clean("agent", &got);
                assert!(
                    !got.contains("pipe:"),
                    "{upgrade} {path} (tls {tls}): the upstream's pipe reached the agent: {got}"
                );
                match path {
                    "/upgrade" => assert!(got.starts_with("200\n") && got.contains("no upgrade"), "{upgrade}: {got}"),
                    _ => assert!(got.starts_with("502\n") && got.contains("unredactable_body"), "{upgrade}: {got}"),
                }
                // The DELETE after it was decided, refused and audited.
                assert!(got.contains("method_not_allowed"), "{upgrade} {path} (tls {tls}): {got}");
            }
        }
        // The upstream never saw an Upgrade or HTTP2-Settings header, nor
        // any DELETE.
        let received = String::from_utf8_lossy(&raw.received()).to_ascii_lowercase();
        assert!(!received.contains("upgrade:") && !received.contains("http2-settings"), "{received}");
        assert!(!received.contains("delete"), "{received}");
        let audit = proxy.audit_lines();
        let deletes: Vec<_> = audit.iter().filter(|r| r["method"] == "DELETE").collect();
        assert_eq!(deletes.len(), 6, "{audit:?}");
        assert!(deletes.iter().all(|r| r["code"] == "method_not_allowed"));
        proxy.proxy.shutdown().await;
    }
}

async fn upgrade_then_delete_plain(
    io: &mut tokio::net::TcpStream,
    authority: &str,
    target: &str,
    upgrade: &str,
    creds: &str,
) -> String {
    let offer = format!(
        "GET {target} HTTP/1.1\r\nHost: {authority}\r\nProxy-Authorization: {creds}\r\n\
         Connection: Upgrade, HTTP2-Settings\r\nUpgrade: {upgrade}\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n"
    );
    io.write_all(offer.as_bytes()).await.unwrap();
    let (status, head, body) =
        tokio::time::timeout(Duration::from_secs(10), client::read_response_head(io)).await.unwrap().unwrap();
    let delete = format!("http://{authority}/admin/delete-everything");
    let second = format!(
        "DELETE {delete} HTTP/1.1\r\nHost: {authority}\r\nProxy-Authorization: {creds}\r\nConnection: close\r\n\r\n"
    );
    let _ = io.write_all(second.as_bytes()).await;
    format!("{status}\n{head}{body}{}", read_all(io).await)
}

#[tokio::test]
async fn curl_http2_over_plain_http_gets_no_h2c_pipe() {
    // curl --http2 offers `Upgrade: h2c` on its own for http:// URLs.
    let raw = RawUpstream::start_plain().await;
    let proxy = TestProxy::start(&standard_config(&raw, "", "")).await;
    let url = format!("http://api.acme.test:{}/upgrade", raw.addr.port());
    let out = Command::new("curl")
        .args(["-sS", "-i", "--http2", "--max-time", "20", "-x", &proxy.proxy_url("acme", ACME_TOKEN), &url])
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("no upgrade"), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let received = String::from_utf8_lossy(&raw.received()).to_ascii_lowercase();
    assert!(!received.contains("upgrade:") && !received.contains("http2-settings"), "{received}");
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn websocket_frames_are_scrubbed_down_and_checked_up() {
    let upstream = Upstream::start(Protocols::Both).await;
    let proxy = TestProxy::start(&standard_config(&upstream, "", "")).await;
    let ca = proxy.ca_pem();
    let port = upstream.port();
    let auth = bearer();
    let open = |path: &'static str| {
        let (ca, auth) = (ca.clone(), auth.clone());
        let addr = proxy.addr();
        async move {
            ws::connect(addr, ("acme", ACME_TOKEN), "api.acme.test", port, path, &[&ca], &[("authorization", &auth)])
                .await
                .unwrap()
                .0
        }
    };

    // The key back as a fragmented text message, in a binary message, in a
    // ping and in the close reason: each arrives scrubbed.
    let mut socket = open("/ws-leak").await;
    let text = ws::next_data(&mut socket).await.unwrap();
    assert_eq!(text, Message::text(auth.clone()), "the fragmented echo maps back to what the agent sent");
    let Some(Message::Binary(binary)) = ws::next_data(&mut socket).await else { panic!("no binary message") };
    assert_clean("binary frame", &String::from_utf8_lossy(&binary));
    assert!(binary.starts_with(&[0, 1, 2]) && binary.ends_with(&[0xff]));
    socket.send(Message::text(format!("mine: {ACME_PLACEHOLDER}"))).await.unwrap();
    let mut pings = Vec::new();
    let echoed = loop {
        match socket.next().await.unwrap().unwrap() {
            Message::Ping(p) => pings.push(p),
            m @ Message::Text(_) => break m,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(echoed, Message::text(format!("mine: {ACME_PLACEHOLDER}")), "the route's own placeholder is data");
    assert_eq!(pings.len(), 1);
    assert_clean("ping", &String::from_utf8_lossy(&pings[0]));
    socket.send(Message::text("bye")).await.unwrap();
    let close = ws::next_close(&mut socket).await.expect("no close frame");
    assert_clean("close reason", close.reason.as_str());
    assert!(close.reason.starts_with("bye "), "{close:?}");
    while let Some(Ok(_)) = socket.next().await {}
    let r = record(&proxy, "/ws-leak").await;
    assert_eq!((r["status"].as_u64(), r["complete"].as_bool()), (Some(101), Some(true)), "{r}");
    assert!(r["redactions"].as_u64().unwrap() >= 4, "{r}");
    assert_eq!(r["secret_exposed"], false);

    // Another tenant's placeholder, and another route's: the socket is
    // closed (1008) and the message never reaches the upstream.
    for (placeholder, code) in [(BETA_PLACEHOLDER, "wrong_tenant"), (ACME_IP_PLACEHOLDER, "placeholder_host_mismatch")]
    {
        let mut socket = open("/ws").await;
        socket.send(Message::text("hello")).await.unwrap();
        assert_eq!(ws::next_data(&mut socket).await, Some(Message::text("hello")));
        socket.send(Message::binary(format!("{{\"key\":\"{placeholder}\"}}").into_bytes())).await.unwrap();
        let close = ws::next_close(&mut socket).await.expect("not closed");
        assert_eq!((u16::from(close.code), close.reason.as_str()), (1008, format!("airlock: {code}").as_str()));
        assert!(!upstream.seen().iter().any(|s| s.header("message").is_some_and(|m| m.contains(placeholder))));
        let audit = proxy.audit_lines();
        let r = audit.iter().rev().find(|l| l["path"] == "/ws").unwrap();
        assert_eq!(
            (r["decision"].as_str(), r["code"].as_str(), r["complete"].as_bool()),
            (Some("deny"), Some(code), Some(false))
        );
    }
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn websocket_bursts_both_ways_never_stall_the_relay() {
    // The agent writes without waiting while the upstream echoes: the relay
    // must read each side while it writes to the other, or both sides'
    // buffers fill and everything stops.
    let upstream = Upstream::start(Protocols::Http1).await;
    let proxy = TestProxy::start(&standard_config(&upstream, "", "")).await;
    let (socket, _) = ws::connect(
        proxy.addr(),
        ("acme", ACME_TOKEN),
        "api.acme.test",
        upstream.port(),
        "/ws",
        &[&proxy.ca_pem()],
        &[],
    )
    .await
    .unwrap();
    let (mut tx, mut rx) = socket.split();
    let (count, size) = (256usize, 64 * 1024);
    let writer = tokio::spawn(async move {
        for i in 0..count {
            tx.send(Message::binary(vec![(i % 251) as u8; size])).await.unwrap();
        }
        tx
    });
    let echoed = tokio::time::timeout(Duration::from_secs(60), async {
        let mut n = 0;
        while n < count {
            match rx.next().await {
                Some(Ok(Message::Binary(b))) => {
                    assert_eq!((b.len(), b[0]), (size, (n % 251) as u8));
                    n += 1;
                }
                Some(Ok(_)) => {}
                other => panic!("ended after {n}: {other:?}"),
            }
        }
        n
    })
    .await;
    assert_eq!(echoed.expect("the relay stalled"), count);
    let mut tx = writer.await.unwrap();
    tx.close().await.unwrap();
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn websocket_messages_are_bounded() {
    let upstream = Upstream::start(Protocols::Http1).await;
    let proxy =
        TestProxy::start(&standard_config(&upstream, "", "\n[limits]\nmax_websocket_message = \"4KiB\"\n")).await;
    let (mut socket, _) = ws::connect(
        proxy.addr(),
        ("acme", ACME_TOKEN),
        "api.acme.test",
        upstream.port(),
        "/ws",
        &[&proxy.ca_pem()],
        &[],
    )
    .await
    .unwrap();
    socket.send(Message::text("x".repeat(4000))).await.unwrap();
    assert_eq!(ws::next_data(&mut socket).await, Some(Message::text("x".repeat(4000))));
    socket.send(Message::text("y".repeat(5000))).await.unwrap();
    let close = ws::next_close(&mut socket).await.expect("not closed");
    assert_eq!(u16::from(close.code), 1009, "{close:?}");
    assert!(!upstream.seen().iter().any(|s| s.header("message").is_some_and(|m| m.starts_with('y'))));
    assert_eq!(record(&proxy, "/ws").await["complete"], false);
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn unscrubbed_websockets_are_audited_as_exposing_the_secret() {
    // The route's danger opt-in passes frames unchanged; the record says
    // the key reached the agent.
    let upstream = Upstream::start(Protocols::Http1).await;
    let config = standard_config(&upstream, "", "").replacen(
        "methods = [\"GET\", \"HEAD\", \"OPTIONS\", \"POST\"]",
        "methods = [\"GET\", \"HEAD\", \"OPTIONS\", \"POST\"]\ndanger_unscrubbed_websocket = true",
        1,
    );
    let proxy = TestProxy::start(&config).await;
    let auth = bearer();
    let (mut socket, _) = ws::connect(
        proxy.addr(),
        ("acme", ACME_TOKEN),
        "api.acme.test",
        upstream.port(),
        "/ws-leak",
        &[&proxy.ca_pem()],
        &[("authorization", &auth)],
    )
    .await
    .unwrap();
    let Some(Message::Text(text)) = ws::next_data(&mut socket).await else { panic!("no text") };
    assert_eq!(text.as_str(), format!("Bearer {ACME_SECRET}"), "passed unscrubbed, as the route asked");
    socket.close(None).await.unwrap();
    while let Some(Ok(_)) = socket.next().await {}
    let r = record(&proxy, "/ws-leak").await;
    assert_eq!(r["secret_exposed"], true, "{r}");
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn websocket_refusals_from_the_upstream() {
    // A 101 accepting an extension airlock did not offer is refused.
    let raw = RawUpstream::start().await;
    let proxy = TestProxy::start(&standard_config(&raw, "", "")).await;
    let err = ws::connect(
        proxy.addr(),
        ("acme", ACME_TOKEN),
        "api.acme.test",
        raw.addr.port(),
        "/ws-extension",
        &[&proxy.ca_pem()],
        &[("authorization", &bearer())],
    )
    .await
    .unwrap_err();
    let ws::tungstenite::Error::Http(resp) = err else { panic!("{err:?}") };
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers()["x-airlock-denied"], "unredactable_body");
    assert_clean("refusal", &String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()));
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn plain_http_never_carries_an_injected_secret() {
    let raw = RawUpstream::start_plain().await;
    let proxy = TestProxy::start(&standard_config(&raw, "", "")).await;
    let port = raw.addr.port();
    let curl = |headers: Vec<String>| {
        let url = format!("http://api.acme.test:{port}/x");
        let proxy_url = proxy.proxy_url("acme", ACME_TOKEN);
        async move {
            let mut cmd = Command::new("curl");
            cmd.args(["-sS", "-i", "--max-time", "20", "-x", &proxy_url]);
            for h in &headers {
                cmd.args(["-H", h]);
            }
            let out = cmd.arg(&url).env_remove("NO_PROXY").env_remove("no_proxy").output().await.unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };
    for header in [format!("Authorization: {}", bearer()), format!("X-Api-Key: {ACME_PLACEHOLDER}")] {
        let text = curl(vec![header]).await;
        assert!(text.starts_with("HTTP/1.1 403"), "{text}");
        assert!(text.contains("insecure_upstream") && text.contains("https://api.acme.test"), "{text}");
    }
    // Basic credentials carrying the placeholder too.
    let text = curl(vec![format!("Authorization: {}", client::basic_auth(ACME_PLACEHOLDER, "x"))]).await;
    assert!(text.contains("insecure_upstream"), "{text}");
    assert_eq!(raw.connections(), 0, "refused before any upstream connection");
    // Without a placeholder, plain HTTP keeps its policy.
    let text = curl(vec![]).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(!String::from_utf8_lossy(&raw.received()).contains(ACME_SECRET));
    let denied = proxy.audit_lines().into_iter().filter(|r| r["code"] == "insecure_upstream").count();
    assert_eq!(denied, 3);
    proxy.proxy.shutdown().await;

    // A route's danger opt-in allows cleartext to a private address.
    let config = standard_config(&raw, "", "").replacen(
        "env = \"ACME_API_KEY\"",
        "env = \"ACME_API_KEY\"\ndanger_plaintext_private_upstream = true",
        1,
    );
    let proxy = TestProxy::start(&config).await;
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-x", &proxy.proxy_url("acme", ACME_TOKEN)])
        .args(["-H", &format!("X-Api-Key: {ACME_PLACEHOLDER}")])
        .arg(format!("http://api.acme.test:{port}/opted-in"))
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok");
    assert!(String::from_utf8_lossy(&raw.received()).contains(&format!("x-api-key: {ACME_SECRET}")));
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn connect_inside_an_intercepted_tunnel_is_refused() {
    let upstream = Upstream::start(Protocols::Http1).await;
    let proxy = TestProxy::start(&standard_config(&upstream, "", "")).await;
    let port = upstream.port();
    let authority = format!("api.acme.test:{port}");
    for target in [authority.clone(), format!("other.test:{port}")] {
        let reply = client::connect(proxy.addr(), &authority, Some(("acme", ACME_TOKEN))).await.unwrap();
        let mut io = client::tls(reply.stream, "api.acme.test", &[&proxy.ca_pem()], &[b"http/1.1"]).await.unwrap();
        let req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nAuthorization: {}\r\n\r\n", bearer());
        io.write_all(req.as_bytes()).await.unwrap();
        let (status, head, _) = client::read_response_head(&mut io).await.unwrap();
        assert!(status == 403 || status == 421, "{target}: {head}");
    }
    assert_eq!(upstream.connections(), 0);
    proxy.proxy.shutdown().await;
}

/// A proxy whose acme key is `key` (instead of the standard one).
async fn proxy_with_key(upstream: &impl Origin, key: &str) -> TestProxy {
    let home = TempHome::new("key");
    store_standard_secrets(&home.path);
    let store = airlock_policy::secrets::Store::new(&home.path);
    store.set("acme_key", &airlock_policy::secrets::SecretValue::new(key.as_bytes().to_vec()).unwrap()).unwrap();
    let running = start_in(&home.path, &standard_config(upstream, "", "")).await;
    TestProxy { home, proxy: running }
}

#[tokio::test]
async fn airlock_never_quotes_a_secret_from_the_upstream() {
    // A mixed-case key, echoed by hostile upstreams in other letter case
    // where the text is case-insensitive (and so gets case-folded): in a
    // certificate's names, and as a transfer coding. The scrubber matches
    // exact bytes, so airlock must not quote such text at all.
    let key = "Sk-Live-Acme-0123456789ABCDEF";
    register_secret(key);
    let lower = key.to_ascii_lowercase();
    let name = format!("{lower}.test");
    let upstream = Upstream::start_with_names(Protocols::Http1, &[&name]).await;
    let proxy = proxy_with_key(&upstream, key).await;
    let req = client::get("api.acme.test", upstream.port(), "/x", &[("authorization", &bearer())], Http::H1);
    let ca = proxy.ca_pem();
    let reply =
        client::request(proxy.addr(), ("acme", ACME_TOKEN), "api.acme.test", upstream.port(), &[&ca], Http::H1, req)
            .await
            .unwrap();
    assert_eq!(reply.status, 502);
    let text = reply.text();
    assert!(text.contains("upstream_tls_failed") && text.contains("not valid for this host name"), "{text}");
    assert!(!text.to_ascii_lowercase().contains(&lower), "{text}");
    proxy.proxy.shutdown().await;

    let raw = RawUpstream::start().await;
    let proxy = proxy_with_key(&raw, key).await;
    let (status, _, body, _) = get(&proxy, raw.addr.port(), "/te-key", Http::H1).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("unredactable_body") && !body.to_ascii_lowercase().contains(&lower), "{body}");
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn logs_at_trace_never_quote_what_peers_send() {
    // A real `airlock serve` at RUST_LOG=trace relaying a WebSocket whose
    // upstream sends the key back (text, binary, ping, close reason):
    // libraries' debug and trace output would quote those bytes.
    let upstream = Upstream::start(Protocols::Http1).await;
    let home = TempHome::new("trace-log");
    store_standard_secrets(&home.path);
    std::fs::write(home.path.join("airlock.toml"), standard_config(&upstream, "", "")).unwrap();
    let serve = Served::start(&home.path, "trace").await;
    let ca = std::fs::read_to_string(home.path.join("ca.pem")).unwrap();
    let auth = bearer();
    let (mut socket, _) = ws::connect(
        serve.addr,
        ("acme", ACME_TOKEN),
        "api.acme.test",
        upstream.port(),
        "/ws-leak",
        &[&ca],
        &[("authorization", &auth)],
    )
    .await
    .unwrap();
    assert!(ws::next_data(&mut socket).await.is_some());
    socket.send(Message::text("bye")).await.unwrap();
    while let Some(Ok(_)) = socket.next().await {}
    assert!(wait_for(Duration::from_secs(5), || serve.log().contains("WebSocket closed")).await, "{}", serve.log());
    airlock_tests::assert_no_secret("serve's trace log", &serve.log(), &[ACME_SECRET]);
}

#[tokio::test]
async fn placeholders_in_request_trailers_and_header_names_are_checked() {
    let upstream = Upstream::start(Protocols::Http1).await;
    let proxy = TestProxy::start(&standard_config(&upstream, "", "")).await;
    let port = upstream.port();
    let authority = format!("api.acme.test:{port}");
    let auth = bearer();
    let requests = [
        // Another tenant's placeholder in a trailer field, and this route's
        // own (never injected there).
        (
            format!(
                "POST /trailer HTTP/1.1\r\nHost: {authority}\r\nAuthorization: {auth}\r\nTransfer-Encoding: chunked\r\n\
                 Trailer: X-T\r\n\r\n5\r\nhello\r\n0\r\nX-T: {BETA_PLACEHOLDER}\r\n\r\n"
            ),
            "wrong_tenant",
        ),
        (
            format!(
                "POST /trailer HTTP/1.1\r\nHost: {authority}\r\nAuthorization: {auth}\r\nTransfer-Encoding: chunked\r\n\
                 Trailer: X-T\r\n\r\n5\r\nhello\r\n0\r\nX-T: Bearer {ACME_PLACEHOLDER}\r\n\r\n"
            ),
            "placeholder_host_mismatch",
        ),
        // A placeholder as a header's name (HTTP lower-cases it).
        (format!("GET /name HTTP/1.1\r\nHost: {authority}\r\n{BETA_PLACEHOLDER}: 1\r\n\r\n"), "wrong_tenant"),
    ];
    for (request, code) in requests {
        let reply = client::connect(proxy.addr(), &authority, Some(("acme", ACME_TOKEN))).await.unwrap();
        let mut io = client::tls(reply.stream, "api.acme.test", &[&proxy.ca_pem()], &[b"http/1.1"]).await.unwrap();
        io.write_all(request.as_bytes()).await.unwrap();
        let (status, head, body) =
            tokio::time::timeout(Duration::from_secs(10), client::read_response_head(&mut io)).await.unwrap().unwrap();
        assert_eq!(status, 403, "{head}{body}");
        assert!(body.contains(code), "{body}");
    }
    let codes: Vec<_> = proxy.audit_lines().iter().map(|r| r["code"].as_str().unwrap_or("").to_owned()).collect();
    assert_eq!(codes, ["wrong_tenant", "placeholder_host_mismatch", "wrong_tenant"]);
    assert!(upstream.seen().iter().all(|s| s.path != "/name"), "a refused head never goes upstream");
    proxy.proxy.shutdown().await;
}

/// gRPC-Web's text form is base64 that servers (Envoy's grpc_web filter)
/// encode and pad piece by piece, so a key cut between two pieces is in no
/// base64 alignment the redactor knows: airlock cannot scan it, so it
/// refuses it (`unredactable_body`) rather than pass it.
#[tokio::test]
async fn grpc_web_text_is_refused_as_unscannable() {
    use base64::Engine;
    let upstream = RawUpstream::start().await;
    let proxy = TestProxy::start(&standard_config(&upstream, "", "")).await;
    // Every spelling grpc-web's own client reads as text.
    for path in [
        "/grpc-web-text",
        "/grpc-web-text/textual",
        "/grpc-web-text/dash",
        "/grpc-web-text/list",
        "/grpc-web-text/upper",
    ] {
        let headers = ["-X", "POST", "-H", "content-type: application/grpc-web-text"];
        let (_, text) = curl(&proxy, upstream.addr.port(), path, &headers).await;
        assert_clean("the grpc-web-text answer", &text);
        // Decoded the way a grpc-web client decodes it: padded piece by piece.
        let body = text.rsplit("\r\n\r\n").next().unwrap_or("");
        let mut decoded = Vec::new();
        for piece in body.trim().split('=').filter(|p| !p.is_empty()) {
            if let Ok(bytes) = base64::engine::general_purpose::STANDARD_NO_PAD.decode(piece) {
                decoded.extend_from_slice(&bytes);
            }
        }
        assert_clean(&format!("the decoded answer of {path}"), &String::from_utf8_lossy(&decoded));
        assert!(text.contains("x-airlock-denied: unredactable_body"), "{path}: {text}");
        assert_eq!(record(&proxy, path).await["code"], "unredactable_body", "{path}");
    }
}
