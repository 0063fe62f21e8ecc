//! The upstream's misbehaving endpoints, each echoing the request's
//! `Authorization` value (which holds the real key after injection) the way
//! real APIs leak keys: in compressed bodies, split across frames, in
//! headers, base64-embedded, in server-sent events, and in truncated bodies.

use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::Response;
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::sync::mpsc;

use crate::upstream::{Body, full_body};

/// A body fed frame by frame from a channel; an `Err` aborts it.
struct ChannelBody(mpsc::Receiver<Result<Frame<Bytes>, std::io::Error>>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx)
    }
}

fn streamed(headers: &[(&str, String)]) -> (mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>, Response<Body>) {
    let (tx, rx) = mpsc::channel(16);
    let mut b = Response::builder();
    for (n, v) in headers {
        b = b.header(*n, v.as_str());
    }
    (tx, b.body(ChannelBody(rx).boxed()).unwrap())
}

fn json_echo(auth: &str) -> Vec<u8> {
    serde_json::json!({"error": "invalid key", "you_sent": auth}).to_string().into_bytes()
}

/// `/probe?guess=G` and `/probe-abort?guess=G`: text the agent chose,
/// echoed as the last bytes of a write, then a pause — the shape of a log
/// or terminal stream that an agent could use to ask the redactor whether
/// `G` starts a secret. `/probe` then waits until the test releases it (the
/// `/sse` signal) and ends with `\ndone\n`; `/probe-abort` fails the body
/// right after the echo.
pub(crate) fn probe(path: &str, query: &str, release: &Arc<tokio::sync::Notify>) -> Response<Body> {
    let guess = query.strip_prefix("guess=").unwrap_or("").to_owned();
    let abort = path == "/probe-abort";
    let (tx, resp) = streamed(&[("content-type", "text/plain".into())]);
    let release = Arc::clone(release);
    tokio::spawn(async move {
        let echo = format!("line one\nyou typed: {guess}");
        if tx.send(Ok(Frame::data(Bytes::from(echo)))).await.is_err() {
            return;
        }
        if abort {
            // Let the echo be read first, then fail the body.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = tx.send(Err(std::io::Error::other("upstream reset"))).await;
            return;
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), release.notified()).await;
        let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"\ndone\n")))).await;
    });
    resp
}

/// One line per spelling of `key`: percent-encoded (upper and lower case,
/// every character or every other), JSON `\u00XX` escapes (and Go's
/// HTML-safe `\u003c` form around it), HTML character references (hex,
/// decimal), and MIME base64 wrapped at 76 columns with the line break
/// inside the key.
pub fn spellings(key: &str) -> String {
    let each = |f: &dyn Fn(usize, u8) -> String| key.bytes().enumerate().map(|(i, b)| f(i, b)).collect::<String>();
    let mut lines = vec![
        each(&|_, b| format!("%{b:02X}")),
        each(&|_, b| format!("%{b:02x}")),
        each(&|i, b| if i % 2 == 0 { format!("%{b:02x}") } else { char::from(b).to_string() }),
        format!("{{\"k\": \"{}\"}}", each(&|_, b| format!("\\u{:04x}", b))),
        format!(
            "{{\"k\": \"\\u003c{}\\u003e\"}}",
            each(&|i, b| if i % 3 == 0 { format!("\\u{:04X}", b) } else { char::from(b).to_string() })
        ),
        format!("<a href=\"{}\">", each(&|_, b| format!("&#x{b:x};"))),
        format!("<p>{}</p>", each(&|_, b| format!("&#{b};"))),
    ];
    // base64 of filler + key + filler, 57 bytes (76 characters) a line; the
    // key starts at byte 50, so the first line break falls inside it.
    let mut blob = vec![b'.'; 50];
    blob.extend_from_slice(key.as_bytes());
    blob.extend_from_slice(&[b'.'; 40]);
    let b64 = STANDARD.encode(&blob);
    let wrapped: Vec<String> = b64.as_bytes().chunks(76).map(|l| String::from_utf8_lossy(l).into_owned()).collect();
    lines.push(wrapped.join("\r\n"));
    lines.join("\n") + "\n"
}

