//! The `airlock` command: parses the CLI, sets up tracing and runs the
//! chosen command. Each command lives in its own module of [`cli`];
//! everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use airlock::home::Home;

mod cli;

#[derive(Debug, Parser)]
#[command(name = "airlock", version, about = "Let AI agents call APIs without ever holding the keys")]
struct Cli {
    /// Config file (default: $AIRLOCK_CONFIG, else $AIRLOCK_HOME/airlock.toml).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create AIRLOCK_HOME, the CA and a starter config with one tenant.
    Init,
    /// Run the proxy (first run initialises AIRLOCK_HOME).
    Serve,
    /// Run a command with the proxy, CA and placeholder env set; starts an
    /// in-process proxy when none is listening. Exit status passes through.
    Run {
        /// The tenant (may be omitted when there is exactly one).
        #[arg(long)]
        tenant: Option<String>,
        /// The command and its arguments (after `--`).
        #[arg(trailing_var_arg = true, required = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Print the same environment for Docker, CI or `eval`.
    Env {
        /// The tenant (may be omitted when there is exactly one).
        #[arg(long)]
        tenant: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = cli::env::Format::Sh)]
        format: cli::env::Format,
        /// Proxy host as the agent reaches it (e.g. host.docker.internal or
        /// the bridge IP); default: the configured listen address.
        #[arg(long)]
        proxy_host: Option<String>,
    },
    /// The local CA.
    Ca {
        #[command(subcommand)]
        command: cli::ca::CaCommand,
    },
    /// Validate the config, reach every secret (never printing it), resolve
    /// every route host; exit 1 when anything needs action.
    Check {
        /// Output format.
        #[arg(long, value_enum, default_value_t = cli::check::Format::Table)]
        format: cli::check::Format,
    },
    /// Print the audit log readably, follow it, or verify its hash chain.
    Audit {
        /// Only this tenant's records.
        #[arg(long)]
        tenant: Option<String>,
        /// Keep printing records as they are written.
        #[arg(long)]
        follow: bool,
        /// Only refusals (`decision: deny`); not challenges, tunnels or
        /// allowed requests.
        #[arg(long)]
        deny: bool,
        /// Only records since this long ago (`90s`, `10m`, `2h`, `7d`) or
        /// this time (`2026-11-30`, `2026-11-30T08:00`, UTC).
        #[arg(long)]
        since: Option<String>,
        /// Only the record (and events) of this request id, as a denial
        /// body or `x-airlock-request-id` gives it.
        #[arg(long)]
        request_id: Option<String>,
        /// Only this route's records.
        #[arg(long)]
        route: Option<String>,
        /// Print the records as they are stored, one JSON object per line.
        #[arg(long)]
        json: bool,
        /// Check the chain (order, MACs, and that the log still reaches its
        /// head); report the first failure and exit 1.
        #[arg(long)]
        verify: bool,
        /// With --verify: the verification key printed when the log's seal
        /// was created, to check every record's MAC (without it, only the
        /// current key's records are).
        #[arg(long, env = "AIRLOCK_AUDIT_KEY", hide_env_values = true)]
        key: Option<String>,
    },
    /// Serve approved-action requests over MCP on stdin/stdout (tools
    /// `api_request` and `list_services`); starts an in-process proxy when
    /// none is listening. Logs go to stderr.
    Mcp {
        /// The tenant (may be omitted when there is exactly one).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// The embedded secret store.
    Secret {
        #[command(subcommand)]
        command: cli::secret::SecretCommand,
    },
}

fn main() -> ExitCode {
    let args = Cli::parse();
    init_tracing(args.log_format);
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("airlock: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Libraries log peer bytes at debug and trace (a WebSocket close
    // reason, an HTTP/2 GOAWAY's debug data): whatever RUST_LOG says, only
    // their warnings and errors are written.
    let cap = tracing_subscriber::filter::filter_fn(|m| airlock::log_allowed(m.target(), *m.level()));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi);
    let registry = tracing_subscriber::registry();
    match format {
        LogFormat::Text => registry.with(layer.with_filter(filter).with_filter(cap)).init(),
        LogFormat::Json => registry.with(layer.json().with_filter(filter).with_filter(cap)).init(),
    }
}

fn run(args: Cli) -> anyhow::Result<ExitCode> {
    let home = Home::resolve(args.config).context("cannot find AIRLOCK_HOME")?;
    match args.command {
        Command::Init => cli::serve::init(&home),
        Command::Serve => cli::serve::serve(home),
        Command::Run { tenant, command } => cli::run::agent(home, tenant.as_deref(), &command),
        Command::Env { tenant, format, proxy_host } => {
            cli::env::print(&home, tenant.as_deref(), format, proxy_host.as_deref())
        }
        Command::Ca { command } => cli::ca::run(&home, command),
        Command::Check { format } => cli::check::check(&home, format),
        Command::Audit { verify: true, key, .. } => cli::audit::verify(&home, key.as_deref()),
        Command::Audit { tenant, follow, deny, since, request_id, route, json, .. } => {
            let filter = cli::audit::Filter::new(tenant, deny, since.as_deref(), request_id, route)?;
            cli::audit::print(&home, &filter, follow, json)
        }
        Command::Mcp { tenant } => cli::mcp::serve(home, tenant.as_deref()),
        Command::Secret { command } => cli::secret::run(&home, command),
    }
}
