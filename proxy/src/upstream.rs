//! The upstream side: where a connection may go and getting there
//! (`dial`: one lookup with the `[proxy].resolve` overrides, vetted
//! against the connection's [`Egress`] rule, the vetted addresses raced),
//! verified TLS against the system roots plus `[proxy].upstream_ca`, and
//! pooled HTTP/1.1 and HTTP/2 clients, one set per egress rule.
//!
//! There is no way to turn verification off: a certificate that does not
//! verify is an [`ConnectError::Tls`], answered with `upstream_tls_failed`.

use std::error::Error as _;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use airlock_policy::Limits;

use crate::Body;

mod dial;
mod identity;
#[cfg(test)]
pub(crate) mod scripted;

pub use dial::{Egress, Resolver};
pub use identity::{ClientIdentity, IdentityClients, IdentityError};

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
    tls_config(trust_roots(extra)?, alpn, None)
}

/// A client TLS config over `roots` offering `alpn`, presenting `identity`
/// when the upstream asks for a client certificate (none without).
fn tls_config(
    roots: Arc<rustls::RootCertStore>,
    alpn: &[&[u8]],
    identity: Option<&ClientIdentity>,
) -> Result<Arc<rustls::ClientConfig>, TrustError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|_| TrustError::NoRoots)?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(identity) => builder.with_client_cert_resolver(identity.resolver()),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The roots upstream certificates are verified against: the system's
/// plus the extra PEM files.
fn trust_roots(extra: &[PathBuf]) -> Result<Arc<rustls::RootCertStore>, TrustError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in native_roots() {
        // A system root rustls cannot parse is skipped, as browsers do.
        let _ = roots.add(cert.clone());
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
    Ok(Arc::new(roots))
}

/// The system's trusted roots, read once per process: reading them is
/// slow (hundreds of files), and every reload builds two trust stores. A
/// change to the system store takes effect at the next start.
fn native_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: std::sync::OnceLock<Vec<CertificateDer<'static>>> = std::sync::OnceLock::new();
    ROOTS.get_or_init(|| rustls_native_certs::load_native_certs().certs)
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
    /// The host resolves to a loopback, private or other non-public
    /// address, and the connection may go only to public ones
    /// ([`Egress::Public`]).
    PrivateAddress {
        /// The host.
        host: String,
        /// The address refused.
        ip: IpAddr,
    },
    /// The host resolves to a public address, and the connection may go
    /// only to loopback and private ones ([`Egress::Private`]).
    PublicAddress {
        /// The host.
        host: String,
        /// The address refused.
        ip: IpAddr,
    },
}

impl ConnectError {
    /// What the agent can do about it (the egress refusals are answered
    /// in the policy's words by the caller).
    pub fn advice(&self) -> Advice {
        match self {
            ConnectError::Tls { source, .. } => find_rustls(source).map_or(Advice::UpstreamCa, |e| tls_failure(e).1),
            ConnectError::Timeout { .. } => Advice::RetryLater,
            ConnectError::Unreachable { .. } | ConnectError::Loop { .. } => Advice::CheckHost,
            ConnectError::PrivateAddress { .. } | ConnectError::PublicAddress { .. } => Advice::Retry,
        }
    }
}

/// What the agent can do about an upstream failure; the words are
/// `respond`'s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Advice {
    /// Check the host name and port, and that it is reachable.
    CheckHost,
    /// Retry later; check the host is up.
    RetryLater,
    /// The certificate did not verify: the operator may add its CA.
    UpstreamCa,
    /// The upstream wants a client certificate.
    ClientCertificate,
    /// The upstream refused the client certificate airlock presented.
    ClientCertificateRefused,
    /// Retry; the upstream is at fault if it persists.
    Retry,
}

