//! `airlock route add|list|rm|services`: routes in `airlock.toml`, edited
//! in place ([`airlock::config_edit`]); `add --service NAME` fills host,
//! headers, scheme and safe methods from the built-in catalogue
//! ([`airlock::catalogue`]), `--host` covers anything else. A running
//! `airlock serve` reloads the file when it changes.

use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Subcommand};
use toml_edit::{Array, Item, Table, Value};

use super::tenant::check_name;
use super::{load_policy, pick_tenant};
use airlock::config_edit::ConfigFile;
use airlock::home::Home;

/// What `airlock route` does.
#[derive(Debug, Subcommand)]
pub enum RouteCommand {
    /// Add a route: from the service catalogue (--service), or for any host
    /// (--host). Declares the secrets it needs in the embedded store.
    #[command(after_help = "Examples:\n  airlock route add --tenant acme --service openai\n  airlock route add \
                            --tenant acme --service github --methods GET,HEAD,OPTIONS,POST\n  airlock route add \
                            --tenant acme --host api.acme-crm.com --header x-api-key --env ACME_CRM_KEY")]
    Add(Box<AddArgs>),
    /// List routes (every tenant's, or one's).
    List {
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Remove a route; its secrets stay.
    Rm {
        /// The route's name.
        name: String,
        /// Its tenant (may be omitted in a connected workspace, or with one
        /// tenant).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// List the services `route add --service` knows.
    Services,
}

/// `airlock route add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// The tenant (may be omitted in a connected workspace, or with one
    /// tenant).
    #[arg(long)]
    tenant: Option<String>,
    /// A service of the catalogue (`airlock route services`).
    #[arg(long, required_unless_present = "host")]
    service: Option<String>,
    /// The host (`name`, `name:port`, `*.example.com`); with --service, in
    /// place of its own (a region, a self-hosted instance).
    #[arg(long)]
    host: Option<String>,
    /// The route's name (default: the service, or the host's first name).
    #[arg(long)]
    name: Option<String>,
    /// The secret's name, or for a service with several secrets their
    /// prefix (default: TENANT_NAME).
    #[arg(long)]
    secret: Option<String>,
    /// Methods allowed, comma-separated (default: the service's, else GET,
    /// HEAD, OPTIONS).
    #[arg(long, value_delimiter = ',')]
    methods: Option<Vec<String>>,
    /// Paths allowed, comma-separated globs (default: every path).
    #[arg(long, value_delimiter = ',')]
    paths: Option<Vec<String>>,
    /// Headers the placeholder may be swapped in, comma-separated
    /// (default: the service's, else authorization, x-api-key).
    #[arg(long, value_delimiter = ',')]
    header: Option<Vec<String>>,
    /// How a header value that is the placeholder alone is written
    /// (`Bearer {secret}`).
    #[arg(long)]
    format: Option<String>,
    /// The variable `airlock run`/`env` export the placeholder as.
    #[arg(long)]
    env: Option<String>,
    /// The placeholder (default: AIRLOCK_TENANT_NAME).
    #[arg(long)]
    placeholder: Option<String>,
    /// For a service that signs (aws-s3): the region it signs for.
    #[arg(long)]
    region: Option<String>,
    /// For a service whose OAuth2 client needs one (google-ads): the client
    /// id (not a secret).
    #[arg(long)]
    client_id: Option<String>,
}

/// Runs `airlock route COMMAND`.
pub fn run(home: &Home, command: RouteCommand) -> anyhow::Result<ExitCode> {
    match command {
        RouteCommand::Add(args) => add(home, *args),
        RouteCommand::List { tenant } => list(home, tenant.as_deref()),
        RouteCommand::Rm { name, tenant } => rm(home, &name, tenant.as_deref()),
        RouteCommand::Services => services(),
    }
}

/// Lower-case letters, digits and `_`: a name made fit for a secret name.
fn snake(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect()
}

/// The default route name for a host: its first label that is not a
/// generic one (`api`, `www`).
fn name_for_host(host: &str) -> String {
    let name = host.rsplit_once(':').map_or(host, |(h, p)| if p.parse::<u16>().is_ok() { h } else { host });
    let label = name.split('.').find(|l| !matches!(*l, "*" | "api" | "www" | "")).unwrap_or("api");
    label.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect()
}

fn strings(items: &[String]) -> Item {
    Item::Value(Value::Array(items.iter().map(String::as_str).collect::<Array>()))
}

fn add(home: &Home, args: AddArgs) -> anyhow::Result<ExitCode> {
    let policy = load_policy(home)?;
    let tenant = pick_tenant(home, &policy, args.tenant.as_deref())?;
    let service = args.service.as_deref().map(airlock::catalogue::service).transpose()?;
    let host = match (&args.host, &service) {
        (Some(h), _) => h.clone(),
        (None, Some(s)) => s.host.clone(),
        (None, None) => bail!("name a --service or a --host"),
    };
    let name = match (&args.name, &service) {
        (Some(n), _) => n.clone(),
        (None, Some(s)) => s.name.to_owned(),
        (None, None) => name_for_host(&host),
    };
    check_name("route", &name)?;
    let prefix = args.secret.clone().unwrap_or_else(|| snake(&format!("{tenant}_{name}")));
    let placeholder =
        args.placeholder.clone().unwrap_or_else(|| snake(&format!("airlock_{tenant}_{name}")).to_uppercase());

    let mut route = Table::new();
    route.insert("name", toml_edit::value(&name));
    route.insert("host", toml_edit::value(&host));
    let mints = service.as_ref().is_some_and(|s| s.has_credential());
    if !mints {
        route.insert("secret", toml_edit::value(&prefix));
    }
    route.insert("placeholder", toml_edit::value(&placeholder));
    let mut secrets = vec![prefix.clone()];
    if let Some(s) = &service {
        route.decor_mut().set_prefix(format!("\n# {}: {}\n", s.title, s.docs));
        for (k, v) in s.route_keys(&prefix).iter().filter(|(k, _)| *k != "host") {
            route.insert(k, v.clone());
        }
        secrets = s.secrets(&prefix);
    }
    if let Some(env) = &args.env {
        route.insert("env", toml_edit::value(env));
    }
    match (&args.header, route.contains_key("headers")) {
        (Some(h), _) => {
            drop(route.insert("headers", strings(&h.iter().map(|h| h.to_ascii_lowercase()).collect::<Vec<_>>())))
        }
        (None, false) => drop(route.insert("headers", strings(&["authorization".into(), "x-api-key".into()]))),
        (None, true) => {}
    }
    if let Some(f) = &args.format {
        route.insert("format", toml_edit::value(f));
    }
    match (&args.methods, route.contains_key("methods")) {
        (Some(m), _) => {
            drop(route.insert("methods", strings(&m.iter().map(|m| m.to_ascii_uppercase()).collect::<Vec<_>>())))
        }
        (None, false) => drop(route.insert("methods", strings(&["GET".into(), "HEAD".into(), "OPTIONS".into()]))),
        (None, true) => {}
    }
    if let Some(p) = &args.paths {
        route.insert("paths", strings(p));
    }
    if let Some(credential) = route.get_mut("credential").and_then(Item::as_inline_table_mut) {
        if let Some(region) = &args.region {
            credential.insert("region", region.as_str().into());
        }
        if credential.get("client_id").and_then(Value::as_str) == Some("") {
            let Some(id) = &args.client_id else {
                bail!(
                    "service {} needs its OAuth2 client's id: pass --client-id",
                    args.service.as_deref().unwrap_or_default()
                );
            };
            credential.insert("client_id", id.as_str().into());
        }
    } else if args.region.is_some() || args.client_id.is_some() {
        bail!("--region and --client-id apply only to a service whose credential airlock mints or signs");
    }

    let mut file = ConfigFile::open(&home.config, &home.dir)?;
    let mut declared = Vec::new();
    for secret in &secrets {
        if file.declare_secret(secret)? {
            declared.push(secret.clone());
        }
    }
    file.add_route(&tenant, route)?;
    file.save()?;
    println!("added route '{name}' to tenant '{tenant}': {host}, placeholder {placeholder}");
    if let Some(note) = service.as_ref().and_then(|s| s.note.as_deref()) {
        println!("note: {note}");
    }
    for secret in &secrets {
        if declared.contains(secret) {
            println!("declared secret '{secret}' (store); give it its value:  airlock secret set {secret}");
        } else {
            println!("uses secret '{secret}', declared already");
        }
    }
    println!(
        "A running `airlock serve` picks the change up by itself; `airlock status` shows what still needs action."
    );
    Ok(ExitCode::SUCCESS)
}

fn list(home: &Home, tenant: Option<&str>) -> anyhow::Result<ExitCode> {
    let policy = load_policy(home)?;
    if let Some(t) = tenant
        && policy.tenant_by_name(t).is_none()
    {
        bail!("the config has no tenant '{t}'");
    }
    println!("{:<14} {:<16} {:<36} {:<24} {:<22} SECRET", "TENANT", "ROUTE", "HOST", "METHODS", "PLACEHOLDER");
    for (_, t) in policy.tenants().filter(|(_, t)| tenant.is_none_or(|n| n == t.name)) {
        for r in &t.routes {
            let host = if r.port == 443 { r.host.to_string() } else { format!("{}:{}", r.host, r.port) };
            let secret = match &r.credential {
                Some(airlock_policy::Credential::OAuth2(_)) => "(oauth2, minted)".to_owned(),
                Some(airlock_policy::Credential::GitHubApp(_)) => "(github_app, minted)".to_owned(),
                Some(airlock_policy::Credential::AwsSigV4(_)) => "(aws_sigv4, signed)".to_owned(),
                None => r.secret.clone(),
            };
            println!(
                "{:<14} {:<16} {:<36} {:<24} {:<22} {secret}",
                t.name,
                r.name,
                host,
                r.methods.join(","),
                r.placeholder
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn rm(home: &Home, name: &str, tenant: Option<&str>) -> anyhow::Result<ExitCode> {
    let policy = load_policy(home)?;
    let tenant = pick_tenant(home, &policy, tenant)?;
    let mut file = ConfigFile::open(&home.config, &home.dir)?;
    file.remove_route(&tenant, name)?;
    file.save()?;
    println!("removed route '{name}' from tenant '{tenant}'; its secrets stay declared and stored");
    Ok(ExitCode::SUCCESS)
}

fn services() -> anyhow::Result<ExitCode> {
    println!("{:<14} {:<16} {:<28} DOCS", "SERVICE", "TITLE", "HOST");
    for s in airlock::catalogue::services()? {
        println!("{:<14} {:<16} {:<28} {}", s.name, s.title, s.host, s.docs);
    }
    Ok(ExitCode::SUCCESS)
}
