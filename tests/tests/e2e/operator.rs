//! The operator's path, through the real binary: tenants and routes added
//! from the CLI to a commented config while `airlock serve` runs, folders
//! bound to tenants (`airlock connect`) and their status, and `airlock run`
//! choosing its proxy — never another home's, never one another agent's
//! exit takes away.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use airlock_policy::Policy;
use airlock_tests::upstream::Protocols;
use airlock_tests::*;
use tokio::process::Command;

/// `airlock ARGS` on `home`, in `cwd`, with nothing of the test's own
/// environment that would pick another config or bypass a proxy.
fn airlock(home: &Path, cwd: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(airlock_bin());
    cmd.args(args)
        .current_dir(cwd)
        .env("AIRLOCK_HOME", home)
        .env_remove("AIRLOCK_CONFIG")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null());
    cmd
}

async fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().await.unwrap();
    assert!(out.status.success(), "{:?}: {}", cmd.as_std(), text(&out));
    text(&out)
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A shell command that curls `url` with `Authorization: Bearer
/// PLACEHOLDER`, through the proxy the environment names.
fn curl_script(url: &str, placeholder: &str) -> String {
    format!("curl -sS -f --max-time 20 -H 'Authorization: Bearer {placeholder}' {url}")
}

/// `airlock run --tenant acme` on `home`: one curl of `url` with acme's
/// placeholder, then the agent's `HTTPS_PROXY` written to `home/NAME`; its
/// output, and the proxy URL it had (empty if it wrote none).
async fn run_and_record(home: &Path, url: &str, name: &str) -> (Output, String) {
    let file = home.join(name);
    let script = format!("{} && printf %s \"$HTTPS_PROXY\" > '{}'", curl_script(url, ACME_PLACEHOLDER), file.display());
    let out = airlock(home, home, &["run", "--tenant", "acme", "--", "sh", "-c", &script]).output().await.unwrap();
    (out, std::fs::read_to_string(file).unwrap_or_default())
}

