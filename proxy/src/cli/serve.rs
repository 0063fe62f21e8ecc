//! `airlock init` and `airlock serve`. `init` creates AIRLOCK_HOME (the
//! CA, a starter config with one tenant) and seals the audit log; `serve`
//! does the same when something is missing, then runs the proxy until Ctrl-C
//! or SIGTERM, reloading the config on SIGHUP and when it changes.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use super::{load_policy, runtime};
use airlock::home::{Created, Home};
use airlock_ca::CertificateAuthority;
use airlock_policy::Policy;

/// `airlock init`: creates what is missing, says so when nothing is.
pub fn init(home: &Home) -> anyhow::Result<ExitCode> {
    let created = create_home(home)?;
    let policy = load_policy(home)?;
    if !created.ca && !created.config {
        let tenants: Vec<&str> = policy.tenants().map(|(_, t)| t.name.as_str()).collect();
        eprintln!("{} is already initialised; nothing in it was overwritten.", home.dir.display());
        eprintln!("  config:  {}", home.config.display());
        eprintln!("  CA:      {}", CertificateAuthority::cert_path(&home.dir).display());
        eprintln!("  tenants: {}", if tenants.is_empty() { "none".to_owned() } else { tenants.join(", ") });
        eprintln!(
            "Add a tenant with `airlock tenant add NAME`, its routes with `airlock route add`; `airlock status` \
                   shows what needs action."
        );
    }
    seal_audit(&policy)?;
    Ok(ExitCode::SUCCESS)
}

/// `airlock serve`: runs the proxy until Ctrl-C or SIGTERM; a config it
/// just created gets a how-to for pointing an agent at it.
pub fn serve(home: Home) -> anyhow::Result<ExitCode> {
    let created = create_home(&home)?;
    let policy = load_policy(&home)?;
    seal_audit(&policy)?;
    let first_tenant = policy.tenants().next().map(|(_, t)| (t.name.clone(), t.token().to_owned()));
    runtime()?.block_on(async move {
        let proxy = airlock::Proxy::bind(&home.dir, &home.config, policy).await?;
        let reloader = proxy.reloader();
        tokio::spawn(reloader.clone().watch(Duration::from_secs(1)));
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

/// Creates what AIRLOCK_HOME lacks (never overwriting) and says what it
/// created.
fn create_home(home: &Home) -> anyhow::Result<Created> {
    let created = home.init().with_context(|| format!("cannot initialise {}", home.dir.display()))?;
    // The bundle agents read (system roots + this CA), rewritten at each
    // start: after a CA rotation it must not keep trusting the old CA.
    airlock::agent::write_bundle(&home.dir)?;
    if created.ca {
        eprintln!("created the airlock CA: {}", CertificateAuthority::cert_path(&home.dir).display());
    }
    if created.config {
        eprintln!("wrote a starter config: {}", home.config.display());
    }
    Ok(created)
}

/// Creates the audit log's seal if it has none, and shows its verification
/// key, once. Every command that starts a proxy calls it first.
pub fn seal_audit(policy: &Policy) -> anyhow::Result<()> {
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
