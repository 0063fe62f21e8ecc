//! `airlock run -- CMD`: runs an agent with the proxy, CA and placeholder
//! environment set, through the airlock at `[proxy] listen` or one started
//! in-process for as long as the agent runs. SIGTERM and SIGHUP sent to
//! airlock are passed on to the agent; its exit status is airlock's.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitCode;

use anyhow::Context;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};

use super::probe::find_or_start_proxy;
use super::{load_policy, runtime};
use airlock::home::Home;

/// Runs `command` as `tenant`'s agent and waits for it; its exit status (128
/// + the signal, if a signal ended it) is returned.
pub fn agent(home: Home, tenant: Option<&str>, command: &[String]) -> anyhow::Result<ExitCode> {
    let mut policy = load_policy(&home)?;
    let tenant = super::pick_tenant(&home, &policy, tenant)?;
    let listen = policy.proxy.listen;
    runtime()?.block_on(async move {
        let found = find_or_start_proxy(&home, listen, &tenant).await?;
        let (addr, running) = (found.addr, found.running);
        if let Some(token) = &found.token {
            policy.set_token(&tenant, token);
        }
        let inherited: Vec<String> =
            airlock::agent::NO_PROXY_VARS.iter().filter_map(|k| std::env::var(k).ok()).collect();
        let env = airlock::agent::agent_env(&home.dir, &policy, &tenant, &addr.to_string(), &inherited)?;
        if !env.dropped_no_proxy.is_empty() {
            eprintln!(
                "airlock: left {} out of NO_PROXY for the agent: it would send tenant '{tenant}''s route hosts around \
                 airlock",
                env.dropped_no_proxy.join(", ")
            );
        }
        let (vars, removed) = (env.vars, env.removed);
        let (program, args) = command.split_first().context("no command given")?;
        let mut agent = tokio::process::Command::new(program);
        // The agent gets none of the variables `env` secrets read (every
        // tenant's), then the agent variables: a route's `env` may reuse
        // such a name, and then holds its placeholder.
        for var in policy.secret_env_vars() {
            agent.env_remove(var);
        }
        for var in removed {
            agent.env_remove(var);
        }
        let mut child = agent.args(args).envs(vars).spawn().with_context(|| format!("cannot run {program}"))?;
        // Ctrl-C reaches the child directly (same process group); SIGTERM
        // and SIGHUP sent to airlock are passed on. airlock itself waits for
        // the child either way.
        let pid = child.id().map(|p| Pid::from_raw(p as i32));
        let mut term = signal(SignalKind::terminate())?;
        let mut hup = signal(SignalKind::hangup())?;
        let mut int = signal(SignalKind::interrupt())?;
        let status = loop {
            tokio::select! {
                s = child.wait() => break s?,
                _ = term.recv() => forward_signal(pid, Signal::SIGTERM),
                _ = hup.recv() => forward_signal(pid, Signal::SIGHUP),
                _ = int.recv() => {}
            }
        };
        if let Some(r) = running {
            r.shutdown().await;
        }
        let code = status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(1));
        anyhow::Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
    })
}

fn forward_signal(pid: Option<Pid>, signal: Signal) {
    if let Some(pid) = pid {
        let _ = nix::sys::signal::kill(pid, signal);
    }
}
