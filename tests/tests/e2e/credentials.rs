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
    let out = proxy.curl_http().args(["-D", "-", &url]).output().await.unwrap();
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

/// A key with the characters each place writes differently: `/`, `+` and
/// `=` (percent-encoded in a form), `"` and `\` (escaped in JSON).
const BODY_SECRET: &str = "bk/A+b=c\"d\\e_0123456789";
/// `BODY_SECRET` as a form body writes it.
const BODY_SECRET_FORM: &str = "bk%2FA%2Bb%3Dc%22d%5Ce_0123456789";

/// The standard config with `body = "<kind>"` on acme's `echo` route, whose
/// key is `BODY_SECRET`.
async fn proxy_with_body_route(upstream: &Upstream, kind: &str) -> TestProxy {
    let config = standard_config(upstream, "", "")
        .replace("env = \"ACME_API_KEY\"", &format!("env = \"ACME_API_KEY\"\nbody = \"{kind}\""));
    start_with_secret(&config, "acme_key", BODY_SECRET).await
}

/// Runs `code` with the test venv's python; returns its stdout, after
/// checking it succeeded.
async fn python(code: &str) -> String {
    let out =
        tokio::process::Command::new(crate::conformance::venv_python()).args(["-c", code]).output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    text
}

/// The python prelude every body test shares: the proxy settings for
/// requests and httpx, and the URL.
fn python_prelude(proxy: &TestProxy, url: &str) -> String {
    format!(
        "import requests, httpx, json, gzip\nproxy = '{}'\nca = '{}'\nurl = '{url}'\nP = '{ACME_PLACEHOLDER}'\n\
         H = {{'x-echo-body': '1'}}\n",
        proxy.proxy_url("acme", ACME_TOKEN),
        proxy.ca_path().display()
    )
}

