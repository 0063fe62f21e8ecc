//! The `airlock` command: parses the CLI, sets up tracing, loads the config
//! and runs the chosen command. Everything else lives in the library.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};

use airlock::home::Home;
use airlock_ca::CertificateAuthority;
use airlock_policy::Policy;
use airlock_policy::secrets::{SecretValue, Store, trim_newline};

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
        #[arg(long, value_enum, default_value_t = EnvFormat::Sh)]
        format: EnvFormat,
        /// Proxy host as the agent reaches it (e.g. host.docker.internal or
        /// the bridge IP); default: the configured listen address.
        #[arg(long)]
        proxy_host: Option<String>,
    },
    /// The local CA.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Validate the config, reach every secret (never printing it), resolve
    /// every route host; exit 1 when anything needs action.
    Check {
        /// Output format.
        #[arg(long, value_enum, default_value_t = CheckFormat::Table)]
        format: CheckFormat,
    },
    /// Print the audit log readably, follow it, or verify its hash chain.
    Audit {
        /// Only this tenant's records.
        #[arg(long)]
        tenant: Option<String>,
        /// Keep printing records as they are written.
        #[arg(long)]
        follow: bool,
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
        command: SecretCommand,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum EnvFormat {
    Sh,
    Dotenv,
    Github,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum CheckFormat {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
enum CaCommand {
    /// Print the CA certificate (PEM).
    Export {
        /// Print the system roots followed by the airlock CA: one bundle for
        /// SSL_CERT_FILE, REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE, GIT_SSL_CAINFO.
        #[arg(long)]
        bundle: bool,
    },
}

#[derive(Debug, Subcommand)]
enum SecretCommand {
    /// Read a value from stdin into the store (0600). Nothing is echoed.
    Set {
        /// The secret's name, as in [secrets.NAME].
        name: String,
    },
    /// List stored names and ages (never values).
    List,
    /// Remove a stored value.
    Rm {
        /// The secret's name.
        name: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match run(cli) {
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

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let home = Home::resolve(cli.config).context("cannot find AIRLOCK_HOME")?;
    match cli.command {
        Command::Init => {
            let created = home.init().with_context(|| format!("cannot initialise {}", home.dir.display()))?;
            report_init(&home, created.ca, created.config);
            seal_audit(&load_policy(&home)?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve => serve(home),
        Command::Ca { command: CaCommand::Export { bundle } } => {
            let ca = CertificateAuthority::load_or_create(&home.dir)?;
            let mut out = String::new();
            if bundle {
                out.push_str(&airlock::agent::system_roots_pem());
            }
            out.push_str(ca.cert_pem());
            std::io::stdout().write_all(out.as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Secret { command } => secret(&home, command),
        Command::Env { tenant, format, proxy_host } => {
            let policy = load_policy(&home)?;
            let tenant = airlock::agent::pick_tenant(&policy, tenant.as_deref())?;
            let listen = policy.proxy.listen;
            if listen.port() == 0 {
                bail!(
                    "[proxy] listen = \"{listen}\" picks a free port at each start, so there is no fixed proxy \
                     address to print; set a port (e.g. 127.0.0.1:8080), or use `airlock run`, which knows it"
                );
            }
            let authority = match proxy_host {
                // A host name or IP literal only: it is written into
                // dotenv and $GITHUB_ENV lines, where a line break would
                // add variables of its own.
                Some(h)
                    if airlock_policy::host::normalize(h.trim_start_matches('[').trim_end_matches(']')).is_none() =>
                {
                    bail!("--proxy-host {h:?} is not a host name or IP address")
                }
                Some(h) => format!("{h}:{}", listen.port()),
                None => listen.to_string(),
            };
            // The environment printed is for another machine or container:
            // this shell's own NO_PROXY is not carried over.
            let vars = airlock::agent::agent_env(&home.dir, &policy, &tenant, &authority, &[])?.vars;
            let format = match format {
                EnvFormat::Sh => airlock::agent::Format::Sh,
                EnvFormat::Dotenv => airlock::agent::Format::Dotenv,
                EnvFormat::Github => airlock::agent::Format::Github,
            };
            print!("{}", airlock::agent::render(&vars, format));
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { tenant, command } => run_agent(home, tenant.as_deref(), &command),
        Command::Mcp { tenant } => mcp(home, tenant.as_deref()),
        Command::Check { format } => {
            let policy = match load_policy(&home) {
                Ok(p) => p,
                Err(e) => {
                    match format {
                        CheckFormat::Table => println!("Needs action: {e:#}"),
                        CheckFormat::Json => {
                            println!("{}", serde_json::json!({"ok": false, "config_error": format!("{e:#}")}))
                        }
                    }
                    return Ok(ExitCode::FAILURE);
                }
            };
            let mut report = airlock::check::check(&home.dir, &policy);
            report.warnings = airlock::home::exposure(&home.dir, &home.config);
            match format {
                CheckFormat::Table => print!("{}", report.table()),
                CheckFormat::Json => println!(
                    "{}",
                    serde_json::json!({"ok": report.ok(), "routes": report.routes, "general": report.general,
                        "warnings": report.warnings})
                ),
            }
            Ok(if report.ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Audit { tenant, follow, verify, key } => {
            if verify {
                return verify_audit(&home, key.as_deref());
            }
            audit(&home, tenant.as_deref(), follow)
        }
    }
}

/// Creates the audit log's seal if it has none, and shows its verification
/// key, once.
fn seal_audit(policy: &Policy) -> anyhow::Result<()> {
    let path = &policy.audit.path;
    if let Some(key) = airlock::audit::ensure_seal(path)
        .with_context(|| format!("cannot create the audit seal for {}", path.display()))?
    {
        eprintln!("\nThe audit log's verification key (shown once; keep it somewhere other than this machine):");
        eprintln!("  {}", &*key);
        eprintln!(
            "`airlock audit --verify --key KEY` checks every record with it. airlock keeps only later keys, so \
             records already written cannot be rewritten unnoticed, even by someone who takes this machine.\n"
        );
    }
    Ok(())
}

fn verify_audit(home: &Home, key: Option<&str>) -> anyhow::Result<ExitCode> {
    let path = load_policy(home)?.audit.path;
    let key = match key {
        Some(k) => Some(
            airlock::audit::EpochKey::from_verification_key(k)
                .context("--key must be the 64 hex digits printed when the audit seal was created")?,
        ),
        None => None,
    };
    let checked =
        airlock::audit::verify(&path, key.as_ref()).with_context(|| format!("cannot read {}", path.display()))?;
    let v = match checked {
        Ok(v) => v,
        Err(e) => {
            println!("{}: {e}", path.display());
            return Ok(ExitCode::FAILURE);
        }
    };
    let keyed = v.records - v.legacy;
    println!(
        "{}: {} records, chain intact{}",
        path.display(),
        v.records,
        if v.head_checked { " and reaching its head" } else { "" }
    );
    if key.is_some() {
        println!("  every record's MAC checked with the verification key");
    } else if keyed > 0 {
        println!(
            "  {} of {keyed} records' MACs checked (epoch {}, with the current key); pass --key with the verification \
             key to check them all",
            v.authenticated, v.last_epoch
        );
    }
    if v.legacy > 0 {
        println!("  {} records were written before the chain was keyed (plain SHA-256)", v.legacy);
    }
    if v.repaired > 0 {
        println!("  {} partial lines left by a crash were repaired at start", v.repaired);
    }
    if !v.unfinished.is_empty() {
        println!(
            "  {} requests began but have no record (airlock stopped while they ran): {}",
            v.unfinished.len(),
            v.unfinished.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn audit(home: &Home, tenant: Option<&str>, follow: bool) -> anyhow::Result<ExitCode> {
    let path = load_policy(home)?.audit.path;
    let read = || std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()));
    let mut printed = 0usize;
    loop {
        let text = match read() {
            Ok(t) => t,
            Err(_) if follow => String::new(),
            Err(e) => return Err(e),
        };
        let lines: Vec<&str> = text.lines().collect();
        for line in lines.iter().skip(printed) {
            let r = match serde_json::from_str::<airlock::audit::Line>(line) {
                Ok(airlock::audit::Line::Record(r)) => r,
                Ok(airlock::audit::Line::Event(e)) => {
                    if tenant.is_none() || e.tenant.as_deref() == tenant {
                        print_event(&e);
                    }
                    continue;
                }
                Err(_) => {
                    println!("(unreadable line) {line}");
                    continue;
                }
            };
            if tenant.is_some_and(|t| r.tenant.as_deref() != Some(t)) {
                continue;
            }
            println!(
                "{} {:<6} {:<26} {} {:<10} {:<12} {} {}:{}{} redactions={} {}ms{}{}",
                r.ts,
                format!("{:?}", r.decision).to_lowercase(),
                r.code.as_deref().unwrap_or("-"),
                r.status,
                r.tenant.as_deref().unwrap_or("-"),
                r.route.as_deref().unwrap_or("-"),
                r.method,
                r.host,
                r.port,
                r.path,
                r.redactions,
                r.duration_ms,
                if r.complete { "" } else { " (incomplete)" },
                // A coalesced record of failed authentications.
                r.attempts.map(|n| format!(" attempts={n}")).unwrap_or_default(),
            );
        }
        printed = printed.max(lines.len());
        if !follow {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

fn print_event(e: &airlock::audit::Event) {
    let what = format!("{:?}", e.event).to_lowercase();
    match (&e.request_id, &e.host) {
        (Some(id), Some(host)) => println!(
            "{} {what:<6} {} {} {}:{}{} (still running; id {id})",
            e.ts,
            e.tenant.as_deref().unwrap_or("-"),
            e.method.as_deref().unwrap_or("-"),
            host,
            e.port.unwrap_or(0),
            e.path.as_deref().unwrap_or("")
        ),
        _ => println!("{} {what:<6} {}", e.ts, e.detail.as_deref().unwrap_or("")),
    }
}

fn report_init(home: &Home, ca: bool, config: bool) {
    let ca_path = CertificateAuthority::cert_path(&home.dir);
    if ca {
        eprintln!("created the airlock CA: {}", ca_path.display());
    }
    if config {
        eprintln!("wrote a starter config: {}", home.config.display());
    }
    if !ca && !config {
        eprintln!("{} is already initialised", home.dir.display());
    }
}

fn load_policy(home: &Home) -> anyhow::Result<Policy> {
    if !home.config.exists() {
        bail!(
            "no config at {}; run `airlock init` (or `airlock serve`, which creates one in AIRLOCK_HOME)",
            home.config.display()
        );
    }
    Ok(Policy::load(&home.config, &home.dir)?)
}

fn serve(home: Home) -> anyhow::Result<ExitCode> {
    let created = home.init().with_context(|| format!("cannot initialise {}", home.dir.display()))?;
    report_init_quiet(&home, created.ca, created.config);
    let policy = load_policy(&home)?;
    seal_audit(&policy)?;
    let first_tenant = policy.tenants().next().map(|(_, t)| (t.name.clone(), t.token().to_owned()));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let proxy = airlock::Proxy::bind(&home.dir, &home.config, policy).await?;
        let reloader = proxy.reloader();
        tokio::spawn(reloader.clone().watch(std::time::Duration::from_secs(1)));
        tokio::spawn(async move {
            let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else { return };
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the config");
                reloader.reload_in_background().await;
            }
        });
        let addr = proxy.local_addr();
        let ca = CertificateAuthority::cert_path(&home.dir);
        eprintln!("airlock {} listening on {addr}", env!("CARGO_PKG_VERSION"));
        eprintln!("  config: {}", home.config.display());
        eprintln!("  CA:     {}", ca.display());
        for warning in airlock::home::exposure(&home.dir, &home.config) {
            tracing::warn!("{warning}");
        }
        if created.config
            && let Some((name, token)) = first_tenant
        {
            eprintln!("\nPoint an agent at it (tenant '{name}'):");
            eprintln!("  export HTTPS_PROXY={}", airlock::agent::proxy_url(&name, &token, &addr.to_string()));
            eprintln!("  airlock ca export --bundle > airlock-bundle.pem   # system roots + airlock CA");
            eprintln!("  export SSL_CERT_FILE=$PWD/airlock-bundle.pem NODE_EXTRA_CA_CERTS={}", ca.display());
            eprintln!("Give the starter route its key:  airlock secret set example");
        }
        proxy.run(shutdown_signal()).await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn report_init_quiet(home: &Home, ca: bool, config: bool) {
    if ca || config {
        report_init(home, ca, config);
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = term => {},
    }
    tracing::info!("shutting down: no new connections; finishing in-flight requests");
}

fn secret(home: &Home, command: SecretCommand) -> anyhow::Result<ExitCode> {
    let store = Store::new(&home.dir);
    match command {
        SecretCommand::Set { name } => {
            let mut raw = Vec::new();
            std::io::stdin().read_to_end(&mut raw).context("cannot read the value from stdin")?;
            let raw = zeroize::Zeroizing::new(raw);
            let mut value = raw.to_vec();
            trim_newline(&mut value);
            let value = SecretValue::new(value).map_err(|e| anyhow::anyhow!("not stored: {e}"))?;
            store.set(&name, &value).with_context(|| format!("cannot write {}", store.dir().display()))?;
            eprintln!("stored secret '{name}' ({} bytes)", value.expose().len());
            if value.expose().trim_ascii().len() != value.expose().len() {
                eprintln!(
                    "warning: the value starts or ends with spaces or tabs; HTTP drops them from header values, \
                     so the API will get it without them (check for a stray space in what you pasted)"
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        SecretCommand::List => {
            let now = std::time::SystemTime::now();
            for e in store.list()? {
                let age = now.duration_since(e.modified).unwrap_or_default().as_secs();
                println!("{}\t{}", e.name, human_age(age));
            }
            Ok(ExitCode::SUCCESS)
        }
        SecretCommand::Rm { name } => {
            if store.remove(&name)? {
                eprintln!("removed secret '{name}'");
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("no secret '{name}' in the store");
                Ok(ExitCode::FAILURE)
            }
        }
    }
}

fn human_age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s ago"),
        s if s < 7200 => format!("{}m ago", s / 60),
        s if s < 172_800 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86_400),
    }
}

/// Whether an airlock answers on `addr` (its health check carries its
/// version header).
async fn airlock_listening(addr: std::net::SocketAddr) -> anyhow::Result<bool> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if addr.port() == 0 {
        return Ok(false);
    }
    let connect = tokio::time::timeout(std::time::Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await;
    let Ok(Ok(mut stream)) = connect else { return Ok(false) };
    let probe =
        format!("GET {} HTTP/1.1\r\nHost: airlock\r\nConnection: close\r\n\r\n", airlock::listener::HEALTH_PATH);
    stream.write_all(probe.as_bytes()).await?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(2), stream.read(&mut buf)).await.unwrap_or(Ok(0))?;
    let head = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
    if head.starts_with("http/1.1 200") && head.contains(&format!("\r\n{}:", airlock::listener::VERSION_HEADER)) {
        Ok(true)
    } else {
        bail!("something other than airlock is listening on {addr}; stop it or change [proxy] listen")
    }
}

/// The proxy at `[proxy] listen` when an airlock answers there, else one
/// started in-process (stopped by the caller).
async fn find_or_start_proxy(
    home: &Home,
    listen: std::net::SocketAddr,
) -> anyhow::Result<(std::net::SocketAddr, Option<airlock::RunningProxy>)> {
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

fn mcp(home: Home, tenant: Option<&str>) -> anyhow::Result<ExitCode> {
    let policy = load_policy(&home)?;
    let tenant = airlock::agent::pick_tenant(&policy, tenant)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let (addr, running) = find_or_start_proxy(&home, policy.proxy.listen).await?;
        let server = airlock::mcp::Server::new(&policy, &tenant, addr)?;
        tracing::info!(tenant = %tenant, proxy = %addr, "MCP server ready on stdio");
        let served = server.serve(tokio::io::stdin(), tokio::io::stdout()).await;
        if let Some(r) = running {
            r.shutdown().await;
        }
        served?;
        anyhow::Ok(ExitCode::SUCCESS)
    })
}

fn run_agent(home: Home, tenant: Option<&str>, command: &[String]) -> anyhow::Result<ExitCode> {
    use std::os::unix::process::ExitStatusExt;
    let policy = load_policy(&home)?;
    let tenant = airlock::agent::pick_tenant(&policy, tenant)?;
    let listen = policy.proxy.listen;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let (addr, running) = find_or_start_proxy(&home, listen).await?;
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
        let vars = env.vars;
        let (program, args) = command.split_first().context("no command given")?;
        let mut agent = tokio::process::Command::new(program);
        // The agent gets none of the variables `env` secrets read (every
        // tenant's), then the agent variables: a route's `env` may reuse
        // such a name, and then holds its placeholder.
        for var in policy.secret_env_vars() {
            agent.env_remove(var);
        }
        let mut child = agent.args(args).envs(vars).spawn().with_context(|| format!("cannot run {program}"))?;
        // Ctrl-C reaches the child directly (same process group); SIGTERM
        // and SIGHUP sent to airlock are passed on. airlock itself waits for
        // the child either way.
        let pid = child.id().map(|p| nix::unistd::Pid::from_raw(p as i32));
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        let status = loop {
            tokio::select! {
                s = child.wait() => break s?,
                _ = term.recv() => forward_signal(pid, nix::sys::signal::Signal::SIGTERM),
                _ = hup.recv() => forward_signal(pid, nix::sys::signal::Signal::SIGHUP),
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

fn forward_signal(pid: Option<nix::unistd::Pid>, signal: nix::sys::signal::Signal) {
    if let Some(pid) = pid {
        let _ = nix::sys::signal::kill(pid, signal);
    }
}
