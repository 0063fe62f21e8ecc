//! `airlock check`: is every route ready? Loads the config, reaches every
//! secret (never printing a value), checks a route's client certificate
//! and key are PEM that rustls can use together, resolves every route
//! host, and checks the CA and the upstream trust store.

use std::collections::{BTreeSet, HashMap};
use std::net::ToSocketAddrs;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use airlock_ca::CertificateAuthority;
use airlock_policy::host::HostPattern;
use airlock_policy::secrets::{SecretValue, Vault};
use airlock_policy::{Credential, Policy};

/// One route's readiness.
#[derive(Clone, Debug, Serialize)]
pub struct RouteStatus {
    /// Tenant name.
    pub tenant: String,
    /// Route name.
    pub route: String,
    /// `host[:port]` as configured.
    pub host: String,
    /// Secret name.
    pub secret: String,
    /// Ready, or what needs doing.
    pub ready: bool,
    /// Why not, when not ready.
    pub needs: Vec<String>,
}

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Per-route status.
    pub routes: Vec<RouteStatus>,
    /// Problems not tied to one route (CA, trust store, unused secrets).
    pub general: Vec<String>,
    /// What works but should be fixed (who else can read the config or
    /// the home); not counted against [`Report::ok`].
    pub warnings: Vec<String>,
}

impl Report {
    /// Whether anything needs action.
    pub fn ok(&self) -> bool {
        self.general.is_empty() && self.routes.iter().all(|r| r.ready)
    }

    /// The report as a table for people.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let widths = [
            self.routes.iter().map(|r| r.tenant.len()).max().unwrap_or(0).max(6),
            self.routes.iter().map(|r| r.route.len()).max().unwrap_or(0).max(5),
            self.routes.iter().map(|r| r.host.len()).max().unwrap_or(0).max(4),
            self.routes.iter().map(|r| r.secret.len()).max().unwrap_or(0).max(6),
        ];
        let row = |cols: [&str; 5]| {
            format!(
                "{:w0$}  {:w1$}  {:w2$}  {:w3$}  {}\n",
                cols[0],
                cols[1],
                cols[2],
                cols[3],
                cols[4],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
                w3 = widths[3]
            )
        };
        out.push_str(&row(["TENANT", "ROUTE", "HOST", "SECRET", "STATUS"]));
        for r in &self.routes {
            let status = if r.ready { "Ready".to_owned() } else { format!("Needs action: {}", r.needs.join("; ")) };
            out.push_str(&row([&r.tenant, &r.route, &r.host, &r.secret, &status]));
        }
        for g in &self.general {
            out.push_str(&format!("Needs action: {g}\n"));
        }
        for w in &self.warnings {
            out.push_str(&format!("Warning: {w}\n"));
        }
        out
    }
}

/// Checks a loaded policy against the machine it runs on.
pub fn check(home: &Path, policy: &Policy) -> Report {
    let mut general = Vec::new();
    if let Err(e) = CertificateAuthority::load_or_create(home) {
        general.push(format!("the CA cannot be loaded: {e}"));
    }
    if let Err(e) = crate::upstream::client_tls(&policy.proxy.upstream_ca, &[b"http/1.1"]) {
        general.push(e.to_string());
    }
    let vault = Vault::new(home);
    // Each secret a route uses is fetched once, all before any failure is
    // described: a failed command's stderr summary is scrubbed of every
    // value the vault knows by then. The check is for the operator, so it
    // shows that summary (`operator_message`), which a denial never does.
    let used: BTreeSet<&str> = policy.tenants().flat_map(|(_, t)| t.routes.iter().flat_map(|r| r.secrets())).collect();
    let failures: HashMap<String, String> = vault
        .prefetch(policy.secrets().filter(|s| used.contains(s.name.as_str())))
        .into_iter()
        .map(|e| (e.secret().to_owned(), e.operator_message()))
        .collect();
    // One upstream client for every route that mints (built only when one
    // does).
    let minting = policy
        .tenants()
        .any(|(_, t)| t.routes.iter().any(|r| r.credential.as_ref().is_some_and(Credential::mints)))
        .then(|| crate::upstream::Upstream::new(&policy.proxy, &policy.limits));
    let mut routes = Vec::new();
    for (_, t) in policy.tenants() {
        for r in &t.routes {
            let mut needs = Vec::new();
            for secret in r.secrets() {
                if policy.secret(secret).is_none() {
                    needs.push(format!("secret '{secret}' is not declared"));
                } else if let Some(failure) = failures.get(secret) {
                    needs.push(failure.clone());
                } else if let Some(v) = policy.secret(secret).and_then(|spec| vault.cached(spec))
                    && v.expose().len() < MIN_SECRET
                {
                    needs.push(format!(
                        "secret '{secret}' is {} bytes: every response is scrubbed of it, and one shorter than \
                         {MIN_SECRET} bytes matches ordinary text (and shows where it did); is it the right value?",
                        v.expose().len()
                    ));
                }
            }
            let text_only = r.body == Some(airlock_policy::BodyKind::Json) || r.websocket.text;
            let value = policy.secret(&r.secret).and_then(|spec| vault.cached(spec));
            if text_only && value.is_some_and(|v| std::str::from_utf8(v.expose()).is_err()) {
                needs.push(format!(
                    "secret '{}' is not UTF-8 text, which this route's JSON bodies (body = \"json\") or WebSocket \
                     text messages (websocket = [\"text\"]) cannot carry",
                    r.secret
                ));
            }
            if let Some(problem) = minting.as_ref().and_then(|upstream| match upstream {
                Ok(upstream) => mint_problem(home, policy, &vault, upstream, r, &failures),
                Err(e) => r.credential.as_ref().filter(|c| c.mints()).map(|_| format!("credential: {e}")),
            }) {
                needs.push(problem);
            }
            if let Some(problem) = signing_problem(policy, &vault, r, &failures) {
                needs.push(problem);
            }
            if let Some(problem) = client_cert_problem(policy, &vault, r, &failures) {
                needs.push(problem);
            }
            if let HostPattern::Exact(host) = &r.host {
                let resolvable = policy.proxy.resolve.contains_key(host)
                    || host.parse::<std::net::IpAddr>().is_ok()
                    || (host.as_str(), r.port).to_socket_addrs().is_ok_and(|mut a| a.next().is_some());
                if !resolvable {
                    needs.push(format!(
                        "{host} does not resolve from this machine (add it to [proxy].resolve if it is local)"
                    ));
                }
            }
            routes.push(RouteStatus {
                tenant: t.name.clone(),
                route: r.name.clone(),
                host: r.authority(),
                // A route that signs has no one secret: the keys it signs with.
                secret: match &r.credential {
                    Some(c @ Credential::AwsSigV4(_)) => c.secrets().collect::<Vec<_>>().join(", "),
                    _ => r.secret.clone(),
                },
                ready: needs.is_empty(),
                needs,
            });
        }
    }
    Report { routes, general, warnings: Vec::new() }
}

