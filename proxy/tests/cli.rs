//! The `airlock` binary's offline commands, run as a user would: init,
//! the secret store, env, check, audit --verify, and `run` refusing a
//! listener that is not airlock. (This file also makes `cargo test` build
//! the binary that the end-to-end suite drives.)
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn home(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "airlock-cli-{tag}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn airlock(home: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_airlock"));
    cmd.args(args).env("AIRLOCK_HOME", home).env_remove("AIRLOCK_CONFIG").env("RUST_LOG", "warn");
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn init_creates_a_private_home_once() {
    let h = home("init");
    let out = airlock(&h, &["init"], None);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::metadata(h.join("airlock.toml")).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(h.join("ca-key.pem")).unwrap().permissions().mode() & 0o777, 0o600);
    let config = std::fs::read_to_string(h.join("airlock.toml")).unwrap();
    let again = airlock(&h, &["init"], None);
    assert!(again.status.success() && text(&again).contains("already initialised"));
    assert_eq!(std::fs::read_to_string(h.join("airlock.toml")).unwrap(), config, "init never overwrites");
}

#[test]
fn secrets_are_stored_privately_and_never_echoed() {
    let h = home("secret");
    let value = "sk_live_cli_test_value_987";
    let out = airlock(&h, &["secret", "set", "example"], Some(&format!("{value}\n")));
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains(value));
    let path = h.join("secrets/example");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), value, "one trailing newline trimmed");
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let list = airlock(&h, &["secret", "list"], None);
    assert!(text(&list).contains("example") && !text(&list).contains(value));
    let bad = airlock(&h, &["secret", "set", "x"], Some("line1\nline2\n"));
    assert!(!bad.status.success() && text(&bad).contains("control characters"));
    assert!(airlock(&h, &["secret", "rm", "example"], None).status.success());
    assert!(!airlock(&h, &["secret", "rm", "example"], None).status.success());
}

#[test]
fn env_prints_every_variable_in_each_format() {
    let h = home("env");
    assert!(airlock(&h, &["init"], None).status.success());
    for (format, prefix) in [
        ("sh", "export HTTPS_PROXY='http://demo:"),
        ("dotenv", "HTTPS_PROXY=http://demo:"),
        ("github", "HTTPS_PROXY=http://demo:"),
    ] {
        let out = airlock(&h, &["env", "--format", format, "--proxy-host", "host.docker.internal"], None);
        assert!(out.status.success(), "{}", text(&out));
        let s = String::from_utf8_lossy(&out.stdout);
        assert!(s.starts_with(prefix), "{s}");
        assert!(s.contains("@host.docker.internal:8080"), "{s}");
        for var in [
            "SSL_CERT_FILE",
            "REQUESTS_CA_BUNDLE",
            "CURL_CA_BUNDLE",
            "GIT_SSL_CAINFO",
            "PIP_CERT",
            "NODE_EXTRA_CA_CERTS",
        ] {
            assert!(s.contains(var), "{format}: {var} missing");
        }
        assert!(s.contains("EXAMPLE_API_KEY") && s.contains("AIRLOCK_EXAMPLE_KEY"));
    }
    // The host goes into dotenv and $GITHUB_ENV lines: one that would add a
    // line of its own is refused; an IPv6 literal is fine.
    let out =
        airlock(&h, &["env", "--format", "github", "--proxy-host", "x\nNODE_OPTIONS=--require=/tmp/evil.js"], None);
    assert!(!out.status.success() && out.stdout.is_empty(), "{}", text(&out));
    let out = airlock(&h, &["env", "--format", "dotenv", "--proxy-host", "[::1]"], None);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("@[::1]:8080"), "{}", text(&out));
    let bundle = std::fs::read_to_string(h.join("ca-bundle.pem")).unwrap();
    assert!(bundle.ends_with(&std::fs::read_to_string(h.join("ca.pem")).unwrap()));
    let verify =
        Command::new("openssl").args(["verify", "-CAfile"]).arg(h.join("ca-bundle.pem")).arg(h.join("ca.pem")).output();
    assert!(verify.unwrap().status.success(), "the bundle is usable by OpenSSL");

    // A listener on port 0 has no address to hand out: a clear error.
    let config = std::fs::read_to_string(h.join("airlock.toml")).unwrap();
    std::fs::write(h.join("airlock.toml"), config.replace("127.0.0.1:8080", "127.0.0.1:0")).unwrap();
    let out = airlock(&h, &["env"], None);
    assert!(!out.status.success() && text(&out).contains("airlock run"), "{}", text(&out));
}

