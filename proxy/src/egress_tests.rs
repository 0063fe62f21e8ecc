//! Egress, end to end inside the crate: a proxy on `127.0.0.1:0` whose
//! names are answered by the scripted network of
//! [`crate::upstream::scripted`], so a name can answer differently from
//! one lookup to the next (DNS rebinding) and an address can be a black
//! hole. The scripted network dials only loopback: a test that scripts a
//! public address learns whether it was tried without a packet leaving.
//!
//! Each test scripts its own names and listens on its own ports, so the
//! records of the shared scripted network are read per name and port.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use airlock_policy::Policy;

use crate::listener::RunningProxy;
use crate::upstream::scripted;

const ACME_TOKEN: &str = "acme-egress-token-0123456789";
const BETA_TOKEN: &str = "beta-egress-token-0123456789";
const PLACEHOLDER: &str = "AIRLOCK_EGRESS_KEY";
const SECRET: &str = "egress-secret-value-42";
/// A global unicast address (not one of the ranges `is_non_public`
/// lists): what a hostile DNS server answers first. Never dialled for
/// real: the scripted network reaches only loopback.
const PUBLIC: IpAddr = IpAddr::V4(Ipv4Addr::new(93, 184, 215, 14));
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A temporary AIRLOCK_HOME, removed on drop.
struct Home(PathBuf);

