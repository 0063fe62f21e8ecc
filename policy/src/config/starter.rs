//! The starter config `airlock init` writes.

use super::build::DEFAULT_LISTEN;

/// The starter config written by `airlock init` (and by `airlock serve` on
/// a fresh AIRLOCK_HOME), with one tenant holding `token`.
pub fn starter_config(token: &str) -> String {
    format!(
        r#"# airlock configuration. Reference: see README.md ("Config reference").

[proxy]
listen = "{DEFAULT_LISTEN}"
egress = "tunnel"            # hosts no route names: "tunnel" (bytes pass untouched) or "deny"
deny_private_egress = true   # tunnels to loopback/private/link-local IPs refused unless a route names the host
upstream_ca = []             # extra PEM root files trusted for upstreams
resolve = {{}}                 # host -> IP overrides, like curl --resolve

[audit]
path = "audit.jsonl"         # relative to AIRLOCK_HOME

# One vaulted credential. Give it a value with:  airlock secret set example
[secrets.example]
source = "store"

[tenants.demo]
token = "{token}"

[[tenants.demo.routes]]
name = "example"
host = "api.example.com"
secret = "example"
placeholder = "AIRLOCK_EXAMPLE_KEY"
env = "EXAMPLE_API_KEY"
headers = ["authorization", "x-api-key"]
methods = ["GET", "HEAD", "OPTIONS"]
"#
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::Policy;
    use crate::host::HostPattern;

    const TOKEN: &str = "0123456789abcdef0123";

    #[test]
    fn starter_config_loads() {
        let p = Policy::from_toml(
            &starter_config(TOKEN),
            "t",
            Path::new("/etc/airlock"),
            Path::new("/home/u/.local/share/airlock"),
        )
        .unwrap();
        let (_, t) = p.tenant_by_name("demo").unwrap();
        assert_eq!(t.token(), TOKEN);
        assert_eq!(t.routes[0].host, HostPattern::Exact("api.example.com".into()));
        assert_eq!(p.audit.path, Path::new("/home/u/.local/share/airlock/audit.jsonl"));
        assert_eq!(p.proxy.listen.to_string(), DEFAULT_LISTEN);
        assert!(!format!("{p:?}").contains(TOKEN), "Debug must not print tokens");
    }
}
