//! pip through `airlock run`: `pip download` from a PEP 503 simple index
//! that wants the real key as the Basic password. The index URL carries the
//! placeholder as its password; pip sends it with every request to that
//! host (the index page and the wheel) and trusts airlock through the
//! PIP_CERT that `run` sets.

use airlock_tests::apps::App;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::*;

const WHEEL: &str = "airlock_probe-1.0-py3-none-any.whl";

/// Builds a minimal valid wheel (module, METADATA, WHEEL, RECORD with
/// hashes) and the simple index page linking it with its sha256, under
/// `root`.
const BUILD_INDEX: &str = r#"
import base64, hashlib, os, sys, zipfile
root, wheel = sys.argv[1], sys.argv[2]
info = "airlock_probe-1.0.dist-info"
files = {
    "airlock_probe.py": b"ANSWER = 42\n",
    info + "/METADATA": b"Metadata-Version: 2.1\nName: airlock-probe\nVersion: 1.0\n",
    info + "/WHEEL": b"Wheel-Version: 1.0\nGenerator: airlock-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
def digest(data):
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
record = "".join(f"{p},sha256={digest(d)},{len(d)}\n" for p, d in files.items()) + info + "/RECORD,,\n"
files[info + "/RECORD"] = record.encode()
os.makedirs(f"{root}/packages")
os.makedirs(f"{root}/simple/airlock-probe")
with zipfile.ZipFile(f"{root}/packages/{wheel}", "w", zipfile.ZIP_DEFLATED) as z:
    for p, d in files.items():
        z.writestr(p, d)
sha = hashlib.sha256(open(f"{root}/packages/{wheel}", "rb").read()).hexdigest()
with open(f"{root}/simple/airlock-probe/index.html", "w") as f:
    f.write(f'<!DOCTYPE html>\n<html><body><a href="../../packages/{wheel}#sha256={sha}">{wheel}</a></body></html>\n')
"#;

#[tokio::test]
async fn pip_download_through_airlock_run() {
    let python = venv_python();
    let upstream = Upstream::start(Protocols::Both).await;
    let home = home(&upstream);
    let work = TempHome::new("pip");
    let root = work.path.join("index");
    let built = std::process::Command::new("python3").args(["-c", BUILD_INDEX]).arg(&root).arg(WHEEL).output().unwrap();
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    let wheel = std::fs::read(root.join("packages").join(WHEEL)).unwrap();
    upstream.mount("/pypi", ACME_SECRET, App::Files { root });

    let download = |host: &str, dest: &std::path::Path| {
        let script = format!(
            "\"$0\" -m pip download --no-deps --no-input --no-cache-dir --disable-pip-version-check --retries 0 \
             --timeout 20 -d {} --index-url https://x:$ACME_API_KEY@{host}:{}/pypi/simple/ airlock-probe",
            dest.display(),
            upstream.port()
        );
        let mut cmd = airlock_run(&home, &["sh", "-c", &script, &python]);
        // No pip config or index from the machine: only the test's index.
        cmd.env("PIP_CONFIG_FILE", "/dev/null")
            .env_remove("PIP_INDEX_URL")
            .env_remove("PIP_EXTRA_INDEX_URL")
            .env_remove("PIP_FIND_LINKS");
        cmd
    };
    let dest = work.path.join("downloads");
    let out = download("api.acme.test", &dest).output().await.unwrap();
    let text = output_text(&out);
    assert!(out.status.success(), "pip failed ({:?}): {text}", out.status);
    assert_eq!(std::fs::read(dest.join(WHEEL)).unwrap(), wheel, "the wheel pip saved is the one served");
    assert_no_secret("pip's output", &text, &[ACME_SECRET]);

    // Both the index page and the wheel were fetched with the real key.
    let real = format!("Basic {}", STANDARD.encode(format!("x:{ACME_SECRET}")));
    let seen = upstream.seen();
    for path in ["/pypi/simple/airlock-probe/".to_owned(), format!("/pypi/packages/{WHEEL}")] {
        assert!(
            seen.iter()
                .any(|s| s.method == "GET" && s.path == path && s.header("authorization") == Some(real.as_str())),
            "{path}: {seen:#?}"
        );
    }

    // The same index on a host the tenant has no route for: airlock would
    // only tunnel there, and refuses a tunnel to a loopback address with a
    // 403 to pip's CONNECT; pip finds nothing and exits 1.
    let before = upstream.seen().len();
    let other = work.path.join("other");
    let out = download("other.test", &other).output().await.unwrap();
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("No matching distribution found for airlock-probe"), "{text}");
    let denial = audit_records(&home).into_iter().find(|r| r["host"] == "other.test").unwrap();
    assert_eq!(
        (&denial["decision"], &denial["code"], &denial["status"]),
        (&"deny".into(), &"private_egress_denied".into(), &403.into())
    );
    assert!(!other.join(WHEEL).exists());
    assert_no_secret("pip's output", &text, &[ACME_SECRET]);
    assert_eq!(upstream.seen().len(), before, "nothing reached the upstream");
}
