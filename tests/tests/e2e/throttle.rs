//! Wrong proxy credentials: a client hammering wrong tokens is slowed and
//! its failures are coalesced in the audit log, while the credential-less
//! challenge, a correct token, and another peer address are not held up.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use airlock_tests::client;
use airlock_tests::upstream::Protocols;
use airlock_tests::*;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

const WRONG: &str = "not-the-acme-token-0123";

/// A connection to the proxy from the loopback address `from` (127.0.0.x:
/// another peer as the proxy sees it).
async fn dial(proxy: SocketAddr, from: [u8; 4]) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    socket.connect(proxy).await.unwrap()
}

/// One CONNECT from `from`; its status and how long the answer took.
async fn connect(proxy: SocketAddr, from: [u8; 4], authority: &str, token: Option<&str>) -> (u16, Duration) {
    let started = Instant::now();
    let stream = dial(proxy, from).await;
    let reply = client::connect_on(stream, authority, token.map(|t| ("acme", t))).await.unwrap();
    assert!(!reply.body.contains(ACME_TOKEN) && !reply.head.contains(ACME_TOKEN));
    (reply.status, started.elapsed())
}

/// One absolute-form plain-HTTP request with a wrong token; its status.
async fn plain(proxy: SocketAddr, authority: &str) -> u16 {
    let mut stream = dial(proxy, [127, 0, 0, 1]).await;
    let req = format!(
        "GET http://{authority}/ HTTP/1.1\r\nHost: {authority}\r\nProxy-Authorization: {}\r\n\r\n",
        client::basic("acme", WRONG)
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    client::read_response_head(&mut stream).await.unwrap().0
}

/// One action API request with a wrong token; its status.
async fn action(proxy: SocketAddr) -> u16 {
    let auth = client::basic_auth("acme", WRONG);
    let envelope = r#"{"tenant": "acme", "service": "echo", "method": "GET", "path": "/"}"#;
    client::action(proxy, &[("authorization", &auth)], envelope).await.unwrap().status
}

/// How many wrong-token attempts `attempt` made, each answered with
/// `status`, until `deadline` (the one under way then is finished).
async fn hammer<F: Future<Output = u16>>(deadline: Instant, status: u16, mut attempt: impl FnMut() -> F) -> u64 {
    let mut n = 0;
    while Instant::now() < deadline {
        assert_eq!(attempt().await, status);
        n += 1;
    }
    n
}

#[tokio::test]
async fn wrong_tokens_are_slowed_and_coalesced_per_peer_address() {
    const WINDOW: Duration = Duration::from_secs(2);
    let upstream = Upstream::start(Protocols::Http1).await;
    let TestProxy { home, proxy } = TestProxy::start(&standard_config(&upstream, "", "")).await;
    let addr = proxy.addr();
    let authority = format!("api.acme.test:{}", upstream.port());
    let authority = authority.as_str();
    const LOCAL: [u8; 4] = [127, 0, 0, 1];

    // The credential-less challenge git and curl start with is answered at
    // once, however often, and never counts as a failure.
    for _ in 0..10 {
        let (status, took) = connect(addr, LOCAL, authority, None).await;
        assert_eq!(status, 407);
        assert!(took < Duration::from_secs(1), "a challenge was held for {took:?}");
    }

    // One client hammers wrong tokens for WINDOW over CONNECT, plain HTTP
    // and the action API at once; meanwhile another peer address is
    // answered without delay.
    let deadline = Instant::now() + WINDOW;
    let other_peer = async {
        tokio::time::sleep(WINDOW / 2).await;
        let (wrong, wrong_took) = connect(addr, [127, 0, 0, 2], authority, Some(WRONG)).await;
        let (right, right_took) = connect(addr, [127, 0, 0, 2], authority, Some(ACME_TOKEN)).await;
        assert_eq!((wrong, right), (407, 200));
        (wrong_took, right_took)
    };
    let (c1, c2, p, a, (wrong_took, right_took)) = tokio::join!(
        hammer(deadline, 407, || async { connect(addr, LOCAL, authority, Some(WRONG)).await.0 }),
        hammer(deadline, 407, || async { connect(addr, LOCAL, authority, Some(WRONG)).await.0 }),
        hammer(deadline, 407, || plain(addr, authority)),
        hammer(deadline, 401, || action(addr)),
        other_peer,
    );
    let hammered = c1 + c2 + p + a;
    eprintln!(
        "wrong tokens answered from one address in {WINDOW:?}: {hammered} (CONNECT {c1}+{c2}, plain {p}, action {a})"
    );
    assert!(hammered < 200, "{hammered} wrong tokens answered in {WINDOW:?}: not slowed");
    assert!(wrong_took < Duration::from_secs(1), "another address was held {wrong_took:?} for a wrong token");
    assert!(right_took < Duration::from_secs(1), "another address was held {right_took:?} for the right token");

    // The right token from the hammering address still works (after at
    // most the longest delay), and resets it: the next wrong token is
    // answered at once.
    let (status, took) = connect(addr, LOCAL, authority, Some(ACME_TOKEN)).await;
    assert_eq!(status, 200);
    assert!(took < Duration::from_secs(8), "the right token was held {took:?}");
    let (status, took) = connect(addr, LOCAL, authority, Some(WRONG)).await;
    assert_eq!(status, 407);
    assert!(took < Duration::from_secs(2), "a success did not reset the address: held {took:?}");
    let attempts = hammered + 2;

    // The audit log has a handful of records for all those failures, whose
    // counts add up to the attempts made.
    proxy.shutdown().await;
    let text = std::fs::read_to_string(home.path.join("audit.jsonl")).unwrap();
    assert_no_secret("audit", &text, &[ACME_TOKEN, WRONG]);
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let failures: Vec<&serde_json::Value> = lines.iter().filter(|l| l["code"] == "unknown_tenant").collect();
    let counted: u64 = failures.iter().map(|l| l["attempts"].as_u64().unwrap_or(1)).sum();
    eprintln!("{} audit records for {attempts} failed authentications", failures.len());
    assert_eq!(counted, attempts, "the records' counts must add up to the attempts");
    assert!(failures.len() <= 6, "{} records for {attempts} failures: not coalesced", failures.len());
    assert!(failures.iter().all(|l| l["decision"] == "deny" && l["tenant"].is_null()));
    // The challenges are coalesced too (a flood of them cannot fill the
    // disk either), as `challenge`, not `deny`.
    let challenges: Vec<_> = lines.iter().filter(|l| l["code"] == "proxy_auth_required").collect();
    assert!(challenges.iter().all(|l| l["decision"] == "challenge"), "{challenges:?}");
    assert_eq!(challenges.iter().map(|l| l["attempts"].as_u64().unwrap_or(1)).sum::<u64>(), 10, "{challenges:?}");
    assert!(challenges.len() <= 3, "{} records for 10 challenges: not coalesced", challenges.len());
    assert_eq!(upstream.connections(), 0, "nothing reaches the upstream without valid credentials");
}
