//! The WebSocket relay (RFC 6455) after an allowed handshake: every
//! message is read whole on one side and written, re-framed, on the other,
//! so that no byte crosses unchecked.
//!
//! - Upstream → agent: text, binary, ping, pong and close payloads go
//!   through the redactor (a fragmented message is reassembled first, so a
//!   secret split across fragments is still seen whole). With the route's
//!   `danger_unscrubbed_websocket`, payloads pass unchanged but are still
//!   scanned: one holding a known secret marks the record
//!   `secret_exposed`.
//! - Agent → upstream: each payload is checked for placeholders like a
//!   request's headers ([`Policy::check_message`]); another tenant's or
//!   another route's placeholder closes the connection (`1008`, the code
//!   as the reason) and is audited as a denial. The route's own
//!   placeholder is data, unless the route lists the message's kind in
//!   `websocket`: then, after the check, it is replaced by the secret
//!   ([`credential`]; the record counts the messages, `injections`).
//! - permessage-deflate is negotiated off (the handshake's
//!   `Sec-WebSocket-Extensions` offer is removed), so every payload is
//!   readable; an upstream that accepts an extension anyway is refused.
//! - One audit record per connection, written when it closes, with frames,
//!   payload bytes and redactions counted; `complete` only after a closing
//!   handshake. The relay holds its agent connection's slot under
//!   `max_connections` and is closed (`1001`) when the shutdown grace
//!   period ends.
//!
//! Framing, masking and reassembly are tokio-tungstenite's; only the relay
//! policy is ours.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error, Message, Utf8Bytes};
use tracing::{debug, info, warn};

use airlock_policy::{Policy, RouteId, TenantId};

use crate::audit::{AuditLog, Outcome, Record};
use crate::conn::{self, Activity, ConnGuard};
use crate::error::Error as Refused;
use crate::redact::PatternSet;
use crate::respond::{self, Audience, Code, Refusal};

mod credential;

pub(crate) use credential::FrameCredential;
use credential::SwapError;

/// How long a closing handshake may take before the connection is dropped.
const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// Control frame payloads are at most 125 bytes (RFC 6455 §5.5); a close
/// frame's reason at most 123 after its code.
const MAX_CONTROL: usize = 125;

/// Everything the relay of one WebSocket needs.
pub(crate) struct Session {
    /// Scrubs what the upstream sends.
    pub(crate) set: Arc<PatternSet>,
    /// Checks what the agent sends.
    pub(crate) policy: Arc<Policy>,
    pub(crate) tenant: TenantId,
    pub(crate) route: RouteId,
    /// The route's `danger_unscrubbed_websocket`.
    pub(crate) unscrubbed: bool,
    /// The route's secret for the message kinds its `websocket` lists;
    /// None when it lists none.
    pub(crate) credential: Option<FrameCredential>,
    /// The handshake's record (status 101, the header redactions), written
    /// when the connection ends.
    pub(crate) record: Record,
    pub(crate) audit: AuditLog,
    pub(crate) started: Instant,
    /// `[limits] tunnel_idle_timeout`.
    pub(crate) idle: Duration,
    /// `[limits] max_websocket_message`: each message is held whole while
    /// it is scanned; a larger one closes the connection (`1009`).
    pub(crate) max_message: usize,
    /// The agent connection's guard: its slot, and the shutdown signal.
    pub(crate) guard: Option<ConnGuard>,
}

/// What one direction of the relay passed, for the record.
#[derive(Default)]
struct Tally {
    frames: u64,
    bytes: u64,
    /// Secrets replaced (upstream to agent only).
    redactions: u64,
    /// Messages the placeholder was replaced in (agent to upstream only).
    injections: u64,
    /// A known secret passed unscrubbed (`danger_unscrubbed_websocket`).
    exposed: bool,
}

