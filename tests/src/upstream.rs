//! A real TLS upstream on 127.0.0.1:0 that echoes the request it received
//! as JSON, records what it saw, and counts its connections. Real
//! applications (a git server, a package index) can be mounted on it under
//! a path prefix.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::TempHome;
use crate::apps::{App, Mount};

pub(crate) use self::full as full_body;
pub(crate) type Body = TestBody;

/// A CA minted at test time, for upstream certificates.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TestCa")
    }
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        TestCa { issuer }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf for `names` (IP literals become IP SANs) that is current or
    /// already expired, and its key.
    pub fn leaf(&self, names: &[&str], validity: Validity) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let mut params = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        if validity == Validity::Expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let chain = vec![cert.der().clone(), self.issuer.der().clone()];
        (chain, PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())))
    }

    pub fn server_config(&self, names: &[&str], alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
        self.server_config_valid(names, alpn, Validity::Current)
    }

    /// A server config presenting a leaf for `names` with `validity`.
    pub fn server_config_valid(&self, names: &[&str], alpn: &[&[u8]], validity: Validity) -> Arc<rustls::ServerConfig> {
        let (chain, key) = self.leaf(names, validity);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(cfg)
    }

    /// A server config that demands a client certificate issued by this CA
    /// (mutual TLS), speaking only `version`.
    pub fn server_config_client_auth(
        &self,
        names: &[&str],
        alpn: &[&[u8]],
        version: &'static rustls::SupportedProtocolVersion,
    ) -> Arc<rustls::ServerConfig> {
        let (chain, key) = self.leaf(names, Validity::Current);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .unwrap();
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[version])
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .unwrap();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(cfg)
    }
}

/// Whether a leaf is valid now or expired long ago.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validity {
    Current,
    Expired,
}

