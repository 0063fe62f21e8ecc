//! `airlock connect [DIR] --tenant T`: binds a folder to a tenant (a marker
//! file, [`airlock::workspace`]), so `airlock run`, `env` and `mcp` inside
//! it need no flags; with `--agent`, also writes the wiring the folder's
//! agent reads: Claude Code's `.mcp.json`, Cursor's `.cursor/mcp.json`, or
//! a snippet for Codex's `~/.codex/config.toml`. None of them holds a
//! secret or the tenant's token: `airlock mcp` reads those from the home.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};

use super::load_policy;
use airlock::home::Home;

/// An agent whose MCP wiring `connect` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Agent {
    /// Claude Code: `.mcp.json` in the folder.
    Claude,
    /// Cursor: `.cursor/mcp.json` in the folder.
    Cursor,
    /// Codex: a snippet for `~/.codex/config.toml`, printed.
    Codex,
}

/// `airlock connect`.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// The folder (default: the current directory).
    dir: Option<PathBuf>,
    /// The tenant (may be omitted when the config has one).
    #[arg(long)]
    tenant: Option<String>,
    /// Also write this agent's MCP wiring (repeat or comma-separate).
    #[arg(long, value_enum, value_delimiter = ',')]
    agent: Vec<Agent>,
}

/// Runs `airlock connect`.
pub fn connect(home: &Home, args: ConnectArgs) -> anyhow::Result<ExitCode> {
    let policy = load_policy(home)?;
    let tenant = airlock::agent::pick_tenant(&policy, args.tenant.as_deref())?;
    let dir = match args.dir {
        Some(d) => d,
        None => std::env::current_dir().context("cannot read the current directory")?,
    };
    if !dir.is_dir() {
        bail!("{} is not a folder", dir.display());
    }
    let workspace =
        airlock::workspace::bind(&home.dir, &dir, &tenant).with_context(|| format!("cannot bind {}", dir.display()))?;
    let dir = workspace.dir;
    println!("bound {} to tenant '{tenant}' ({})", dir.display(), airlock::workspace::MARKER);
    let server = mcp_server(home, &tenant)?;
    for agent in args.agent {
        match agent {
            Agent::Claude => {
                let path = dir.join(".mcp.json");
                merge_mcp_json(&path, &server)?;
                println!("wrote the airlock MCP server into {} (Claude Code)", path.display());
            }
            Agent::Cursor => {
                let path = dir.join(".cursor/mcp.json");
                if !fs::symlink_metadata(dir.join(".cursor")).is_ok_and(|m| m.file_type().is_symlink()) {
                    fs::create_dir_all(dir.join(".cursor"))?;
                }
                merge_mcp_json(&path, &server)?;
                println!("wrote the airlock MCP server into {} (Cursor)", path.display());
            }
            Agent::Codex => {
                println!("\nFor Codex, add to ~/.codex/config.toml:\n{}", codex_snippet(&server));
            }
        }
    }
    let config = if home.config_is_default { String::new() } else { format!("--config {} ", home.config.display()) };
    println!("\nIn this folder, agents run as '{tenant}' with no --tenant:  airlock {config}run -- YOUR-AGENT");
    println!("`airlock status` shows whether the tenant's routes are ready.");
    Ok(ExitCode::SUCCESS)
}

/// The MCP server entry: this binary, `mcp --tenant T`, and the home (and
/// config, when it is not the home's) it reads, absolute.
fn mcp_server(home: &Home, tenant: &str) -> anyhow::Result<serde_json::Value> {
    let exe = std::env::current_exe().context("cannot find the airlock binary's path")?;
    let mut args = vec!["mcp".to_owned(), "--tenant".to_owned(), tenant.to_owned()];
    if !home.config_is_default {
        args.push("--config".into());
        args.push(absolute(&home.config).display().to_string());
    }
    Ok(serde_json::json!({
        "command": exe.display().to_string(),
        "args": args,
        "env": {"AIRLOCK_HOME": absolute(&home.dir).display().to_string()},
    }))
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_owned())
}

/// Sets `mcpServers.airlock` in the JSON file at `path`, keeping the rest;
/// a file that is not a JSON object is left alone and reported, as is a
/// path through a symlink (a repository's `.mcp.json` may point anywhere).
fn merge_mcp_json(path: &Path, server: &serde_json::Value) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let linked = |p: &Path| fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink());
    // A hard link writes through to another file just as a symlink does.
    let shared = fs::symlink_metadata(path).is_ok_and(|m| m.nlink() > 1);
    if linked(path) || path.parent().is_some_and(linked) || shared {
        bail!(
            "{} is or goes through a link to another file; not changed (write the airlock entry yourself)",
            path.display()
        );
    }
    let mut doc = match fs::read_to_string(path) {
        Ok(text) => serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .filter(serde_json::Value::is_object)
            .with_context(|| format!("{} is not a JSON object; not changed", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::json!({}),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let servers = doc
        .as_object_mut()
        .map(|o| o.entry("mcpServers").or_insert_with(|| serde_json::json!({})))
        .and_then(serde_json::Value::as_object_mut)
        .with_context(|| format!("{}: mcpServers is not an object; not changed", path.display()))?;
    servers.insert("airlock".into(), server.clone());
    let text = serde_json::to_string_pretty(&doc)? + "\n";
    fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// The `[mcp_servers.airlock]` table for Codex.
fn codex_snippet(server: &serde_json::Value) -> String {
    let quote = |v: &serde_json::Value| serde_json::to_string(v).unwrap_or_default();
    let args: Vec<String> = server["args"].as_array().into_iter().flatten().map(quote).collect();
    format!(
        "[mcp_servers.airlock]\ncommand = {}\nargs = [{}]\nenv = {{ AIRLOCK_HOME = {} }}\n",
        quote(&server["command"]),
        args.join(", "),
        quote(&server["env"]["AIRLOCK_HOME"])
    )
}
