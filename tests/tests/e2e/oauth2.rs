//! OAuth2 access tokens airlock mints (DESIGN.md, "Credentials beyond a
//! header placeholder"), against a token endpoint built on Authlib
//! (`tests/python/oauth_token_server.py`: Authlib's RFC 6749 grants and
//! RFC 6750 bearer tokens, which also serves a protected `/api/whoami`
//! that echoes the token it got).

use std::time::Duration;

use airlock_policy::secrets::{SecretValue, Store};
use airlock_tests::*;

use crate::mtls::ScriptServer;

const CLIENT_SECRET: &str = "cs/oauth+client=secret_0123456789";
const REFRESH_TOKEN: &str = "rt-initial-0123456789abcdef";
const PLACEHOLDER: &str = "AIRLOCK_ADS_TOKEN";

/// The Authlib token server, killed when dropped.
struct TokenServer(ScriptServer);

impl std::ops::Deref for TokenServer {
    type Target = ScriptServer;
    fn deref(&self) -> &ScriptServer {
        &self.0
    }
}

impl TokenServer {
    async fn start(expires_in: u64, rotate: bool) -> TokenServer {
        TokenServer::start_with(expires_in, rotate, false).await
    }

    /// With `service_account`, the server also writes a service-account
    /// JSON key (`sa.json`) and accepts the jwt-bearer assertions it signs.
    async fn start_with(expires_in: u64, rotate: bool, service_account: bool) -> TokenServer {
        let clients = serde_json::json!([{
            "client_id": "svc", "client_secret": CLIENT_SECRET,
            "grants": ["refresh_token", "client_credentials"], "refresh_tokens": [REFRESH_TOKEN], "scope": "ads",
        }]);
        let server = ScriptServer::start("oauth-server", &["auth.test"], "oauth_token_server.py", |cmd| {
            cmd.env("TOKEN_SERVER_CLIENTS", clients.to_string()).args(["--expires-in", &expires_in.to_string()]);
            if rotate {
                cmd.arg("--rotate-refresh-tokens");
            }
            if service_account {
                cmd.args(["--service-account-out", "sa.json", "--audience", "https://auth.test:{port}/token"]);
                cmd.args(["--github-app-key-out", "app.pem"]);
            }
        });
        TokenServer(server.await)
    }

    /// `/stats`, read directly (not through airlock).
    async fn stats(&self) -> serde_json::Value {
        self.call("GET", "/stats").await
    }

    async fn call(&self, method: &str, path: &str) -> serde_json::Value {
        self.0.call(method, "auth.test", path).await
    }
}

/// acme's route `ads` on the token server's own host (its `/api/whoami`),
/// whose token airlock mints with `grant`.
fn config(server: &TokenServer, grant: &str) -> String {
    let port = server.port;
    let parts = match grant {
        "refresh_token" => {
            "client_id = \"svc\", client_secret = \"ads_client_secret\", refresh_token = \"ads_refresh\""
        }
        "client_credentials" => "client_id = \"svc\", client_secret = \"ads_client_secret\"",
        _ => "service_account = \"ads_sa\"",
    };
    format!(
        r#"[proxy]
listen = "127.0.0.1:0"
upstream_ca = ["{ca}"]
resolve = {{ "auth.test" = "127.0.0.1" }}

[secrets.ads_client_secret]
source = "store"

[secrets.ads_refresh]
source = "store"

[secrets.ads_sa]
source = "store"

[tenants.acme]
token = "{ACME_TOKEN}"

[[tenants.acme.routes]]
name = "ads"
host = "auth.test:{port}"
placeholder = "{PLACEHOLDER}"
methods = ["GET"]
credential = {{ kind = "oauth2", grant = "{grant}", token_url = "https://auth.test:{port}/token", {parts}, scope = "ads" }}
"#,
        ca = server.ca_path().display()
    )
}

/// A proxy on `config` in `home`, its store holding the client secret and
/// the refresh token (unless already there).
async fn start(home: TempHome, config: &str) -> TestProxy {
    let store = Store::new(&home.path);
    store.set("ads_client_secret", &SecretValue::new(CLIENT_SECRET.into()).unwrap()).unwrap();
    if store.read("ads_refresh").is_err() {
        store.set("ads_refresh", &SecretValue::new(REFRESH_TOKEN.into()).unwrap()).unwrap();
    }
    let proxy = start_in(&home.path, config).await;
    TestProxy { home, proxy }
}

