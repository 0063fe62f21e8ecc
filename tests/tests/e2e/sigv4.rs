//! AWS SigV4 re-signing (an `aws_sigv4` credential): agents sign with the
//! route's placeholder as their access key id and a dummy secret key;
//! airlock signs again with the real keys and session token. The upstream
//! (`tests/python/sigv4_server.py`) checks every signature with botocore's
//! own signer, every signed chunk and trailer in the chain, and every
//! payload hash, and keeps objects like S3 for boto3 to upload and
//! download.

use std::path::Path;
use std::time::Duration;

use airlock_policy::secrets::{SecretValue, Store};
use airlock_tests::*;
use serde_json::Value;

use crate::mtls::ScriptServer;

const ACCESS_KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET_ACCESS_KEY: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const SESSION_TOKEN: &str = "FwoGZXIvYXdzEXAMPLE/session+token=0123456789";
const S3_PLACEHOLDER: &str = "AIRLOCK_AWS_S3";
const STS_PLACEHOLDER: &str = "AIRLOCK_AWS_STS";
const REGION: &str = "eu-west-1";

fn secrets() -> [&'static str; 3] {
    [ACCESS_KEY_ID, SECRET_ACCESS_KEY, SESSION_TOKEN]
}

/// The verifying upstream, killed when dropped.
struct AwsServer(ScriptServer);

impl std::ops::Deref for AwsServer {
    type Target = ScriptServer;
    fn deref(&self) -> &ScriptServer {
        &self.0
    }
}

impl AwsServer {
    async fn start() -> AwsServer {
        let (s3, sts) = (format!("s3.{REGION}.amazonaws.com"), format!("sts.{REGION}.amazonaws.com"));
        let names = [s3.as_str(), sts.as_str()];
        let server = ScriptServer::start("sigv4-server", &names, "sigv4_server.py", |cmd| {
            cmd.args(["--access-key-id", ACCESS_KEY_ID, "--secret-access-key", SECRET_ACCESS_KEY]).args([
                "--session-token",
                SESSION_TOKEN,
                "--region",
                REGION,
            ]);
        });
        AwsServer(server.await)
    }

    fn endpoint(&self, service: &str) -> String {
        format!("https://{service}.{REGION}.amazonaws.com:{}", self.port)
    }

    /// `/__stats`, read directly (not through airlock).
    async fn stats(&self) -> Value {
        self.call("GET", &format!("s3.{REGION}.amazonaws.com"), "/__stats").await
    }
}

fn script(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python").join(name)
}

/// acme's two routes that sign: S3 and STS in eu-west-1, on the server.
fn config(server: &AwsServer) -> String {
    let port = server.port;
    format!(
        r#"[proxy]
listen = "127.0.0.1:0"
upstream_ca = ["{ca}"]
resolve = {{ "s3.{REGION}.amazonaws.com" = "127.0.0.1", "sts.{REGION}.amazonaws.com" = "127.0.0.1" }}

[secrets.aws_id]
source = "store"

[secrets.aws_key]
source = "store"

[secrets.aws_token]
source = "store"

[tenants.acme]
token = "{ACME_TOKEN}"

[[tenants.acme.routes]]
name = "s3"
host = "s3.{REGION}.amazonaws.com:{port}"
placeholder = "{S3_PLACEHOLDER}"
methods = ["GET", "HEAD", "PUT"]
credential = {{ kind = "aws_sigv4", access_key_id = "aws_id", secret_access_key = "aws_key", session_token = "aws_token", region = "{REGION}", service = "s3" }}

[[tenants.acme.routes]]
name = "sts"
host = "sts.{REGION}.amazonaws.com:{port}"
placeholder = "{STS_PLACEHOLDER}"
methods = ["GET", "POST"]
credential = {{ kind = "aws_sigv4", access_key_id = "aws_id", secret_access_key = "aws_key", session_token = "aws_token", region = "{REGION}", service = "sts" }}
"#,
        ca = server.ca_path().display()
    )
}

fn store_keys(home: &Path) {
    let store = Store::new(home);
    for (name, value) in ["aws_id", "aws_key", "aws_token"].into_iter().zip(secrets()) {
        store.set(name, &SecretValue::new(value.into()).unwrap()).unwrap();
    }
}

