//! Agents in practice: real clients started by `airlock run` (not hand-set
//! env), to a routed host with the placeholder from the route's env var.
//! The upstream sees the real key, the client sees none of it, and exit
//! codes pass through.

mod git;
mod netns;
mod node;
mod pip;

use std::process::Output;

use airlock_tests::upstream::Protocols;
use airlock_tests::*;
use tokio::process::Command;

/// A home with the standard config (listening on port 0, so `run` starts
/// its own in-process proxy) and the standard secrets.
fn home(upstream: &Upstream) -> TempHome {
    let home = TempHome::new("agents");
    std::fs::write(home.path.join("airlock.toml"), standard_config(upstream, "", "")).unwrap();
    store_standard_secrets(&home.path);
    home
}

/// `airlock run --tenant acme -- ARGV` on `home`, with nothing of the
/// test's own environment that would pick another config or bypass the
/// proxy.
fn airlock_run(home: &TempHome, argv: &[&str]) -> Command {
    let mut cmd = Command::new(airlock_bin());
    cmd.args(["run", "--tenant", "acme", "--"])
        .args(argv)
        .env("AIRLOCK_HOME", &home.path)
        .env_remove("AIRLOCK_CONFIG")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .env("RUST_LOG", "warn");
    cmd
}

async fn run(home: &TempHome, argv: &[&str]) -> Output {
    airlock_run(home, argv).output().await.unwrap()
}

/// The audit records the in-process proxies of `airlock run` wrote.
fn audit_records(home: &TempHome) -> Vec<serde_json::Value> {
    airlock_tests::audit_records(&home.path.join("audit.jsonl"))
}

/// A client's stdout and stderr together, for the secret search.
fn output_text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn check_client_output(name: &str, out: &Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{name} failed ({:?}): {stdout}{stderr}", out.status);
    assert_no_secret(&format!("{name}'s output"), &output_text(out), &[ACME_SECRET]);
    assert!(stdout.contains(&format!("Bearer {ACME_PLACEHOLDER}")), "{name}: {stdout}");
}

#[tokio::test]
async fn curl_through_airlock_run() {
    let upstream = Upstream::start(Protocols::Both).await;
    let home = home(&upstream);
    let url = format!("https://api.acme.test:{}/echo", upstream.port());
    let out =
        run(&home, &["sh", "-c", &format!("curl -sS --max-time 20 -H \"Authorization: Bearer $ACME_API_KEY\" {url}")])
            .await;
    check_client_output("curl", &out);
    assert_eq!(upstream.seen().last().unwrap().header("authorization"), Some(format!("Bearer {ACME_SECRET}").as_str()));

    // Exit codes pass through: curl -f fails with 22 on the 403 a write gets
    // on... a route that allows POST — so use DELETE.
    let out =
        run(&home, &["sh", "-c", &format!("curl -sS -f -X DELETE -H \"Authorization: Bearer $ACME_API_KEY\" {url}")])
            .await;
    assert_eq!(out.status.code(), Some(22), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&home, &["sh", "-c", "exit 42"]).await;
    assert_eq!(out.status.code(), Some(42));
    // The audit trail the in-process proxy left holds no secret.
    let audit = std::fs::read_to_string(home.path.join("audit.jsonl")).unwrap();
    assert!(!audit.contains(ACME_SECRET));
    let verified = airlock::audit::verify(&home.path.join("audit.jsonl"), None).unwrap().unwrap();
    assert_eq!(verified.records, audit.lines().count() as u64);
}

#[tokio::test]
async fn python_urllib_through_airlock_run() {
    let upstream = Upstream::start(Protocols::Both).await;
    let home = home(&upstream);
    let script = format!(
        "import os, urllib.request\n\
         req = urllib.request.Request('https://api.acme.test:{}/echo', headers={{'Authorization': 'Bearer ' + os.environ['ACME_API_KEY']}})\n\
         print(urllib.request.urlopen(req, timeout=20).read().decode())\n",
        upstream.port()
    );
    let out = run(&home, &["python3", "-c", &script]).await;
    check_client_output("python urllib", &out);
    assert_eq!(upstream.seen().last().unwrap().header("authorization"), Some(format!("Bearer {ACME_SECRET}").as_str()));
}

