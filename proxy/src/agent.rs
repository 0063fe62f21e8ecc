//! What an agent needs to go through airlock: the proxy URL with its
//! tenant's credentials, a CA bundle its HTTP stack trusts, each route's
//! placeholder in its env var, and a `NO_PROXY` that keeps loopback (the
//! agent's own dev servers) direct but never lets a route's host bypass
//! airlock. Used by `airlock run` and `airlock env`.

use std::fs;
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use airlock_ca::CertificateAuthority;
use airlock_policy::host::HostPattern;
use airlock_policy::{Policy, Tenant};

use crate::encoding::percent_encode;

/// The bundle file written in AIRLOCK_HOME: system roots, then the airlock
/// CA.
pub const BUNDLE_FILE: &str = "ca-bundle.pem";

// Which variables point at the CA bundle, carry the proxy URL, or list
// hosts reached without it: the config's check of a route's `env` needs
// them too, so they are defined once, in the policy crate.
pub use airlock_policy::{BUNDLE_VARS, NO_PROXY_VARS, PROXY_VARS};
/// Loopback names and addresses an agent reaches directly (its own dev
/// servers), unless a route of its tenant names one of them.
pub const LOOPBACK: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// `http://tenant:token@authority`, with the tenant name and token
/// percent-encoded (RFC 3986 §3.2.1). Clients decode them before sending
/// `Proxy-Authorization: Basic`, so any printable token works. Only the
/// unreserved characters stay as they are: `:`, `@`, `/`, `#`, `%` and the
/// rest are encoded, so no token can end the userinfo early.
pub fn proxy_url(tenant: &str, token: &str, authority: &str) -> String {
    format!("http://{}:{}@{authority}", percent_encode(tenant), percent_encode(token))
}

/// Why the agent environment cannot be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentEnvError {
    /// No tenant given and not exactly one configured.
    #[error("name a tenant with --tenant ({0}), or bind this folder to one: airlock connect --tenant NAME")]
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

/// The environment an agent gets.
#[derive(Debug)]
pub struct AgentEnv {
    /// The variables, in a stable order.
    pub vars: Vec<(String, String)>,
    /// Entries of the inherited `NO_PROXY` left out because they would send
    /// a route's host around airlock.
    pub dropped_no_proxy: Vec<String>,
    /// Inherited variables the agent must not get (`airlock run` removes
    /// them): an AWS session token beside the placeholder keys would be
    /// signed into every request, and is not the agent's to hold.
    pub removed: Vec<String>,
}

/// The secret access key an agent's AWS SDK signs with: any value would
/// do (airlock signs again with the real one); a fixed one says so.
pub const AWS_DUMMY_SECRET_KEY: &str = "airlock-signs-requests-with-the-real-key";

