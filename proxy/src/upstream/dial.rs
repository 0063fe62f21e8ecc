//! Where an upstream connection may go, and getting there.
//!
//! A connection's host is looked up once; every address of that one
//! answer is vetted against the connection's [`Egress`] rule (and against
//! airlock's own listener); and only those addresses are dialled. The
//! hand-off is a type: a [`Vetted`] list is made only by [`Vetted::vet`],
//! from one lookup whose every address passed, and [`race`] — the only
//! place a socket is opened — is only ever given a `Vetted` list's
//! addresses. With no second lookup between the check and the connect, a
//! DNS server cannot answer the check with a public address and the
//! connect with 169.254.169.254 (DNS rebinding).
//!
//! The vetted addresses are raced as RFC 8305 (Happy Eyeballs v2) §4-5
//! asks: the families interleaved, starting with the family of the first
//! answer (the system resolver orders its answer by RFC 6724); the next
//! attempt starts [`ATTEMPT_DELAY`] after the last one started, or at once
//! when one fails; the first to connect wins and the others are dropped,
//! which closes their sockets. An attempt lives until it connects, fails,
//! or the one deadline over the whole — lookup, vetting and attempts —
//! passes (`[limits] upstream_connect_timeout`). A black-holed address
//! (broken IPv6, a dead A record) so costs 250 ms, not the timeout.
//!
//! Why not hyper-util's `HttpConnector`, which takes a custom resolver and
//! has a happy-eyeballs mode: its mode is RFC 6555's. The addresses of the
//! first family are tried one after another, each with an equal share of
//! the connect timeout, and the other family only after a fixed delay, so
//! a black-holed first address of two in one family still costs half the
//! timeout. Its errors are also opaque, where airlock answers a failure by
//! its kind (unreachable, timed out, refused by the rule). The lookup
//! itself is the system's (`getaddrinfo`, both families in one call), not
//! RFC 8305 §3's separate AAAA and A queries.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use tokio::net::TcpStream;

use airlock_policy::host;

use super::ConnectError;
use vetted::Vetted;

/// How long an attempt has before the next one starts: RFC 8305 §8's
/// recommended Connection Attempt Delay.
const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// Which addresses a connection may go to. Chosen from the policy before
/// the lookup (it may not depend on the answer), and applied to every
/// address the lookup gives: one address the rule refuses refuses the
/// connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Egress {
    /// Any address: a route of the tenant names the host, or
    /// `deny_private_egress` is off.
    Any,
    /// Public (global unicast) addresses only: a host no route of the
    /// tenant names, under `deny_private_egress`. Cloud metadata
    /// (169.254.169.254), the machine's own services and the local network
    /// stay out of reach.
    Public,
    /// Loopback and private addresses only: a route's secret in cleartext,
    /// under `danger_plaintext_private_upstream`.
    Private,
}

impl Egress {
    /// The rule for a host no route of the tenant names.
    pub fn unrouted(deny_private_egress: bool) -> Egress {
        if deny_private_egress { Egress::Public } else { Egress::Any }
    }

    /// Why the rule refuses a connection of `host` to `ip`, if it does.
    fn refuses(self, host: &str, ip: IpAddr) -> Option<ConnectError> {
        let non_public = host::is_non_public(ip);
        match self {
            Egress::Public if non_public => Some(ConnectError::PrivateAddress { host: host.to_owned(), ip }),
            Egress::Private if !non_public => Some(ConnectError::PublicAddress { host: host.to_owned(), ip }),
            _ => None,
        }
    }
}

mod vetted {
    //! [`Vetted`] in a module of its own, so that nothing, not even the
    //! rest of `dial`, can make one but [`Vetted::vet`].

    use std::net::SocketAddr;

    use super::{ConnectError, Egress, Resolver};

    /// The addresses one lookup of a host gave, every one of them allowed
    /// by the connection's [`Egress`] rule and none airlock's own
    /// listener: the only addresses a connection is made to.
    #[derive(Debug)]
    pub struct Vetted {
        authority: String,
        addrs: Vec<SocketAddr>,
    }

