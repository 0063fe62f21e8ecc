//! What works direct works through airlock. Each case is one request, sent
//! by one real client (curl over HTTP/1.1 and HTTP/2, python requests and
//! httpx, node's undici) straight to the reference API
//! ([`airlock_tests::origin`]) and then through airlock; the two answers
//! must agree on status, headers, body and trailers but for the documented
//! differences (README, "What airlock changes on the wire"), which
//! [`compare`] allows one by one and nothing else.

mod protocol;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use airlock_tests::origin::Origin;
use airlock_tests::*;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tokio::process::Command;

/// The reference API and a proxy with one route to it for tenant `acme`.
struct Bench {
    origin: Origin,
    proxy: TestProxy,
}

/// Every method a route may allow; TRACE is left out on purpose (see
/// [`trace_is_policy_not_protocol`]).
const METHODS: &str = r#"methods = ["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"]"#;

impl Bench {
    async fn start() -> Bench {
        let origin = Origin::start().await;
        let config =
            standard_config(&origin, "", "").replace(r#"methods = ["GET", "HEAD", "OPTIONS", "POST"]"#, METHODS);
        let proxy = TestProxy::start(&config).await;
        Bench { origin, proxy }
    }

    fn url(&self, path: &str) -> String {
        format!("https://api.acme.test:{}{path}", self.origin.port())
    }
}

/// A real client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Client {
    Curl1,
    Curl2,
    Requests,
    Httpx,
    Undici,
    /// Go's net/http, HTTP/2 by ALPN.
    Go,
}

const ALL: [Client; 6] = [Client::Curl1, Client::Curl2, Client::Requests, Client::Httpx, Client::Undici, Client::Go];

/// Straight to the API, or through airlock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    Direct,
    Airlock,
}

/// One request.
#[derive(Clone, Debug)]
struct Req {
    method: &'static str,
    path: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
}

fn req(method: &'static str, path: &str) -> Req {
    Req { method, path: path.to_owned(), headers: Vec::new(), body: None }
}

impl Req {
    fn header(mut self, name: &str, value: &str) -> Req {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    fn body(mut self, body: Vec<u8>) -> Req {
        self.body = Some(body);
        self
    }
}

/// What a client showed of the answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Seen {
    status: u16,
    headers: BTreeMap<String, Vec<String>>,
    body: Vec<u8>,
    trailers: BTreeMap<String, Vec<String>>,
}

fn fields(pairs: impl IntoIterator<Item = (String, String)>) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (n, v) in pairs {
        out.entry(n.to_ascii_lowercase()).or_default().push(v.trim().to_owned());
    }
    out
}

fn scratch(bench: &Bench, name: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    bench.proxy.home.path.join(format!("conformance-{n}-{name}"))
}

/// Sends `req` with `client` by `via`; an error is the client's own
/// account of a failure.
async fn fetch(bench: &Bench, client: Client, via: Via, req: &Req) -> Result<Seen, String> {
    match client {
        Client::Curl1 | Client::Curl2 => curl(bench, client == Client::Curl2, via, req).await,
        Client::Requests | Client::Httpx | Client::Undici | Client::Go => script(bench, client, via, req).await,
    }
}

async fn curl(bench: &Bench, h2: bool, via: Via, req: &Req) -> Result<Seen, String> {
    require_tool("curl", "curl");
    let (head_file, body_file) = (scratch(bench, "head"), scratch(bench, "body"));
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "30", "--compressed", "--suppress-connect-headers"])
        .arg(if h2 { "--http2" } else { "--http1.1" })
        .arg("-D")
        .arg(&head_file)
        .arg("-o")
        .arg(&body_file);
    for k in
        ["HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"]
    {
        cmd.env_remove(k);
    }
    match via {
        Via::Direct => {
            cmd.arg("--cacert").arg(&bench.origin.ca_path);
            cmd.arg("--resolve").arg(format!("api.acme.test:{}:127.0.0.1", bench.origin.port()));
        }
        Via::Airlock => {
            cmd.arg("--cacert").arg(bench.proxy.ca_path());
            cmd.arg("--proxy").arg(format!("http://{}", bench.proxy.addr()));
            cmd.arg("--proxy-user").arg(format!("acme:{ACME_TOKEN}"));
        }
    }
    match req.method {
        "HEAD" => {
            cmd.arg("--head");
        }
        m => {
            cmd.args(["-X", m]);
        }
    }
    for (n, v) in &req.headers {
        cmd.arg("-H").arg(format!("{n}: {v}"));
    }
    if let Some(body) = &req.body {
        let file = scratch(bench, "upload");
        std::fs::write(&file, body).unwrap();
        cmd.arg("--data-binary").arg(format!("@{}", file.display()));
    }
    cmd.arg(bench.url(&req.path));
    let out = cmd.output().await.map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("curl {:?}: {}", out.status.code(), String::from_utf8_lossy(&out.stderr)));
    }
    let head = std::fs::read_to_string(&head_file).unwrap_or_default();
    // With --head, curl writes the head where the body would go.
    let body = if req.method == "HEAD" { Vec::new() } else { std::fs::read(&body_file).unwrap_or_default() };
    let (status, headers, trailers) = parse_curl_head(&head);
    Ok(Seen { status, headers: fields(headers), body, trailers: fields(trailers) })
}