/// A subject name no other test CA in this process has, so a chain from
/// another test CA fails as an unknown issuer, not on its signature.
pub(crate) fn unique_ca_name(what: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("airlock test {what} CA {}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The names test upstreams' certificates are for.
pub const TEST_NAMES: [&str; 4] = ["api.acme.test", "api.beta.test", "other.test", "127.0.0.1"];

/// A fresh test CA, with its certificate written to a file (for
/// `upstream_ca`) in a temporary directory that lives as long as the
/// returned [`TempHome`].
pub(crate) fn ca_with_file(what: &str) -> (TestCa, TempHome, PathBuf) {
    let ca = TestCa::new(&unique_ca_name(what));
    let dir = TempHome::new(what);
    let path = dir.path.join("upstream-ca.pem");
    std::fs::write(&path, ca.pem()).unwrap();
    (ca, dir, path)
}

/// One request the upstream received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
    /// The request body, as it arrived (the echo endpoint only; empty
    /// elsewhere).
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Which protocols the upstream offers by ALPN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocols {
    Http1,
    Http2,
    Both,
    /// No TLS at all.
    Plain,
}

/// The echo upstream.
#[derive(Debug)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub ca: Arc<TestCa>,
    /// The test CA's certificate, as a file for `upstream_ca`.
    pub ca_path: PathBuf,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
    sse: Arc<tokio::sync::Notify>,
    mounts: Arc<Mutex<Vec<Mount>>>,
    _dir: TempHome,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    /// An upstream with a certificate for the usual test names.
    pub async fn start(protocols: Protocols) -> Upstream {
        Upstream::start_with_names(protocols, &TEST_NAMES).await
    }

    pub async fn start_with_names(protocols: Protocols, names: &[&str]) -> Upstream {
        Upstream::start_on("127.0.0.1:0".parse().unwrap(), protocols, names, false).await
    }

    /// An upstream whose certificate for the usual names expired long ago.
    pub async fn start_expired(protocols: Protocols) -> Upstream {
        Upstream::start_full("127.0.0.1:0".parse().unwrap(), protocols, &TEST_NAMES, false, Validity::Expired).await
    }

    /// An upstream on `listen`; with `print`, each request's method, path
    /// and `Authorization` header are printed to stdout (the walkthrough's
    /// stand-in API does this to show what arrived).
    pub async fn start_on(listen: SocketAddr, protocols: Protocols, names: &[&str], print: bool) -> Upstream {
        Upstream::start_full(listen, protocols, names, print, Validity::Current).await
    }

    async fn start_full(
        listen: SocketAddr,
        protocols: Protocols,
        names: &[&str],
        print: bool,
        validity: Validity,
    ) -> Upstream {
        let (ca, dir, ca_path) = ca_with_file("upstream");
        let ca = Arc::new(ca);
        let alpn: &[&[u8]] = match protocols {
            Protocols::Http1 => &[b"http/1.1"],
            Protocols::Http2 => &[b"h2"],
            Protocols::Both => &[b"h2", b"http/1.1"],
            Protocols::Plain => &[],
        };
        let acceptor =
            (protocols != Protocols::Plain).then(|| TlsAcceptor::from(ca.server_config_valid(names, alpn, validity)));
        let listener = TcpListener::bind(listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (seen2, conns2) = (Arc::clone(&seen), Arc::clone(&connections));
        let sse = Arc::new(tokio::sync::Notify::new());
        let sse2 = Arc::clone(&sse);
        let mounts = Arc::new(Mutex::new(Vec::new()));
        let mounts2 = Arc::clone(&mounts);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                conns2.fetch_add(1, Ordering::SeqCst);
                let seen = Arc::clone(&seen2);
                let sse = Arc::clone(&sse2);
                let mounts = Arc::clone(&mounts2);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let seen = Arc::clone(&seen);
                        let sse = Arc::clone(&sse);
                        let mounts = Arc::clone(&mounts);
                        async move { Ok::<_, Infallible>(echo(req, &seen, print, &sse, &mounts).await) }
                    });
                    match acceptor {
                        None => {
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(tcp), service)
                                .with_upgrades()
                                .await;
                        }
                        Some(acceptor) => {
                            let Ok(tls) = acceptor.accept(tcp).await else { return };
                            if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                                // Request heads up to 1 MiB, as Go's net/http
                                // (hyper's default is 16 KiB).
                                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                                    .max_header_list_size(1 << 20)
                                    .serve_connection(TokioIo::new(tls), service)
                                    .await;
                            } else {
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(TokioIo::new(tls), service)
                                    .with_upgrades()
                                    .await;
                            }
                        }
                    }
                });
            }
        });
        Upstream { addr, ca, ca_path, seen, connections, sse, mounts, _dir: dir, task }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Lets the `/sse` endpoint send its second event.
    pub fn release_sse(&self) {
        self.sse.notify_one();
    }

    /// Serves `app` under the path `prefix` (e.g. `/git`) instead of the
    /// echo, to requests whose Basic credentials have `password` as their
    /// password; others get 401 and a Basic challenge.
    pub fn mount(&self, prefix: &str, password: &str, app: App) {
        let mount = Mount { prefix: prefix.trim_end_matches('/').to_owned(), password: password.to_owned(), app };
        self.mounts.lock().unwrap().push(mount);
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

pub(crate) type TestBody = BoxBody<Bytes, std::io::Error>;

pub(crate) fn full(b: impl Into<Bytes>) -> TestBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// The echo endpoint: mounted applications under their prefixes; `/ws`
/// upgrades and echoes bytes; everything else answers JSON with the method,
/// path, version and headers received (and the body, when the request has
/// an `x-echo-body` header). Every request is recorded, with its body.
async fn echo(
    mut req: Request<Incoming>,
    seen: &Arc<Mutex<Vec<Seen>>>,
    print: bool,
    sse: &Arc<tokio::sync::Notify>,
    mounts: &Mutex<Vec<Mount>>,
) -> Response<TestBody> {
    let record = Seen {
        method: req.method().to_string(),
        path: req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default(),
        version: format!("{:?}", req.version()),
        headers: req
            .headers()
            .iter()
            .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect(),
        body: Vec::new(),
    };
    if print {
        println!("{} {}  authorization: {}", record.method, record.path, record.header("authorization").unwrap_or("-"));
    }
    let index = {
        let mut seen = seen.lock().unwrap();
        seen.push(record.clone());
        seen.len() - 1
    };
    let path = req.uri().path().to_owned();
    let mounted = mounts.lock().unwrap().iter().find_map(|m| m.strip(&path).map(|rest| (m.clone(), rest.to_owned())));
    if let Some((mount, rest)) = mounted {
        return mount.serve(&rest, req).await;
    }
    if req.uri().path().starts_with("/ws") {
        let auth = record.header("authorization").unwrap_or("").to_owned();
        return crate::ws::accept(&mut req, &auth, seen);
    }
    let auth = record.header("authorization").unwrap_or("").to_owned();
    if req.uri().path() == "/hang" {
        // Never answers: the response head does not come.
        std::future::pending::<()>().await;
    }
    if req.uri().path().starts_with("/probe") {
        return crate::behaviours::probe(req.uri().path(), req.uri().query().unwrap_or(""), sse);
    }
    if let Some(resp) = crate::behaviours::respond(req.uri().path(), &auth, sse) {
        return resp;
    }
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    if let Some(entry) = seen.lock().unwrap().get_mut(index) {
        entry.body = body.to_vec();
    }
    let mut json = serde_json::json!({
        "method": record.method,
        "path": record.path,
        "version": record.version,
        "headers": record.headers.iter().map(|(n, v)| serde_json::json!([n, v])).collect::<Vec<_>>(),
        "body_len": body.len(),
    });
    if record.header("x-echo-body").is_some() {
        json["body"] = String::from_utf8_lossy(&body).into_owned().into();
    }
    Response::builder().header("content-type", "application/json").body(full(json.to_string())).unwrap()
}

/// Serves `answer` over TLS on 127.0.0.1:0, HTTP/2 or HTTP/1.1 by the
/// ALPN the acceptor's config offers, with heads up to 1 MiB accepted
/// (the test servers must not be the limit a test runs into). Returns the
/// address and the accept loop, which stops when aborted.
pub async fn serve_tls<F, Fut, B>(acceptor: TlsAcceptor, answer: F) -> (SocketAddr, tokio::task::JoinHandle<()>)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<B>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, answer) = (acceptor.clone(), answer.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = service_fn(move |req| {
                    let answer = answer.clone();
                    async move { Ok::<_, Infallible>(answer(req).await) }
                });
                if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .max_header_list_size(1 << 20)
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .max_buf_size(1 << 20)
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                }
            });
        }
    });
    (addr, task)
}

