//! `git http-backend` as CGI: one process per request, the request body on
//! its stdin (still gzip-encoded when git sent it so: http-backend decodes
//! it, told by `HTTP_CONTENT_ENCODING`), its `Status:` and headers parsed
//! from stdout. This is how real git servers (Apache, nginx + fcgiwrap)
//! run smart HTTP.

use std::path::Path;
use std::process::Stdio;

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::io::AsyncWriteExt;

use crate::upstream::{Body, full_body};

/// Request headers http-backend reads, as their CGI variables.
const PASSED_HEADERS: [(&str, &str); 2] =
    [("content-encoding", "HTTP_CONTENT_ENCODING"), ("git-protocol", "HTTP_GIT_PROTOCOL")];

/// Serves `req` from the repositories under `root`; `path_info` is the
/// path below the mount (`/repo.git/info/refs`), `user` the authenticated
/// user.
pub(crate) async fn serve(root: &Path, path_info: &str, user: &str, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        return error(StatusCode::BAD_REQUEST, "unreadable request body");
    };
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        // No system or user git config may change what the server does.
        .env("HOME", root)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("PATH_INFO", path_info)
        .env("QUERY_STRING", parts.uri.query().unwrap_or(""))
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_USER", user)
        .env("REMOTE_ADDR", "127.0.0.1");
    for (name, var) in PASSED_HEADERS {
        let value = header(name);
        if !value.is_empty() {
            cmd.env(var, value);
        }
    }
    let mut child = match cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn() {
        Ok(c) => c,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &format!("cannot run git http-backend: {e}")),
    };
    // Feed stdin while stdout is read: a large body or response must not
    // deadlock on a full pipe.
    let mut stdin = child.stdin.take().expect("stdin was piped above");
    let feed = tokio::spawn(async move {
        let _ = stdin.write_all(&body).await;
    });
    let out = match child.wait_with_output().await {
        Ok(o) => o,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &format!("git http-backend: {e}")),
    };
    let _ = feed.await;
    if !out.status.success() && out.stdout.is_empty() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return error(StatusCode::INTERNAL_SERVER_ERROR, &format!("git http-backend failed: {stderr}"));
    }
    cgi_response(&out.stdout)
        .unwrap_or_else(|| error(StatusCode::BAD_GATEWAY, "git http-backend wrote no valid CGI header block"))
}

/// A CGI response: header lines (`Status: 404 Not Found` sets the status),
/// a blank line, the body.
fn cgi_response(out: &[u8]) -> Option<Response<Body>> {
    let (head_len, sep_len) = find(out, b"\r\n\r\n").map(|i| (i, 4)).or_else(|| find(out, b"\n\n").map(|i| (i, 2)))?;
    let head = std::str::from_utf8(&out[..head_len]).ok()?;
    let mut resp = Response::builder();
    for line in head.lines() {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split(' ').next()?.parse::<u16>().ok()?;
            resp = resp.status(StatusCode::from_u16(code).ok()?);
        } else {
            resp = resp.header(name.trim(), value);
        }
    }
    resp.body(full_body(out[head_len + sep_len..].to_vec())).ok()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn error(code: StatusCode, msg: &str) -> Response<Body> {
    eprintln!("git smart HTTP: {msg}");
    Response::builder().status(code).body(full_body(format!("{msg}\n"))).unwrap()
}
