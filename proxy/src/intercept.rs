//! TLS interception of a CONNECT tunnel: read the ClientHello, check its SNI
//! against the CONNECT host, present a leaf minted by airlock's CA for that
//! host, and serve HTTP/1.1 or HTTP/2 to the agent by ALPN. Each request is
//! then runs through the pipeline ([`crate::pipeline`]).
//!
//! The destination is always the CONNECT host and port: the SNI must name
//! it (or be absent, as for IP literals), and a request naming another
//! host is refused by the forwarder.
//!
//! A CONNECT refused once admitted (a tunnel to a private address, an
//! upstream that cannot be reached), on a port whose clients speak TLS, is
//! answered the same way: the agent's TLS is terminated with a leaf for the
//! name it asked for, and each request on it gets the refusal
//! ([`serve_refusal`]), which git, pip and requests show, where they show
//! nothing of a failed CONNECT's body (DESIGN.md, "Denials").

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::server::Acceptor;
use tokio_rustls::LazyConfigAcceptor;
use tracing::{Instrument, debug, warn};

use airlock_policy::host;

use crate::conn::{self, Activity, ConnGuard, Phase};
use crate::error::{Error, TlsStartError};
use crate::pipeline::{self, Destination, RequestCtx};
use crate::respond::Refusal;
use crate::state::Shared;

/// How long the agent may take to send its ClientHello and finish the
/// handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection that only answers a refusal stays open with
/// nothing in flight.
const REFUSAL_IDLE: Duration = Duration::from_secs(2);

/// Ports whose clients speak TLS on a CONNECT tunnel (HTTPS's and its
/// common alternative): a refused CONNECT to one is answered inside TLS.
/// On any other port the client may speak another protocol (SSH, SMTP)
/// and gets the refusal as the CONNECT's status line.
const TLS_PORTS: [u16; 2] = [443, 8443];

/// Whether a refused CONNECT to `port` is answered inside TLS.
pub(crate) fn refuse_inside_tls(port: u16) -> bool {
    TLS_PORTS.contains(&port)
}

/// A refusal decided at CONNECT, with the request id it was recorded
/// under: every request on the connection is answered with it.
struct Refused {
    refusal: Refusal,
    request_id: String,
}

/// Serves an intercepted tunnel until the agent closes it.
pub(crate) async fn serve(shared: Arc<Shared>, dest: Destination, upgraded: Upgraded, guard: ConnGuard) {
    serve_with(shared, dest, upgraded, guard, None).await;
}

/// Terminates the agent's TLS on a CONNECT refused (and recorded) as
/// `request_id`, and answers each request on it with `refusal`, in the
/// form its client shows ([`pipeline::refusal_form`]), nothing sent
/// upstream. A handshake that fails is not recorded again.
pub(crate) async fn serve_refusal(
    shared: Arc<Shared>,
    dest: Destination,
    upgraded: Upgraded,
    guard: ConnGuard,
    refusal: Refusal,
    request_id: String,
) {
    serve_with(shared, dest, upgraded, guard, Some(Arc::new(Refused { refusal, request_id }))).await;
}

async fn serve_with(
    shared: Arc<Shared>,
    dest: Destination,
    upgraded: Upgraded,
    guard: ConnGuard,
    refused: Option<Arc<Refused>>,
) {
    // A refused connection is recorded like any request, from the moment
    // the tunnel opened.
    let ctx = RequestCtx::on_connection(&shared, &dest, "CONNECT");
    let handshake = async {
        let start =
            LazyConfigAcceptor::new(Acceptor::default(), TokioIo::new(upgraded)).await.map_err(TlsStartError::Hello)?;
        if let Some(sni) = start.client_hello().server_name()
            && host::normalize(sni).as_deref() != Some(dest.host.as_str())
        {
            warn!(sni, "TLS server name differs from the CONNECT host; closing");
            return Err(TlsStartError::ServerName);
        }
        let config = shared.certs.server_config(&dest.host).await.map_err(|e| {
            warn!(error = %e, "cannot mint a certificate");
            TlsStartError::Mint(e)
        })?;
        start.into_stream(config).await.map(Some).map_err(TlsStartError::Handshake)
    };
    // A handshake not done when shutdown starts is given up.
    let mut phase = guard.shutdown.clone();
    let handshake = async {
        tokio::select! {
            r = handshake => r,
            () = conn::reached(&mut phase, Phase::Draining) => Ok(None),
        }
    };
    let timeout = HANDSHAKE_TIMEOUT.min(ctx.loaded.policy.limits.header_read_timeout);
    let tls = match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(Some(tls))) => tls,
        Ok(Ok(None)) => return,
        Ok(Err(e)) if refused.is_some() => return debug!(error = %e, "refused connection's handshake failed"),
        Err(_) if refused.is_some() => return debug!("refused connection's handshake timed out"),
        Ok(Err(e)) => return refuse(&ctx, e),
        Err(_) => return refuse(&ctx, TlsStartError::Timeout(timeout)),
    };
    drop(ctx);
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let dest = Arc::new(dest);
    let (kept, kept_dest) = (Arc::clone(&shared), Arc::clone(&dest));
    let limits = shared.loaded().policy.limits.clone();
    let activity = Activity::new();
    let conn_activity = Arc::clone(&activity);
    let tunnel = tracing::Span::current();
    let idle = if refused.is_some() { REFUSAL_IDLE.min(limits.idle_timeout) } else { limits.idle_timeout };
    let service = service_fn(move |req| {
        // Each request sees the config current when it arrives. HTTP/2
        // runs each stream in a task of its own: its span is the tunnel's
        // child all the same.
        let (shared, dest, refused) = (Arc::clone(&shared), Arc::clone(&dest), refused.clone());
        let handled = async move {
            match refused {
                Some(r) => {
                    let mut resp = r.refusal.response(&r.request_id, pipeline::refusal_form(&req));
                    if !h2 {
                        resp.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
                    }
                    resp
                }
                None => pipeline::handle(shared, dest, req).await,
            }
        };
        conn_activity.track(handled.instrument(tunnel.clone()))
    });
    let io = TokioIo::new(tls);
    let stop = guard.shutdown.clone();
    let result = if h2 {
        let conn = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.max_header_bytes * 2).unwrap_or(u32::MAX))
            .serve_connection(io, service);
        conn::until_done(conn, |c| c.graceful_shutdown(), stop, &activity, idle).await
    } else {
        let conn = conn::h1_builder(&limits).serve_connection(io, service).with_upgrades();
        conn::until_done(conn, |c| c.graceful_shutdown(), stop, &activity, idle).await
    };
    if let Some(Err(e)) = result {
        debug!(error = %e, "intercepted connection ended with an error");
        if let Some(refused) = pipeline::admit::refused_head(&e) {
            RequestCtx::on_connection(&kept, &kept_dest, "").record_refused(&refused);
        }
    }
}

/// Records an intercepted connection refused before its first request
/// (there is no request to answer).
fn refuse(ctx: &RequestCtx, refused: TlsStartError) {
    let e = Error::TlsStart(refused);
    debug!(detail = %e, "intercepted connection refused");
    ctx.record_refused(&e);
}
