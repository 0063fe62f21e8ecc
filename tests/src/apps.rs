//! Real applications the upstream serves under a path prefix instead of the
//! echo, the way real services do: behind HTTP Basic auth that wants the
//! real secret as the password (401 with `WWW-Authenticate` otherwise), and
//! never echoing credentials back.

use std::path::{Component, Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::upstream::{Body, full_body};

/// What a mount serves.
#[derive(Clone, Debug)]
pub enum App {
    /// `git http-backend` as CGI over the bare repositories in `root`
    /// (smart HTTP: `git ls-remote`, `git clone`, `git fetch`).
    Git { root: PathBuf },
    /// The files under `root` (a directory's `index.html` for the
    /// directory), e.g. a PEP 503 simple index and its wheels.
    Files { root: PathBuf },
}

impl App {
    fn realm(&self) -> &'static str {
        match self {
            App::Git { .. } => "git",
            App::Files { .. } => "files",
        }
    }
}

/// An application under a path prefix, for Basic credentials whose
/// password is `password` (any user name).
#[derive(Clone, Debug)]
pub(crate) struct Mount {
    pub(crate) prefix: String,
    pub(crate) password: String,
    pub(crate) app: App,
}

impl Mount {
    /// The rest of `path` after this mount's prefix, when under it.
    pub(crate) fn strip<'a>(&self, path: &'a str) -> Option<&'a str> {
        path.strip_prefix(self.prefix.as_str()).filter(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    /// Serves `req`, whose path is `rest` below the prefix.
    pub(crate) async fn serve(&self, rest: &str, req: Request<Incoming>) -> Response<Body> {
        let Some(user) = self.authorized_user(&req) else {
            return Response::builder()
                .status(StatusCode::UNAUTHORIZED)
                .header("www-authenticate", format!("Basic realm=\"{}\"", self.app.realm()))
                .body(full_body("authentication required\n"))
                .unwrap();
        };
        match &self.app {
            App::Git { root } => crate::git_cgi::serve(root, rest, &user, req).await,
            App::Files { root } => file(root, rest, req.method()),
        }
    }

    /// The user name of Basic credentials carrying the right password.
    fn authorized_user(&self, req: &Request<Incoming>) -> Option<String> {
        let value = req.headers().get(http::header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, b64) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decoded = String::from_utf8(STANDARD.decode(b64.trim()).ok()?).ok()?;
        let (user, password) = decoded.split_once(':')?;
        (password == self.password).then(|| user.to_owned())
    }
}

fn status(code: StatusCode) -> Response<Body> {
    Response::builder().status(code).body(full_body(format!("{code}\n"))).unwrap()
}

/// A file below `root`; only plain path segments are followed.
fn file(root: &Path, rest: &str, method: &http::Method) -> Response<Body> {
    if method != http::Method::GET && method != http::Method::HEAD {
        return status(StatusCode::METHOD_NOT_ALLOWED);
    }
    let rel = Path::new(rest.trim_start_matches('/'));
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return status(StatusCode::NOT_FOUND);
    }
    let mut path = root.join(rel);
    if path.is_dir() {
        path.push("index.html");
    }
    let Ok(bytes) = std::fs::read(&path) else { return status(StatusCode::NOT_FOUND) };
    let content_type = match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        _ => "application/octet-stream",
    };
    let len = bytes.len();
    let body = if method == http::Method::HEAD { Vec::new() } else { bytes };
    Response::builder()
        .header("content-type", content_type)
        .header("content-length", len.to_string())
        .body(full_body(body))
        .unwrap()
}
