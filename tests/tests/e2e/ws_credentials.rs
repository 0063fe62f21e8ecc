//! A route's `websocket` key (README, "WebSocket messages"): the route's own
//! placeholder in the agent's messages of the listed kinds reaches the
//! upstream as the secret, with a real client library (python
//! `websockets`, `tests/python/ws_agent.py`) sending whole and fragmented
//! messages through the real proxy. The upstream (`/ws`) records each
//! message it received and echoes it; the echo reaches the agent with the
//! secret mapped back to the placeholder. Other placeholders still close
//! the socket, the handshake is refused in cleartext or without its
//! secret, and the logs and the audit never hold the secret (`TempHome`
//! searches both when each test's home goes away).

use std::path::Path;
use std::time::Duration;

use airlock_tests::upstream::Protocols;
use airlock_tests::*;
use serde_json::{Value, json};
use tokio::process::Command;

/// The standard config with the `echo` route's `websocket` set to
/// `kinds` (a TOML list) and `extra` appended.
fn config(upstream: &impl Origin, kinds: &str, extra: &str) -> String {
    standard_config(upstream, "", extra).replacen(
        "methods = [\"GET\", \"HEAD\", \"OPTIONS\", \"POST\"]",
        &format!("methods = [\"GET\", \"HEAD\", \"OPTIONS\", \"POST\"]\nwebsocket = {kinds}"),
        1,
    )
}

/// Runs the python agent against `wss://api.acme.test:PORT{path}` as
/// tenant acme with `steps` (see `ws_agent.py`); its JSON answer.
async fn agent(proxy: &TestProxy, port: u16, path: &str, steps: Value) -> Vec<Value> {
    agent_at(proxy, "api.acme.test", port, path, steps).await
}

/// [`agent`] to `host`.
async fn agent_at(proxy: &TestProxy, host: &str, port: u16, path: &str, steps: Value) -> Vec<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/ws_agent.py");
    let out = Command::new(crate::conformance::venv_python())
        .arg(script)
        .arg(proxy.proxy_url("acme", ACME_TOKEN))
        .arg(proxy.ca_path())
        .arg(format!("wss://{host}:{port}{path}"))
        .arg(steps.to_string())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "ws_agent.py failed (is websockets installed? scripts/test.sh): {stdout}{}", {
        String::from_utf8_lossy(&out.stderr)
    });
    assert_no_secret("what the agent received", &stdout, &[ACME_SECRET, BETA_SECRET]);
    serde_json::from_str(&stdout).unwrap()
}

/// The messages the upstream's `/ws` received, in order.
fn received(upstream: &Upstream) -> Vec<String> {
    upstream.seen().iter().filter(|s| s.method == "WS").filter_map(|s| s.header("message").map(str::to_owned)).collect()
}

/// The record of the `n`th WebSocket to `/ws` (from 1), once written.
async fn ws_record(proxy: &TestProxy, n: usize) -> Value {
    let found = || {
        let mut all: Vec<Value> =
            proxy.audit_lines().into_iter().filter(|l| l["path"] == "/ws" && l["status"] == 101).collect();
        (all.len() >= n).then(|| all.swap_remove(n - 1))
    };
    assert!(wait_for(Duration::from_secs(10), || found().is_some()).await, "no record {n} for /ws");
    found().unwrap()
}

