//! Credentials beyond the header placeholder (DESIGN.md, "Credentials
//! beyond a header placeholder"), through real clients: `add_headers`, a
//! second credential an API wants beside the token (Google Ads'
//! `developer-token`).

use std::time::Duration;

use airlock_policy::secrets::{SecretValue, Store};
use airlock_tests::upstream::Protocols;
use airlock_tests::*;

/// A developer token with the characters that need care in other places
/// (`/`, `+`, `=`): a header carries them as they are.
const DEV_SECRET: &str = "dev_tok/en+value=0123456789";

/// The standard config with `add_headers = { "developer-token" =
/// "dev_token" }` on acme's `echo` route, and the proxy started with that
/// secret in its store.
async fn proxy_with_developer_token(upstream: &Upstream) -> TestProxy {
    let config = standard_config(upstream, "", "")
        .replace(
            "env = \"ACME_API_KEY\"",
            "env = \"ACME_API_KEY\"\nadd_headers = { \"Developer-Token\" = \"dev_token\" }",
        )
        .replace("[secrets.beta_key]", "[secrets.dev_token]\nsource = \"store\"\n\n[secrets.beta_key]");
    start_with_secret(&config, "dev_token", DEV_SECRET).await
}

/// A proxy on `config`, with the standard secrets and `name` = `value` in
/// its store.
async fn start_with_secret(config: &str, name: &str, value: &str) -> TestProxy {
    let home = TempHome::new("credentials");
    store_standard_secrets(&home.path);
    Store::new(&home.path).set(name, &SecretValue::new(value.into()).unwrap()).unwrap();
    let proxy = start_in(&home.path, config).await;
    TestProxy { home, proxy }
}

#[tokio::test]
async fn add_headers_send_a_second_credential_beside_the_token() {
    let upstream = Upstream::start(Protocols::Both).await;
    let proxy = proxy_with_developer_token(&upstream).await;
    let url = format!("https://api.acme.test:{}/echo", upstream.port());
    let bearer = format!("Authorization: Bearer {ACME_PLACEHOLDER}");
    // curl over HTTP/1.1 and HTTP/2; the agent's own developer-token (even
    // one its Connection header names) never reaches the upstream.
    let cases: [&[&str]; 4] = [
        &["--http1.1", "-H", &bearer],
        &["--http2", "-H", &bearer, "-H", "developer-token: the-agent-made-this-up"],
        &["--http1.1", "-H", &bearer, "-H", "developer-token: x", "-H", "Connection: developer-token"],
        &["--http2", "-H", &bearer, "-H", "developer_token: folded-by-cgi-servers"],
    ];
    for args in cases {
        let out = proxy.curl().args(args).arg(&url).output().await.unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains(DEV_SECRET) && !text.contains(ACME_SECRET), "a secret reached the agent: {text}");
        assert!(text.contains("[REDACTED]"), "the echoed developer token is scrubbed: {text}");
        let seen = upstream.seen().pop().unwrap();
        assert_eq!(seen.header("developer-token"), Some(DEV_SECRET), "{args:?}");
        assert_eq!(seen.headers.iter().filter(|(n, _)| n == "developer-token").count(), 1);
        assert_eq!(seen.header("developer_token"), None, "{args:?}");
        assert_eq!(seen.header("authorization"), Some(format!("Bearer {ACME_SECRET}").as_str()));
    }
    // A request under the route without the placeholder still carries it:
    // the route, not the placeholder, is what the API's second credential
    // goes with.
    let out = proxy.curl().arg(&url).output().await.unwrap();
    assert!(out.status.success());
    assert_eq!(upstream.seen().pop().unwrap().header("developer-token"), Some(DEV_SECRET));
    // Another route of the tenant (the same upstream by IP) never gets it.
    let by_ip = format!("https://127.0.0.1:{}/echo", upstream.port());
    let out = proxy.curl().args(["-H", &format!("Authorization: Bearer {ACME_IP_PLACEHOLDER}")]).arg(&by_ip).output();
    assert!(out.await.unwrap().status.success());
    assert_eq!(upstream.seen().pop().unwrap().header("developer-token"), None);

    assert!(wait_for(Duration::from_secs(5), || proxy.audit_lines().len() >= 6).await);
    let audit = std::fs::read_to_string(proxy.home.path.join("audit.jsonl")).unwrap();
    assert_no_secret("the audit log", &audit, &[DEV_SECRET, ACME_SECRET]);
    let lines = proxy.audit_lines();
    assert_eq!(lines.iter().filter(|l| l["route"] == "echo" && l["injected"] == true).count(), 5, "{lines:?}");
    assert_logs_clean();
    assert_no_secret("the proxy's log", &captured_logs(), &[DEV_SECRET]);
    proxy.proxy.shutdown().await;
}

/// A route with `add_headers` sends a secret on every request: a plain
/// `http://` one is refused before anything is sent, placeholder or not.
#[tokio::test]
async fn add_headers_never_go_out_in_cleartext() {
    let upstream = Upstream::start(Protocols::Both).await;
    let proxy = proxy_with_developer_token(&upstream).await;
    let url = format!("http://api.acme.test:{}/echo", upstream.port());
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "20", "-D", "-", "-x"])
        .arg(proxy.proxy_url("acme", ACME_TOKEN))
        .arg(&url)
        .env_remove("http_proxy")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 403") && text.contains("x-airlock-denied: insecure_upstream"), "{text}");
    assert!(upstream.seen().is_empty());
    proxy.proxy.shutdown().await;
}