/// The shortest secret value `check` calls ready: a value is scrubbed from
/// every response in every spelling, and a shorter one is ordinary text.
const MIN_SECRET: usize = 8;

/// What keeps route `r` from minting its token, if it has a credential
/// and every secret it is minted from was fetched: airlock asks the token
/// endpoint for one now, as a request would (and stores a refresh token
/// the provider rotates). The words name the endpoint and its error code,
/// never a value.
fn mint_problem(
    home: &Path,
    policy: &Policy,
    vault: &Vault,
    upstream: &crate::upstream::Upstream,
    r: &airlock_policy::Route,
    failures: &HashMap<String, String>,
) -> Option<String> {
    let credential = r.credential.clone().filter(Credential::mints)?;
    if credential.secrets().any(|s| failures.contains_key(s)) {
        return None;
    }
    let secrets: Vec<(String, Option<Arc<SecretValue>>)> = credential
        .secrets()
        .map(|name| (name.to_owned(), policy.secret(name).and_then(|spec| vault.get(spec).ok())))
        .collect();
    let (upstream, limits) = (upstream.clone(), policy.limits.clone());
    // Its own thread and runtime: `check` is called from async code too.
    let minted = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
        let secret = |name: &str| secrets.iter().find(|(n, _)| n == name).and_then(|(_, v)| v.clone());
        Some(runtime.block_on(crate::mint::mint(&upstream, &limits, &credential, secret)))
    })
    .join()
    .ok()
    .flatten();
    match minted {
        None => Some("credential: the token endpoint could not be asked".to_owned()),
        Some(Err(reason)) => Some(format!("credential: {reason}")),
        Some(Ok(minted)) => {
            if let Some((name, new)) = &minted.rotated {
                crate::mint::keep_rotated(policy, home, name, new);
            }
            None
        }
    }
}

/// What keeps route `r`'s `aws_sigv4` keys from signing, if it has them
/// and they were fetched: the same check a request's signing makes. The
/// words name the secrets, never quote them.
fn signing_problem(
    policy: &Policy,
    vault: &Vault,
    r: &airlock_policy::Route,
    failures: &HashMap<String, String>,
) -> Option<String> {
    let Some(Credential::AwsSigV4(aws)) = &r.credential else { return None };
    if r.secrets().any(|s| failures.contains_key(s)) {
        return None;
    }
    let get = |name: &str| vault.get(policy.secret(name)?).ok();
    let token = match &aws.session_token {
        Some(name) => Some(get(name)?),
        None => None,
    };
    let (id, secret) = (get(&aws.access_key_id)?, get(&aws.secret_access_key)?);
    crate::sigv4::keys_problem(aws, &id, &secret, token.as_deref()).map(|problem| format!("credential: {problem}"))
}

/// What is wrong with route `r`'s client certificate, if it has one and
/// both its secrets were fetched (a failed fetch is reported on its own):
/// the chain and key must be PEM that rustls can use together, the same
/// check a request's first use makes. The words name the secrets, never
/// quote them.
fn client_cert_problem(
    policy: &Policy,
    vault: &Vault,
    r: &airlock_policy::Route,
    failures: &HashMap<String, String>,
) -> Option<String> {
    let names = r.client_cert.as_ref()?;
    if failures.contains_key(&names.cert) || failures.contains_key(&names.key) {
        return None;
    }
    let cert = vault.get(policy.secret(&names.cert)?).ok()?;
    let key = vault.get(policy.secret(&names.key)?).ok()?;
    crate::upstream::ClientIdentity::parse(&names.cert, cert.expose(), &names.key, key.expose())
        .err()
        .map(|e| format!("client_cert: {e}"))
}
