//! What an agent needs to go through airlock: the proxy URL with its
//! tenant's credentials, a CA bundle its HTTP stack trusts, and each route's
//! placeholder in its env var. Used by `airlock run` and `airlock env`.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use airlock_ca::CertificateAuthority;
use airlock_policy::Policy;

/// The bundle file written in AIRLOCK_HOME: system roots, then the airlock
/// CA.
pub const BUNDLE_FILE: &str = "ca-bundle.pem";

/// Variables that point at the CA bundle (OpenSSL, Python requests, curl,
/// git, pip).
pub const BUNDLE_VARS: [&str; 5] =
    ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO", "PIP_CERT"];
/// Variables that carry the proxy URL.
pub const PROXY_VARS: [&str; 4] = ["HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"];

/// Why the agent environment cannot be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentEnvError {
    /// No tenant given and not exactly one configured.
    #[error("name a tenant with --tenant ({0})")]
    TenantNeeded(String),
    /// The tenant does not exist.
    #[error("no tenant '{0}' in the config")]
    UnknownTenant(String),
    /// The CA or bundle could not be written.
    #[error("cannot write the CA bundle {path}: {error}", path = path.display())]
    Bundle {
        /// The file.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// The CA could not be loaded.
    #[error(transparent)]
    Ca(#[from] airlock_ca::CaError),
}

/// The tenant to use: the one named, or the only one configured.
pub fn pick_tenant(policy: &Policy, named: Option<&str>) -> Result<String, AgentEnvError> {
    if let Some(name) = named {
        return policy
            .tenant_by_name(name)
            .map(|(_, t)| t.name.clone())
            .ok_or_else(|| AgentEnvError::UnknownTenant(name.to_owned()));
    }
    let names: Vec<&str> = policy.tenants().map(|(_, t)| t.name.as_str()).collect();
    match names.as_slice() {
        [one] => Ok((*one).to_owned()),
        [] => Err(AgentEnvError::TenantNeeded("the config has no tenant".into())),
        many => Err(AgentEnvError::TenantNeeded(format!("the config has {}: {}", many.len(), many.join(", ")))),
    }
}

/// The system's trusted roots as PEM.
pub fn system_roots_pem() -> String {
    use base64::Engine;
    let mut out = String::new();
    for cert in rustls_native_certs::load_native_certs().certs {
        let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(line));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}

/// Writes `home/ca-bundle.pem` (system roots + airlock CA) and returns its
/// path. Rewritten each time, so it follows system root updates.
pub fn write_bundle(home: &Path) -> Result<PathBuf, AgentEnvError> {
    let ca = CertificateAuthority::load_or_create(home)?;
    let path = home.join(BUNDLE_FILE);
    let err = |error| AgentEnvError::Bundle { path: path.clone(), error };
    let tmp = home.join(format!(".{BUNDLE_FILE}.{}", std::process::id()));
    fs::write(&tmp, system_roots_pem() + ca.cert_pem()).map_err(err)?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).map_err(err)?;
    fs::rename(&tmp, &path).map_err(err)?;
    Ok(path)
}

/// The variables for an agent of `tenant` using the proxy at
/// `proxy_authority` (`host:port`), in a stable order.
pub fn agent_env(
    home: &Path,
    policy: &Policy,
    tenant: &str,
    proxy_authority: &str,
) -> Result<Vec<(String, String)>, AgentEnvError> {
    let (_, t) = policy.tenant_by_name(tenant).ok_or_else(|| AgentEnvError::UnknownTenant(tenant.to_owned()))?;
    let bundle = write_bundle(home)?;
    let url = format!("http://{}:{}@{proxy_authority}", t.name, t.token());
    let mut vars: Vec<(String, String)> = PROXY_VARS.iter().map(|k| ((*k).to_owned(), url.clone())).collect();
    for k in BUNDLE_VARS {
        vars.push((k.to_owned(), bundle.display().to_string()));
    }
    vars.push(("NODE_EXTRA_CA_CERTS".into(), CertificateAuthority::cert_path(home).display().to_string()));
    for r in &t.routes {
        if let Some(env) = &r.env {
            vars.push((env.clone(), r.placeholder.clone()));
        }
    }
    Ok(vars)
}

/// Output formats of `airlock env`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `export K='v'` for `eval`.
    Sh,
    /// `K=v` for `docker run --env-file`.
    Dotenv,
    /// `K=v` for `$GITHUB_ENV`.
    Github,
}

/// Renders variables in a format.
pub fn render(vars: &[(String, String)], format: Format) -> String {
    let mut out = String::new();
    for (k, v) in vars {
        match format {
            Format::Sh => out.push_str(&format!("export {k}='{}'\n", v.replace('\'', r"'\''"))),
            Format::Dotenv | Format::Github => out.push_str(&format!("{k}={v}\n")),
        }
    }
    out
}