impl Home {
    fn new() -> Home {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("airlock-egress-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Home(dir)
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A proxy serving `config` (its `[proxy]` table gets `extra_proxy`,
/// and `routes` is appended), with tenants `acme` and `beta` and a file
/// secret `key`.
async fn proxy(extra_proxy: &str, routes: &str) -> (Home, RunningProxy) {
    let home = Home::new();
    let key = home.0.join("key");
    std::fs::write(&key, SECRET).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n{extra_proxy}\n\n[secrets.key]\nsource = \"file\"\npath = \"{}\"\n\n\
         [tenants.beta]\ntoken = \"{BETA_TOKEN}\"\n\n[tenants.acme]\ntoken = \"{ACME_TOKEN}\"\n{routes}\n",
        key.display()
    );
    let path = home.0.join("airlock.toml");
    std::fs::write(&path, config).unwrap();
    let policy = Policy::load(&path, &home.0).unwrap();
    let running = crate::Proxy::bind(&home.0, &path, policy).await.unwrap().spawn();
    (home, running)
}

/// A route of acme's to `host` (plain HTTP or TLS alike).
fn route(host: &str, extra: &str) -> String {
    format!(
        "[[tenants.acme.routes]]\nname = \"r\"\nhost = \"{host}\"\nsecret = \"key\"\nplaceholder = \"{PLACEHOLDER}\"\n{extra}\n"
    )
}

fn proxy_auth(user: &str, token: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{token}"));
    format!("Proxy-Authorization: Basic {b64}\r\n")
}

/// An HTTP/1.1 origin on `listener`: answers `200 ok` to every request,
/// keeping connections alive; counts connections and keeps request heads.
struct Origin {
    connections: Arc<AtomicUsize>,
    heads: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Origin {
    fn serve(listener: TcpListener) -> Origin {
        let connections = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (c, h) = (Arc::clone(&connections), Arc::clone(&heads));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let h = Arc::clone(&h);
                tokio::spawn(async move {
                    let mut stream = BufReader::new(stream);
                    while let Some(head) = read_head(&mut stream).await {
                        h.lock().unwrap().push(head);
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if stream.get_mut().write_all(answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Origin { connections, heads }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

/// A request head (a request of these tests has no body), or None at the
/// end of the stream.
async fn read_head(stream: &mut BufReader<TcpStream>) -> Option<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        head.push_str(&line);
        if line == "\r\n" {
            return Some(head);
        }
    }
}

/// Sends `request` to the proxy and reads until it closes the connection:
/// the status and the whole answer.
async fn exchange(proxy: SocketAddr, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the proxy did not answer in time");
    let text = String::from_utf8_lossy(&answer).into_owned();
    (status(&text), text)
}

/// Sends a CONNECT and reads the answer's head: the status, and the head.
async fn connect(proxy: SocketAddr, target: &str, tenant: (&str, &str)) -> (u16, String) {
    let mut stream = BufReader::new(TcpStream::connect(proxy).await.unwrap());
    let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{}\r\n", proxy_auth(tenant.0, tenant.1));
    stream.get_mut().write_all(request.as_bytes()).await.unwrap();
    let head = tokio::time::timeout(Duration::from_secs(30), read_head(&mut stream)).await;
    let head = head.expect("the proxy did not answer in time").unwrap_or_default();
    (status(&head), head)
}

fn status(text: &str) -> u16 {
    text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// An absolute-form GET of `http://host:port/` as `tenant`, closing.
fn get(host: &str, port: u16, tenant: (&str, &str), headers: &str) -> String {
    format!(
        "GET http://{host}:{port}/ HTTP/1.1\r\nHost: {host}:{port}\r\n{}{headers}Connection: close\r\n\r\n",
        proxy_auth(tenant.0, tenant.1)
    )
}

async fn local_listener() -> (TcpListener, u16) {
    let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

#[tokio::test]
async fn a_tunnel_connects_only_to_the_address_it_vetted() {
    // A hostile DNS server answers the check with a public address, and
    // every later lookup with loopback: the tunnel must go to what was
    // vetted (here unreachable), never to the loopback listener.
    let (listener, port) = local_listener().await;
    let origin = Origin::serve(listener);
    let name = "tunnel.rebind.egress.test";
    scripted::script(name, vec![vec![PUBLIC], vec![LOOPBACK]]);
    let (_home, proxy) = proxy("", "").await;
    let (status, head) = connect(proxy.addr(), &format!("{name}:{port}"), ("acme", ACME_TOKEN)).await;
    assert_eq!(scripted::dialled(port), vec![SocketAddr::new(PUBLIC, port)], "only the vetted address is dialled");
    assert_eq!(scripted::lookups(name), 1, "one lookup per connection");
    assert_eq!(origin.connections(), 0, "the rebound loopback address was never reached");
    assert_eq!(status, 502, "{head}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_plain_request_to_an_unrouted_host_connects_only_to_the_address_it_vetted() {
    let (listener, port) = local_listener().await;
    let origin = Origin::serve(listener);
    let name = "plain.rebind.egress.test";
    scripted::script(name, vec![vec![PUBLIC], vec![LOOPBACK]]);
    let (_home, proxy) = proxy("", "").await;
    let (status, answer) = exchange(proxy.addr(), &get(name, port, ("acme", ACME_TOKEN), "")).await;
    assert_eq!(scripted::dialled(port), vec![SocketAddr::new(PUBLIC, port)], "only the vetted address is dialled");
    assert_eq!(scripted::lookups(name), 1, "one lookup per connection");
    assert_eq!(origin.connections(), 0, "the rebound loopback address was never reached");
    assert_eq!(status, 502, "{answer}");
    assert!(answer.contains("x-airlock-denied: upstream_unreachable"), "{answer}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_pooled_connection_is_never_reused_under_a_stricter_rule() {
    // acme's route names the host, so acme may reach it at loopback; its
    // connection is pooled. beta has no route: its request may go only to
    // a public address, so it must not get acme's pooled connection, even
    // when its own lookup answers a public address.
    let (listener, port) = local_listener().await;
    let origin = Origin::serve(listener);
    let name = "pool.egress.test";
    scripted::script(name, vec![vec![LOOPBACK], vec![PUBLIC], vec![LOOPBACK]]);
    let (_home, proxy) = proxy("", &route(&format!("{name}:{port}"), "")).await;
    let (status, answer) = exchange(proxy.addr(), &get(name, port, ("acme", ACME_TOKEN), "")).await;
    assert_eq!(status, 200, "acme's route names the host: {answer}");
    let (status, answer) = exchange(proxy.addr(), &get(name, port, ("beta", BETA_TOKEN), "")).await;
    assert_ne!(status, 200, "beta reached the private address over acme's pooled connection: {answer}");
    assert_eq!(origin.heads().len(), 1, "only acme's request reached the origin");
    assert_eq!(
        scripted::dialled(port),
        vec![SocketAddr::new(LOOPBACK, port), SocketAddr::new(PUBLIC, port)],
        "beta's request dialled what its own lookup vetted"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_cleartext_secret_goes_only_to_the_private_address_vetted() {
    // The route may carry its secret in cleartext to a private address.
    // The lookup answers loopback, then a public address: the secret must
    // go where the check looked, never to the second answer.
    let (listener, port) = local_listener().await;
    let origin = Origin::serve(listener);
    let name = "clear.rebind.egress.test";
    scripted::script(name, vec![vec![LOOPBACK], vec![PUBLIC]]);
    let routes = route(&format!("{name}:{port}"), "danger_plaintext_private_upstream = true");
    let (_home, proxy) = proxy("", &routes).await;
    let header = format!("X-Api-Key: {PLACEHOLDER}\r\n");
    let (status, answer) = exchange(proxy.addr(), &get(name, port, ("acme", ACME_TOKEN), &header)).await;
    assert_eq!(scripted::dialled(port), vec![SocketAddr::new(LOOPBACK, port)], "only the vetted address is dialled");
    assert_eq!(scripted::lookups(name), 1, "one lookup per connection");
    assert_eq!(status, 200, "{answer}");
    assert!(origin.heads()[0].contains(SECRET), "the secret went to the vetted private address");
    proxy.shutdown().await;
}

#[tokio::test]
async fn egress_refusals_keep_their_codes_and_words() {
    // An unrouted host at loopback: private_egress_denied, tunnel or plain.
    let tunnel = "private.egress.test";
    scripted::script(tunnel, vec![vec![LOOPBACK]]);
    let clear = "public.clear.egress.test";
    scripted::script(clear, vec![vec![PUBLIC]]);
    let (_, port) = local_listener().await;
    let routes = route(&format!("{clear}:{port}"), "danger_plaintext_private_upstream = true");
    let (_home, proxy) = proxy("", &routes).await;
    let (status, head) = connect(proxy.addr(), &format!("{tunnel}:{port}"), ("acme", ACME_TOKEN)).await;
    assert_eq!(status, 403, "{head}");
    assert!(head.contains("private_egress_denied"), "{head}");
    let (status, answer) = exchange(proxy.addr(), &get(tunnel, port, ("acme", ACME_TOKEN), "")).await;
    assert_eq!(status, 403, "{answer}");
    assert!(answer.contains("x-airlock-denied: private_egress_denied"), "{answer}");
    assert!(
        answer.contains(&format!(
            "{tunnel} resolves to 127.0.0.1, a loopback, private or link-local address, and no route of tenant \
             'acme' names it"
        )),
        "{answer}"
    );
    assert!(
        answer.contains(&format!(
            "if {tunnel} is meant to be reachable, ask the operator to add a route for it to tenant 'acme'"
        )),
        "{answer}"
    );
    // A cleartext secret to a host that resolves public: insecure_upstream.
    let header = format!("X-Api-Key: {PLACEHOLDER}\r\n");
    let (status, answer) = exchange(proxy.addr(), &get(clear, port, ("acme", ACME_TOKEN), &header)).await;
    assert_eq!(status, 403, "{answer}");
    assert!(answer.contains("x-airlock-denied: insecure_upstream"), "{answer}");
    assert!(
        answer.contains(&format!(
            "{clear} resolves to {PUBLIC}, a public address; route 'r' allows cleartext only to loopback or private \
             addresses"
        )),
        "{answer}"
    );
    assert!(answer.contains(&format!("use https://{clear}:{port}/…")), "{answer}");
    assert!(!answer.contains(SECRET));
    assert!(scripted::dialled(port).is_empty(), "nothing refused was dialled");
    proxy.shutdown().await;
}

/// A loopback address whose connection attempts hang (its listener's
/// accept queue is full, so the kernel drops further SYNs), and a working
/// listener on another loopback address at the same port.
async fn black_hole_and_origin() -> (TcpListener, Vec<TcpStream>, Origin, u16) {
    let hole_ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    for _ in 0..20 {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(hole_ip, 0)).unwrap();
        let port = socket.local_addr().unwrap().port();
        let Ok(origin) = TcpListener::bind((LOOPBACK, port)).await else { continue };
        // A backlog of 0 holds one connection: once it is queued, SYNs go
        // unanswered. Fill it, and check the next attempt hangs.
        let hole = socket.listen(0).unwrap();
        let mut fillers = Vec::new();
        let mut holding = false;
        for _ in 0..8 {
            match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect((hole_ip, port))).await {
                Ok(Ok(s)) => fillers.push(s),
                Ok(Err(e)) => panic!("connecting to the black hole failed: {e}"),
                Err(_) => {
                    holding = true;
                    break;
                }
            }
        }
        assert!(holding, "the full listener did not black-hole connection attempts");
        return (hole, fillers, Origin::serve(origin), port);
    }
    panic!("no port free on both loopback addresses");
}

#[tokio::test]
async fn a_black_holed_first_address_does_not_starve_the_next() {
    let (_hole, _fillers, origin, port) = black_hole_and_origin().await;
    let name = "eyeballs.egress.test";
    scripted::script(name, vec![vec![IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), LOOPBACK]]);
    let limits = "\n[limits]\nupstream_connect_timeout = \"10s\"\n";
    let (_home, proxy) = proxy("deny_private_egress = false", limits).await;
    let started = Instant::now();
    let (status, head) = connect(proxy.addr(), &format!("{name}:{port}"), ("acme", ACME_TOKEN)).await;
    let took = started.elapsed();
    assert_eq!(status, 200, "{head}");
    assert!(took < Duration::from_secs(3), "the second address answered only after {took:?}");
    assert_eq!(origin.connections(), 1);
    proxy.shutdown().await;
}
