//! The protocol corners no high-level client lets a test choose, driven by
//! a Rust client (rustls and hyper) that can: CONNECT authority forms,
//! ALPN offers, absolute-form requests inside a tunnel, HTTP/1.0 and
//! `Connection: close`, `Expect: 100-continue`, and trailers in both
//! directions on both versions — each compared with the same bytes sent
//! straight to the reference API.

use std::time::Duration;

use airlock_tests::client::{self, Http};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::{Bench, Via};
use airlock_tests::*;

/// A TLS connection to the API's host, straight or through a CONNECT,
/// offering `alpn`.
async fn open(bench: &Bench, via: Via, alpn: &[&[u8]]) -> std::io::Result<TlsStream<TcpStream>> {
    let port = bench.origin.port();
    match via {
        Via::Direct => {
            let tcp = TcpStream::connect(bench.origin.addr).await?;
            client::tls(tcp, "api.acme.test", &[&bench.origin.ca.pem()], alpn).await
        }
        Via::Airlock => {
            let reply =
                client::connect(bench.proxy.addr(), &format!("api.acme.test:{port}"), Some(("acme", ACME_TOKEN)))
                    .await?;
            assert_eq!(reply.status, 200, "{}", reply.head);
            client::tls(reply.stream, "api.acme.test", &[&bench.proxy.ca_pem()], alpn).await
        }
    }
}

/// `CONNECT` targets must be `host:port` (RFC 9110 §9.3.6); anything else
/// is `400 bad_request` at once, never a lookup or a connection. An IPv6
/// literal in brackets is a target like any other.
#[tokio::test]
async fn connect_authority_forms() {
    let bench = Bench::start().await;
    let port = bench.origin.port();
    let ok = [format!("api.acme.test:{port}"), format!("127.0.0.1:{port}"), format!("API.ACME.TEST.:{port}")];
    for target in &ok {
        let reply = client::connect(bench.proxy.addr(), target, Some(("acme", ACME_TOKEN))).await.unwrap();
        assert_eq!(reply.status, 200, "{target}: {}", reply.head);
    }
    // [::1] is loopback and no route names it: refused by policy, so it
    // parsed.
    let reply =
        client::connect(bench.proxy.addr(), &format!("[::1]:{port}"), Some(("acme", ACME_TOKEN))).await.unwrap();
    assert_eq!(reply.status, 403, "{}", reply.head);
    assert!(reply.head.contains("private_egress_denied"), "{}", reply.head);

    let before = bench.proxy.audit_lines().len();
    let bad = [
        "nohostport".to_owned(),
        "api.acme.test".to_owned(),
        "api.acme.test:".to_owned(),
        "api.acme.test:0".to_owned(),
        "api.acme.test:99999".to_owned(),
        "api.acme.test:https".to_owned(),
        "[::1]".to_owned(),
        format!("https://api.acme.test:{port}"),
        format!("[api.acme.test]:{port}"),
        format!("[127.0.0.1]:{port}"),
        format!("[v1.x]:{port}"),
        format!("http://api.acme.test:{port}/"),
    ];
    for target in &bad {
        let reply = client::connect(bench.proxy.addr(), target, Some(("acme", ACME_TOKEN))).await.unwrap();
        assert_eq!(reply.status, 400, "{target}: {}", reply.head);
        assert!(reply.head.contains("bad_request"), "{target}: {}", reply.head);
    }
    // An IPv6 address without (balanced) brackets is no URI authority at
    // all: hyper answers a bare 400 before airlock sees a request.
    let hyper_refused = [format!("::1:{port}"), format!("[::1:{port}"), format!("api.acme.test:{port}:1")];
    for target in &hyper_refused {
        let reply = client::connect(bench.proxy.addr(), target, Some(("acme", ACME_TOKEN))).await.unwrap();
        assert_eq!(reply.status, 400, "{target}: {}", reply.head);
    }
    // Each is recorded; refused before the credentials are looked at, they
    // are coalesced per address (written in full at shutdown).
    let Bench { proxy: TestProxy { home, proxy }, .. } = bench;
    proxy.shutdown().await;
    let records = audit_records(&home.path.join("audit.jsonl"));
    let refused: u64 = records[before..]
        .iter()
        .filter(|r| r["code"] == "bad_request")
        .map(|r| r["attempts"].as_u64().unwrap_or(1))
        .sum();
    assert_eq!(refused, (bad.len() + hyper_refused.len()) as u64, "{records:?}");
}

