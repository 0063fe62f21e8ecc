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

/// Why an intercepted connection was refused before its first request.
struct Refused {
    code: DenialCode,
    detail: String,
}

/// Serves an intercepted tunnel until the agent closes it.
pub(crate) async fn serve(shared: Arc<Shared>, dest: Destination, upgraded: Upgraded, guard: ConnGuard) {
    let started = std::time::Instant::now();
    let ts = crate::audit::now_rfc3339();
    let handshake = async {
        let start = LazyConfigAcceptor::new(Acceptor::default(), TokioIo::new(upgraded)).await.map_err(|e| {
            Refused { code: DenialCode::BadRequest, detail: format!("the agent's TLS start failed: {e}") }
        })?;
        if let Some(sni) = start.client_hello().server_name()
            && host::normalize(sni).as_deref() != Some(dest.host.as_str())
        {
            warn!(sni, "TLS server name differs from the CONNECT host; closing");
            return Err(Refused {
                code: DenialCode::MisdirectedRequest,
                detail: "the TLS server name differs from the CONNECT host".to_owned(),
            });
        }
        let config = shared.certs.server_config(&dest.host).await.map_err(|e| {
            warn!(error = %e, "cannot mint a certificate");
            Refused { code: DenialCode::BadRequest, detail: format!("airlock could not mint a certificate: {e}") }
        })?;
        start.into_stream(config).await.map(Some).map_err(|e| Refused {
            code: DenialCode::BadRequest,
            detail: format!("the agent's TLS handshake failed (does it trust airlock's CA?): {e}"),
        })
    };
    // A handshake not done when shutdown starts is given up.
    let mut phase = guard.shutdown.clone();
    let handshake = async {
        tokio::select! {
            r = handshake => r,
            () = limits::reached(&mut phase, Phase::Draining) => Ok(None),
        }
    };
    let timeout = HANDSHAKE_TIMEOUT.min(shared.loaded().policy.limits.header_read_timeout);
    let refused = match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(Some(tls))) => Ok(tls),
        Ok(Ok(None)) => return,
        Ok(Err(refused)) => Err(refused),
        Err(_) => Err(Refused {
            code: DenialCode::BadRequest,
            detail: format!("the agent did not finish its TLS handshake within {timeout:?}"),
        }),
    };
    let tls = match refused {
        Ok(tls) => tls,
        Err(Refused { code, detail }) => {
            debug!(%detail, "intercepted connection refused");
            // A refused connection is audited like any other.
            shared.audit.write(Record {
                tenant: Some(dest.tenant.clone()),
                code: Some(code.as_str().to_owned()),
                detail: Some(detail),
                duration_ms: started.elapsed().as_millis() as u64,
                ..Record::new(
                    ts,
                    crate::respond::request_id(),
                    "CONNECT".to_owned(),
                    dest.host.clone(),
                    dest.port,
                    Outcome::Deny,
                    code.status(),
                )
            });
            return;
        }
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let (audit, tenant, host, port) = (shared.audit.clone(), dest.tenant.clone(), dest.host.clone(), dest.port);
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
        if let Some(record) = crate::server::refused_request(&e, Some(&tenant), &host, port) {
            audit.write(record);
        }
    }
}