/// The variables for an agent of `tenant` using the proxy at
/// `proxy_authority` (`host:port`). `inherited_no_proxy` is the caller's
/// own `NO_PROXY`/`no_proxy` (comma-separated lists), kept but for entries
/// that cover one of the tenant's route hosts.
pub fn agent_env(
    home: &Path,
    policy: &Policy,
    tenant: &str,
    proxy_authority: &str,
    inherited_no_proxy: &[String],
) -> Result<AgentEnv, AgentEnvError> {
    let (_, t) = policy.tenant_by_name(tenant).ok_or_else(|| AgentEnvError::UnknownTenant(tenant.to_owned()))?;
    let bundle = write_bundle(home)?;
    let url = proxy_url(&t.name, t.token(), proxy_authority);
    let mut vars: Vec<(String, String)> = PROXY_VARS.iter().map(|k| ((*k).to_owned(), url.clone())).collect();
    let (no_proxy, dropped_no_proxy) = no_proxy(t, inherited_no_proxy);
    for k in NO_PROXY_VARS {
        vars.push((k.to_owned(), no_proxy.clone()));
    }
    for k in BUNDLE_VARS {
        vars.push((k.to_owned(), bundle.display().to_string()));
    }
    vars.push(("NODE_EXTRA_CA_CERTS".into(), CertificateAuthority::cert_path(home).display().to_string()));
    // Node's built-in fetch (undici) reads HTTPS_PROXY only when told to
    // (Node 22.21 / 24.5 and later); older Nodes ignore it.
    vars.push(("NODE_USE_ENV_PROXY".into(), "1".into()));
    for r in &t.routes {
        if let Some(env) = &r.env {
            vars.push((env.clone(), r.placeholder.clone()));
        }
    }
    // The first route that signs with SigV4 gives the AWS SDK its keys
    // and region (DESIGN.md: the access key id is the placeholder, the
    // secret key a fixed dummy).
    let mut removed = Vec::new();
    let aws = t.routes.iter().find_map(|r| match &r.credential {
        Some(airlock_policy::Credential::AwsSigV4(aws)) => Some((r, aws)),
        _ => None,
    });
    if let Some((r, aws)) = aws {
        vars.push(("AWS_ACCESS_KEY_ID".into(), r.placeholder.clone()));
        vars.push(("AWS_SECRET_ACCESS_KEY".into(), AWS_DUMMY_SECRET_KEY.into()));
        vars.push(("AWS_REGION".into(), aws.region.clone()));
        vars.push(("AWS_DEFAULT_REGION".into(), aws.region.clone()));
        removed.extend(["AWS_SESSION_TOKEN".to_owned(), "AWS_SECURITY_TOKEN".to_owned()]);
    }
    Ok(AgentEnv { vars, dropped_no_proxy, removed })
}

/// The `NO_PROXY` list for an agent of `tenant`: the loopback names, then
/// the inherited entries, each left out when it would cover a route's host
/// (those must go through airlock, or the agent would send placeholders
/// straight to the API). Returns the list and the inherited entries left
/// out.
pub fn no_proxy(tenant: &Tenant, inherited: &[String]) -> (String, Vec<String>) {
    let covers_route = |entry: &str| tenant.routes.iter().any(|r| bypasses(entry, &r.host, r.port));
    let mut kept: Vec<String> = LOOPBACK.iter().filter(|e| !covers_route(e)).map(|e| (*e).to_owned()).collect();
    let mut dropped = Vec::new();
    // Some clients split on whitespace too (node's proxy-from-env). An
    // entry holding any other character is left out whole: clients differ
    // on what else separates or is trimmed (JavaScript's `\s` takes U+FEFF,
    // Python's `strip` U+001C–U+001F), so what it means is not knowable.
    let entries = inherited.iter().flat_map(|list| list.split(|c: char| c == ',' || c.is_ascii_whitespace()));
    for entry in entries.filter(|e| !e.is_empty()) {
        if !readable(entry) || covers_route(entry) {
            dropped.push(entry.to_owned());
        } else if !kept.iter().any(|k| k.eq_ignore_ascii_case(entry)) {
            kept.push(entry.to_owned());
        }
    }
    dropped.dedup();
    (kept.join(","), dropped)
}

