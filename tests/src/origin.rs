//! The reference API of the conformance suite: a real hyper server on
//! 127.0.0.1 (HTTP/1.1 and HTTP/2 by ALPN, TLS from a test CA) whose
//! answers depend only on the request, so the same request sent directly
//! and through airlock must get the same answer.
//!
//! Paths:
//! - `/echo`: JSON of what arrived — method, target, the request headers
//!   (but those a proxy hop legitimately sets: see [`HOP_SET`]), the
//!   body's length and FNV-1a digest, and the request trailers.
//! - `/status/N`: status N, a short body unless N cannot have one.
//! - `/length/N`: N bytes with `Content-Length: N` (also for HEAD).
//! - `/coding/NAME`: [`text`] in the coding NAME ([`crate::codings::encode`])
//!   whatever the request asked (a pre-compressed file server, or a
//!   misbehaving API).
//! - `/not-modified-gzip`: `304` with `Content-Encoding: gzip` and an
//!   `ETag`.
//! - `/trailers`: a body, then trailers (declared in `Trailer`).
//! - `/large-head?n=N`: a response header of N bytes.
//! - `/stream?n=N`: N chunks of 1 KiB, each flushed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use tokio_rustls::TlsAcceptor;

use crate::TempHome;
use crate::codings::encode;
use crate::upstream::{TEST_NAMES, TestBody, TestCa, ca_with_file, full, serve_tls};

/// Request headers `/echo` leaves out: a proxy hop sets or removes them
/// (RFC 9110 §7.6.1 hop-by-hop fields, the authority, and the codings
/// airlock asks for), so they are not part of what must arrive unchanged.
pub const HOP_SET: [&str; 7] =
    ["host", "connection", "keep-alive", "te", "transfer-encoding", "accept-encoding", "upgrade"];

