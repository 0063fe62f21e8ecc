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
//! - anything else: `200`, `Content-Length: 2`, `ok`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::TempHome;
use crate::upstream::{TEST_NAMES, ca_with_file};

/// The scripted upstream, on 127.0.0.1.
#[derive(Debug)]
pub struct RawUpstream {
    pub addr: SocketAddr,
    /// The test CA's certificate, as a file for `upstream_ca`.
    pub ca_path: PathBuf,
    paths: Arc<Mutex<Vec<String>>>,
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
        let (ca, dir, ca_path) = ca_with_file("raw-upstream");
        let config = ca.server_config(&TEST_NAMES, &[b"http/1.1"]);
        let acceptor = TlsAcceptor::from(config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let paths = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&paths);
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, seen) = (acceptor.clone(), Arc::clone(&seen));
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        serve(tls, &seen).await;
                    }
                });
            }
        });
        RawUpstream { addr, ca_path, paths, _dir: dir, task }
    }

    /// The paths of the requests received so far.
    pub fn paths(&self) -> Vec<String> {
        self.paths.lock().unwrap().clone()
    }
}

/// Answers requests on one connection until a script closes it.
async fn serve(mut io: impl AsyncRead + AsyncWrite + Unpin, seen: &Mutex<Vec<String>>) {
    let mut buf = Vec::new();
    loop {
        let Some(path) = read_head(&mut io, &mut buf).await else { return };
        seen.lock().unwrap().push(path.clone());
        let keep_open = match path.as_str() {
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
            _ => io.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await.is_ok(),
        };
        let _ = io.flush().await;
        if !keep_open {
            let _ = io.shutdown().await;
            return;
        }
    }
}

/// Reads one request head (a request body is not expected) and returns its
/// path, or `None` when the peer closed.
async fn read_head(io: &mut (impl AsyncRead + Unpin), buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            return head.split(' ').nth(1).map(str::to_owned);
        }
        let mut chunk = [0u8; 4096];
        match io.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
