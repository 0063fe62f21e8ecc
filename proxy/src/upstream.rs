//! The upstream side: resolving (with `[proxy].resolve` overrides),
//! connecting, verified TLS against the system roots plus
//! `[proxy].upstream_ca`, and pooled HTTP/1.1 and HTTP/2 clients.
//!
//! There is no way to turn verification off: a certificate that does not
//! verify is an [`ConnectError::Tls`], answered with `upstream_tls_failed`.

use std::collections::HashMap;
use std::error::Error as _;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use airlock_policy::DenialCode;

use crate::Body;

/// Why the trust store could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    /// An `upstream_ca` file could not be read or holds no certificate.
    #[error("upstream_ca {path}: {reason}", path = path.display())]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// No roots at all.
    #[error("no trusted root certificates: the system store is empty and no upstream_ca is set")]
    NoRoots,
}

/// Builds the client TLS config: system roots plus the extra PEM files.
pub fn client_tls(extra: &[PathBuf], alpn: &[&[u8]]) -> Result<Arc<rustls::ClientConfig>, TrustError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A system root rustls cannot parse is skipped, as browsers do.
        let _ = roots.add(cert);
    }
    for path in extra {
        let certs = load_pem_certs(path)?;
        for cert in certs {
            roots.add(cert).map_err(|e| TrustError::CaFile { path: path.clone(), reason: e.to_string() })?;
        }
    }
    if roots.is_empty() {
        return Err(TrustError::NoRoots);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|_| TrustError::NoRoots)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

fn load_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TrustError> {
    let err = |reason: String| TrustError::CaFile { path: path.to_owned(), reason };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate in the file".to_owned()));
    }
    Ok(certs)
}

/// Why an upstream connection failed. Carries its denial code.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConnectError {
    /// Name resolution or TCP connect failed.
    Unreachable {
        /// `host:port`.
        authority: String,
        /// The cause.
        source: io::Error,
    },
    /// The TLS handshake failed (certificate not verified, …).
    Tls {
        /// `host:port`.
        authority: String,
        /// The cause.
        source: io::Error,
    },
    /// Connecting took longer than `[limits] upstream_connect_timeout`.
    Timeout {
        /// `host:port`.
        authority: String,
    },
    /// The destination is airlock's own listener.
    Loop {
        /// `host:port`.
        authority: String,
    },
}

impl ConnectError {
    /// The denial code this failure is answered with.
    pub fn code(&self) -> DenialCode {
        match self {
            ConnectError::Unreachable { .. } | ConnectError::Loop { .. } => DenialCode::UpstreamUnreachable,
            ConnectError::Tls { .. } => DenialCode::UpstreamTlsFailed,
            ConnectError::Timeout { .. } => DenialCode::UpstreamTimeout,
        }
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Unreachable { authority, source } => write!(f, "cannot connect to {authority}: {source}"),
            ConnectError::Tls { authority, source } => write!(f, "TLS with {authority} failed: {}", tls_reason(source)),
            ConnectError::Timeout { authority } => write!(f, "connecting to {authority} timed out"),
            ConnectError::Loop { authority } => write!(f, "{authority} is airlock's own listening address"),
        }
    }
}

/// Why a TLS handshake failed, in words that quote nothing the upstream
/// chose: rustls names the certificate's own names when they do not match,
/// and those are upstream text (a hostile upstream could put a key there,
/// in any letter case).
fn tls_reason(source: &io::Error) -> String {
    use rustls::{CertificateError, Error};
    match source.get_ref().and_then(|e| e.downcast_ref::<Error>()) {
        Some(Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) => "invalid peer certificate: certificate not valid for this host name".to_owned(),
        Some(e) => e.to_string(),
        None => source.get_ref().map(|e| e.to_string()).unwrap_or_else(|| source.to_string()),
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnectError::Unreachable { source, .. } | ConnectError::Tls { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Finds a [`ConnectError`] in an error's source chain.
pub fn find_connect_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a ConnectError> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(c) = e.downcast_ref::<ConnectError>() {
            return Some(c);
        }
        cur = e.source();
    }
    None
}

/// Resolves names: the `[proxy].resolve` overrides first, then the system
/// resolver. Refuses airlock's own listening address.
#[derive(Clone, Debug)]
pub struct Resolver {
    overrides: Arc<HashMap<String, IpAddr>>,
    listen: SocketAddr,
    /// How long TCP connect, and then the TLS handshake, may each take.
    connect_timeout: Duration,
}

impl Resolver {
    /// A resolver with overrides (keys normalised), refusing `listen`;
    /// connecting gives up after `connect_timeout`.
    pub fn new(overrides: HashMap<String, IpAddr>, listen: SocketAddr, connect_timeout: Duration) -> Self {
        Resolver { overrides: Arc::new(overrides), listen, connect_timeout }
    }

    /// The addresses for `host:port`.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ConnectError> {
        let authority = format!("{host}:{port}");
        let addrs: Vec<SocketAddr> = if let Some(ip) = self.overrides.get(host) {
            vec![SocketAddr::new(*ip, port)]
        } else if let Ok(ip) = host.parse::<IpAddr>() {
            vec![SocketAddr::new(ip, port)]
        } else {
            tokio::net::lookup_host((host, port))
                .await
                .map_err(|source| ConnectError::Unreachable { authority: authority.clone(), source })?
                .collect()
        };
        if addrs.iter().any(|a| self.is_self(*a)) {
            return Err(ConnectError::Loop { authority });
        }
        Ok(addrs)
    }

    /// Whether an address is airlock's own listener.
    pub fn is_self(&self, addr: SocketAddr) -> bool {
        addr.port() == self.listen.port()
            && (addr.ip() == self.listen.ip()
                || (self.listen.ip().is_unspecified() && (addr.ip().is_loopback() || addr.ip().is_unspecified()))
                || (self.listen.ip().is_loopback() && addr.ip().is_unspecified()))
    }

    /// Connects TCP to the first address that answers.
    pub async fn connect(&self, host: &str, port: u16) -> Result<TcpStream, ConnectError> {
        let authority = format!("{host}:{port}");
        let attempt = async {
            let addrs = self.resolve(host, port).await?;
            let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
            for addr in addrs {
                match TcpStream::connect(addr).await {
                    Ok(s) => {
                        let _ = s.set_nodelay(true);
                        return Ok(s);
                    }
                    Err(e) => last = e,
                }
            }
            Err(ConnectError::Unreachable { authority: authority.clone(), source: last })
        };
        tokio::time::timeout(self.connect_timeout, attempt).await.map_err(|_| ConnectError::Timeout { authority })?
    }
}

