//! Tunnels: hosts no route names, with `egress = "tunnel"`, get their bytes
//! passed through untouched — after the private-egress check, which refuses
//! loopback, private and link-local destinations (cloud metadata lives at
//! 169.254.169.254) unless a route names the host.

use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tracing::debug;

use airlock_policy::{Denial, TenantId, host};

use crate::limits;
use crate::server::{ConnGuard, Loaded};

/// Resolves `host:port` and refuses it when private egress is denied and any
/// address it resolves to is not public, or when it is airlock itself.
pub(crate) async fn check_egress(loaded: &Loaded, tenant: TenantId, host: &str, port: u16) -> Result<(), Denial> {
    let policy = &loaded.policy;
    let addrs = loaded.upstream.resolver.resolve(host, port).await.map_err(|e| connect_denial(&e))?;
    if policy.proxy.deny_private_egress
        && let Some(a) = addrs.iter().find(|a| host::is_non_public(a.ip()))
    {
        return Err(policy.private_egress_denial(tenant, host, a.ip()));
    }
    Ok(())
}

/// Checks egress and connects.
pub(crate) async fn open(loaded: &Loaded, tenant: TenantId, host: &str, port: u16) -> Result<TcpStream, Denial> {
    check_egress(loaded, tenant, host, port).await?;
    loaded.upstream.resolver.connect(host, port).await.map_err(|e| connect_denial(&e))
}

pub(crate) fn connect_denial(e: &crate::upstream::ConnectError) -> Denial {
    e.denial()
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
