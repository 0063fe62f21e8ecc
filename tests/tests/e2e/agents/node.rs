//! Node through `airlock run`. Node's built-in `fetch` ignores HTTPS_PROXY
//! before Node 24 (`NODE_USE_ENV_PROXY=1` there), so the script makes the
//! undici package's `EnvHttpProxyAgent` (which reads HTTPS_PROXY and
//! NO_PROXY) the global dispatcher: the usual way Node agents honour the
//! proxy variables. Both undici's `fetch` and the built-in one then go
//! through airlock. Node trusts airlock's CA only through the
//! NODE_EXTRA_CA_CERTS that `run` sets.

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

/// A script that makes undici's `EnvHttpProxyAgent` the global dispatcher,
/// sends `method` to `url` with the placeholder from ACME_API_KEY through
/// `fetch` (an expression: undici's `undici.fetch`, or Node's built-in
/// `globalThis.fetch`, which shares undici's global dispatcher), prints the
/// body, and exits 1 on an HTTP error status.
fn script(undici: &Path, fetch: &str, method: &str, url: &str) -> String {
    let undici = serde_json::to_string(&undici.display().to_string()).unwrap();
    format!(
        "const undici = require({undici});\n\
         undici.setGlobalDispatcher(new undici.EnvHttpProxyAgent());\n\
         {fetch}('{url}', {{ method: '{method}', headers: {{ authorization: 'Bearer ' + process.env.ACME_API_KEY }} }})\n\
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

    for (n, fetch) in ["undici.fetch", "globalThis.fetch"].into_iter().enumerate() {
        let out = run(&home, &["node", "-e", &script(&undici, fetch, "GET", &url)]).await;
        check_client_output(&format!("node {fetch}"), &out);
        assert_eq!(upstream.seen().len(), n + 1, "node's {fetch} went through airlock to the upstream");
        assert_eq!(upstream.seen()[n].header("authorization"), Some(format!("Bearer {ACME_SECRET}").as_str()));
    }

    // A method the route does not allow: airlock's 403 reaches the script,
    // which exits 1; nothing reaches the upstream.
    let out = run(&home, &["node", "-e", &script(&undici, "undici.fetch", "DELETE", &url)]).await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("method_not_allowed") && text.contains("HTTP 403"), "{text}");
    assert_no_secret("node's output", &text, &[ACME_SECRET]);
    assert_eq!(upstream.seen().len(), 2);
}

#[tokio::test]
async fn node_undici_websocket_through_airlock_run() {
    // undici's WebSocket, dispatched through EnvHttpProxyAgent: the
    // handshake carries the placeholder, the upstream sends the injected
    // value back in fragmented, binary and close frames, and the script
    // prints what it received.
    require_tool("node", "nodejs");
    let undici = serde_json::to_string(&node_modules().join("undici").display().to_string()).unwrap();
    let upstream = Upstream::start(Protocols::Both).await;
    let home = home(&upstream);
    let url = format!("wss://api.acme.test:{}/ws-leak", upstream.port());
    let script = format!(
        "const undici = require({undici});\n\
         const ws = new undici.WebSocket('{url}', {{ dispatcher: new undici.EnvHttpProxyAgent(),\n\
         \x20 headers: {{ authorization: 'Bearer ' + process.env.ACME_API_KEY }} }});\n\
         ws.binaryType = 'arraybuffer';\n\
         let n = 0;\n\
         ws.onmessage = (e) => {{\n\
         \x20 const text = typeof e.data === 'string' ? e.data : Buffer.from(e.data).toString('latin1');\n\
         \x20 console.log('message: ' + text);\n\
         \x20 if (++n === 2) ws.send('bye');\n\
         }};\n\
         ws.onclose = (e) => {{ console.log(`close: ${{e.code}} ${{e.reason}}`); }};\n\
         ws.onerror = (e) => {{ console.error('error: ' + (e.message || e.error)); process.exitCode = 1; }};\n"
    );
    let out = run(&home, &["node", "-e", &script]).await;
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    assert_no_secret("node's WebSocket", &text, &[ACME_SECRET]);
    assert!(text.contains(&format!("message: Bearer {ACME_PLACEHOLDER}\n")), "{text}");
    assert!(text.contains("close: 1000 bye "), "{text}");
    assert_eq!(upstream.seen()[0].header("authorization"), Some(format!("Bearer {ACME_SECRET}").as_str()));
    let records = audit_records(&home);
    let ws = records.iter().find(|r| r["path"] == "/ws-leak").unwrap();
    // (Whether the record says complete depends on undici: it may drop the
    // socket before its reply to the close frame is read; the closing
    // handshake is tested with tungstenite in channels.rs.)
    assert_eq!(ws["status"].as_u64(), Some(101), "{ws}");
    assert!(ws["redactions"].as_u64().unwrap() >= 3, "{ws}");
}
