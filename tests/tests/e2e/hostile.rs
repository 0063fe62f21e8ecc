//! Hostile clients and upstreams: raw bytes over the proxy connection and
//! inside intercepted TLS, oversized and malformed requests, slow and idle
//! agents, upstreams that hang, drip or send a decompression bomb. Each
//! gets the documented status or close within its timeout, nothing reaches
//! the upstream that should not, and the proxy serves the next good
//! request.

use std::time::Duration;

use airlock_tests::client::{self, Http};
use airlock_tests::upstream::Protocols;
use airlock_tests::ws::tungstenite::Message;
use airlock_tests::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// The standard config with tight limits, so tests need not wait long.
fn config(upstream: &impl Origin) -> String {
    standard_config(
        upstream,
        "",
        "\n[limits]\nmax_request_body = \"4KiB\"\nheader_read_timeout = \"1s\"\nidle_timeout = \"1s\"\n\
         upstream_response_timeout = \"1s\"\nupstream_read_timeout = \"1s\"\n",
    )
}

/// An intercepted HTTP/1.1 connection to `api.acme.test`, as raw TLS.
async fn intercepted(
    proxy: &TestProxy,
    upstream: &impl Origin,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let authority = format!("api.acme.test:{}", upstream.addr().port());
    let reply = client::connect(proxy.addr(), &authority, Some(("acme", ACME_TOKEN))).await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.head);
    client::tls(reply.stream, "api.acme.test", &[&proxy.ca_pem()], &[b"http/1.1"]).await.unwrap()
}

/// Reads one response (head and a `Content-Length` body) or reports how
/// the connection ended. Gives up after 10 s.
async fn read_reply(stream: &mut (impl AsyncRead + Unpin)) -> Result<(u16, String, String), String> {
    tokio::time::timeout(Duration::from_secs(10), client::read_response_head(stream))
        .await
        .map_err(|_| "no answer within 10s".to_owned())?
        .map_err(|e| e.to_string())
}

/// Sends raw bytes on a fresh intercepted connection and reads the answer.
async fn raw(proxy: &TestProxy, upstream: &impl Origin, bytes: &[u8]) -> Result<(u16, String, String), String> {
    let mut tls = intercepted(proxy, upstream).await;
    tls.write_all(bytes).await.map_err(|e| e.to_string())?;
    read_reply(&mut tls).await
}

fn head(port: u16, extra: &str) -> String {
    format!(
        "GET /echo HTTP/1.1\r\nHost: api.acme.test:{port}\r\nAuthorization: Bearer {ACME_PLACEHOLDER}\r\n{extra}\r\n"
    )
}

/// The proxy still answers a good request, with the key injected.
async fn still_serves(proxy: &TestProxy, upstream: &Upstream) {
    let auth = format!("Bearer {ACME_PLACEHOLDER}");
    let req = client::get("api.acme.test", upstream.port(), "/echo", &[("authorization", &auth)], Http::H1);
    let ca = proxy.ca_pem();
    let reply =
        client::request(proxy.addr(), ("acme", ACME_TOKEN), "api.acme.test", upstream.port(), &[&ca], Http::H1, req)
            .await
            .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(upstream.seen().last().unwrap().header("authorization"), Some(format!("Bearer {ACME_SECRET}").as_str()));
}

fn assert_denied(reply: &Result<(u16, String, String), String>, status: u16, code: &str) {
    let (got, head, body) = reply.as_ref().unwrap_or_else(|e| panic!("want {status} {code}, got {e}"));
    assert_eq!(*got, status, "{head}{body}");
    let json: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(json["error"]["code"], code, "{body}");
    assert!(head.to_ascii_lowercase().contains(&format!("x-airlock-denied: {code}")), "{head}");
}

