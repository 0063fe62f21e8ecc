//! Finding a running proxy for `airlock run` and `airlock mcp`: the airlock
//! at `[proxy] listen` when its health check answers as airlock does, else
//! one started in-process. Anything else listening there is an error: an
//! agent's requests, with its tenant token, must never go to it.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::bail;
use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::serve::seal_audit;
use airlock::home::Home;
use airlock_policy::Policy;

/// How long connecting may take; past it, nothing counts as listening.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long the health check's answer may take once connected; past it, the
/// listener is not airlock.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// The proxy at `[proxy] listen` when an airlock answers there, else one
/// started in-process (stopped by the caller).
pub async fn find_or_start_proxy(
    home: &Home,
    listen: SocketAddr,
) -> anyhow::Result<(SocketAddr, Option<airlock::RunningProxy>)> {
    if airlock_listening(listen).await? {
        return Ok((listen, None));
    }
    let policy = Policy::load(&home.config, &home.dir)?;
    seal_audit(&policy)?;
    let proxy = airlock::Proxy::bind(&home.dir, &home.config, policy).await?;
    tracing::info!(addr = %proxy.local_addr(), "no proxy was listening; started one in-process");
    let running = proxy.spawn();
    Ok((running.addr(), Some(running)))
}

/// Whether an airlock answers on `addr`: false when the port is 0 (picked
/// at each start) or nothing accepts a connection; an error when something
/// does but its answer to the health check is not airlock's.
async fn airlock_listening(addr: SocketAddr) -> anyhow::Result<bool> {
    if addr.port() == 0 {
        return Ok(false);
    }
    let Ok(Ok(stream)) = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await else {
        return Ok(false);
    };
    if tokio::time::timeout(ANSWER_TIMEOUT, answers_as_airlock(stream)).await.unwrap_or(false) {
        Ok(true)
    } else {
        bail!("something other than airlock is listening on {addr}; stop it or change [proxy] listen")
    }
}

/// Sends the health check on `stream`: airlock answers 200 with its version
/// header. Anything else — another status, no such header, a connection
/// closed early, bytes that are not HTTP — is not airlock.
async fn answers_as_airlock(stream: TcpStream) -> bool {
    let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await else {
        return false;
    };
    let check = Request::get(airlock::listener::HEALTH_PATH)
        .header(header::HOST, "airlock")
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .expect("a GET of a constant path with constant headers is a valid request");
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
    answer.is_ok_and(|a| a.status() == StatusCode::OK && a.headers().contains_key(airlock::listener::VERSION_HEADER))
}