/// How a relay ended.
enum End {
    /// A closing handshake finished.
    Closed,
    /// A side went away, broke the protocol or exceeded a limit.
    Broken,
    /// The agent sent a placeholder it may not use here (the policy's
    /// denial, mapped), or a message its secret cannot go in.
    Denied(Refusal),
    /// A message was larger than `max_websocket_message`.
    TooLarge,
    /// Nothing moved for the idle timeout.
    Idle,
    /// The shutdown grace period ended.
    Shutdown,
}

/// Relays a WebSocket between the agent and the upstream once both sides
/// have switched protocols, then writes the record.
pub(crate) async fn relay(agent: OnUpgrade, upstream: OnUpgrade, session: Session) {
    let max = Some(session.max_message);
    let config = WebSocketConfig::default().max_message_size(max).max_frame_size(max);
    let (agent, upstream) = match tokio::try_join!(agent, upstream) {
        Ok(both) => both,
        Err(e) => {
            debug!(error = %e, "WebSocket upgrade failed");
            write_record(session, Tally::default(), Tally::default(), &End::Broken);
            return;
        }
    };
    let agent = WebSocketStream::from_raw_socket(TokioIo::new(agent), Role::Server, Some(config)).await;
    let upstream = WebSocketStream::from_raw_socket(TokioIo::new(upstream), Role::Client, Some(config)).await;
    let (mut up, mut down) = (Tally::default(), Tally::default());
    let end = run(agent, upstream, &session, &mut up, &mut down).await;
    write_record(session, up, down, &end);
}

async fn run<A, U>(
    agent: WebSocketStream<A>,
    upstream: WebSocketStream<U>,
    s: &Session,
    up: &mut Tally,
    down: &mut Tally,
) -> End
where
    A: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    // Each direction runs on its own, so a side that is slow to read never
    // stops the other direction (both sides' buffers filling at once would
    // otherwise stall the relay for good).
    let (mut agent_tx, mut agent_rx) = agent.split();
    let (mut upstream_tx, mut upstream_rx) = upstream.split();
    let activity = Activity::new();
    let end = {
        // Checked first: only the route's own placeholder is left to swap.
        let check = |msg: Message, t: &mut Tally| {
            s.policy.check_message(s.tenant, s.route, payload(&msg)).map_err(|d| Way::Denied(Refused::Policy(d)))?;
            let Some(credential) = &s.credential else { return Ok(msg) };
            let (msg, swapped) = credential.swap(msg, s.max_message).map_err(|e| match e {
                SwapError::TooLarge => Way::TooLarge,
                SwapError::NotText => Way::Denied(not_text(s)),
            })?;
            t.injections += u64::from(swapped > 0);
            Ok(msg)
        };
        let up = pass(&mut agent_rx, &mut upstream_tx, &activity, up, check);
        let scrub = |msg: Message, t: &mut Tally| Ok(scrub(&s.set, msg, s.unscrubbed, t));
        let down = pass(&mut upstream_rx, &mut agent_tx, &activity, down, scrub);
        let idle = activity.idle(s.idle);
        let closing = conn::closing(s.guard.as_ref().map(|g| g.shutdown.clone()));
        tokio::pin!(up, down, idle, closing);
        tokio::select! {
            way = &mut up => match way {
                // A close passed up; the upstream's reply must come down.
                Way::Closed => finish(&mut down).await,
                other => other.end(),
            },
            way = &mut down => match way {
                Way::Closed => finish(&mut up).await,
                other => other.end(),
            },
            () = &mut idle => End::Idle,
            () = &mut closing => End::Shutdown,
        }
    };
    let both = |f: CloseFrame| Some((f.clone(), f));
    let closes = match &end {
        End::Denied(refusal) => Some((
            close_frame(close_code(refusal.code), &format!("airlock: {}", refusal.code)),
            close_frame(CloseCode::Away, "airlock closed the connection"),
        )),
        End::TooLarge => both(close_frame(CloseCode::Size, "airlock: message larger than max_websocket_message")),
        End::Idle => both(close_frame(CloseCode::Away, "airlock: idle timeout")),
        End::Shutdown => both(close_frame(CloseCode::Away, "airlock is shutting down")),
        End::Closed | End::Broken => None,
    };
    if let Some((to_agent, to_upstream)) = closes {
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            let _ = tokio::join!(
                agent_tx.send(Message::Close(Some(to_agent))),
                upstream_tx.send(Message::Close(Some(to_upstream)))
            );
        })
        .await;
    }
    end
}

