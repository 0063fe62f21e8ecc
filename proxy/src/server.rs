//! The listener: accepts agent connections, authenticates the tenant on
//! each CONNECT or absolute-form request, and hands the connection to
//! interception, a tunnel or the plain-HTTP forwarder — or, for
//! origin-form `POST /v1/actions`, to the action API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tracing::{Instrument, debug, info, info_span, warn};

use airlock_ca::{CertificateAuthority, LeafCache};
use airlock_policy::secrets::Vault;
use airlock_policy::{ConnectAction, Denial, DenialCode, Policy, TenantId, host};

use crate::audit::{self, AuditLog, AuditWriter, Outcome, Record};
use crate::forward::{self, Destination};
use crate::limits::{self, Activity, Phase};
use crate::respond::{self, denial_response};
use crate::throttle::{self, AuthThrottle};
use crate::upstream::{TrustError, Upstream};
use crate::{Body, intercept, tunnel};

/// How long shutdown waits, after the grace period, for connections to
/// drop what they hold.
const CLOSING_WAIT: Duration = Duration::from_secs(2);
/// Leaf certificates cached at most.
const LEAF_CACHE_CAPACITY: usize = 10_000;
/// How long a cached leaf is served before re-minting (leaves live < 90 days).
const LEAF_CACHE_TTL: Duration = Duration::from_secs(24 * 3600);

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The CA could not be created or loaded.
    #[error(transparent)]
    Ca(#[from] airlock_ca::CaError),
    /// The upstream trust store could not be built.
    #[error(transparent)]
    Trust(#[from] TrustError),
    /// Binding the listener failed.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The audit log could not be opened.
    #[error("cannot open the audit log {path}", path = path.display())]
    Audit {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// One loaded config and what is built from it. Requests take a snapshot;
/// a reload swaps in a new one, so in-flight requests finish on the old.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) policy: Arc<Policy>,
    pub(crate) scrubbers: crate::scrub::Scrubbers,
    pub(crate) upstream: Upstream,
}

impl Loaded {
    fn new(policy: Policy, listen: SocketAddr) -> Result<Self, TrustError> {
        for (_, tenant) in policy.tenants() {
            for route in &tenant.routes {
                if route.danger_plaintext_private_upstream {
                    warn!(tenant = %tenant.name, route = %route.name, "danger_plaintext_private_upstream: this route's secret may be sent in cleartext to a private address");
                }
                if route.danger_unscrubbed_websocket {
                    warn!(tenant = %tenant.name, route = %route.name, "danger_unscrubbed_websocket: this route's WebSocket frames reach the agent unscrubbed");
                }
            }
        }
        let mut settings = policy.proxy.clone();
        settings.listen = listen;
        let upstream = Upstream::new(&settings, &policy.limits)?;
        Ok(Loaded { policy: Arc::new(policy), scrubbers: crate::scrub::Scrubbers::default(), upstream })
    }
}

/// Why a reload was refused (the old config keeps serving).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The new config is invalid.
    #[error(transparent)]
    Config(#[from] airlock_policy::ConfigError),
    /// Its upstream trust store could not be built.
    #[error(transparent)]
    Trust(#[from] TrustError),
}

/// Everything a connection needs, shared by all of them.
#[derive(Debug)]
pub(crate) struct Shared {
    loaded: std::sync::RwLock<Arc<Loaded>>,
    /// Held by the one reload running.
    reloading: std::sync::Mutex<()>,
    pub(crate) vault: Arc<Vault>,
    /// Secret fetches under way, one per secret.
    pub(crate) fetches: crate::fetch::Fetches,
    pub(crate) certs: LeafCache,
    pub(crate) audit: AuditLog,
    /// Wrong proxy credentials, per peer address: backoff and coalesced
    /// audit records.
    pub(crate) auth: AuthThrottle,
    listen: SocketAddr,
    home: PathBuf,
    config: PathBuf,
}

impl Shared {
    /// The current config snapshot.
    pub(crate) fn loaded(&self) -> Arc<Loaded> {
        Arc::clone(&self.loaded.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Loads the config file again and swaps it in atomically. An invalid
    /// config is refused and the old one keeps serving. One reload runs at
    /// a time, and each reads the file once it runs, so the newest file
    /// wins however reloads overlap (a file edit and a SIGHUP). It blocks
    /// (vault commands, the trust store): call it off the async workers.
    pub(crate) fn reload(&self) -> Result<(), ReloadError> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let policy = Policy::load(&self.config, &self.home)?;
        if policy.proxy.listen != self.loaded().policy.proxy.listen {
            warn!("[proxy] listen changed; it takes effect at the next restart");
        }
        let loaded = Loaded::new(policy, self.listen)?;
        // Values the new config changes are forgotten (and stay known to the
        // redactor for a grace period); unchanged ones are not fetched again.
        self.vault.retire_changed(loaded.policy.secrets());
        for e in self.vault.prefetch(loaded.policy.secrets()) {
            warn!(error = %e, "secret unavailable after reload");
        }
        *self.loaded.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(loaded);
        info!(config = %self.config.display(), "config reloaded");
        Ok(())
    }
}

/// Signals a connection task watches, and the guard that keeps shutdown
/// waiting for it.
#[derive(Clone, Debug)]
pub(crate) struct ConnGuard {
    pub(crate) shutdown: watch::Receiver<Phase>,
    _alive: mpsc::Sender<()>,
    /// The connection's slot under `max_connections`, held until the
    /// connection (and any tunnel or interception it became) ends.
    _slot: Arc<tokio::sync::OwnedSemaphorePermit>,
}

/// A bound proxy, not yet serving.
#[derive(Debug)]
pub struct Proxy {
    shared: Arc<Shared>,
    listener: TcpListener,
    writer: AuditWriter,
}

impl Proxy {
    /// Loads (or creates) the CA in `home`, binds `policy.proxy.listen`
    /// (port 0 picks a free one) and opens the audit log. `config` is the
    /// file `policy` was loaded from, read again on reload.
    pub async fn bind(home: &Path, config: &Path, policy: Policy) -> Result<Proxy, StartError> {
        let ca = Arc::new(CertificateAuthority::load_or_create(home)?);
        let addr = policy.proxy.listen;
        let listener = TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?;
        let bound = listener.local_addr().map_err(|source| StartError::Bind { addr, source })?;
        let (audit, writer) = AuditLog::open(&policy.audit.path)
            .map_err(|source| StartError::Audit { path: policy.audit.path.clone(), source })?;
        let certs = LeafCache::new(ca, vec![b"h2".to_vec(), b"http/1.1".to_vec()], LEAF_CACHE_CAPACITY, LEAF_CACHE_TTL);
        let vault = Arc::new(Vault::new(home));
        // Fetch every secret now: the redactor must know all values before
        // the first response, whichever route it comes from.
        for e in vault.prefetch(policy.secrets()) {
            warn!(error = %e, "secret unavailable; requests that need it will be refused until it is fixed");
        }
        let shared = Shared {
            loaded: std::sync::RwLock::new(Arc::new(Loaded::new(policy, bound)?)),
            reloading: std::sync::Mutex::new(()),
            vault,
            fetches: crate::fetch::Fetches::default(),
            certs,
            auth: AuthThrottle::new(audit.clone()),
            audit,
            listen: bound,
            home: home.to_owned(),
            config: config.to_owned(),
        };
        Ok(Proxy { shared: Arc::new(shared), listener, writer })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        // The listener is bound; local_addr only fails on a closed socket.
        self.listener.local_addr().unwrap_or(self.shared.listen)
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets
    /// connections finish for up to `[limits] shutdown_grace`, and flushes the
    /// audit log.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let Proxy { shared, listener, writer } = self;
        let (phase_tx, phase_rx) = watch::channel(Phase::Serving);
        let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
        // Connection count and shutdown grace are fixed at start.
        let limits = shared.loaded().policy.limits.clone();
        let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
        let flusher = tokio::spawn(flush_auth_records(Arc::clone(&shared)));
        tokio::pin!(shutdown);
        loop {
            // At the limit, stop accepting: further agents wait in the
            // listen backlog until a connection ends.
            let slot = tokio::select! {
                slot = Arc::clone(&slots).acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => break,
                },
                () = &mut shutdown => break,
            };
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let guard = ConnGuard {
                            shutdown: phase_rx.clone(),
                            _alive: alive_tx.clone(),
                            _slot: Arc::new(slot),
                        };
                        let shared = Arc::clone(&shared);
                        let span = info_span!("conn", %peer);
                        tokio::spawn(serve_agent(shared, stream, peer, guard).instrument(span));
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off
                        // rather than spin.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                () = &mut shutdown => break,
            }
        }
        drop(listener);
        let _ = phase_tx.send(Phase::Draining);
        drop(alive_tx);
        if tokio::time::timeout(limits.shutdown_grace, alive_rx.recv()).await.is_err() {
            warn!("shutdown grace period over; closing remaining connections");
            // Connections drop what they still hold; each cut-off request
            // writes its audit record (`complete: false`) as it goes.
            let _ = phase_tx.send(Phase::Closing);
            if tokio::time::timeout(CLOSING_WAIT, alive_rx.recv()).await.is_err() {
                warn!("connections still open after closing; their audit records may be lost");
            }
        }
        flusher.abort();
        shared.auth.flush_all();
        drop(shared);
        // Everything queued so far goes to disk.
        let _ = tokio::task::spawn_blocking(move || writer.finish()).await;
        info!("airlock stopped");
    }

    /// A handle that reloads the config (for SIGHUP).
    pub fn reloader(&self) -> Reloader {
        Reloader(Arc::clone(&self.shared))
    }

    /// Serves in a background task; the handle stops it.
    pub fn spawn(self) -> RunningProxy {
        let addr = self.local_addr();
        let shared = Arc::clone(&self.shared);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(self.run(async {
            let _ = rx.await;
        }));
        RunningProxy { addr, stop: Some(tx), task, shared }
    }
}

/// Reloads a running proxy's config.
#[derive(Clone, Debug)]
pub struct Reloader(Arc<Shared>);

impl Reloader {
    /// Reloads the config file; an invalid one is refused and the old one
    /// keeps serving.
    pub fn reload(&self) -> Result<(), ReloadError> {
        self.0.reload()
    }

    /// The config file being served.
    pub fn config_path(&self) -> &Path {
        &self.0.config
    }

    /// Reloads, logging the outcome (an error keeps the old config).
    pub fn reload_logged(&self) {
        if let Err(e) = self.reload() {
            warn!(error = %e, "config rejected; still serving the previous config");
        }
    }

    /// [`Reloader::reload_logged`] on a blocking thread, so a slow vault
    /// command or trust store never holds an async worker (and the
    /// requests it serves).
    pub async fn reload_in_background(&self) {
        let this = self.clone();
        let span = tracing::Span::current();
        let _ = tokio::task::spawn_blocking(move || span.in_scope(|| this.reload_logged())).await;
    }

    /// Watches the config file and reloads when it changes (polled every
    /// `every`; editors replace files, so the stamp includes the inode). The
    /// file's current state is taken now, so a change made right after this
    /// call is not missed.
    pub fn watch(self, every: Duration) -> impl std::future::Future<Output = ()> + Send + 'static {
        fn stamp(p: &Path) -> Option<(Option<std::time::SystemTime>, u64, u64)> {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(p).ok().map(|m| (m.modified().ok(), m.len(), m.ino()))
        }
        let mut last = stamp(&self.0.config);
        async move {
            loop {
                tokio::time::sleep(every).await;
                let now = stamp(&self.0.config);
                if now != last && now.is_some() {
                    last = now;
                    info!("config file changed");
                    self.reload_in_background().await;
                }
            }
        }
    }
}

/// A proxy serving in the background.
#[derive(Debug)]
pub struct RunningProxy {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    shared: Arc<Shared>,
}

impl RunningProxy {
    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Reloads the config file (what SIGHUP does).
    pub fn reload(&self) -> Result<(), ReloadError> {
        self.shared.reload()
    }

    /// A handle that reloads the config.
    pub fn reloader(&self) -> Reloader {
        Reloader(Arc::clone(&self.shared))
    }

    /// How many secret fetches the vault has made.
    pub fn secret_fetches(&self) -> u64 {
        self.shared.vault.fetches()
    }

    /// How many leaf certificates have been minted (cache misses).
    pub fn leaf_mints(&self) -> u64 {
        self.shared.certs.mints()
    }

    /// Blocks until every audit record queued so far is on disk.
    pub fn sync_audit(&self) {
        self.shared.audit.sync();
    }

    /// Stops gracefully and waits until the audit log is flushed.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = std::mem::replace(&mut self.task, tokio::spawn(async {}));
        drop(self.shared);
        let _ = task.await;
    }
}

