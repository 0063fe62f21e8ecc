//! Protocol fidelity (issue 15): what works direct works through airlock.
//! Each test drives a real client (curl, or the Rust client) through the
//! real proxy to a local TLS upstream, and where it matters runs the same
//! request direct, so the two can be compared: bodiless responses keep
//! their framing headers, a reused connection the upstream closed is
//! retried, large heads pass both HTTP versions, a TLS alert is named,
//! and every content coding curl decodes, airlock decodes.

use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use airlock_tests::raw_upstream::CODED_TEXT;
use airlock_tests::upstream::{ClientAuthUpstream, Protocols};
use airlock_tests::*;
use tokio::process::Command;

fn bearer() -> String {
    format!("Bearer {ACME_PLACEHOLDER}")
}

/// What curl printed, as text, and whether it succeeded.
struct Curl {
    ok: bool,
    out: String,
    err: String,
}

impl Curl {
    fn from(out: Output) -> Curl {
        Curl {
            ok: out.status.success(),
            out: String::from_utf8_lossy(&out.stdout).into_owned(),
            err: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The status of the last response head in `-i`/`-I` output (the
    /// proxy's answer to CONNECT comes first).
    fn status(&self) -> u16 {
        let line = self.out.lines().rfind(|l| l.starts_with("HTTP/")).unwrap_or("");
        line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
    }

    /// `-i` output, lower-cased, for header checks.
    fn lower(&self) -> String {
        self.out.to_ascii_lowercase()
    }

    /// The body after the last head in `-i` output.
    fn body(&self) -> &str {
        self.out.rsplit("\r\n\r\n").next().unwrap_or("")
    }

    fn show(&self) -> String {
        format!("stdout:\n{}\nstderr:\n{}", self.out, self.err)
    }
}

/// curl through the proxy to `https://HOST:PORT{path}` with the
/// placeholder of the route to `api.acme.test`.
async fn via(proxy: &TestProxy, host: &str, port: u16, path: &str, extra: &[&str]) -> Curl {
    via_as(proxy, host, port, path, &bearer(), extra).await
}

/// curl through the proxy with `auth` as the `Authorization` value.
async fn via_as(proxy: &TestProxy, host: &str, port: u16, path: &str, auth: &str, extra: &[&str]) -> Curl {
    let out = proxy
        .curl()
        .args(["-H", &format!("Authorization: {auth}")])
        .args(extra)
        .arg(format!("https://{host}:{port}{path}"))
        .output()
        .await
        .unwrap();
    Curl::from(out)
}

/// curl direct to the upstream (no proxy), trusting its test CA.
async fn direct(upstream: &impl Origin, path: &str, extra: &[&str]) -> Curl {
    let port = upstream.addr().port();
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(upstream.ca_path())
        .args(["--resolve", &format!("api.acme.test:{port}:127.0.0.1")])
        .args(extra)
        .arg(format!("https://api.acme.test:{port}{path}"))
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("ALL_PROXY")
        .output()
        .await
        .unwrap();
    Curl::from(out)
}

/// The audit records of requests to `path`, once `n` are there.
async fn records(proxy: &TestProxy, path: &str, n: usize) -> Vec<serde_json::Value> {
    let found = || proxy.audit_lines().into_iter().filter(|l| l["path"] == path).collect::<Vec<_>>();
    assert!(
        wait_for(Duration::from_secs(5), || found().len() >= n).await,
        "want {n} records for {path}: {:?}",
        found()
    );
    found()
}

const VERSIONS: [&str; 2] = ["--http1.1", "--http2"];

#[tokio::test]
async fn head_keeps_the_upstreams_content_length() {
    require_tool("curl", "curl");
    let upstream = RawUpstream::start().await;
    let proxy = TestProxy::start(&standard_config(&upstream, "", "")).await;
    let port = upstream.addr.port();
    let want = direct(&upstream, "/head-length", &["-I"]).await;
    assert!(want.ok && want.lower().contains("content-length: 12345"), "{}", want.show());
    for version in VERSIONS {
        let got = via(&proxy, "api.acme.test", port, "/head-length", &["-I", version]).await;
        assert!(got.ok, "{version}: {}", got.show());
        assert_eq!(got.status(), 200, "{version}: {}", got.show());
        assert!(got.lower().contains("content-length: 12345"), "{version}: {}", got.show());
    }
    for record in records(&proxy, "/head-length", 2).await {
        assert_eq!(record["complete"], true, "{record}");
    }
    proxy.proxy.shutdown().await;
}

/// Answers whose framing airlock passes on as the upstream sent it (no
/// body, or one declared empty) carry a `Content-Length` an agent's client
/// accepts on either version: none on a `204` (RFC 9110 §8.6), and one
/// value where the upstream repeated it (`0, 0` is 0). An HTTP/2 agent
/// refused these with `PROTOCOL_ERROR`, where curl direct takes them.
#[tokio::test]
async fn lengths_passed_on_as_framed_are_ones_clients_accept() {
    require_tool("curl", "curl");
    let upstream = RawUpstream::start().await;
    let proxy = TestProxy::start(&standard_config(&upstream, "", "")).await;
    let port = upstream.addr.port();
    for (path, extra, status, length) in [
        ("/204-length", "-i", 204, None),
        ("/length-0-twice", "-i", 200, Some("0")),
        ("/length-0-list", "-i", 200, Some("0")),
        ("/head-length-list", "-I", 200, Some("12345")),
    ] {
        let want = direct(&upstream, path, &[extra]).await;
        assert!(want.ok && want.status() == status, "direct {path}: {}", want.show());
        for version in VERSIONS {
            let got = via(&proxy, "api.acme.test", port, path, &[extra, version]).await;
            assert!(got.ok, "{path} {version}: {}", got.show());
            assert_eq!(got.status(), status, "{path} {version}: {}", got.show());
            let lengths: Vec<String> = got
                .lower()
                .lines()
                .filter_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                .collect();
            assert_eq!(lengths, length.map(str::to_owned).into_iter().collect::<Vec<_>>(), "{path} {version}");
        }
    }
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn bodiless_responses_with_a_content_coding_pass_undecoded() {
    require_tool("curl", "curl");
    let upstream = RawUpstream::start().await;
    let proxy = TestProxy::start(&standard_config(&upstream, "", "")).await;
    let port = upstream.addr.port();
    for version in VERSIONS {
        // A HEAD answered with the coding and length of the GET it stands for.
        let got = via(&proxy, "api.acme.test", port, "/head-gzip", &["-I", version]).await;
        assert!(got.ok, "{version}: {}", got.show());
        assert_eq!(got.status(), 200, "{version}: {}", got.show());
        let head = got.lower();
        assert!(head.contains("content-encoding: gzip") && head.contains("content-length: 31"), "{}", got.show());
        // A 304 carrying the coding of the representation it validates.
        let got =
            via(&proxy, "api.acme.test", port, "/not-modified-gzip", &["-i", version, "-H", "If-None-Match: \"v1\""])
                .await;
        assert!(got.ok, "{version}: {}", got.show());
        assert_eq!(got.status(), 304, "{version}: {}", got.show());
        assert!(got.lower().contains("content-encoding: gzip"), "{}", got.show());
    }
    for path in ["/head-gzip", "/not-modified-gzip"] {
        for record in records(&proxy, path, 2).await {
            assert_eq!(record["complete"], true, "{record}");
        }
    }
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn a_pooled_connection_the_upstream_closed_is_retried_for_idempotent_requests() {
    require_tool("curl", "curl");
    let upstream = RawUpstream::start().await;
    let port = upstream.addr.port();
    let writes = format!(
        "\n[[tenants.acme.routes]]\nname = \"writes\"\nhost = \"other.test:{port}\"\nsecret = \"acme_key\"\n\
         placeholder = \"AIRLOCK_ACME_WRITE_KEY\"\nmethods = [\"PUT\", \"POST\", \"DELETE\"]\n"
    );
    let proxy = TestProxy::start(&standard_config(&upstream, "", &writes)).await;
    // Every request after the first finds a pooled connection the upstream
    // closes as the request arrives: each is resent once on a new one.
    for i in 0..4 {
        let got = via(&proxy, "api.acme.test", port, "/once", &["-i"]).await;
        assert_eq!((got.status(), got.body()), (200, "ok"), "GET {i}: {}", got.show());
    }
    let write = |method: &'static str, body: Option<&'static str>| {
        let proxy = &proxy;
        async move {
            let mut args = vec!["-i", "-X", method];
            if let Some(body) = body {
                args.extend(["--data-binary", body]);
            }
            via_as(proxy, "other.test", port, "/once", "Bearer AIRLOCK_ACME_WRITE_KEY", &args).await
        }
    };
    // PUT and DELETE are idempotent (RFC 9110 §9.2.2): a body airlock still
    // holds is sent again.
    let got = write("PUT", Some("the whole body")).await;
    assert_eq!((got.status(), got.body()), (200, "ok"), "PUT: {}", got.show());
    let got = write("DELETE", None).await;
    assert_eq!((got.status(), got.body()), (200, "ok"), "DELETE: {}", got.show());
    let put_bodies = String::from_utf8_lossy(&upstream.received()).matches("the whole body").count();
    assert!(put_bodies >= 1, "the resent PUT carried its body");
    // A POST is not: it may have been acted on, so it is answered 502 and
    // reached the upstream once.
    let before = upstream.paths().len();
    let got = write("POST", Some("do it once")).await;
    assert_eq!(got.status(), 502, "POST: {}", got.show());
    assert!(got.lower().contains("x-airlock-denied: upstream_unreachable"), "{}", got.show());
    assert!(got.body().contains("not resent"), "{}", got.show());
    assert_eq!(upstream.paths().len(), before + 1, "the POST was sent once: {:?}", upstream.paths());
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn the_upstream_pool_idle_timeout_is_configurable() {
    require_tool("curl", "curl");
    let upstream = RawUpstream::start().await;
    let port = upstream.addr.port();
    let limits = "\n[limits]\nupstream_pool_idle_timeout = \"300ms\"\n";
    let proxy = TestProxy::start(&standard_config(&upstream, "", limits)).await;
    let got = via(&proxy, "api.acme.test", port, "/once", &["-i"]).await;
    assert_eq!(got.status(), 200, "{}", got.show());
    // The idle time being tested: longer than the pool keeps a connection.
    tokio::time::sleep(Duration::from_millis(600)).await;
    // The connection that would close on this POST has left the pool: a
    // new one answers it, although a POST is never resent.
    let got = via(&proxy, "api.acme.test", port, "/once", &["-i", "-X", "POST", "--data-binary", "x"]).await;
    assert_eq!((got.status(), got.body()), (200, "ok"), "{}", got.show());
    assert_eq!(upstream.connections(), 2);
    proxy.proxy.shutdown().await;
}

/// A header in curl's `-i` output with a value of `len` bytes.
fn has_big_header(curl: &Curl, len: usize) -> bool {
    curl.lower().contains(&format!("x-big-0: {}\r\n", "a".repeat(len)))
}

#[tokio::test]
async fn large_response_heads_pass_from_either_http_version() {
    require_tool("curl", "curl");
    let h1 = RawUpstream::start().await;
    let h2 = Upstream::start(Protocols::Http2).await;
    for origin in [&h1 as &dyn OriginRef, &h2] {
        let proxy = TestProxy::start(&origin.config()).await;
        let port = origin.port();
        for version in VERSIONS {
            let what = format!("{} upstream, {version} agent", origin.name());
            let got = via(&proxy, "api.acme.test", port, "/big-head", &["-i", version]).await;
            assert!(got.ok, "{what}: {}", got.show());
            assert_eq!(got.status(), 200, "{what}: {}", got.show());
            assert!(has_big_header(&got, 70_000), "{what}: the 70 000-byte header arrived");
            // Over max_response_header_bytes (400 KiB): a clear denial.
            let got = via(&proxy, "api.acme.test", port, "/huge-head", &["-i", version]).await;
            assert_eq!(got.status(), 502, "{what}: {}", &got.out[..got.out.len().min(2000)]);
            assert!(got.lower().contains("x-airlock-denied: upstream_unreachable"), "{what}: {}", got.show());
            assert!(got.body().contains("max_response_header_bytes"), "{what}: {}", got.body());
        }
        proxy.proxy.shutdown().await;
    }
}

#[tokio::test]
async fn large_request_heads_pass_to_either_http_version() {
    require_tool("curl", "curl");
    let h1 = RawUpstream::start().await;
    let h2 = Upstream::start(Protocols::Http2).await;
    let big = format!("X-Big: {}", "b".repeat(40_000));
    for origin in [&h1 as &dyn OriginRef, &h2] {
        let proxy = TestProxy::start(&origin.config()).await;
        let port = origin.port();
        for version in VERSIONS {
            let what = format!("{} upstream, {version} agent", origin.name());
            let got = via(&proxy, "api.acme.test", port, "/echo", &["-i", version, "-H", &big]).await;
            assert_eq!(got.status(), 200, "{what}: {}", got.show());
        }
        // Over max_header_bytes (64 KiB): 431. (curl will not send a head
        // that large over HTTP/2: its HTTP/2 library caps the header block
        // at 64 KiB. hostile::oversized_heads_are_refused_with_431 covers
        // HTTP/2 with the Rust client.)
        let huge = format!("X-Big: {}", "b".repeat(80_000));
        let got = via(&proxy, "api.acme.test", port, "/echo", &["-i", "--http1.1", "-H", &huge]).await;
        assert_eq!(got.status(), 431, "{}", got.show());
        assert!(got.lower().contains("x-airlock-denied: request_too_large"), "{}", got.show());
        proxy.proxy.shutdown().await;
    }
    assert!(h2.seen().iter().any(|s| s.header("x-big").is_some_and(|v| v.len() == 40_000)));
    let received = String::from_utf8_lossy(&h1.received()).into_owned();
    assert!(received.to_ascii_lowercase().contains(&format!("x-big: {}\r\n", "b".repeat(40_000))));
}

/// The two upstream kinds the head tests run against, behind one type.
trait OriginRef {
    fn config(&self) -> String;
    fn port(&self) -> u16;
    fn name(&self) -> &'static str;
}

impl OriginRef for RawUpstream {
    fn config(&self) -> String {
        standard_config(self, "", "")
    }
    fn port(&self) -> u16 {
        self.addr.port()
    }
    fn name(&self) -> &'static str {
        "HTTP/1.1"
    }
}

impl OriginRef for Upstream {
    fn config(&self) -> String {
        standard_config(self, "", "")
    }
    fn port(&self) -> u16 {
        self.addr.port()
    }
    fn name(&self) -> &'static str {
        "HTTP/2"
    }
}

#[tokio::test]
async fn an_upstream_demanding_a_client_certificate_is_named_as_such() {
    require_tool("curl", "curl");
    let versions = [("TLS 1.2", &rustls::version::TLS12), ("TLS 1.3", &rustls::version::TLS13)];
    let alpns: [&[&[u8]]; 2] = [&[b"http/1.1"], &[b"h2", b"http/1.1"]];
    for (name, version) in versions {
        for alpn in alpns {
            let upstream = ClientAuthUpstream::start(version, alpn).await;
            let proxy = TestProxy::start(&standard_config(&upstream, "", "")).await;
            let what = format!("{name}, ALPN {}", alpn.len());
            let got = via(&proxy, "api.acme.test", upstream.addr.port(), "/echo", &["-i"]).await;
            assert_eq!(got.status(), 502, "{what}: {}", got.show());
            assert!(got.lower().contains("x-airlock-denied: upstream_tls_failed"), "{what}: {}", got.show());
            let json: serde_json::Value = serde_json::from_str(got.body()).unwrap();
            let message = json["error"]["message"].as_str().unwrap();
            assert!(message.contains("requires a client certificate"), "{what}: {message}");
            assert!(json["error"]["next_step"].as_str().unwrap().contains("client certificate"), "{what}: {json}");
            proxy.proxy.shutdown().await;
        }
    }
}

#[tokio::test]
async fn every_content_coding_curl_decodes_airlock_decodes() {
    require_tool("curl", "curl");
    let upstream = RawUpstream::start().await;
    let proxy = TestProxy::start(&standard_config(&upstream, "", "")).await;
    let port = upstream.addr.port();
    let mut failed = Vec::new();
    let names =
        ["gzip", "x-gzip", "GZIP", "gzip-members", "deflate", "deflate-raw", "br", "zstd", "gzip-br", "identity"];
    for name in names {
        let path = format!("/coding/{name}");
        let direct = direct(&upstream, &path, &["--compressed"]).await;
        if name == "gzip-members" {
            // curl 7.88 stops after the first member (newer curl, zlib's
            // gunzip, Go, Python and browsers read them all): airlock
            // decodes every member.
            assert!(direct.out.len() < CODED_TEXT.len(), "curl direct, {name}: {}", direct.show());
        } else {
            assert!(direct.ok, "curl direct, {name}: {}", direct.show());
            assert_eq!(direct.out, CODED_TEXT, "curl direct, {name}");
        }
        for version in VERSIONS {
            let got = via(&proxy, "api.acme.test", port, &path, &["--compressed", version]).await;
            if !got.ok || got.out != CODED_TEXT {
                failed.push(format!("{name} {version}: {}", got.show()));
            }
        }
        for record in records(&proxy, &path, 2).await {
            if record["complete"] != true {
                failed.push(format!("{name}: {record}"));
            }
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn a_close_delimited_body_without_close_notify_is_whole() {
    require_tool("curl", "curl");
    let upstream = RawUpstream::start().await;
    let proxy = TestProxy::start(&standard_config(&upstream, "", "")).await;
    let port = upstream.addr.port();
    let want = direct(&upstream, "/close-delimited", &[]).await;
    assert!(want.ok, "curl direct: {}", want.show());
    assert_eq!(want.out, "all of the body\n");
    for version in VERSIONS {
        let got = via(&proxy, "api.acme.test", port, "/close-delimited", &[version]).await;
        assert!(got.ok, "{version}: {}", got.show());
        assert_eq!(got.out, want.out, "{version}");
    }
    for record in records(&proxy, "/close-delimited", 2).await {
        assert_eq!(record["complete"], true, "{record}");
    }
    // A body whose framing says more was to come is still cut short: an
    // abort, as direct.
    for path in ["/short-no-notify", "/chunked-no-notify"] {
        let want = direct(&upstream, path, &[]).await;
        assert!(!want.ok, "curl direct accepted {path}: {}", want.show());
        for version in VERSIONS {
            let got = via(&proxy, "api.acme.test", port, path, &[version]).await;
            assert!(!got.ok, "{path} {version} ended cleanly: {}", got.show());
        }
        for record in records(&proxy, path, 2).await {
            assert_eq!(record["complete"], false, "{path}: {record}");
        }
    }
    proxy.proxy.shutdown().await;
}

/// An HTTP/2 upstream that refuses every other stream (the first, third,
/// …) with `REFUSED_STREAM` and answers the rest, counting what it was
/// asked.
async fn refusing_h2_upstream() -> (std::net::SocketAddr, std::path::PathBuf, TempHome, Arc<AtomicUsize>) {
    let ca = airlock_tests::TestCa::new("airlock refusing h2 CA");
    let dir = TempHome::new("refusing-h2");
    let ca_path = dir.path.join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config(&["api.acme.test"], &[b"h2"]));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&asked);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, asked) = (acceptor.clone(), Arc::clone(&counter));
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let Ok(mut conn) = h2::server::handshake(tls).await else { return };
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    if asked.fetch_add(1, Ordering::SeqCst) % 2 == 0 {
                        respond.send_reset(h2::Reason::REFUSED_STREAM);
                        continue;
                    }
                    // The request whole before the answer, as a server that
                    // processes it reads it (one that answers first and drops
                    // the rest makes its client see a reset stream). On its
                    // own task: the loop keeps driving the connection.
                    tokio::spawn(async move {
                        let mut body = req.into_body();
                        while let Some(Ok(data)) = body.data().await {
                            let _ = body.flow_control().release_capacity(data.len());
                        }
                        let resp =
                            http::Response::builder().status(200).header("content-length", "2").body(()).unwrap();
                        if let Ok(mut stream) = respond.send_response(resp, false) {
                            let _ = stream.send_data(bytes::Bytes::from_static(b"ok"), true);
                        }
                    });
                }
            });
        }
    });
    (addr, ca_path, dir, asked)
}