/// Whether a `NO_PROXY` entry would let a client reach some host `route`
/// (on `port`) matches without the proxy, under any client's reading of
/// the list — and clients read it loosely: python requests and node's
/// proxy-from-env match a name as a bare suffix (`ample.com` covers
/// `example.com`), older requests a bare suffix of `host:port` (`3`),
/// proxy-from-env strips a leading `*` from any entry and takes port `0`
/// as any port, Go reads `host:port`, httpx reads `scheme://host` and
/// `host/path` as patterns of the host. So an entry counts when it is `*`
/// or a bare scheme; when, with a scheme, path, leading `*` and `.` and
/// any port removed, it is a suffix of the host (or of a name a wildcard
/// route matches) or of `host:port`; or when it is an IP address or CIDR
/// block holding the host's address. (Route hosts are normalised: an IPv6
/// literal has no brackets.)
fn bypasses(entry: &str, route: &HostPattern, port: u16) -> bool {
    let route_ip = match route {
        HostPattern::Exact(h) => h.parse::<IpAddr>().ok(),
        HostPattern::Wildcard(_) => None,
    };
    let mut entry = entry.trim().to_ascii_lowercase();
    // httpx reads `scheme://host` entries as mount patterns: `https://`
    // and `all://` alone cover every host.
    if let Some((_, rest)) = entry.split_once("://") {
        entry = rest.split('/').next().unwrap_or("").to_owned();
        if entry.is_empty() {
            return true;
        }
    }
    if entry == "*" {
        return true;
    }
    // Older requests also match an entry against `host:port` as a bare
    // suffix (`3`, `:443`).
    let bare = entry.trim_start_matches(['*', '.']);
    let with_port = match route {
        HostPattern::Exact(h) if h.contains(':') => format!("[{h}]:{port}"),
        HostPattern::Exact(h) => format!("{h}:{port}"),
        HostPattern::Wildcard(s) => format!(".{s}:{port}"),
    };
    if !bare.is_empty() && (with_port.ends_with(bare) || bare.ends_with(&with_port)) {
        return true;
    }
    if let Some((net, bits)) = entry.split_once('/') {
        if let (Ok(net), Ok(bits)) =
            (net.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>(), bits.parse::<u8>())
        {
            return route_ip.is_some_and(|ip| in_block(ip, net, bits));
        }
        // Not a block: httpx reads the part before the `/` as a host
        // pattern and ignores the rest.
        entry = net.to_owned();
    }
    let name = match entry.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None if entry.parse::<IpAddr>().is_ok() => &entry,
        None => match entry.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => &entry,
        },
    };
    let name = name.trim_start_matches(['*', '.']).trim_end_matches('.');
    if name.is_empty() {
        return false;
    }
    match route {
        HostPattern::Exact(host) => match (route_ip, name.parse::<IpAddr>()) {
            (Some(a), Ok(b)) => a == b,
            _ => host.ends_with(name),
        },
        // `*.suffix` matches `<labels>.suffix`: an entry that is a suffix
        // of `.suffix`, or a name under it, covers some of them.
        HostPattern::Wildcard(suffix) => format!(".{suffix}").ends_with(name) || name.ends_with(&format!(".{suffix}")),
    }
}

/// Whether a `NO_PROXY` entry holds only what host names, addresses,
/// blocks, ports and patterns are written with.
fn readable(entry: &str) -> bool {
    entry.bytes().all(|b| b.is_ascii_alphanumeric() || b".-_*:/[]%".contains(&b))
}

