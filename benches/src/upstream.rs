//! A TLS upstream built for speed, so it is never what a figure measures:
//! HTTP/1.1 only, no logging, no recording. `/small` answers a fixed JSON
//! document; `/big?bytes=N` streams N bytes of JSON-like text in 64 KiB
//! frames that are all slices of one buffer (no copy per frame); `/up`
//! reads a request body and answers its length. Every
//! request must carry `Authorization: Bearer <key>` with the real key, so a
//! proxy that failed to inject gets 401 and the harness counts an error.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// The `/small` answer: a typical small API record.
pub const SMALL: &[u8] =
    br#"{"id":12345,"name":"a typical api record","tags":["x","y"],"ok":true,"items":[1,2,3],"next":null}"#;

/// Frame size of `/big`.
const FRAME: usize = 64 << 10;

/// The upstream's TLS config: a leaf for `*.bench.test` and
/// `*.signed.test` from `ca`, HTTP/1.1 only.
pub fn tls_config(ca: &airlock_tests::TestCa) -> Arc<rustls::ServerConfig> {
    ca.server_config(&["*.bench.test", "*.signed.test"], &[b"http/1.1"])
}

/// Serves `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, key: &str) {
    let acceptor = TlsAcceptor::from(tls);
    let expected: Bytes = Bytes::from(format!("Bearer {key}"));
    let frame = Bytes::from(big_frame());
    loop {
        let Ok((tcp, _)) = listener.accept().await else { continue };
        let _ = tcp.set_nodelay(true);
        let (acceptor, expected, frame) = (acceptor.clone(), expected.clone(), frame.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else { return };
            let service = service_fn(move |req: Request<Incoming>| {
                let mut resp = answer(&req, &expected, &frame);
                async move {
                    if resp.status() == StatusCode::OK && req.uri().path() == "/up" {
                        let mut body = req.into_body();
                        let mut len = 0u64;
                        while let Some(Ok(frame)) = body.frame().await {
                            len += frame.data_ref().map_or(0, |d| d.len() as u64);
                        }
                        *resp.body_mut() = Reply::Whole(Some(Bytes::from(len.to_string())));
                    }
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).await;
        });
    }
}

fn answer(req: &Request<Incoming>, expected: &Bytes, frame: &Bytes) -> Response<Reply> {
    // The key, or a SigV4 signature airlock made with the bench's access
    // key id (the upstream does not check signatures: the benches measure
    // airlock's work, the e2e tests verify it).
    let signed = format!("AWS4-HMAC-SHA256 Credential={}/", crate::AWS_ACCESS_KEY_ID);
    let authorized = req
        .headers()
        .get(header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes() == expected.as_ref() || v.as_bytes().starts_with(signed.as_bytes()));
    let mut resp = Response::new(Reply::Whole(None));
    if !authorized {
        *resp.status_mut() = StatusCode::UNAUTHORIZED;
        return resp;
    }
    match req.uri().path() {
        "/small" => {
            resp.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
            *resp.body_mut() = Reply::Whole(Some(Bytes::from_static(SMALL)));
        }
        "/big" => {
            let bytes = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("bytes="))
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(1 << 20);
            resp.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/x-ndjson"));
            *resp.body_mut() = Reply::Stream { frame: frame.clone(), left: bytes };
        }
        "/up" => {}
        _ => *resp.status_mut() = StatusCode::NOT_FOUND,
    }
    resp
}

/// One frame of `/big`: JSON lines, no secret in them.
pub fn big_frame() -> Vec<u8> {
    let line = b"{\"id\": 12345, \"name\": \"a typical api record\", \"tags\": [\"x\", \"y\"], \"ok\": true}\n";
    line.iter().copied().cycle().take(FRAME).collect()
}

/// A response body: whole, or `left` bytes streamed from `frame`.
#[derive(Debug)]
pub enum Reply {
    /// One frame (or none).
    Whole(Option<Bytes>),
    /// Streamed slices of one frame.
    Stream {
        /// The repeated frame.
        frame: Bytes,
        /// Bytes still to send.
        left: u64,
    },
}

impl Body for Reply {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        Poll::Ready(match this {
            Reply::Whole(b) => b.take().map(|b| Ok(Frame::data(b))),
            Reply::Stream { frame, left } => {
                if *left == 0 {
                    None
                } else {
                    let n = frame.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    *left -= n as u64;
                    Some(Ok(Frame::data(frame.slice(..n))))
                }
            }
        })
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Reply::Whole(b) => b.is_none(),
            Reply::Stream { left, .. } => *left == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Reply::Whole(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Reply::Stream { left, .. } => SizeHint::with_exact(*left),
        }
    }
}