/// Runs `curl()` until its output is `want`, for up to ten seconds; its
/// last output.
async fn poll_until(curl: impl Fn() -> Command, want: &str) -> String {
    let mut got = String::new();
    for _ in 0..50 {
        got = String::from_utf8_lossy(&curl().output().await.unwrap().stdout).into_owned();
        if got == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    got
}

/// Tenants and routes added and removed from the CLI: the operator's
/// comments and layout survive, an edit that would not load is refused
/// with the file unchanged, and a running `airlock serve` picks each change
/// up by itself — the new tenant's agent gets its key injected, and once
/// removed, is refused.
#[tokio::test]
async fn tenant_and_route_commands_edit_a_commented_config_that_a_running_serve_picks_up() {
    let upstream = Upstream::start(Protocols::Both).await;
    let home = TempHome::new("operator-cli");
    let config = format!(
        "# Acme agency: one tenant per client. Keep this comment.\n{}",
        standard_config(&upstream, "", "")
            .replace("[secrets.beta_key]", "# beta's key, rotated monthly\n[secrets.beta_key]")
    );
    std::fs::write(home.path.join("airlock.toml"), &config).unwrap();
    store_standard_secrets(&home.path);
    let served = Served::start(&home.path, "info").await;
    let here = home.path.clone();

    let said = ok(&mut airlock(&home.path, &here, &["tenant", "add", "gamma"])).await;
    assert!(said.contains("added tenant 'gamma'"), "{said}");
    let host = format!("api.acme.test:{}", upstream.port());
    let said = ok(airlock(
        &home.path,
        &here,
        &["route", "add", "--tenant", "gamma", "--host", &host, "--header", "authorization", "--placeholder"],
    )
    .arg("AIRLOCK_GAMMA_KEY"))
    .await;
    assert!(said.contains("airlock secret set gamma_acme"), "{said}");
    let gamma_secret = "sk_live_gamma_added_from_the_cli_0123";
    register_secret(gamma_secret);
    let mut set = airlock(&home.path, &here, &["secret", "set", "gamma_acme"]);
    let mut child = set.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    tokio::io::AsyncWriteExt::write_all(child.stdin.as_mut().unwrap(), gamma_secret.as_bytes()).await.unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success(), "{}", text(&out));

    let now = std::fs::read_to_string(home.path.join("airlock.toml")).unwrap();
    for kept in ["# Acme agency: one tenant per client. Keep this comment.", "# beta's key, rotated monthly"] {
        assert!(now.contains(kept), "{kept}: {now}");
    }
    assert!(now.starts_with(&config[..config.find("[tenants.acme]").unwrap()]), "the head was rewritten:\n{now}");
    let policy = Policy::load(&home.path.join("airlock.toml"), &home.path).unwrap();
    let gamma_token = policy.tenant_by_name("gamma").unwrap().1.token().to_owned();

    // The running serve reloads the file: gamma's agent gets its key in.
    let proxy_url = format!("http://gamma:{gamma_token}@{}", served.addr);
    let ca = home.path.join("ca.pem");
    let url = format!("https://{host}/cli");
    let curl = || {
        let mut c = Command::new("curl");
        c.args(["-sS", "--max-time", "20", "--cacert"])
            .arg(&ca)
            .args([
                "-H",
                "Authorization: Bearer AIRLOCK_GAMMA_KEY",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}/%{http_connect}",
                &url,
            ])
            .env("HTTPS_PROXY", &proxy_url)
            .env_remove("NO_PROXY")
            .env_remove("no_proxy");
        c
    };
    let status = poll_until(curl, "200/200").await;
    assert_eq!(status, "200/200", "serve did not pick up the new tenant: {}", served.log());
    let seen = upstream.seen();
    assert_eq!(seen.last().unwrap().header("authorization"), Some(format!("Bearer {gamma_secret}").as_str()));

    // Refused edits leave the file as it was.
    let before = std::fs::read_to_string(home.path.join("airlock.toml")).unwrap();
    let out = airlock(&home.path, &here, &["route", "add", "--tenant", "gamma", "--host", "api.dup.test"])
        .args(["--name", "dup", "--placeholder", "AIRLOCK_GAMMA_KEY"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success() && text(&out).contains("would not load"), "{}", text(&out));
    let out = airlock(&home.path, &here, &["route", "add", "--tenant", "gamma", "--service", "openia"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success() && text(&out).contains("it has: airtable, anthropic"), "{}", text(&out));
    let out = airlock(&home.path, &here, &["tenant", "add", "Not A Name"]).output().await.unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    let out = airlock(&home.path, &here, &["tenant", "rm", "gamma"]).output().await.unwrap();
    assert!(!out.status.success() && text(&out).contains("--force"), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(home.path.join("airlock.toml")).unwrap(), before);

    // A route from the catalogue lands in the file with its doc link.
    let said =
        ok(&mut airlock(&home.path, &here, &["route", "add", "--tenant", "gamma", "--service", "anthropic"])).await;
    assert!(said.contains("airlock secret set gamma_anthropic"), "{said}");
    let listed = ok(&mut airlock(&home.path, &here, &["route", "list", "--tenant", "gamma"])).await;
    assert!(listed.contains("api.anthropic.com") && listed.contains("AIRLOCK_GAMMA_ANTHROPIC"), "{listed}");
    let now = std::fs::read_to_string(home.path.join("airlock.toml")).unwrap();
    assert!(now.contains("# Anthropic: https://") && now.contains("headers = [\"x-api-key\"]"), "{now}");

    // Removed: the serve refuses gamma's agent again.
    ok(&mut airlock(&home.path, &here, &["route", "rm", "--tenant", "gamma", "acme"])).await;
    ok(&mut airlock(&home.path, &here, &["tenant", "rm", "gamma", "--force"])).await;
    let tenants = ok(&mut airlock(&home.path, &here, &["tenant", "list"])).await;
    assert!(tenants.contains("acme") && !tenants.contains("gamma"), "{tenants}");
    let status = poll_until(curl, "000/407").await;
    assert_eq!(status, "000/407", "serve did not drop the removed tenant: {}", served.log());
    let now = std::fs::read_to_string(home.path.join("airlock.toml")).unwrap();
    assert!(now.contains("# beta's key, rotated monthly") && !now.contains("[tenants.gamma]"), "{now}");
}

/// `airlock connect` binds a folder to a tenant: `run` and `env` anywhere
/// below it act as that tenant with no flag (where a config of two tenants
/// otherwise needs one), the agent wiring it writes keeps what was there,
/// and `airlock status` says Ready, or what needs action.
#[tokio::test]
async fn a_connected_folder_picks_its_tenant_and_status_says_what_needs_action() {
    let upstream = Upstream::start(Protocols::Both).await;
    let home = TempHome::new("operator-connect");
    // A fixed port, as `airlock env` prints it.
    let config = standard_config(&upstream, "", "")
        .replace("listen = \"127.0.0.1:0\"", &format!("listen = \"127.0.0.1:{}\"", free_port()));
    std::fs::write(home.path.join("airlock.toml"), config).unwrap();
    store_standard_secrets(&home.path);
    let client = home.path.join("clients/beta");
    std::fs::create_dir_all(client.join("src/deep")).unwrap();
    std::fs::write(client.join(".mcp.json"), r#"{"mcpServers": {"other": {"command": "other-server"}}}"#).unwrap();
    let deep = client.join("src/deep");
    let url = format!("https://api.beta.test:{}/connected", upstream.port());

    // Two tenants, no folder bound: the agent is not started.
    let out = airlock(&home.path, &deep, &["run", "--", "true"]).output().await.unwrap();
    assert!(!out.status.success() && text(&out).contains("airlock connect --tenant NAME"), "{}", text(&out));

    let said = ok(airlock(&home.path, &home.path, &["connect"]).arg(&client).args([
        "--tenant",
        "beta",
        "--agent",
        "claude,cursor,codex",
    ]))
    .await;
    assert!(said.contains("[mcp_servers.airlock]"), "{said}");
    let mcp: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(client.join(".mcp.json")).unwrap()).unwrap();
    assert_eq!(mcp["mcpServers"]["other"]["command"], "other-server", "{mcp}");
    assert_eq!(mcp["mcpServers"]["airlock"]["args"], serde_json::json!(["mcp", "--tenant", "beta"]), "{mcp}");
    let cursor = std::fs::read_to_string(client.join(".cursor/mcp.json")).unwrap();
    assert!(cursor.contains("\"airlock\""), "{cursor}");
    let marker = std::fs::read_to_string(client.join(".airlock-workspace.toml")).unwrap();
    assert!(marker.contains("tenant = \"beta\"") && !marker.contains(BETA_TOKEN), "{marker}");
    for wiring in [&mcp.to_string(), &cursor, &said] {
        assert!(!wiring.contains(BETA_TOKEN) && !wiring.contains(BETA_SECRET), "{wiring}");
    }

    let env = ok(&mut airlock(&home.path, &deep, &["env", "--proxy-host", "127.0.0.1"])).await;
    assert!(env.contains(&format!("http://beta:{BETA_TOKEN}@")), "{env}");
    let out = airlock(&home.path, &deep, &["run", "--", "sh", "-c", &curl_script(&url, BETA_PLACEHOLDER)])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(upstream.seen().last().unwrap().header("authorization"), Some(format!("Bearer {BETA_SECRET}").as_str()));
    // --tenant still wins over the folder's.
    let out =
        airlock(&home.path, &deep, &["env", "--tenant", "acme", "--proxy-host", "127.0.0.1"]).output().await.unwrap();
    assert!(text(&out).contains(&format!("http://acme:{ACME_TOKEN}@")), "{}", text(&out));

    // A marker this home did not write (one a cloned repository brought)
    // picks no tenant: nothing runs until the folder is bound.
    let cloned = home.path.join("clients/cloned");
    std::fs::create_dir_all(&cloned).unwrap();
    std::fs::write(cloned.join(".airlock-workspace.toml"), "tenant = \"acme\"\n").unwrap();
    let out = airlock(&home.path, &cloned, &["run", "--", "true"]).output().await.unwrap();
    assert!(!out.status.success() && text(&out).contains("did not bind the folder"), "{}", text(&out));

    let status = airlock(&home.path, &home.path, &["status"]).output().await.unwrap();
    assert!(status.status.success(), "{}", text(&status));
    let said = text(&status);
    assert!(said.contains(&format!("{}  (beta)  Ready", client.canonicalize().unwrap().display())), "{said}");

    // beta's key gone: the folder and its tenant need action, naming it.
    airlock_policy::secrets::Store::new(&home.path).remove("beta_key").unwrap();
    let status = airlock(&home.path, &home.path, &["status", "--json"]).output().await.unwrap();
    assert_eq!(status.status.code(), Some(1), "{}", text(&status));
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let beta = json["tenants"].as_array().unwrap().iter().find(|t| t["tenant"] == "beta").unwrap();
    assert_eq!(beta["ready"], false, "{json}");
    assert!(beta["needs"].to_string().contains("airlock secret set beta_key"), "{json}");
    assert_eq!(json["workspaces"][0]["ready"], false, "{json}");
    let acme = json["tenants"].as_array().unwrap().iter().find(|t| t["tenant"] == "acme").unwrap();
    assert_eq!(acme["ready"], true, "{json}");

    // Removing the tenant forgets its folders: a tenant added later under
    // the same name (another client, maybe) does not inherit them.
    let said = ok(&mut airlock(&home.path, &home.path, &["tenant", "rm", "beta", "--force"])).await;
    assert!(said.contains("is no longer bound"), "{said}");
    ok(&mut airlock(&home.path, &home.path, &["tenant", "add", "beta"])).await;
    let out = airlock(&home.path, &deep, &["env"]).output().await.unwrap();
    assert!(!out.status.success() && text(&out).contains("did not bind the folder"), "{}", text(&out));
}

/// Two `airlock run`s of one home with no `serve`: each agent has a private
/// proxy, so the one that exits first takes nothing from the other. With
/// another home's `serve` on the configured port, a `run` proves it is not
/// its own and uses a private proxy: its agent works, and the other home's
/// proxy never sees it. A `run` of the serving home uses that serve.
#[tokio::test]
async fn concurrent_runs_and_a_second_home_each_keep_their_own_proxy() {
    let upstream = Upstream::start(Protocols::Both).await;
    let port = free_port();
    let config = standard_config(&upstream, "", "")
        .replace("listen = \"127.0.0.1:0\"", &format!("listen = \"127.0.0.1:{port}\""));
    let first = TempHome::new("operator-run-a");
    std::fs::write(first.path.join("airlock.toml"), &config).unwrap();
    store_standard_secrets(&first.path);
    let url = format!("https://api.acme.test:{}/run", upstream.port());
    let go = first.path.join("go");

    // The long agent: a request, then waits for `go`, then another.
    let long_script = format!(
        "{c} && printf %s \"$HTTPS_PROXY\" > '{p}' && n=0 && while [ ! -e '{go}' ] && [ $n -lt 600 ]; do sleep 0.1; \
         n=$((n+1)); done && {c}",
        c = curl_script(&url, ACME_PLACEHOLDER),
        p = first.path.join("long-proxy").display(),
        go = go.display()
    );
    let long = airlock(&first.path, &first.path, &["run", "--tenant", "acme", "--", "sh", "-c", &long_script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(30), || first.path.join("long-proxy").exists()).await,
        "the long agent's first request did not finish"
    );
    let (short, short_proxy) = run_and_record(&first.path, &url, "short-proxy").await;
    assert!(short.status.success(), "{}", text(&short));
    // The short agent has exited; the long one carries on.
    std::fs::write(&go, "").unwrap();
    let long = tokio::time::timeout(Duration::from_secs(60), long.wait_with_output()).await.unwrap().unwrap();
    assert!(long.status.success(), "the long agent lost its proxy: {}", text(&long));
    let long_proxy = std::fs::read_to_string(first.path.join("long-proxy")).unwrap();
    assert_ne!(long_proxy, short_proxy, "the two agents shared a proxy");
    for used in [&long_proxy, &short_proxy] {
        assert!(!used.ends_with(&format!(":{port}")), "a private proxy took the configured port: {used}");
        // A token of its own: once it stops, whatever takes its port
        // learns nothing that opens another proxy.
        assert!(used.starts_with("http://acme:") && !used.contains(ACME_TOKEN), "{used}");
    }
    // Their logs went to the home, not the agents' terminals.
    assert!(!text(&long).contains(" INFO "), "{}", text(&long));
    let log = std::fs::read_to_string(first.path.join("run.log")).unwrap();
    assert!(log.contains("started a private proxy in-process"), "{log}");

    // The first home serves on the configured port; a second home's run
    // does not use it.
    let served = Served::start(&first.path, "info").await;
    assert_eq!(served.addr.port(), port);
    let second = TempHome::new("operator-run-b");
    std::fs::write(second.path.join("airlock.toml"), &config).unwrap();
    store_standard_secrets(&second.path);
    let records_before = audit_records(&first.path.join("audit.jsonl")).len();
    let (out, used) = run_and_record(&second.path, &url, "proxy").await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("serves another AIRLOCK_HOME"), "{}", text(&out));
    assert!(!used.ends_with(&format!(":{port}")), "the second home's agent went to the first's proxy: {used}");
    assert_eq!(
        audit_records(&first.path.join("audit.jsonl")).len(),
        records_before,
        "the first home's proxy saw the second's agent"
    );
    assert_eq!(audit_records(&second.path.join("audit.jsonl")).last().unwrap()["decision"], "allow");

    // The serving home's own run uses its serve.
    let (out, used) = run_and_record(&first.path, &url, "own").await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(used.ends_with(&format!("@127.0.0.1:{port}")), "{used}");
    assert!(used.contains(ACME_TOKEN), "a serve takes the config's token: {used}");
    // The private proxies' tokens open nothing on the serve.
    let long_on_serve = long_proxy.replace(long_proxy.rsplit(':').next().unwrap(), &port.to_string());
    let out2 = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-o", "/dev/null", "-w", "%{http_connect}", "--proxy", &long_on_serve])
        .arg(&url)
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out2.stdout), "407", "{}", text(&out2));
    assert!(!text(&out).contains("private proxy"), "{}", text(&out));
    drop(served);
    // Two private proxies and a serve wrote the first home's log: one chain.
    let verified = ok(&mut airlock(&first.path, &first.path, &["audit", "--verify"])).await;
    assert!(verified.contains("intact") || verified.contains("ok"), "{verified}");
}