/// Passes messages from `rx`'s side to `tx`'s, each through `each` (which
/// checks or scrubs it, and may refuse it), until something ends the relay
/// or a close frame has passed; then lets `rx`'s side finish.
async fn pass<R, W>(
    rx: &mut SplitStream<WebSocketStream<R>>,
    tx: &mut SplitSink<WebSocketStream<W>, Message>,
    activity: &Activity,
    tally: &mut Tally,
    mut each: impl FnMut(Message, &mut Tally) -> Result<Message, Way>,
) -> Way
where
    R: AsyncRead + AsyncWrite + Unpin,
    W: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(m) = rx.next().await {
        let msg = match m {
            Ok(msg) => msg,
            Err(Error::Capacity(_)) => return Way::TooLarge,
            Err(_) => return Way::Broken,
        };
        activity.touch();
        let msg = match each(msg, tally) {
            Ok(msg) => msg,
            Err(way) => return way,
        };
        tally.frames += 1;
        tally.bytes += payload(&msg).len() as u64;
        let close = matches!(msg, Message::Close(_));
        match tx.send(msg).await {
            Ok(()) => {}
            // A close answering one from that side: tungstenite has already
            // replied for it.
            Err(Error::ConnectionClosed | Error::AlreadyClosed | Error::Protocol(ProtocolError::SendAfterClosing))
                if close => {}
            Err(_) => return Way::Broken,
        }
        if close {
            // Read on, so the reply tungstenite queued goes out.
            return drain(rx).await;
        }
    }
    Way::Broken
}

/// How one direction of the relay ended.
enum Way {
    /// It carried a close frame, and the side that sent it has finished.
    Closed,
    Broken,
    Denied(Refused),
    TooLarge,
}

impl Way {
    fn end(self) -> End {
        match self {
            Way::Closed => End::Closed,
            Way::Broken => End::Broken,
            Way::Denied(e) => End::Denied(respond::refusal(&e, Audience::Proxy)),
            Way::TooLarge => End::TooLarge,
        }
    }
}

/// After one direction passed a close frame: the other must pass the reply
/// within [`CLOSE_WAIT`] for the close to be clean.
async fn finish(other: &mut (impl std::future::Future<Output = Way> + Unpin)) -> End {
    match tokio::time::timeout(CLOSE_WAIT, other).await {
        Ok(Way::Closed) => End::Closed,
        _ => End::Broken,
    }
}

/// Reads the rest of a side that has sent its close frame, so tungstenite
/// sends the reply it queued; the stream then ends. A close frame passed
/// each way is a clean close, however the transport ends after it (servers
/// often drop TCP, or TLS without `close_notify`, once they have replied).
async fn drain<S>(rx: &mut SplitStream<WebSocketStream<S>>) -> Way
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Messages after a close are not passed on.
    let read = async { while let Some(Ok(_)) = rx.next().await {} };
    let _ = tokio::time::timeout(CLOSE_WAIT, read).await;
    Way::Closed
}

/// The payload of a message as it goes on the wire (a close frame's
/// reason).
fn payload(msg: &Message) -> &[u8] {
    match msg {
        Message::Text(t) => t.as_bytes(),
        Message::Binary(b) | Message::Ping(b) | Message::Pong(b) => b,
        Message::Close(Some(f)) => f.reason.as_bytes(),
        Message::Close(None) | Message::Frame(_) => &[],
    }
}