#[test]
fn check_exits_non_zero_when_a_secret_is_missing_and_zero_when_ready() {
    let h = home("check");
    assert!(airlock(&h, &["init"], None).status.success());
    // The starter route's host is not resolvable here and its secret is
    // unset: both need action.
    let out = airlock(&h, &["check"], None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("airlock secret set example"), "{}", text(&out));
    let config = std::fs::read_to_string(h.join("airlock.toml")).unwrap();
    std::fs::write(
        h.join("airlock.toml"),
        config.replace("resolve = {}", "resolve = { \"api.example.com\" = \"127.0.0.1\" }"),
    )
    .unwrap();
    assert!(airlock(&h, &["secret", "set", "example"], Some("sk_check_123")).status.success());
    let out = airlock(&h, &["check", "--format", "json"], None);
    assert!(out.status.success(), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["ok"], true);
    assert_eq!(json["routes"][0]["ready"], true);
    assert!(!text(&out).contains("sk_check_123"));
    std::fs::write(h.join("airlock.toml"), "[proxy]\nlisten = 3\n").unwrap();
    let out = airlock(&h, &["check"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("listen"), "{}", text(&out));
}

#[test]
fn audit_verify_reports_an_empty_log_and_a_broken_line() {
    let h = home("audit");
    assert!(airlock(&h, &["init"], None).status.success());
    std::fs::write(h.join("audit.jsonl"), "").unwrap();
    let out = airlock(&h, &["audit", "--verify"], None);
    assert!(out.status.success() && text(&out).contains("0 records"), "{}", text(&out));
    std::fs::write(h.join("audit.jsonl"), "{\"not\": \"chained\"}\n").unwrap();
    let out = airlock(&h, &["audit", "--verify"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("line 1"), "{}", text(&out));
}

/// What `env` secrets read must stay airlock's: the `airlock run` agent and
/// every vault command get none of those variables (every tenant's, not only
/// the agent's), while everything else — a vault CLI's own token — is passed
/// on, and a route's `env` of the same name carries the placeholder.
#[test]
fn run_and_vault_commands_never_see_env_sourced_secrets() {
    const ACME_VALUE: &str = "sk_env_acme_value_5f2a9c";
    const BETA_VALUE: &str = "sk_env_beta_value_83d1e7";
    let h = home("childenv");
    let command_env = h.join("command-env");
    let config = format!(
        r#"[proxy]
listen = "127.0.0.1:0"

[secrets.acme_env]
source = "env"
var = "ACME_ENV_KEY"

[secrets.beta_env]
source = "env"
var = "BETA_ENV_KEY"

[secrets.from_command]
source = "command"
command = ["sh", "-c", "env > '{}'; printf cmd_value_1"]

[tenants.acme]
token = "acme-token-childenv-0123456789"

[[tenants.acme.routes]]
name = "acme"
host = "api.acme.test"
secret = "acme_env"
placeholder = "AIRLOCK_ACME_ENV"
env = "ACME_API_KEY"

[[tenants.acme.routes]]
name = "same-name"
host = "api.same.test"
secret = "acme_env"
placeholder = "AIRLOCK_ACME_SAME"
env = "ACME_ENV_KEY"

[[tenants.acme.routes]]
name = "vault"
host = "api.vault.test"
secret = "from_command"
placeholder = "AIRLOCK_FROM_COMMAND"

[tenants.beta]
token = "beta-token-childenv-0123456789"

[[tenants.beta.routes]]
name = "beta"
host = "api.beta.test"
secret = "beta_env"
placeholder = "AIRLOCK_BETA_ENV"
"#,
        command_env.display()
    );
    std::fs::write(h.join("airlock.toml"), config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(["run", "--tenant", "acme", "--", "env"])
        .env("AIRLOCK_HOME", &h)
        .env_remove("AIRLOCK_CONFIG")
        .env("RUST_LOG", "warn")
        .env("ACME_ENV_KEY", ACME_VALUE)
        .env("BETA_ENV_KEY", BETA_VALUE)
        .env("VAULT_TOKEN", "vault-cli-token-passed-on")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let all = text(&out);
    assert!(out.status.success(), "airlock run failed");
    for (what, value) in [("acme's", ACME_VALUE), ("beta's", BETA_VALUE)] {
        assert!(!all.contains(value), "the agent saw {what} env-sourced secret");
    }
    let agent_env = String::from_utf8_lossy(&out.stdout);
    for line in ["ACME_API_KEY=AIRLOCK_ACME_ENV", "ACME_ENV_KEY=AIRLOCK_ACME_SAME", "HTTPS_PROXY=http://acme:"] {
        assert!(agent_env.lines().any(|l| l.starts_with(line)), "the agent's env lacks {line}");
    }
    assert!(!agent_env.lines().any(|l| l.starts_with("BETA_ENV_KEY=")), "the agent got beta's variable");

    // The proxy `run` started prefetched the command secret.
    let seen = std::fs::read_to_string(&command_env).unwrap();
    for (what, value) in [("acme's", ACME_VALUE), ("beta's", BETA_VALUE)] {
        assert!(!seen.contains(value), "the vault command saw {what} env-sourced secret");
    }
    assert!(!seen.lines().any(|l| l.starts_with("ACME_ENV_KEY=") || l.starts_with("BETA_ENV_KEY=")));
    assert!(seen.lines().any(|l| l == "VAULT_TOKEN=vault-cli-token-passed-on"), "a vault CLI's own token is kept");
}

/// `airlock check` is the operator's: it shows a failed vault command's
/// stderr, with every value the vault knows replaced — including one fetched
/// after the command in config order (commands are fetched last).
#[test]
fn check_shows_a_failed_commands_stderr_scrubbed() {
    const STORED: &str = "sk_stored_value_for_check_41b7";
    let h = home("check-stderr");
    let store_file = h.join("secrets/z_stored");
    let config = format!(
        r#"[proxy]
resolve = {{ "api.acme.test" = "127.0.0.1" }}

[secrets.a_command]
source = "command"
command = ["sh", "-c", "echo \"vault: denied; stored value $(cat '{}'), token hvs_check_token\" >&2; exit 2"]

[secrets.z_stored]
source = "store"

[tenants.acme]
token = "acme-token-check-0123456789"

[[tenants.acme.routes]]
name = "by-command"
host = "api.acme.test"
secret = "a_command"
placeholder = "AIRLOCK_BY_COMMAND"

[[tenants.acme.routes]]
name = "stored"
host = "api.acme.test:8443"
secret = "z_stored"
placeholder = "AIRLOCK_STORED"
"#,
        store_file.display()
    );
    std::fs::write(h.join("airlock.toml"), config).unwrap();
    assert!(airlock(&h, &["secret", "set", "z_stored"], Some(STORED)).status.success());
    let out = airlock(&h, &["check"], None);
    assert_eq!(out.status.code(), Some(1));
    let all = text(&out);
    assert!(!all.contains(STORED), "check printed a stored value");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("failed (exit status 2): vault: denied; stored value [REDACTED], token hvs_check_token"),
        "{stdout}"
    );
}

/// `check` warns (without failing) when the config, which holds every
/// tenant's token, or the home is open to other users, and says how to
/// close it; a private home draws no warning.
#[test]
fn check_warns_when_the_config_or_home_is_open_to_others() {
    let h = home("exposed");
    assert!(airlock(&h, &["init"], None).status.success());
    let warnings = |h: &Path| {
        let out = airlock(h, &["check", "--format", "json"], None);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        json["warnings"].as_array().cloned().unwrap_or_default()
    };
    std::fs::set_permissions(&h, std::fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(warnings(&h), Vec::<serde_json::Value>::new());
    std::fs::set_permissions(h.join("airlock.toml"), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&h, std::fs::Permissions::from_mode(0o755)).unwrap();
    let found = warnings(&h);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].as_str().unwrap().contains("chmod 600"), "{found:?}");
    assert!(found[1].as_str().unwrap().contains("chmod 700"), "{found:?}");
    let table = text(&airlock(&h, &["check"], None));
    assert!(table.contains("Warning: ") && table.contains("every tenant's token"), "{table}");
}

/// `airlock run` sends an agent's tenant token only to a proxy that proves
/// it serves this AIRLOCK_HOME. Whatever else answers on `[proxy] listen` —
/// another server, a 200 without airlock's header, the header on an error,
/// bytes that are not HTTP, a connection closed or left silent, an "airlock"
/// claiming this home's instance id without the key to prove it — gets the
/// health check alone (with a challenge, and nothing of the tenant's), and
/// the agent runs through a private proxy on another port.
#[test]
fn run_sends_nothing_to_a_listener_that_cannot_prove_it_is_this_homes_airlock() {
    let h = home("impostor");
    assert!(airlock(&h, &["init"], None).status.success());
    let config = std::fs::read_to_string(h.join("airlock.toml")).unwrap();
    let token = config.lines().find_map(|l| l.strip_prefix("token = ")).unwrap().trim_matches('"').to_owned();
    let ran = h.join("ran");
    let claims_this_home = format!(
        "HTTP/1.1 200 OK\r\nx-airlock-version: 0.1.0\r\nx-airlock-instance: {}\r\nx-airlock-proof: {}\r\n\
         content-length: 0\r\n\r\n",
        airlock::instance::instance_id(&h),
        "ab".repeat(32)
    );
    for (what, answer) in [
        ("another HTTP server", Some("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".to_owned())),
        ("a 200 without the header", Some("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_owned())),
        (
            "the header on a 503",
            Some("HTTP/1.1 503 Busy\r\nx-airlock-version: 0.1.0\r\ncontent-length: 0\r\n\r\n".into()),
        ),
        ("not HTTP", Some("SSH-2.0-OpenSSH_9.6\r\n".to_owned())),
        ("closed without an answer", Some(String::new())),
        ("silent until airlock gives up", None),
        ("this home's id without the proof", Some(claims_this_home.clone())),
    ] {
        let _ = std::fs::remove_file(&ran);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let peer = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let request = read_head(&mut stream);
            match answer {
                Some(a) => stream.write_all(a.as_bytes()).unwrap(),
                // Holds the connection until airlock closes it.
                None => while stream.read(&mut [0; 64]).is_ok_and(|n| n > 0) {},
            }
            request
        });
        std::fs::write(h.join("airlock.toml"), config.replace("127.0.0.1:8080", &addr.to_string())).unwrap();
        let script = format!("printf %s \"$HTTPS_PROXY\" > '{}'", ran.display());
        let out = airlock(&h, &["run", "--", "sh", "-c", &script], None);
        let request = peer.join().unwrap();
        assert!(request.starts_with("GET /v1/health HTTP/1.1\r\n"), "{what}: the probe sent {request:?}");
        assert!(request.contains("x-airlock-challenge: "), "{what}: {request:?}");
        assert!(!request.contains(&token) && !request.to_ascii_lowercase().contains("proxy-authorization"), "{what}");
        assert_eq!(out.status.code(), Some(0), "{what}: {}", text(&out));
        assert!(text(&out).contains(&format!("what listens on {addr} did not prove")), "{what}: {}", text(&out));
        let used = std::fs::read_to_string(&ran).unwrap();
        // A private proxy, with a token of its own (the config's is never
        // in the agent's environment then).
        assert!(used.starts_with("http://demo:") && used.contains("@127.0.0.1:"), "{what}: {used}");
        assert!(!used.contains(&token), "{what}: {used}");
        assert!(!used.ends_with(&format!("@{addr}")), "{what}: the agent was sent to {used}");
    }
}

/// The request head a client sent (up to the blank line), or what came
/// before it closed.
fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0; 1];
    while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Every command's and subcommand's `--help` ends with the environment it