/// `airlock check` fetches an `add_headers` secret like the route's own,
/// and says when it is missing.
#[tokio::test]
async fn check_reports_a_missing_add_headers_secret() {
    let upstream = Upstream::start(Protocols::Both).await;
    let proxy = proxy_with_developer_token(&upstream).await;
    let config = std::fs::read_to_string(proxy.home.path.join("airlock.toml")).unwrap();
    proxy.proxy.shutdown().await;
    let policy = airlock_policy::Policy::from_toml(&config, "test", &proxy.home.path, &proxy.home.path).unwrap();
    let ready = airlock::check::check(&proxy.home.path, &policy);
    assert!(ready.routes.iter().all(|r| r.ready), "{:?}", ready.routes);
    Store::new(&proxy.home.path).remove("dev_token").unwrap();
    let report = airlock::check::check(&proxy.home.path, &policy);
    let echo = report.routes.iter().find(|r| r.route == "echo").unwrap();
    assert!(!echo.ready && echo.needs.iter().any(|n| n.contains("dev_token")), "{:?}", echo.needs);
    assert!(report.routes.iter().filter(|r| r.route != "echo").all(|r| r.ready));
}

/// The maps key: `/`, `+` and `=` must arrive percent-encoded in a query.
const MAPS_SECRET: &str = "mk/A+b=c_0123456789";
const MAPS_PLACEHOLDER: &str = "AIRLOCK_MAPS_KEY";

/// The standard config plus acme's route `maps` to `other.test`, whose key
/// goes in the `key` and `access_token` query parameters.
async fn proxy_with_query_route(upstream: &Upstream) -> TestProxy {
    let port = upstream.port();
    let config = standard_config(upstream, "", "")
        .replace("[secrets.beta_key]", "[secrets.maps_key]\nsource = \"store\"\n\n[secrets.beta_key]")
        .replace(
            "[tenants.beta]",
            &format!(
                "[[tenants.acme.routes]]\nname = \"maps\"\nhost = \"other.test:{port}\"\nsecret = \"maps_key\"\n\
                 placeholder = \"{MAPS_PLACEHOLDER}\"\nquery = [\"key\", \"access_token\"]\n\n[tenants.beta]"
            ),
        );
    start_with_secret(&config, "maps_key", MAPS_SECRET).await
}

#[tokio::test]
async fn query_parameters_carry_the_key_where_the_route_lists_them() {
    let upstream = Upstream::start(Protocols::Both).await;
    let proxy = proxy_with_query_route(&upstream).await;
    let base = format!("https://other.test:{}/echo", upstream.port());
    let encoded = "mk%2FA%2Bb%3Dc_0123456789";

    // python requests (HTTP/1.1), the key in `params` beside another one.
    let code = format!(
        "import requests\nr = requests.get('{base}', params={{'q': 'a b', 'key': '{MAPS_PLACEHOLDER}'}}, \
         proxies={{'https': '{}'}}, verify='{}', timeout=20)\nprint(r.status_code)\nprint(r.text)\n",
        proxy.proxy_url("acme", ACME_TOKEN),
        proxy.ca_path().display()
    );
    let out =
        tokio::process::Command::new(crate::conformance::venv_python()).args(["-c", &code]).output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.starts_with("200"), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(upstream.seen().pop().unwrap().path, format!("/echo?q=a+b&key={encoded}"));
    assert!(text.contains(&format!("key={MAPS_PLACEHOLDER}")), "the echo maps back to the placeholder: {text}");
    assert_no_secret("requests' answer", &text, &[MAPS_SECRET]);

    // curl over HTTP/2, in two listed parameters, inside a longer value.
    let url = format!("{base}?access_token=pre.{MAPS_PLACEHOLDER}&page=2&key={MAPS_PLACEHOLDER}");
    let out = proxy.curl().args(["--http2", &url]).output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(upstream.seen().pop().unwrap().path, format!("/echo?access_token=pre.{encoded}&page=2&key={encoded}"));
    assert_no_secret("curl's answer", &text, &[MAPS_SECRET]);

    // Anywhere else in the URL, or percent-encoded, it stays refused.
    let seen = upstream.seen().len();
    for target in [
        format!("/echo/{MAPS_PLACEHOLDER}"),
        format!("/echo?other={MAPS_PLACEHOLDER}"),
        format!("/echo?{MAPS_PLACEHOLDER}=1"),
        "/echo?key=AIRLOCK%5FMAPS%5FKEY".to_owned(),
        format!("/echo?key=x;other={MAPS_PLACEHOLDER}"),
    ] {
        let url = format!("https://other.test:{}{target}", upstream.port());
        let out = proxy.curl().args(["-D", "-", "-o", "/dev/null", &url]).output().await.unwrap();
        let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
        assert!(
            head.contains(" 403") && head.contains("x-airlock-denied: placeholder_host_mismatch"),
            "{target}: {head}"
        );
    }
    assert_eq!(upstream.seen().len(), seen, "a refused request reached the upstream");

    assert!(wait_for(Duration::from_secs(5), || proxy.audit_lines().len() >= 6).await);
    let audit = std::fs::read_to_string(proxy.home.path.join("audit.jsonl")).unwrap();
    assert_no_secret("the audit log", &audit, &[MAPS_SECRET]);
    let lines = proxy.audit_lines();
    assert_eq!(lines.iter().filter(|l| l["route"] == "maps" && l["injected"] == true).count(), 2, "{lines:?}");
    // The record shows the query as the agent sent it: the placeholder.
    assert!(lines.iter().any(|l| l["query"] == format!("q=a+b&key={MAPS_PLACEHOLDER}")), "{lines:?}");
    assert_no_secret("the proxy's log", &captured_logs(), &[MAPS_SECRET]);
    proxy.proxy.shutdown().await;
}
