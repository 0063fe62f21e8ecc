//! The `airlock` command: parses the CLI, sets up tracing and runs the
//! chosen command. Each command lives in its own module of [`cli`];
//! everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use airlock::home::Home;

mod cli;

/// The ENVIRONMENT section every command's help ends with.
macro_rules! environment {
    () => {
        "ENVIRONMENT:\n  AIRLOCK_HOME    the CA, secret store, audit log and config (default: $XDG_DATA_HOME/airlock, \
         else ~/.local/share/airlock)\n  AIRLOCK_CONFIG  the config file (default: $AIRLOCK_HOME/airlock.toml); \
         --config wins\n  RUST_LOG        log filter (default: info)"
    };
}

/// A command's help after its options: examples, then the environment.
macro_rules! help {
    ($examples:expr) => {
        concat!("EXAMPLES:\n", $examples, "\n\n", environment!())
    };
    ($examples:expr, $env:expr) => {
        concat!("EXAMPLES:\n", $examples, "\n\n", environment!(), "\n", $env)
    };
}

#[derive(Debug, Parser)]
#[command(
    name = "airlock",
    version,
    about = "Let AI agents call APIs without ever holding the keys",
    after_help = help!(
        "  airlock serve                                   # run the proxy (first run sets up AIRLOCK_HOME)\n  \
         airlock tenant add acme                         # a client workspace\n  \
         airlock route add --tenant acme --service openai\n  \
         airlock secret set acme_openai                  # the real key, typed with echo off\n  \
         airlock connect ~/clients/acme --tenant acme    # bind the folder\n  \
         cd ~/clients/acme && airlock run -- claude      # the agent holds placeholders only\n  \
         airlock status"
    )
)]
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
    /// Create AIRLOCK_HOME, the CA and a starter config with one tenant;
    /// on an initialised home, say what it has.
    #[command(after_help = help!("  airlock init\n  AIRLOCK_HOME=/srv/airlock airlock init"))]
    Init,
    /// Run the proxy (first run initialises AIRLOCK_HOME); it reloads the
    /// config when the file changes and on SIGHUP.
    #[command(after_help = help!("  airlock serve\n  RUST_LOG=debug airlock serve --log-format json"))]
    Serve,
    /// Run a command with the proxy, CA and placeholder env set. It uses
    /// `airlock serve` of this home when that runs (proved by a challenge
    /// only this home can answer), else a private proxy on a free loopback
    /// port that lives as long as the command; its logs go to
    /// AIRLOCK_HOME/run.log. Exit status passes through.
    #[command(after_help = help!(
        "  airlock run -- claude\n  airlock run --tenant acme -- python agent.py\n  \
         airlock run -- sh -c 'curl -H \"Authorization: Bearer $OPENAI_API_KEY\" https://api.openai.com/v1/models'",
        "  NO_PROXY        kept for the agent, but for entries that would send a route's host around airlock"
    ))]
    Run {
        /// The tenant (default: the connected workspace's, or the only one).
        #[arg(long)]
        tenant: Option<String>,
        /// The command and its arguments (after `--`).
        #[arg(trailing_var_arg = true, required = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Print the same environment for Docker, CI or `eval`.
    #[command(after_help = help!(
        "  eval \"$(airlock env)\"\n  airlock env --tenant acme --format dotenv --proxy-host host.docker.internal > .env\n  \
         airlock env --format github >> \"$GITHUB_ENV\""
    ))]
    Env {
        /// The tenant (default: the connected workspace's, or the only one).
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
    #[command(after_help = help!("  airlock ca export > airlock-ca.pem\n  airlock ca export --bundle > bundle.pem"))]
    Ca {
        #[command(subcommand)]
        command: cli::ca::CaCommand,
    },
    /// Validate the config, reach every secret (never printing it), resolve
    /// every route host; exit 1 when anything needs action.
    #[command(after_help = help!("  airlock check\n  airlock check --format json"))]
    Check {
        /// Output format.
        #[arg(long, value_enum, default_value_t = cli::check::Format::Table)]
        format: cli::check::Format,
    },
    /// Print the audit log readably, follow it, or verify its hash chain.
    #[command(after_help = help!(
        "  airlock audit --deny --since 1h\n  airlock audit --request-id 7f3a…\n  airlock audit --follow --tenant acme\n  \
         airlock audit --verify --key KEY",
        "  AIRLOCK_AUDIT_KEY  the verification key for --verify (in place of --key)"
    ))]
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
    /// `api_request` and `list_services`), through this home's `airlock
    /// serve` or a private in-process proxy. Logs go to stderr.
    #[command(after_help = help!("  airlock mcp --tenant acme\n  airlock connect . --tenant acme --agent claude,cursor   # writes the wiring"))]
    Mcp {
        /// The tenant (default: the connected workspace's, or the only one).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// The embedded secret store.
    #[command(after_help = help!("  airlock secret set acme_openai          # prompts, echo off\n  \
        op read op://acme/openai | airlock secret set acme_openai\n  airlock secret list"))]
    Secret {
        #[command(subcommand)]
        command: cli::secret::SecretCommand,
    },
    /// Tenants (client workspaces) in airlock.toml, edited in place.
    #[command(after_help = help!("  airlock tenant add acme\n  airlock tenant list\n  airlock tenant rm acme --force"))]
    Tenant {
        #[command(subcommand)]
        command: cli::tenant::TenantCommand,
    },
    /// Routes in airlock.toml, edited in place; `add --service` fills them
    /// from the built-in catalogue.
    #[command(after_help = help!("  airlock route services\n  airlock route add --tenant acme --service openai\n  \
        airlock route add --tenant acme --host api.example.com --header x-api-key\n  airlock route list\n  \
        airlock route rm --tenant acme openai"))]
    Route {
        #[command(subcommand)]
        command: cli::route::RouteCommand,
    },
    /// Bind a folder to a tenant: `run`, `env` and `mcp` inside it need no
    /// --tenant; --agent also writes its MCP wiring.
    #[command(after_help = help!("  airlock connect ~/clients/acme --tenant acme\n  \
        airlock connect . --tenant acme --agent claude,cursor,codex"))]
    Connect(cli::connect::ConnectArgs),
    /// Per workspace and tenant: Ready, or what needs action (the checks
    /// of `airlock check`); exit 1 when anything needs action.
    #[command(after_help = help!("  airlock status\n  airlock status --json"))]
    Status {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// Every (sub)command's help ends with the ENVIRONMENT section: those
/// without examples of their own (`secret set`, `route add`, …) get it
/// alone.
fn with_environment(cmd: clap::Command) -> clap::Command {
    let cmd = cmd.mut_subcommands(with_environment);
    let has = cmd.get_after_help().is_some_and(|h| h.to_string().contains("ENVIRONMENT:"));
    if has {
        return cmd;
    }
    let help = match cmd.get_after_help() {
        Some(h) => format!("{h}\n\n{}", environment!()),
        None => environment!().to_owned(),
    };
    cmd.after_help(help)
}

fn main() -> ExitCode {
    let matches = with_environment(Cli::command()).get_matches();
    let args = match Cli::from_arg_matches(&matches) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    let home = match Home::resolve(args.config.clone()).context("cannot find AIRLOCK_HOME") {
        Ok(h) => h,
        Err(e) => {
            eprintln!("airlock: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    // An agent's terminal is its own (a TUI draws over it): `run` logs to
    // a file in the home.
    let log_file = match args.command {
        Command::Run { .. } => open_log(&home.dir.join("run.log")),
        _ => None,
    };
    init_tracing(args.log_format, log_file);
    match run(home, args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("airlock: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `path` opened to append log lines (0600); None when it cannot be.
fn open_log(path: &std::path::Path) -> Option<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path).ok()
}

fn init_tracing(format: LogFormat, file: Option<std::fs::File>) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Libraries log peer bytes at debug and trace (a WebSocket close
    // reason, an HTTP/2 GOAWAY's debug data): whatever RUST_LOG says, only
    // their warnings and errors are written.
    let cap = tracing_subscriber::filter::filter_fn(|m| airlock::log_allowed(m.target(), *m.level()));
    use tracing_subscriber::fmt::writer::BoxMakeWriter;
    let (writer, ansi) = match file {
        Some(f) => (BoxMakeWriter::new(std::sync::Mutex::new(f)), false),
        None => (BoxMakeWriter::new(std::io::stderr), std::io::IsTerminal::is_terminal(&std::io::stderr())),
    };
    let layer = tracing_subscriber::fmt::layer().with_writer(writer).with_ansi(ansi);
    let registry = tracing_subscriber::registry();
    match format {
        LogFormat::Text => registry.with(layer.with_filter(filter).with_filter(cap)).init(),
        LogFormat::Json => registry.with(layer.json().with_filter(filter).with_filter(cap)).init(),
    }
}

fn run(home: Home, args: Cli) -> anyhow::Result<ExitCode> {
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
        Command::Tenant { command } => cli::tenant::run(&home, command),
        Command::Route { command } => cli::route::run(&home, command),
        Command::Connect(args) => cli::connect::connect(&home, args),
        Command::Status { json } => cli::status::status(&home, json),
    }
}