#[tokio::test]
async fn oversized_heads_are_refused_with_431() {
    let upstream = Upstream::start(Protocols::Both).await;
    let proxy = TestProxy::start(&config(&upstream)).await;
    let port = upstream.port();

    // Too many fields (over 100, under hyper's hard cap of twice that).
    let many: String = (0..150).map(|i| format!("x-h{i}: v\r\n")).collect();
    assert_denied(&raw(&proxy, &upstream, head(port, &many).as_bytes()).await, 431, "request_too_large");
    // Too many bytes (over 64 KiB, under the hard cap).
    let big = format!("x-big: {}\r\n", "a".repeat(80 * 1024));
    assert_denied(&raw(&proxy, &upstream, head(port, &big).as_bytes()).await, 431, "request_too_large");
    // Absurdly many bytes: hyper's own cap answers (a bare 431) or closes.
    let huge = format!("x-big: {}\r\n", "a".repeat(1 << 20));
    match raw(&proxy, &upstream, head(port, &huge).as_bytes()).await {
        Ok((status, ..)) => assert_eq!(status, 431),
        Err(e) => assert!(e.contains("closed") || e.contains("error"), "{e}"),
    }
    // The same limits apply to the proxy request itself.
    let mut stream = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let connect =
        format!("CONNECT api.acme.test:{0} HTTP/1.1\r\nHost: api.acme.test:{0}\r\n{many}\r\n", upstream.port());
    stream.write_all(connect.as_bytes()).await.unwrap();
    assert_denied(&read_reply(&mut stream).await, 431, "request_too_large");

    // Over HTTP/2 the same limits give the same JSON denial, on a stream
    // of a connection that goes on serving.
    let ca = proxy.ca_pem();
    let mut h2 =
        client::open(proxy.addr(), ("acme", ACME_TOKEN), "api.acme.test", port, &[&ca], Http::H2).await.unwrap();
    let auth = format!("Bearer {ACME_PLACEHOLDER}");
    let many: Vec<(String, &str)> = (0..150).map(|i| (format!("x-h{i}"), "v")).collect();
    let big = "a".repeat(80 * 1024);
    let cases: [Vec<(&str, &str)>; 2] =
        [many.iter().map(|(n, v)| (n.as_str(), *v)).collect(), vec![("x-big", big.as_str())]];
    for extra in cases {
        let mut headers = vec![("authorization", auth.as_str())];
        headers.extend(extra);
        let resp = h2.send(client::get("api.acme.test", port, "/echo", &headers, Http::H2)).await.unwrap();
        assert_eq!(resp.status(), 431);
        assert_eq!(resp.headers()["x-airlock-denied"], "request_too_large");
        let body = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"]["code"], "request_too_large");
    }
    let resp = h2.send(client::get("api.acme.test", port, "/echo", &[("authorization", &auth)], Http::H2)).await;
    assert_eq!(resp.unwrap().status(), 200, "the HTTP/2 connection still serves");

    assert_eq!(upstream.seen().len(), 1, "nothing oversized went upstream");
    still_serves(&proxy, &upstream).await;
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn bodies_over_the_route_limit_are_refused_with_413() {
    let upstream = Upstream::start(Protocols::Both).await;
    let proxy = TestProxy::start(&config(&upstream)).await;
    let port = upstream.port();
    let post = |extra: &str, body: &str| {
        format!(
            "POST /echo HTTP/1.1\r\nHost: api.acme.test:{port}\r\nAuthorization: Bearer {ACME_PLACEHOLDER}\r\n{extra}\r\n{body}"
        )
    };
    // Declared too large: refused before anything goes upstream.
    let reply = raw(&proxy, &upstream, post("Content-Length: 5000\r\n", "").as_bytes()).await;
    assert_denied(&reply, 413, "request_too_large");
    assert!(upstream.seen().is_empty());
    // Chunked, growing past the limit as it streams: refused too. Its head
    // may already have gone upstream (airlock streams bodies rather than
    // buffering them), but its body is cut off with a reset, never ended.
    let chunk = "a".repeat(1000);
    let chunks: String = (0..6).map(|_| format!("3e8\r\n{chunk}\r\n")).collect::<String>() + "0\r\n\r\n";
    let reply = raw(&proxy, &upstream, post("Transfer-Encoding: chunked\r\n", &chunks).as_bytes()).await;
    assert_denied(&reply, 413, "request_too_large");
    // Under the limit: forwarded whole.
    let reply = raw(&proxy, &upstream, post("Content-Length: 3000\r\n", &"b".repeat(3000)).as_bytes()).await.unwrap();
    assert_eq!(reply.0, 200, "{}", reply.1);
    assert_eq!(upstream.seen().last().unwrap().method, "POST");
    still_serves(&proxy, &upstream).await;
    let audit = proxy.audit_lines();
    let refused: Vec<_> = audit.iter().filter(|l| l["code"] == "request_too_large" && l["status"] == 413).collect();
    assert_eq!(refused.len(), 2);
    // A refused request was not carried through: its record counts no body
    // bytes, however many were read before the refusal.
    assert!(refused.iter().all(|l| l["bytes_up"] == 0), "{refused:?}");
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn malformed_and_smuggling_requests_never_reach_the_upstream() {
    let upstream = Upstream::start(Protocols::Both).await;
    let proxy = TestProxy::start(&config(&upstream)).await;
    let port = upstream.port();
    let cases: [(&str, String); 5] = [
        // Content-Length and Transfer-Encoding together: a smuggling classic.
        (
            "CL and TE",
            format!(
                "POST /echo HTTP/1.1\r\nHost: api.acme.test:{port}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: api.acme.test:{port}\r\n\r\n"
            ),
        ),
        ("two Content-Lengths", head(port, "Content-Length: 0\r\nContent-Length: 5\r\n")),
        ("obs-fold", head(port, "X-Folded: a\r\n  b\r\n")),
        ("bare LF in a field", head(port, "X-Bad: a\nb\r\n")),
        ("two Host headers", head(port, &format!("Host: api.acme.test:{port}\r\n"))),
    ];
    for (what, bytes) in cases {
        let reply = raw(&proxy, &upstream, bytes.as_bytes()).await;
        let (status, head, body) = reply.unwrap_or_else(|e| panic!("{what}: {e}"));
        if what == "CL and TE" {
            // RFC 9112 §6.1: Transfer-Encoding wins, and the connection
            // closes after the response, so the bytes after the chunked
            // body are never read as a second request.
            assert_eq!(status, 200, "{head}");
            assert!(head.to_ascii_lowercase().contains("connection: close"), "{head}");
        } else {
            assert_eq!(status, 400, "{what}: {head}{body}");
        }
        assert!(upstream.seen().iter().all(|s| s.path != "/smuggled"), "{what}: a second request was smuggled through");
    }
    // Whatever was answered, no smuggled request and no request with two
    // Host headers went upstream.
    assert!(upstream.seen().iter().all(|s| s.path == "/echo"));
    still_serves(&proxy, &upstream).await;
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn slow_and_idle_agents_are_closed() {
    let upstream = Upstream::start(Protocols::Both).await;
    let proxy = TestProxy::start(&config(&upstream)).await;
    let port = upstream.port();

    // Slowloris on the proxy connection: half a head, then nothing.
    let mut stream = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    stream.write_all(b"CONNECT api.acme.test:1 HTTP/1.1\r\nHost: a").await.unwrap();
    let started = std::time::Instant::now();
    let reply = read_reply(&mut stream).await;
    assert!(started.elapsed() < Duration::from_secs(5), "closed after the 1s header timeout");
    assert!(matches!(&reply, Err(e) if e.contains("closed") || e.contains("error")) || matches!(reply, Ok((408, ..))));

    // Slowloris inside the tunnel.
    let mut tls = intercepted(&proxy, &upstream).await;
    tls.write_all(b"GET /echo HTTP/1.1\r\nX-Slow: ").await.unwrap();
    let started = std::time::Instant::now();
    let reply = read_reply(&mut tls).await;
    assert!(started.elapsed() < Duration::from_secs(5), "{reply:?}");
    assert!(reply.is_err() || matches!(reply, Ok((408, ..))), "{reply:?}");

    // An idle keep-alive connection, after one good request.
    let mut tls = intercepted(&proxy, &upstream).await;
    tls.write_all(head(port, "").as_bytes()).await.unwrap();
    assert_eq!(read_reply(&mut tls).await.unwrap().0, 200);
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the idle connection was never closed");
    assert!(started.elapsed() >= Duration::from_millis(900), "closed before the idle timeout");

    // An idle HTTP/2 connection whose client ignores GOAWAY (and the PING
    // after it): dropped a little after the idle timeout, so it cannot hold
    // its max_connections slot for ever.
    let authority = format!("api.acme.test:{port}");
    let reply = client::connect(proxy.addr(), &authority, Some(("acme", ACME_TOKEN))).await.unwrap();
    let mut h2 = client::tls(reply.stream, "api.acme.test", &[&proxy.ca_pem()], &[b"h2"]).await.unwrap();
    // The connection preface and an empty SETTINGS frame; then only reads.
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").await.unwrap();
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), h2.read_to_end(&mut sink)).await;
    assert!(closed.is_ok(), "an HTTP/2 client ignoring GOAWAY kept its idle connection");

    still_serves(&proxy, &upstream).await;
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn hanging_dripping_and_bombing_upstreams() {
    let upstream = Upstream::start(Protocols::Both).await;
    let proxy = TestProxy::start(&config(&upstream)).await;
    let port = upstream.port();

    // No response head within upstream_response_timeout: 504.
    let reply = raw(&proxy, &upstream, head(port, "").replace("/echo", "/hang").as_bytes()).await;
    assert_denied(&reply, 504, "upstream_timeout");

    // A body that stops mid-way: the stream is aborted, never ended cleanly.
    let (whole, text) = fetch_to_end(&mut intercepted(&proxy, &upstream).await, port, "/drip", 10).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(!whole, "a silent upstream must not look like a whole body: {text}");

    // A decompression bomb: aborted once it outgrows the ratio.
    let (whole, text) = fetch_to_end(&mut intercepted(&proxy, &upstream).await, port, "/bomb", 20).await;
    assert!(text.len() < 16 << 20, "the bomb was cut off early ({} bytes sent)", text.len());
    assert!(!whole, "an aborted body must not end cleanly");

    // The audit records each: a timeout, and two incomplete streams.
    let audit = proxy.audit_lines();
    let by_path = |p: &str| audit.iter().find(|l| l["path"] == p).cloned().unwrap_or_default();
    assert_eq!(by_path("/hang")["code"], "upstream_timeout");
    assert_eq!(by_path("/drip")["complete"], false, "{audit:?}");
    assert_eq!(by_path("/bomb")["complete"], false, "{audit:?}");
    still_serves(&proxy, &upstream).await;
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn a_panic_in_one_connection_leaves_the_proxy_serving() {
    airlock::fault::enable();
    let upstream = Upstream::start(Protocols::Both).await;
    let proxy = TestProxy::start(&config(&upstream)).await;
    let port = upstream.port();
    // A keep-alive connection with a request in flight elsewhere, to show
    // other connections live on.
    let mut other = intercepted(&proxy, &upstream).await;
    let reply = raw(&proxy, &upstream, head(port, "x-airlock-fault: panic\r\n").as_bytes()).await;
    assert!(reply.is_err(), "the panicking connection is dropped: {reply:?}");
    other.write_all(head(port, "").as_bytes()).await.unwrap();
    assert_eq!(read_reply(&mut other).await.unwrap().0, 200, "another open connection still works");
    still_serves(&proxy, &upstream).await;
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn upstream_certificates_that_do_not_verify_are_refused() {
    // An upstream whose CA airlock does not trust, one whose leaf names
    // another host, and one whose leaf has expired: each `502
    // upstream_tls_failed` with the reason, never a fallback to unverified
    // TLS.
    let trusted = Upstream::start(Protocols::Both).await;
    let untrusted = Upstream::start(Protocols::Both).await;
    let wrong_name = Upstream::start_with_names(Protocols::Both, &["elsewhere.test"]).await;
    let expired = Upstream::start_expired(Protocols::Both).await;
    let swap_ca =
        |c: String| c.replace(&untrusted.ca_path.display().to_string(), &trusted.ca_path.display().to_string());
    for (upstream, config, reason) in [
        (&untrusted, swap_ca(standard_config(&untrusted, "", "")), "UnknownIssuer"),
        (&wrong_name, standard_config(&wrong_name, "", ""), "not valid for this host name"),
        (&expired, standard_config(&expired, "", ""), "certificate expired"),
    ] {
        let proxy = TestProxy::start(&config).await;
        let port = upstream.port();
        let reply = raw(&proxy, upstream, head(port, "").as_bytes()).await;
        assert_denied(&reply, 502, "upstream_tls_failed");
        let (_, _, body) = reply.unwrap();
        assert!(body.contains(reason), "{body}");
        assert!(upstream.seen().is_empty(), "no request went over the unverified connection");
        let audit = proxy.audit_lines();
        assert_eq!(audit.last().unwrap()["code"], "upstream_tls_failed");
        proxy.proxy.shutdown().await;
    }
}

/// Sends a request for `path` on `tls` and reads until the proxy ends the
/// response or the connection, failing after `secs`: whether it ended as a
/// whole chunked body, and the bytes.
async fn fetch_to_end(
    tls: &mut (impl AsyncRead + AsyncWriteExt + Unpin),
    port: u16,
    path: &str,
    secs: u64,
) -> (bool, String) {
    let request = head(port, "Connection: close\r\n").replace("/echo", path);
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(secs), tls.read_to_end(&mut got))
        .await
        .expect("the proxy answered in time");
    let text = String::from_utf8_lossy(&got).into_owned();
    (ended.is_ok() && text.ends_with("0\r\n\r\n"), text)
}

#[tokio::test]
async fn lying_and_malformed_upstream_responses() {
    let upstream = RawUpstream::start().await;
    let proxy = TestProxy::start(&config(&upstream)).await;
    let port = upstream.addr.port();

    // A Content-Length longer than the body: the agent's stream is aborted,
    // never ended as if whole.
    let (whole, text) = fetch_to_end(&mut intercepted(&proxy, &upstream).await, port, "/short", 10).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(!whole, "a short body must not look whole: {text}");

    // Invalid chunked framing from the upstream: aborted the same way.
    let (whole, text) = fetch_to_end(&mut intercepted(&proxy, &upstream).await, port, "/bad-chunked", 10).await;
    // The body only: a random request id in the head may spell "bad".
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    assert!(!whole && !body.contains("bad"), "{text}");

    // A Content-Length shorter than what follows: the agent gets exactly the
    // declared body, and the surplus (a whole second response) is never
    // served as the answer to its next request.
    let mut tls = intercepted(&proxy, &upstream).await;
    for path in ["/long", "/next"] {
        tls.write_all(head(port, "").replace("/echo", path).as_bytes()).await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        // Done at the end of a chunked body, or of the 2-byte `ok`.
        let done =
            |g: &[u8]| g.ends_with(b"0\r\n\r\n") || (g.windows(4).any(|w| w == b"\r\n\r\n") && g.ends_with(b"ok"));
        while !done(&got) {
            let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf)).await.unwrap().unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 200"), "{path}: {text}");
        assert!(!text.contains("smuggled"), "{path}: {text}");
        let want = if path == "/long" { "hello" } else { "ok" };
        assert!(text.contains(want), "{path}: {text}");
    }

    // A head that never ends, and a header no parser accepts: 502 with the
    // reason, well within the response timeout.
    for path in ["/endless-headers", "/bad-header"] {
        let reply = raw(&proxy, &upstream, head(port, "").replace("/echo", path).as_bytes()).await;
        assert_denied(&reply, 502, "upstream_unreachable");
    }

    // The audit records each: two incomplete streams and two refusals.
    let audit = proxy.audit_lines();
    let by_path = |p: &str| audit.iter().find(|l| l["path"] == p).cloned().unwrap_or_default();
    assert_eq!(by_path("/short")["complete"], false, "{audit:?}");
    assert_eq!(by_path("/bad-chunked")["complete"], false, "{audit:?}");
    assert_eq!(by_path("/long")["complete"], true, "{audit:?}");
    assert_eq!(by_path("/endless-headers")["code"], "upstream_unreachable", "{audit:?}");
    assert_eq!(by_path("/bad-header")["code"], "upstream_unreachable", "{audit:?}");

    // And the proxy serves the next request.
    let reply = raw(&proxy, &upstream, head(port, "").replace("/echo", "/ok").as_bytes()).await;
    assert_eq!(reply.unwrap().0, 200);
    assert!(upstream.paths().contains(&"/ok".to_owned()));
    proxy.proxy.shutdown().await;
}

/// Sends `ping` every 300 ms for 1.5 s (longer than the idle timeout) and
/// expects each echoed back, then goes quiet and expects the connection
/// closed within 10 s, but not before the timeout.
async fn busy_then_idle(
    io: &mut (impl AsyncRead + AsyncWriteExt + Unpin),
    ping: &[u8],
    mut echoed: impl FnMut(&[u8]) -> bool,
) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    for _ in 0..5 {
        io.write_all(ping).await.unwrap();
        got.clear();
        while !echoed(&got) {
            let n = tokio::time::timeout(Duration::from_secs(5), io.read(&mut buf)).await.unwrap().unwrap();
            assert!(n > 0, "closed while busy: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), io.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the idle connection was never closed");
    assert!(started.elapsed() >= Duration::from_millis(600), "closed before the idle timeout");
}

#[tokio::test]
async fn idle_tunnels_and_websockets_are_closed() {
    let upstream = Upstream::start(Protocols::Http1).await;
    let limits = "\n[limits]\ntunnel_idle_timeout = \"1s\"\n";
    let proxy = TestProxy::start(&standard_config(&upstream, "deny_private_egress = false", limits)).await;
    let port = upstream.port();

    // An opaque tunnel to a host no route names, carrying keep-alive
    // requests end to end with the upstream's own certificate.
    let reply = client::connect(proxy.addr(), &format!("other.test:{port}"), Some(("acme", ACME_TOKEN))).await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.head);
    let mut tls = client::tls(reply.stream, "other.test", &[&upstream.ca.pem()], &[b"http/1.1"]).await.unwrap();
    let request = format!("GET /echo HTTP/1.1\r\nHost: other.test:{port}\r\n\r\n");
    busy_then_idle(&mut tls, request.as_bytes(), |got| got.ends_with(b"}")).await;

    // A WebSocket on an intercepted host: closed by airlock (1001) once
    // idle, never before.
    let (mut socket, resp) = airlock_tests::ws::connect(
        proxy.addr(),
        ("acme", ACME_TOKEN),
        "api.acme.test",
        port,
        "/ws",
        &[&proxy.ca_pem()],
        &[],
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 101);
    for _ in 0..5 {
        socket.send(Message::text("ping-frame")).await.unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(5), airlock_tests::ws::next_data(&mut socket)).await;
        assert_eq!(echoed.unwrap(), Some(Message::text("ping-frame")), "closed while busy");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let started = std::time::Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(10), airlock_tests::ws::next_close(&mut socket)).await;
    assert_eq!(closed.expect("the idle WebSocket was never closed").map(|f| u16::from(f.code)), Some(1001));
    assert!(started.elapsed() >= Duration::from_millis(600), "closed before the idle timeout");

    still_serves(&proxy, &upstream).await;
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn hop_by_hop_headers_are_stripped_both_ways() {
    // Agent to upstream: the connection's own headers, the ones it names,
    // and any Proxy-Authorization (here sent inside the tunnel) stay behind,
    // and nothing airlock adds carries the tenant's token.
    let upstream = Upstream::start(Protocols::Http1).await;
    let proxy = TestProxy::start(&config(&upstream)).await;
    let port = upstream.port();
    let creds = client::basic("acme", ACME_TOKEN);
    let extra = format!(
        "Connection: keep-alive, x-hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n\
         Proxy-Authorization: {creds}\r\nX-End-To-End: kept\r\n"
    );
    assert_eq!(raw(&proxy, &upstream, head(port, &extra).as_bytes()).await.unwrap().0, 200);
    let seen = upstream.seen().pop().unwrap();
    for name in ["x-hop", "keep-alive", "proxy-connection", "proxy-authorization", "via", "forwarded"] {
        assert!(seen.header(name).is_none(), "{name} reached the upstream: {:?}", seen.headers);
    }
    assert!(seen.header("connection").is_none_or(|v| !v.contains("x-hop")), "{:?}", seen.headers);
    assert_eq!(seen.header("x-end-to-end"), Some("kept"));
    assert!(seen.headers.iter().all(|(_, v)| !v.contains(ACME_TOKEN)), "{:?}", seen.headers);
    proxy.proxy.shutdown().await;

    // Upstream to agent: the same, the other way.
    let upstream = RawUpstream::start().await;
    let proxy = TestProxy::start(&config(&upstream)).await;
    let port = upstream.addr.port();
    let (status, head, _) = raw(&proxy, &upstream, head(port, "").replace("/echo", "/hop").as_bytes()).await.unwrap();
    assert_eq!(status, 200, "{head}");
    let head = head.to_ascii_lowercase();
    for name in ["x-up-hop", "keep-alive", "proxy-connection"] {
        assert!(!head.contains(&format!("\n{name}:")), "{name} reached the agent: {head}");
    }
    assert!(head.contains("\nx-end-to-end: kept"), "{head}");
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn connections_over_the_limit_wait_their_turn() {
    let upstream = Upstream::start(Protocols::Http1).await;
    let proxy = TestProxy::start(&standard_config(&upstream, "", "\n[limits]\nmax_connections = 2\n")).await;
    let port = upstream.port();
    // An intercepted connection and a WebSocket (whose relay outlives the
    // HTTP connection it upgraded) hold both slots.
    let mut held = intercepted(&proxy, &upstream).await;
    let (mut socket, _) = airlock_tests::ws::connect(
        proxy.addr(),
        ("acme", ACME_TOKEN),
        "api.acme.test",
        port,
        "/ws",
        &[&proxy.ca_pem()],
        &[],
    )
    .await
    .unwrap();
    socket.send(Message::text("first")).await.unwrap();
    assert_eq!(airlock_tests::ws::next_data(&mut socket).await, Some(Message::text("first")));
    // A third is accepted by the kernel but not served while they are open...
    let addr = proxy.addr();
    let third = tokio::spawn(async move {
        client::connect(addr, &format!("api.acme.test:{port}"), Some(("acme", ACME_TOKEN))).await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!third.is_finished(), "served beyond max_connections");
    // ...and is served as soon as the WebSocket closes.
    socket.close(None).await.unwrap();
    while let Some(Ok(_)) = socket.next().await {}
    let reply = tokio::time::timeout(Duration::from_secs(10), third).await.unwrap().unwrap().unwrap();
    assert_eq!(reply.status, 200, "{}", reply.head);
    // The connection still open works throughout.
    held.write_all(head(port, "").as_bytes()).await.unwrap();
    assert_eq!(read_reply(&mut held).await.unwrap().0, 200);
    proxy.proxy.shutdown().await;
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

/// One GET through `sender`, timed to the end of its body.
async fn timed_get(sender: &mut client::Sender, req: http::Request<http_body_util::Empty<bytes::Bytes>>) -> Duration {
    let started = std::time::Instant::now();
    let resp = sender.send(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    http_body_util::BodyExt::collect(resp.into_body()).await.unwrap();
    started.elapsed()
}

/// Each distinct injected header value has patterns of its own (the value
/// and its encodings, mapped back to what the agent sent). An agent that
/// sends many distinct large ones (the placeholder followed by random
/// text) must neither grow the proxy's memory with each nor stall the
/// other agents' requests while those patterns are built. Drives the real
/// `airlock serve`, and stops early once its memory is past the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_large_injected_headers_keep_memory_and_latency_bounded() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

    const REQUESTS: usize = 1000;
    const TAIL: usize = 16 << 10;
    const CONNECTIONS: usize = 4;
    const GROWTH_BOUND_KIB: u64 = 200 << 10;
    // New requests stop here (the old code took seconds per request).
    const DEADLINE: Duration = Duration::from_secs(45);

    let upstream = Upstream::start(Protocols::Both).await;
    let port = upstream.port();
    let home = TempHome::new("distinct-injected");
    store_standard_secrets(&home.path);
    std::fs::write(home.path.join("airlock.toml"), standard_config(&upstream, "", "")).unwrap();
    let serve = Served::start(&home.path, "warn").await;
    let ca = std::fs::read_to_string(home.path.join("ca.pem")).unwrap();
    let addr = serve.addr;

    // The unrelated request: another tenant's, on its own connection.
    let mut probe = client::open(addr, ("beta", BETA_TOKEN), "api.beta.test", port, &[&ca], Http::H1).await.unwrap();
    let beta_auth = format!("Bearer {BETA_PLACEHOLDER}");
    let probe_req = || client::get("api.beta.test", port, "/echo", &[("authorization", &beta_auth)], Http::H1);
    let mut baseline = Vec::new();
    for _ in 0..40 {
        baseline.push(timed_get(&mut probe, probe_req()).await);
    }

    // The agent's connections, each warmed up with one ordinary request.
    let mut senders = Vec::new();
    for c in 0..CONNECTIONS {
        let http = if c % 2 == 0 { Http::H1 } else { Http::H2 };
        let mut s = client::open(addr, ("acme", ACME_TOKEN), "api.acme.test", port, &[&ca], http).await.unwrap();
        let auth = format!("Bearer {ACME_PLACEHOLDER}");
        timed_get(&mut s, client::get("api.acme.test", port, "/echo", &[("authorization", &auth)], http)).await;
        senders.push((s, http));
    }
    let before = serve.rss_kib();

    let (next, done, over) =
        (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let peak = Arc::new(AtomicU64::new(before));
    let monitor = {
        let (done, over, peak, pid) = (Arc::clone(&done), Arc::clone(&over), Arc::clone(&peak), serve.pid());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                let rss: u64 = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
                    .unwrap_or(0);
                peak.fetch_max(rss, Ordering::Relaxed);
                if rss > before + GROWTH_BOUND_KIB {
                    over.store(true, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let seed = u64::from(std::process::id()) << 32 ^ std::time::UNIX_EPOCH.elapsed().unwrap().as_nanos() as u64;
    let started = std::time::Instant::now();
    let mut agents = Vec::new();
    for (mut sender, http) in senders {
        let (next, over) = (Arc::clone(&next), Arc::clone(&over));
        agents.push(tokio::spawn(async move {
            let mut sent = 0usize;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= REQUESTS || over.load(Ordering::Relaxed) || started.elapsed() > DEADLINE {
                    return sent;
                }
                let tail = random_text(seed.wrapping_add(i as u64), TAIL);
                let auth = format!("Bearer {ACME_PLACEHOLDER} {tail}");
                let req = client::get("api.acme.test", port, "/echo", &[("authorization", &auth)], http);
                let resp = sender.send(req).await.unwrap();
                assert_eq!(resp.status(), 200);
                let body = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
                let text = String::from_utf8_lossy(&body);
                // The echoed header maps back to what the agent sent.
                assert!(text.contains(&auth), "the echoed header does not map back ({} bytes)", text.len());
                for form in secret_forms(ACME_SECRET) {
                    assert!(!text.contains(&form), "a secret form leaked ({} bytes)", form.len());
                }
                sent += 1;
            }
        }));
    }
    // The unrelated request, meanwhile.
    let mut loaded = Vec::new();
    while !agents.iter().all(|a| a.is_finished()) {
        loaded.push(timed_get(&mut probe, probe_req()).await);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut sent = 0;
    for a in agents {
        sent += a.await.unwrap();
    }
    let elapsed = started.elapsed();
    done.store(true, Ordering::Relaxed);
    monitor.await.unwrap();
    let after = serve.rss_kib();
    let peak = peak.load(Ordering::Relaxed).max(after);
    let (base_median, load_median) = (median(baseline), median(loaded.clone()));
    let load_max = loaded.iter().max().copied().unwrap_or_default();
    eprintln!(
        "distinct injected headers: {sent} of {REQUESTS} requests with {TAIL}-byte tails in {elapsed:?}; proxy RSS \
         {before} KiB before, peak {peak} KiB (+{} KiB), {after} KiB after; unrelated request median {base_median:?} \
         alone, {load_median:?} under load (max {load_max:?}, {} samples)",
        peak - before,
        loaded.len()
    );
    assert!(
        !over.load(Ordering::Relaxed) && peak - before < GROWTH_BOUND_KIB,
        "the proxy's RSS grew by {} KiB after {sent} distinct injected values",
        peak - before
    );
    assert_eq!(sent, REQUESTS);
    assert!(loaded.len() >= 5, "only {} unrelated requests during the load", loaded.len());
    assert!(
        load_median < base_median * 20 + Duration::from_millis(50),
        "the unrelated request took {load_median:?} (median) under load, {base_median:?} alone"
    );
    let audit = std::fs::read_to_string(home.path.join("audit.jsonl")).unwrap();
    assert_no_secret("audit", &audit, &[ACME_SECRET, BETA_SECRET]);
    assert_no_secret("serve's log", &serve.log(), &[ACME_SECRET, BETA_SECRET]);
}