/// Header or trailer fields, in order.
type Fields = Vec<(String, String)>;

/// Parses curl's `-D` dump: the last final (non-1xx) head, and the
/// trailer fields curl writes after it.
fn parse_curl_head(dump: &str) -> (u16, Fields, Fields) {
    let (mut status, mut headers, mut trailers) = (0u16, Vec::new(), Vec::new());
    let mut in_head = false;
    for line in dump.split("\r\n").flat_map(|l| l.split('\n')) {
        if line.starts_with("HTTP/") {
            let code = line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
            if code >= 200 {
                status = code;
                headers.clear();
                trailers.clear();
            }
            in_head = true;
        } else if line.is_empty() {
            in_head = false;
        } else if let Some((n, v)) = line.split_once(':') {
            let pair = (n.trim().to_owned(), v.trim().to_owned());
            if in_head { headers.push(pair) } else { trailers.push(pair) }
        }
    }
    (status, headers, trailers)
}

pub(crate) fn venv_python() -> String {
    std::env::var("AIRLOCK_TEST_PYTHON").unwrap_or_else(|_| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-venv/bin/python").display().to_string()
    })
}

fn node_modules() -> PathBuf {
    std::env::var_os("AIRLOCK_TEST_NODE_MODULES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-node/node_modules"))
}

/// `clients/fetch.go`, built once per test run.
fn go_fetch() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            require_tool("go", "golang-go");
            let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-go");
            std::fs::create_dir_all(&out).unwrap();
            let bin = out.join(format!("fetch-{}", std::process::id()));
            let built = std::process::Command::new("go")
                .arg("build")
                .arg("-o")
                .arg(&bin)
                .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/fetch.go"))
                .env("GOFLAGS", "-mod=mod")
                // Its caches under target/, whatever HOME is (CI may set none).
                .env("GOCACHE", out.join("cache"))
                .env("GOPATH", out.join("gopath"))
                .output()
                .unwrap();
            assert!(built.status.success(), "go build: {}", String::from_utf8_lossy(&built.stderr));
            bin
        })
        .clone()
}

/// python requests/httpx (`clients/fetch.py`), undici (`clients/fetch.mjs`)
/// or Go (`clients/fetch.go`).
async fn script(bench: &Bench, client: Client, via: Via, req: &Req) -> Result<Seen, String> {
    let (ca, proxy) = match via {
        Via::Direct => (bench.origin.ca_path.clone(), None),
        Via::Airlock => (bench.proxy.ca_path(), Some(bench.proxy.proxy_url("acme", ACME_TOKEN))),
    };
    let name = match client {
        Client::Requests => "requests",
        Client::Httpx => "httpx",
        Client::Go => "go",
        _ => "undici",
    };
    let spec = serde_json::json!({
        "client": name,
        "method": req.method,
        "url": bench.url(&req.path),
        "headers": req.headers,
        "body_b64": req.body.as_ref().map(|b| STANDARD.encode(b)),
        "ca": ca,
        "proxy": proxy,
        "resolve": {"api.acme.test": "127.0.0.1"},
    });
    let clients = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients");
    let mut cmd = if client == Client::Go {
        Command::new(go_fetch())
    } else if client == Client::Undici {
        require_tool("node", "nodejs");
        let mut c = Command::new("node");
        c.arg(clients.join("fetch.mjs")).env("AIRLOCK_TEST_NODE_MODULES", node_modules());
        c
    } else {
        let mut c = Command::new(venv_python());
        c.arg(clients.join("fetch.py"));
        c
    };
    let spec_file = scratch(bench, "spec.json");
    std::fs::write(&spec_file, spec.to_string()).unwrap();
    let out = cmd.env("FETCH_SPEC_FILE", &spec_file).output().await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let json: serde_json::Value = serde_json::from_str(text.trim())
        .map_err(|e| format!("{name} printed no result ({e}): {text}{}", String::from_utf8_lossy(&out.stderr)))?;
    if let Some(e) = json["error"].as_str() {
        return Err(format!("{name}: {e}"));
    }
    let pairs = |v: &serde_json::Value| -> Vec<(String, String)> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|p| (p[0].as_str().unwrap_or("").to_owned(), p[1].as_str().unwrap_or("").to_owned()))
            .collect()
    };
    Ok(Seen {
        status: json["status"].as_u64().unwrap_or(0) as u16,
        headers: fields(pairs(&json["headers"])),
        body: STANDARD.decode(json["body_b64"].as_str().unwrap_or("")).unwrap_or_default(),
        trailers: fields(pairs(&json["trailers"])),
    })
}