/// A stream the upstream refused with `REFUSED_STREAM` was never processed
/// (RFC 9113 §8.7), so airlock sends it once more, whatever its method
/// and whether or not its connection had answered before — as a direct
/// HTTP/2 client may. It answered `502` for a GET as for a POST.
#[tokio::test]
async fn a_stream_refused_unprocessed_is_sent_again_whatever_its_method() {
    require_tool("curl", "curl");
    let (addr, ca_path, _dir, asked) = refusing_h2_upstream().await;
    struct Refusing(std::net::SocketAddr, std::path::PathBuf);
    impl Origin for Refusing {
        fn addr(&self) -> std::net::SocketAddr {
            self.0
        }
        fn ca_path(&self) -> &std::path::Path {
            &self.1
        }
    }
    let upstream = Refusing(addr, ca_path);
    let proxy = TestProxy::start(&standard_config(&upstream, "", "")).await;
    for method in ["GET", "POST"] {
        let before = asked.load(Ordering::SeqCst);
        let got = via(&proxy, "api.acme.test", addr.port(), "/refused", &["-i", "-X", method, "-d", "x=1"]).await;
        assert!(got.ok, "{method}: {}", got.show());
        assert_eq!(got.status(), 200, "{method}: {}", got.show());
        // Asked twice: refused, then answered.
        assert_eq!(asked.load(Ordering::SeqCst) - before, 2, "{method}");
    }
    proxy.proxy.shutdown().await;
}