/// A request to the upstream that failed, classified by [`classify`] (or
/// made from a [`ConnectError`] found among its causes). Its text quotes
/// nothing the upstream chose.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub struct Failure {
    /// Which denial it is answered with.
    pub kind: FailureKind,
    /// What happened.
    pub reason: String,
    /// What to do about it.
    pub advice: Advice,
}

/// The kinds of upstream failure, each its own denial code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// `upstream_unreachable`.
    Unreachable,
    /// `upstream_tls_failed`.
    Tls,
    /// `upstream_timeout`.
    Timeout,
}

impl From<&ConnectError> for Failure {
    fn from(e: &ConnectError) -> Self {
        let kind = match e {
            ConnectError::Tls { .. } => FailureKind::Tls,
            ConnectError::Timeout { .. } => FailureKind::Timeout,
            _ => FailureKind::Unreachable,
        };
        Failure { kind, reason: e.to_string(), advice: e.advice() }
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Unreachable { authority, source } => write!(f, "cannot connect to {authority}: {source}"),
            ConnectError::Tls { authority, source } => write!(f, "TLS with {authority} failed: {}", tls_reason(source)),
            ConnectError::Timeout { authority } => write!(f, "connecting to {authority} timed out"),
            ConnectError::Loop { authority } => write!(f, "{authority} is airlock's own listening address"),
            ConnectError::PrivateAddress { host, ip } => {
                write!(f, "{host} resolves to {ip}, a loopback, private or link-local address")
            }
            ConnectError::PublicAddress { host, ip } => write!(f, "{host} resolves to {ip}, a public address"),
        }
    }
}

/// Why a TLS handshake failed, in words that quote nothing the upstream
/// chose (see [`tls_failure`]).
fn tls_reason(source: &io::Error) -> String {
    match find_rustls(source) {
        Some(e) => tls_failure(e).0,
        None => match source.kind() {
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => {
                "the upstream closed the connection during the TLS handshake".to_owned()
            }
            _ => source.kind().to_string(),
        },
    }
}

/// The rustls error in an error's causes, if any.
fn find_rustls<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    causes(err).find_map(|e| e.downcast_ref::<rustls::Error>())
}

