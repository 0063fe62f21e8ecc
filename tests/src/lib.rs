//! Test support for airlock's end-to-end tests: a TLS upstream that echoes
//! what it received, a test CA minted at test time, the real proxy started
//! in-process on `127.0.0.1:0`, and a Rust client that speaks CONNECT, TLS
//! and HTTP/1.1 or HTTP/2 like any agent would; real applications (a git
//! smart-HTTP server, a package index) to mount on the upstream; relays for
//! a client in its own network namespace.
//!
//! Everything listens on 127.0.0.1 only; host names such as
//! `api.acme.test` reach the upstream through airlock's `resolve` override.
#![allow(missing_docs, clippy::unwrap_used)]

pub mod apps;
mod behaviours;
pub mod client;
pub mod codings;
mod git_cgi;
pub mod origin;
pub mod raw_upstream;
pub mod relay;
pub mod upstream;
pub mod ws;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use airlock::RunningProxy;
use airlock_policy::Policy;
use airlock_policy::secrets::{SecretValue, Store};

pub use behaviours::spellings;
pub use raw_upstream::RawUpstream;
pub use upstream::{Seen, TestCa, Upstream, Validity};

/// The acme tenant's real key, as the vault holds it.
pub const ACME_SECRET: &str = "sk_live_acme_0123456789abcdef";
/// The beta tenant's real key.
pub const BETA_SECRET: &str = "sk_live_beta_fedcba9876543210";
pub const ACME_TOKEN: &str = "acme-token-0123456789abcdef";
pub const BETA_TOKEN: &str = "beta-token-0123456789abcdef";
pub const ACME_PLACEHOLDER: &str = "AIRLOCK_ACME_KEY";
pub const ACME_IP_PLACEHOLDER: &str = "AIRLOCK_ACME_IP_KEY";
pub const BETA_PLACEHOLDER: &str = "AIRLOCK_BETA_KEY";

/// Every form of `secret` a leak could take: raw, percent-encoded, and the
/// base64 characters fixed by the secret at each of the three byte
/// alignments (standard and URL-safe alphabets). Written independently of
/// the redactor, so tests do not grade it with its own code.
pub fn secret_forms(secret: &str) -> Vec<String> {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let mut out = vec![secret.to_owned(), secret.replace('_', "%5F")];
    for offset in 0..3usize {
        let mut buf = vec![b'\0'; offset];
        buf.extend_from_slice(secret.as_bytes());
        let (start, end) = ((offset * 8).div_ceil(6), buf.len() * 8 / 6);
        for enc in [STANDARD_NO_PAD.encode(&buf), URL_SAFE_NO_PAD.encode(&buf)] {
            out.push(enc[start..end].to_owned());
        }
    }
    out
}

/// Secret values tests use beyond the standard two; every log and audit
/// line the suite produces is searched for all of them.
static SECRETS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Adds a test's own secret value to those the suite-wide searches of logs
/// and audit files look for.
pub fn register_secret(value: &str) {
    SECRETS.lock().unwrap().push(value.to_owned());
}

/// Every secret value the suite knows of: the standard two and registered
/// ones.
pub fn known_secrets() -> Vec<String> {
    let mut all = vec![ACME_SECRET.to_owned(), BETA_SECRET.to_owned()];
    all.extend(SECRETS.lock().unwrap().iter().cloned());
    all
}

/// Every log line the in-process proxies of this test binary wrote, at
/// debug level for airlock's own crates.
static LOG: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

/// Sends airlock's logs (debug and up) into [`LOG`], once per test binary.
fn capture_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        struct Sink;
        impl std::io::Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                LOG.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let filter = tracing_subscriber::EnvFilter::new("info,airlock=trace,airlock_policy=trace,airlock_ca=trace");
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false).with_writer(|| Sink).try_init();
    });
}

/// The log text captured so far.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&LOG.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}

/// Panics if any log line so far holds any form of any known secret.
pub fn assert_logs_clean() {
    let secrets = known_secrets();
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    assert_no_secret("the proxy's log", &captured_logs(), &secrets);
}

/// Panics if `text` holds any form of any of `secrets`.
pub fn assert_no_secret(what: &str, text: &str, secrets: &[&str]) {
    for secret in secrets {
        for form in secret_forms(secret) {
            assert!(!text.contains(&form), "{what} leaked a secret as {form:?}");
        }
    }
}

/// A fresh, private directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempHome {
    pub path: PathBuf,
}

impl TempHome {
    pub fn new(tag: &str) -> TempHome {
        let mut b = [0u8; 8];
        getrandom_fill(&mut b);
        let path = std::env::temp_dir().join(format!("airlock-{tag}-{}", hex::encode(b)));
        std::fs::create_dir_all(&path).unwrap();
        TempHome { path }
    }
}