/// A private proxy reloads the config as `serve` does: a tenant removed
/// while its agent runs is refused from then on.
#[tokio::test]
async fn a_private_proxy_refuses_a_tenant_removed_while_its_agent_runs() {
    let upstream = Upstream::start(Protocols::Both).await;
    let home = TempHome::new("operator-private-reload");
    std::fs::write(home.path.join("airlock.toml"), standard_config(&upstream, "", "")).unwrap();
    store_standard_secrets(&home.path);
    let url = format!("https://api.beta.test:{}/reload", upstream.port());
    let code = format!(
        "curl -sS --max-time 20 -o /dev/null -w '%{{http_connect}}' -H 'Authorization: Bearer {BETA_PLACEHOLDER}' {url}"
    );
    // First 200; then beta is removed; then, within ten seconds, 407.
    let script = format!(
        "first=$({code}); airlock tenant rm beta --force >/dev/null; n=0; while [ $n -lt 50 ]; do \
         now=$({code}); [ \"$now\" = 407 ] && break; sleep 0.2; n=$((n+1)); done; echo \"$first $now\""
    );
    let bin_dir = airlock_bin().parent().unwrap().to_owned();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let out = airlock(&home.path, &home.path, &["run", "--tenant", "beta", "--", "sh", "-c", &script])
        .env("PATH", path)
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "200 407", "{}", text(&out));
}
