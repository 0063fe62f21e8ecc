//! A Rust client that reaches HTTPS hosts through the proxy the way agents
//! do: `CONNECT` with `Proxy-Authorization`, then TLS verified against the
//! roots it is given, then HTTP/1.1 or HTTP/2 by ALPN.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// The answer to a CONNECT: status, raw head, and the stream (open only on
/// 200).
#[derive(Debug)]
pub struct ConnectReply {
    pub status: u16,
    pub head: String,
    pub body: String,
    pub stream: TcpStream,
}

pub fn basic(user: &str, token: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{token}")))
}

/// Sends `CONNECT authority` on an existing connection to the proxy.
pub async fn connect_on(
    mut stream: TcpStream,
    authority: &str,
    creds: Option<(&str, &str)>,
) -> io::Result<ConnectReply> {
    let mut req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some((u, t)) = creds {
        req.push_str(&format!("Proxy-Authorization: {}\r\n", basic(u, t)));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await?;
    let (status, head, body) = read_response_head(&mut stream).await?;
    Ok(ConnectReply { status, head, body, stream })
}

/// Reads a response head, and the body when `Content-Length` gives one,
/// from the proxy connection or from inside a tunnel.
pub async fn read_response_head(stream: &mut (impl AsyncRead + Unpin)) -> io::Result<(u16, String, String)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "proxy closed before the response head"));
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let len = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    Ok((status, head, String::from_utf8_lossy(&body).into_owned()))
}

/// Opens a TCP connection to the proxy and sends `CONNECT`.
pub async fn connect(proxy: SocketAddr, authority: &str, creds: Option<(&str, &str)>) -> io::Result<ConnectReply> {
    connect_on(TcpStream::connect(proxy).await?, authority, creds).await
}

/// TLS over a tunnel, trusting only the given PEM roots.
pub async fn tls(
    stream: TcpStream,
    server_name: &str,
    roots_pem: &[&str],
    alpn: &[&[u8]],
) -> io::Result<TlsStream<TcpStream>> {
    let cfg = client_config(roots_pem, alpn)?;
    let name = ServerName::try_from(server_name.to_owned()).map_err(io::Error::other)?;
    TlsConnector::from(cfg).connect(name, stream).await
}

/// A client TLS config trusting only the given PEM roots, offering `alpn`.
pub fn client_config(roots_pem: &[&str], alpn: &[&[u8]]) -> io::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for pem in roots_pem {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots.add(cert.map_err(io::Error::other)?).map_err(io::Error::other)?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

/// Which HTTP version to speak inside the tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Http {
    H1,
    H2,
}

/// A response with its whole body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    pub version: http::Version,
    pub trailers: Option<http::HeaderMap>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Sends requests over an established TLS stream with HTTP/1.1 or HTTP/2.
pub async fn send_all(
    tls: TlsStream<TcpStream>,
    http: Http,
    reqs: Vec<Request<Empty<Bytes>>>,
) -> Result<Vec<Reply>, hyper::Error> {
    let mut out = Vec::new();
    match http {
        Http::H1 => {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
            tokio::spawn(conn);
            for req in reqs {
                // A kept-alive connection takes the next request once it
                // has finished reading the last response.
                sender.ready().await?;
                out.push(collect(sender.send_request(req).await?).await?);
            }
        }
        Http::H2 => {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
            tokio::spawn(conn);
            for req in reqs {
                out.push(collect(sender.send_request(req).await?).await?);
            }
        }
    }
    Ok(out)
}

async fn collect(resp: Response<hyper::body::Incoming>) -> Result<Reply, hyper::Error> {
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await?;
    let trailers = collected.trailers().cloned();
    let body = collected.to_bytes();
    Ok(Reply { status: parts.status.as_u16(), headers: parts.headers, body, version: parts.version, trailers })
}

/// A GET request for `https://host:port/path` with extra headers.
pub fn get(host: &str, port: u16, path: &str, headers: &[(&str, &str)], http: Http) -> Request<Empty<Bytes>> {
    let mut b = Request::builder().method("GET");
    b = match http {
        Http::H1 => b.uri(path).header("host", format!("{host}:{port}")),
        Http::H2 => b.uri(format!("https://{host}:{port}{path}")),
    };
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    b.body(Empty::new()).unwrap()
}

