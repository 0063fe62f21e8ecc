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
    let text = std::fs::read_to_string(home.path.join("audit.jsonl")).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
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
    assert_eq!(airlock::audit::verify(&audit), Ok(audit.lines().count()));
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