/// Whether `ip` is in the block `net/bits` (same address family only).
fn in_block(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
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

#[cfg(test)]
mod tests {

    /// No route's `env` can name a variable airlock sets for the agent:
    /// the config refuses every one (`airlock_policy::reserved_env`).
    #[test]
    fn every_variable_airlock_sets_is_reserved_from_routes() {
        let ours = PROXY_VARS.iter().chain(&NO_PROXY_VARS).chain(&BUNDLE_VARS).chain(&[
            "NODE_EXTRA_CA_CERTS",
            "NODE_USE_ENV_PROXY",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
            "AWS_SESSION_TOKEN",
            "AWS_SECURITY_TOKEN",
        ]);
        for var in ours {
            assert!(airlock_policy::reserved_env(var), "{var}");
        }
        assert!(!airlock_policy::reserved_env("OPENAI_API_KEY"));
    }

    use super::*;

    fn pattern(spec: &str) -> (HostPattern, u16) {
        HostPattern::parse(spec).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn no_proxy_entries_that_reach_a_route_host_are_found() {
        for (entry, route) in [
            ("*", "api.example.com"),
            ("api.example.com", "api.example.com"),
            ("API.Example.com.", "api.example.com"),
            ("example.com", "api.example.com"),
            (".example.com", "api.example.com"),
            ("*.example.com", "api.example.com"),
            ("api.example.com:8443", "api.example.com"),
            ("api.example.com:0", "api.example.com"),
            ("*ample.com", "api.example.com"),
            ("ample.com", "api.example.com"),
            ("pi.example.com", "api.example.com"),
            ("com", "api.example.com"),
            ("*ample.com", "*.example.com"),
            ("[::1]:8080", "[::1]"),
            ("https://", "api.example.com"),
            ("all://", "api.example.com"),
            ("https://api.example.com", "api.example.com"),
            ("all://*example.com", "api.example.com"),
            ("https://api.example.com/", "api.example.com"),
            ("3", "api.example.com:19443"),
            ("9443", "api.example.com:19443"),
            (":19443", "api.example.com:19443"),
            ("443", "api.example.com"),
            ("3", "*.example.com:19443"),
            ("api.example.com/", "api.example.com"),
            ("example.com/x", "api.example.com"),
            ("com/x", "*.example.com"),
            ("example.com", "*.example.com"),
            ("x.example.com", "*.example.com"),
            ("127.0.0.1", "127.0.0.1"),
            ("127.0.0.0/8", "127.0.0.1"),
            ("10.1.0.0/16", "10.1.2.3"),
            ("::1", "[::1]"),
            ("[::1]", "[::1]"),
            ("::/0", "[::1]"),
            ("fd00::/8", "[fd00::5]"),
        ] {
            let (host, port) = pattern(route);
            assert!(bypasses(entry, &host, port), "{entry} should cover {route}");
        }
        for (entry, route) in [
            ("sub.api.example.com", "api.example.com"),
            ("example.org", "api.example.com"),
            ("xexample.com", "*.example.com"),
            ("localhost", "127.0.0.1"),
            ("127.0.0.2", "127.0.0.1"),
            ("10.2.0.0/16", "10.1.2.3"),
            ("127.0.0.0/8", "[::1]"),
            ("127.0.0.0/x", "127.0.0.1"),
            ("", "api.example.com"),
            (".", "api.example.com"),
            ("8443", "api.example.com"),
            ("4", "api.example.com:19443"),
            ("https://example.org", "api.example.com"),
        ] {
            let (host, port) = pattern(route);
            assert!(!bypasses(entry, &host, port), "{entry} should not cover {route}");
        }
    }

    #[test]
    fn no_proxy_entries_no_client_reads_alike_are_left_out() {
        let text = "[secrets.s]\nsource = \"store\"\n[tenants.t]\ntoken = \"0123456789abcdef0123\"\n\
                    [[tenants.t.routes]]\nname = \"r\"\nhost = \"api.example.com\"\nsecret = \"s\"\n\
                    placeholder = \"AIRLOCK_T_KEY\"\n";
        let policy = Policy::from_toml(text, "test", Path::new("/"), Path::new("/")).unwrap_or_else(|e| panic!("{e}"));
        let tenant = policy.tenants().next().map(|(_, t)| t).unwrap_or_else(|| panic!("one tenant"));
        let inherited =
            ["example.org\u{feff}api.example.com,\u{1c}api.example.com, intranet.local\tother.local".to_owned()];
        let (kept, dropped) = no_proxy(tenant, &inherited);
        assert_eq!(kept, "localhost,127.0.0.1,::1,intranet.local,other.local");
        assert_eq!(dropped.len(), 2, "{dropped:?}");
    }

    #[test]
    fn proxy_urls_keep_only_unreserved_characters_unencoded() {
        assert_eq!(proxy_url("acme", "a-b.c_d~e", "127.0.0.1:8080"), "http://acme:a-b.c_d~e@127.0.0.1:8080");
        assert_eq!(
            proxy_url("acme", "p:w@h/x#y%z?", "127.0.0.1:8080"),
            "http://acme:p%3Aw%40h%2Fx%23y%25z%3F@127.0.0.1:8080"
        );
    }
}
