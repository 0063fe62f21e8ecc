//! Node through `airlock run`. Node's built-in `fetch` ignores HTTPS_PROXY
//! before Node 24 (`NODE_USE_ENV_PROXY=1` there), so the client is undici's
//! own `fetch` with `EnvHttpProxyAgent` as the global dispatcher: the usual
//! way Node agents honour the proxy variables. It trusts airlock's CA only
//! through the NODE_EXTRA_CA_CERTS that `run` sets.

use std::path::{Path, PathBuf};

use super::*;

/// The node_modules with undici that scripts/test.sh installs from
/// tests/node/package-lock.json.
fn node_modules() -> PathBuf {
    let dir = std::env::var_os("AIRLOCK_TEST_NODE_MODULES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-node/node_modules"));
    assert!(
        dir.join("undici/package.json").is_file(),
        "{} lacks undici: run scripts/test.sh (it installs tests/node/package-lock.json into target/test-node)",
        dir.display()
    );
    dir
}

/// A script that sends `method` to `url` with the placeholder from
/// ACME_API_KEY, prints the body, and exits 1 on an HTTP error status.
fn script(undici: &Path, method: &str, url: &str) -> String {
    let undici = serde_json::to_string(&undici.display().to_string()).unwrap();
    format!(
        "const {{ EnvHttpProxyAgent, setGlobalDispatcher, fetch }} = require({undici});\n\
         setGlobalDispatcher(new EnvHttpProxyAgent());\n\
         fetch('{url}', {{ method: '{method}', headers: {{ authorization: 'Bearer ' + process.env.ACME_API_KEY }} }})\n\
         \x20 .then(async (r) => {{\n\
         \x20   console.log(await r.text());\n\
         \x20   if (!r.ok) {{ console.error(`HTTP ${{r.status}}`); process.exitCode = 1; }}\n\
         \x20 }});\n"
    )
}

#[tokio::test]
async fn node_undici_through_airlock_run() {
    require_tool("node", "nodejs");
    let undici = node_modules().join("undici");
    let version = std::process::Command::new("node").arg("--version").output().unwrap();
    eprintln!("node {}: undici EnvHttpProxyAgent", String::from_utf8_lossy(&version.stdout).trim());
    let upstream = Upstream::start(Protocols::Both).await;
    let home = home(&upstream);
    let url = format!("https://api.acme.test:{}/echo", upstream.port());

    let out = run(&home, &["node", "-e", &script(&undici, "GET", &url)]).await;
    check_client_output("node", &out);
    assert_eq!(upstream.seen().len(), 1, "node went through airlock to the upstream");
    assert_eq!(upstream.seen()[0].header("authorization"), Some(format!("Bearer {ACME_SECRET}").as_str()));

    // A method the route does not allow: airlock's 403 reaches the script,
    // which exits 1; nothing reaches the upstream.
    let out = run(&home, &["node", "-e", &script(&undici, "DELETE", &url)]).await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("method_not_allowed") && text.contains("HTTP 403"), "{text}");
    assert_no_secret("node's output", &text, &[ACME_SECRET]);
    assert_eq!(upstream.seen().len(), 1);
}