#[tokio::test]
async fn form_bodies_carry_the_key_where_the_route_opts_in() {
    let upstream = Upstream::start(Protocols::Both).await;
    let proxy = proxy_with_body_route(&upstream, "form").await;
    let url = format!("https://api.acme.test:{}/api/chat.postMessage", upstream.port());
    let prelude = python_prelude(&proxy, &url);
    let requests = "def post(**kw):\n    r = requests.post(url, proxies={'https': proxy}, verify=ca, timeout=30, **kw)\n    \
                    print(r.status_code, r.headers.get('x-airlock-denied'))\n    print(r.text)\n";

    // A Slack-style form post (python requests, HTTP/1.1): the token is
    // swapped percent-encoded, the length recomputed, the echo mapped back.
    let text =
        python(&format!("{prelude}{requests}post(data={{'token': P, 'channel': 'C1', 'text': 'a b&c'}}, headers=H)\n"))
            .await;
    assert!(text.starts_with("200 None"), "{text}");
    let seen = upstream.seen().pop().unwrap();
    let want = format!("token={BODY_SECRET_FORM}&channel=C1&text=a+b%26c");
    assert_eq!(String::from_utf8_lossy(&seen.body), want);
    assert_eq!(seen.header("content-length"), Some(want.len().to_string().as_str()), "exact length: {seen:?}");
    assert!(text.contains(&format!("token={ACME_PLACEHOLDER}&channel")), "the echo maps back: {text}");
    assert_no_secret("requests' answer", &text, &[BODY_SECRET, BODY_SECRET_FORM]);

    // Chunked by requests from a generator, the placeholder split across
    // chunks; a body longer than the read-ahead with it at the end, with a
    // declared length (read whole: its length recomputed) and without one
    // (streamed, re-framed chunked).
    let text = python(&format!(
        "{prelude}{requests}def parts():\n    yield b'text=hi&token=AIRLOCK_AC'\n    yield b'ME_KEY&x=' + P.encode()\n\
         post(data=parts(), headers={{'content-type': 'application/x-www-form-urlencoded'}})\n\
         long = 'pad=' + 'x' * 100000 + '&token=' + P\n\
         post(data=long, headers={{'content-type': 'application/x-www-form-urlencoded; charset=utf-8'}})\n\
         def pieces():\n    for i in range(0, len(long), 5000):\n        yield long[i:i + 5000].encode()\n\
         post(data=pieces(), headers={{'content-type': 'application/x-www-form-urlencoded'}})\n"
    ))
    .await;
    assert_eq!(text.matches("200 None").count(), 3, "{text}");
    let seen = upstream.seen();
    let chunked = &seen[seen.len() - 3];
    let want = format!("text=hi&token={BODY_SECRET_FORM}&x={BODY_SECRET_FORM}");
    assert_eq!(String::from_utf8_lossy(&chunked.body), want);
    let want = format!("pad={}&token={BODY_SECRET_FORM}", "x".repeat(100_000));
    let (sized, streamed) = (&seen[seen.len() - 2], &seen[seen.len() - 1]);
    assert!(sized.body == want.as_bytes() && streamed.body == want.as_bytes());
    assert_eq!(sized.header("content-length"), Some(want.len().to_string().as_str()), "{:?}", sized.headers);
    assert_eq!(streamed.header("content-length"), None, "unsized, it streams chunked: {:?}", streamed.headers);

    // curl over HTTP/2, the placeholder across the first 16 KiB DATA frame.
    let file = proxy.home.path.join("form-body");
    let body = format!("pad={}&token={ACME_PLACEHOLDER}&more={}", "y".repeat(16_370), "z".repeat(20_000));
    std::fs::write(&file, &body).unwrap();
    let out = proxy
        .curl()
        .args(["--http2", "-H", "content-type: application/x-www-form-urlencoded", "--data-binary"])
        .arg(format!("@{}", file.display()))
        .arg(&url)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let seen = upstream.seen().pop().unwrap();
    assert_eq!(String::from_utf8_lossy(&seen.body), body.replace(ACME_PLACEHOLDER, BODY_SECRET_FORM));

    // Where it cannot be swapped, a body holding it is refused (415) and
    // nothing reaches the upstream; the same bodies without it pass.
    let before = upstream.seen().len();
    let text = python(&format!(
        "{prelude}{requests}form = 'token=' + P\n\
         post(files={{'token': (None, P)}})\n\
         post(data=gzip.compress(form.encode()), headers={{'content-type': 'application/x-www-form-urlencoded', \
         'content-encoding': 'gzip'}})\n\
         post(data=json.dumps({{'token': P}}), headers={{'content-type': 'application/json'}})\n\
         post(data=form.encode(), headers={{'content-type': 'application/x-www-form-urlencoded', \
         'content-encoding': 'compress'}})\n\
         post(data='pad=' + 'x' * 100000 + '&token=' + P, headers={{'content-type': 'text/plain'}})\n\
         def pieces():\n    yield b'x' * 100000\n    yield b'&token=' + P.encode()\n\
         post(data=pieces(), headers={{'content-type': 'text/plain'}})\n"
    ))
    .await;
    assert_eq!(text.matches("415 unsubstitutable_body").count(), 6, "{text}");
    assert!(text.contains("multipart") && text.contains("compressed") && text.contains("application/json"), "{text}");
    // The last one was longer than the read-ahead, and unsized: its request
    // may have begun upstream, and was ended unfinished (the upstream never
    // got its body); the others never left.
    let after = upstream.seen();
    assert!(after.len() <= before + 1, "a refused body reached the upstream: {:?}", &after[before..]);
    assert!(after[before..].iter().all(|s| s.body.is_empty()), "a refused body reached the upstream");
    let text = python(&format!(
        "{prelude}{requests}post(files={{'f': ('a.txt', 'no placeholder here')}})\n\
         post(data=gzip.compress(b'token=none'), headers={{'content-type': 'application/x-www-form-urlencoded', \
         'content-encoding': 'gzip'}})\n\
         post(json={{'a': 1}})\n"
    ))
    .await;
    assert_eq!(text.matches("200 None").count(), 3, "{text}");

    assert!(wait_for(Duration::from_secs(5), || proxy.audit_lines().len() >= 14).await);
    let audit = std::fs::read_to_string(proxy.home.path.join("audit.jsonl")).unwrap();
    assert_no_secret("the audit log", &audit, &[BODY_SECRET, BODY_SECRET_FORM]);
    let lines = proxy.audit_lines();
    assert_eq!(lines.iter().filter(|l| l["injected"] == true).count(), 5, "{lines:?}");
    assert_eq!(lines.iter().filter(|l| l["code"] == "unsubstitutable_body").count(), 6, "{lines:?}");
    assert_no_secret("the proxy's log", &captured_logs(), &[BODY_SECRET, BODY_SECRET_FORM]);
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn json_bodies_carry_the_key_over_http2() {
    let upstream = Upstream::start(Protocols::Both).await;
    let proxy = proxy_with_body_route(&upstream, "json").await;
    let url = format!("https://api.acme.test:{}/v1/messages", upstream.port());
    let prelude = python_prelude(&proxy, &url);
    // httpx over HTTP/2: a JSON body, and one streamed from an iterator
    // with the placeholder split across DATA frames.
    let text = python(&format!(
        "{prelude}c = httpx.Client(http2=True, proxy=proxy, verify=ca, timeout=30)\n\
         r = c.post(url, json={{'api_key': P, 'q': 'x'}}, headers=H)\nprint(r.status_code, r.http_version)\n\
         print(r.text)\n\
         def parts():\n    yield b'{{\"api_key\": \"AIRLOCK_'\n    yield b'ACME_KEY\", \"n\": 1}}'\n\
         r = c.post(url, content=parts(), headers={{'content-type': 'application/vnd.api+json'}})\n\
         print(r.status_code, r.http_version)\n"
    ))
    .await;
    assert_eq!(text.matches("200 HTTP/2").count(), 2, "{text}");
    let seen = upstream.seen();
    for s in &seen[seen.len() - 2..] {
        let body: serde_json::Value = serde_json::from_slice(&s.body).unwrap_or_else(|e| panic!("{e}: {s:?}"));
        assert_eq!(body["api_key"], BODY_SECRET, "the key arrives JSON-escaped and whole: {s:?}");
    }
    assert!(text.contains(ACME_PLACEHOLDER), "the echo maps back: {text}");
    assert_no_secret("httpx's answer", &text, &[BODY_SECRET]);
    assert_no_secret("the proxy's log", &captured_logs(), &[BODY_SECRET]);
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn without_the_opt_in_a_placeholder_in_a_body_is_data_and_counted() {
    let upstream = Upstream::start(Protocols::Both).await;
    let proxy = TestProxy::start(&standard_config(&upstream, "", "")).await;
    let url = format!("https://api.acme.test:{}/v1/chat", upstream.port());
    // An agent quoting placeholders (its own, another route's, another
    // tenant's) in a conversation it sends to an LLM API.
    let body =
        format!("{{\"messages\": [\"use {ACME_PLACEHOLDER} and {ACME_IP_PLACEHOLDER}, not {BETA_PLACEHOLDER}\"]}}");
    let out = proxy
        .curl()
        .args(["--http2", "-H", "content-type: application/json", "--data-binary", &body, &url])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&upstream.seen().pop().unwrap().body), body, "passed unchanged");
    assert!(wait_for(Duration::from_secs(5), || !proxy.audit_lines().is_empty()).await);
    let record = proxy.audit_lines().pop().unwrap();
    assert_eq!(record["body_placeholders"], 3, "{record}");
    assert_eq!(record["injected"], false, "{record}");
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn a_body_never_carries_the_key_in_cleartext() {
    let upstream = Upstream::start(Protocols::Plain).await;
    let config =
        standard_config(&upstream, "", "").replace("env = \"ACME_API_KEY\"", "env = \"ACME_API_KEY\"\nbody = \"form\"");
    let proxy = start_with_secret(&config, "acme_key", BODY_SECRET).await;
    let url = format!("http://api.acme.test:{}/form", upstream.port());
    let head = |out: std::process::Output| String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    let plain_curl = || {
        let mut cmd = proxy.curl_http();
        cmd.args(["-D", "-", "-o", "/dev/null", "--data-binary"]);
        cmd
    };
    let out = plain_curl().arg(format!("token={ACME_PLACEHOLDER}")).arg(&url).output().await.unwrap();
    let refused = head(out);
    assert!(refused.contains(" 403") && refused.contains("x-airlock-denied: insecure_upstream"), "{refused}");
    assert!(upstream.seen().is_empty(), "the request reached the upstream");
    // A body without the placeholder is not a credential: it goes.
    let out = plain_curl().args(["text=hello", &url]).output().await;
    assert!(head(out.unwrap()).contains(" 200"));
    assert_eq!(upstream.seen().pop().unwrap().body, b"text=hello");
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn format_writes_a_bare_placeholder_as_the_api_wants_it() {
    let upstream = Upstream::start(Protocols::Both).await;
    let config = standard_config(&upstream, "", "")
        .replace("env = \"ACME_API_KEY\"", "env = \"ACME_API_KEY\"\nformat = \"Token token={secret}\"");
    let proxy = TestProxy::start(&config).await;
    let url = format!("https://api.acme.test:{}/echo", upstream.port());
    // A bare placeholder is written in the format; one inside a longer
    // value (an SDK that adds its own scheme) is swapped where it stands.
    for (sent, want) in [
        (ACME_PLACEHOLDER.to_owned(), format!("Token token={ACME_SECRET}")),
        (format!("Bearer {ACME_PLACEHOLDER}"), format!("Bearer {ACME_SECRET}")),
    ] {
        for version in ["--http1.1", "--http2"] {
            let out = proxy.curl().args([version, "-H", &format!("Authorization: {sent}"), &url]).output().await;
            let text = String::from_utf8_lossy(&out.unwrap().stdout).into_owned();
            assert_eq!(upstream.seen().pop().unwrap().header("authorization"), Some(want.as_str()));
            assert!(text.contains(&sent), "the echo maps back to what the agent sent: {text}");
            assert_no_secret("curl's answer", &text, &[ACME_SECRET]);
        }
    }
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn text_bodies_take_the_key_as_it_is() {
    let upstream = Upstream::start(Protocols::Both).await;
    let proxy = proxy_with_body_route(&upstream, "text").await;
    let url = format!("https://api.acme.test:{}/ingest", upstream.port());
    for (version, media_type) in [("--http1.1", "text/plain"), ("--http2", "application/octet-stream")] {
        let body = format!("key {ACME_PLACEHOLDER}\n");
        let out = proxy
            .curl()
            .args([version, "-H", &format!("content-type: {media_type}"), "--data-binary", &body, &url])
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let seen = upstream.seen().pop().unwrap();
        assert_eq!(String::from_utf8_lossy(&seen.body), format!("key {BODY_SECRET}\n"), "{media_type}");
    }
    proxy.proxy.shutdown().await;
}

/// A JSON body cannot carry a key that is not UTF-8: `airlock check` says
/// so, and a request that would swap it is `503 secret_unavailable`.
#[tokio::test]
async fn a_key_json_cannot_hold_is_named_by_check_and_refused() {
    let upstream = Upstream::start(Protocols::Both).await;
    let proxy = proxy_with_body_route(&upstream, "json").await;
    let config = std::fs::read_to_string(proxy.home.path.join("airlock.toml")).unwrap();
    let policy = airlock_policy::Policy::from_toml(&config, "test", &proxy.home.path, &proxy.home.path).unwrap();
    assert!(airlock::check::check(&proxy.home.path, &policy).routes.iter().all(|r| r.ready));
    let latin1 = SecretValue::new(b"k\xe9y_0123456789".to_vec()).unwrap();
    Store::new(&proxy.home.path).set("acme_key", &latin1).unwrap();
    let report = airlock::check::check(&proxy.home.path, &policy);
    let echo = report.routes.iter().find(|r| r.route == "echo").unwrap();
    assert!(!echo.ready && echo.needs.iter().any(|n| n.contains("not UTF-8")), "{:?}", echo.needs);
    let url = format!("https://api.acme.test:{}/v1", upstream.port());
    let body = format!("{{\"api_key\": \"{ACME_PLACEHOLDER}\"}}");
    let out = proxy
        .curl()
        .args(["-D", "-", "-o", "/dev/null", "-H", "content-type: application/json", "--data-binary", &body, &url])
        .output()
        .await
        .unwrap();
    let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(head.contains(" 503") && head.contains("x-airlock-denied: secret_unavailable"), "{head}");
    assert!(upstream.seen().is_empty());
    proxy.proxy.shutdown().await;
}

/// A secret too short to scrub safely (it would match ordinary text in
/// every response) is named by `airlock check`.
#[tokio::test]
async fn check_names_a_secret_too_short_to_scrub() {
    let upstream = Upstream::start(Protocols::Both).await;
    let proxy = TestProxy::start(&standard_config(&upstream, "", "")).await;
    proxy.proxy.shutdown().await;
    let home = &proxy.home.path;
    let config = std::fs::read_to_string(home.join("airlock.toml")).unwrap();
    let policy = airlock_policy::Policy::from_toml(&config, "test", home, home).unwrap();
    assert!(airlock::check::check(home, &policy).routes.iter().all(|r| r.ready));
    Store::new(home).set("acme_key", &SecretValue::new(b"a1".to_vec()).unwrap()).unwrap();
    let report = airlock::check::check(home, &policy);
    let echo = report.routes.iter().find(|r| r.route == "echo").unwrap();
    assert!(!echo.ready && echo.needs.iter().any(|n| n.contains("is 2 bytes")), "{:?}", echo.needs);
}