/// Writes the coalesced records of failed authentications as their
/// intervals end.
async fn flush_auth_records(shared: Arc<Shared>) {
    let mut every = tokio::time::interval(throttle::FLUSH_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        shared.auth.flush_due();
    }
}

/// Serves one agent connection: HTTP/1.1 proxy requests (CONNECT and
/// absolute-form).
async fn serve_agent(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr, guard: ConnGuard) {
    let _ = stream.set_nodelay(true);
    let svc_guard = guard.clone();
    let limits = shared.loaded().policy.limits.clone();
    let kept = Arc::clone(&shared);
    let activity = Activity::new();
    let conn_activity = Arc::clone(&activity);
    let service =
        service_fn(move |req| conn_activity.track(proxy_request(Arc::clone(&shared), req, peer, svc_guard.clone())));
    let conn = limits::h1_builder(&limits).serve_connection(TokioIo::new(stream), service).with_upgrades();
    let phase = guard.shutdown.clone();
    let result = limits::until_done(conn, |c| c.graceful_shutdown(), phase, &activity, limits.idle_timeout).await;
    if let Some(Err(e)) = result {
        debug!(error = %e, "agent connection ended with an error");
        if let Some(record) = refused_request(&e, None, "", 0) {
            kept.auth.refused_unauthenticated(peer.ip(), record);
        }
    }
}