/// The response for a special path, or `None` for the plain echo.
pub(crate) fn respond(path: &str, auth: &str, sse: &Arc<tokio::sync::Notify>) -> Option<Response<Body>> {
    let plain = json_echo(auth);
    let encoded = |encoding: &str, bytes: Vec<u8>| {
        Response::builder()
            .header("content-type", "application/json")
            .header("content-encoding", encoding)
            .header("content-length", bytes.len().to_string())
            .body(full_body(bytes))
            .unwrap()
    };
    Some(match path {
        "/gzip" | "/deflate" | "/br" | "/zstd" | "/gzip-br" => {
            let (label, body) = crate::codings::encode(&path[1..], &plain)?;
            encoded(label, body)
        }
        "/unknown-encoding" => encoded("compress", plain),
        "/spellings" => {
            // The key in every spelling a program might write it, gzipped
            // and sent three bytes at a time.
            let key = auth.rsplit(' ').next().unwrap_or("").to_owned();
            let body = spellings(&key);
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(body.as_bytes()).unwrap();
            let gz = e.finish().unwrap();
            let (tx, resp) = streamed(&[("content-type", "text/plain".into()), ("content-encoding", "gzip".into())]);
            tokio::spawn(async move {
                for chunk in gz.chunks(3) {
                    if tx.send(Ok(Frame::data(Bytes::copy_from_slice(chunk)))).await.is_err() {
                        return;
                    }
                }
            });
            resp
        }
        "/corrupt-gzip" => encoded("gzip", b"\x1f\x8b\x08\x00not really gzip at all".to_vec()),
        "/header" => Response::builder()
            .header("x-echo-auth", auth)
            .header("location", format!("https://example.test/cb?auth={}", auth.replace(' ', "%20")))
            .header("set-cookie", format!("session={}; Path=/", auth.rsplit(' ').next().unwrap_or("")))
            .header("www-authenticate", format!("Bearer error=\"invalid_token\", token=\"{auth}\""))
            .body(full_body("headers only"))
            .unwrap(),
        "/b64" => {
            let key = auth.rsplit(' ').next().unwrap_or("");
            let blob = serde_json::json!({
                "basic": STANDARD.encode(format!("user:{key}")),
                "shifted": STANDARD.encode(format!("xy{key}z")),
                "header": STANDARD.encode(auth),
            });
            Response::builder().header("content-type", "application/json").body(full_body(blob.to_string())).unwrap()
        }
        "/split" => {
            // The key split into 3-byte frames with delays between them.
            let (tx, resp) = streamed(&[("content-type", "text/plain".into())]);
            let body = format!("before {auth} after");
            tokio::spawn(async move {
                for chunk in body.as_bytes().chunks(3) {
                    if tx.send(Ok(Frame::data(Bytes::copy_from_slice(chunk)))).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
            resp
        }
        "/sse" => {
            // One event, then wait until the test says it got it, then the
            // next: a proxy that stalls the first event deadlocks this.
            let (tx, resp) =
                streamed(&[("content-type", "text/event-stream".into()), ("cache-control", "no-cache".into())]);
            let auth = auth.to_owned();
            let sse = Arc::clone(sse);
            tokio::spawn(async move {
                let first = format!("data: {{\"n\": 1, \"auth\": \"{auth}\"}}\n\n");
                if tx.send(Ok(Frame::data(Bytes::from(first)))).await.is_err() {
                    return;
                }
                if tokio::time::timeout(Duration::from_secs(10), sse.notified()).await.is_err() {
                    let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"data: stalled\n\n")))).await;
                    return;
                }
                let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"data: {\"n\": 2}\n\n")))).await;
            });
            resp
        }
        "/trailers" => {
            let (tx, resp) = streamed(&[("content-type", "text/plain".into())]);
            let auth = auth.to_owned();
            tokio::spawn(async move {
                let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"body")))).await;
                let mut t = http::HeaderMap::new();
                t.insert("x-echo-auth", auth.parse().unwrap());
                let _ = tx.send(Ok(Frame::trailers(t))).await;
            });
            resp
        }
        "/truncated" => {
            // Promises 1000 bytes, sends part of them, then fails.
            let (tx, resp) = streamed(&[("content-length", "1000".into())]);
            tokio::spawn(async move {
                let _ = tx.send(Ok(Frame::data(Bytes::from(vec![b'x'; 100])))).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
                let _ = tx.send(Err(std::io::Error::other("upstream reset"))).await;
            });
            resp
        }
        "/drip" => {
            // Sends a little, then goes silent for good.
            let (tx, resp) = streamed(&[("content-type", "text/plain".into())]);
            tokio::spawn(async move {
                let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"first bytes ")))).await;
                tokio::time::sleep(Duration::from_secs(3600)).await;
                drop(tx);
            });
            resp
        }
        "/bomb" => {
            // 64 MiB of zeros gzipped to about 64 KiB (a ratio near 1000),
            // sent although airlock asked for identity.
            static BOMB: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
            let bomb = BOMB.get_or_init(|| {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
                let zeros = vec![0u8; 1 << 20];
                for _ in 0..64 {
                    e.write_all(&zeros).unwrap();
                }
                e.finish().unwrap()
            });
            encoded("gzip", bomb.clone())
        }
        "/big-head" | "/huge-head" => {
            // One 70 000-byte header, or five of 90 000: under and over
            // airlock's response head limit (400 KiB).
            let (count, len) = if path == "/big-head" { (1, 70_000) } else { (5, 90_000) };
            let mut b = Response::builder();
            for i in 0..count {
                b = b.header(format!("x-big-{i}"), "a".repeat(len));
            }
            b.body(full_body("ok")).unwrap()
        }
        _ => return None,
    })
}