    impl Vetted {
        /// Vets `addrs`, what one lookup of `host` gave: airlock's own
        /// listener is a loop, and an address the rule refuses refuses
        /// them all (the denial names it).
        pub(super) fn vet(
            resolver: &Resolver,
            host: &str,
            authority: String,
            addrs: Vec<SocketAddr>,
            egress: Egress,
        ) -> Result<Vetted, ConnectError> {
            if addrs.iter().any(|a| resolver.is_self(*a)) {
                return Err(ConnectError::Loop { authority });
            }
            if let Some(refused) = addrs.iter().find_map(|a| egress.refuses(host, a.ip())) {
                return Err(refused);
            }
            Ok(Vetted { authority, addrs })
        }

        /// `host:port`.
        pub(super) fn authority(&self) -> &str {
            &self.authority
        }

        /// The addresses, in the lookup's order.
        pub(super) fn addrs(&self) -> &[SocketAddr] {
            &self.addrs
        }
    }
}

/// Looks names up (the `[proxy].resolve` overrides first, then the system
/// resolver) and connects to what the lookup gave and the connection's
/// [`Egress`] rule allows. Refuses airlock's own listening address.
#[derive(Clone, Debug)]
pub struct Resolver {
    overrides: Arc<HashMap<String, IpAddr>>,
    listen: SocketAddr,
    /// How long the lookup and TCP connect, and then the TLS handshake,
    /// may each take.
    connect_timeout: Duration,
}

impl Resolver {
    /// A resolver with overrides (keys normalised), refusing `listen`;
    /// connecting gives up after `connect_timeout`.
    pub fn new(overrides: HashMap<String, IpAddr>, listen: SocketAddr, connect_timeout: Duration) -> Self {
        Resolver { overrides: Arc::new(overrides), listen, connect_timeout }
    }

    /// How long a TCP connect, or a TLS handshake, may take.
    pub(crate) fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// Whether an address is airlock's own listener.
    pub fn is_self(&self, addr: SocketAddr) -> bool {
        addr.port() == self.listen.port()
            && (addr.ip() == self.listen.ip()
                || (self.listen.ip().is_unspecified() && (addr.ip().is_loopback() || addr.ip().is_unspecified()))
                || (self.listen.ip().is_loopback() && addr.ip().is_unspecified()))
    }

    /// Connects TCP to `host:port`: one lookup, vetted against `egress`,
    /// then the vetted addresses raced (see the module docs), all within
    /// the connect timeout.
    pub async fn connect(&self, host: &str, port: u16, egress: Egress) -> Result<TcpStream, ConnectError> {
        let authority = format!("{host}:{port}");
        let connect = async {
            let vetted = self.vet(host, port, egress).await?;
            dial(&vetted).await
        };
        tokio::time::timeout(self.connect_timeout, connect).await.map_err(|_| ConnectError::Timeout { authority })?
    }

    /// Looks `host:port` up, once, and vets the answer.
    async fn vet(&self, host: &str, port: u16, egress: Egress) -> Result<Vetted, ConnectError> {
        let authority = format!("{host}:{port}");
        #[cfg(test)]
        let scripted = super::scripted::answer(host, port);
        #[cfg(not(test))]
        let scripted = None;
        let addrs: Vec<SocketAddr> = if let Some(addrs) = scripted {
            addrs
        } else if let Some(ip) = self.overrides.get(host) {
            vec![SocketAddr::new(*ip, port)]
        } else if let Ok(ip) = host.parse::<IpAddr>() {
            vec![SocketAddr::new(ip, port)]
        } else {
            tokio::net::lookup_host((host, port))
                .await
                .map_err(|source| ConnectError::Unreachable { authority: authority.clone(), source })?
                .collect()
        };
        Vetted::vet(self, host, authority, addrs, egress)
    }
}

/// Connects to one of the vetted addresses.
async fn dial(vetted: &Vetted) -> Result<TcpStream, ConnectError> {
    race(&interleave(vetted.addrs()), ATTEMPT_DELAY)
        .await
        .map_err(|source| ConnectError::Unreachable { authority: vetted.authority().to_owned(), source })
}

/// The order to try addresses in: the families interleaved (RFC 8305 §4),
/// starting with the family of the first, each family in the lookup's
/// order.
fn interleave(addrs: &[SocketAddr]) -> Vec<SocketAddr> {
    let first_v6 = addrs.first().is_some_and(SocketAddr::is_ipv6);
    let (first, other): (Vec<SocketAddr>, Vec<SocketAddr>) = addrs.iter().partition(|a| a.is_ipv6() == first_v6);
    let (mut first, mut other) = (first.into_iter(), other.into_iter());
    let mut order = Vec::with_capacity(addrs.len());
    loop {
        match (first.next(), other.next()) {
            (None, None) => return order,
            (a, b) => order.extend(a.into_iter().chain(b)),
        }
    }
}