/// The Python with `requests` and `httpx` that scripts/test.sh installs.
fn venv_python() -> String {
    let python = std::env::var("AIRLOCK_TEST_PYTHON").unwrap_or_else(|_| {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-venv/bin/python");
        root.display().to_string()
    });
    let ok = std::process::Command::new(&python)
        .args(["-c", "import requests, httpx"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(ok, "{python} lacks requests/httpx: run scripts/test.sh (it installs them into target/test-venv)");
    python
}

#[tokio::test]
async fn python_requests_and_httpx_through_airlock_run() {
    let upstream = Upstream::start(Protocols::Both).await;
    let home = home(&upstream);
    let python = venv_python();
    let url = format!("https://api.acme.test:{}/echo", upstream.port());
    for (name, code) in [
        (
            "requests",
            format!(
                "import os, requests\nr = requests.get('{url}', headers={{'Authorization': 'Bearer ' + os.environ['ACME_API_KEY']}}, timeout=20)\nr.raise_for_status()\nprint(r.text)\n"
            ),
        ),
        (
            "httpx",
            format!(
                "import os, httpx\nr = httpx.get('{url}', headers={{'Authorization': 'Bearer ' + os.environ['ACME_API_KEY']}}, timeout=20)\nr.raise_for_status()\nprint(r.text)\n"
            ),
        ),
    ] {
        let before = upstream.seen().len();
        let out = run(&home, &[&python, "-c", &code]).await;
        check_client_output(name, &out);
        assert_eq!(upstream.seen().len(), before + 1, "{name} went through airlock to the upstream");
        assert_eq!(
            upstream.seen().last().unwrap().header("authorization"),
            Some(format!("Bearer {ACME_SECRET}").as_str())
        );
    }
}

#[tokio::test]
async fn airlock_run_uses_a_running_serve_found_by_its_health_check() {
    let upstream = Upstream::start(Protocols::Both).await;
    let home = TempHome::new("run-serve");
    // A fixed port, so `run` looks for a proxy there (port 0 means "start
    // your own").
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = standard_config(&upstream, "", "")
        .replace("listen = \"127.0.0.1:0\"", &format!("listen = \"127.0.0.1:{port}\""));
    std::fs::write(home.path.join("airlock.toml"), config).unwrap();
    store_standard_secrets(&home.path);
    let mut serve = Served::start(&home.path, "debug").await;

    // The health check: no credentials, the version, nothing audited.
    let mut stream = tokio::net::TcpStream::connect(serve.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stream, b"GET /v1/health HTTP/1.1\r\nHost: airlock\r\n\r\n")
        .await
        .unwrap();
    let (status, head, body) = airlock_tests::client::read_response_head(&mut stream).await.unwrap();
    assert_eq!(status, 200, "{head}");
    assert!(head.to_ascii_lowercase().contains(&format!("x-airlock-version: {}", env!("CARGO_PKG_VERSION"))), "{head}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["status"], "ok");

    let url = format!("https://api.acme.test:{}/echo", upstream.port());
    let out =
        run(&home, &["sh", "-c", &format!("curl -sS --max-time 20 -H \"Authorization: Bearer $ACME_API_KEY\" {url}")])
            .await;
    check_client_output("curl", &out);
    let log = serve.log();
    // The running serve carried the request (and `run` started no proxy of
    // its own), and took the probe for no refused request.
    assert_eq!(log.matches(" forwarded").count(), 1, "{log}");
    assert!(!log.contains("refused"), "{log}");
    assert!(wait_for(std::time::Duration::from_secs(5), || audit_records(&home).len() == 1).await);
    let records = audit_records(&home);
    assert_eq!((records[0]["path"].as_str(), records[0]["decision"].as_str()), (Some("/echo"), Some("allow")));
    serve.child.kill().await.unwrap();
}

/// A token with every character that means something in a URL: `run` and
/// `env` percent-encode it in the proxy URL (RFC 3986 §3.2.1), so clients
/// find the proxy and send the token back whole. Unencoded, curl read
/// `w` as the proxy's host.
#[tokio::test]
async fn proxy_urls_percent_encode_a_token_with_url_characters() {
    let upstream = Upstream::start(Protocols::Both).await;
    let token = "Pa:ss@w/rd#50%-?q=1&x+y ~[]!$'()*,;";
    let token = token.replace(' ', "_");
    let home = TempHome::new("agents-token");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = standard_config(&upstream, "", "")
        .replace(ACME_TOKEN, &token.replace('\\', "\\\\").replace('"', "\\\""))
        .replace("listen = \"127.0.0.1:0\"", &format!("listen = \"127.0.0.1:{port}\""));
    std::fs::write(home.path.join("airlock.toml"), config).unwrap();
    store_standard_secrets(&home.path);

    // `airlock env` prints a URL whose host is the proxy's, whatever the
    // token holds.
    let env = std::process::Command::new(airlock_bin())
        .args(["env", "--tenant", "acme", "--format", "dotenv"])
        .env("AIRLOCK_HOME", &home.path)
        .env_remove("AIRLOCK_CONFIG")
        .output()
        .unwrap();
    assert!(env.status.success(), "{}", String::from_utf8_lossy(&env.stderr));
    let text = String::from_utf8_lossy(&env.stdout);
    let url = text.lines().find_map(|l| l.strip_prefix("HTTPS_PROXY=")).unwrap();
    assert!(url.ends_with(&format!("@127.0.0.1:{port}")), "{url}");
    assert_eq!(url.matches('@').count(), 1, "{url}");

    // Real clients under `run` decode it and authenticate with the token.
    let target = format!("https://api.acme.test:{}/echo", upstream.port());
    let curl = format!("curl -sS --max-time 20 -H \"Authorization: Bearer $ACME_API_KEY\" {target}");
    check_client_output("curl", &run(&home, &["sh", "-c", &curl]).await);
    let code = format!(
        "import os, requests\nr = requests.get('{target}', headers={{'Authorization': 'Bearer ' + os.environ['ACME_API_KEY']}}, timeout=20)\nr.raise_for_status()\nprint(r.text)\n"
    );
    check_client_output("requests", &run(&home, &[&venv_python(), "-c", &code]).await);
    let records = audit_records(&home);
    assert!(records.iter().all(|r| r["decision"] == "allow"), "{records:?}");
    assert_eq!(records.len(), 2, "{records:?}");
}

/// The standard config without its route to `127.0.0.1`.
fn config_without_ip_route(upstream: &Upstream) -> String {
    let config = standard_config(upstream, "", "");
    let start = config.find("[[tenants.acme.routes]]\nname = \"by-ip\"").unwrap();
    let end = config[start..].find("[tenants.beta]").unwrap() + start;
    format!("{}{}", &config[..start], &config[end..])
}

/// The agent's own dev server on loopback is reached directly under `run`
/// (it was refused as `private_egress_denied`), but a loopback address a
/// route names still goes through airlock, and so does every route host a
/// user's own `NO_PROXY` names: those entries are left out, with a note.
#[tokio::test]
async fn run_keeps_loopback_direct_but_never_a_route_host() {
    let upstream = Upstream::start(Protocols::Both).await;
    let dev = Upstream::start(Protocols::Plain).await;
    let home = TempHome::new("agents-noproxy");
    std::fs::write(home.path.join("airlock.toml"), config_without_ip_route(&upstream)).unwrap();
    store_standard_secrets(&home.path);
    for url in [format!("http://127.0.0.1:{}/dev", dev.port()), format!("http://localhost:{}/dev", dev.port())] {
        let out = run(&home, &["curl", "-sS", "-f", "--max-time", "20", &url]).await;
        assert!(out.status.success(), "{url}: {}", output_text(&out));
    }
    assert_eq!(dev.seen().len(), 2);
    assert!(audit_records(&home).is_empty(), "loopback went through airlock: {:?}", audit_records(&home));

    // A user's NO_PROXY naming a route host (directly, by a parent domain,
    // or by `*`) loses those entries; the rest are kept.
    let target = format!("https://api.acme.test:{}/echo", upstream.port());
    let curl = format!(
        "echo \"no_proxy=$no_proxy\"; echo \"no_grpc_proxy=$no_grpc_proxy\"; echo \"grpc_proxy=$grpc_proxy\"; \
         curl -sS --max-time 20 -H \"Authorization: Bearer $ACME_API_KEY\" {target}"
    );
    // Read as loosely as any client reads them: a bare suffix, a leading
    // `*` on any entry, port 0 for any port, spaces between entries.
    // httpx's mount patterns, a bare suffix of `host:port` (older
    // requests), and separators some client trims or splits on.
    let port_digit = upstream.port().to_string().split_off(upstream.port().to_string().len() - 1);
    let inherited_lists = [
        "api.acme.test".to_owned(),
        ".acme.test,example.org".to_owned(),
        "*".to_owned(),
        "ACME.test:443".to_owned(),
        "*cme.test".to_owned(),
        "cme.test".to_owned(),
        "api.acme.test:0".to_owned(),
        "example.org api.acme.test".to_owned(),
        "https://,example.org".to_owned(),
        "all://*cme.test".to_owned(),
        port_digit,
        "example.org,other\u{feff}api.acme.test".to_owned(),
        "example.org,\u{1c}api.acme.test".to_owned(),
        "example.org,api.acme.test/".to_owned(),
    ];
    for (i, inherited) in inherited_lists.iter().enumerate() {
        // grpcio reads no_grpc_proxy (and grpc_proxy) before the others.
        let var = if i % 2 == 0 { "NO_PROXY" } else { "no_grpc_proxy" };
        let out = airlock_run(&home, &["sh", "-c", &curl])
            .env(var, inherited)
            .env("grpc_proxy", "http://127.0.0.1:9")
            .output()
            .await
            .unwrap();
        check_client_output(&format!("curl with NO_PROXY={inherited}"), &out);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("out of NO_PROXY"), "{inherited:?}: {stderr}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout.lines().find(|l| l.starts_with("no_proxy=")).unwrap();
        let grpc_line = stdout.lines().find(|l| l.starts_with("no_grpc_proxy=")).unwrap();
        assert_eq!(grpc_line.strip_prefix("no_grpc_proxy="), line.strip_prefix("no_proxy="), "{inherited:?}");
        let grpc_proxy = stdout.lines().find_map(|l| l.strip_prefix("grpc_proxy=")).unwrap();
        assert!(grpc_proxy.starts_with("http://acme:") && !grpc_proxy.ends_with(":9"), "{grpc_proxy}");
        assert!(!line.contains("cme.test") && !line.contains('*') && !line.contains("://"), "{inherited:?}: {line}");
        assert!(line.is_ascii(), "{inherited:?}: {line:?}");
        assert_eq!(line.contains("example.org"), inherited.contains("example.org"), "{line}");
    }
    assert_eq!(upstream.seen().len(), inherited_lists.len());

    // With a route to 127.0.0.1, that address is not bypassed: requests
    // to it are airlock's to decide.
    let home = self::home(&upstream);
    let out = run(&home, &["sh", "-c", "echo \"$NO_PROXY\""]).await;
    let no_proxy = String::from_utf8_lossy(&out.stdout);
    assert_eq!(no_proxy.trim(), "localhost,::1");
}