/// reads, and the top-level commands' with examples.
#[test]
fn every_help_has_examples_and_an_environment_section() {
    let h = home("help");
    let commands: &[&[&str]] = &[
        &[],
        &["init"],
        &["serve"],
        &["run"],
        &["env"],
        &["ca"],
        &["ca", "export"],
        &["check"],
        &["audit"],
        &["mcp"],
        &["secret"],
        &["secret", "set"],
        &["secret", "list"],
        &["secret", "rm"],
        &["tenant"],
        &["tenant", "add"],
        &["tenant", "list"],
        &["tenant", "rm"],
        &["route"],
        &["route", "add"],
        &["route", "list"],
        &["route", "rm"],
        &["route", "services"],
        &["connect"],
        &["status"],
    ];
    for command in commands {
        let mut args = command.to_vec();
        args.push("--help");
        let out = airlock(&h, &args, None);
        let help = text(&out);
        assert!(out.status.success(), "{command:?}: {help}");
        assert!(help.contains("ENVIRONMENT:\n  AIRLOCK_HOME"), "{command:?}: {help}");
        if command.len() == 1 {
            assert!(
                help.contains("EXAMPLES:\n  ") && help.contains(&format!("airlock {}", command[0])),
                "{command:?}: {help}"
            );
        }
    }
}