/// Races connection attempts to `addrs`, started in order: the next when
/// `delay` has passed since the last one started, or at once when one
/// fails. The first to connect wins; the rest are dropped. When every
/// attempt fails, the last failure. Unbounded in time: the caller bounds
/// it.
async fn race(addrs: &[SocketAddr], delay: Duration) -> io::Result<TcpStream> {
    let mut queue = addrs.iter().copied();
    let mut attempts = FuturesUnordered::new();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the host has no address");
    loop {
        if attempts.is_empty() {
            match queue.next() {
                Some(addr) => attempts.push(attempt(addr)),
                None => return Err(last),
            }
        }
        let more = queue.len() > 0;
        tokio::select! {
            Some(result) = attempts.next() => match result {
                Ok(stream) => return Ok(stream),
                Err(e) => {
                    last = e;
                    attempts.extend(queue.next().map(attempt));
                }
            },
            () = tokio::time::sleep(delay), if more => attempts.extend(queue.next().map(attempt)),
            // Not reached: an attempt is pending whenever this is polled.
            else => return Err(last),
        }
    }
}

/// One connection attempt.
async fn attempt(addr: SocketAddr) -> io::Result<TcpStream> {
    #[cfg(test)]
    super::scripted::dial(addr)?;
    let stream = TcpStream::connect(addr).await?;
    // Requests are written whole; Nagle would only delay them.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::time::Instant;

    use tokio::net::TcpListener;

    use super::*;

    fn v4(last: u8) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)), 443)
    }

    fn v6(last: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, last)), 443)
    }

    #[test]
    fn families_are_interleaved_starting_with_the_first() {
        assert_eq!(interleave(&[v6(1), v6(2), v6(3), v4(1), v4(2)]), [v6(1), v4(1), v6(2), v4(2), v6(3)]);
        assert_eq!(interleave(&[v4(1), v6(1), v6(2), v6(3)]), [v4(1), v6(1), v6(2), v6(3)]);
        assert_eq!(interleave(&[v4(1), v4(2)]), [v4(1), v4(2)]);
        assert_eq!(interleave(&[]), [] as [SocketAddr; 0]);
    }

    /// A loopback port nothing listens on: a connection there is refused
    /// at once.
    async fn closed_port() -> SocketAddr {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        listener.local_addr().unwrap()
    }

    #[tokio::test]
    async fn a_failed_attempt_starts_the_next_at_once() {
        let closed = closed_port().await;
        let open = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let started = Instant::now();
        // With a delay of a minute, only a failure can start the second.
        let stream = race(&[closed, open.local_addr().unwrap()], Duration::from_secs(60)).await.unwrap();
        assert_eq!(stream.peer_addr().unwrap(), open.local_addr().unwrap());
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn when_every_attempt_fails_the_last_failure_is_the_answer() {
        let (a, b) = (closed_port().await, closed_port().await);
        let err = race(&[a, b], Duration::from_secs(60)).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        assert_eq!(race(&[], ATTEMPT_DELAY).await.unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    #[tokio::test]
    async fn a_vetted_answer_is_all_or_nothing() {
        let resolver = Resolver::new(HashMap::new(), v4(9), Duration::from_secs(5));
        let public = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(93, 184, 215, 14)), 443);
        let mixed = vec![public, v4(1)];
        let vet = |egress| Vetted::vet(&resolver, "h.test", "h.test:443".to_owned(), mixed.clone(), egress);
        assert!(matches!(vet(Egress::Public), Err(ConnectError::PrivateAddress { ip, .. }) if ip == v4(1).ip()));
        assert!(matches!(vet(Egress::Private), Err(ConnectError::PublicAddress { ip, .. }) if ip == public.ip()));
        assert_eq!(vet(Egress::Any).unwrap().addrs(), mixed);
        // airlock's own listener is refused whatever the rule.
        let own = Vetted::vet(&resolver, "h.test", "h.test:443".to_owned(), vec![v4(9)], Egress::Any);
        assert!(matches!(own, Err(ConnectError::Loop { .. })));
    }
}