/// The close code for the agent of a message refused with `code`: a
/// placeholder it may not use is a policy violation (`1008`); a secret
/// that cannot go in the message is airlock's side (`1011`).
fn close_code(code: Code) -> CloseCode {
    match code {
        Code::SecretUnavailable => CloseCode::Error,
        _ => CloseCode::Policy,
    }
}

/// The refusal of a text message whose placeholder would become a secret
/// that is not UTF-8. A guard: the handshake of a route listing `"text"`
/// is refused for such a secret, before the relay starts.
fn not_text(s: &Session) -> Refused {
    let route = s.policy.route(s.route).name.clone();
    let reason = "the secret is not UTF-8 text, which a WebSocket text message must be".to_owned();
    Refused::SecretUnavailable { route, reason }
}

fn close_frame(code: CloseCode, reason: &str) -> CloseFrame {
    CloseFrame { code, reason: Utf8Bytes::from(reason.to_owned()) }
}

/// A message from the upstream with every known secret replaced (or, on an
/// unscrubbed route, scanned and passed as it is).
fn scrub(set: &PatternSet, msg: Message, unscrubbed: bool, tally: &mut Tally) -> Message {
    let data = payload(&msg);
    if !set.is_match(data) {
        return msg;
    }
    if unscrubbed {
        tally.exposed = true;
        warn!("a WebSocket frame passed a known secret to the agent unscrubbed (danger_unscrubbed_websocket)");
        return msg;
    }
    let mut out = Vec::with_capacity(data.len());
    tally.redactions += set.replace_all(data, &mut out);
    match msg {
        Message::Text(_) => Message::Text(Utf8Bytes::from(String::from_utf8_lossy(&out).into_owned())),
        Message::Binary(_) => Message::Binary(Bytes::from(out)),
        Message::Ping(_) => Message::Ping(Bytes::from(truncate(out, MAX_CONTROL))),
        Message::Pong(_) => Message::Pong(Bytes::from(truncate(out, MAX_CONTROL))),
        Message::Close(Some(f)) => {
            let reason = String::from_utf8_lossy(&truncate(out, MAX_CONTROL - 2)).into_owned();
            Message::Close(Some(CloseFrame { code: f.code, reason: Utf8Bytes::from(reason) }))
        }
        other @ (Message::Close(None) | Message::Frame(_)) => other,
    }
}

/// At most `max` bytes, cut before a partial UTF-8 character (a close
/// reason must stay text).
fn truncate(mut bytes: Vec<u8>, max: usize) -> Vec<u8> {
    if bytes.len() > max {
        let mut end = max;
        while end > 0 && (bytes[end] & 0xC0) == 0x80 {
            end -= 1;
        }
        bytes.truncate(end);
    }
    bytes
}

fn write_record(session: Session, up: Tally, down: Tally, end: &End) {
    let Session { mut record, audit, started, credential, .. } = session;
    record.frames_up = Some(up.frames);
    record.frames_down = Some(down.frames);
    record.bytes_up = up.bytes;
    record.bytes_down = down.bytes;
    record.redactions += down.redactions;
    record.secret_exposed = down.exposed;
    if credential.is_some() {
        record.injections = Some(up.injections);
        record.injected |= up.injections > 0;
    }
    record.complete = matches!(end, End::Closed);
    record.duration_ms = started.elapsed().as_millis() as u64;
    if let End::Denied(refusal) = end {
        let code = refusal.code;
        record.decision = Outcome::Deny;
        record.code = Some(code.as_str().to_owned());
        info!(request_id = %record.request_id, %code, "WebSocket message refused; connection closed");
    }
    debug!(
        request_id = %record.request_id,
        frames_up = up.frames,
        frames_down = down.frames,
        injections = up.injections,
        complete = record.complete,
        "WebSocket closed"
    );
    audit.write(record);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_text_whole() {
        assert_eq!(truncate(b"abc".to_vec(), 2), b"ab");
        assert_eq!(truncate("aé".as_bytes().to_vec(), 2), b"a");
        assert_eq!(truncate(b"ab".to_vec(), 5), b"ab");
    }
}