/// Response fields any two answers may differ in, airlock or not: the
/// clock, and the connection's own management (RFC 9110 §7.6.1).
const PER_CONNECTION: [&str; 5] = ["date", "connection", "keep-alive", "transfer-encoding", "proxy-connection"];

/// What differs between the direct answer and airlock's, beyond the
/// documented differences:
/// - airlock adds `x-airlock-request-id`;
/// - airlock decodes content codings (it asks upstreams for `identity`, and
///   decodes what comes anyway to scan it), so `Content-Encoding` is gone
///   from a decoded body;
/// - a body airlock streams through its redactor loses `Content-Length`
///   (it may change length) — never on a response that has no body.
fn compare(direct: &Seen, through: &Seen, method: &str) -> Vec<String> {
    let mut diffs = Vec::new();
    let (mut d, mut t) = (direct.clone(), through.clone());
    for h in PER_CONNECTION {
        d.headers.remove(h);
        t.headers.remove(h);
    }
    if t.headers.remove("x-airlock-request-id").is_none() {
        diffs.push("no x-airlock-request-id".to_owned());
    }
    let bodiless = method == "HEAD" || matches!(direct.status, 100..=199 | 204 | 205 | 304);
    if !bodiless && d.headers.contains_key("content-encoding") && !t.headers.contains_key("content-encoding") {
        d.headers.remove("content-encoding");
    }
    if !bodiless && d.headers.contains_key("content-length") && !t.headers.contains_key("content-length") {
        d.headers.remove("content-length");
    }
    if d.status != t.status {
        diffs.push(format!("status {} direct, {} through airlock", d.status, t.status));
    }
    for name in d.headers.keys().chain(t.headers.keys()).collect::<std::collections::BTreeSet<_>>() {
        let (a, b) = (d.headers.get(name), t.headers.get(name));
        if a != b {
            diffs.push(format!("header {name}: {} direct, {} through airlock", short(a), short(b)));
        }
    }
    if d.body != t.body {
        diffs.push(format!(
            "body of {} bytes direct, {} through airlock ({:?} vs {:?})",
            d.body.len(),
            t.body.len(),
            String::from_utf8_lossy(&d.body[..d.body.len().min(120)]),
            String::from_utf8_lossy(&t.body[..t.body.len().min(120)])
        ));
    }
    if d.trailers != t.trailers {
        diffs.push(format!("trailers {:?} direct, {:?} through airlock", d.trailers, t.trailers));
    }
    diffs
}

/// A field's values for a message, cut to a readable length.
fn short(values: Option<&Vec<String>>) -> String {
    let text = format!("{values:?}");
    if text.len() > 200 { format!("{}… ({} bytes)", &text[..200], text.len()) } else { text }
}

/// Runs every case with every client it names, both ways (four exchanges
/// at a time), and fails with all the differences found.
async fn conform(bench: &Bench, cases: &[(Req, &[Client])]) {
    use futures_util::StreamExt;
    let runs = cases.iter().flat_map(|(req, clients)| clients.iter().map(move |&client| (req, client)));
    let outcomes: Vec<Option<String>> = futures_util::stream::iter(runs)
        .map(|(req, client)| async move {
            let what = format!("{client:?} {} {}", req.method, req.path);
            let direct = match fetch(bench, client, Via::Direct, req).await {
                Ok(s) => s,
                Err(e) => panic!("{what} fails even direct: {e}"),
            };
            match fetch(bench, client, Via::Airlock, req).await {
                Ok(through) => {
                    let diffs = compare(&direct, &through, req.method);
                    (!diffs.is_empty()).then(|| format!("{what}:\n    {}", diffs.join("\n    ")))
                }
                Err(e) => Some(format!("{what}: direct {} but through airlock: {e}", direct.status)),
            }
        })
        .buffered(4)
        .collect()
        .await;
    let failures: Vec<String> = outcomes.into_iter().flatten().collect();
    assert!(failures.is_empty(), "{} differences from a direct connection:\n{}", failures.len(), failures.join("\n"));
}

