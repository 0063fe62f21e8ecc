//! The vault side end to end: each secret source through the proxy, the
//! command source's TTL, single fetch and failure, rotation under load, and
//! live reload.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use airlock_policy::secrets::{SecretValue, Store};
use airlock_tests::client::{self, Http};
use airlock_tests::upstream::Protocols;
use airlock_tests::*;

/// A route `name` on `api.acme.test` for tenant acme using secret `secret`
/// declared with `source`.
fn with_secret(upstream: &Upstream, secret: &str, source: &str) -> String {
    let port = upstream.port();
    let config = standard_config(upstream, "", &format!("\n[secrets.{secret}]\n{source}\n"));
    // Point acme's main route at the secret under test.
    config.replace(
        &format!("name = \"echo\"\nhost = \"api.acme.test:{port}\"\nsecret = \"acme_key\""),
        &format!("name = \"echo\"\nhost = \"api.acme.test:{port}\"\nsecret = \"{secret}\""),
    )
}

async fn call(proxy: &TestProxy, upstream: &Upstream, extra: &[(&str, &str)]) -> client::Reply {
    let auth = format!("Bearer {ACME_PLACEHOLDER}");
    let mut headers = vec![("authorization", auth.as_str())];
    headers.extend_from_slice(extra);
    let req = client::get("api.acme.test", upstream.port(), "/echo", &headers, Http::H1);
    let ca = proxy.ca_pem();
    client::request(proxy.addr(), ("acme", ACME_TOKEN), "api.acme.test", upstream.port(), &[&ca], Http::H1, req)
        .await
        .unwrap()
}

fn last_auth(upstream: &Upstream) -> String {
    upstream.seen().last().unwrap().header("authorization").unwrap().to_owned()
}

#[tokio::test]
async fn env_and_file_sources_reach_the_upstream() {
    let upstream = Upstream::start(Protocols::Both).await;
    // env: a variable the test process already has (changing the
    // environment of a multi-threaded test process is not sound).
    let home_value = std::env::var("HOME").expect("HOME is set");
    let proxy = TestProxy::start(&with_secret(&upstream, "from_env", "source = \"env\"\nvar = \"HOME\"")).await;
    let reply = call(&proxy, &upstream, &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(last_auth(&upstream), format!("Bearer {home_value}"));
    proxy.proxy.shutdown().await;

    // file: owner-only file; a group-readable one is refused with the fix.
    register_secret("sk_from_file_123");
    register_secret("sk_from_file_456");
    let dir = TempHome::new("file-secret");
    let path = dir.path.join("key");
    std::fs::write(&path, "sk_from_file_123\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let source = format!("source = \"file\"\npath = \"{}\"", path.display());
    let proxy = TestProxy::start(&with_secret(&upstream, "from_file", &source)).await;
    assert_eq!(call(&proxy, &upstream, &[]).await.status, 200);
    assert_eq!(last_auth(&upstream), "Bearer sk_from_file_123");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&path, "sk_from_file_456\n").unwrap();
    let seen_before = upstream.seen().len();
    let reply = call(&proxy, &upstream, &[]).await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    let err = &reply.json()["error"];
    assert_eq!(err["code"], "secret_unavailable");
    assert!(err["message"].as_str().unwrap().contains("chmod 600"), "{err}");
    assert!(!reply.text().contains("sk_from_file"));
    assert_eq!(upstream.seen().len(), seen_before, "nothing is forwarded without the secret");
    proxy.proxy.shutdown().await;
}

