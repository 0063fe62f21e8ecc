//! The listener: binds, accepts agent connections (at most
//! `max_connections`, each in its `conn` span), admits each CONNECT or
//! absolute-form request (destination, proxy credentials) and hands it to
//! CONNECT handling ([`crate::connect`]) or the pipeline — or, for
//! origin-form `POST /v1/actions`, to the action API; and stops gracefully.
//! The handles it returns ([`RunningProxy`], [`Reloader`]) reach the shared
//! state in [`crate::state`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tracing::{Instrument, debug, info, info_span, warn};

use airlock_ca::{CertificateAuthority, LeafCache};
use airlock_policy::{ConnectAction, Policy};

use crate::audit::{AuditLog, AuditWriter};
use crate::conn::{self, Activity, ConnGuard, Phase};
use crate::error::Error;
use crate::pipeline::{self, Destination, RequestCtx, admit};
use crate::respond::{self, Audience, Form};
use crate::state::{ReloadError, Shared};
use crate::throttle;
use crate::upstream::TrustError;
use crate::{Body, connect};

/// How long shutdown waits, after the grace period, for connections to
/// drop what they hold.
const CLOSING_WAIT: Duration = Duration::from_secs(2);
/// Leaf certificates cached at most.
const LEAF_CACHE_CAPACITY: usize = 10_000;

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
    /// The home's instance key could not be read or created.
    #[error("cannot read or create the instance key in AIRLOCK_HOME")]
    Instance(#[source] std::io::Error),
    /// The audit log could not be opened.
    #[error("cannot open the audit log {path}", path = path.display())]
    Audit {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
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
        let addr = policy.proxy.listen;
        Proxy::bind_private(home, config, policy, addr, Vec::new()).await
    }

    /// [`Proxy::bind`] for a proxy private to one agent: it listens on
    /// `addr` in place of `[proxy] listen` (which the config keeps, so a
    /// reload sees it unchanged), and each (tenant, token) replaces that
    /// tenant's token from the config, at this load and every reload, so
    /// the token the agent holds opens no other proxy and nothing once
    /// this one stops.
    pub async fn bind_private(
        home: &Path,
        config: &Path,
        policy: Policy,
        addr: SocketAddr,
        tokens: Vec<(String, zeroize::Zeroizing<String>)>,
    ) -> Result<Proxy, StartError> {
        let ca = Arc::new(CertificateAuthority::load_or_create(home)?);
        let listener = TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?;
        let bound = listener.local_addr().map_err(|source| StartError::Bind { addr, source })?;
        let (audit, writer) = AuditLog::open(&policy.audit.path)
            .map_err(|source| StartError::Audit { path: policy.audit.path.clone(), source })?;
        let certs =
            LeafCache::new(ca, vec![b"h2".to_vec(), b"http/1.1".to_vec()], LEAF_CACHE_CAPACITY, LeafCache::DEFAULT_TTL);
        let instance = crate::instance::Instance::load_or_create(home).map_err(StartError::Instance)?;
        let mut policy = policy;
        crate::state::replace_tokens(&mut policy, &tokens);
        let mut shared = Shared::new(home, config, policy, bound, certs, audit, instance)?;
        shared.tokens = tokens;
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
                        let guard = ConnGuard::new(phase_rx.clone(), alive_tx.clone(), slot);
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
    // The address the agent connected to: a health check's proof is bound
    // to it.
    let local = stream.local_addr().unwrap_or(shared.listen);
    let service = service_fn(move |req| {
        conn_activity.track(proxy_request(Arc::clone(&shared), req, peer, local, svc_guard.clone()))
    });
    let conn = conn::h1_builder(&limits).serve_connection(TokioIo::new(stream), service).with_upgrades();
    let phase = guard.shutdown.clone();
    let result = conn::until_done(conn, |c| c.graceful_shutdown(), phase, &activity, limits.idle_timeout).await;
    if let Some(Err(e)) = result {
        debug!(error = %e, "agent connection ended with an error");
        if let Some(refused) = admit::refused_head(&e) {
            RequestCtx::arrived(&kept, peer, "", "", 0).record_refused(&refused);
        }
    }
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

/// The health answer: the listener is up, and which home it serves (its
/// instance id, no secret); with a challenge, the proof that it holds that
/// home's key, for the address the client connected to
/// ([`crate::instance`]). It says nothing about tenants, routes or
/// secrets, and is not audited.
fn health<B>(shared: &Shared, req: &Request<B>, local: SocketAddr) -> Response<Body> {
    let instance = &shared.instance;
    let body = serde_json::json!({"status": "ok", "version": env!("CARGO_PKG_VERSION"), "instance": instance.id()});
    let mut resp = Response::new(respond::full(format!("{body}\n")));
    let h = resp.headers_mut();
    h.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    h.insert(VERSION_HEADER, http::HeaderValue::from_static(env!("CARGO_PKG_VERSION")));
    if let Ok(id) = http::HeaderValue::from_str(instance.id()) {
        h.insert(crate::instance::INSTANCE_HEADER, id);
    }
    let proof = req
        .headers()
        .get(crate::instance::CHALLENGE_HEADER)
        .and_then(|c| c.to_str().ok())
        .and_then(|c| instance.prove(c, local))
        .and_then(|p| http::HeaderValue::from_str(&p).ok());
    if let Some(proof) = proof {
        h.insert(crate::instance::PROOF_HEADER, proof);
    }
    resp
}

/// One request on the agent's connection to the proxy: the action API, the
/// health check, or a proxy request — admitted here (its destination and
/// proxy credentials), then a CONNECT goes to [`connect::handle`] and an
/// absolute-form `http://` request to the pipeline.
async fn proxy_request(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    peer: SocketAddr,
    local: SocketAddr,
    guard: ConnGuard,
) -> Response<Body> {
    let loaded = shared.loaded();
    if crate::actions::is_action(&req, &loaded.upstream.resolver) {
        return crate::actions::handle(shared, req, peer).await;
    }
    if is_health_check(&req) {
        return health(&shared, &req, local);
    }
    let policy = Arc::clone(&loaded.policy);

    // Where is this going?
    let https = req.method() == Method::CONNECT;
    let plain_http = !https && req.uri().scheme_str() == Some("http");
    let dest = if https {
        admit::connect_target(req.uri())
    } else {
        req.uri().authority().and_then(|a| admit::parse_destination(a.as_str(), 80))
    };
    let method = req.method().as_str();
    if https && dest.is_none() {
        return RequestCtx::arrived(&shared, peer, method, "", 0).deny(
            Error::BadConnectTarget,
            Audience::Proxy,
            Form::Json,
        );
    }
    let Some((host, port)) = dest.filter(|_| https || plain_http) else {
        return RequestCtx::arrived(&shared, peer, method, "", 0).deny(
            Error::NotAProxyRequest,
            Audience::Proxy,
            Form::Json,
        );
    };
    let mut ctx = RequestCtx::arrived(&shared, peer, method, &host, port);
    if let Err(e) = admit::check_head(&req, &policy.limits) {
        return ctx.deny(e, Audience::Proxy, Form::Json);
    }
    let auth = req.headers().get(http::header::PROXY_AUTHORIZATION).map(|v| v.as_bytes());
    let tenant = match shared.auth.authenticate(&policy, peer.ip(), auth).await {
        Ok(t) => t,
        Err(e) => return ctx.deny(Error::Auth(e), Audience::Proxy, Form::Json),
    };
    ctx.authenticated(tenant);
    let tenant_name = policy.tenant(tenant).name.clone();
    let dest = Destination { tenant: tenant_name, host, port, https, peer, guard: Some(guard.clone()) };
    if https {
        return connect::handle(ctx, dest, req, guard).await;
    }
    match policy.connect_action(tenant, &dest.host, dest.port) {
        ConnectAction::Intercept(_) => pipeline::handle(shared, Arc::new(dest), req).await,
        ConnectAction::Tunnel => pipeline::pass_through(shared, tenant, Arc::new(dest), req).await,
    }
}