/// Every ALPN offer negotiates what it would with the API itself: h2 or
/// http/1.1 as offered, HTTP/1.1 with no offer, and a handshake failure
/// for protocols neither speaks (RFC 7301 §3.2).
#[tokio::test]
async fn alpn_offers_negotiate_as_direct() {
    let bench = Bench::start().await;
    let offers: [&[&[u8]]; 6] =
        [&[b"h2"], &[b"http/1.1"], &[b"h2", b"http/1.1"], &[b"http/1.1", b"h2"], &[], &[b"spdy/3.1", b"http/1.0"]];
    for offer in offers {
        let mut seen = Vec::new();
        for via in [Via::Direct, Via::Airlock] {
            let outcome = match open(&bench, via, offer).await {
                Ok(tls) => Ok(tls.get_ref().1.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned())),
                Err(_) => Err(()),
            };
            seen.push(outcome);
        }
        assert_eq!(seen[0], seen[1], "ALPN offer {offer:?}: direct, then through airlock");
    }
}

/// Reads a whole HTTP/1.x exchange's answer until the peer closes.
async fn read_to_close(tls: &mut TlsStream<TcpStream>) -> Vec<u8> {
    let mut out = Vec::new();
    // A peer that closes without close_notify is still done.
    let _ = tokio::time::timeout(Duration::from_secs(20), tls.read_to_end(&mut out)).await;
    out
}

/// The status line and body of a raw HTTP/1.x answer (chunked decoded).
fn status_and_body(raw: &[u8]) -> (String, Vec<u8>) {
    let text = raw;
    let split = text.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4).unwrap_or(text.len());
    let head = String::from_utf8_lossy(&text[..split]).to_string();
    let status = head.lines().next().unwrap_or("").to_owned();
    let mut body = text[split..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..eol]).trim(), 16).unwrap_or(0);
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
            rest = &rest[eol + 2 + size + 2..];
        }
        body = out;
    }
    (status, body)
}