/// `GET /api/whoami` through the proxy with `Authorization: <auth>`: the
/// status and the body.
async fn whoami(proxy: &TestProxy, port: u16, auth: &str) -> (u16, String) {
    let out = proxy
        .curl()
        .args(["-w", "\n%{http_code}", "-H", &format!("Authorization: {auth}")])
        .arg(format!("https://auth.test:{port}/api/whoami"))
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or((&text, "0"));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

#[tokio::test]
async fn a_minted_token_reaches_the_api_and_never_the_agent() {
    let server = TokenServer::start(3600, false).await;
    let port = server.port;
    for grant in ["refresh_token", "client_credentials"] {
        let proxy = start(TempHome::new("oauth"), &config(&server, grant)).await;
        // The bare placeholder and the Bearer form both go as Bearer <token>.
        for auth in [PLACEHOLDER.to_owned(), format!("Bearer {PLACEHOLDER}")] {
            let (status, body) = whoami(&proxy, port, &auth).await;
            assert_eq!(status, 200, "{grant}: {body}");
            let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(answer["client_id"], "svc");
            // The API echoes the token it got: it comes back as the placeholder.
            assert_eq!(answer["token"], PLACEHOLDER, "{grant}: the echoed token maps back: {body}");
        }
        let stats = server.stats().await;
        assert_eq!(stats["by_grant"][grant], 1, "one mint for two requests: {stats}");
        assert!(wait_for(Duration::from_secs(5), || proxy.audit_lines().len() >= 3).await);
        let lines = proxy.audit_lines();
        assert!(lines.iter().all(|l| l["injected"] == true && l["route"] == "ads"), "{lines:?}");
        // The mint is audited too: once, to the token endpoint, under the
        // request that needed it.
        let mints: Vec<_> = lines.iter().filter(|l| l["decision"] == "mint").collect();
        assert_eq!(mints.len(), 1, "{lines:?}");
        assert_eq!((mints[0]["path"].as_str(), mints[0]["complete"].as_bool()), (Some("/token"), Some(true)));
        assert!(lines.iter().any(|l| l["decision"] == "allow" && l["request_id"] == mints[0]["request_id"]));
        let audit = std::fs::read_to_string(proxy.home.path.join("audit.jsonl")).unwrap();
        assert_no_secret("the audit log", &audit, &[CLIENT_SECRET, REFRESH_TOKEN]);
        proxy.proxy.shutdown().await;
    }
    assert_no_secret("the proxy's log", &captured_logs(), &[CLIENT_SECRET, REFRESH_TOKEN]);
}

#[tokio::test]
async fn tokens_are_renewed_before_they_expire_once_for_many_requests() {
    let server = TokenServer::start(2, false).await;
    let port = server.port;
    let proxy = start(TempHome::new("oauth"), &config(&server, "refresh_token")).await;
    for round in 1..=2 {
        // Twenty requests at once: one mint.
        let requests = (0..20).map(|_| whoami(&proxy, port, PLACEHOLDER));
        for (status, body) in futures_util::future::join_all(requests).await {
            assert_eq!(status, 200, "round {round}: {body}");
        }
        assert_eq!(server.stats().await["by_grant"]["refresh_token"], round, "round {round}");
        // The token lasts 2 s: after it, a new one (an expired one would be 401).
        tokio::time::sleep(Duration::from_millis(2100)).await;
    }
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn a_rotated_refresh_token_is_stored_and_used_after_a_restart() {
    let server = TokenServer::start(3600, true).await;
    let port = server.port;
    let config = config(&server, "refresh_token");
    let proxy = start(TempHome::new("oauth"), &config).await;
    assert_eq!(whoami(&proxy, port, PLACEHOLDER).await.0, 200);
    let stats = server.stats().await;
    let issued = stats["refresh_tokens_issued"].as_array().unwrap();
    let latest = issued.last().unwrap().as_str().unwrap().to_owned();
    assert_ne!(latest, REFRESH_TOKEN, "the server rotated it: {stats}");
    let stored = Store::new(&proxy.home.path).read("ads_refresh").unwrap();
    assert_eq!(String::from_utf8(stored).unwrap(), latest, "the rotated refresh token is in the store");
    // A new proxy on the same home (the old refresh token is revoked).
    let TestProxy { home, proxy: running } = proxy;
    running.shutdown().await;
    let proxy = start(home, &config).await;
    let (status, body) = whoami(&proxy, port, PLACEHOLDER).await;
    assert_eq!(status, 200, "after a restart: {body}");
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn a_failed_refresh_sends_nothing_and_no_stale_token() {
    let server = TokenServer::start(2, false).await;
    let port = server.port;
    let proxy = start(TempHome::new("oauth"), &config(&server, "refresh_token")).await;
    assert_eq!(whoami(&proxy, port, PLACEHOLDER).await.0, 200);
    server.call("POST", "/admin/fail?on=1").await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let before = server.stats().await["whoami"].clone();
    let (status, body) = whoami(&proxy, port, PLACEHOLDER).await;
    assert_eq!(status, 503, "{body}");
    let denial: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(denial["error"]["code"], "secret_unavailable");
    assert!(denial["error"]["message"].as_str().unwrap().contains("400 invalid_grant"), "{body}");
    assert_eq!(server.stats().await["whoami"], before, "the API saw nothing");
    assert!(
        wait_for(Duration::from_secs(5), || proxy
            .audit_lines()
            .iter()
            .any(|l| l["code"] == "secret_unavailable" && l["decision"] == "mint"))
        .await
    );
    let failed =
        proxy.audit_lines().into_iter().find(|l| l["decision"] == "mint" && l["code"] == "secret_unavailable").unwrap();
    assert!(failed["detail"].as_str().unwrap().contains("400 invalid_grant"), "{failed}");
    server.call("POST", "/admin/fail?on=0").await;
    assert_eq!(whoami(&proxy, port, PLACEHOLDER).await.0, 200, "minted again once the endpoint recovers");
    proxy.proxy.shutdown().await;
}

/// `airlock check` mints a token (and says why it cannot), naming the
/// endpoint and the provider's error code, never a value.
#[tokio::test]
async fn check_mints_a_token_or_says_why_not() {
    let server = TokenServer::start(3600, false).await;
    let config = config(&server, "refresh_token");
    let proxy = start(TempHome::new("oauth"), &config).await;
    proxy.proxy.shutdown().await;
    let home = &proxy.home.path;
    let policy = airlock_policy::Policy::from_toml(&config, "test", home, home).unwrap();
    let before = server.stats().await["by_grant"]["refresh_token"].as_u64().unwrap_or(0);
    let report = airlock::check::check(home, &policy);
    assert!(report.routes.iter().all(|r| r.ready), "{:?}", report.routes);
    assert_eq!(server.stats().await["by_grant"]["refresh_token"].as_u64().unwrap(), before + 1, "check minted one");
    Store::new(home).set("ads_refresh", &SecretValue::new(b"rt-revoked-or-mistyped".to_vec()).unwrap()).unwrap();
    let report = airlock::check::check(home, &policy);
    let ads = report.routes.iter().find(|r| r.route == "ads").unwrap();
    assert!(!ads.ready, "{ads:?}");
    assert!(ads.needs.iter().any(|n| n.contains("refused the request: 400 invalid_grant")), "{:?}", ads.needs);
    assert_no_secret(
        "check",
        &format!("{:?}", report.routes),
        &[CLIENT_SECRET, REFRESH_TOKEN, "rt-revoked-or-mistyped"],
    );
}

/// A service account (RFC 7523 jwt-bearer, as Google's service-account keys
/// are used): airlock signs the assertion with the JSON key's RSA key, and
/// the token endpoint verifies it with google-auth.
#[tokio::test]
async fn a_service_account_key_signs_its_own_assertion() {
    let server = TokenServer::start_with(3600, false, true).await;
    let port = server.port;
    let key = std::fs::read(server.dir.path.join("sa.json")).unwrap();
    let key_text = String::from_utf8(key.clone()).unwrap();
    let private_key =
        serde_json::from_str::<serde_json::Value>(&key_text).unwrap()["private_key"].as_str().unwrap().to_owned();
    let home = TempHome::new("oauth");
    Store::new(&home.path).set("ads_sa", &SecretValue::new_pem(key).unwrap()).unwrap();
    let config = config(&server, "jwt_bearer");
    let proxy = start(home, &config).await;
    let (status, body) = whoami(&proxy, port, PLACEHOLDER).await;
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["client_id"], "agent-runner@test-project.iam.gserviceaccount.com", "{body}");
    assert_eq!(answer["token"], PLACEHOLDER);
    assert_eq!(server.stats().await["issued_by_grant"]["urn:ietf:params:oauth:grant-type:jwt-bearer"], 1);
    // A key the endpoint does not know (another key id) is refused.
    let other = key_text.replace("\"private_key_id\": \"", "\"private_key_id\": \"0");
    Store::new(&proxy.home.path).set("ads_sa", &SecretValue::new_pem(other.into_bytes()).unwrap()).unwrap();
    let home = &proxy.home.path;
    let policy = airlock_policy::Policy::from_toml(&config, "test", home, home).unwrap();
    let report = airlock::check::check(home, &policy);
    let ads = report.routes.iter().find(|r| r.route == "ads").unwrap();
    assert!(ads.needs.iter().any(|n| n.contains("400 invalid_grant")), "{:?}", ads.needs);
    let lines: Vec<&str> = private_key.lines().filter(|l| l.len() > 40).collect();
    assert_no_secret("check", &format!("{:?}", report.routes), &lines);
    assert_no_secret("the proxy's log", &captured_logs(), &lines);
    proxy.proxy.shutdown().await;
}

/// A GitHub App (docs.github.com, "Generating an installation access token"):
/// airlock signs the app JWT with the app's PKCS#1 key and asks for an
/// installation token, which the API then gets; the endpoint verifies the
/// JWT with joserfc (Authlib's JOSE library).
#[tokio::test]
async fn a_github_app_mints_installation_tokens() {
    let server = TokenServer::start_with(3600, false, true).await;
    let port = server.port;
    let key = std::fs::read(server.dir.path.join("app.pem")).unwrap();
    assert!(key.starts_with(b"-----BEGIN RSA PRIVATE KEY-----"), "a PKCS#1 key, as GitHub issues them");
    let home = TempHome::new("github-app");
    Store::new(&home.path).set("app_key", &SecretValue::new_pem(key.clone()).unwrap()).unwrap();
    let config = config(&server, "refresh_token")
        .replace("[secrets.ads_sa]", "[secrets.app_key]\nsource = \"store\"\n\n[secrets.ads_sa]")
        .lines()
        .map(|l| {
            if l.starts_with("credential = ") {
                format!(
                    "credential = {{ kind = \"github_app\", app_id = 123, installation_id = 456, private_key = \"app_key\", \
                     api = \"https://auth.test:{port}\" }}"
                )
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let proxy = start(home, &config).await;
    for auth in [PLACEHOLDER.to_owned(), format!("Bearer {PLACEHOLDER}")] {
        let (status, body) = whoami(&proxy, port, &auth).await;
        assert_eq!(status, 200, "{body}");
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(answer["client_id"], "app-123");
        assert_eq!(answer["token"], PLACEHOLDER, "the echoed token maps back: {body}");
    }
    let stats = server.stats().await;
    assert_eq!(stats["issued_by_grant"]["github_app"], 1, "one token for both requests: {stats}");
    assert!(stats["errors"].get("bad_app_jwt").is_none(), "{stats}");
    let lines: Vec<String> =
        String::from_utf8(key).unwrap().lines().filter(|l| l.len() > 40).map(str::to_owned).collect();
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    assert_no_secret("the proxy's log", &captured_logs(), &lines);
    proxy.proxy.shutdown().await;
}

/// A provider that says a token lasts (nearly) forever: the token is used,
/// and airlock neither overflows its clock nor keeps it past a day.
#[tokio::test]
async fn an_absurd_expires_in_is_held_to_a_day() {
    let server = TokenServer::start(u64::MAX, false).await;
    let proxy = start(TempHome::new("oauth"), &config(&server, "refresh_token")).await;
    for _ in 0..2 {
        let (status, body) = whoami(&proxy, server.port, PLACEHOLDER).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(server.stats().await["by_grant"]["refresh_token"], 1, "kept, not minted per request");
    proxy.proxy.shutdown().await;
}

/// A hostile token endpoint: answers `/token` with the next of its scripted
/// answers, and counts what `/api/whoami` got.
const HOSTILE: &str = r#"
import http.server, json, ssl, sys, threading
d = sys.argv[1]
answers = json.load(open(d + "/answers.json"))
seen = []
lock = threading.Lock()
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def send(self, code, doc):
        body = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length") or 0))
        with lock:
            answer = answers.pop(0) if answers else {"access_token": "good-token-0123456789abcdef", "token_type": "Bearer", "expires_in": 3600}
        self.send(answer.pop("_status", 200), answer)
    def do_GET(self):
        with lock:
            seen.append(self.headers.get("authorization", ""))
            n = len(seen)
        self.send(200, {"api_calls": n})
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(d + "/server.pem", d + "/server-key.pem")
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;

/// What a token endpoint answers is checked before it is sent: a token
/// too short to scrub, of a type other than Bearer, or holding the refresh
/// token or client secret, or already expired is refused (`503`), and the
/// API gets nothing.
#[tokio::test]
async fn a_token_endpoint_cannot_have_airlock_send_a_bad_token() {
    use tokio::io::AsyncBufReadExt;
    let dir = ScriptServer::tls_dir("hostile-token", &["auth.test"]);
    let bearer =
        |token: &str, kind: &str| serde_json::json!({"access_token": token, "token_type": kind, "expires_in": 3600});
    let answers = serde_json::json!([
        bearer("a", "Bearer"),
        bearer("mac-token-0123456789abcdef", "mac"),
        bearer(REFRESH_TOKEN, "Bearer"),
        bearer(&format!("x{CLIENT_SECRET}x"), "bearer"),
        serde_json::json!({"access_token": "expired-token-0123456789abcdef", "token_type": "Bearer", "expires_in": -5}),
        serde_json::json!({"_status": 503, "error": "temporarily_unavailable"}),
    ]);
    std::fs::write(dir.path.join("answers.json"), answers.to_string()).unwrap();
    let mut child = tokio::process::Command::new(crate::conformance::venv_python())
        .args(["-c", HOSTILE])
        .arg(&dir.path)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let port: u16 = lines.next_line().await.unwrap().unwrap().trim().parse().unwrap();
    let server = TokenServer(ScriptServer::running(child, port, dir));
    let proxy = start(TempHome::new("oauth"), &config(&server, "refresh_token")).await;
    for want in [
        "shorter than 16 bytes",
        "token_type other than Bearer",
        "holds a secret it was minted from",
        "holds a secret",
        "has already expired",
        "refused the request: 503 temporarily_unavailable",
    ] {
        let (status, body) = whoami(&proxy, port, PLACEHOLDER).await;
        assert_eq!(status, 503, "{want}: {body}");
        assert!(body.contains(want), "{want}: {body}");
        let denial: serde_json::Value = serde_json::from_str(&body).unwrap();
        let next = denial["error"]["next_step"].as_str().unwrap();
        // A failing endpoint may recover; a bad answer needs the operator.
        assert_eq!(next.starts_with("retry later"), want.contains("503"), "{want}: {next}");
        assert_no_secret("the denial", &body, &[REFRESH_TOKEN, CLIENT_SECRET]);
    }
    let (status, body) = whoami(&proxy, port, PLACEHOLDER).await;
    assert_eq!((status, body.as_str()), (200, "{\"api_calls\": 1}"), "only the good token reached the API");
    proxy.proxy.shutdown().await;
}

/// Two routes minting from one refresh token would revoke each other's at
/// a provider that rotates them: the proxy says so when it loads.
#[tokio::test]
async fn two_routes_on_one_refresh_token_are_warned_of() {
    let server = TokenServer::start(3600, false).await;
    let config = config(&server, "refresh_token");
    let second = config
        .lines()
        .skip_while(|l| !l.starts_with("[[tenants.acme.routes]]"))
        .map(|l| {
            if l.starts_with("name = ") {
                "name = \"ads-copy\"".to_owned()
            } else {
                l.replace(&format!("auth.test:{}\"", server.port), "auth.test:1\"")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        .replace(PLACEHOLDER, "AIRLOCK_ADS_COPY");
    let proxy = start(TempHome::new("oauth"), &format!("{config}\n{second}\n")).await;
    assert!(captured_logs().contains("two routes mint from one refresh token"), "no warning in the log");
    proxy.proxy.shutdown().await;
}
