//! WebSockets for the end-to-end tests, both sides real (tokio-tungstenite):
//! the echo upstream's WebSocket endpoints, and a client that reaches them
//! through the proxy (CONNECT, TLS, handshake) the way an agent's library
//! does.
//!
//! Upstream endpoints (the handshake's `Authorization` is what airlock
//! injected):
//! - `/ws`: echoes every text and binary message; each message received is
//!   recorded as a [`Seen`] with method `WS` and the payload in a
//!   `message` header.
//! - `/ws-leak`: first sends the `Authorization` value back the ways a
//!   hostile server could — a text message split across three fragments
//!   (the split inside the key), a binary message with the key inside, a
//!   ping carrying the key — then echoes like `/ws`; a text message `bye`
//!   makes it close with the key in the close reason.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

use crate::client;
use crate::upstream::{Seen, TestBody, full_body};

pub use tokio_tungstenite::tungstenite;

/// A client WebSocket through the proxy.
pub type ClientWs = WebSocketStream<TlsStream<TcpStream>>;

/// Answers a WebSocket handshake on the echo upstream and serves the
/// endpoint named by the path.
pub(crate) fn accept(req: &mut Request<Incoming>, auth: &str, seen: &Arc<Mutex<Vec<Seen>>>) -> Response<TestBody> {
    let Some(key) = req.headers().get("sec-websocket-key").map(|k| derive_accept_key(k.as_bytes())) else {
        return Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .body(full_body("not a WebSocket handshake"))
            .unwrap();
    };
    let path = req.uri().path().to_owned();
    let on_upgrade = hyper::upgrade::on(req);
    let (auth, seen) = (auth.to_owned(), Arc::clone(seen));
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else { return };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        serve(ws, &path, &auth, &seen).await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("upgrade", "websocket")
        .header("connection", "upgrade")
        .header("sec-websocket-accept", key)
        .body(full_body(Bytes::new()))
        .unwrap()
}

async fn serve<S>(mut ws: WebSocketStream<S>, path: &str, auth: &str, seen: &Mutex<Vec<Seen>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if path == "/ws-leak" {
        let bytes = auth.as_bytes();
        let (a, rest) = bytes.split_at(bytes.len() / 3);
        let (b, c) = rest.split_at(rest.len() / 2);
        let frames = [
            Frame::message(Bytes::copy_from_slice(a), OpCode::Data(Data::Text), false),
            Frame::message(Bytes::copy_from_slice(b), OpCode::Data(Data::Continue), false),
            Frame::message(Bytes::copy_from_slice(c), OpCode::Data(Data::Continue), true),
        ];
        for f in frames {
            if ws.send(Message::Frame(f)).await.is_err() {
                return;
            }
        }
        let mut binary = vec![0u8, 1, 2];
        binary.extend_from_slice(bytes);
        binary.push(0xff);
        let _ = ws.send(Message::Binary(binary.into())).await;
        let _ = ws.send(Message::Ping(Bytes::copy_from_slice(&bytes[..bytes.len().min(125)]))).await;
    }
    while let Some(Ok(msg)) = ws.next().await {
        let text = match &msg {
            Message::Text(t) => t.to_string(),
            Message::Binary(b) => String::from_utf8_lossy(b).into_owned(),
            // Reading on lets tungstenite send the close reply; the loop
            // then ends.
            _ => continue,
        };
        seen.lock().unwrap().push(Seen {
            method: "WS".into(),
            path: path.to_owned(),
            version: String::new(),
            headers: vec![("message".into(), text.clone())],
            body: Vec::new(),
        });
        if path == "/ws-leak" && text == "bye" {
            let reason: String = format!("bye {auth}").chars().take(120).collect();
            let _ = ws.close(Some(CloseFrame { code: CloseCode::Normal, reason: reason.into() })).await;
            // Read the peer's reply so the closing handshake completes.
            while let Some(Ok(_)) = ws.next().await {}
            return;
        }
        if ws.send(msg).await.is_err() {
            return;
        }
    }
}

/// Opens a WebSocket to `wss://host:port{path}` through the proxy: CONNECT
/// with the tenant's credentials, TLS trusting `roots_pem`, then the
/// handshake with the extra `headers`. Returns the socket and the
/// handshake's response (status 101), or the refusal.
pub async fn connect(
    proxy: SocketAddr,
    creds: (&str, &str),
    host: &str,
    port: u16,
    path: &str,
    roots_pem: &[&str],
    headers: &[(&str, &str)],
) -> Result<(ClientWs, Response<Option<Vec<u8>>>), tungstenite::Error> {
    let tls = client::tunnel(proxy, creds, host, port, roots_pem, client::Http::H1).await?;
    let mut req = format!("wss://{host}:{port}{path}").into_client_request()?;
    for (n, v) in headers {
        req.headers_mut()
            .insert(http::HeaderName::from_bytes(n.as_bytes()).unwrap(), http::HeaderValue::from_str(v).unwrap());
    }
    tokio_tungstenite::client_async(req, tls).await
}

/// Reads messages until a text or binary one arrives (answering pings on
/// the way); `None` when the socket closed first.
pub async fn next_data(ws: &mut ClientWs) -> Option<Message> {
    loop {
        match ws.next().await? {
            Ok(m @ (Message::Text(_) | Message::Binary(_))) => return Some(m),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

/// Reads until the peer's close frame arrives (passing over anything else)
/// and returns it; `None` when the socket ended without one, or with one
/// that carries no code.
pub async fn next_close(ws: &mut ClientWs) -> Option<CloseFrame> {
    loop {
        match ws.next().await? {
            Ok(Message::Close(frame)) => return frame,
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}
