//! TLS interception of a CONNECT tunnel: read the ClientHello, check its SNI
//! against the CONNECT host, present a leaf minted by airlock's CA for that
//! host, and serve HTTP/1.1 or HTTP/2 to the agent by ALPN. Each request is
//! then decided and forwarded by [`crate::forward`].
//!
//! The destination is always the CONNECT host and port: the SNI must name
//! it (or be absent, as for IP literals), and a request naming another
//! host is refused by the forwarder.

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::server::Acceptor;
use tokio_rustls::LazyConfigAcceptor;
use tracing::{debug, warn};

use airlock_policy::{DenialCode, host};

use crate::audit::{Outcome, Record};

use crate::forward::{self, Destination};
use crate::limits::{self, Activity, Phase};
use crate::server::{ConnGuard, Shared};

/// How long the agent may take to send its ClientHello and finish the
/// handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves an intercepted tunnel until the agent closes it.
pub(crate) async fn serve(shared: Arc<Shared>, dest: Destination, upgraded: Upgraded, guard: ConnGuard) {
    let handshake = async {
        let start = LazyConfigAcceptor::new(Acceptor::default(), TokioIo::new(upgraded)).await?;
        if let Some(sni) = start.client_hello().server_name()
            && host::normalize(sni).as_deref() != Some(dest.host.as_str())
        {
            warn!(sni, "TLS server name differs from the CONNECT host; closing");
            // A refused connection is audited like any other.
            let request_id = crate::respond::request_id();
            shared.audit.write(Record {
                tenant: Some(dest.tenant.clone()),
                code: Some(DenialCode::MisdirectedRequest.as_str().to_owned()),
                ..Record::new(
                    crate::audit::now_rfc3339(),
                    request_id,
                    "CONNECT".to_owned(),
                    dest.host.clone(),
                    dest.port,
                    Outcome::Deny,
                    DenialCode::MisdirectedRequest.status(),
                )
            });
            return Ok(None);
        }
        let config = match shared.certs.server_config(&dest.host).await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "cannot mint a certificate");
                return Ok(None);
            }
        };
        start.into_stream(config).await.map(Some)
    };
    // A handshake not done when shutdown starts is given up.
    let mut phase = guard.shutdown.clone();
    let handshake = async {
        tokio::select! {
            r = handshake => r,
            () = limits::reached(&mut phase, Phase::Draining) => Ok(None),
        }
    };
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(Some(tls))) => tls,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            debug!(error = %e, "agent TLS handshake failed");
            return;
        }
        Err(_) => {
            debug!("agent TLS handshake timed out");
            return;
        }
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let dest = Arc::new(dest);
    let limits = shared.loaded().policy.limits.clone();
    let activity = Activity::new();
    let conn_activity = Arc::clone(&activity);
    let service = service_fn(move |req| {
        // Each request sees the config current when it arrives.
        let loaded = shared.loaded();
        conn_activity.track(forward::handle(Arc::clone(&shared), loaded, Arc::clone(&dest), req))
    });
    let io = TokioIo::new(tls);
    let (stop, idle) = (guard.shutdown.clone(), limits.idle_timeout);
    let result = if h2 {
        let conn = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.max_header_bytes * 2).unwrap_or(u32::MAX))
            .serve_connection(io, service);
        limits::until_done(conn, |c| c.graceful_shutdown(), stop, &activity, idle).await
    } else {
        let conn = limits::h1_builder(&limits).serve_connection(io, service).with_upgrades();
        limits::until_done(conn, |c| c.graceful_shutdown(), stop, &activity, idle).await
    };
    if let Some(Err(e)) = result {
        debug!(error = %e, "intercepted connection ended with an error");
    }
}
