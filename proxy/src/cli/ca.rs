//! `airlock ca export [--bundle]`: prints the local CA certificate (PEM),
//! after the system roots with `--bundle`, for tools that take one CA file.

use std::io::Write;
use std::process::ExitCode;

use clap::Subcommand;

use airlock::home::Home;
use airlock_ca::CertificateAuthority;

/// What `airlock ca` does.
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Print the CA certificate (PEM).
    Export {
        /// Print the system roots followed by the airlock CA: one bundle for
        /// SSL_CERT_FILE, REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE, GIT_SSL_CAINFO.
        #[arg(long)]
        bundle: bool,
    },
}

/// Runs `airlock ca COMMAND`.
pub fn run(home: &Home, command: CaCommand) -> anyhow::Result<ExitCode> {
    match command {
        CaCommand::Export { bundle } => export(home, bundle),
    }
}

/// Prints the CA (created first if AIRLOCK_HOME has none).
fn export(home: &Home, bundle: bool) -> anyhow::Result<ExitCode> {
    let ca = CertificateAuthority::load_or_create(&home.dir)?;
    let mut out = String::new();
    if bundle {
        out.push_str(&airlock::agent::system_roots_pem());
    }
    out.push_str(ca.cert_pem());
    std::io::stdout().write_all(out.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
