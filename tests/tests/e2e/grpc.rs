//! gRPC end to end: a real grpcio client (ALPN h2, its proxy from
//! `https_proxy`) through airlock to a real grpcio server, compared call by
//! call with the same client talking to the same server directly. Every
//! kind of call (unary, both streamings, bidi interleaved), statuses in
//! trailers and trailers-only answers, metadata both ways (`-bin` too), a
//! 3 MB message, a deadline and many calls on one channel behave the same;
//! the server sees the real key while the client sees only the
//! placeholder, in messages (whose gRPC framing stays intact) and
//! metadata; a compressed message airlock cannot scan never reaches the
//! client.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use airlock_tests::*;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The grpcio peer (server and client) the tests drive.
fn peer_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python/grpc_peer.py")
}

/// The Python with grpcio that scripts/test.sh installs.
fn grpc_python() -> String {
    let python = std::env::var("AIRLOCK_TEST_PYTHON").unwrap_or_else(|_| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-venv/bin/python");
        root.display().to_string()
    });
    let ok = std::process::Command::new(&python).args(["-c", "import grpc"]).output().is_ok_and(|o| o.status.success());
    assert!(ok, "{python} lacks grpcio: run scripts/test.sh (it installs it into target/test-venv)");
    python
}

/// PEM text of DER blocks.
fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

/// A grpcio server on 127.0.0.1:0 with a certificate for `api.acme.test`
/// from its own test CA; it stops when dropped (its stdin closes).
struct GrpcServer {
    addr: SocketAddr,
    ca_path: PathBuf,
    _child: Child,
    _dir: TempHome,
}

impl Origin for GrpcServer {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
    fn ca_path(&self) -> &Path {
        &self.ca_path
    }
}

impl GrpcServer {
    /// `compression`: the server's default message compression.
    async fn start(compression: Option<&str>) -> GrpcServer {
        let dir = TempHome::new("grpc-server");
        let ca = TestCa::new("airlock grpc test CA");
        let (chain, key) = ca.leaf(&["api.acme.test"], Validity::Current);
        let chain_pem: String = chain.iter().map(|c| pem("CERTIFICATE", c)).collect();
        let (cert, key_path, ca_path) =
            (dir.path.join("cert.pem"), dir.path.join("key.pem"), dir.path.join("upstream-ca.pem"));
        std::fs::write(&cert, chain_pem).unwrap();
        std::fs::write(&key_path, pem("PRIVATE KEY", key.secret_der())).unwrap();
        std::fs::write(&ca_path, ca.pem()).unwrap();
        let mut cmd = Command::new(grpc_python());
        cmd.arg(peer_script()).arg("server").arg("--cert").arg(&cert).arg("--key").arg(&key_path);
        if let Some(c) = compression {
            cmd.args(["--compression", c]);
        }
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await.unwrap().unwrap().unwrap();
        let port: u16 = line.trim().parse().unwrap();
        GrpcServer { addr: SocketAddr::from(([127, 0, 0, 1], port)), ca_path, _child: child, _dir: dir }
    }
}

/// How the client reaches the server.
enum Via<'a> {
    /// Straight to 127.0.0.1:PORT, trusting the server's test CA.
    Direct(&'a dyn Origin),
    /// To `api.acme.test:PORT` through airlock as `tenant`, trusting
    /// airlock's CA.
    Airlock(&'a TestProxy, &'a dyn Origin, (&'a str, &'a str)),
}

/// Runs the grpcio client on `scenarios` with `auth` as its
/// `authorization` metadata; one JSON value per scenario, by name. The
/// client's whole output (stderr too) is searched for the secret on the
/// way through airlock.
async fn client(via: Via<'_>, auth: &str, compression: Option<&str>, scenarios: &[&str]) -> Vec<Value> {
    let mut cmd = Command::new(grpc_python());
    cmd.arg(peer_script()).arg("client").args(["--auth", auth]);
    if let Some(c) = compression {
        cmd.args(["--compression", c]);
    }
    for var in ["https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "grpc_proxy", "no_proxy", "NO_PROXY"] {
        cmd.env_remove(var);
    }
    cmd.args(scenarios);
    let through = matches!(via, Via::Airlock(..));
    match via {
        Via::Direct(server) => {
            cmd.args(["--target", &server.addr().to_string(), "--name-override", "api.acme.test", "--root"])
                .arg(server.ca_path());
        }
        Via::Airlock(proxy, server, (tenant, token)) => {
            cmd.args(["--target", &format!("api.acme.test:{}", server.addr().port()), "--root"])
                .arg(proxy.ca_path())
                .env("https_proxy", proxy.proxy_url(tenant, token));
        }
    }
    let out = tokio::time::timeout(Duration::from_secs(300), cmd.output()).await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if through {
        assert_no_secret("the grpc client's output", &format!("{stdout}{stderr}"), &[ACME_SECRET]);
    }
    assert!(out.status.success(), "grpc client failed: {stdout}\n{stderr}");
    let results: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(results.len(), scenarios.len(), "{stdout}\n{stderr}");
    results
}