/// Records a request hyper refused before airlock saw it — a malformed or
/// oversized head, which hyper answers itself (400, 431) before closing
/// the connection. Other connection errors (the agent went away, or sent
/// nothing within `header_read_timeout`) are not requests.
pub(crate) fn refused_request(e: &hyper::Error, tenant: Option<&str>, host: &str, port: u16) -> Option<Record> {
    let (code, status, what) = if e.is_parse_too_large() {
        (DenialCode::RequestTooLarge, 431, "a request head over the size limit")
    } else if e.is_parse() {
        (DenialCode::BadRequest, 400, "a malformed request")
    } else {
        return None;
    };
    Some(Record {
        tenant: tenant.map(str::to_owned),
        code: Some(code.as_str().to_owned()),
        detail: Some(format!("hyper refused {what}")),
        ..Record::new(
            audit::now_rfc3339(),
            respond::request_id(),
            String::new(),
            host.to_owned(),
            port,
            Outcome::Deny,
            status,
        )
    })
}

/// Where the listener answers a health check (origin-form GET, no
/// credentials): `airlock run` and `airlock mcp` use it to find a running
/// proxy, and container health checks can too.
pub const HEALTH_PATH: &str = "/v1/health";

/// The header a health answer carries: airlock's version.
pub const VERSION_HEADER: &str = "x-airlock-version";

