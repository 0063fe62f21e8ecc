//! `airlock mcp`: an MCP server on stdin/stdout whose tools make
//! approved-action requests for one tenant, through the airlock at
//! `[proxy] listen` or one started in-process while it serves. Logs go to
//! stderr: stdout carries only the protocol.

use std::process::ExitCode;

use super::probe::find_or_start_proxy;
use super::{load_policy, runtime};
use airlock::home::Home;

/// Serves MCP on stdio until stdin ends.
pub fn serve(home: Home, tenant: Option<&str>) -> anyhow::Result<ExitCode> {
    let mut policy = load_policy(&home)?;
    let tenant = super::pick_tenant(&home, &policy, tenant)?;
    runtime()?.block_on(async move {
        let found = find_or_start_proxy(&home, policy.proxy.listen, &tenant).await?;
        let (addr, running) = (found.addr, found.running);
        if let Some(token) = &found.token {
            policy.set_token(&tenant, token);
        }
        // Whatever answers at `addr` later (a serve restarted, or a
        // process that took its port) proves itself before each request.
        let instance = airlock::instance::Instance::load_or_create(&home.dir)?;
        let server = airlock::mcp::Server::new(&policy, &tenant, addr)?.verify_proxy(instance);
        tracing::info!(tenant = %tenant, proxy = %addr, "MCP server ready on stdio");
        let served = server.serve(tokio::io::stdin(), tokio::io::stdout()).await;
        if let Some(r) = running {
            r.shutdown().await;
        }
        served?;
        anyhow::Ok(ExitCode::SUCCESS)
    })
}
