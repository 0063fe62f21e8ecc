//! A TLS upstream that answers with bytes no well-behaved server would send:
//! a `Content-Length` that lies either way, a head that never ends, broken
//! chunked framing, a header with a control character. It speaks just
//! enough HTTP/1.1 to read request heads, so nothing in it can tidy the
//! response up.
//!
//! Paths (the request's path picks the answer):
//! - `/short`: `Content-Length: 100`, 10 bytes, then close.
//! - `/long`: `Content-Length: 5`, then 5 bytes followed by a whole second
//!   response (`smuggled`) on the same connection.
//! - `/endless-headers`: a status line, then header lines until the peer
//!   goes away.
//! - `/bad-chunked`: one good chunk, then a chunk size that is not hex.
//! - `/bad-header`: a header name with a control character.
//! - `/hop`: hop-by-hop headers (`Connection: x-up-hop`, `X-Up-Hop`,
//!   `Keep-Alive`, `Proxy-Connection`) around a 2-byte body.
//!
//! Channels a hostile upstream could return the injected `Authorization`
//! value (`AUTH`; `KEY` is its last word, the bare key) through:
//! - `/reason`: `401` with `AUTH` in the reason phrase; `/reason-299`: the
//!   same with a status that has no registered reason.
//! - `/informational`: `103` and `100` heads carrying `AUTH`, then `200`.
//! - `/trailers`: a chunked body with `AUTH` in a trailer field.
//! - `/header-name`: header fields whose names hold `KEY`.
//! - `/te-gzip`: `Transfer-Encoding: gzip, chunked`, the gzip holding `AUTH`;
//!   `/te-gzip-close`: `Transfer-Encoding: gzip`, ended by closing;
//!   `/te-unknown`: `Transfer-Encoding: x-unknown, chunked`; `/te-key`:
//!   the key, upper-cased, as a transfer coding.
//! - `/upgrade`: asked to upgrade (any `Upgrade` header), answers `101` with
//!   the first token and then writes `AUTH` as raw bytes; otherwise `200`
//!   `no upgrade`. `/always-101`: answers `101 h2c` and `AUTH` whatever was
//!   asked. `/ws-extension`: answers a WebSocket `101` accepting
//!   `permessage-deflate`, unasked. After a `101` it reads until the peer
//!   closes (every byte is recorded, see [`RawUpstream::received`]).
//!
//! Protocol fidelity (what a direct client accepts must pass):
//! - `/head-length`: the head of a `200` with `Content-Length: 12345` and
//!   no body (the answer to a HEAD); `/head-gzip`: the same with
//!   `Content-Encoding: gzip`, `Content-Length: 31`;
//!   `/not-modified-gzip`: `304` with `Content-Encoding: gzip`.
//! - `/once`: `200 ok`, kept alive; when the next request arrives on the
//!   same connection, it is read and the connection closed unanswered (a
//!   server's keep-alive timeout firing just as the request comes).
//! - `/big-head`: a `70 000`-byte header; `/huge-head`: five of `90 000`.
//! - `/coding/NAME`: [`CODED_TEXT`] encoded as NAME says (see
//!   [`crate::codings::encode`]), with that `Content-Encoding`.
//! - `/close-delimited`: a body ended by closing the connection, without
//!   TLS `close_notify`; `/short-no-notify`: `Content-Length: 100`, 10
//!   bytes, closed the same way; `/chunked-no-notify`: one chunk, no last
//!   chunk, closed the same way.
//! - anything else: `200`, `Content-Length: 2`, `ok`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::codings::{encode, gzip};

use crate::TempHome;
use crate::upstream::{TEST_NAMES, ca_with_file};

