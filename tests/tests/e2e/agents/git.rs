//! git through `airlock run`: `git ls-remote` and `git clone` over smart
//! HTTP from a real `git http-backend` that wants the real key as the Basic
//! password. The remote URL carries the placeholder as its password
//! (`https://x:$ACME_API_KEY@…`); airlock swaps it inside the Basic
//! credentials git sends after the server's 401.

use std::path::Path;

use airlock_tests::apps::App;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::*;

/// Runs a local git command (no network) with no system or user config,
/// panicking with its output when it fails.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "airlock tests")
        .env("GIT_AUTHOR_EMAIL", "tests@airlock.test")
        .env("GIT_COMMITTER_NAME", "airlock tests")
        .env("GIT_COMMITTER_EMAIL", "tests@airlock.test")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Every file under `dir`, as text, for the secret search.
fn all_files(dir: &Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            text.push_str(&all_files(&path));
        } else {
            text.push_str(&String::from_utf8_lossy(&std::fs::read(&path).unwrap()));
        }
    }
    text
}

#[tokio::test]
async fn git_ls_remote_and_clone_through_airlock_run() {
    require_tool("git", "git");
    let upstream = Upstream::start(Protocols::Both).await;
    let home = home(&upstream);
    let work = TempHome::new("git");

    // A bare repository served by git http-backend: `main` with one commit,
    // and 30 more branches a commit apart, so that the clone's request (a
    // `want` line per branch) passes 1 KiB and git gzips it.
    git(&work.path, &["init", "-q", "-b", "main", "src"]);
    std::fs::write(work.path.join("src/README"), "cloned through airlock\n").unwrap();
    let src = work.path.join("src");
    git(&src, &["add", "README"]);
    git(&src, &["commit", "-q", "-m", "first"]);
    let commit = git(&src, &["rev-parse", "HEAD"]);
    for i in 0..30 {
        git(&src, &["commit", "-q", "--allow-empty", "-m", &format!("branch {i}")]);
        git(&src, &["branch", &format!("b{i}")]);
    }
    git(&src, &["reset", "-q", "--hard", &commit]);
    let root = work.path.join("srv");
    std::fs::create_dir(&root).unwrap();
    git(&root, &["clone", "-q", "--bare", "../src", "repo.git"]);
    upstream.mount("/git", ACME_SECRET, App::Git { root });

    let remote = format!("https://x:$ACME_API_KEY@api.acme.test:{}/git/repo.git", upstream.port());
    let dest = work.path.join("clone");
    let script = format!("git ls-remote {remote} && git clone -q {remote} {}", dest.display());
    let client = |script: &str| {
        let mut cmd = airlock_run(&home, &["sh", "-c", script]);
        cmd.current_dir(&work.path)
            .env("HOME", &work.path)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env_remove("GIT_ASKPASS")
            .env_remove("SSH_ASKPASS");
        cmd
    };
    let out = client(&script).output().await.unwrap();
    let text = output_text(&out);
    assert!(out.status.success(), "git failed ({:?}): {text}", out.status);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("{commit}\trefs/heads/main")), "{text}");
    assert_eq!(git(&dest, &["rev-parse", "HEAD"]), commit);
    assert_eq!(std::fs::read_to_string(dest.join("README")).unwrap(), "cloned through airlock\n");
    assert_no_secret("git's output", &text, &[ACME_SECRET]);
    // The remote URL in .git/config keeps the placeholder, never the key.
    let config = std::fs::read_to_string(dest.join(".git/config")).unwrap();
    assert!(config.contains(ACME_PLACEHOLDER), "{config}");
    assert_no_secret("the clone", &all_files(&dest), &[ACME_SECRET]);

    // The server saw the real key in the Basic credentials of the ref
    // advertisement and of the upload-pack POST that carried git's request.
    let real = format!("Basic {}", STANDARD.encode(format!("x:{ACME_SECRET}")));
    let seen = upstream.seen();
    let authorized = |method: &str, path: &str| {
        seen.iter().any(|s| s.method == method && s.path == path && s.header("authorization") == Some(real.as_str()))
    };
    assert!(authorized("GET", "/git/repo.git/info/refs?service=git-upload-pack"), "{seen:#?}");
    assert!(authorized("POST", "/git/repo.git/git-upload-pack"), "{seen:#?}");
    assert!(
        seen.iter().any(|s| s.path == "/git/repo.git/git-upload-pack" && s.header("content-encoding") == Some("gzip")),
        "git sent its gzipped request body through airlock: {seen:#?}"
    );

    // A password that is not the placeholder goes through untouched, the
    // server refuses it, and git fails with 128 without ever seeing the key.
    let before = upstream.seen().len();
    let wrong = format!("git ls-remote https://x:not-the-key@api.acme.test:{}/git/repo.git", upstream.port());
    let out = client(&wrong).output().await.unwrap();
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(128), "{text}");
    assert!(text.contains("Authentication failed"), "{text}");
    assert_no_secret("git's output", &text, &[ACME_SECRET]);
    assert!(upstream.seen()[before..].iter().all(|s| s.header("authorization") != Some(real.as_str())));
}