#[tokio::test]
async fn methods_and_statuses_look_the_same_as_direct() {
    let bench = Bench::start().await;
    let upload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let mut cases: Vec<(Req, &[Client])> = vec![
        (req("GET", "/echo?q=1&r=%20x"), &ALL),
        (req("HEAD", "/length/12345"), &ALL),
        (req("GET", "/length/12345"), &ALL),
        (req("GET", "/length/0"), &ALL),
        (req("OPTIONS", "/echo"), &ALL),
        (req("POST", "/echo").header("content-type", "application/octet-stream").body(upload.clone()), &ALL),
        (req("PUT", "/echo").header("content-type", "application/json").body(b"{\"a\":1}".to_vec()), &ALL),
        (req("PATCH", "/echo").body(b"x=1".to_vec()), &ALL),
        (req("DELETE", "/echo"), &ALL),
        (req("GET", "/stream?n=64"), &ALL),
        (req("GET", "/echo").header("x-custom", "one").header("accept", "application/json"), &ALL),
    ];
    for code in [200u16, 201, 202, 204, 205, 301, 302, 404, 418, 429, 500, 503, 599] {
        cases.push((req("GET", &format!("/status/{code}")), &ALL));
    }
    cases.push((req("GET", "/status/304").header("if-none-match", "\"v1\""), &ALL));
    conform(&bench, &cases).await;
}

#[tokio::test]
async fn content_codings_decode_as_the_client_would() {
    let bench = Bench::start().await;
    // curl --compressed decodes every coding airlock does; requests and
    // httpx only the gzip and deflate families here (no brotli or
    // zstandard installed); undici's request() decodes nothing, so it
    // sees only identity.
    const CURL: &[Client] = &[Client::Curl1, Client::Curl2];
    const PYTHON_AND_CURL: &[Client] = &[Client::Curl1, Client::Curl2, Client::Requests, Client::Httpx];
    let mut cases: Vec<(Req, &[Client])> = Vec::new();
    // Go decodes `gzip` (exactly that label) when it asked for it, as it
    // does by default.
    cases.push((req("GET", "/coding/gzip"), &[Client::Go]));
    for name in ["gzip", "GZIP", "deflate", "deflate-raw"] {
        cases.push((req("GET", &format!("/coding/{name}")), PYTHON_AND_CURL));
    }
    // httpx does not decode `x-gzip` (RFC 9110 §8.4.1.3 says a recipient
    // should treat it as gzip).
    cases.push((req("GET", "/coding/x-gzip"), &[Client::Curl1, Client::Curl2, Client::Requests]));
    // Two gzip members in one body (RFC 1952 §2.2): curl stops after the
    // first with an error; urllib3 reads both.
    cases.push((req("GET", "/coding/gzip-members"), &[Client::Requests]));
    for name in ["br", "zstd", "gzip-br", "gzip-identity", "Gzip"] {
        cases.push((req("GET", &format!("/coding/{name}")), CURL));
    }
    cases.push((req("GET", "/coding/identity"), &ALL));
    // Bodiless answers labelled with a coding: nothing to decode, and the
    // labels and length stay.
    cases.push((req("HEAD", "/coding/gzip"), &ALL));
    cases.push((req("GET", "/not-modified-gzip"), &ALL));
    conform(&bench, &cases).await;
}

#[tokio::test]
async fn large_heads_and_trailers_look_the_same_as_direct() {
    let bench = Bench::start().await;
    let big = "v".repeat(40_000);
    let cases: Vec<(Req, &[Client])> = vec![
        // undici (like node's own http) caps a response head at 16 KiB.
        (req("GET", "/large-head?n=12000"), &ALL),
        (
            req("GET", "/large-head?n=40000"),
            &[Client::Curl1, Client::Curl2, Client::Requests, Client::Httpx, Client::Go],
        ),
        (
            req("GET", "/echo").header("x-big", &big),
            &[Client::Curl1, Client::Curl2, Client::Requests, Client::Undici, Client::Go],
        ),
        (req("GET", "/trailers"), &ALL),
    ];
    conform(&bench, &cases).await;
}

/// TRACE reflects the request, credential included: a route allows it
/// only when it lists it. Direct, the API answers; through airlock a route
/// that does not list it refuses it before any connection.
#[tokio::test]
async fn trace_is_policy_not_protocol() {
    let bench = Bench::start().await;
    let trace = req("TRACE", "/echo");
    let direct = fetch(&bench, Client::Curl1, Via::Direct, &trace).await.unwrap();
    assert_eq!(direct.status, 200);
    let through = fetch(&bench, Client::Curl1, Via::Airlock, &trace).await.unwrap();
    assert_eq!(through.status, 403);
    assert_eq!(through.headers.get("x-airlock-denied"), Some(&vec!["method_not_allowed".to_owned()]));
}
