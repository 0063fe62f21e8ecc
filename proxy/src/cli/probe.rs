//! Finding a running proxy for `airlock run` and `airlock mcp`: the airlock
//! at `[proxy] listen` when its health check answers as airlock does, else
//! one started in-process. Anything else listening there is an error: an
//! agent's requests, with its tenant token, must never go to it.

use std::net::SocketAddr;

use anyhow::bail;

use super::serve::seal_audit;
use airlock::home::Home;
use airlock_policy::Policy;

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

/// Whether an airlock answers on `addr` (its health check carries its
/// version header).
async fn airlock_listening(addr: SocketAddr) -> anyhow::Result<bool> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if addr.port() == 0 {
        return Ok(false);
    }
    let connect = tokio::time::timeout(std::time::Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await;
    let Ok(Ok(mut stream)) = connect else { return Ok(false) };
    let probe = format!("GET {} HTTP/1.1\r\nHost: airlock\r\nConnection: close\r\n\r\n", airlock::server::HEALTH_PATH);
    stream.write_all(probe.as_bytes()).await?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(2), stream.read(&mut buf)).await.unwrap_or(Ok(0))?;
    let head = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
    if head.starts_with("http/1.1 200") && head.contains(&format!("\r\n{}:", airlock::server::VERSION_HEADER)) {
        Ok(true)
    } else {
        bail!("something other than airlock is listening on {addr}; stop it or change [proxy] listen")
    }
}
