//! Tunnels: hosts no route names, with `egress = "tunnel"`, get their bytes
//! passed through untouched — to public addresses only under
//! `deny_private_egress`, which refuses loopback, private and link-local
//! destinations (cloud metadata lives at 169.254.169.254) unless a route
//! names the host.

use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tracing::debug;

use airlock_policy::{Denial, Policy, TenantId};

use crate::limits;
use crate::server::{ConnGuard, Loaded};
use crate::upstream::{ConnectError, Egress};

/// Connects a tunnel to `host:port`, a host no route of `tenant` names:
/// under `deny_private_egress`, only to public addresses (checked on the
/// very addresses connected to: see [`crate::upstream::Egress`]); never to
/// airlock itself.
pub(crate) async fn open(loaded: &Loaded, tenant: TenantId, host: &str, port: u16) -> Result<TcpStream, Denial> {
    let policy = &loaded.policy;
    let egress = Egress::unrouted(policy.proxy.deny_private_egress);
    loaded.upstream.resolver.connect(host, port, egress).await.map_err(|e| unrouted_denial(policy, tenant, &e))
}

/// The denial of a connection to a host no route of `tenant` names: a
/// private address refused in the policy's words, anything else as the
/// failure it was.
pub(crate) fn unrouted_denial(policy: &Policy, tenant: TenantId, e: &ConnectError) -> Denial {
    match e {
        ConnectError::PrivateAddress { host, ip } => policy.private_egress_denial(tenant, host, *ip),
        _ => e.denial(),
    }
}

/// Relays bytes both ways until either side closes, nothing moves for
/// `idle` (`[limits] tunnel_idle_timeout`), or the shutdown grace period
/// ends.
pub(crate) async fn relay(on_upgrade: OnUpgrade, upstream: TcpStream, idle: Duration, guard: ConnGuard) {
    let upgraded = match on_upgrade.await {
        Ok(u) => u,
        Err(e) => {
            debug!(error = %e, "tunnel upgrade failed");
            return;
        }
    };
    pipe(TokioIo::new(upgraded), upstream, idle, Some(&guard)).await;
}

/// The relay of [`relay`] between two connected streams; `guard` (the
/// agent connection's) ends it at the end of the shutdown grace period.
pub(crate) async fn pipe<A, B>(agent: A, upstream: B, idle: Duration, guard: Option<&ConnGuard>)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let closing = limits::closing(guard.map(|g| g.shutdown.clone()));
    if let Some((up, down)) = limits::relay(agent, upstream, idle, closing).await {
        debug!(bytes_up = up, bytes_down = down, "tunnel closed");
    }
}