/// A connection to an upstream, plain or TLS.
#[derive(Debug)]
pub enum UpstreamStream {
    /// `http://`.
    Plain(TcpStream),
    /// `https://`.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection for UpstreamStream {
    fn connected(&self) -> Connected {
        match self {
            UpstreamStream::Tls(t) if t.get_ref().1.alpn_protocol() == Some(b"h2") => Connected::new().negotiated_h2(),
            _ => Connected::new(),
        }
    }
}

impl AsyncRead for UpstreamStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamStream::Plain(s) => s.is_write_vectored(),
            UpstreamStream::Tls(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The `tower` connector the pooled clients use.
#[derive(Clone)]
pub struct Connector {
    resolver: Resolver,
    tls: TlsConnector,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector").field("resolver", &self.resolver).finish_non_exhaustive()
    }
}

impl Connector {
    /// A connector over a resolver and a client TLS config.
    pub fn new(resolver: Resolver, tls: Arc<rustls::ClientConfig>) -> Self {
        Connector { resolver, tls: TlsConnector::from(tls) }
    }

    /// Connects to `host:port`, with TLS when `tls` is set.
    pub async fn connect(&self, host: &str, port: u16, tls: bool) -> Result<UpstreamStream, ConnectError> {
        let tcp = self.resolver.connect(host, port).await?;
        if !tls {
            return Ok(UpstreamStream::Plain(tcp));
        }
        let authority = format!("{host}:{port}");
        let name = ServerName::try_from(host.to_owned()).map_err(|e| ConnectError::Tls {
            authority: authority.clone(),
            source: io::Error::new(io::ErrorKind::InvalidInput, e),
        })?;
        let handshake = self.tls.connect(name, tcp);
        match tokio::time::timeout(self.resolver.connect_timeout, handshake).await {
            Ok(Ok(s)) => Ok(UpstreamStream::Tls(Box::new(s))),
            Ok(Err(source)) => Err(ConnectError::Tls { authority, source }),
            Err(_) => Err(ConnectError::Timeout { authority }),
        }
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<UpstreamStream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tls = uri.scheme_str() == Some("https");
            let host = uri.host().unwrap_or("").trim_start_matches('[').trim_end_matches(']').to_owned();
            let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
            this.connect(&host, port, tls).await.map(TokioIo::new)
        })
    }
}

/// The pooled upstream clients.
#[derive(Clone, Debug)]
pub struct Upstream {
    /// Offers h2 and http/1.1 by ALPN.
    pub client: Client<Connector, Body>,
    /// HTTP/1.1 only: used for upgrade (WebSocket) requests, which HTTP/2
    /// cannot carry.
    pub client_h1: Client<Connector, Body>,
    /// The resolver, for tunnels.
    pub resolver: Resolver,
}

impl Upstream {
    /// Builds both clients from the proxy settings.
    pub fn new(settings: &airlock_policy::ProxySettings, limits: &airlock_policy::Limits) -> Result<Self, TrustError> {
        let resolver = Resolver::new(settings.resolve.clone(), settings.listen, limits.upstream_connect_timeout);
        let both = client_tls(&settings.upstream_ca, &[b"h2", b"http/1.1"])?;
        let h1 = client_tls(&settings.upstream_ca, &[b"http/1.1"])?;
        let build = |tls| {
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(90))
                .build(Connector::new(resolver.clone(), tls))
        };
        Ok(Upstream { client: build(both), client_h1: build(h1), resolver })
    }
}

/// Maps a client error to the denial code and a reason safe to show.
pub fn classify(err: &hyper_util::client::legacy::Error) -> (DenialCode, String) {
    if let Some(c) = find_connect_error(err) {
        return (c.code(), c.to_string());
    }
    let mut reason = err.to_string();
    if let Some(src) = err.source() {
        reason = format!("{reason}: {src}");
    }
    (DenialCode::UpstreamUnreachable, reason)
}
