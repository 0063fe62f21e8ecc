//! `airlock secret set|list` as an operator uses them: at a terminal (a
//! real pseudo-terminal, `tests/python/tty_run.py`), piped, and with names
//! the config does not declare.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use airlock_policy::secrets::Store;
use airlock_tests::*;
use serde_json::Value;

const CONFIG: &str = r#"[proxy]
listen = "127.0.0.1:0"

[secrets.api_key]
source = "store"

[secrets.other_key]
source = "store"

[secrets.from_env]
source = "env"
var = "AIRLOCK_TEST_UNSET_VARIABLE"

[tenants.acme]
token = "acme-token-0123456789abcdef"

[[tenants.acme.routes]]
name = "api"
host = "api.example.test"
secret = "api_key"
placeholder = "AIRLOCK_API_KEY"
"#;

fn home() -> TempHome {
    let home = TempHome::new("secret-cli");
    std::fs::write(home.path.join("airlock.toml"), CONFIG).unwrap();
    home
}

fn airlock(home: &TempHome, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(airlock_bin())
        .args(args)
        .env("AIRLOCK_HOME", &home.path)
        .env_remove("AIRLOCK_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), stdin).unwrap();
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn stored(home: &TempHome, name: &str) -> Option<String> {
    Store::new(&home.path).read(name).ok().map(|v| String::from_utf8(v).unwrap())
}

/// At a terminal: a prompt, nothing of the value on the screen, and Enter
/// ends it (no Ctrl-D needed); it says where the value went.
#[test]
fn at_a_terminal_the_value_is_not_shown_and_enter_ends_it() {
    let home = home();
    let value = "sk_live_typed_at_a_terminal_0123";
    let out = Command::new(crate::conformance::venv_python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("python/tty_run.py"))
        .args(["(typing is not shown; Enter ends it)", value, "--"])
        .arg(airlock_bin())
        .args(["secret", "set", "api_key"])
        .env("AIRLOCK_HOME", &home.path)
        .env_remove("AIRLOCK_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    let screen = run["output"].as_str().unwrap();
    assert_eq!((run["typed"].as_bool(), run["status"].as_i64()), (Some(true), Some(0)), "{screen}");
    assert!(!screen.contains(value), "the typed value was echoed: {screen}");
    assert!(screen.contains("stored secret 'api_key' (32 bytes) in "), "{screen}");
    assert_eq!(stored(&home, "api_key").as_deref(), Some(value));
}

/// A name the config does not declare as a store secret is refused (a typo
/// would leave the real secret missing), unless forced; piped values are
/// read to their end.
#[test]
fn an_undeclared_name_is_refused_unless_forced() {
    let home = home();
    let out = airlock(&home, &["secret", "set", "api_kye"], b"value-0123456789\n");
    assert!(!out.status.success());
    let said = text(&out);
    assert!(said.contains("secret 'api_kye' is not declared") && said.contains("api_key, other_key"), "{said}");
    assert!(said.contains("--force"), "{said}");
    assert_eq!(stored(&home, "api_kye"), None);
    let out = airlock(&home, &["secret", "set", "from_env"], b"value-0123456789\n");
    assert!(!out.status.success());
    assert!(text(&out).contains("declared with source = \"env\""), "{}", text(&out));
    let out = airlock(&home, &["secret", "set", "api_kye", "--force"], b"value-0123456789\n");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(stored(&home, "api_kye").as_deref(), Some("value-0123456789"));
    // Piped: read to its end, one trailing newline dropped.
    let out = airlock(&home, &["secret", "set", "api_key"], b"piped-value-0123456789\n");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(stored(&home, "api_key").as_deref(), Some("piped-value-0123456789"));
    let out = airlock(&home, &["secret", "set", "other_key"], b"");
    assert!(!out.status.success() && text(&out).contains("empty"), "{}", text(&out));
}

/// `secret list` shows every declared secret with its source and state —
/// a declared-but-missing one says so — and stored names no one declares.
#[test]
fn list_shows_declared_secrets_and_their_state() {
    let home = home();
    assert!(airlock(&home, &["secret", "set", "api_key"], b"value-0123456789").status.success());
    assert!(airlock(&home, &["secret", "set", "stray", "--force"], b"value-0123456789").status.success());
    let out = airlock(&home, &["secret", "list"], b"");
    assert!(out.status.success(), "{}", text(&out));
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = |name: &str| listing.lines().find(|l| l.starts_with(&format!("{name}\t"))).unwrap_or("").to_owned();
    assert!(line("api_key").starts_with("api_key\tstore\tstored "), "{listing}");
    assert!(line("other_key").contains("MISSING: airlock secret set"), "{listing}");
    assert!(line("from_env").contains("$AIRLOCK_TEST_UNSET_VARIABLE not set here"), "{listing}");
    assert!(line("stray").ends_with("not declared"), "{listing}");
    assert!(!listing.contains("value-0123456789"));
}
