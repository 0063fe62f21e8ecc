//! airlock's benches live in `benches/` (criterion) and `src/bin/loadbench.rs`
//! (the load harness) — see `benches/README.md`. This library holds what
//! they share: a fast TLS upstream and an agent-side client.
#![allow(missing_docs)]

pub mod client;
pub mod upstream;

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
