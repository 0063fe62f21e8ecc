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
        /// Check the hash chain; report the first broken line and exit 1.
        #[arg(long)]
        verify: bool,
    },
    /// The embedded secret store.
    Secret {
        #[command(subcommand)]
        command: SecretCommand,
    },
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
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let home = Home::resolve(cli.config).context("cannot find AIRLOCK_HOME")?;
    match cli.command {
        Command::Init => {
            let created = home.init().with_context(|| format!("cannot initialise {}", home.dir.display()))?;
            report_init(&home, created.ca, created.config);
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve => serve(home),
        Command::Ca { command: CaCommand::Export { bundle } } => {
            let ca = CertificateAuthority::load_or_create(&home.dir)?;
            let mut out = String::new();
            if bundle {
                out.push_str(&system_roots_pem());
            }
            out.push_str(ca.cert_pem());
            std::io::stdout().write_all(out.as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Secret { command } => secret(&home, command),
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
            let report = airlock::check::check(&home.dir, &policy);
            match format {
                CheckFormat::Table => print!("{}", report.table()),
                CheckFormat::Json => println!(
                    "{}",
                    serde_json::json!({"ok": report.ok(), "routes": report.routes, "general": report.general})
                ),
            }
            Ok(if report.ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Audit { tenant, follow, verify } => audit(&home, tenant.as_deref(), follow, verify),
    }
}

fn audit(home: &Home, tenant: Option<&str>, follow: bool, verify: bool) -> anyhow::Result<ExitCode> {
    let path = load_policy(home)?.audit.path;
    let read = || std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()));
    if verify {
        return match airlock::audit::verify(&read()?) {
            Ok(n) => {
                println!("{}: {n} records, chain intact", path.display());
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                println!("{}: {e}", path.display());
                Ok(ExitCode::FAILURE)
            }
        };
    }
    let mut printed = 0usize;
    loop {
        let text = match read() {
            Ok(t) => t,
            Err(_) if follow => String::new(),
            Err(e) => return Err(e),
        };
        let lines: Vec<&str> = text.lines().collect();
        for line in lines.iter().skip(printed) {
            let Ok(r) = serde_json::from_str::<airlock::audit::Record>(line) else {
                println!("(unreadable line) {line}");
                continue;
            };
            if tenant.is_some_and(|t| r.tenant.as_deref() != Some(t)) {
                continue;
            }
            println!(
                "{} {:<6} {:<26} {} {:<10} {:<12} {} {}:{}{} redactions={} {}ms{}",
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
            );
        }
        printed = printed.max(lines.len());
        if !follow {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
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
                reloader.reload_logged();
            }
        });
        let addr = proxy.local_addr();
        let ca = CertificateAuthority::cert_path(&home.dir);
        eprintln!("airlock {} listening on {addr}", env!("CARGO_PKG_VERSION"));
        eprintln!("  config: {}", home.config.display());
        eprintln!("  CA:     {}", ca.display());
        if created.config
            && let Some((name, token)) = first_tenant
        {
            eprintln!("\nPoint an agent at it (tenant '{name}'):");
            eprintln!("  export HTTPS_PROXY=http://{name}:{token}@{addr}");
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

/// The system's trusted roots as PEM.
fn system_roots_pem() -> String {
    use base64::Engine;
    let mut out = String::new();
    for cert in rustls_native_certs::load_native_certs().certs {
        let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).unwrap_or_default());
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}