impl Drop for TempHome {
    /// Before removing the home, searches its audit log and every log line
    /// captured so far for every known secret: whatever a test asserted,
    /// no secret may have been written down.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let secrets = known_secrets();
            let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
            if let Ok(audit) = std::fs::read_to_string(self.path.join("audit.jsonl")) {
                assert_no_secret("the audit log", &audit, &secrets);
            }
            assert_no_secret("the proxy's log", &captured_logs(), &secrets);
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn getrandom_fill(b: &mut [u8]) {
    // Tests only need uniqueness: time and a counter will do.
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let v = t ^ (N.fetch_add(1, Ordering::Relaxed) << 48) ^ u64::from(std::process::id());
    for (i, x) in b.iter_mut().enumerate() {
        *x = (v >> ((i % 8) * 8)) as u8;
    }
}

/// The `airlock` binary cargo built for this test run (next to the test
/// executable's `deps/` directory).
pub fn airlock_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(|d| d.parent()).map(|d| d.join("airlock")).unwrap();
    assert!(bin.exists(), "{} is missing: run the suite with `cargo test --workspace`", bin.display());
    bin
}

/// Fails with how to get it when a tool an end-to-end test drives is not
/// installed (`scripts/test.sh` installs them all).
pub fn require_tool(tool: &str, package: &str) {
    let found =
        std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()));
    assert!(found, "{tool} is not installed: run scripts/test.sh (it installs the Debian package {package})");
}

/// A test upstream: where it listens, and the CA its certificate is from.
pub trait Origin {
    fn addr(&self) -> SocketAddr;
    fn ca_path(&self) -> &Path;
}

impl Origin for Upstream {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
    fn ca_path(&self) -> &Path {
        &self.ca_path
    }
}

impl Origin for RawUpstream {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
    fn ca_path(&self) -> &Path {
        &self.ca_path
    }
}

/// The standard two-tenant config for a test upstream: tenant `acme` with a
/// route to `api.acme.test:PORT` and one to `127.0.0.1:PORT`; tenant `beta`
/// with a route to `api.beta.test:PORT`. `extra_proxy` is added to
/// `[proxy]`; `extra` is appended at the end.
pub fn standard_config(upstream: &impl Origin, extra_proxy: &str, extra: &str) -> String {
    let port = upstream.addr().port();
    let ca = upstream.ca_path().display();
    format!(
        r#"[proxy]
listen = "127.0.0.1:0"
upstream_ca = ["{ca}"]
resolve = {{ "api.acme.test" = "127.0.0.1", "api.beta.test" = "127.0.0.1", "other.test" = "127.0.0.1" }}
{extra_proxy}

[secrets.acme_key]
source = "store"

[secrets.beta_key]
source = "store"

[tenants.acme]
token = "{ACME_TOKEN}"

[[tenants.acme.routes]]
name = "echo"
host = "api.acme.test:{port}"
secret = "acme_key"
placeholder = "{ACME_PLACEHOLDER}"
env = "ACME_API_KEY"
headers = ["authorization", "x-api-key"]
methods = ["GET", "HEAD", "OPTIONS", "POST"]

[[tenants.acme.routes]]
name = "by-ip"
host = "127.0.0.1:{port}"
secret = "acme_key"
placeholder = "{ACME_IP_PLACEHOLDER}"

[tenants.beta]
token = "{BETA_TOKEN}"

[[tenants.beta.routes]]
name = "beta"
host = "api.beta.test:{port}"
secret = "beta_key"
placeholder = "{BETA_PLACEHOLDER}"
{extra}
"#
    )
}

/// A proxy under test, with its home directory.
#[derive(Debug)]
pub struct TestProxy {
    pub home: TempHome,
    pub proxy: RunningProxy,
}

impl TestProxy {
    /// Writes `config` to a fresh home, stores the standard secrets, loads
    /// the policy and starts the proxy.
    pub async fn start(config: &str) -> TestProxy {
        let home = TempHome::new("proxy");
        store_standard_secrets(&home.path);
        let proxy = start_in(&home.path, config).await;
        TestProxy { home, proxy }
    }

    pub fn addr(&self) -> SocketAddr {
        self.proxy.addr()
    }