/// The reference API.
#[derive(Debug)]
pub struct Origin {
    pub addr: SocketAddr,
    pub ca: Arc<TestCa>,
    pub ca_path: PathBuf,
    _dir: TempHome,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl crate::Origin for Origin {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
    fn ca_path(&self) -> &std::path::Path {
        &self.ca_path
    }
}

impl Origin {
    /// Starts the API on 127.0.0.1:0, offering h2 and http/1.1.
    pub async fn start() -> Origin {
        let (ca, dir, ca_path) = ca_with_file("origin");
        let ca = Arc::new(ca);
        let acceptor = TlsAcceptor::from(ca.server_config(&TEST_NAMES, &[b"h2", b"http/1.1"]));
        let (addr, task) = serve_tls(acceptor, answer).await;
        Origin { addr, ca, ca_path, _dir: dir, task }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

/// The text `/coding/*` serves, encoded: long enough to span several
/// frames and compress well.
pub fn text() -> Vec<u8> {
    (0..2000).flat_map(|i| format!("line {i}: the quick brown fox jumps over the lazy dog\n").into_bytes()).collect()
}

/// FNV-1a, 64 bits: a digest the echo reports so bodies compare without
/// being sent back whole.
pub fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

fn with_status(status: u16, body: TestBody) -> Response<TestBody> {
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    resp
}

/// Whether a response with this status carries no content (RFC 9110 §6.4.1,
/// §15.3.6).
fn bodiless(status: u16) -> bool {
    matches!(status, 100..=199 | 204 | 205 | 304)
}

async fn answer(req: Request<Incoming>) -> Response<TestBody> {
    let path = req.uri().path().to_owned();
    let head = req.method() == http::Method::HEAD;
    let query = req.uri().query().unwrap_or("").to_owned();
    let param = |name: &str| {
        query.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')).and_then(|v| v.parse::<usize>().ok())
    };
    if path == "/echo" {
        return echo(req).await;
    }
    if let Some(code) = path.strip_prefix("/status/").and_then(|c| c.parse::<u16>().ok()) {
        let body = if bodiless(code) { full(Bytes::new()) } else { full(format!("status {code}\n")) };
        let mut resp = with_status(code, body);
        if (300..400).contains(&code) && code != 304 {
            resp.headers_mut().insert("location", HeaderValue::from_static("/echo"));
        }
        if code == 304 {
            resp.headers_mut().insert("etag", HeaderValue::from_static("\"v1\""));
        }
        return resp;
    }
    if let Some(n) = path.strip_prefix("/length/").and_then(|c| c.parse::<usize>().ok()) {
        // A HEAD answer has the length of the GET one and no body (RFC 9110
        // §9.3.2).
        let body = if head { Vec::new() } else { vec![b'x'; n] };
        let mut resp = Response::new(full(body));
        resp.headers_mut().insert("content-length", HeaderValue::from(n));
        return resp;
    }
    if let Some((label, body)) = path.strip_prefix("/coding/").and_then(|name| encode(name, &text())) {
        let length = body.len();
        let mut resp = Response::new(full(if head { Vec::new() } else { body }));
        resp.headers_mut().insert("content-length", HeaderValue::from(length));
        resp.headers_mut().insert("content-encoding", HeaderValue::from_static(label));
        resp.headers_mut().insert("content-type", HeaderValue::from_static("text/plain"));
        resp.headers_mut().insert("vary", HeaderValue::from_static("accept-encoding"));
        return resp;
    }
    if path == "/not-modified-gzip" {
        let mut resp = with_status(304, full(Bytes::new()));
        resp.headers_mut().insert("content-encoding", HeaderValue::from_static("gzip"));
        resp.headers_mut().insert("etag", HeaderValue::from_static("\"v1\""));
        return resp;
    }
    if path == "/trailers" {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", HeaderValue::from_static("abc123"));
        trailers.insert("x-rows", HeaderValue::from_static("2"));
        let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
            Ok(Frame::data(Bytes::from_static(b"row 1\n"))),
            Ok(Frame::data(Bytes::from_static(b"row 2\n"))),
            Ok(Frame::trailers(trailers)),
        ];
        let mut resp = Response::new(StreamBody::new(futures_util::stream::iter(frames)).boxed());
        resp.headers_mut().insert("trailer", HeaderValue::from_static("x-checksum, x-rows"));
        return resp;
    }
    if path == "/large-head" {
        let n = param("n").unwrap_or(1024);
        let mut resp = Response::new(full("large head\n"));
        resp.headers_mut().insert("x-large", HeaderValue::from_str(&"h".repeat(n)).unwrap());
        return resp;
    }
    if path == "/stream" {
        let n = param("n").unwrap_or(4);
        let chunks =
            (0..n).map(|i| Ok::<_, std::io::Error>(Frame::data(Bytes::from(vec![b'a' + (i % 26) as u8; 1024]))));
        return Response::new(StreamBody::new(futures_util::stream::iter(chunks.collect::<Vec<_>>())).boxed());
    }
    with_status(404, full("no such path\n"))
}

/// `/echo`: what arrived, as JSON.
async fn echo(req: Request<Incoming>) -> Response<TestBody> {
    let (parts, body) = req.into_parts();
    let mut headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .filter(|(n, _)| !HOP_SET.contains(&n.as_str()))
        .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    headers.sort();
    let mut data = Vec::new();
    let mut trailers = Vec::new();
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { return with_status(400, full("the request body failed\n")) };
        match frame.into_data() {
            Ok(d) => data.extend_from_slice(&d),
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers.extend(
                        t.iter().map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())),
                    );
                }
            }
        }
    }
    trailers.sort();
    let target = parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default();
    let json = serde_json::json!({
        "method": parts.method.as_str(),
        "target": target,
        "headers": headers,
        "body_len": data.len(),
        "body_fnv": format!("{:016x}", fnv(&data)),
        "trailers": trailers,
    });
    let mut resp = Response::new(full(format!("{json}\n")));
    resp.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
    resp
}