/// An error and its causes. `io::Error::source` skips the error it wraps
/// (it returns that error's source), and `h2::Error` has no `source`, so
/// both are looked through by hand.
fn causes<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(err), |&e: &&'a (dyn std::error::Error + 'static)| {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            io.get_ref().map(|inner| inner as &(dyn std::error::Error + 'static))
        } else if let Some(h2) = e.downcast_ref::<h2::Error>() {
            h2.get_io().map(|io| io as &(dyn std::error::Error + 'static))
        } else {
            e.source()
        }
    })
}

/// A TLS failure in words, and what to do about it. Nothing the upstream
/// chose is quoted: rustls names the certificate's own names when they do
/// not match, and those are upstream text (a hostile upstream could put a
/// key there, in any letter case); alerts and protocol faults are named by
/// their registered names (RFC 8446 §6, RFC 5246 §7.2).
fn tls_failure(e: &rustls::Error) -> (String, Advice) {
    use rustls::{AlertDescription, CertificateError, Error};
    match e {
        Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => ("invalid peer certificate: certificate not valid for this host name".to_owned(), Advice::UpstreamCa),
        Error::InvalidCertificate(_) => (e.to_string(), Advice::UpstreamCa),
        Error::AlertReceived(AlertDescription::CertificateRequired) => (
            "the upstream requires a client certificate (TLS alert certificate_required), and airlock presented none"
                .to_owned(),
            Advice::ClientCertificate,
        ),
        Error::AlertReceived(AlertDescription::HandshakeFailure) => (
            "the upstream refused the TLS handshake (TLS alert handshake_failure): it may require a client \
             certificate, or share no TLS version or cipher suite with airlock"
                .to_owned(),
            Advice::ClientCertificate,
        ),
        // Sent by a server, these name the client's certificate (RFC 8446
        // §6.2): the one a route's client_cert presented.
        Error::AlertReceived(
            alert @ (AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
            | AlertDescription::AccessDenied),
        ) => (
            format!("the upstream refused the client certificate airlock presented (TLS alert {})", alert_name(*alert)),
            Advice::ClientCertificateRefused,
        ),
        Error::AlertReceived(alert) => {
            (format!("the upstream refused the TLS connection (TLS alert {})", alert_name(*alert)), Advice::Retry)
        }
        Error::PeerIncompatible(_) => (
            format!("the upstream's TLS is incompatible with airlock's (TLS 1.2 or 1.3, modern cipher suites): {e}"),
            Advice::Retry,
        ),
        _ => (format!("the upstream broke the TLS protocol: {e}"), Advice::Retry),
    }
}

/// An alert's registered name (`certificate_required`), from rustls's
/// variant name; an unregistered one is its number.
fn alert_name(alert: rustls::AlertDescription) -> String {
    let debug = format!("{alert:?}");
    if !debug.chars().all(|c| c.is_ascii_alphanumeric()) {
        return format!("{}", u8::from(alert));
    }
    // A word starts at a capital after a small letter: `UnknownCA` is
    // `unknown_ca`, `UnknownPSKIdentity` `unknown_psk_identity`.
    let chars: Vec<char> = debug.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        let after_small = i > 0 && chars[i - 1].is_ascii_lowercase();
        let ends_capitals =
            i > 0 && chars[i - 1].is_ascii_uppercase() && chars.get(i + 1).is_some_and(char::is_ascii_lowercase);
        if c.is_ascii_uppercase() && (after_small || ends_capitals) {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
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
    causes(err).find_map(|e| e.downcast_ref::<ConnectError>())
}

/// A connection to an upstream, plain or TLS, with what is known about it.
#[derive(Debug)]
pub struct UpstreamStream {
    io: Io,
    state: ConnState,
}

#[derive(Debug)]
enum Io {
    /// `http://`.
    Plain(TcpStream),
    /// `https://`.
    Tls(Box<TlsStream<TcpStream>>),
}

impl UpstreamStream {
    fn new(io: Io) -> Self {
        UpstreamStream { io, state: ConnState::default() }
    }

    /// Notes a TLS error seen on the connection: HTTP/2 passes an I/O
    /// error on as text, so the error hyper reports may no longer hold it.
    fn note<T>(&self, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if let Poll::Ready(Err(e)) = &polled
            && let Some(tls) = find_rustls(e)
            && let Ok(mut slot) = self.state.0.tls_error.lock()
        {
            slot.get_or_insert_with(|| tls.clone());
        }
        polled
    }
}

/// What is known about an upstream connection: whether it has answered a
/// request, and the TLS error that broke it, if one did. The pooled
/// clients carry it as the connection's extra ([`Connected::extra`]): in
/// the extensions of each response, and in the connect info of each
/// error. A connection that has answered before and then fails before a
/// response head is a reused one the server may have closed as idle.
#[derive(Clone, Debug, Default)]
pub struct ConnState(Arc<ConnStateInner>);

#[derive(Debug, Default)]
struct ConnStateInner {
    answered: AtomicBool,
    tls_error: std::sync::Mutex<Option<rustls::Error>>,
}

impl ConnState {
    /// Marks the connection as having answered a request.
    pub fn mark_answered(&self) {
        self.0.answered.store(true, Ordering::Relaxed);
    }

    /// Whether it has answered a request before.
    pub fn answered(&self) -> bool {
        self.0.answered.load(Ordering::Relaxed)
    }

    /// The TLS error that broke the connection, if one did.
    fn tls_error(&self) -> Option<rustls::Error> {
        self.0.tls_error.lock().ok().and_then(|e| e.clone())
    }

    /// The state of the connection a client error happened on.
    fn of(err: &hyper_util::client::legacy::Error) -> Option<ConnState> {
        let mut extensions = http::Extensions::new();
        err.connect_info()?.get_extras(&mut extensions);
        extensions.get::<ConnState>().cloned()
    }
}

impl Connection for UpstreamStream {
    fn connected(&self) -> Connected {
        let connected = Connected::new().extra(self.state.clone());
        match &self.io {
            Io::Tls(t) if t.get_ref().1.alpn_protocol() == Some(b"h2") => connected.negotiated_h2(),
            _ => connected,
        }
    }
}

impl AsyncRead for UpstreamStream {
    /// Reads; a TLS connection closed without `close_notify` reads as a
    /// plain end of stream. HTTP's own framing then judges it, as RFC 9112
    /// §9.8 asks: a body with a `Content-Length` or chunked framing that
    /// ends early is still an incomplete message (hyper fails it), while a
    /// body delimited by the close is whole — as curl and browsers take it,
    /// and as many servers end one. A truncation attacker gains nothing the
    /// agent would not get direct.
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => match Pin::new(s.as_mut()).poll_read(cx, buf) {
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => Poll::Ready(Ok(())),
                other => this.note(other),
            },
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => {
                let polled = Pin::new(s.as_mut()).poll_write(cx, buf);
                this.note(polled)
            }
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => {
                let polled = Pin::new(s.as_mut()).poll_write_vectored(cx, bufs);
                this.note(polled)
            }
        }
    }
    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The `tower` connector the pooled clients use. Each connects under one
/// [`Egress`] rule, fixed when it is made: every connection it makes goes
/// only to addresses its own lookup gave and the rule allows.
#[derive(Clone)]
pub struct Connector {
    resolver: Resolver,
    tls: TlsConnector,
    egress: Egress,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("resolver", &self.resolver)
            .field("egress", &self.egress)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// A connector over a resolver and a client TLS config, connecting
    /// under `egress`.
    pub fn new(resolver: Resolver, tls: Arc<rustls::ClientConfig>, egress: Egress) -> Self {
        Connector { resolver, tls: TlsConnector::from(tls), egress }
    }

    /// Connects to `host:port`, with TLS when `tls` is set.
    pub async fn connect(&self, host: &str, port: u16, tls: bool) -> Result<UpstreamStream, ConnectError> {
        let tcp = self.resolver.connect(host, port, self.egress).await?;
        if !tls {
            return Ok(UpstreamStream::new(Io::Plain(tcp)));
        }
        let authority = format!("{host}:{port}");
        let name = ServerName::try_from(host.to_owned()).map_err(|e| ConnectError::Tls {
            authority: authority.clone(),
            source: io::Error::new(io::ErrorKind::InvalidInput, e),
        })?;
        let handshake = self.tls.connect(name, tcp);
        match tokio::time::timeout(self.resolver.connect_timeout(), handshake).await {
            Ok(Ok(s)) => Ok(UpstreamStream::new(Io::Tls(Box::new(s)))),
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

/// The pooled upstream clients: for each [`Egress`] rule, one offering h2
/// and http/1.1 by ALPN and one HTTP/1.1 only (for upgrade requests,
/// WebSocket, which HTTP/2 cannot carry).
///
/// Each rule has pools of its own. A pooled connection is keyed by scheme
/// and authority only, and checked by nothing when it is reused, so one
/// pool for all would hand a connection made under one rule — tenant A's
/// route names a host that resolves to a private address — to a request
/// under a stricter one: tenant B, no route, whose own lookup may well
/// have answered a public address. Within a rule, a connection serves
/// any request: the rule, not the tenant, is what it was vetted against.
///
/// A route with a client certificate has clients of its own on top, per
/// rule ([`Upstream::identity`]; see `identity` for why).
#[derive(Clone, Debug)]
pub struct Upstream {
    any: Clients,
    public: Clients,
    private: Clients,
    /// The resolver, for tunnels.
    pub resolver: Resolver,
    /// What new clients are built with.
    pool: PoolSettings,
    /// The clients of routes with a client certificate.
    identities: identity::Identities,
}

/// What every pooled client is built with.
#[derive(Clone)]
struct PoolSettings {
    roots: Arc<rustls::RootCertStore>,
    idle: std::time::Duration,
    head: usize,
}

impl fmt::Debug for PoolSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolSettings")
            .field("roots", &self.roots.len())
            .field("idle", &self.idle)
            .field("head", &self.head)
            .finish()
    }
}

/// One egress rule's clients.
#[derive(Clone, Debug)]
struct Clients {
    both: Client<Connector, Body>,
    h1: Client<Connector, Body>,
}

impl Clients {
    /// The two clients under `egress` over TLS configs `both` (h2 and
    /// http/1.1 by ALPN) and `h1`. Idle connections are kept for
    /// `upstream_pool_idle_timeout`; a response head may be up to
    /// `max_response_header_bytes` in either HTTP version (HTTP/1.1: the
    /// read buffer the head must fit in; HTTP/2: the
    /// `SETTINGS_MAX_HEADER_LIST_SIZE` airlock announces, RFC 9113 §6.5.2).
    fn new(
        pool: &PoolSettings,
        resolver: &Resolver,
        both: &Arc<rustls::ClientConfig>,
        h1: &Arc<rustls::ClientConfig>,
        egress: Egress,
    ) -> Self {
        let build = |tls: &Arc<rustls::ClientConfig>| {
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(pool.idle)
                .pool_timer(TokioTimer::new())
                .http1_max_buf_size(pool.head.max(8192))
                .http2_max_header_list_size(u32::try_from(pool.head).unwrap_or(u32::MAX))
                .build(Connector::new(resolver.clone(), Arc::clone(tls), egress))
        };
        Clients { both: build(both), h1: build(h1) }
    }
}

impl Upstream {
    /// Builds the clients from the proxy settings (see [`Clients::new`]).
    pub fn new(settings: &airlock_policy::ProxySettings, limits: &Limits) -> Result<Self, TrustError> {
        let resolver = Resolver::new(settings.resolve.clone(), settings.listen, limits.upstream_connect_timeout);
        let pool = PoolSettings {
            roots: trust_roots(&settings.upstream_ca)?,
            idle: limits.upstream_pool_idle_timeout,
            head: limits.max_response_header_bytes,
        };
        let both = tls_config(Arc::clone(&pool.roots), &[b"h2", b"http/1.1"], None)?;
        let h1 = tls_config(Arc::clone(&pool.roots), &[b"http/1.1"], None)?;
        let clients = |egress| Clients::new(&pool, &resolver, &both, &h1, egress);
        Ok(Upstream {
            any: clients(Egress::Any),
            public: clients(Egress::Public),
            private: clients(Egress::Private),
            resolver,
            pool,
            identities: identity::Identities::default(),
        })
    }

    /// The clients of route `route` under `egress`, presenting the client
    /// certificate whose chain is `cert` and key `key` (PEM, secrets
    /// `cert_name` and `key_name`): built on the first request, and again
    /// when the values change; never shared with another route or with
    /// requests without a certificate.
    pub fn identity(
        &self,
        route: airlock_policy::RouteId,
        egress: Egress,
        (cert_name, cert): (&str, &airlock_policy::secrets::SecretValue),
        (key_name, key): (&str, &airlock_policy::secrets::SecretValue),
    ) -> Result<Arc<IdentityClients>, IdentityError> {
        self.identities.get_or_build(route, egress, cert, key, || {
            let identity = ClientIdentity::parse(cert_name, cert.expose(), key_name, key.expose())?;
            // The roots were accepted when the config loaded; building a
            // config over them with a resolver cannot fail.
            let config = |alpn: &[&[u8]]| tls_config(Arc::clone(&self.pool.roots), alpn, Some(&identity));
            let (Ok(both), Ok(h1)) = (config(&[b"h2", b"http/1.1"]), config(&[b"http/1.1"])) else {
                return Err(IdentityError::UnusableKey { secret: key_name.to_owned() });
            };
            Ok(IdentityClients { clients: Clients::new(&self.pool, &self.resolver, &both, &h1, egress) })
        })
    }

    /// The client for a request whose connection is under `egress`;
    /// `h1_only` for an upgrade request.
    pub fn client(&self, egress: Egress, h1_only: bool) -> &Client<Connector, Body> {
        let clients = match egress {
            Egress::Any => &self.any,
            Egress::Public => &self.public,
            Egress::Private => &self.private,
        };
        if h1_only { &clients.h1 } else { &clients.both }
    }
}

/// Classifies a client error that is not a connect failure (the caller
/// looks for one first, with [`find_connect_error`]): a reason that quotes
/// nothing the upstream chose (no GOAWAY debug data, no certificate names,
/// no upstream bytes), and advice.
///
/// - any rustls error among the causes — an alert the upstream sent after
///   the handshake too, as a TLS 1.3 server checking a client certificate
///   does on the client's first read — is a TLS failure
///   (`upstream_tls_failed`);
/// - everything else is `upstream_unreachable`, named: a response head
///   over `max_response_header_bytes` or malformed, a connection closed or
///   reset before a response, an HTTP/2 stream or connection error.
pub fn classify(err: &hyper_util::client::legacy::Error, limits: &Limits) -> Failure {
    let noted = ConnState::of(err).and_then(|state| state.tls_error());
    if let Some(tls) = find_rustls(err).or(noted.as_ref()) {
        let (reason, advice) = tls_failure(tls);
        let reason = format!("TLS with the upstream failed: {reason}");
        return Failure { kind: FailureKind::Tls, reason, advice };
    }
    let limit = limits.max_response_header_bytes;
    let too_large = || {
        format!(
            "the upstream's response head is larger than airlock accepts ([limits] max_response_header_bytes = {limit} \
             bytes)"
        )
    };
    let reason = causes(err).find_map(|cause| {
        if let Some(h) = cause.downcast_ref::<hyper::Error>() {
            if h.is_parse_too_large() {
                return Some(too_large());
            }
            if h.is_parse() {
                return Some("the upstream's response head is not valid HTTP/1.1".to_owned());
            }
            if h.is_incomplete_message() {
                return Some("the upstream closed the connection before it sent a whole response head".to_owned());
            }
        }
        if let Some(h2) = cause.downcast_ref::<h2::Error>() {
            return h2_reason(h2, limit);
        }
        let io = cause.downcast_ref::<io::Error>()?;
        Some(
            match io.kind() {
                io::ErrorKind::ConnectionReset => "the upstream reset the connection before it sent a response",
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionAborted => {
                    "the upstream closed the connection while airlock was sending the request"
                }
                io::ErrorKind::UnexpectedEof => "the upstream closed the connection before it sent a whole response",
                _ => return None,
            }
            .to_owned(),
        )
    });
    let reason = reason.unwrap_or_else(|| match err.source() {
        // hyper's own words for the kind of failure: fixed text.
        Some(kind) => format!("the request to the upstream failed: {kind}"),
        None => "the request to the upstream failed".to_owned(),
    });
    Failure { kind: FailureKind::Unreachable, reason, advice: Advice::Retry }
}

/// An HTTP/2 failure in words: who ended what, with the error code's
/// registered name (RFC 9113 §7), never the GOAWAY's debug data.
fn h2_reason(e: &h2::Error, limit: usize) -> Option<String> {
    let reason = e.reason()?;
    let code = format!("{reason:?}");
    Some(if e.is_remote() && e.is_reset() {
        format!("the upstream reset the HTTP/2 stream ({code}) before it sent a response")
    } else if e.is_remote() && e.is_go_away() {
        format!("the upstream closed the HTTP/2 connection (GOAWAY {code}) before it sent a response")
    } else {
        // Detected here: a malformed response, or one whose head was over
        // the header list size airlock announced.
        format!(
            "the upstream broke the HTTP/2 protocol ({code}): a malformed response, or a response head over \
             [limits] max_response_header_bytes = {limit} bytes"
        )
    })
}

/// When a request that failed before any response may be sent again, on
/// a new connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resend {
    /// The upstream said it never processed it ([`never_processed`]):
    /// whatever its method.
    AnyMethod,
    /// Its pooled connection was closed as it came
    /// ([`closed_while_idle`]): only an idempotent method.
    IfIdempotent,
}

impl Resend {
    /// The rule a failure falls under, if any.
    pub(crate) fn of(err: &hyper_util::client::legacy::Error) -> Option<Resend> {
        if never_processed(err) {
            Some(Resend::AnyMethod)
        } else if closed_while_idle(err) {
            Some(Resend::IfIdempotent)
        } else {
            None
        }
    }

    /// Whether the rule lets `method` be sent again.
    pub(crate) fn allows(self, method: &http::Method) -> bool {
        self == Resend::AnyMethod || method.is_idempotent()
    }

    /// What happened, in words for a denial.
    pub(crate) fn cause(self) -> &'static str {
        match self {
            Resend::AnyMethod => "the upstream refused the request unprocessed",
            Resend::IfIdempotent => "the upstream closed a pooled connection as the request came",
        }
    }
}

