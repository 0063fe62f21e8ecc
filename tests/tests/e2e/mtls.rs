//! Client certificates to the upstream (mutual TLS, DESIGN.md "Credentials
//! beyond a header placeholder": `client_cert = { cert, key }`), against a
//! real Python `ssl` server that demands one (`CERT_REQUIRED`) and answers
//! with the subject of the certificate it got.

use std::process::Stdio;
use std::time::Duration;

use airlock_policy::secrets::{SecretValue, Store};
use airlock_tests::*;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use tokio::io::{AsyncBufReadExt, BufReader};

const GAMMA_TOKEN: &str = "gamma-token-0123456789abcdef";
const DELTA_TOKEN: &str = "delta-token-0123456789abcdef";

/// The server: TLS 1.2 or 1.3 (as negotiated), HTTP/1.1 with keep-alive,
/// a client certificate required and verified against `client-ca.pem`.
/// `/whoami` answers the certificate's common name and which connection
/// (numbered in accept order) carried the request; `/leak` answers the text
/// of `AIRLOCK_TEST_LEAK`, as an upstream quoting what it got might.
const SERVER: &str = r#"
import http.server, json, os, ssl, sys, threading
d = sys.argv[1]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(os.path.join(d, "server.pem"), os.path.join(d, "server-key.pem"))
ctx.verify_mode = ssl.CERT_REQUIRED
ctx.load_verify_locations(os.path.join(d, "client-ca.pem"))
ctx.set_alpn_protocols(["http/1.1"])
count = [0]
lock = threading.Lock()

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def setup(self):
        super().setup()
        with lock:
            count[0] += 1
            self.conn_no = count[0]
    def do_GET(self):
        if self.path == "/leak":
            body = os.environ["AIRLOCK_TEST_LEAK"].encode()
        else:
            subject = dict(kv for rdn in self.connection.getpeercert()["subject"] for kv in rdn)
            body = json.dumps({"cn": subject.get("commonName"), "conn": self.conn_no}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    def get_request(self):
        sock, addr = self.socket.accept()
        # The handshake runs here; one that fails (no client certificate)
        # raises ssl.SSLError, an OSError the server skips.
        return ctx.wrap_socket(sock, server_side=True), addr

srv = Server(("127.0.0.1", 0), Handler)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;

/// The same server for WebSockets (the `websockets` package): each
/// message is answered with the client certificate's common name.
const WS_SERVER: &str = r#"
import json, os, ssl, sys
from websockets.sync.server import serve
d = sys.argv[1]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(os.path.join(d, "server.pem"), os.path.join(d, "server-key.pem"))
ctx.verify_mode = ssl.CERT_REQUIRED
ctx.load_verify_locations(os.path.join(d, "client-ca.pem"))

def handler(ws):
    subject = dict(kv for rdn in ws.socket.getpeercert()["subject"] for kv in rdn)
    for message in ws:
        ws.send(json.dumps({"cn": subject.get("commonName"), "echo": message}))

with serve(handler, "127.0.0.1", 0, ssl=ctx) as server:
    print(server.socket.getsockname()[1], flush=True)
    server.serve_forever()
"#;

/// A CA minted for the test, issuing the server's certificate and the
/// clients'.
pub(crate) struct Ca(pub(crate) CertifiedIssuer<'static, KeyPair>);

impl Ca {
    pub(crate) fn new(name: &str) -> Ca {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Ca(CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap())
    }

    /// A leaf's PEM chain (leaf, then this CA) and its key's PKCS#8 PEM:
    /// for TLS servers (`names` as SANs) or clients (`names[0]` as CN).
    pub(crate) fn leaf(&self, names: &[&str], purpose: ExtendedKeyUsagePurpose) -> (String, String) {
        let mut params = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.extended_key_usages = vec![purpose];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.0).unwrap();
        (format!("{}{}", cert.pem(), self.0.pem()), key.serialize_pem())
    }

    fn client(&self, cn: &str) -> (String, String) {
        self.leaf(&[cn], ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// A Python TLS server script run in the test venv, killed when dropped:
/// its directory holds `server.pem` and `server-key.pem` (a leaf for the
/// names it serves, from a fresh CA) and that CA as `ca.pem`, and it
/// writes the port it listens on to `port`.
pub(crate) struct ScriptServer {
    _child: tokio::process::Child,
    pub(crate) port: u16,
    pub(crate) dir: TempHome,
}

impl ScriptServer {
    /// Writes the TLS files for `names` and runs `script` (in
    /// `tests/python`) with `--cert server.pem --key server-key.pem
    /// --port-file PORT` and the arguments `args` adds, in its directory.
    pub(crate) async fn start(
        tag: &str,
        names: &[&str],
        script: &str,
        args: impl FnOnce(&mut tokio::process::Command),
    ) -> ScriptServer {
        let dir = ScriptServer::tls_dir(tag, names);
        let port_file = dir.path.join("port");
        let mut cmd = tokio::process::Command::new(crate::conformance::venv_python());
        cmd.arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python").join(script))
            .args(["--cert", "server.pem", "--key", "server-key.pem", "--port-file"])
            .arg(&port_file)
            .current_dir(&dir.path)
            .kill_on_drop(true);
        args(&mut cmd);
        let child = cmd.spawn().unwrap();
        assert!(wait_for(Duration::from_secs(20), || port_file.exists()).await, "{script} did not start");
        let port = std::fs::read_to_string(&port_file).unwrap().trim().parse().unwrap();
        ScriptServer { _child: child, port, dir }
    }

    /// A directory holding `server.pem`, `server-key.pem` (a leaf for
    /// `names`) and the fresh CA it is from, `ca.pem`.
    pub(crate) fn tls_dir(tag: &str, names: &[&str]) -> TempHome {
        let dir = TempHome::new(tag);
        let ca = Ca::new(&format!("airlock {tag} test CA"));
        let (chain, key) = ca.leaf(names, ExtendedKeyUsagePurpose::ServerAuth);
        std::fs::write(dir.path.join("server.pem"), chain).unwrap();
        std::fs::write(dir.path.join("server-key.pem"), key).unwrap();
        std::fs::write(dir.path.join("ca.pem"), ca.0.pem()).unwrap();
        dir
    }

    /// A server started otherwise, listening on `port`, with its files in
    /// `dir` (from [`ScriptServer::tls_dir`]).
    pub(crate) fn running(child: tokio::process::Child, port: u16, dir: TempHome) -> ScriptServer {
        ScriptServer { _child: child, port, dir }
    }

    /// The CA its certificate is from.
    pub(crate) fn ca_path(&self) -> std::path::PathBuf {
        self.dir.path.join("ca.pem")
    }

    /// `METHOD https://HOST:PORT/PATH` sent directly (not through airlock)
    /// with curl, its answer read as JSON.
    pub(crate) async fn call(&self, method: &str, host: &str, path: &str) -> serde_json::Value {
        let out = tokio::process::Command::new("curl")
            .args(["-sS", "--max-time", "20", "-X", method, "--cacert"])
            .arg(self.ca_path())
            .args(["--resolve", &format!("{host}:{}:127.0.0.1", self.port)])
            .arg(format!("https://{host}:{}{path}", self.port))
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .output()
            .await
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
    }
}

/// The Python server, killed when dropped, and where it listens.
struct MtlsServer {
    _child: tokio::process::Child,
    port: u16,
    /// Its files and the upstream CA for airlock's `upstream_ca`.
    dir: TempHome,
}

impl MtlsServer {
    /// Starts the server, accepting client certificates `client_ca`
    /// issued, `/leak` answering `leak`.
    async fn start(client_ca: &Ca, leak: &str) -> MtlsServer {
        MtlsServer::start_script(SERVER, client_ca, leak).await
    }

    /// Starts `script` (a server in Python on the files written here).
    async fn start_script(script: &str, client_ca: &Ca, leak: &str) -> MtlsServer {
        let dir = TempHome::new("mtls-upstream");
        let server_ca = Ca::new("airlock mtls test server CA");
        let (chain, key) = server_ca.leaf(&["mtls.test"], ExtendedKeyUsagePurpose::ServerAuth);
        std::fs::write(dir.path.join("server.pem"), chain).unwrap();
        std::fs::write(dir.path.join("server-key.pem"), key).unwrap();
        std::fs::write(dir.path.join("client-ca.pem"), client_ca.0.pem()).unwrap();
        std::fs::write(dir.path.join("upstream-ca.pem"), server_ca.0.pem()).unwrap();
        let mut child = tokio::process::Command::new(crate::conformance::venv_python())
            .args(["-c", script])
            .arg(&dir.path)
            .env("AIRLOCK_TEST_LEAK", leak)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let port = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await.unwrap().unwrap().unwrap();
        MtlsServer { _child: child, port: port.trim().parse().unwrap(), dir }
    }
}

/// acme's route `mtls` presents `acme_chain`/`acme_key`; gamma's route to
/// the same host and port presents its own; beta's presents none; delta's
/// names a key that is not one.
fn config(server: &MtlsServer) -> String {
    let port = server.port;
    let ca = server.dir.path.join("upstream-ca.pem");
    let route = |tenant: &str, name: &str, secret: &str, placeholder: &str, extra: &str| {
        format!(
            "[[tenants.{tenant}.routes]]\nname = \"{name}\"\nhost = \"mtls.test:{port}\"\nsecret = \"{secret}\"\n\
             placeholder = \"{placeholder}\"\n{extra}\n"
        )
    };
    let secrets: String =
        ["acme_key", "beta_key", "acme_chain", "acme_tls_key", "gamma_chain", "gamma_tls_key", "bad_key"]
            .iter()
            .map(|s| format!("[secrets.{s}]\nsource = \"store\"\n"))
            .collect();
    format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\nupstream_ca = [\"{}\"]\nresolve = {{ \"mtls.test\" = \"127.0.0.1\" }}\n\n\
         {secrets}\n[tenants.acme]\ntoken = \"{ACME_TOKEN}\"\n{}\n[tenants.beta]\ntoken = \"{BETA_TOKEN}\"\n{}\n\
         [tenants.gamma]\ntoken = \"{GAMMA_TOKEN}\"\n{}\n[tenants.delta]\ntoken = \"{DELTA_TOKEN}\"\n{}",
        ca.display(),
        route(
            "acme",
            "mtls",
            "acme_key",
            ACME_PLACEHOLDER,
            "client_cert = { cert = \"acme_chain\", key = \"acme_tls_key\" }"
        ),
        route("beta", "nocert", "beta_key", BETA_PLACEHOLDER, ""),
        route(
            "gamma",
            "mtls",
            "beta_key",
            "AIRLOCK_GAMMA_KEY",
            "client_cert = { cert = \"gamma_chain\", key = \"gamma_tls_key\" }"
        ),
        route(
            "delta",
            "mtls",
            "beta_key",
            "AIRLOCK_DELTA_KEY",
            "client_cert = { cert = \"acme_chain\", key = \"bad_key\" }"
        ),
    )
}

fn set(home: &std::path::Path, name: &str, pem: &str) {
    Store::new(home).set(name, &SecretValue::new_pem(pem.as_bytes().to_vec()).unwrap()).unwrap();
}

/// The base64 body lines of a PEM key.
fn key_lines(key: &str) -> Vec<&str> {
    key.lines().filter(|l| !l.starts_with("-----") && l.len() >= 16).collect()
}

/// `curl` through the proxy as `tenant` to `path` on the server: the
/// status line and headers, and the body.
async fn get(proxy: &TestProxy, tenant: &str, token: &str, port: u16, path: &str) -> (String, String) {
    let url = format!("https://mtls.test:{port}{path}");
    let out = proxy.curl_as(tenant, token).args(["-D", "-"]).arg(&url).output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // The proxy's answer to CONNECT comes first.
    let mut rest = text.as_str();
    loop {
        let (head, body) = rest.split_once("\r\n\r\n").unwrap_or((rest, ""));
        if !body.starts_with("HTTP/") {
            return (head.to_ascii_lowercase(), body.to_owned());
        }
        rest = body;
    }
}

/// The proxy on [`config`], its store holding the standard secrets,
/// acme's and gamma's certificates, and `bad_key`, which is no key.
async fn start_proxy(server: &MtlsServer, acme: &(String, String), gamma: &(String, String)) -> TestProxy {
    let home = TempHome::new("mtls");
    store_standard_secrets(&home.path);
    set(&home.path, "acme_chain", &acme.0);
    set(&home.path, "acme_tls_key", &acme.1);
    set(&home.path, "gamma_chain", &gamma.0);
    set(&home.path, "gamma_tls_key", &gamma.1);
    set(&home.path, "bad_key", BAD_KEY);
    let proxy = start_in(&home.path, &config(server)).await;
    TestProxy { home, proxy }
}

/// What `bad_key` holds: one line, no PEM.
const BAD_KEY: &str = "sk_this_is_not_a_pem_key_0123456789";

fn cn_and_conn(body: &str) -> (String, u64) {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    (v["cn"].as_str().unwrap().to_owned(), v["conn"].as_u64().unwrap())
}

#[tokio::test]
async fn a_route_presents_its_client_certificate_and_no_other_route_gets_its_connections() {
    let client_ca = Ca::new("airlock mtls test client CA");
    let acme = client_ca.client("acme-client");
    let gamma = client_ca.client("gamma-client");
    for (_, key) in [&acme, &gamma] {
        register_secret(key);
    }
    let leaked_line = key_lines(&acme.1)[1].to_owned();
    let server = MtlsServer::start(&client_ca, &format!("you sent: {leaked_line}\n")).await;
    let port = server.port;
    let proxy = start_proxy(&server, &acme, &gamma).await;

    // acme's route: the server saw acme's certificate.
    let (head, body) = get(&proxy, "acme", ACME_TOKEN, port, "/whoami").await;
    assert!(head.starts_with("http/1.1 200") || head.starts_with("http/2 200"), "{head}{body}");
    let (cn, first_conn) = cn_and_conn(&body);
    assert_eq!(cn, "acme-client");

    // beta's route to the same host and port, next, while acme's
    // connection idles in its pool: presented nothing, refused by the
    // server, and answered upstream_tls_failed with the reason.
    let (head, body) = get(&proxy, "beta", BETA_TOKEN, port, "/whoami").await;
    assert!(head.contains(" 502") && head.contains("x-airlock-denied: upstream_tls_failed"), "{head}{body}");
    let denial: serde_json::Value = serde_json::from_str(&body).unwrap();
    let message = denial["error"]["message"].as_str().unwrap();
    assert!(message.contains("client certificate") && message.contains("certificate_required"), "{message}");
    assert!(denial["error"]["next_step"].as_str().unwrap().contains("client certificate"), "{body}");

    // gamma's route, same host and port: its own certificate, not acme's.
    let (_, body) = get(&proxy, "gamma", GAMMA_TOKEN, port, "/whoami").await;
    assert_eq!(cn_and_conn(&body).0, "gamma-client", "{body}");
    // acme again: acme's certificate, on the connection it pooled.
    let (_, body) = get(&proxy, "acme", ACME_TOKEN, port, "/whoami").await;
    assert_eq!(cn_and_conn(&body), ("acme-client".to_owned(), first_conn), "{body}");

    // The upstream quotes a line of the key: scrubbed on its own.
    let (head, body) = get(&proxy, "acme", ACME_TOKEN, port, "/leak").await;
    assert!(head.contains(" 200"), "{head}");
    // (The body is not printed when it holds the line.)
    assert!(!body.contains(&leaked_line), "a line of the key reached the agent");
    assert!(body.contains("[REDACTED]"), "{body}");

    // Rotation: a new certificate in the vault is presented from the next
    // request on, on a new connection.
    let rotated = client_ca.client("acme-client-rotated");
    register_secret(&rotated.1);
    set(&proxy.home.path, "acme_chain", &rotated.0);
    set(&proxy.home.path, "acme_tls_key", &rotated.1);
    let (_, body) = get(&proxy, "acme", ACME_TOKEN, port, "/whoami").await;
    let (cn, conn) = cn_and_conn(&body);
    assert_eq!(cn, "acme-client-rotated", "{body}");
    assert_ne!(conn, first_conn);

    assert!(wait_for(Duration::from_secs(5), || proxy.audit_lines().len() >= 6).await);
    let lines = proxy.audit_lines();
    let acme_lines: Vec<_> = lines.iter().filter(|l| l["tenant"] == "acme").collect();
    assert!(acme_lines.iter().all(|l| l["injected"] == true && l["decision"] == "allow"), "{lines:?}");
    let audit = std::fs::read_to_string(proxy.home.path.join("audit.jsonl")).unwrap();
    let logs = captured_logs();
    for key in [&acme.1, &gamma.1, &rotated.1] {
        assert_no_secret("the audit log", &audit, &[key]);
        assert_no_secret("the proxy's log", &logs, &[key]);
        for line in key_lines(key) {
            assert!(!audit.contains(line) && !logs.contains(line), "a key line was written down");
        }
    }
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn a_key_that_is_not_one_or_cleartext_refuses_the_request_before_it_leaves() {
    let client_ca = Ca::new("airlock mtls test client CA");
    let acme = client_ca.client("acme-client");
    let gamma = client_ca.client("gamma-client");
    register_secret(&acme.1);
    register_secret(&gamma.1);
    register_secret(BAD_KEY);
    let server = MtlsServer::start(&client_ca, "").await;
    let port = server.port;
    let proxy = start_proxy(&server, &acme, &gamma).await;

    // delta's key is not a PEM key: 503 secret_unavailable, saying so
    // without the value.
    let (head, body) = get(&proxy, "delta", DELTA_TOKEN, port, "/whoami").await;
    assert!(head.contains(" 503") && head.contains("x-airlock-denied: secret_unavailable"), "{head}{body}");
    assert!(body.contains("secret 'bad_key' is not a PEM private key"), "{body}");
    assert_no_secret("the denial", &body, &[BAD_KEY]);

    // A plain http:// request under a client_cert route: no TLS, no
    // certificate to present; refused, placeholder or not.
    let out =
        proxy.curl_http().args(["-D", "-"]).arg(format!("http://mtls.test:{port}/whoami")).output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 403") && text.contains("x-airlock-denied: insecure_upstream"), "{text}");

    // `airlock check` says the same of delta's route, and nothing of the
    // others.
    let config = std::fs::read_to_string(proxy.home.path.join("airlock.toml")).unwrap();
    let policy = airlock_policy::Policy::from_toml(&config, "test", &proxy.home.path, &proxy.home.path).unwrap();
    let report = airlock::check::check(&proxy.home.path, &policy);
    for r in &report.routes {
        if r.tenant == "delta" {
            assert!(
                !r.ready && r.needs.iter().any(|n| n.contains("secret 'bad_key' is not a PEM private key")),
                "{r:?}"
            );
        } else {
            assert!(r.ready, "{r:?}");
        }
    }
    let table = report.table();
    assert_no_secret("airlock check", &table, &[BAD_KEY, &acme.1]);
    // gamma's key under acme's chain: the check says they do not match.
    set(&proxy.home.path, "acme_tls_key", &gamma.1);
    let report = airlock::check::check(&proxy.home.path, &policy);
    let acme_route = report.routes.iter().find(|r| r.tenant == "acme").unwrap();
    assert!(
        acme_route.needs.iter().any(|n| n.contains("secret 'acme_tls_key' does not belong")),
        "{:?}",
        acme_route.needs
    );
    proxy.proxy.shutdown().await;
}

/// A WebSocket handshake goes on the route's HTTP/1.1-only connections,
/// which present its certificate too; a route without one is refused.
#[tokio::test]
async fn a_websocket_presents_the_routes_client_certificate() {
    use airlock_tests::ws;
    use futures_util::SinkExt;
    let client_ca = Ca::new("airlock mtls test client CA");
    let acme = client_ca.client("acme-client");
    let gamma = client_ca.client("gamma-client");
    register_secret(&acme.1);
    register_secret(&gamma.1);
    let server = MtlsServer::start_script(WS_SERVER, &client_ca, "").await;
    let port = server.port;
    let proxy = start_proxy(&server, &acme, &gamma).await;
    let ca = proxy.ca_pem();

    let (mut socket, _) =
        ws::connect(proxy.addr(), ("acme", ACME_TOKEN), "mtls.test", port, "/", &[&ca], &[]).await.unwrap();
    socket.send(ws::tungstenite::Message::text("hello")).await.unwrap();
    let Some(ws::tungstenite::Message::Text(text)) = ws::next_data(&mut socket).await else { panic!("no answer") };
    let v: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
    assert_eq!((v["cn"].as_str(), v["echo"].as_str()), (Some("acme-client"), Some("hello")));
    drop(socket);

    match ws::connect(proxy.addr(), ("beta", BETA_TOKEN), "mtls.test", port, "/", &[&ca], &[]).await {
        Err(ws::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 502);
            assert_eq!(resp.headers()["x-airlock-denied"], "upstream_tls_failed");
        }
        other => panic!("beta's handshake went through: {:?}", other.map(|(_, r)| r.status())),
    }
    proxy.proxy.shutdown().await;
}

/// A certificate the upstream refuses (here: from a CA it does not trust)
/// is named as the route's client certificate, with a next step for the
/// operator, not blamed on the upstream.
#[tokio::test]
async fn a_refused_client_certificate_is_named_as_such() {
    let client_ca = Ca::new("airlock mtls test client CA");
    let acme = client_ca.client("acme-client");
    let stranger = Ca::new("a CA the upstream does not trust").client("gamma-client");
    register_secret(&acme.1);
    register_secret(&stranger.1);
    let server = MtlsServer::start(&client_ca, "").await;
    let proxy = start_proxy(&server, &acme, &stranger).await;
    let (head, body) = get(&proxy, "gamma", GAMMA_TOKEN, server.port, "/whoami").await;
    assert!(head.contains(" 502") && head.contains("x-airlock-denied: upstream_tls_failed"), "{head}{body}");
    assert!(body.contains("refused the client certificate airlock presented (TLS alert unknown_ca)"), "{body}");
    assert!(body.contains("client_cert"), "the next step names the route's client_cert: {body}");
    proxy.proxy.shutdown().await;
}