/// CONNECT through the proxy, then TLS trusting `roots_pem`, offering the
/// ALPN of `http`.
pub async fn tunnel(
    proxy: SocketAddr,
    creds: (&str, &str),
    host: &str,
    port: u16,
    roots_pem: &[&str],
    http: Http,
) -> io::Result<TlsStream<TcpStream>> {
    let reply = connect(proxy, &format!("{host}:{port}"), Some(creds)).await?;
    if reply.status != 200 {
        return Err(io::Error::other(format!("CONNECT answered {}: {}", reply.status, reply.body)));
    }
    let alpn: &[&[u8]] = match http {
        Http::H1 => &[b"http/1.1"],
        Http::H2 => &[b"h2"],
    };
    tls(reply.stream, host, roots_pem, alpn).await
}

/// CONNECT through the proxy, TLS trusting `roots_pem`, one request.
pub async fn request(
    proxy: SocketAddr,
    creds: (&str, &str),
    host: &str,
    port: u16,
    roots_pem: &[&str],
    http: Http,
    req: Request<Empty<Bytes>>,
) -> io::Result<Reply> {
    let tls = tunnel(proxy, creds, host, port, roots_pem, http).await?;
    let mut replies = send_all(tls, http, vec![req]).await.map_err(io::Error::other)?;
    replies.pop().ok_or_else(|| io::Error::other("no response"))
}

/// CONNECT through the proxy and TLS, returning a ready HTTP/1.1 or HTTP/2
/// sender for streaming tests.
pub async fn open(
    proxy: SocketAddr,
    creds: (&str, &str),
    host: &str,
    port: u16,
    roots_pem: &[&str],
    http: Http,
) -> io::Result<Sender> {
    let tls = tunnel(proxy, creds, host, port, roots_pem, http).await?;
    Ok(match http {
        Http::H1 => {
            let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(io::Error::other)?;
            tokio::spawn(conn);
            Sender::H1(s)
        }
        Http::H2 => {
            let (s, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .map_err(io::Error::other)?;
            tokio::spawn(conn);
            Sender::H2(s)
        }
    })
}

/// An HTTP/1.1 or HTTP/2 request sender.
#[derive(Debug)]
pub enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

impl Sender {
    /// Sends a request once the connection is ready for it (an HTTP/1.1
    /// connection is not until the previous response is read to its end
    /// and the connection task has seen that); the response body is left
    /// to stream.
    pub async fn send(&mut self, req: Request<Empty<Bytes>>) -> Result<Response<hyper::body::Incoming>, hyper::Error> {
        match self {
            Sender::H1(s) => {
                s.ready().await?;
                s.send_request(req).await
            }
            Sender::H2(s) => {
                s.ready().await?;
                s.send_request(req).await
            }
        }
    }
}

/// POSTs `body` to the proxy's action API (`/v1/actions`, plain HTTP/1.1
/// to the listener itself), with `auth` as the named header's value
/// (`("authorization", "Basic …")` or `("proxy-authorization", …)`) and
/// any extra headers.
pub async fn action(proxy: SocketAddr, headers: &[(&str, &str)], body: impl Into<Bytes>) -> io::Result<Reply> {
    action_with("POST", proxy, headers, body).await
}

/// Like [`action`], with another method.
pub async fn action_with(
    method: &str,
    proxy: SocketAddr,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> io::Result<Reply> {
    let tcp = TcpStream::connect(proxy).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.map_err(io::Error::other)?;
    tokio::spawn(conn);
    let mut b = Request::builder().method(method).uri("/v1/actions").header("host", proxy.to_string());
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    let req = b.body(http_body_util::Full::new(body.into())).map_err(io::Error::other)?;
    let resp = sender.send_request(req).await.map_err(io::Error::other)?;
    collect(resp).await.map_err(io::Error::other)
}

/// `Basic base64(user:token)`, as a header value.
pub fn basic_auth(user: &str, token: &str) -> String {
    basic(user, token)
}
