//! Finding the proxy for `airlock run` and `airlock mcp`: the airlock at
//! `[proxy] listen` only when it proves it serves this AIRLOCK_HOME (its
//! instance id, and a challenge answered with the home's key: see
//! [`airlock::instance`]); otherwise a private proxy started in-process on
//! an ephemeral loopback port, for this one agent. An agent's requests,
//! with its tenant token, never go to a listener that has not proved it is
//! this home's airlock.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::serve::seal_audit;
use airlock::home::Home;
use airlock::instance::{self, Instance};
use airlock_policy::Policy;

/// How long connecting may take; past it, nothing counts as listening.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long the health check's answer may take once connected; past it, the
/// listener is not airlock.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// What listens on `[proxy] listen`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listening {
    /// Nothing (or the port is 0, picked at each start).
    Nothing,
    /// This home's airlock: it proved it.
    Ours,
    /// An airlock serving another home (its instance id).
    OtherHome(String),
    /// Something that is not an airlock, or one that claims this home and
    /// cannot prove it.
    Unproven,
}

/// The proxy an agent of `home` uses.
#[derive(Debug)]
pub struct Found {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The proxy started for this agent, stopped by the caller; None for
    /// this home's running serve.
    pub running: Option<airlock::RunningProxy>,
    /// `tenant`'s token for it: the config's for a serve, a fresh one for a
    /// private proxy (it accepts no other, and opens nothing once the proxy
    /// stops: a process that takes its port then learns nothing of use).
    pub token: Option<zeroize::Zeroizing<String>>,
}

/// The proxy an agent of `home`, as `tenant`, uses: the one at `listen`
/// when it is this home's, else a private one started in-process on an
/// ephemeral loopback port, with a token of its own for the tenant. Why a
/// listener was passed over is said on stderr, before the agent starts.
pub async fn find_or_start_proxy(home: &Home, listen: SocketAddr, tenant: &str) -> anyhow::Result<Found> {
    // A serve listening on every address is reached, and proves itself,
    // on loopback.
    let listen = reachable(listen);
    match probe(home, listen).await? {
        Listening::Ours => return Ok(Found { addr: listen, running: None, token: None }),
        Listening::Nothing => {}
        Listening::OtherHome(id) => eprintln!(
            "airlock: the proxy on {listen} serves another AIRLOCK_HOME (instance {id}, this home's is {}); this \
             agent gets a private proxy of its own",
            instance::instance_id(&home.dir)
        ),
        Listening::Unproven => eprintln!(
            "airlock: what listens on {listen} did not prove it is this home's airlock; it gets nothing of the \
             tenant's, and this agent gets a private proxy of its own"
        ),
    }
    let policy = Policy::load(&home.config, &home.dir)?;
    seal_audit(&policy)?;
    // Private: loopback, a port of its own, so no other agent finds it and
    // none loses it when this one exits.
    let ip = if listen.ip().is_loopback() { listen.ip() } else { IpAddr::V4(Ipv4Addr::LOCALHOST) };
    let token = zeroize::Zeroizing::new(airlock::home::generate_token());
    let tokens = vec![(tenant.to_owned(), token.clone())];
    let addr = SocketAddr::new(ip, 0);
    let proxy = airlock::Proxy::bind_private(&home.dir, &home.config, policy, addr, tokens).await?;
    tracing::info!(addr = %proxy.local_addr(), "started a private proxy in-process for this agent");
    // It reloads the config when the file changes, as serve does: a
    // tenant or route removed is refused to a running agent too.
    let watch = proxy.reloader().watch(std::time::Duration::from_secs(1));
    let running = proxy.spawn();
    tokio::spawn(watch);
    Ok(Found { addr: running.addr(), running: Some(running), token: Some(token) })
}

/// `addr` as a client reaches it: the unspecified address (a listener on
/// every interface) is reached on loopback.
pub fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

/// One line on what listens on `listen`, for `airlock status`.
pub async fn describe(home: &Home, listen: SocketAddr) -> String {
    let listen = reachable(listen);
    match probe(home, listen).await {
        Ok(Listening::Ours) => format!("this home's airlock is running on {listen}"),
        Ok(Listening::Nothing) => format!(
            "nothing listens on {listen}; `airlock run` starts a private proxy per agent (Docker and CI agents need \
             `airlock serve`)"
        ),
        Ok(Listening::OtherHome(id)) => {
            format!("an airlock of another AIRLOCK_HOME (instance {id}) listens on {listen}")
        }
        Ok(Listening::Unproven) => {
            format!("something that is not this home's airlock listens on {listen}; stop it or change [proxy] listen")
        }
        Err(e) => format!("cannot check {listen}: {e:#}"),
    }
}

/// What listens on `addr`, asked with a fresh challenge.
async fn probe(home: &Home, addr: SocketAddr) -> anyhow::Result<Listening> {
    if addr.port() == 0 {
        return Ok(Listening::Nothing);
    }
    let Ok(Ok(stream)) = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await else {
        return Ok(Listening::Nothing);
    };
    let ours = Instance::load_or_create(&home.dir)?;
    let challenge = instance::new_challenge();
    let answer = tokio::time::timeout(ANSWER_TIMEOUT, health(stream, &challenge)).await.ok().flatten();
    let Some(head) = answer else { return Ok(Listening::Unproven) };
    let text = |name: &str| head.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    Ok(match (text(instance::INSTANCE_HEADER), text(instance::PROOF_HEADER)) {
        (Some(id), Some(proof)) if id == ours.id() && ours.verify(&challenge, addr, &proof) => Listening::Ours,
        (Some(id), _) if id != ours.id() => Listening::OtherHome(id),
        _ => Listening::Unproven,
    })
}

/// Sends the health check with `challenge` on `stream`: the answer's
/// headers when it is airlock's (200 with its version header); None for
/// anything else — another status, a connection closed early, bytes that
/// are not HTTP.
async fn health(stream: TcpStream, challenge: &str) -> Option<http::HeaderMap> {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.ok()?;
    let check = Request::get(airlock::listener::HEALTH_PATH)
        .header(header::HOST, "airlock")
        .header(header::CONNECTION, "close")
        .header(instance::CHALLENGE_HEADER, challenge)
        .body(Empty::<Bytes>::new())
        .ok()?;
    // The connection is driven here, not spawned: when the answer comes,
    // or the time is up, nothing of the probe is left running.
    let mut answer = std::pin::pin!(sender.send_request(check));
    let answer = tokio::select! {
        biased;
        answer = &mut answer => answer,
        // The connection ended first (the peer closed it, or sent what is
        // not HTTP): its answer, if it read one, is waiting.
        _ = conn => answer.await,
    };
    let answer = answer.ok()?;
    let airlock = answer.status() == StatusCode::OK && answer.headers().contains_key(airlock::listener::VERSION_HEADER);
    airlock.then(|| answer.headers().clone())
}