/// Whether an HTTP/2 upstream said it never processed the request: it
/// refused the stream (`REFUSED_STREAM`), or sent a `GOAWAY` whose last
/// stream is below it (h2 fails only those streams with the `GOAWAY`).
/// Either way the request may be sent again whatever its method (RFC 9113
/// §8.7), on any connection, new or pooled.
fn never_processed(err: &hyper_util::client::legacy::Error) -> bool {
    causes(err).any(|cause| {
        cause.downcast_ref::<h2::Error>().is_some_and(|h2| {
            h2.is_remote() && (h2.is_go_away() || (h2.is_reset() && h2.reason() == Some(h2::Reason::REFUSED_STREAM)))
        })
    })
}

/// Whether a failed request may be sent again on a new connection: it
/// failed on a pooled connection that had answered before ([`ConnState`]),
/// before any response head, because the connection was closed or reset —
/// the race of a server closing an idle connection just as a request
/// arrives (RFC 9112 §9.3.1). A fresh connection that fails is not retried:
/// the upstream refused this request, not an idle connection.
fn closed_while_idle(err: &hyper_util::client::legacy::Error) -> bool {
    ConnState::of(err).is_some_and(|state| state.answered())
        && causes(err).any(|cause| {
            if let Some(h) = cause.downcast_ref::<hyper::Error>() {
                return h.is_incomplete_message();
            }
            if let Some(h2) = cause.downcast_ref::<h2::Error>() {
                // GOAWAY, or a stream refused before any processing (RFC
                // 9113 §8.7).
                return h2.is_remote()
                    && matches!(h2.reason(), Some(h2::Reason::NO_ERROR | h2::Reason::REFUSED_STREAM));
            }
            cause.downcast_ref::<io::Error>().is_some_and(|io| {
                matches!(
                    io.kind(),
                    io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::BrokenPipe
                        | io::ErrorKind::UnexpectedEof
                )
            })
        })
}

#[cfg(test)]
mod tests {
    use rustls::AlertDescription;

    use super::alert_name;

    #[test]
    fn alerts_are_named_as_registered() {
        assert_eq!(alert_name(AlertDescription::CertificateRequired), "certificate_required");
        assert_eq!(alert_name(AlertDescription::UnknownCA), "unknown_ca");
        assert_eq!(alert_name(AlertDescription::UnknownPSKIdentity), "unknown_psk_identity");
        assert_eq!(alert_name(AlertDescription::Unknown(200)), "200");
    }
}