/// A home with [`config`] and the keys stored.
fn home_for(server: &AwsServer, tag: &str) -> TempHome {
    let home = TempHome::new(tag);
    std::fs::write(home.path.join("airlock.toml"), config(server)).unwrap();
    store_keys(&home.path);
    home
}

async fn start(server: &AwsServer) -> TestProxy {
    let home = home_for(server, "sigv4");
    let proxy = start_in(&home.path, &config(server)).await;
    TestProxy { home, proxy }
}

/// One request the agent signs (`sigv4_agent.py raw KIND`) through the
/// proxy: its status and body.
async fn agent(proxy: &TestProxy, server: &AwsServer, kind: &str, scope: (&str, &str, &str)) -> (u16, String) {
    let (service, region, key) = scope;
    let host = if service == "sts" { "sts" } else { "s3" };
    // `KIND PATH` sends KIND to PATH.
    let (kind, path) = kind.split_once(' ').map_or((kind, None), |(k, p)| (k, Some(p)));
    let mut cmd = tokio::process::Command::new(crate::conformance::venv_python());
    cmd.arg(script("sigv4_agent.py")).args([
        "raw",
        kind,
        "--endpoint",
        &server.endpoint(host),
        "--region",
        region,
        "--service",
        service,
    ]);
    if let Some(path) = path {
        cmd.args(["--path", path]);
    }
    let out = cmd
        .args(["--access-key-id", key, "--proxy", &proxy.proxy_url("acme", ACME_TOKEN), "--ca"])
        .arg(proxy.ca_path())
        .output()
        .await
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{kind}: {text}");
    assert_no_secret(&format!("the agent's output ({kind})"), &text, &secrets());
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    (answer["status"].as_u64().unwrap() as u16, answer["body"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn every_payload_kind_is_signed_again_and_verified_by_botocore() {
    let server = AwsServer::start().await;
    let proxy = start(&server).await;
    let s3 = ("s3", REGION, S3_PLACEHOLDER);
    // get-bare: S3 wants x-amz-content-sha256, which this agent does not
    // send: airlock adds it.
    for kind in ["get", "get-bare", "put-hashed", "put-unsigned", "put-chunks", "put-chunks-trailer"] {
        let (status, body) = agent(&proxy, &server, kind, s3).await;
        assert_eq!(status, 200, "{kind}: {body}; server: {}", server.stats().await);
    }
    // STS takes the payload's hash in the signature only: airlock hashes
    // the body.
    let (status, body) = agent(&proxy, &server, "post", ("sts", REGION, STS_PLACEHOLDER)).await;
    assert_eq!(status, 200, "post: {body}; server: {}", server.stats().await);
    let echo: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["payload"], "hashed by the service");
    // The Authorization the API echoes names the placeholder again.
    let auth = echo["authorization"].as_str().unwrap();
    assert!(auth.contains(&format!("Credential={STS_PLACEHOLDER}/")), "{auth}");
    assert!(echo["signed_headers"].as_array().unwrap().contains(&Value::from("x-amz-security-token")), "{echo}");
    let stats = server.stats().await;
    assert_eq!((stats["verified"].as_u64(), stats["refused"].as_u64()), (Some(7), Some(0)), "{stats}");
    for kind in [
        "UNSIGNED-PAYLOAD",
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
        "hashed by the service",
    ] {
        assert!(stats["payloads"][kind].as_u64() >= Some(1), "{kind}: {stats}");
    }
    assert!(wait_for(Duration::from_secs(5), || proxy.audit_lines().len() >= 7).await);
    let lines = proxy.audit_lines();
    assert!(lines.iter().all(|l| l["decision"] == "allow" && l["injected"] == true), "{lines:?}");
    let audit = std::fs::read_to_string(proxy.home.path.join("audit.jsonl")).unwrap();
    assert_no_secret("the audit log", &audit, &secrets());
    proxy.proxy.shutdown().await;
    assert_no_secret("the proxy's log", &captured_logs(), &secrets());
}

#[tokio::test]
async fn another_scope_a_presigned_url_and_another_routes_key_are_refused_before_the_upstream() {
    let server = AwsServer::start().await;
    let proxy = start(&server).await;
    let cases = [
        ("get", ("s3", "us-east-1", S3_PLACEHOLDER), 403, "credential_scope_mismatch"),
        ("get", ("sqs", REGION, S3_PLACEHOLDER), 403, "credential_scope_mismatch"),
        ("presigned", ("s3", REGION, S3_PLACEHOLDER), 403, "presigned_url_refused"),
        // The STS route's key id on the S3 host.
        ("get", ("s3", REGION, STS_PLACEHOLDER), 403, "placeholder_host_mismatch"),
        // STS actions that answer with new keys the agent would hold.
        ("post-GetSessionToken", ("sts", REGION, STS_PLACEHOLDER), 403, "method_not_allowed"),
        ("post-AssumeRole", ("sts", REGION, STS_PLACEHOLDER), 403, "method_not_allowed"),
        // The Query API's GET, no body at all.
        (
            "get /?Action=GetSessionToken&Version=2011-06-15",
            ("sts", REGION, STS_PLACEHOLDER),
            403,
            "method_not_allowed",
        ),
    ];
    for (kind, scope, status, code) in cases {
        let (got, body) = agent(&proxy, &server, kind, scope).await;
        assert_eq!(got, status, "{kind} {scope:?}: {body}");
        // An AWS error document, as SDKs read one.
        assert!(body.contains(&format!("<Error><Type>Sender</Type><Code>{code}</Code><Message>")), "{kind}: {body}");
        assert!(body.contains(" Next step: "), "{kind}: {body}");
    }
    let stats = server.stats().await;
    assert_eq!((stats["verified"].as_u64(), stats["refused"].as_u64()), (Some(0), Some(0)), "{stats}");
    proxy.proxy.shutdown().await;
}

/// boto3's S3 client with its default credential chain, started by
/// `airlock run`, which gives it the placeholder keys and the region:
/// `put_object`, `upload_fileobj` (its aws-chunked body with a CRC32
/// trailer) and `get_object` of both.
#[tokio::test]
async fn boto3_under_airlock_run_uploads_and_downloads_with_placeholder_keys() {
    let server = AwsServer::start().await;
    let home = home_for(&server, "sigv4-run");
    // boto3 (`sigv4_agent.py boto3 ARGS`) under `airlock run`, with no AWS
    // config or credentials file of this machine's.
    let endpoint = server.endpoint("s3");
    let boto3 = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new(airlock_bin());
        cmd.args(["run", "--tenant", "acme", "--"])
            .arg(crate::conformance::venv_python())
            .arg(script("sigv4_agent.py"))
            .args(["boto3", "--endpoint", &endpoint])
            .args(args)
            .env("AIRLOCK_HOME", &home.path)
            .env_remove("AIRLOCK_CONFIG")
            .env("AWS_CONFIG_FILE", "/nonexistent")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
            .env("RUST_LOG", "warn");
        cmd
    };
    let out = boto3(&[]).env("AWS_SESSION_TOKEN", "inherited-token-the-agent-must-not-get").output().await.unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_no_secret("boto3's output", &text, &secrets());
    assert!(out.status.success(), "{text}; server: {}", server.stats().await);
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((result["small"].as_bool(), result["large"].as_bool()), (Some(true), Some(true)), "{result}");
    let stats = server.stats().await;
    assert!(stats["verified"].as_u64() >= Some(4), "{stats}");
    assert_eq!(stats["refused"], 0, "{stats}");
    // Signed for another region: boto3 shows airlock's code and next step.
    let out = boto3(&["--region", "us-east-1"]).output().await.unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    let refusal: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((refusal["status"].as_u64(), refusal["code"].as_str()), (Some(403), Some("credential_scope_mismatch")));
    assert!(refusal["said"].as_str().unwrap().contains("set AWS_REGION=eu-west-1"), "{refusal}");
}

/// curl's own SigV4 signer (`--aws-sigv4`), over HTTP/1.1 and HTTP/2: a
/// GET and a PUT of a file (curl sends its hash in x-amz-content-sha256).
#[tokio::test]
async fn curls_own_signer_works_over_http1_and_http2() {
    let server = AwsServer::start().await;
    let proxy = start(&server).await;
    let file = proxy.home.path.join("upload.bin");
    std::fs::write(&file, (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect::<Vec<_>>()).unwrap();
    for version in ["--http1.1", "--http2"] {
        for put in [false, true] {
            let mut cmd = proxy.curl();
            cmd.args([version, "-w", "\n%{http_code} %{http_version}", "--aws-sigv4", &format!("aws:amz:{REGION}:s3")])
                .args(["-u", &format!("{S3_PLACEHOLDER}:any-secret-key")]);
            if put {
                cmd.arg("-T").arg(&file);
            }
            let url =
                format!("{}/{}", server.endpoint("s3"), if put { "bucket/curl.bin" } else { "echo/curl?a=b%20c" });
            let out = cmd.arg(url).output().await.unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            assert_no_secret("curl's output", &text, &secrets());
            let (body, status) = text.rsplit_once('\n').unwrap();
            assert!(status.starts_with("200 "), "{version} put={put}: {text}; server: {}", server.stats().await);
            if version == "--http2" {
                assert!(status.ends_with(" 2"), "curl spoke HTTP/2 to airlock: {status}");
            }
            if !put {
                let echo: Value = serde_json::from_str(body).unwrap();
                assert!(echo["authorization"].as_str().unwrap().contains(S3_PLACEHOLDER), "{echo}");
            }
        }
    }
    let stats = server.stats().await;
    assert_eq!((stats["verified"].as_u64(), stats["refused"].as_u64()), (Some(4), Some(0)), "{stats}");
    proxy.proxy.shutdown().await;
}

/// `airlock check` says a route that signs is ready when its keys can
/// sign, and names the secret (never its value) when one cannot.
#[tokio::test]
async fn airlock_check_tests_the_signing_keys() {
    let server = AwsServer::start().await;
    let home = home_for(&server, "sigv4-check");
    let check = |home: &TempHome| {
        std::process::Command::new(airlock_bin())
            .arg("check")
            .env("AIRLOCK_HOME", &home.path)
            .env_remove("AIRLOCK_CONFIG")
            .output()
            .unwrap()
    };
    let out = check(&home);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    let bad_id = "AKIA/NOT+AN=ID";
    Store::new(&home.path).set("aws_id", &SecretValue::new(bad_id.into()).unwrap()).unwrap();
    let out = check(&home);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("secret 'aws_id' is not an AWS access key id"), "{text}");
    assert_no_secret("airlock check's output", &text, &[bad_id, SECRET_ACCESS_KEY, SESSION_TOKEN]);
}

/// S3's `SignatureDoesNotMatch` error quotes the access key id and the
/// canonical request — which holds the session token — as text and as its
/// bytes in spaced hex: every one comes back scrubbed.
#[tokio::test]
async fn s3s_error_quoting_the_canonical_request_comes_back_scrubbed() {
    let server = AwsServer::start().await;
    let proxy = start(&server).await;
    let out = tokio::process::Command::new(crate::conformance::venv_python())
        .arg(script("sigv4_agent.py"))
        .args(["raw", "get", "--path", "/__error/k", "--endpoint", &server.endpoint("s3"), "--region", REGION])
        .args(["--service", "s3", "--access-key-id", S3_PLACEHOLDER, "--proxy", &proxy.proxy_url("acme", ACME_TOKEN)])
        .arg("--ca")
        .arg(proxy.ca_path())
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let answer: Value = serde_json::from_str(&text).unwrap();
    let body = answer["body"].as_str().unwrap();
    assert_eq!(answer["status"], 403, "{body}");
    assert!(body.contains("<CanonicalRequestBytes>"), "the server quoted its canonical request: {body}");
    assert!(body.contains(&format!("<AWSAccessKeyId>{S3_PLACEHOLDER}</AWSAccessKeyId>")), "{body}");
    assert_no_secret("the S3-style error", body, &secrets());
    for secret in [ACCESS_KEY_ID, SESSION_TOKEN] {
        let hex: Vec<String> = secret.bytes().map(|b| format!("{b:02x}")).collect();
        assert!(!body.contains(&hex.join(" ")), "{secret} leaked as spaced hex: {body}");
    }
    proxy.proxy.shutdown().await;
}
