//! [`RedactBody`]: a response body that decodes, scrubs and counts as it
//! streams, and reports once when it ends (for the audit record).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::{Body as HttpBody, Frame, SizeHint};

use super::grpc::{GrpcMessages, scrub_binary_metadata};
use super::{Decoder, PatternSet, Stream};
use crate::{Body, BoxError};

/// A shared count of replacements, readable while the body streams.
#[derive(Clone, Debug, Default)]
pub struct RedactionCount(Arc<AtomicU64>);

impl RedactionCount {
    /// The count so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
}

/// How a body ended, for the audit record.
#[derive(Clone, Copy, Debug)]
pub struct Ended {
    /// Secrets replaced in headers, body and trailers.
    pub redactions: u64,
    /// Bytes sent to the client.
    pub bytes_down: u64,
    /// Whether the body ended cleanly (false: upstream fault, undecodable
    /// body, or the client went away).
    pub complete: bool,
}

type OnEnd = Box<dyn FnOnce(Ended) + Send>;

/// How the decoded body is scanned: as one stream of text, or message by
/// message (gRPC).
enum Scanner {
    Text(Stream),
    Grpc(GrpcMessages),
}

impl Scanner {
    fn push(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), BoxError> {
        match self {
            Scanner::Text(s) => s.push(data, out),
            Scanner::Grpc(g) => g.push(data, out)?,
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), BoxError> {
        match self {
            Scanner::Text(s) => s.finish(out),
            Scanner::Grpc(g) => g.finish(out)?,
        }
        Ok(())
    }

    fn count(&self) -> u64 {
        match self {
            Scanner::Text(s) => s.count(),
            Scanner::Grpc(g) => g.count(),
        }
    }
}

/// The scrubbing body.
pub struct RedactBody {
    inner: Body,
    decoder: Option<Decoder>,
    scanner: Scanner,
    set: Arc<PatternSet>,
    count: RedactionCount,
    queue: VecDeque<Result<Frame<Bytes>, BoxError>>,
    ended: bool,
    bytes_down: u64,
    on_end: Option<OnEnd>,
}

impl std::fmt::Debug for RedactBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedactBody").field("redactions", &self.count.get()).finish_non_exhaustive()
    }
}

impl RedactBody {
    /// Wraps `inner`, decoding with `decoder` when the body is compressed,
    /// and scanning it message by message with `grpc` when it is gRPC.
    /// `count` may already hold the header replacements; `on_end` runs
    /// exactly once, before the last frame is handed out (or on drop).
    pub fn new(
        inner: Body,
        decoder: Option<Decoder>,
        grpc: Option<GrpcMessages>,
        set: Arc<PatternSet>,
        count: RedactionCount,
        on_end: impl FnOnce(Ended) + Send + 'static,
    ) -> Self {
        let mut body = RedactBody {
            inner,
            decoder,
            scanner: match grpc {
                None => Scanner::Text(Stream::new(Arc::clone(&set))),
                Some(messages) => Scanner::Grpc(messages),
            },
            set,
            count,
            queue: VecDeque::new(),
            ended: false,
            bytes_down: 0,
            on_end: Some(Box::new(on_end)),
        };
        if body.inner.is_end_stream() {
            // No body at all (an HTTP/2 HEADERS frame that ended the
            // stream: gRPC's trailers-only answer, whose status is in the
            // head). It ends here, so the agent's head ends its stream too:
            // a gRPC client takes a status in a head followed by an empty
            // DATA frame for a broken stream.
            body.ended = true;
            match body.flush_tail() {
                Ok(()) if body.queue.is_empty() => body.end(true),
                Ok(()) => {}
                Err(e) => {
                    body.queue.clear();
                    body.end(false);
                    body.queue.push_back(Err(e));
                }
            }
        }
        body
    }

    fn end(&mut self, complete: bool) {
        self.ended = true;
        if let Some(f) = self.on_end.take() {
            f(Ended { redactions: self.count.get(), bytes_down: self.bytes_down, complete });
        }
    }

    fn push_data(&mut self, out: Vec<u8>) {
        if !out.is_empty() {
            self.bytes_down += out.len() as u64;
            self.queue.push_back(Ok(Frame::data(Bytes::from(out))));
        }
    }

