//! A scripted network for the unit tests: a scripted name answers its
//! lookups as the test wrote them, one answer per lookup (the last one
//! repeating), as a hostile DNS server may; and only loopback addresses
//! can be dialled — any other is refused at once, as on a network with no
//! route there, before a socket is made. Every lookup of a scripted name
//! and every dial is recorded, so a test can say exactly which lookups
//! were made and which addresses were tried.
//!
//! Names not scripted resolve as usual; tests script unique names, so
//! tests running in parallel do not meet.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, MutexGuard};

#[derive(Default)]
struct Network {
    /// Per name: the answers still to give, and how many lookups were made.
    names: HashMap<String, (Vec<Vec<IpAddr>>, usize)>,
    /// Every address dialled, in order.
    dialled: Vec<SocketAddr>,
}

fn network() -> MutexGuard<'static, Network> {
    static NETWORK: std::sync::OnceLock<Mutex<Network>> = std::sync::OnceLock::new();
    NETWORK.get_or_init(Mutex::default).lock().unwrap_or_else(|p| p.into_inner())
}

/// Scripts `host`'s answers: the first lookup gets `answers[0]`, the
/// next `answers[1]`, and so on; the last answer repeats.
pub(crate) fn script(host: &str, answers: Vec<Vec<IpAddr>>) {
    assert!(!answers.is_empty(), "a script needs an answer");
    network().names.insert(host.to_owned(), (answers, 0));
}

/// How many times `host` was looked up.
pub(crate) fn lookups(host: &str) -> usize {
    network().names.get(host).map_or(0, |(_, n)| *n)
}

/// Every address dialled with port `port`, in order.
pub(crate) fn dialled(port: u16) -> Vec<SocketAddr> {
    network().dialled.iter().copied().filter(|a| a.port() == port).collect()
}

/// The answer to a lookup of `host`, if it is scripted.
pub(super) fn answer(host: &str, port: u16) -> Option<Vec<SocketAddr>> {
    let mut net = network();
    let (answers, count) = net.names.get_mut(host)?;
    *count += 1;
    let ips = if answers.len() > 1 { answers.remove(0) } else { answers[0].clone() };
    Some(ips.into_iter().map(|ip| SocketAddr::new(ip, port)).collect())
}

/// Records a dial; refuses any address but loopback.
pub(super) fn dial(addr: SocketAddr) -> io::Result<()> {
    network().dialled.push(addr);
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(io::Error::new(io::ErrorKind::NetworkUnreachable, "the test network reaches only loopback"))
    }
}