/// A vault command that counts its runs in `dir/count` and prints the
/// value in `dir/value` (after an optional delay), or fails when
/// `dir/fail` exists.
fn vault_script(dir: &std::path::Path) -> std::path::PathBuf {
    let script = dir.join("vault.sh");
    std::fs::write(
        &script,
        r#"#!/bin/sh
d=$(dirname "$0")
echo run >> "$d/count"
sleep 0.2
if [ -e "$d/fail" ]; then
  echo "LEAKED_STDOUT_sk_should_not_appear"
  echo "vault: permission denied for path secret/acme" >&2
  exit 3
fi
cat "$d/value"
"#,
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

fn runs(dir: &std::path::Path) -> usize {
    std::fs::read_to_string(dir.join("count")).map(|s| s.lines().count()).unwrap_or(0)
}

#[tokio::test]
async fn command_source_ttl_single_fetch_and_failure() {
    let upstream = Upstream::start(Protocols::Both).await;
    register_secret("sk_from_command_1");
    register_secret("sk_from_command_2");
    register_secret("LEAKED_STDOUT_sk_should_not_appear");
    let dir = TempHome::new("vault-cmd");
    let script = vault_script(&dir.path);
    std::fs::write(dir.path.join("value"), "sk_from_command_1\n").unwrap();
    let source = format!("source = \"command\"\ncommand = [\"{}\"]\nttl = \"1s\"", script.display());
    let proxy = TestProxy::start(&with_secret(&upstream, "from_cmd", &source)).await;
    assert_eq!(runs(&dir.path), 1, "prefetched once at start");

    // Within the TTL: no new run.
    assert_eq!(call(&proxy, &upstream, &[]).await.status, 200);
    assert_eq!(call(&proxy, &upstream, &[]).await.status, 200);
    assert_eq!(runs(&dir.path), 1);
    assert_eq!(last_auth(&upstream), "Bearer sk_from_command_1");

    // After the TTL, 20 concurrent requests share one run.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    std::fs::write(dir.path.join("value"), "sk_from_command_2\n").unwrap();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (addr, ca, port) = (proxy.addr(), proxy.ca_pem(), upstream.port());
        tasks.push(tokio::spawn(async move {
            let auth = format!("Bearer {ACME_PLACEHOLDER}");
            let req = client::get("api.acme.test", port, "/echo", &[("authorization", &auth)], Http::H2);
            client::request(addr, ("acme", ACME_TOKEN), "api.acme.test", port, &[&ca], Http::H2, req)
                .await
                .unwrap()
                .status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(runs(&dir.path), 2, "concurrent uses after expiry must fetch once");
    assert_eq!(last_auth(&upstream), "Bearer sk_from_command_2");

    // A failing refresh within twice the TTL serves the last good value...
    std::fs::write(dir.path.join("fail"), "").unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(call(&proxy, &upstream, &[]).await.status, 200);
    assert_eq!(last_auth(&upstream), "Bearer sk_from_command_2");
    // ...and past it, the request is refused with the exit status, never
    // the command's output; its stderr is for the operator's log.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let reply = call(&proxy, &upstream, &[]).await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    let text = reply.text();
    assert_eq!(reply.json()["error"]["code"], "secret_unavailable");
    assert!(!text.contains("permission denied for path secret/acme"), "{text}");
    assert!(text.contains("exit status 3"), "{text}");
    assert!(!text.contains("LEAKED_STDOUT"), "{text}");
    assert!(captured_logs().contains("permission denied for path secret/acme"), "the operator's log has it");
    let audit = std::fs::read_to_string(proxy.home.path.join("audit.jsonl")).unwrap();
    assert!(!audit.contains("sk_from_command") && !audit.contains("LEAKED_STDOUT"));
    proxy.proxy.shutdown().await;
}

/// A vault command that fails says why on stderr, and stderr may hold a key
/// or the vault's own token: the agent's denial names the program and its
/// exit status only; the operator's log has the summary, with every value
/// the vault knows replaced.
#[tokio::test]
async fn a_failing_command_is_never_quoted_to_the_agent() {
    const VAULT_TOKEN: &str = "hvs_operator_only_vault_token_7c1d";
    let upstream = Upstream::start(Protocols::Both).await;
    let dir = TempHome::new("vault-stderr");
    // The store file of the standard config, which the vault has fetched.
    let acme_key = dir.path.join("acme-key-path");
    let script = dir.path.join("failing.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nprintf 'op: stderr-marker-4b9e denied (key %s, token {VAULT_TOKEN})\\n' \"$(cat \"$(cat '{}')\")\" >&2\nexit 1\n",
            acme_key.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let source = format!("source = \"command\"\ncommand = [\"{}\"]", script.display());
    let proxy = TestProxy::start(&with_secret(&upstream, "failing", &source)).await;
    std::fs::write(&acme_key, proxy.home.path.join("secrets/acme_key").display().to_string()).unwrap();

    let reply = call(&proxy, &upstream, &[]).await;
    assert_eq!(reply.status, 503);
    let text = reply.text();
    assert_eq!(reply.json()["error"]["code"], "secret_unavailable");
    assert_no_secret("the denial", &text, &[ACME_SECRET]);
    for quoted in [VAULT_TOKEN, "stderr-marker-4b9e", "denied ("] {
        assert!(!text.contains(quoted), "the denial quotes the command's stderr ({quoted})");
    }
    let message = reply.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("'failing'") && message.contains("exit status 1"), "{message}");
    assert!(message.contains("log"), "the denial says where the details are: {message}");

    // The operator's log line: the summary, scrubbed of the values the vault
    // knows (a token it does not know is the operator's to see).
    let line = captured_logs()
        .lines()
        .rev()
        .find(|l| l.contains("stderr-marker-4b9e"))
        .map(str::to_owned)
        .expect("the log has the stderr summary");
    assert_no_secret("the log line", &line, &[ACME_SECRET]);
    assert!(line.contains("denied (key [REDACTED], token"), "the known key is replaced: {line}");
    assert!(line.contains("vault command failed") && line.contains("secret=failing"), "{line}");
    assert!(line.contains("request_id="), "the line belongs to the request's span: {line}");
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn rotation_under_load_takes_effect_on_the_next_request() {
    let upstream = Arc::new(Upstream::start(Protocols::Both).await);
    let proxy = Arc::new(TestProxy::start(&standard_config(upstream.as_ref(), "", "")).await);
    let rotated = Arc::new(AtomicBool::new(false));
    const NEW: &str = "sk_live_acme_ROTATED_abcdef";
    register_secret(NEW);
    let looper = {
        let (proxy, upstream, rotated) = (Arc::clone(&proxy), Arc::clone(&upstream), Arc::clone(&rotated));
        tokio::spawn(async move {
            let mut after = 0;
            for _ in 0..200 {
                let was_rotated = rotated.load(Ordering::SeqCst);
                // Echo the old key back in a header: it must still be
                // scrubbed after the rotation.
                let reply = call(&proxy, &upstream, &[("x-echo-old", ACME_SECRET)]).await;
                assert_eq!(reply.status, 200, "{}", reply.text());
                let text = reply.text();
                assert!(!text.contains(ACME_SECRET) && !text.contains(NEW), "a key leaked: {text}");
                if was_rotated {
                    assert_eq!(
                        last_auth(&upstream),
                        format!("Bearer {NEW}"),
                        "a request after the rotation used the old key"
                    );
                    after += 1;
                    if after >= 20 {
                        break;
                    }
                }
            }
            after
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    // What `airlock secret set acme_key` does.
    Store::new(&proxy.home.path).set("acme_key", &SecretValue::new(NEW.into()).unwrap()).unwrap();
    rotated.store(true, Ordering::SeqCst);
    assert!(looper.await.unwrap() >= 20, "requests kept succeeding after the rotation");
}

#[tokio::test]
async fn reload_rejects_a_broken_config_and_adds_routes_live() {
    let upstream = Upstream::start(Protocols::Both).await;
    let config = standard_config(&upstream, "", "");
    let proxy = TestProxy::start(&config).await;
    let path = proxy.home.path.join("airlock.toml");
    let beta_req =
        || client::get("api.beta.test", upstream.port(), "/echo", &[("authorization", "AIRLOCK_ACME_BETA")], Http::H1);
    let ca = proxy.ca_pem();
    let roots = [ca.as_str()];
    let ask_beta = |req| {
        client::request(proxy.addr(), ("acme", ACME_TOKEN), "api.beta.test", upstream.port(), &roots, Http::H1, req)
    };

    // A broken config is refused with the reason; the old one keeps serving.
    std::fs::write(&path, config.replace("[tenants.acme]", "[tenants.acme]\nbogus = 1")).unwrap();
    let err = proxy.proxy.reload().unwrap_err().to_string();
    assert!(err.contains("bogus"), "{err}");
    assert_eq!(call(&proxy, &upstream, &[]).await.status, 200);

    // A valid one adds a route for acme to beta's host, picked up from the
    // file change alone.
    tokio::spawn(proxy.proxy.reloader().watch(Duration::from_millis(50)));
    let added = format!(
        "{config}\n[[tenants.acme.routes]]\nname = \"acme-beta\"\nhost = \"api.beta.test:{}\"\nsecret = \"acme_key\"\nplaceholder = \"AIRLOCK_ACME_BETA\"\n",
        upstream.port()
    );
    std::fs::write(&path, &added).unwrap();
    let mut last = String::new();
    for _ in 0..100 {
        match ask_beta(beta_req()).await {
            Ok(reply) if reply.status == 200 => {
                last.clear();
                break;
            }
            Ok(reply) => last = reply.text(),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(last.is_empty(), "the new route never went live: {last}");
    assert_eq!(last_auth(&upstream), ACME_SECRET);
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn check_reports_every_route() {
    let upstream = Upstream::start(Protocols::Both).await;
    let config = with_secret(&upstream, "missing_one", "source = \"store\"");
    let proxy = TestProxy::start(&config).await;
    let policy = airlock_policy::Policy::load(&proxy.home.path.join("airlock.toml"), &proxy.home.path).unwrap();
    let report = airlock::check::check(&proxy.home.path, &policy);
    assert!(!report.ok());
    let echo = report.routes.iter().find(|r| r.route == "echo").unwrap();
    assert!(!echo.ready);
    assert!(echo.needs.iter().any(|n| n.contains("airlock secret set missing_one")), "{:?}", echo.needs);
    let beta = report.routes.iter().find(|r| r.route == "beta").unwrap();
    assert!(beta.ready, "{:?}", beta.needs);
    let table = report.table();
    assert!(table.contains("Ready") && table.contains("Needs action"), "{table}");
    for secret in [ACME_SECRET, BETA_SECRET] {
        assert!(!table.contains(secret) && !format!("{report:?}").contains(secret));
    }
    proxy.proxy.shutdown().await;
}

/// Runs `airlock run --tenant acme -- curl …` inside a private D-Bus session
/// with a real gnome-keyring holding `value` under service `airlock-test`,
/// account `acme`. Returns the run's output; curl's body is in
/// `home/curl.out` (the keyring daemon may write to stdout too).
async fn run_with_keychain(home: &TempHome, value: &str, url: &str) -> std::process::Output {
    for (tool, package) in [
        ("dbus-run-session", "dbus-daemon"),
        ("gnome-keyring-daemon", "gnome-keyring"),
        ("secret-tool", "libsecret-tools"),
    ] {
        require_tool(tool, package);
    }
    let script = format!(
        r#"set -e
eval "$(printf pw | gnome-keyring-daemon --unlock --components=secrets)" >/dev/null
printf %s "$KC_VALUE" | secret-tool store --label=airlock-test service airlock-test username acme
exec "$AIRLOCK" run --tenant acme -- sh -c 'curl -sS --max-time 20 -o "$AIRLOCK_HOME/curl.out" -H "Authorization: Bearer $ACME_API_KEY" {url}'"#
    );
    tokio::process::Command::new("dbus-run-session")
        .args(["--", "sh", "-c", &script])
        // gnome-keyring keeps its files under $HOME: keep them in the test's home.
        .env("HOME", &home.path)
        .env_remove("XDG_DATA_HOME")
        .env_remove("XDG_RUNTIME_DIR")
        .env("AIRLOCK_HOME", &home.path)
        .env("AIRLOCK", airlock_bin())
        .env("KC_VALUE", value)
        .env("RUST_LOG", "warn")
        .env_remove("AIRLOCK_CONFIG")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn keychain_source_reads_a_real_secret_service() {
    const VALUE: &str = "sk_live_from_the_keychain_42";
    register_secret(VALUE);
    let upstream = Upstream::start(Protocols::Both).await;
    let url = format!("https://api.acme.test:{}/echo", upstream.port());
    let home = TempHome::new("keychain");
    let secret = "source = \"keychain\"\nservice = \"airlock-test\"\naccount = \"acme\"";
    std::fs::write(home.path.join("airlock.toml"), with_secret(&upstream, "kc", secret)).unwrap();

    let out = tokio::time::timeout(Duration::from_secs(60), run_with_keychain(&home, VALUE, &url)).await.unwrap();
    let (output, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{output}{stderr}");
    let stdout = std::fs::read_to_string(home.path.join("curl.out")).unwrap();
    assert_eq!(last_auth(&upstream), format!("Bearer {VALUE}"), "the upstream sees the keychain's value");
    assert!(stdout.contains(&format!("Bearer {ACME_PLACEHOLDER}")), "{stdout}");
    assert_no_secret("client output", &format!("{stdout}{output}{stderr}"), &[VALUE]);

    // An item that is not in the keychain: a denial that says how to add it.
    let seen = upstream.seen().len();
    let missing = "source = \"keychain\"\nservice = \"airlock-test\"\naccount = \"nobody\"";
    std::fs::write(home.path.join("airlock.toml"), with_secret(&upstream, "kc", missing)).unwrap();
    let out = tokio::time::timeout(Duration::from_secs(60), run_with_keychain(&home, VALUE, &url)).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = std::fs::read_to_string(home.path.join("curl.out")).unwrap();
    let reply: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(reply["error"]["code"], "secret_unavailable", "{reply}");
    assert!(reply["error"]["message"].as_str().unwrap().contains("secret-tool store"), "{reply}");
    assert_eq!(upstream.seen().len(), seen, "nothing went upstream");
    let audit = std::fs::read_to_string(home.path.join("audit.jsonl")).unwrap();
    assert_no_secret("audit", &audit, &[VALUE]);
}

/// Rewrites the config in place with the same length and modification time,
/// so the file watcher of `airlock serve` sees no change and only SIGHUP can
/// make it reload.
fn rewrite_unnoticed(path: &std::path::Path, text: &str, length: usize) {
    assert!(text.len() <= length, "the padded length is too short");
    let mtime = std::fs::metadata(path).unwrap().modified().unwrap();
    let padded = format!("{text}{}\n", "#".repeat(length - text.len() - 1));
    std::fs::write(path, padded).unwrap();
    std::fs::File::options().write(true).open(path).unwrap().set_modified(mtime).unwrap();
}

#[tokio::test]
async fn sighup_reloads_a_running_serve() {
    let upstream = Upstream::start(Protocols::Both).await;
    let home = TempHome::new("sighup");
    store_standard_secrets(&home.path);
    let config = standard_config(&upstream, "", "");
    let added = format!(
        "{config}\n[[tenants.acme.routes]]\nname = \"acme-beta\"\nhost = \"api.beta.test:{}\"\nsecret = \"acme_key\"\nplaceholder = \"AIRLOCK_ACME_BETA\"\n",
        upstream.port()
    );
    let broken = config.replace("[tenants.acme]", "[tenants.acme]\nbogus = 1");
    let length = added.len().max(broken.len()) + 16;
    let path = home.path.join("airlock.toml");
    std::fs::write(&path, "").unwrap();
    rewrite_unnoticed(&path, &config, length);

    let mut serve = Served::start(&home.path, "debug").await;
    let (addr, pid) = (serve.addr, serve.pid());
    let ca = std::fs::read_to_string(home.path.join("ca.pem")).unwrap();
    let roots = [ca.as_str()];
    let ask = |host: &'static str, placeholder: &'static str| {
        let req = client::get(host, upstream.port(), "/echo", &[("authorization", placeholder)], Http::H1);
        client::request(addr, ("acme", ACME_TOKEN), host, upstream.port(), &roots, Http::H1, req)
    };
    let hup = |pid: u32| {
        let ok = std::process::Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap().success();
        assert!(ok, "kill -HUP failed");
    };
    assert_eq!(ask("api.acme.test", ACME_PLACEHOLDER).await.unwrap().status, 200);
    let before = ask("api.beta.test", "AIRLOCK_ACME_BETA").await.unwrap_err().to_string();
    assert!(before.contains("private_egress_denied"), "no such route yet: {before}");

    // A broken config behind SIGHUP: refused with the reason, old one serves.
    rewrite_unnoticed(&path, &broken, length);
    hup(pid);
    assert!(wait_for(Duration::from_secs(20), || serve.log().contains("bogus")).await, "{}", serve.log());
    assert_eq!(ask("api.acme.test", ACME_PLACEHOLDER).await.unwrap().status, 200, "the old config keeps serving");

    // A valid one adds the route live.
    rewrite_unnoticed(&path, &added, length);
    hup(pid);
    let mut status = None;
    for _ in 0..200 {
        status = ask("api.beta.test", "AIRLOCK_ACME_BETA").await.ok().map(|r| r.status);
        if status == Some(200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, Some(200), "the route added by SIGHUP never went live: {}", serve.log());
    assert_eq!(last_auth(&upstream), ACME_SECRET);
    let text = serve.log();
    assert!(!text.contains("config file changed"), "the watcher, not SIGHUP, reloaded: {text}");
    assert_eq!(text.matches("SIGHUP: reloading the config").count(), 2, "{text}");

    serve.child.kill().await.unwrap();
    // Every line `serve` logged at debug level is free of every secret.
    assert_no_secret("serve's log", &text, &[ACME_SECRET, BETA_SECRET]);
}

/// Reloads run off the async workers, one at a time, and keep unchanged
/// secrets: with a `command` secret that takes seconds, a file edit that
/// changes it and SIGHUPs arriving meanwhile, an unrelated route keeps
/// answering (before, each reload held an async worker for the whole fetch,
/// and with two of them busy every request waited); the newest file wins;
/// and an edit that leaves the secret alone does not run its command again.
#[tokio::test]
async fn reloads_never_stall_requests_and_the_newest_config_wins() {
    let upstream = Upstream::start(Protocols::Both).await;
    let home = TempHome::new("reload-stall");
    store_standard_secrets(&home.path);
    let runs = home.path.join("runs");
    let slow = |value: &str| {
        format!(
            "\n[secrets.slow]\nsource = \"command\"\ncommand = [\"sh\", \"-c\", \"echo run >> {}; sleep 6; echo {value}\"]\ntimeout = \"20s\"\n\n[[tenants.beta.routes]]\nname = \"slow\"\nhost = \"other.test:{}\"\nsecret = \"slow\"\nplaceholder = \"AIRLOCK_SLOW\"\n",
            runs.display(),
            upstream.port()
        )
    };
    let path = home.path.join("airlock.toml");
    std::fs::write(&path, standard_config(&upstream, "", &slow("sk_slow_value_one"))).unwrap();
    register_secret("sk_slow_value_one");
    register_secret("sk_slow_value_two");
    let mut serve = Served::start(&home.path, "info").await;
    let (addr, pid) = (serve.addr, serve.pid());
    let count_runs = || std::fs::read_to_string(&runs).unwrap_or_default().lines().count();
    assert_eq!(count_runs(), 1, "fetched once at start");
    let ca = std::fs::read_to_string(home.path.join("ca.pem")).unwrap();
    let port = upstream.port();
    let ask = move |method: &'static str| {
        let ca = ca.clone();
        async move {
            let req = http::Request::builder()
                .method(method)
                .uri("/echo")
                .header("host", format!("api.acme.test:{port}"))
                .header("authorization", format!("Bearer {ACME_PLACEHOLDER}"))
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap();
            client::request(addr, ("acme", ACME_TOKEN), "api.acme.test", port, &[&ca], Http::H1, req).await.unwrap()
        }
    };
    assert_eq!(ask("GET").await.status, 200);

    // A request loop on acme's route, timed, while the slow secret changes
    // (its command runs again, 6 s) and two SIGHUPs come in.
    let stop = Arc::new(AtomicBool::new(false));
    let looping = {
        let stop = Arc::clone(&stop);
        let ask = ask.clone();
        tokio::spawn(async move {
            let mut worst = Duration::ZERO;
            while !stop.load(Ordering::SeqCst) {
                let started = std::time::Instant::now();
                assert_eq!(ask("GET").await.status, 200);
                worst = worst.max(started.elapsed());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            worst
        })
    };
    let hup = || {
        let ok = std::process::Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap().success();
        assert!(ok, "kill -HUP failed");
    };
    std::fs::write(&path, standard_config(&upstream, "", &slow("sk_slow_value_two"))).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    hup();
    // The newest file: the same slow secret, and DELETE allowed on acme.
    let newest = standard_config(&upstream, "", &slow("sk_slow_value_two"))
        .replace(r#"methods = ["GET", "HEAD", "OPTIONS", "POST"]"#, r#"methods = ["GET", "DELETE"]"#);
    std::fs::write(&path, &newest).unwrap();
    hup();
    tokio::time::sleep(Duration::from_secs(15)).await;
    stop.store(true, Ordering::SeqCst);
    let worst = looping.await.unwrap();
    println!("worst request latency while reloading: {worst:?}");
    // A generous bound against the command's 6 s: a request held behind a
    // reload waits for all of it.
    assert!(worst < Duration::from_millis(3500), "a request waited {worst:?} behind a reload: {}", serve.log());
    assert!(wait_for(Duration::from_secs(20), || serve.log().matches("config reloaded").count() >= 2).await);
    assert_eq!(ask("DELETE").await.status, 200, "the newest config won: {}", serve.log());
    // The changed secret ran once more; later reloads of the same spec kept it.
    assert_eq!(count_runs(), 2, "{}", serve.log());
    serve.child.kill().await.unwrap();
}

/// The threads of process `pid`: how many there are, and how many are
/// keychain readers (named `airlock-keychain`, of which Linux keeps 15
/// characters).
fn threads(pid: u32) -> (usize, usize) {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    let names: Vec<String> = tasks.filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok()).collect();
    (names.len(), names.iter().filter(|n| n.trim() == "airlock-keychai").count())
}

#[tokio::test]
async fn a_hanging_keychain_costs_one_thread_and_each_request_its_timeout() {
    const MISSES: usize = 8;
    let upstream = Upstream::start(Protocols::Http1).await;
    let home = TempHome::new("keychain-hang");
    // A session bus that accepts connections and never says a word: every
    // Secret Service call hangs.
    let bus = home.path.join("bus.sock");
    let listener = tokio::net::UnixListener::bind(&bus).unwrap();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    store_standard_secrets(&home.path);
    let secret = "source = \"keychain\"\nservice = \"airlock-test\"\naccount = \"acme\"\ntimeout = \"1s\"";
    std::fs::write(home.path.join("airlock.toml"), with_secret(&upstream, "kc", secret)).unwrap();
    let address = format!("unix:path={}", bus.display());
    let serve = Served::start_with_env(&home.path, "info", &[("DBUS_SESSION_BUS_ADDRESS", &address)]).await;
    let ca = std::fs::read_to_string(home.path.join("ca.pem")).unwrap();
    let request = || async {
        let started = std::time::Instant::now();
        let headers = [("authorization", format!("Bearer {ACME_PLACEHOLDER}"))];
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let req = client::get("api.acme.test", upstream.port(), "/echo", &headers, Http::H1);
        let reply =
            client::request(serve.addr, ("acme", ACME_TOKEN), "api.acme.test", upstream.port(), &[&ca], Http::H1, req)
                .await
                .unwrap();
        (reply, started.elapsed())
    };
    // One miss first, so the threads it needs exist before counting.
    let (reply, _) = request().await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    let (baseline, _) = threads(serve.pid());

    // MISSES requests at once, while the keychain still hangs: each is
    // answered `secret_unavailable` about its timeout after it asked, and
    // the proxy does not grow a thread per miss.
    let done = AtomicBool::new(false);
    let burst = async {
        let replies = futures_util::future::join_all((0..MISSES).map(|_| request())).await;
        done.store(true, Ordering::Relaxed);
        replies
    };
    let sample = async {
        let mut most = (0, 0);
        while !done.load(Ordering::Relaxed) {
            let (all, keychain) = threads(serve.pid());
            most = (most.0.max(all), most.1.max(keychain));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        most
    };
    let (replies, (most_threads, most_readers)) = tokio::join!(burst, sample);
    let took: Vec<_> = replies.iter().map(|(_, t)| t.as_millis()).collect();
    eprintln!(
        "{MISSES} concurrent misses: answered after {took:?} ms; threads {baseline} before, at most {most_threads} \
         during, at most {most_readers} keychain readers"
    );
    for (reply, took) in &replies {
        assert_eq!(reply.status, 503, "{}", reply.text());
        let answer = reply.json();
        assert_eq!(answer["error"]["code"], "secret_unavailable", "{answer}");
        assert!(answer["error"]["message"].as_str().unwrap().contains("keychain"), "{answer}");
        assert!(*took < Duration::from_secs(4), "a miss took {took:?} against a 1 s timeout");
    }
    assert!(most_readers <= 1, "{most_readers} keychain reader threads for {MISSES} misses of one secret");
    assert!(
        most_threads < baseline + MISSES / 2,
        "{most_threads} threads during {MISSES} misses, {baseline} before: a thread per miss"
    );
    assert_eq!(upstream.seen().len(), 0, "nothing went upstream without the secret");
    silent.abort();
    drop(serve);
}
