//! The agent side of the benches: HTTP/1.1 over TLS, either straight to the
//! upstream or through a proxy's CONNECT tunnel, the way `curl` or Python
//! `requests` do with `HTTPS_PROXY` set.

use std::io;
use std::net::SocketAddr;

use base64::Engine;
use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::upstream::Reply;

/// Where requests go.
#[derive(Clone, Debug)]
pub enum Via {
    /// Straight to the upstream at this address (host names resolve to it).
    Direct(SocketAddr),
    /// Through an HTTP proxy's CONNECT, with Basic credentials if given.
    Proxy {
        /// The proxy's listener.
        addr: SocketAddr,
        /// `user:password` for `Proxy-Authorization`.
        creds: Option<String>,
    },
}

/// A way to reach the upstream: the path and the roots the agent trusts.
#[derive(Clone)]
pub struct Agent {
    via: Via,
    tls: TlsConnector,
    /// The `Authorization` header value the agent sends.
    pub authorization: String,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent").field("via", &self.via).finish_non_exhaustive()
    }
}

impl Agent {
    /// An agent trusting the PEM roots in `roots_pem`, sending
    /// `authorization` on every request.
    pub fn new(via: Via, roots_pem: &str, authorization: String) -> io::Result<Agent> {
        let cfg = airlock_tests::client::client_config(&[roots_pem], &[b"http/1.1"])?;
        Ok(Agent { via, tls: TlsConnector::from(cfg), authorization })
    }

    /// Opens a keep-alive HTTP/1.1 connection to `host:port`.
    pub async fn open(&self, host: &str, port: u16) -> io::Result<Conn> {
        let tcp = match &self.via {
            Via::Direct(addr) => TcpStream::connect(addr).await?,
            Via::Proxy { addr, creds } => {
                let mut tcp = TcpStream::connect(addr).await?;
                let mut head = format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n");
                if let Some(creds) = creds {
                    let b64 = base64::engine::general_purpose::STANDARD.encode(creds);
                    head.push_str(&format!("Proxy-Authorization: Basic {b64}\r\n"));
                }
                head.push_str("\r\n");
                tcp.write_all(head.as_bytes()).await?;
                let status = read_head(&mut tcp).await?;
                if status != 200 {
                    return Err(io::Error::other(format!("CONNECT {host}:{port} answered {status}")));
                }
                tcp
            }
        };
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from(host.to_owned()).map_err(io::Error::other)?;
        let tls = self.tls.connect(name, tcp).await?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(io::Error::other)?;
        tokio::spawn(conn);
        Ok(Conn { sender, authority: format!("{host}:{port}"), authorization: self.authorization.clone() })
    }
}

/// Reads a CONNECT answer's head and returns its status. Read in chunks,
/// as curl does (a byte at a time would add a syscall per byte to every
/// new-host figure): after a 200 the proxy sends nothing until the agent's
/// ClientHello, so the head is all there is to read.
async fn read_head(tcp: &mut TcpStream) -> io::Result<u16> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = tcp.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the proxy closed before answering CONNECT"));
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 16 << 10 {
            return Err(io::Error::other("the CONNECT answer's head is over 16 KiB"));
        }
    }
    let head = String::from_utf8_lossy(&buf);
    Ok(head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0))
}

/// One open keep-alive connection.
#[derive(Debug)]
pub struct Conn {
    sender: SendRequest<Reply>,
    authority: String,
    authorization: String,
}

impl Conn {
    /// GETs `path` and reads the whole body; returns the status and the
    /// body's length.
    pub async fn get(&mut self, path: &str) -> io::Result<(u16, u64)> {
        let req = Request::get(path)
            .header(http::header::HOST, &self.authority)
            .header(http::header::AUTHORIZATION, &self.authorization)
            .body(Reply::Whole(None))
            .map_err(io::Error::other)?;
        self.send(req).await
    }

    /// POSTs `bytes` bytes to `path`, streamed in slices of `frame`, and
    /// reads the whole answer; returns the status and the answer's length.
    pub async fn post(&mut self, path: &str, frame: Bytes, bytes: u64) -> io::Result<(u16, u64)> {
        let req = Request::post(path)
            .header(http::header::HOST, &self.authority)
            .header(http::header::AUTHORIZATION, &self.authorization)
            .header(http::header::CONTENT_TYPE, "application/x-ndjson")
            .body(Reply::Stream { frame, left: bytes })
            .map_err(io::Error::other)?;
        self.send(req).await
    }

    async fn send(&mut self, req: Request<Reply>) -> io::Result<(u16, u64)> {
        self.sender.ready().await.map_err(io::Error::other)?;
        let resp = self.sender.send_request(req).await.map_err(io::Error::other)?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        let mut len = 0u64;
        while let Some(frame) = body.frame().await {
            if let Some(data) = frame.map_err(io::Error::other)?.data_ref() {
                len += data.len() as u64;
            }
        }
        Ok((status, len))
    }
}