fn placeholder_auth() -> String {
    format!("Bearer {ACME_PLACEHOLDER}")
}

fn secret_auth() -> String {
    format!("Bearer {ACME_SECRET}")
}

/// SHA-256 of `text`, hex, as the server reports what it received.
fn sha256_hex(text: &str) -> String {
    let out = std::process::Command::new(grpc_python())
        .args(["-c", "import hashlib,sys; print(hashlib.sha256(sys.argv[1].encode()).hexdigest())", text])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

const SCENARIOS: [&str; 10] = [
    "unary",
    "server_stream",
    "server_stream_fail",
    "client_stream",
    "bidi",
    "error",
    "large",
    "deadline",
    "concurrent",
    "plain",
];

#[tokio::test]
async fn every_kind_of_grpc_call_behaves_as_on_a_direct_connection() {
    let server = GrpcServer::start(None).await;
    let proxy = TestProxy::start(&standard_config(&server, "", "")).await;
    // Directly, the client holds the key; through airlock, the placeholder.
    let direct = client(Via::Direct(&server), &secret_auth(), None, &SCENARIOS).await;
    let via = Via::Airlock(&proxy, &server, ("acme", ACME_TOKEN));
    let through = client(via, &placeholder_auth(), None, &SCENARIOS).await;
    for (d, t) in direct.iter().zip(&through) {
        assert_eq!(d, t, "{} differs through airlock", d["scenario"]);
    }
    // The calls did what they should (not merely the same thing twice).
    let by_name = |name: &str| through.iter().find(|r| r["scenario"] == name).unwrap().clone();
    let unary = by_name("unary");
    assert_eq!(unary["code"], "OK");
    // The server received the real key, never the placeholder.
    assert_eq!(unary["body"]["auth_sha256"], sha256_hex(&secret_auth()).as_str());
    assert_eq!(unary["body"]["meta"]["x-client-meta-bin"], "0001ff");
    assert_eq!(unary["initial"]["x-server-initial-bin"], "00fe01");
    assert_eq!(unary["trailing"]["x-server-trailing-bin"], "ff0002");
    assert_eq!(by_name("server_stream")["messages"].as_array().unwrap().len(), 7);
    assert_eq!(by_name("server_stream")["trailing"]["x-stream-end"], "7");
    let failed = by_name("server_stream_fail");
    assert_eq!(
        (failed["code"].as_str(), failed["messages"].as_array().unwrap().len()),
        (Some("RESOURCE_EXHAUSTED"), 2)
    );
    assert_eq!(by_name("client_stream")["body"]["count"], 6);
    assert_eq!(by_name("bidi")["answers"][7], "echo:ping 7");
    let error = by_name("error");
    assert_eq!(
        (error["code"].as_str(), error["details"].as_str()),
        (Some("NOT_FOUND"), Some("thing 42 was not found"))
    );
    assert_eq!(error["trailing"]["x-error-detail-bin"], "082a");
    let large = by_name("large");
    assert_eq!(large["request_sha256_seen"], large["request_sha256"]);
    assert_eq!(large["response_len"], 3 * 1024 * 1024);
    assert_eq!(by_name("deadline")["code"], "DEADLINE_EXCEEDED");
    assert_eq!(by_name("concurrent")["count"], 64);
    // One audit record per call, each allowed and injected.
    let records = proxy.audit_lines();
    assert!(records.iter().all(|r| r["decision"] == "allow" && r["injected"] == true), "{records:?}");
    assert!(records.iter().any(|r| r["path"] == "/airlock.test.Echo/Bidi" && r["complete"] == true), "{records:?}");
    proxy.proxy.shutdown().await;
}

/// A call's deadline (`grpc-timeout`) is the agent's to set, so it never
/// stretches the operator's upstream timeouts: with 2 s limits, a unary
/// call the server answers after 4 s and a stream silent for 4 s fail
/// through airlock even with a 60 s deadline, as does a call with none.
/// The operator gives long calls room by raising the limits.
#[tokio::test]
async fn a_grpc_deadline_never_stretches_airlocks_timeouts() {
    let server = GrpcServer::start(None).await;
    let limits = "\n[limits]\nupstream_response_timeout = \"2s\"\nupstream_read_timeout = \"2s\"\n";
    let proxy = TestProxy::start(&standard_config(&server, "", limits)).await;
    let via = Via::Airlock(&proxy, &server, ("acme", ACME_TOKEN));
    let out = client(via, &placeholder_auth(), None, &["sleepy:4", "slow_stream:4", "no_deadline:Sleepy:4"]).await;
    for call in [&out[0], &out[2]] {
        assert_eq!(call["code"], "UNAVAILABLE", "{out:?}");
        assert!(call["details"].as_str().unwrap().contains("(upstream_timeout)"), "{out:?}");
    }
    assert_ne!(out[1]["code"], "OK", "{out:?}");
    assert_ne!(out[1]["messages"], serde_json::json!(["before", "after"]), "{out:?}");
    proxy.proxy.shutdown().await;

    // With limits that allow them, the same calls pass.
    let limits = "\n[limits]\nupstream_response_timeout = \"20s\"\nupstream_read_timeout = \"20s\"\n";
    let proxy = TestProxy::start(&standard_config(&server, "", limits)).await;
    let via = Via::Airlock(&proxy, &server, ("acme", ACME_TOKEN));
    let out = client(via, &placeholder_auth(), None, &["sleepy:4", "slow_stream:4"]).await;
    assert_eq!(out[0]["body"], "slept", "{out:?}");
    assert_eq!(out[1]["messages"], serde_json::json!(["before", "after"]), "{out:?}");
    proxy.proxy.shutdown().await;
}

/// A grpcio client with its default credentials, started by `airlock run`:
/// grpcio reads only `GRPC_DEFAULT_SSL_ROOTS_FILE_PATH` for its roots (not
/// `SSL_CERT_FILE`), so `run` points it at the bundle too, or every call
/// fails to verify airlock's certificate.
#[tokio::test]
async fn a_default_grpcio_client_works_under_airlock_run() {
    let server = GrpcServer::start(None).await;
    let home = TempHome::new("grpc-run");
    std::fs::write(home.path.join("airlock.toml"), standard_config(&server, "", "")).unwrap();
    store_standard_secrets(&home.path);
    let out = Command::new(airlock_bin())
        .args(["run", "--tenant", "acme", "--"])
        .arg(grpc_python())
        .arg(peer_script())
        .args(["client", "--target", &format!("api.acme.test:{}", server.addr().port()), "--auth"])
        .arg(placeholder_auth())
        .arg("unary")
        .env("AIRLOCK_HOME", &home.path)
        .env_remove("AIRLOCK_CONFIG")
        .env_remove("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH")
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_no_secret("the grpc client's output", &text, &[ACME_SECRET]);
    assert!(out.status.success(), "{text}");
    let result: Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(result["code"], "OK", "{result}");
}

#[tokio::test]
async fn a_key_the_server_echoes_reaches_the_grpc_client_as_the_placeholder() {
    let server = GrpcServer::start(None).await;
    let proxy = TestProxy::start(&standard_config(&server, "", "")).await;
    let via = Via::Airlock(&proxy, &server, ("acme", ACME_TOKEN));
    // `client` has searched the client's whole output for the key.
    let leak = client(via, &placeholder_auth(), None, &["leak"]).await.remove(0);
    assert_eq!(leak["code"], "OK", "{leak}");
    // The message: the value after a protobuf-like tag and length, which
    // stay true because the replacement keeps the key's length (the gRPC
    // length prefix too, or the client would have failed).
    let body: Vec<u8> = leak["body"].as_str().unwrap().chars().map(|c| u8::try_from(u32::from(c)).unwrap()).collect();
    let injected = secret_auth();
    let mut expected = placeholder_auth().into_bytes();
    expected.resize(injected.len(), b'*');
    assert_eq!(&body[..2], &[0x0a, u8::try_from(injected.len()).unwrap()]);
    assert_eq!(String::from_utf8_lossy(&body[2..2 + injected.len()]), String::from_utf8_lossy(&expected));
    assert_eq!(&body[2 + injected.len()..][..6], b"\x12\x03end ");
    // The server received the key itself.
    let seen: Value = serde_json::from_slice(&body[2 + injected.len() + 6..]).unwrap();
    assert_eq!(seen["auth_sha256"], sha256_hex(&injected).as_str());
    // Metadata, text and binary, initial and trailing: what the client
    // sent — in binary metadata at the key's own length, as in a message
    // (it is usually a protobuf).
    let hex = hex::encode(&expected);
    assert_eq!(leak["initial"]["x-leak-initial"], placeholder_auth().as_str());
    assert_eq!(leak["initial"]["x-leak-initial-bin"], hex.as_str());
    assert_eq!(leak["trailing"]["x-leak"], placeholder_auth().as_str());
    assert_eq!(leak["trailing"]["x-leak-bin"], hex.as_str());
    let record = proxy.audit_lines().pop().unwrap();
    assert_eq!((record["redactions"].as_u64(), &record["secret_exposed"]), (Some(5), &Value::Bool(false)), "{record}");
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn a_grpc_call_with_another_tenants_placeholder_is_refused() {
    let server = GrpcServer::start(None).await;
    let proxy = TestProxy::start(&standard_config(&server, "", "")).await;
    let via = Via::Airlock(&proxy, &server, ("acme", ACME_TOKEN));
    let refused = client(via, &format!("Bearer {BETA_PLACEHOLDER}"), None, &["plain"]).await.remove(0);
    // A gRPC status the client shows, with airlock's message and next step
    // (not the bare "Received http2 header with status: 403" a JSON denial
    // gives a gRPC client).
    assert_eq!(refused["code"], "PERMISSION_DENIED", "{refused}");
    let details = refused["details"].as_str().unwrap();
    assert!(details.starts_with("airlock refused this call (wrong_tenant): "), "{details}");
    assert!(details.contains("next step: use tenant 'acme''s own placeholders"), "{details}");
    assert_eq!(refused["trailing"]["x-airlock-denied"], "wrong_tenant");
    let record = proxy.audit_lines().pop().unwrap();
    assert_eq!((record["decision"].as_str(), record["code"].as_str()), (Some("deny"), Some("wrong_tenant")));
    proxy.proxy.shutdown().await;
}

#[tokio::test]
async fn a_server_that_compresses_answers_uncompressed_through_airlock() {
    // The server compresses every message it may, the client too: through
    // airlock the server is told the client accepts only identity, so its
    // answers can be scanned, and the calls behave as they do directly.
    let server = GrpcServer::start(Some("gzip")).await;
    let proxy = TestProxy::start(&standard_config(&server, "", "")).await;
    let scenarios = ["unary", "server_stream", "bidi", "large"];
    let direct = client(Via::Direct(&server), &secret_auth(), Some("gzip"), &scenarios).await;
    let via = Via::Airlock(&proxy, &server, ("acme", ACME_TOKEN));
    let through = client(via, &placeholder_auth(), Some("gzip"), &scenarios).await;
    for (d, t) in direct.iter().zip(&through) {
        assert_eq!(d, t, "{} differs through airlock", d["scenario"]);
    }
    let via = Via::Airlock(&proxy, &server, ("acme", ACME_TOKEN));
    let leak = client(via, &placeholder_auth(), Some("gzip"), &["leak"]).await.remove(0);
    assert_eq!(leak["code"], "OK", "{leak}");
    assert!(leak["body"].as_str().unwrap().contains(&placeholder_auth()), "{leak}");
    proxy.proxy.shutdown().await;
}

/// A gRPC upstream that compresses its answer whatever the client accepts
/// (hyper, h2 only), by the method called: `Declared` sends the injected
/// `authorization` value gzipped, flagged compressed, with `grpc-encoding:
/// gzip`; `Undeclared` the same without the header; `Snappy` names a
/// coding airlock does not decode; `Large` sends 64 KiB gzipped;
/// `AcceptEncoding` sends the `grpc-accept-encoding` it received,
/// uncompressed.
struct CompressingUpstream {
    addr: SocketAddr,
    ca_path: PathBuf,
    _dir: TempHome,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CompressingUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Origin for CompressingUpstream {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
    fn ca_path(&self) -> &Path {
        &self.ca_path
    }
}

type TestBody = http_body_util::combinators::BoxBody<bytes::Bytes, std::convert::Infallible>;

/// The compressing upstream's answer to `req`.
fn compressed_answer(req: &http::Request<hyper::body::Incoming>) -> http::Response<TestBody> {
    use http_body_util::BodyExt;
    let method = req.uri().path().rsplit('/').next().unwrap_or("");
    let header = |name: &str| req.headers().get(name).map(|v| v.as_bytes().to_vec()).unwrap_or_default();
    let (message, compressed) = match method {
        "AcceptEncoding" => (header("grpc-accept-encoding"), false),
        "Large" => (vec![b'a'; 64 * 1024], true),
        _ => (header("authorization"), true),
    };
    let packed = if compressed {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, &message).unwrap();
        gz.finish().unwrap()
    } else {
        message
    };
    let mut framed = vec![u8::from(compressed)];
    framed.extend_from_slice(&u32::try_from(packed.len()).unwrap().to_be_bytes());
    framed.extend_from_slice(&packed);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let frames = vec![Ok(http_body::Frame::data(bytes::Bytes::from(framed))), Ok(http_body::Frame::trailers(trailers))];
    let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed();
    let mut resp = http::Response::builder().header("content-type", "application/grpc");
    match method {
        "Declared" | "Large" => resp = resp.header("grpc-encoding", "gzip"),
        "Snappy" => resp = resp.header("grpc-encoding", "snappy"),
        _ => {}
    }
    resp.body(body).unwrap()
}

impl CompressingUpstream {
    async fn start() -> CompressingUpstream {
        let dir = TempHome::new("grpc-compressing");
        let ca = TestCa::new("airlock grpc compressing CA");
        let ca_path = dir.path.join("upstream-ca.pem");
        std::fs::write(&ca_path, ca.pem()).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config(&["api.acme.test"], &[b"h2"]));
        let (addr, task) = upstream::serve_tls(acceptor, |req| async move { compressed_answer(&req) }).await;
        CompressingUpstream { addr, ca_path, _dir: dir, task }
    }
}

#[tokio::test]
async fn compressed_grpc_messages_are_decoded_and_scanned_or_refused() {
    let upstream = CompressingUpstream::start().await;
    let limits = "\n[limits]\nmax_grpc_message = \"16KiB\"\n";
    let proxy = TestProxy::start(&standard_config(&upstream, "", limits)).await;
    let call = |method: &str| {
        let via = Via::Airlock(&proxy, &upstream, ("acme", ACME_TOKEN));
        let scenario = format!("method:{method}");
        async move { client(via, &placeholder_auth(), None, &[&scenario]).await.remove(0) }
    };
    // The upstream is asked for uncompressed messages (the client accepts
    // gzip and deflate too).
    let out = call("AcceptEncoding").await;
    assert_eq!((out["code"].as_str(), out["body"].as_str()), (Some("OK"), Some("identity")), "{out}");
    // gzip, declared: decoded, scanned, sent on uncompressed.
    let out = call("Declared").await;
    let mut expected = placeholder_auth();
    while expected.len() < secret_auth().len() {
        expected.push('*');
    }
    assert_eq!((out["code"].as_str(), out["body"].as_str()), (Some("OK"), Some(expected.as_str())), "{out}");
    // A coding airlock does not decode: refused before the head, as a
    // gRPC status.
    let out = call("Snappy").await;
    assert_eq!(out["code"], "UNAVAILABLE", "{out}");
    assert!(out["details"].as_str().unwrap().contains("(unredactable_body)"), "{out}");
    // Compressed without a coding, or past max_grpc_message: the call is
    // aborted (the client sees a reset stream).
    for method in ["Undeclared", "Large"] {
        let out = call(method).await;
        assert_eq!(out["code"], "INTERNAL", "{method}: {out}");
        assert!(out.get("body").is_none(), "{method}: {out}");
    }
    let records = proxy.audit_lines();
    let complete: Vec<_> = records.iter().map(|r| (r["code"].as_str(), r["complete"].as_bool())).collect();
    assert_eq!(
        complete,
        [
            (None, Some(true)),
            (None, Some(true)),
            (Some("unredactable_body"), Some(true)),
            (None, Some(false)),
            (None, Some(false))
        ]
    );
    proxy.proxy.shutdown().await;
}
