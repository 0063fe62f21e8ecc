//! `airlock env`: prints the environment `airlock run` gives an agent (proxy
//! URL, CA files, each route's placeholder) for Docker, CI or `eval`, as
//! the agent on another machine or in a container reaches the proxy.

use std::process::ExitCode;

use anyhow::bail;
use clap::ValueEnum;

use super::load_policy;
use airlock::home::Home;

/// How the variables are written.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    Sh,
    Dotenv,
    Github,
}

/// Prints the variables for `tenant`, with `proxy_host` (if given) in the
/// proxy URL in place of the listen address's IP.
pub fn print(home: &Home, tenant: Option<&str>, format: Format, proxy_host: Option<&str>) -> anyhow::Result<ExitCode> {
    let policy = load_policy(home)?;
    let tenant = super::pick_tenant(home, &policy, tenant)?;
    let listen = policy.proxy.listen;
    if listen.port() == 0 {
        bail!(
            "[proxy] listen = \"{listen}\" picks a free port at each start, so there is no fixed proxy address to \
             print; set a port (e.g. 127.0.0.1:8080), or use `airlock run`, which knows it"
        );
    }
    let authority = match proxy_host {
        // A host name or IP literal only: it is written into dotenv and
        // $GITHUB_ENV lines, where a line break would add variables of its
        // own.
        Some(h) if airlock_policy::host::normalize(h.trim_start_matches('[').trim_end_matches(']')).is_none() => {
            bail!("--proxy-host {h:?} is not a host name or IP address")
        }
        Some(h) => format!("{h}:{}", listen.port()),
        None => super::probe::reachable(listen).to_string(),
    };
    // The environment printed is for another machine or container: this
    // shell's own NO_PROXY is not carried over.
    let vars = airlock::agent::agent_env(&home.dir, &policy, &tenant, &authority, &[])?.vars;
    let format = match format {
        Format::Sh => airlock::agent::Format::Sh,
        Format::Dotenv => airlock::agent::Format::Dotenv,
        Format::Github => airlock::agent::Format::Github,
    };
    print!("{}", airlock::agent::render(&vars, format));
    Ok(ExitCode::SUCCESS)
}