#[tokio::test]
async fn text_messages_whole_and_fragmented_carry_the_secret_upstream() {
    let upstream = Upstream::start(Protocols::Http1).await;
    let proxy = TestProxy::start(&config(&upstream, "[\"text\"]", "")).await;
    let p = ACME_PLACEHOLDER;
    let (head, tail) = p.split_at(10);
    let steps = json!([
        ["text", format!("{{\"key\":\"{p}\",\"again\":\"{p}\"}}")],
        // The placeholder split across fragments is found in the whole.
        ["text_fragments", ["frag ", head, format!("{tail} end")]],
        // Binary is not listed: the placeholder is data.
        ["binary", format!("bin {p}")],
        ["binary_fragments", [format!("bin {head}"), tail.to_owned()]],
    ]);
    let replies = agent(&proxy, upstream.port(), "/ws", steps).await;
    assert_eq!(
        received(&upstream),
        [
            format!("{{\"key\":\"{ACME_SECRET}\",\"again\":\"{ACME_SECRET}\"}}"),
            format!("frag {ACME_SECRET} end"),
            format!("bin {p}"),
            format!("bin {p}"),
        ],
        "the upstream got the secret in text messages only"
    );
    // The upstream's echoes come back with the secret mapped back to the
    // placeholder.
    assert_eq!(
        replies,
        [
            json!({"text": format!("{{\"key\":\"{p}\",\"again\":\"{p}\"}}")}),
            json!({"text": format!("frag {p} end")}),
            json!({"binary": format!("bin {p}")}),
            json!({"binary": format!("bin {p}")}),
        ]
    );
    let r = ws_record(&proxy, 1).await;
    assert_eq!((r["decision"].as_str(), r["complete"].as_bool()), (Some("allow"), Some(true)), "{r}");
    assert_eq!((r["injected"].as_bool(), r["injections"].as_u64()), (Some(true), Some(2)), "{r}");
    assert_eq!(r["redactions"].as_u64(), Some(3), "{r}");
    let audit = std::fs::read_to_string(proxy.home.path.join("audit.jsonl")).unwrap();
    assert_no_secret("the audit log", &audit, &[ACME_SECRET]);
    assert_logs_clean();
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn the_echo_maps_back_to_the_routes_own_placeholder() {
    // Routes `echo` and `by-ip` share one secret; the tenant's set maps it
    // back to the first route's placeholder, which `by-ip` may not send.
    // A socket under `by-ip` gets its own back, as injected headers do.
    let upstream = Upstream::start(Protocols::Http1).await;
    let config = standard_config(&upstream, "", "").replacen(
        &format!("placeholder = \"{ACME_IP_PLACEHOLDER}\""),
        &format!("placeholder = \"{ACME_IP_PLACEHOLDER}\"\nwebsocket = [\"text\"]"),
        1,
    );
    let proxy = TestProxy::start(&config).await;
    let p = ACME_IP_PLACEHOLDER;
    let replies = agent_at(&proxy, "127.0.0.1", upstream.port(), "/ws", json!([["text", p], ["text", p]])).await;
    assert_eq!(received(&upstream), [ACME_SECRET, ACME_SECRET]);
    assert_eq!(replies, [json!({"text": p}), json!({"text": p})], "the echo, sent again, is allowed again");
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn binary_messages_carry_the_secret_when_listed() {
    let upstream = Upstream::start(Protocols::Http1).await;
    let proxy = TestProxy::start(&config(&upstream, "[\"text\", \"binary\"]", "")).await;
    let p = ACME_PLACEHOLDER;
    let steps = json!([
        ["binary", format!("bin {p}")],
        ["binary_fragments", ["bin AIRLOCK_", "ACME_KEY!"]],
        ["text", "no placeholder"],
    ]);
    let replies = agent(&proxy, upstream.port(), "/ws", steps).await;
    assert_eq!(
        received(&upstream),
        [format!("bin {ACME_SECRET}"), format!("bin {ACME_SECRET}!"), "no placeholder".into()]
    );
    assert_eq!(
        replies,
        [
            json!({"binary": format!("bin {p}")}),
            json!({"binary": format!("bin {p}!")}),
            json!({"text": "no placeholder"})
        ]
    );
    let r = ws_record(&proxy, 1).await;
    assert_eq!((r["injected"].as_bool(), r["injections"].as_u64()), (Some(true), Some(2)), "{r}");
    proxy.proxy.shutdown().await;

    // A route listing no kind: the placeholder is data, the record says
    // nothing of injections.
    let proxy = TestProxy::start(&standard_config(&upstream, "", "")).await;
    let before = received(&upstream).len();
    let replies = agent(&proxy, upstream.port(), "/ws", json!([["text", p], ["binary", p]])).await;
    assert_eq!(received(&upstream)[before..], [p, p]);
    assert_eq!(replies, [json!({"text": p}), json!({"binary": p})]);
    let r = ws_record(&proxy, 1).await;
    assert_eq!((r["injected"].as_bool(), r.get("injections")), (Some(false), None), "{r}");
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn other_placeholders_still_close_the_socket() {
    let upstream = Upstream::start(Protocols::Http1).await;
    let proxy = TestProxy::start(&config(&upstream, "[\"text\", \"binary\"]", "")).await;
    let cases = [(BETA_PLACEHOLDER, "wrong_tenant"), (ACME_IP_PLACEHOLDER, "placeholder_host_mismatch")];
    for (n, (placeholder, code)) in cases.into_iter().enumerate() {
        // Beside the route's own: checked first, so nothing is swapped.
        let text = format!("{ACME_PLACEHOLDER} {placeholder}");
        let replies = agent(&proxy, upstream.port(), "/ws", json!([["text", "hello"], ["text", text]])).await;
        assert_eq!(replies, [json!({"text": "hello"}), json!({"closed": 1008, "reason": format!("airlock: {code}")})]);
        assert!(!received(&upstream).iter().any(|m| m.contains(placeholder) || m.contains(ACME_SECRET)));
        let r = ws_record(&proxy, n + 1).await;
        assert_eq!((r["decision"].as_str(), r["code"].as_str()), (Some("deny"), Some(code)), "{r}");
        assert_eq!((r["injected"].as_bool(), r["injections"].as_u64()), (Some(false), Some(0)), "{r}");
    }
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn a_message_the_secret_would_make_too_large_closes_1009() {
    let upstream = Upstream::start(Protocols::Http1).await;
    let proxy =
        TestProxy::start(&config(&upstream, "[\"text\"]", "\n[limits]\nmax_websocket_message = \"4KiB\"\n")).await;
    // 16 placeholder bytes become 29 secret bytes: 4000 bytes with one
    // placeholder fit in 4096 once swapped, with ten they do not.
    let one = format!("{ACME_PLACEHOLDER}{}", "x".repeat(4000 - ACME_PLACEHOLDER.len()));
    let ten = format!("{}{}", ACME_PLACEHOLDER.repeat(10), "y".repeat(4000 - 10 * ACME_PLACEHOLDER.len()));
    let replies = agent(&proxy, upstream.port(), "/ws", json!([["text", one], ["text", ten]])).await;
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert_eq!(replies[0]["text"].as_str().map(str::len), Some(4000));
    assert_eq!(replies[1]["closed"], 1009, "{replies:?}");
    let got = received(&upstream);
    assert_eq!((got.len(), got[0].len()), (1, 4013), "the oversized message never went up");
    let r = ws_record(&proxy, 1).await;
    assert_eq!((r["complete"].as_bool(), r["injections"].as_u64()), (Some(false), Some(1)), "{r}");
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn the_handshake_needs_its_secret_and_tls() {
    // The route's secret is missing from the store: refused before any
    // upstream connection, although the handshake carries no placeholder.
    let upstream = Upstream::start(Protocols::Http1).await;
    let missing = config(&upstream, "[\"binary\"]", "")
        .replace("[secrets.beta_key]", "[secrets.ws_key]\nsource = \"store\"\n\n[secrets.beta_key]")
        .replacen("secret = \"acme_key\"", "secret = \"ws_key\"", 1);
    let proxy = TestProxy::start(&missing).await;
    let replies = agent(&proxy, upstream.port(), "/ws", json!([["text", "hello"]])).await;
    assert_eq!(replies, [json!({"status": 503, "denied": "secret_unavailable"})]);
    assert_eq!(upstream.connections(), 0);
    proxy.proxy.shutdown().await;

    // A secret that is not UTF-8 cannot go in a text message: refused at
    // the handshake, not sent as broken text.
    let home = TempHome::new("ws-bytes");
    store_standard_secrets(&home.path);
    let store = airlock_policy::secrets::Store::new(&home.path);
    store.set("acme_key", &airlock_policy::secrets::SecretValue::new(b"sk_\xff\xfe_bytes".to_vec()).unwrap()).unwrap();
    let proxy = TestProxy { proxy: start_in(&home.path, &config(&upstream, "[\"text\"]", "")).await, home };
    let replies = agent(&proxy, upstream.port(), "/ws", json!([["text", ACME_PLACEHOLDER]])).await;
    assert_eq!(replies, [json!({"status": 503, "denied": "secret_unavailable"})]);
    assert_eq!(upstream.connections(), 0);
    proxy.proxy.shutdown().await;

    // ws:// (plain HTTP): the handshake would put the secret in cleartext
    // frames, so it is refused like a placeholder in a header; a plain GET
    // on the route is not.
    let raw = RawUpstream::start_plain().await;
    let proxy = TestProxy::start(&config(&raw, "[\"text\"]", "")).await;
    let curl = |extra: &[&str]| {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-i", "--max-time", "20", "-x", &proxy.proxy_url("acme", ACME_TOKEN)]);
        cmd.args(extra).arg(format!("http://api.acme.test:{}/ws", raw.addr.port()));
        cmd.env_remove("NO_PROXY").env_remove("no_proxy");
        cmd
    };
    let handshake = [
        ["-H", "Connection: Upgrade"],
        ["-H", "Upgrade: websocket"],
        ["-H", "Sec-WebSocket-Version: 13"],
        ["-H", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="],
    ]
    .concat();
    let out = curl(&handshake).output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/1.1 403") && text.contains("insecure_upstream"), "{text}");
    assert_eq!(raw.connections(), 0, "refused before any upstream connection");
    let out = curl(&[]).output().await.unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("HTTP/1.1 200"));
    proxy.proxy.shutdown().await;
}
