//! The `airlock` commands, one module each. `main` parses the command line
//! and calls the chosen command here; what several commands share (reading
//! the config, the runtime of those that run or reach a proxy) is defined
//! once in this module.

use anyhow::{Context, bail};

use airlock::home::Home;
use airlock_policy::Policy;

pub mod audit;
pub mod ca;
pub mod check;
pub mod connect;
pub mod env;
pub mod mcp;
pub mod probe;
pub mod route;
pub mod run;
pub mod secret;
pub mod serve;
pub mod status;
pub mod tenant;

/// The config, checked; when there is none yet, an error that says how to
/// create one.
pub fn load_policy(home: &Home) -> anyhow::Result<Policy> {
    if !home.config.exists() {
        bail!(
            "no config at {}; run `airlock init` (or `airlock serve`, which creates one in AIRLOCK_HOME)",
            home.config.display()
        );
    }
    Ok(Policy::load(&home.config, &home.dir)?)
}

/// The tenant a command acts as: the one named; else the one the
/// workspace around the current directory is bound to by this home
/// (`airlock connect`); else the config's only tenant.
pub fn pick_tenant(home: &Home, policy: &Policy, named: Option<&str>) -> anyhow::Result<String> {
    if named.is_none() {
        let cwd = std::env::current_dir().context("cannot read the current directory")?;
        let (bound, unbound) = airlock::workspace::find_bound(&home.dir, &cwd);
        if let Some(ws) = bound {
            return airlock::agent::pick_tenant(policy, Some(&ws.tenant)).with_context(|| {
                format!("{} is bound to tenant '{}' ({})", ws.dir.display(), ws.tenant, airlock::workspace::MARKER)
            });
        }
        if let Some(marker) = unbound {
            eprintln!("airlock: {marker}");
        }
    }
    Ok(airlock::agent::pick_tenant(policy, named)?)
}

/// The runtime of the commands that run a proxy or talk to one (`serve`,
/// `run`, `mcp`); the others need none.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build()
}