    pub fn ca_path(&self) -> PathBuf {
        self.home.path.join("ca.pem")
    }

    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.ca_path()).unwrap()
    }

    /// The audit log's records (requests and refused connections, not
    /// airlock's own `event` lines), once everything queued is written.
    pub fn audit_lines(&self) -> Vec<serde_json::Value> {
        self.proxy.sync_audit();
        audit_records(&self.home.path.join("audit.jsonl"))
    }

    pub fn proxy_url(&self, user: &str, token: &str) -> String {
        format!("http://{user}:{token}@{}", self.addr())
    }

    /// `curl -sS --max-time 20` through this proxy as `user` with `token`
    /// (`HTTPS_PROXY`, and no other proxy setting of the test's own
    /// environment), trusting airlock's CA: add the request's arguments
    /// and run it.
    pub fn curl_as(&self, user: &str, token: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("curl");
        cmd.args(["-sS", "--max-time", "20", "--cacert"])
            .arg(self.ca_path())
            .env("HTTPS_PROXY", self.proxy_url(user, token))
            .env_remove("https_proxy")
            .env_remove("NO_PROXY")
            .env_remove("no_proxy");
        cmd
    }

    /// [`TestProxy::curl_as`] tenant `acme`.
    pub fn curl(&self) -> tokio::process::Command {
        self.curl_as("acme", ACME_TOKEN)
    }

    /// `curl -sS --max-time 20` through this proxy as tenant `acme` for a
    /// plain `http://` URL (`-x`: an absolute-form request, no CONNECT),
    /// with no proxy setting of the test's own environment: add the
    /// request's arguments and run it.
    pub fn curl_http(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("curl");
        cmd.args(["-sS", "--max-time", "20", "-x"])
            .arg(self.proxy_url("acme", ACME_TOKEN))
            .env_remove("http_proxy")
            .env_remove("NO_PROXY")
            .env_remove("no_proxy");
        cmd
    }
}

/// Puts the standard secrets (`acme_key`, `beta_key`) into `home`'s store.
pub fn store_standard_secrets(home: &Path) {
    let store = Store::new(home);
    store.set("acme_key", &SecretValue::new(ACME_SECRET.into()).unwrap()).unwrap();
    store.set("beta_key", &SecretValue::new(BETA_SECRET.into()).unwrap()).unwrap();
}

/// A real `airlock serve` on a home, its stderr in `home/serve.log`.
#[derive(Debug)]
pub struct Served {
    pub child: tokio::process::Child,
    /// Where it listens, from its "listening on" line.
    pub addr: SocketAddr,
    log: PathBuf,
}

impl Served {
    /// Starts `airlock serve` on `home` logging at `rust_log`, and waits
    /// until it says where it listens.
    pub async fn start(home: &Path, rust_log: &str) -> Served {
        Served::start_with_env(home, rust_log, &[]).await
    }

    /// [`Served::start`] with more environment variables.
    pub async fn start_with_env(home: &Path, rust_log: &str, env: &[(&str, &str)]) -> Served {
        let log = home.join("serve.log");
        let child = tokio::process::Command::new(airlock_bin())
            .arg("serve")
            .env("AIRLOCK_HOME", home)
            .env_remove("AIRLOCK_CONFIG")
            .env("RUST_LOG", rust_log)
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let read = || std::fs::read_to_string(&log).unwrap_or_default();
        // Whole line: stderr is unbuffered, so the line may arrive in pieces.
        let listening = || read().split(" listening on ").nth(1).is_some_and(|rest| rest.contains('\n'));
        assert!(wait_for(Duration::from_secs(20), listening).await, "{}", read());
        let text = read();
        let addr = text.split(" listening on ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
        Served { child, addr, log }
    }

    /// Everything it has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Where its log is written.
    pub fn log_path(&self) -> PathBuf {
        self.log.clone()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }

    /// Its resident memory (`VmRSS`), in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches(" kB").parse().unwrap()
    }
}

/// Starts a proxy on `home` with `config` written as `home/airlock.toml`.
pub async fn start_in(home: &Path, config: &str) -> RunningProxy {
    capture_logs();
    let path = home.join("airlock.toml");
    std::fs::write(&path, config).unwrap();
    let policy = Policy::load(&path, home).unwrap();
    airlock::Proxy::bind(home, &path, policy).await.unwrap().spawn()
}

/// The records in the audit log at `path`: every line but airlock's own
/// `event` lines (the log opened, a request still running, a repair).
pub fn audit_records(path: &Path) -> Vec<serde_json::Value> {
    audit_all(path).into_iter().filter(|l| l.get("event").is_none()).collect()
}

/// Every line of the audit log at `path`, parsed.
pub fn audit_all(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// `len` bytes of header-safe random text (letters, digits, `-._~+/`)
/// from `seed`.
pub fn random_text(seed: u64, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/";
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            // xorshift64*
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            char::from(ALPHABET[(x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 58) as usize % ALPHABET.len()])
        })
        .collect()
}

/// Polls `cond` until it holds or `timeout` passes.
pub async fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}
