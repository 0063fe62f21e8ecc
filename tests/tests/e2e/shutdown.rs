//! Graceful shutdown of a real `airlock serve`: SIGTERM stops accepting at
//! once, lets requests in flight finish within `shutdown_grace`, cuts off
//! what is still running after it, audits both, and exits 0.

use std::time::Duration;

use airlock_tests::client;
use airlock_tests::upstream::Protocols;
use airlock_tests::ws::tungstenite::Message;
use airlock_tests::*;
use futures_util::SinkExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Opens an intercepted connection, asks for the `/sse` stream and returns
/// once its first event has arrived.
pub(super) async fn first_event(
    addr: std::net::SocketAddr,
    ca: &str,
    port: u16,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let authority = format!("api.acme.test:{port}");
    let reply = client::connect(addr, &authority, Some(("acme", ACME_TOKEN))).await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.head);
    let mut tls = client::tls(reply.stream, "api.acme.test", &[ca], &[b"http/1.1"]).await.unwrap();
    let head = format!("GET /sse HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer {ACME_PLACEHOLDER}\r\n\r\n");
    tls.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("\"n\": 1") {
        let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed before the first event: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    tls
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_cuts_off_the_rest() {
    let upstream = Upstream::start(Protocols::Both).await;
    let home = TempHome::new("sigterm");
    store_standard_secrets(&home.path);
    let config = standard_config(&upstream, "", "\n[limits]\nshutdown_grace = \"3s\"\n");
    std::fs::write(home.path.join("airlock.toml"), config).unwrap();
    let mut serve = Served::start(&home.path, "debug").await;
    let ca = std::fs::read_to_string(home.path.join("ca.pem")).unwrap();
    let port = upstream.port();

    // Two event streams in flight, and a WebSocket open.
    let mut streams = [first_event(serve.addr, &ca, port).await, first_event(serve.addr, &ca, port).await];
    let (mut socket, _) =
        airlock_tests::ws::connect(serve.addr, ("acme", ACME_TOKEN), "api.acme.test", port, "/ws", &[&ca], &[])
            .await
            .unwrap();
    socket.send(Message::text("before")).await.unwrap();
    assert_eq!(airlock_tests::ws::next_data(&mut socket).await, Some(Message::text("before")));

    let ok = std::process::Command::new("kill").args(["-TERM", &serve.pid().to_string()]).status().unwrap().success();
    assert!(ok, "kill -TERM failed");
    let started = std::time::Instant::now();
    // No new connection is accepted...
    let mut refused = false;
    for _ in 0..200 {
        if TcpStream::connect(serve.addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "still accepting after SIGTERM: {}", serve.log());

    // The WebSocket works during the grace period...
    socket.send(Message::text("during")).await.unwrap();
    assert_eq!(airlock_tests::ws::next_data(&mut socket).await, Some(Message::text("during")));
    // ...one stream is let finish and ends whole; the other is still open
    // when the grace period ends and is cut off.
    upstream.release_sse();
    let mut endings = Vec::new();
    for tls in &mut streams {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(15), tls.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "a stream outlived the grace period");
        endings.push(String::from_utf8_lossy(&rest).into_owned());
    }
    // ...and is closed (1001) when it ends.
    let close = tokio::time::timeout(Duration::from_secs(15), airlock_tests::ws::next_close(&mut socket))
        .await
        .expect("the WebSocket outlived the grace period");
    assert_eq!(close.map(|f| u16::from(f.code)), Some(1001));
    let whole = |t: &String| t.contains("\"n\": 2") && t.ends_with("0\r\n\r\n");
    assert_eq!(endings.iter().filter(|t| whole(t)).count(), 1, "{endings:?}");
    assert!(endings.iter().any(|t| !t.contains("\"n\": 2") && !t.ends_with("0\r\n\r\n")), "{endings:?}");

    let status = tokio::time::timeout(Duration::from_secs(15), serve.child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}: {}", serve.log());
    assert!(started.elapsed() >= Duration::from_millis(2500), "exited before the grace period ended");

    // Both are audited, the cut-off one as incomplete, and the log is whole.
    let records = audit_records(&home.path.join("audit.jsonl"));
    let audit = format!("{records:#?}");
    let sse: Vec<_> = records.iter().filter(|r| r["path"] == "/sse").collect();
    assert_eq!(sse.len(), 2, "{audit}");
    assert_eq!(sse.iter().filter(|r| r["complete"] == true).count(), 1, "{audit}");
    assert_eq!(sse.iter().filter(|r| r["complete"] == false).count(), 1, "{audit}");
    let ws: Vec<_> = records.iter().filter(|r| r["path"] == "/ws").collect();
    assert_eq!(ws.len(), 1, "{audit}");
    assert_eq!((ws[0]["complete"].as_bool(), ws[0]["frames_up"].as_u64()), (Some(false), Some(2)), "{audit}");
    let verify = std::process::Command::new(airlock_bin())
        .args(["audit", "--verify"])
        .env("AIRLOCK_HOME", &home.path)
        .env_remove("AIRLOCK_CONFIG")
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
    let log = serve.log();
    assert!(log.contains("shutdown grace period over"), "{log}");
    assert_no_secret("serve's log", &log, &[ACME_SECRET, BETA_SECRET]);
}
