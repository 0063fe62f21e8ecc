//! airlock's benches live in `benches/` (criterion) and `src/bin/loadbench.rs`
//! (the load harness) — see `benches/README.md`. This library holds what
//! they share: a fast TLS upstream and an agent-side client.
#![allow(missing_docs)]

pub mod client;
pub mod upstream;

use std::path::Path;

use airlock_policy::secrets::{SecretValue, Store};

/// The routed key, as the vault holds it and the upstream expects it.
pub const KEY: &str = "sk_live_bench_0123456789abcdef0123";
/// What the agent sends instead.
pub const PLACEHOLDER: &str = "AIRLOCK_BENCH_KEY";
/// The bench tenant's token.
pub const TOKEN: &str = "bench-token-0123456789abcdef";
/// Secrets airlock loads (the redactor scans responses for all of them).
pub const SECRETS: usize = 10;
/// The host every keep-alive figure uses; the route covers `*.bench.test`.
pub const API_HOST: &str = "api.bench.test";
/// The host of the route that signs (`aws_sigv4`) with
/// [`AWS_ACCESS_KEY_ID`]; the agent signs with [`AWS_PLACEHOLDER`].
pub const AWS_HOST: &str = "aws.signed.test";
/// The bench's AWS access key id (the upstream accepts its signatures).
pub const AWS_ACCESS_KEY_ID: &str = "AKIABENCH0123456789X";
/// The access key id the agent signs with.
pub const AWS_PLACEHOLDER: &str = "AIRLOCK_BENCH_AWS";

/// Writes an AIRLOCK_HOME for the benches: [`SECRETS`] stored secrets,
/// tenant `bench` with one wildcard route `*.bench.test:PORT` (secret
/// [`KEY`], placeholder [`PLACEHOLDER`]), the upstream's CA trusted, and
/// [`API_HOST`] and `extra_hosts` resolved to 127.0.0.1.
pub fn write_home(home: &Path, port: u16, upstream_ca: &Path, extra_hosts: &[String]) -> anyhow::Result<()> {
    std::fs::create_dir_all(home)?;
    let store = Store::new(home);
    let mut secrets = String::new();
    for i in 0..SECRETS {
        let value = if i == 0 { KEY.to_owned() } else { format!("sk_live_other_{i:02}_{:016x}", i * 7919) };
        store.set(&format!("s{i}"), &SecretValue::new(value.into_bytes())?)?;
        secrets.push_str(&format!("[secrets.s{i}]\nsource = \"store\"\n\n"));
    }
    store.set("aws_id", &SecretValue::new(AWS_ACCESS_KEY_ID.as_bytes().to_vec())?)?;
    store.set("aws_key", &SecretValue::new(b"bench/secret+access=key0123456789abcdefg".to_vec())?)?;
    secrets.push_str("[secrets.aws_id]\nsource = \"store\"\n\n[secrets.aws_key]\nsource = \"store\"\n\n");
    let mut resolve = format!("\"{API_HOST}\" = \"127.0.0.1\", \"{AWS_HOST}\" = \"127.0.0.1\"");
    for h in extra_hosts {
        resolve.push_str(&format!(", \"{h}\" = \"127.0.0.1\""));
    }
    let config = format!(
        r#"[proxy]
listen = "127.0.0.1:0"
upstream_ca = ["{ca}"]
resolve = {{ {resolve} }}

{secrets}
[tenants.bench]
token = "{TOKEN}"

[[tenants.bench.routes]]
name = "api"
host = "*.bench.test:{port}"
secret = "s0"
placeholder = "{PLACEHOLDER}"
methods = ["GET", "POST"]
max_request_body = "4GiB"

[[tenants.bench.routes]]
name = "aws"
host = "{AWS_HOST}:{port}"
placeholder = "{AWS_PLACEHOLDER}"
methods = ["GET", "POST"]
credential = {{ kind = "aws_sigv4", access_key_id = "aws_id", secret_access_key = "aws_key", region = "eu-west-1", service = "execute-api" }}
"#,
        ca = upstream_ca.display(),
    );
    std::fs::write(home.join("airlock.toml"), config)?;
    Ok(())
}

/// A config with `n` routes for tenant `acme`, all on distinct hosts.
pub fn config_with_routes(n: usize) -> String {
    let mut s =
        String::from("[secrets.k]\nsource = \"env\"\nvar = \"K\"\n[tenants.acme]\ntoken = \"acme-token-0123456789\"\n");
    for i in 0..n {
        s.push_str(&format!(
            "[[tenants.acme.routes]]\nname = \"r{i}\"\nhost = \"api{i}.example.com\"\nsecret = \"k\"\nplaceholder = \"AIRLOCK_KEY_{i:06}\"\n"
        ));
    }
    s
}
