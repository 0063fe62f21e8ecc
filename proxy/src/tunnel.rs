//! Tunnels: hosts no route names, with `egress = "tunnel"`, get their bytes
//! passed through untouched — to public addresses only under
//! `deny_private_egress`, which refuses loopback, private and link-local
//! destinations (cloud metadata lives at 169.254.169.254) unless a route
//! names the host.

use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::debug;

use airlock_policy::{Policy, TenantId};

use crate::conn::ConnGuard;
use crate::error::Error;
use crate::state::Loaded;
use crate::upstream::{ConnectError, Egress};

/// Connects a tunnel to `host:port`, a host no route of `tenant` names:
/// under `deny_private_egress`, only to public addresses (checked on the
/// very addresses connected to: see [`crate::upstream::Egress`]); never to
/// airlock itself.
pub(crate) async fn open(loaded: &Loaded, tenant: TenantId, host: &str, port: u16) -> Result<TcpStream, Error> {
    let policy = &loaded.policy;
    let egress = Egress::unrouted(policy.proxy.deny_private_egress);
    loaded.upstream.resolver.connect(host, port, egress).await.map_err(|e| match unrouted_denial(policy, tenant, &e) {
        Some(refused) => refused,
        None => Error::Connect(e),
    })
}

/// The denial of a connection to a private address, by a host no route of
/// `tenant` names, in the policy's words; None for any other failure.
pub(crate) fn unrouted_denial(policy: &Policy, tenant: TenantId, e: &ConnectError) -> Option<Error> {
    match e {
        ConnectError::PrivateAddress { host, ip } => {
            Some(Error::Policy(policy.private_egress_denial(tenant, host, *ip)))
        }
        _ => None,
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
    crate::relay::pipe(TokioIo::new(upgraded), upstream, idle, Some(&guard)).await;
}
