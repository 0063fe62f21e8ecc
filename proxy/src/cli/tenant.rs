//! `airlock tenant add|list|rm`: tenants in `airlock.toml`, edited in
//! place ([`airlock::config_edit`]); a running `airlock serve` reloads the
//! file when it changes.

use std::process::ExitCode;

use anyhow::bail;
use clap::Subcommand;

use super::load_policy;
use airlock::config_edit::ConfigFile;
use airlock::home::Home;

/// What `airlock tenant` does.
#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Add a tenant (one client workspace) with a fresh token.
    #[command(after_help = "Example:\n  airlock tenant add acme\n  airlock route add --tenant acme --service openai")]
    Add {
        /// Its name: lower-case letters, digits, `-` and `_`.
        name: String,
    },
    /// List the tenants with their routes and bound workspaces.
    List,
    /// Remove a tenant; with routes, only with --force (they go too; their
    /// secrets stay).
    Rm {
        /// The tenant.
        name: String,
        /// Remove it even though it has routes.
        #[arg(long)]
        force: bool,
    },
}

/// Runs `airlock tenant COMMAND`.
pub fn run(home: &Home, command: TenantCommand) -> anyhow::Result<ExitCode> {
    match command {
        TenantCommand::Add { name } => add(home, &name),
        TenantCommand::List => list(home),
        TenantCommand::Rm { name, force } => rm(home, &name, force),
    }
}

/// Whether `name` may name a tenant or route: it is written into proxy
/// URLs (`http://NAME:TOKEN@…`), file names and placeholders.
pub fn check_name(what: &str, name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !ok {
        bail!(
            "{what} name {name:?}: use 1 to 63 lower-case letters, digits, '-' and '_', starting with a letter or digit"
        );
    }
    Ok(())
}

fn add(home: &Home, name: &str) -> anyhow::Result<ExitCode> {
    check_name("tenant", name)?;
    load_policy(home)?;
    let mut file = ConfigFile::open(&home.config, &home.dir)?;
    file.add_tenant(name, &airlock::home::generate_token())?;
    file.save()?;
    println!("added tenant '{name}' to {}", home.config.display());
    println!("next:");
    println!("  airlock route add --tenant {name} --service NAME   # `airlock route services` lists them");
    println!("  airlock connect DIR --tenant {name}                 # bind the client's folder to it");
    println!("A running `airlock serve` picks the change up by itself.");
    Ok(ExitCode::SUCCESS)
}

fn list(home: &Home) -> anyhow::Result<ExitCode> {
    let policy = load_policy(home)?;
    let workspaces = airlock::workspace::registered(&home.dir);
    println!("{:<20} {:>6}  WORKSPACES", "TENANT", "ROUTES");
    for (_, t) in policy.tenants() {
        let bound: Vec<String> =
            workspaces.iter().filter(|w| w.tenant == t.name).map(|w| w.dir.display().to_string()).collect();
        let bound = if bound.is_empty() { "-".to_owned() } else { bound.join(", ") };
        println!("{:<20} {:>6}  {bound}", t.name, t.routes.len());
    }
    Ok(ExitCode::SUCCESS)
}

fn rm(home: &Home, name: &str, force: bool) -> anyhow::Result<ExitCode> {
    let policy = load_policy(home)?;
    let Some((_, tenant)) = policy.tenant_by_name(name) else {
        bail!("the config has no tenant '{name}'");
    };
    if !tenant.routes.is_empty() && !force {
        bail!(
            "tenant '{name}' has {} route(s) ({}); remove them first (airlock route rm --tenant {name} NAME) or pass \
             --force",
            tenant.routes.len(),
            tenant.routes.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
    let mut file = ConfigFile::open(&home.config, &home.dir)?;
    let routes = file.remove_tenant(name)?;
    file.save()?;
    println!("removed tenant '{name}' ({routes} route(s)); its secrets stay declared and stored");
    // Its folders are forgotten: a tenant added later under this name
    // must be connected to them again.
    let unbound = airlock::workspace::unbind_tenant(&home.dir, name)?;
    for dir in unbound {
        println!("  {} is no longer bound (its marker is ignored)", dir.display());
    }
    Ok(ExitCode::SUCCESS)
}