/// A TLS upstream that demands a client certificate from its own test CA
/// (which airlock does not have): every handshake fails, in TLS 1.2 during
/// the handshake, in TLS 1.3 after the client's side of it is done (the
/// alert comes on the client's first read).
#[derive(Debug)]
pub struct ClientAuthUpstream {
    pub addr: SocketAddr,
    pub ca_path: PathBuf,
    _dir: TempHome,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ClientAuthUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ClientAuthUpstream {
    /// Starts it speaking only `version`, offering `alpn`.
    pub async fn start(version: &'static rustls::SupportedProtocolVersion, alpn: &[&[u8]]) -> ClientAuthUpstream {
        let (ca, dir, ca_path) = ca_with_file("client-auth-upstream");
        let acceptor = TlsAcceptor::from(ca.server_config_client_auth(&TEST_NAMES, alpn, version));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    use tokio::io::AsyncReadExt;
                    // Borrowed, so the socket outlives the failed handshake:
                    // it is read to its end, and closing it then sends no
                    // reset that could overtake the alert.
                    let _ = acceptor.accept(&mut tcp).await;
                    let mut sink = [0u8; 4096];
                    let drain = async { while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {} };
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), drain).await;
                });
            }
        });
        ClientAuthUpstream { addr, ca_path, _dir: dir, task }
    }
}

impl crate::Origin for ClientAuthUpstream {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
    fn ca_path(&self) -> &std::path::Path {
        &self.ca_path
    }
}