/// The scripted upstream, on 127.0.0.1.
#[derive(Debug)]
pub struct RawUpstream {
    pub addr: SocketAddr,
    /// The test CA's certificate, as a file for `upstream_ca`.
    pub ca_path: PathBuf,
    paths: Arc<Mutex<Vec<String>>>,
    received: Arc<Mutex<Vec<u8>>>,
    connections: Arc<std::sync::atomic::AtomicUsize>,
    _dir: TempHome,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawUpstream {
    /// Starts it with a certificate for the usual test names.
    pub async fn start() -> RawUpstream {
        RawUpstream::start_with(true).await
    }

    /// Starts it speaking plain HTTP, no TLS.
    pub async fn start_plain() -> RawUpstream {
        RawUpstream::start_with(false).await
    }

    async fn start_with(tls: bool) -> RawUpstream {
        let (ca, dir, ca_path) = ca_with_file("raw-upstream");
        let config = ca.server_config(&TEST_NAMES, &[b"http/1.1"]);
        let acceptor = tls.then(|| TlsAcceptor::from(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let paths = Arc::new(Mutex::new(Vec::new()));
        let received = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (seen, bytes, count) = (Arc::clone(&paths), Arc::clone(&received), Arc::clone(&connections));
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let (acceptor, seen, bytes) = (acceptor.clone(), Arc::clone(&seen), Arc::clone(&bytes));
                tokio::spawn(async move {
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(tcp).await {
                                serve(Recording { inner: tls, bytes }, &seen).await;
                            }
                        }
                        None => serve(Recording { inner: tcp, bytes }, &seen).await,
                    }
                });
            }
        });
        RawUpstream { addr, ca_path, paths, received, connections, _dir: dir, task }
    }

    /// The paths of the requests received so far.
    pub fn paths(&self) -> Vec<String> {
        self.paths.lock().unwrap().clone()
    }

    /// Every byte received so far, on every connection (after TLS).
    pub fn received(&self) -> Vec<u8> {
        self.received.lock().unwrap().clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A stream that appends every byte read to a shared log.
struct Recording<S> {
    inner: S,
    bytes: Arc<Mutex<Vec<u8>>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Recording<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let new = buf.filled()[before..].to_vec();
        self.bytes.lock().unwrap().extend_from_slice(&new);
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Recording<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// One request head: its path and header fields (lower-case names).
struct Head {
    path: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

fn chunked(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in data.chunks(7) {
        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// Switches protocols, writes `auth` as raw bytes, then reads (and so
/// records) whatever the peer sends until it closes.
async fn pipe(io: &mut (impl AsyncRead + AsyncWrite + Unpin), head: &str, auth: &str) {
    if io.write_all(head.as_bytes()).await.is_err() || io.write_all(format!("pipe: {auth}\n").as_bytes()).await.is_err()
    {
        return;
    }
    let _ = io.flush().await;
    let mut sink = [0u8; 4096];
    while let Ok(n) = io.read(&mut sink).await {
        if n == 0 {
            break;
        }
    }
}

/// Answers requests on one connection until a script closes it.
async fn serve(mut io: impl AsyncRead + AsyncWrite + Unpin, seen: &Mutex<Vec<String>>) {
    let mut buf = Vec::new();
    // Set after `/once`: the next request on this connection is not answered.
    let mut close_next = false;
    loop {
        let Some(head) = read_head(&mut io, &mut buf).await else { return };
        let path = head.path.clone();
        seen.lock().unwrap().push(path.clone());
        if close_next {
            let _ = io.shutdown().await;
            return;
        }
        let auth = head.header("authorization").unwrap_or("").to_owned();
        let key = auth.rsplit(' ').next().unwrap_or("").to_owned();
        let keep_open = match path.as_str() {
            "/reason" => {
                let resp = format!("HTTP/1.1 401 bad key {auth}\r\nContent-Length: 2\r\n\r\nno");
                io.write_all(resp.as_bytes()).await.is_ok()
            }
            "/reason-299" => {
                let resp = format!("HTTP/1.1 299 odd {auth}\r\nContent-Length: 2\r\n\r\nno");
                io.write_all(resp.as_bytes()).await.is_ok()
            }
            "/informational" => {
                let resp = format!(
                    "HTTP/1.1 103 Early Hints\r\nLink: </k/{key}>; rel=preload\r\nX-Echo: {auth}\r\n\r\n\
                     HTTP/1.1 100 Continue {auth}\r\nX-Echo: {auth}\r\n\r\n\
                     HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                );
                io.write_all(resp.as_bytes()).await.is_ok()
            }
            "/trailers" => {
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-echo\r\n\r\n\
                     4\r\nbody\r\n0\r\nX-Echo: {auth}\r\n\r\n"
                );
                io.write_all(resp.as_bytes()).await.is_ok()
            }
            "/header-name" => {
                let resp = format!(
                    "HTTP/1.1 200 OK\r\n{key}: 1\r\nX-{key}-Echo: 2\r\nX-Kept: 3\r\nContent-Length: 2\r\n\r\nok"
                );
                io.write_all(resp.as_bytes()).await.is_ok()
            }
            "/te-gzip" => {
                let mut resp =
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: gzip, chunked\r\n\r\n".to_vec();
                resp.extend(chunked(&gzip(format!("you sent {auth}").as_bytes())));
                io.write_all(&resp).await.is_ok()
            }
            "/te-gzip-close" => {
                let mut resp = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: gzip\r\nConnection: close\r\n\r\n".to_vec();
                resp.extend(gzip(format!("you sent {auth}").as_bytes()));
                let _ = io.write_all(&resp).await;
                false
            }
            "/te-key" => {
                let head =
                    format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: {}, chunked\r\n\r\n", key.to_ascii_uppercase());
                let mut resp = head.into_bytes();
                resp.extend(chunked(b"body"));
                io.write_all(&resp).await.is_ok()
            }
            "/te-unknown" => {
                let mut resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: x-unknown, chunked\r\n\r\n".to_vec();
                resp.extend(chunked(format!("you sent {auth}").as_bytes()));
                io.write_all(&resp).await.is_ok()
            }
            "/upgrade" => match head.header("upgrade") {
                Some(upgrade) => {
                    let token = upgrade.split(',').next().unwrap_or("").trim().to_owned();
                    let resp =
                        format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: {token}\r\nConnection: Upgrade\r\n\r\n");
                    pipe(&mut io, &resp, &auth).await;
                    return;
                }
                None => io.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nno upgrade").await.is_ok(),
            },
            "/always-101" => {
                pipe(&mut io, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n", &auth)
                    .await;
                return;
            }
            "/ws-extension" => {
                let resp = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                            Sec-WebSocket-Accept: x\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n";
                pipe(&mut io, resp, &auth).await;
                return;
            }
            "/short" => {
                let _ = io.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789").await;
                false
            }
            "/long" => {
                let smuggled = "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled";
                let _ = io
                    .write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello{smuggled}").as_bytes())
                    .await;
                true
            }
            "/endless-headers" => {
                let line = format!("x-pad: {}\r\n", "a".repeat(1000));
                let mut out = io.write_all(b"HTTP/1.1 200 OK\r\n").await;
                while out.is_ok() {
                    out = io.write_all(line.as_bytes()).await;
                }
                false
            }
            "/bad-chunked" => {
                let _ = io
                    .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nbad\r\n")
                    .await;
                false
            }
            "/hop" => {
                let head = "HTTP/1.1 200 OK\r\nConnection: x-up-hop\r\nX-Up-Hop: 1\r\nKeep-Alive: timeout=5\r\n\
                            Proxy-Connection: keep-alive\r\nX-End-To-End: kept\r\nContent-Length: 2\r\n\r\nok";
                io.write_all(head.as_bytes()).await.is_ok()
            }
            "/bad-header" => {
                let _ = io.write_all(b"HTTP/1.1 200 OK\r\nx-b\x01d: v\r\nContent-Length: 2\r\n\r\nok").await;
                false
            }
            "/head-length" => io
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 12345\r\n\r\n")
                .await
                .is_ok(),
            "/head-gzip" => io
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Encoding: gzip\r\nContent-Length: 31\r\n\r\n")
                .await
                .is_ok(),
            "/not-modified-gzip" => io
                .write_all(b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Encoding: gzip\r\nContent-Length: 31\r\n\r\n")
                .await
                .is_ok(),
            "/once" => {
                close_next = true;
                io.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await.is_ok()
            }
            "/big-head" | "/huge-head" => {
                let (count, len) = if path == "/big-head" { (1, 70_000) } else { (5, 90_000) };
                let mut resp = "HTTP/1.1 200 OK\r\n".to_owned();
                for i in 0..count {
                    resp.push_str(&format!("x-big-{i}: {}\r\n", "a".repeat(len)));
                }
                resp.push_str("Content-Length: 2\r\n\r\nok");
                io.write_all(resp.as_bytes()).await.is_ok()
            }
            p if p.starts_with("/coding/") => {
                let name = &p["/coding/".len()..];
                let text = CODED_TEXT.as_bytes();
                let (encoding, body) = encode(name, text).unwrap_or(("identity", text.to_vec()));
                let head = format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Encoding: {encoding}\r\nContent-Length: {}\r\n\r\n", body.len());
                io.write_all(head.as_bytes()).await.is_ok() && io.write_all(&body).await.is_ok()
            }
            "/close-delimited" | "/short-no-notify" | "/chunked-no-notify" => {
                let resp: &[u8] = match path.as_str() {
                    "/close-delimited" => b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nall of the body\n",
                    "/short-no-notify" => b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789",
                    _ => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
                };
                let _ = io.write_all(resp).await;
                let _ = io.flush().await;
                // Dropped without shutdown: TCP closes, TLS sends no close_notify.
                return;
            }
            // Lengths a direct curl accepts on answers airlock passes on as
            // framed: a 204 that names one (RFC 9110 §8.6 says it must
            // not), and a length sent twice or as a list of equal values.
            "/204-length" => io.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n").await.is_ok(),
            "/length-0-twice" => io
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n")
                .await
                .is_ok(),
            "/length-0-list" => io.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0, 0\r\n\r\n").await.is_ok(),
            "/head-length-list" => io
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 12345, 12345\r\n\r\n")
                .await
                .is_ok(),
            p if p.starts_with("/grpc-web-text") => {
                // A grpc-web-text answer the way Envoy's grpc_web filter
                // writes one: each piece of the stream base64-encoded and
                // padded on its own, here cut inside the key.
                use base64::Engine;
                let message = format!("token={key} end");
                let mut frame = vec![0u8];
                frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
                frame.extend_from_slice(message.as_bytes());
                let cut = 5 + "token=".len() + key.len() / 2;
                let body: String =
                    [&frame[..cut], &frame[cut..]].iter().map(|p| base64::engine::general_purpose::STANDARD.encode(p)).collect();
                // Every spelling grpc-web's own client reads as text (it
                // lower-cases the type and checks its start).
                let content_type = match &p["/grpc-web-text".len()..] {
                    "/textual" => "application/grpc-web-textual",
                    "/dash" => "application/grpc-web-text-proto",
                    "/list" => "application/grpc-web-text,application/json",
                    "/upper" => "APPLICATION/GRPC-WEB-TEXT",
                    _ => "application/grpc-web-text+proto",
                };
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                io.write_all(head.as_bytes()).await.is_ok() && io.write_all(body.as_bytes()).await.is_ok()
            }
            _ => io.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await.is_ok(),
        };
        let _ = io.flush().await;
        if !keep_open {
            let _ = io.shutdown().await;
            return;
        }
    }
}

/// The text every `/coding/NAME` body decodes to.
pub const CODED_TEXT: &str = "the same text, whatever the content coding: hello, hello, hello\n";

/// Reads one request head (a request body is not expected), or `None` when
/// the peer closed.
async fn read_head(io: &mut (impl AsyncRead + Unpin), buf: &mut Vec<u8>) -> Option<Head> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            let mut lines = head.split("\r\n");
            let path = lines.next()?.split(' ').nth(1)?.to_owned();
            let headers = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
                .collect();
            return Some(Head { path, headers });
        }
        let mut chunk = [0u8; 4096];
        match io.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