/// HTTP/1.0 requests, `Connection: close` and absolute-form targets inside
/// a tunnel: the same answer as direct, and the connection closed after
/// it as direct.
#[tokio::test]
async fn http10_connection_close_and_absolute_form() {
    let bench = Bench::start().await;
    let port = bench.origin.port();
    let host = format!("api.acme.test:{port}");
    let requests = [
        format!("GET /length/3000 HTTP/1.0\r\nHost: {host}\r\n\r\n"),
        format!("GET /echo HTTP/1.0\r\nHost: {host}\r\nX-Custom: 1\r\n\r\n"),
        format!("GET /length/3000 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        format!("GET /stream?n=8 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        format!("GET https://{host}/echo?abs=1 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        format!("POST /echo HTTP/1.0\r\nHost: {host}\r\nContent-Length: 5\r\n\r\nhello"),
    ];
    for raw in &requests {
        let mut answers = Vec::new();
        for via in [Via::Direct, Via::Airlock] {
            let mut tls = open(&bench, via, &[b"http/1.1"]).await.unwrap();
            tls.write_all(raw.as_bytes()).await.unwrap();
            answers.push(status_and_body(&read_to_close(&mut tls).await));
        }
        let first_line = raw.lines().next().unwrap();
        assert!(answers[0].0.contains(" 200 "), "{first_line}: {:?}", answers[0].0);
        // The status code and reason, and the body, are the API's; the
        // version is each server's own (airlock answers 1.0 as 1.1 does).
        let code = |s: &str| s.split_once(' ').map(|(_, rest)| rest.to_owned());
        assert_eq!(code(&answers[0].0), code(&answers[1].0), "{first_line}");
        assert_eq!(
            String::from_utf8_lossy(&answers[0].1),
            String::from_utf8_lossy(&answers[1].1),
            "{first_line}: body direct, then through airlock"
        );
    }
}

type TestBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

fn with_trailers(data: &'static [u8], trailers: &[(&'static str, &'static str)]) -> TestBody {
    let mut map = HeaderMap::new();
    for (n, v) in trailers {
        map.insert(*n, HeaderValue::from_static(v));
    }
    let frames: Vec<Result<Frame<Bytes>, std::io::Error>> =
        vec![Ok(Frame::data(Bytes::from_static(data))), Ok(Frame::trailers(map))];
    StreamBody::new(futures_util::stream::iter(frames)).boxed()
}

fn empty() -> TestBody {
    http_body_util::Empty::new().map_err(|never| match never {}).boxed()
}

/// One request on a fresh connection by `via`, returning the status, the
/// body and the trailers.
async fn exchange(bench: &Bench, via: Via, http: Http, req: Request<TestBody>) -> (u16, Bytes, Option<HeaderMap>) {
    let alpn: &[&[u8]] = if http == Http::H2 { &[b"h2"] } else { &[b"http/1.1"] };
    let tls = open(bench, via, alpn).await.unwrap();
    let resp = match http {
        Http::H1 => {
            let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
            tokio::spawn(conn);
            s.send_request(req).await.unwrap()
        }
        Http::H2 => {
            let (mut s, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
            tokio::spawn(conn);
            s.send_request(req).await.unwrap()
        }
    };
    let status = resp.status().as_u16();
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    (status, collected.to_bytes(), trailers)
}

fn request(
    http: Http,
    bench: &Bench,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: TestBody,
) -> Request<TestBody> {
    let authority = format!("api.acme.test:{}", bench.origin.port());
    let mut b = Request::builder().method(method);
    b = match http {
        Http::H1 => b.uri(path).header("host", authority),
        Http::H2 => b.uri(format!("https://{authority}{path}")),
    };
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    b.body(body).unwrap()
}

/// Trailers in both directions, on both versions: request trailers reach
/// the API (HTTP/1.1 ones declared in `Trailer`, as hyper sends only
/// those), and response trailers reach a client that accepts them
/// (`TE: trailers` on HTTP/1.1, always on HTTP/2) — as they do direct.
#[tokio::test]
async fn trailers_both_ways_as_direct() {
    let bench = Bench::start().await;
    for http in [Http::H1, Http::H2] {
        let mut seen = Vec::new();
        for via in [Via::Direct, Via::Airlock] {
            let up = request(
                http,
                &bench,
                "POST",
                "/echo",
                &[("trailer", "x-sum"), ("te", "trailers")],
                with_trailers(b"counted", &[("x-sum", "7")]),
            );
            let (status, body, _) = exchange(&bench, via, http, up).await;
            let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let down = request(http, &bench, "GET", "/trailers", &[("te", "trailers")], empty());
            let (down_status, down_body, down_trailers) = exchange(&bench, via, http, down).await;
            seen.push((
                status,
                echo["trailers"].clone(),
                echo["body_len"].clone(),
                down_status,
                down_body,
                down_trailers,
            ));
        }
        assert_eq!(seen[0].1, serde_json::json!([["x-sum", "7"]]), "{http:?} direct");
        assert_eq!(seen[0], seen[1], "{http:?}: direct, then through airlock");
        assert!(seen[1].5.as_ref().is_some_and(|t| t.get("x-checksum").is_some()), "{http:?}: {:?}", seen[1].5);
    }
}

/// `Expect: 100-continue` on both versions: the body goes once the server
/// asks for it, and the answer is the API's.
#[tokio::test]
async fn expect_100_continue_as_direct() {
    let bench = Bench::start().await;
    let upload: Vec<u8> = (0..300_000u32).map(|i| (i % 199) as u8).collect();
    let case = super::req("POST", "/echo").header("expect", "100-continue").body(upload);
    super::conform(&bench, &[(case, &[super::Client::Curl1, super::Client::Curl2])]).await;
}

/// Answers with no body (HEAD, 204, 304) and bodies of every framing, in
/// turn on one kept-alive connection: each answer as direct, and the
/// connection still usable after each (a HEAD answered with a body, or a
/// body cut short, would desynchronise everything after it).
#[tokio::test]
async fn one_connection_carries_bodiless_and_bodied_answers_in_turn() {
    let bench = Bench::start().await;
    type Step = (&'static str, &'static str, &'static [(&'static str, &'static str)]);
    let sequence: [Step; 9] = [
        ("HEAD", "/length/12345", &[]),
        ("GET", "/status/204", &[]),
        ("GET", "/status/304", &[("if-none-match", "\"v1\"")]),
        ("GET", "/length/10", &[]),
        ("GET", "/not-modified-gzip", &[]),
        ("HEAD", "/coding/gzip", &[]),
        ("GET", "/stream?n=3", &[]),
        ("GET", "/status/205", &[]),
        ("GET", "/echo", &[]),
    ];
    for http in [Http::H1, Http::H2] {
        let mut runs = Vec::new();
        for via in [Via::Direct, Via::Airlock] {
            let alpn: &[&[u8]] = if http == Http::H2 { &[b"h2"] } else { &[b"http/1.1"] };
            let tls = open(&bench, via, alpn).await.unwrap();
            let mut seen = Vec::new();
            macro_rules! run_all {
                ($sender:expr) => {
                    for (method, path, headers) in sequence {
                        let req = request(http, &bench, method, path, headers, empty());
                        let what = format!("{http:?} {via:?} {method} {path}");
                        let resp = tokio::time::timeout(Duration::from_secs(20), $sender.send_request(req))
                            .await
                            .unwrap_or_else(|_| panic!("{what}: no answer"))
                            .unwrap_or_else(|e| panic!("{what}: {e}"));
                        let status = resp.status().as_u16();
                        let mut headers: Vec<(String, String)> = resp
                            .headers()
                            .iter()
                            .filter(|(n, _)| {
                                !matches!(n.as_str(), "date" | "x-airlock-request-id" | "transfer-encoding")
                            })
                            .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                            .collect();
                        headers.sort();
                        let body = resp.into_body().collect().await.unwrap_or_else(|e| panic!("{what}: {e}"));
                        seen.push((method, path, status, headers, body.to_bytes()));
                    }
                };
            }
            match http {
                Http::H1 => {
                    let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
                    tokio::spawn(conn);
                    run_all!(s);
                }
                Http::H2 => {
                    let (mut s, conn) =
                        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
                    tokio::spawn(conn);
                    run_all!(s);
                }
            }
            runs.push(seen);
        }
        for (direct, through) in runs[0].iter().zip(&runs[1]) {
            let (method, path) = (direct.0, direct.1);
            // A body airlock streams loses its Content-Length; a bodiless
            // answer keeps it.
            let bodied = method != "HEAD" && !matches!(direct.2, 204 | 205 | 304);
            let strip = |h: &Vec<(String, String)>| -> Vec<(String, String)> {
                h.iter().filter(|(n, _)| !(bodied && n == "content-length")).cloned().collect()
            };
            assert_eq!(direct.2, through.2, "{http:?} {method} {path}: status");
            assert_eq!(strip(&direct.3), strip(&through.3), "{http:?} {method} {path}: headers");
            assert_eq!(direct.4, through.4, "{http:?} {method} {path}: body");
        }
    }
}