    /// Flushes the decoder and the held bytes at the end of the body.
    fn flush_tail(&mut self) -> Result<(), BoxError> {
        let mut out = Vec::new();
        let before = self.scanner.count();
        if let Some(d) = &mut self.decoder {
            let tail = d.finish()?;
            self.scanner.push(&tail, &mut out)?;
        }
        self.scanner.finish(&mut out)?;
        self.count.add(self.scanner.count() - before);
        self.push_data(out);
        Ok(())
    }

    fn on_data(&mut self, data: &[u8]) -> Result<(), BoxError> {
        let decoded;
        let input = match &mut self.decoder {
            Some(d) => {
                decoded = d.decode(data)?;
                &decoded[..]
            }
            None => data,
        };
        let mut out = Vec::with_capacity(input.len());
        let before = self.scanner.count();
        self.scanner.push(input, &mut out)?;
        self.count.add(self.scanner.count() - before);
        self.push_data(out);
        Ok(())
    }

    fn on_trailers(&mut self, mut trailers: HeaderMap) -> Result<(), BoxError> {
        self.flush_tail()?;
        if let Scanner::Grpc(_) = self.scanner {
            self.count.add(scrub_binary_metadata(&self.set, &mut trailers));
        }
        let (scrubbed, n) = scrub_headers(&self.set, trailers);
        self.count.add(n);
        self.queue.push_back(Ok(Frame::trailers(scrubbed)));
        Ok(())
    }
}

impl Drop for RedactBody {
    fn drop(&mut self) {
        // The client went away (or the connection closed) before the end.
        if self.on_end.is_some() {
            self.end(false);
        }
    }
}

impl HttpBody for RedactBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if let Some(frame) = this.queue.pop_front() {
                if this.queue.is_empty() && this.ended {
                    // Audit before the last frame leaves.
                    this.end(true);
                }
                return Poll::Ready(Some(frame));
            }
            if this.ended {
                this.end(true);
                return Poll::Ready(None);
            }
            let step = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.on_data(&data),
                    Err(frame) => match frame.into_trailers() {
                        Ok(trailers) => {
                            this.ended = true;
                            this.on_trailers(trailers)
                        }
                        Err(_) => Ok(()),
                    },
                },
                Some(Err(e)) => Err(e),
                None => {
                    this.ended = true;
                    this.flush_tail()
                }
            };
            if let Err(e) = step {
                // Never a clean end after a fault: the error aborts the
                // stream (HTTP/1.1 closes without the last chunk, HTTP/2
                // resets the stream).
                this.queue.clear();
                this.end(false);
                return Poll::Ready(Some(Err(e)));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.queue.is_empty() && self.on_end.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// Replaces secrets in every header value, and drops every header whose
/// name holds one (a name with a placeholder in it would not be a valid
/// token, nor one the agent could use). Returns the new map and the number
/// of replacements and dropped fields.
pub fn scrub_headers(set: &PatternSet, headers: HeaderMap) -> (HeaderMap, u64) {
    // The usual case, no secret in any name or value, keeps the map as it
    // is rather than rebuilding it value by value.
    if !headers.keys().any(|n| set.is_match_name(n.as_str().as_bytes()))
        && !headers.values().any(|v| set.is_match(v.as_bytes()))
    {
        return (headers, 0);
    }
    let mut out = HeaderMap::with_capacity(headers.len());
    let mut total = 0;
    let mut name: Option<HeaderName> = None;
    let mut secret_name = false;
    for (n, value) in headers {
        if let Some(n) = n {
            secret_name = set.is_match_name(n.as_str().as_bytes());
            name = Some(n);
        }
        let Some(name) = name.clone() else { continue };
        if secret_name {
            total += 1;
            continue;
        }
        let mut buf = Vec::new();
        let count = set.replace_all(value.as_bytes(), &mut buf);
        total += count;
        let value = if count == 0 {
            value
        } else {
            // Replacements are printable ASCII, so this only fails if the
            // upstream sent bytes a header cannot hold; drop such a value
            // rather than pass a secret.
            match HeaderValue::from_bytes(&buf) {
                Ok(v) => v,
                Err(_) => continue,
            }
        };
        out.append(name, value);
    }
    (out, total)
}