fn is_health_check<B>(req: &Request<B>) -> bool {
    req.method() == Method::GET && req.uri().authority().is_none() && req.uri().path() == HEALTH_PATH
}

/// The health answer: the listener is up. It says nothing about tenants,
/// routes or secrets, and is not audited.
fn health() -> Response<Body> {
    let mut resp =
        Response::new(respond::full(format!("{{\"status\":\"ok\",\"version\":\"{}\"}}\n", env!("CARGO_PKG_VERSION"))));
    let h = resp.headers_mut();
    h.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    h.insert(VERSION_HEADER, http::HeaderValue::from_static(env!("CARGO_PKG_VERSION")));
    resp
}

/// One request on the agent's connection to the proxy.
async fn proxy_request(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    peer: SocketAddr,
    guard: ConnGuard,
) -> Response<Body> {
    let loaded = shared.loaded();
    if crate::actions::is_action(&req, &loaded.upstream.resolver) {
        return crate::actions::handle(shared, req, peer).await;
    }
    if is_health_check(&req) {
        return health();
    }
    let request_id = respond::request_id();
    let started = Instant::now();
    let ts = audit::now_rfc3339();
    let policy = Arc::clone(&loaded.policy);

    // Where is this going?
    let method = req.method().to_string();
    let https = req.method() == Method::CONNECT;
    let plain_http = !https && req.uri().scheme_str() == Some("http");
    let dest = if https {
        connect_target(req.uri())
    } else {
        req.uri().authority().and_then(|a| parse_destination(a.as_str(), 80))
    };
    let record = |denial: &Denial, tenant: Option<TenantId>, host: &str, port: u16| Record {
        tenant: tenant.map(|t| policy.tenant(t).name.clone()),
        route: denial.route.map(|r| policy.route(r).name.clone()),
        code: Some(denial.code.as_str().to_owned()),
        duration_ms: started.elapsed().as_millis() as u64,
        ..Record::new(
            ts.clone(),
            request_id.clone(),
            method.clone(),
            host.to_owned(),
            port,
            Outcome::Deny,
            denial.status(),
        )
    };
    let refuse = |denial: Denial, tenant: Option<TenantId>, host: &str, port: u16| {
        match tenant {
            Some(_) => {
                shared.audit.write(record(&denial, tenant, host, port));
                info!(request_id = %request_id, code = %denial.code, "refused");
            }
            // Before authentication anyone can send these: coalesced in the
            // audit log, and not logged above debug.
            None => {
                shared.auth.refused_unauthenticated(peer.ip(), record(&denial, tenant, host, port));
                debug!(request_id = %request_id, code = %denial.code, "refused");
            }
        }
        denial_response(&denial, &request_id)
    };
    if https && dest.is_none() {
        let denial = Denial::new(
            DenialCode::BadRequest,
            "a CONNECT target must be host:port with a port in 1-65535 (an IPv6 address in brackets: [::1]:443)",
            "send CONNECT host:port, e.g. CONNECT api.example.com:443",
        );
        return refuse(denial, None, "", 0);
    }
    let Some((host, port)) = dest.filter(|_| https || plain_http) else {
        let denial = Denial::new(
            DenialCode::BadRequest,
            "airlock is a proxy: it serves CONNECT and absolute-form http:// requests",
            "set HTTPS_PROXY/HTTP_PROXY to airlock's address instead of sending requests to it directly",
        );
        return refuse(denial, None, "", 0);
    };
    if let Err(denial) = limits::check_head(&req, &policy.limits) {
        return refuse(denial, None, &host, port);
    }

    let auth = req.headers().get(http::header::PROXY_AUTHORIZATION).map(|v| v.as_bytes());
    let tenant = match shared.auth.authenticate(&policy, peer.ip(), auth).await {
        Ok(t) => t,
        Err(e) => {
            let denial = e.denial();
            shared.auth.refused(peer.ip(), e, record(&denial, None, &host, port));
            debug!(request_id = %request_id, code = %denial.code, "refused");
            return denial_response(&denial, &request_id);
        }
    };
    let tenant_name = policy.tenant(tenant).name.clone();
    let span = info_span!("request", %request_id, tenant = %tenant_name, %host, port);
    let action = policy.connect_action(tenant, &host, port);
    let destination =
        Destination { tenant: tenant_name.clone(), host: host.clone(), port, https, peer, guard: Some(guard.clone()) };
    async {
        if !https {
            return match action {
                ConnectAction::Intercept(_) => {
                    forward::handle(Arc::clone(&shared), Arc::clone(&loaded), Arc::new(destination), req).await
                }
                ConnectAction::Tunnel => {
                    forward::pass_through(&shared, &loaded, tenant, Arc::new(destination), req).await
                }
            };
        }
        match action {
            ConnectAction::Intercept(route) => {
                debug!(route = route.map(|r| policy.route(r).name.as_str()), "intercepting");
                let on_upgrade = hyper::upgrade::on(req);
                let shared = Arc::clone(&shared);
                tokio::spawn(
                    async move {
                        match on_upgrade.await {
                            Ok(upgraded) => intercept::serve(shared, destination, upgraded, guard).await,
                            Err(e) => debug!(error = %e, "CONNECT upgrade failed"),
                        }
                    }
                    .in_current_span(),
                );
                Response::new(respond::empty())
            }
            ConnectAction::Tunnel => match tunnel::open(&loaded, tenant, &host, port).await {
                Ok(upstream) => {
                    shared.audit.write(Record {
                        tenant: Some(tenant_name),
                        duration_ms: started.elapsed().as_millis() as u64,
                        ..Record::new(
                            ts.clone(),
                            request_id.clone(),
                            method.clone(),
                            host.clone(),
                            port,
                            Outcome::Tunnel,
                            200,
                        )
                    });
                    let on_upgrade = hyper::upgrade::on(req);
                    let idle = policy.limits.tunnel_idle_timeout;
                    tokio::spawn(tunnel::relay(on_upgrade, upstream, idle, guard).in_current_span());
                    Response::new(respond::empty())
                }
                Err(denial) => refuse(denial, Some(tenant), &host, port),
            },
        }
    }
    .instrument(span)
    .await
}

/// A CONNECT's target, before anything is looked up or connected: RFC
/// 9110 §9.3.6 allows only the authority form, `host:port` with the port
/// given (and an IPv6 literal in brackets), never a URI with a scheme or
/// path. None for anything else.
fn connect_target(uri: &http::Uri) -> Option<(String, u16)> {
    if uri.scheme().is_some() || uri.path_and_query().is_some() {
        return None;
    }
    let authority = uri.authority()?.as_str();
    host::split_host_port(authority)?.1?;
    parse_destination(authority, 0)
}

/// Parses a CONNECT target or absolute URI authority into a normalised
/// host and port.
pub fn parse_destination(authority: &str, default_port: u16) -> Option<(String, u16)> {
    if authority.contains('@') {
        return None;
    }
    let (h, p) = host::split_host_port(authority)?;
    // Brackets hold an IPv6 address and nothing else (RFC 3986 §3.2.2).
    if authority.starts_with('[') && h.parse::<std::net::Ipv6Addr>().is_err() {
        return None;
    }
    Some((host::normalize(h)?, p.unwrap_or(default_port)))
}
