//! The audit trail survives what can happen to it: `airlock serve` killed
//! with SIGKILL mid-load, a crash mid-write, a disk that stops taking
//! writes, and someone who can write the log deleting or rewriting records.
//! And every refused request or connection has a record, whoever refused
//! it (airlock, or hyper before airlock saw the request).

use std::path::Path;
use std::process::Command as StdCommand;
use std::time::Duration;

use airlock_tests::client::{self, Http};
use airlock_tests::upstream::Protocols;
use airlock_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::shutdown::first_event;

/// The verification key `airlock serve` printed when it created the seal.
fn printed_key(log: &str) -> String {
    let after = log.split("verification key").nth(1).unwrap_or_else(|| panic!("no verification key printed: {log}"));
    let key = after.lines().nth(1).unwrap().trim().to_owned();
    assert_eq!(key.len(), 64, "{log}");
    key
}

/// `airlock audit --verify` (with `--key` when given): exit success and
/// output.
fn verify(home: &Path, key: Option<&str>) -> (bool, String) {
    let mut cmd = StdCommand::new(airlock_bin());
    cmd.args(["audit", "--verify"])
        .env("AIRLOCK_HOME", home)
        .env_remove("AIRLOCK_CONFIG")
        .env_remove("AIRLOCK_AUDIT_KEY");
    if let Some(k) = key {
        cmd.args(["--key", k]);
    }
    let out = cmd.output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn sigkill(serve: &Served) {
    let ok = StdCommand::new("kill").args(["-KILL", &serve.pid().to_string()]).status().unwrap().success();
    assert!(ok);
}

async fn stop(mut serve: Served) {
    let ok = StdCommand::new("kill").args(["-TERM", &serve.pid().to_string()]).status().unwrap().success();
    assert!(ok);
    let status = tokio::time::timeout(Duration::from_secs(20), serve.child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}: {}", serve.log());
}

/// One request through `serve` to the echo route; its status.
async fn one_request(addr: std::net::SocketAddr, ca: &str, port: u16, path: &str) -> u16 {
    let req =
        client::get("api.acme.test", port, path, &[("authorization", &format!("Bearer {ACME_PLACEHOLDER}"))], Http::H1);
    client::request(addr, ("acme", ACME_TOKEN), "api.acme.test", port, &[ca], Http::H1, req).await.unwrap().status
}

struct Setup {
    upstream: Upstream,
    home: TempHome,
}

async fn setup(tag: &str, extra: &str) -> Setup {
    let upstream = Upstream::start(Protocols::Both).await;
    let home = TempHome::new(tag);
    store_standard_secrets(&home.path);
    std::fs::write(home.path.join("airlock.toml"), standard_config(&upstream, "", extra)).unwrap();
    Setup { upstream, home }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_load_leaves_a_log_that_verifies_with_a_trace_of_each_running_request() {
    let Setup { upstream, home } = setup("sigkill", "").await;
    let serve = Served::start(&home.path, "info").await;
    let key = printed_key(&serve.log());
    let ca = std::fs::read_to_string(home.path.join("ca.pem")).unwrap();
    let port = upstream.port();

    // Three event streams held open, and short requests all the while.
    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(first_event(serve.addr, &ca, port).await);
    }
    let addr = serve.addr;
    let load: Vec<_> = (0..4)
        .map(|i| {
            let ca = ca.clone();
            tokio::spawn(async move {
                for n in 0.. {
                    let req = client::get(
                        "api.acme.test",
                        port,
                        &format!("/echo/{i}/{n}"),
                        &[("authorization", &format!("Bearer {ACME_PLACEHOLDER}"))],
                        Http::H1,
                    );
                    if client::request(addr, ("acme", ACME_TOKEN), "api.acme.test", port, &[&ca], Http::H1, req)
                        .await
                        .is_err()
                    {
                        return n;
                    }
                }
                0
            })
        })
        .collect();
    // Each stream has been running for over a second: each has its trace.
    let log_path = home.path.join("audit.jsonl");
    let begun = || audit_all(&log_path).iter().filter(|l| l["event"] == "begin" && l["path"] == "/sse").count();
    assert!(wait_for(Duration::from_secs(10), || begun() == 3).await, "{:?}", audit_all(&log_path));
    sigkill(&serve);
    let mut sent = 0;
    for l in load {
        sent += l.await.unwrap();
    }
    assert!(sent > 0, "the load ran");
    drop(streams);

    // Whatever the kill cut, the next start repairs and continues the
    // chain, and the verification key checks every record.
    let serve = Served::start(&home.path, "info").await;
    assert_eq!(one_request(serve.addr, &ca, port, "/after").await, 200);
    stop(serve).await;
    let (ok, out) = verify(&home.path, Some(&key));
    assert!(ok, "{out}");
    assert!(out.contains("every record's MAC checked"), "{out}");
    assert!(out.contains("3 requests began but have no record"), "{out}");
    let (ok, out) = verify(&home.path, None);
    assert!(ok, "{out}");
    let lines = audit_all(&log_path);
    assert_eq!(lines.iter().filter(|l| l["event"] == "open").count(), 2);
    assert!(lines.iter().any(|l| l["path"] == "/after" && l["decision"] == "allow"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_is_repaired_at_start_and_the_chain_continues() {
    let Setup { upstream, home } = setup("torn", "").await;
    let serve = Served::start(&home.path, "info").await;
    let key = printed_key(&serve.log());
    let ca = std::fs::read_to_string(home.path.join("ca.pem")).unwrap();
    assert_eq!(one_request(serve.addr, &ca, upstream.port(), "/before").await, 200);
    stop(serve).await;

    // A crash mid-write leaves part of a line.
    let log_path = home.path.join("audit.jsonl");
    let mut f = std::fs::OpenOptions::new().append(true).open(&log_path).unwrap();
    std::io::Write::write_all(&mut f, br#"{"ts":"2026-11-29T00:00:00.000Z","request_id":"cut"#).unwrap();
    drop(f);

    let serve = Served::start(&home.path, "info").await;
    assert_eq!(one_request(serve.addr, &ca, upstream.port(), "/after").await, 200);
    stop(serve).await;
    let (ok, out) = verify(&home.path, Some(&key));
    assert!(ok, "{out}");
    assert!(out.contains("1 partial lines left by a crash were repaired"), "{out}");
    let lines = audit_all(&log_path);
    let repaired: Vec<_> = lines.iter().filter(|l| l["event"] == "repaired").collect();
    assert_eq!(repaired.len(), 1, "{lines:?}");
    assert!(repaired[0]["detail"].as_str().unwrap().contains("50 bytes"), "{lines:?}");
    assert!(lines.iter().any(|l| l["path"] == "/after"));
}

/// Rewrites every line of the log at `path` with `python3`: `edit` (Python,
/// on the dict `r`) then re-chains it, MACing with the key in the seal (as
/// someone who took the machine could) or with plain SHA-256.
fn rewrite(path: &Path, edit: &str, with_seal: bool) {
    let script = format!(
        r#"
import hashlib, hmac, json, sys
path = sys.argv[1]
seal = json.load(open(path + ".seal"))
key = bytes.fromhex(seal["key"])
prev, seq, out = "0" * 64, 0, []
for line in open(path):
    r = json.loads(line)
    for k in ("seq", "epoch", "prev", "hash"):
        r.pop(k, None)
    {edit}
    seq += 1
    r["seq"], r["epoch"], r["prev"] = seq, seal["epoch"], prev
    covered = json.dumps(r, separators=(",", ":")).encode()
    h = hmac.new(key, covered, hashlib.sha256).hexdigest() if {with_seal} else hashlib.sha256(covered).hexdigest()
    out.append(covered[:-1].decode() + ',"hash":"' + h + '"}}\n')
    prev = h
open(path, "w").write("".join(out))
head = {{"seq": seq, "hash": prev, "epoch": seal["epoch"]}}
head["mac"] = hmac.new(key, ("%d:%s" % (seq, prev)).encode(), hashlib.sha256).hexdigest()
open(path + ".head", "w").write(json.dumps(head))
"#,
        with_seal = if with_seal { "True" } else { "False" }
    );
    let out = StdCommand::new("python3").args(["-c", &script]).arg(path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_emptied_or_rewritten_records_are_detected() {
    let Setup { upstream, home } = setup("tamper", "").await;
    let serve = Served::start(&home.path, "info").await;
    let key = printed_key(&serve.log());
    let ca = std::fs::read_to_string(home.path.join("ca.pem")).unwrap();
    for n in 0..3 {
        assert_eq!(one_request(serve.addr, &ca, upstream.port(), &format!("/r{n}")).await, 200);
    }
    stop(serve).await;
    // A second run: a new key epoch; the first one's key is gone.
    let serve = Served::start(&home.path, "info").await;
    assert_eq!(one_request(serve.addr, &ca, upstream.port(), "/r3").await, 200);
    stop(serve).await;
    assert!(verify(&home.path, Some(&key)).0);

    let log_path = home.path.join("audit.jsonl");
    let original = std::fs::read(&log_path).unwrap();
    let head = std::fs::read(home.path.join("audit.jsonl.head")).unwrap();
    let seal = std::fs::read(home.path.join("audit.jsonl.seal")).unwrap();
    let restore = || {
        std::fs::write(&log_path, &original).unwrap();
        std::fs::write(home.path.join("audit.jsonl.head"), &head).unwrap();
        std::fs::write(home.path.join("audit.jsonl.seal"), &seal).unwrap();
    };

    // The last two records deleted (head -n -2), or every record.
    let text = String::from_utf8(original.clone()).unwrap();
    let kept: Vec<&str> = text.lines().collect();
    std::fs::write(&log_path, kept[..kept.len() - 2].join("\n") + "\n").unwrap();
    let (ok, out) = verify(&home.path, None);
    assert!(!ok && out.contains("records at the end were removed"), "{out}");
    std::fs::write(&log_path, "").unwrap();
    let (ok, out) = verify(&home.path, None);
    assert!(!ok && out.contains("records at the end were removed"), "{out}");
    restore();

    // A status changed and the chain recomputed with plain SHA-256: the
    // current epoch's MACs fail even without the verification key.
    rewrite(&log_path, "if r.get('path') == '/r1': r['status'] = 500", false);
    let (ok, out) = verify(&home.path, None);
    assert!(!ok, "{out}");
    restore();

    // Recomputed with the key in the seal (someone who took the machine
    // after the restart): the verification key still tells.
    rewrite(&log_path, "if r.get('path') == '/r1': r['status'] = 500", true);
    let (ok, out) = verify(&home.path, Some(&key));
    assert!(!ok, "{out}");
    restore();

    // A deleted tail and a head rewritten to match, without the key: the
    // head's MAC fails.
    std::fs::write(&log_path, kept[..kept.len() - 1].join("\n") + "\n").unwrap();
    let prev_line: serde_json::Value = serde_json::from_str(kept[kept.len() - 2]).unwrap();
    let forged_head = serde_json::json!({
        "seq": prev_line["seq"], "hash": prev_line["hash"], "epoch": prev_line["epoch"], "mac": "00".repeat(32)
    });
    std::fs::write(home.path.join("audit.jsonl.head"), forged_head.to_string()).unwrap();
    let (ok, out) = verify(&home.path, Some(&key));
    assert!(!ok && out.contains("MAC is wrong"), "{out}");
    restore();

    // Records deleted while airlock was stopped: the next start says so in
    // the log, and the log never verifies again.
    std::fs::write(&log_path, kept[..kept.len() - 1].join("\n") + "\n").unwrap();
    let serve = Served::start(&home.path, "info").await;
    stop(serve).await;
    let (ok, out) = verify(&home.path, Some(&key));
    assert!(!ok && out.contains("found the log changed") && out.contains("were removed"), "{out}");
    restore();

    // A record appended while airlock was stopped, linked right but with a
    // made-up MAC: the next start finds it does not authenticate.
    let last: serde_json::Value = serde_json::from_str(kept[kept.len() - 1]).unwrap();
    let forged = format!(
        "{{\"ts\":\"t\",\"request_id\":\"forged\",\"seq\":{},\"epoch\":{},\"prev\":{},\"hash\":\"{}\"}}\n",
        last["seq"].as_u64().unwrap() + 1,
        last["epoch"],
        last["hash"],
        "ab".repeat(32)
    );
    let mut appended = original.clone();
    appended.extend_from_slice(forged.as_bytes());
    std::fs::write(&log_path, &appended).unwrap();
    let serve = Served::start(&home.path, "info").await;
    stop(serve).await;
    let (ok, out) = verify(&home.path, None);
    assert!(!ok && out.contains("does not authenticate"), "{out}");
    restore();

    // Cut back into the first epoch (its close and everything after gone)
    // with a head forged to match under the seal's key: the seal has moved
    // past the log's last epoch.
    let first_epoch: Vec<&str> = kept.iter().take_while(|l| !l.contains("\"event\":\"close\"")).copied().collect();
    std::fs::write(&log_path, first_epoch.join("\n") + "\n").unwrap();
    let forge_head = r#"
import hashlib, hmac, json, sys
path = sys.argv[1]
seal = json.load(open(path + ".seal"))
last = json.loads(open(path).read().splitlines()[-1])
mac = hmac.new(bytes.fromhex(seal["key"]), ("%d:%s" % (last["seq"], last["hash"])).encode(), hashlib.sha256).hexdigest()
open(path + ".head", "w").write(json.dumps({"seq": last["seq"], "hash": last["hash"], "epoch": seal["epoch"], "mac": mac}))
"#;
    let out = StdCommand::new("python3").args(["-c", forge_head]).arg(&log_path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (ok, out) = verify(&home.path, Some(&key));
    assert!(!ok && out.contains("records at the end were removed"), "{out}");
    // Emptied, head deleted too.
    std::fs::write(&log_path, "").unwrap();
    std::fs::remove_file(home.path.join("audit.jsonl.head")).unwrap();
    let (ok, out) = verify(&home.path, Some(&key));
    assert!(!ok && out.contains("records at the end were removed"), "{out}");
    restore();

    // A pipe in the log's place: verifying refuses at once, never waits.
    std::fs::remove_file(&log_path).unwrap();
    assert!(StdCommand::new("mkfifo").arg(&log_path).status().unwrap().success());
    let started = std::time::Instant::now();
    let (ok, out) = verify(&home.path, Some(&key));
    assert!(!ok && out.contains("not a regular file") && started.elapsed() < Duration::from_secs(10), "{out}");
    std::fs::remove_file(&log_path).unwrap();
    restore();

    // The seal deleted: verifying without the key says nothing was
    // authenticated, and airlock will not start on the log with a new key.
    std::fs::remove_file(home.path.join("audit.jsonl.seal")).unwrap();
    let (ok, out) = verify(&home.path, None);
    assert!(!ok && out.contains("seal") && out.contains("missing"), "{out}");
    let refused = StdCommand::new(airlock_bin())
        .arg("serve")
        .env("AIRLOCK_HOME", &home.path)
        .env_remove("AIRLOCK_CONFIG")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains("has sealed records but its seal"), "{err}");
}

/// A pipe stands in for a disk that stops taking writes: nothing reads it,
/// so once its buffer (64 KiB) is full every write to it blocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_audit_disk_does_not_stall_requests() {
    let Setup { upstream, home } = setup("stalled", "").await;
    let fifo = home.path.join("stalled.fifo");
    let ok = StdCommand::new("mkfifo").arg(&fifo).status().unwrap().success();
    assert!(ok);
    // Held open (read-write, so opening never blocks) and never read.
    let _holder = tokio::process::Command::new("sh")
        .args(["-c", "exec 3<>\"$0\"; exec sleep 600"])
        .arg(&fifo)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let config = std::fs::read_to_string(home.path.join("airlock.toml")).unwrap();
    let config = format!("{config}\n[audit]\npath = \"{}\"\n", fifo.display());
    std::fs::write(home.path.join("airlock.toml"), config).unwrap();
    let serve = Served::start(&home.path, "info").await;
    let ca = std::fs::read_to_string(home.path.join("ca.pem")).unwrap();
    let port = upstream.port();
    // About 500 bytes a record: 400 requests are three pipe buffers.
    let tls = client::tunnel(serve.addr, ("acme", ACME_TOKEN), "api.acme.test", port, &[&ca], Http::H1).await.unwrap();
    let reqs: Vec<_> = (0..400)
        .map(|n| {
            let auth = format!("Bearer {ACME_PLACEHOLDER}");
            client::get("api.acme.test", port, &format!("/echo/{n}"), &[("authorization", &auth)], Http::H1)
        })
        .collect();
    let replies = tokio::time::timeout(Duration::from_secs(60), client::send_all(tls, Http::H1, reqs)).await;
    let replies =
        replies.expect("requests stalled behind the audit log").unwrap_or_else(|e| panic!("{e}: {}", serve.log()));
    assert!(replies.iter().all(|r| r.status == 200));
    // Stopping does not wait for ever on the dead disk either: the records
    // it cannot take are reported lost after a bounded wait.
    let log = serve.log_path();
    stop(serve).await;
    let log = std::fs::read_to_string(log).unwrap();
    assert!(log.contains("did not take the last records"), "{log}");
}

#[tokio::test]
async fn requests_and_connections_refused_before_a_route_is_decided_are_audited() {
    let upstream = Upstream::start(Protocols::Both).await;
    let proxy = TestProxy::start(&standard_config(&upstream, "", "\n[limits]\nheader_read_timeout = \"1s\"\n")).await;
    let port = upstream.port();
    let ca = proxy.ca_pem();
    let records = |host: &str| proxy.audit_lines().into_iter().filter(|l| l["host"] == host).collect::<Vec<_>>();
    // A record for `host` whose detail says `what`, within five seconds.
    let refused_with = |host: &'static str, what: &'static str| {
        wait_for(Duration::from_secs(5), move || {
            records(host).iter().any(|r| r["detail"].as_str().is_some_and(|d| d.contains(what)))
        })
    };

    // The agent does not trust airlock's CA: its handshake fails.
    let untrusted = client::tunnel(
        proxy.addr(),
        ("acme", ACME_TOKEN),
        "api.acme.test",
        port,
        &[&upstream_ca_pem(&upstream)],
        Http::H1,
    )
    .await;
    assert!(untrusted.is_err());
    assert!(refused_with("api.acme.test", "handshake failed").await, "{:?}", proxy.audit_lines());

    // It never starts TLS: refused when header_read_timeout ends.
    let reply =
        client::connect(proxy.addr(), &format!("api.beta.test:{port}"), Some(("beta", BETA_TOKEN))).await.unwrap();
    assert_eq!(reply.status, 200);
    let idle = reply.stream;
    assert!(refused_with("api.beta.test", "did not finish its TLS handshake").await, "{:?}", proxy.audit_lines());

    drop(idle);

    // A malformed request inside the tunnel, and on the proxy connection.
    let mut tls =
        client::tunnel(proxy.addr(), ("acme", ACME_TOKEN), "api.acme.test", port, &[&ca], Http::H1).await.unwrap();
    tls.write_all(b"GET /x HTTP/1.1\r\nHost: api.acme.test\r\nbad header line\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer)).await;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 400"), "{}", String::from_utf8_lossy(&answer));
    let mut raw = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    raw.write_all(b"GET http://other.test/ HTTP/1.1\r\nHost: other.test\r\nbad header line\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut answer)).await;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 400"), "{}", String::from_utf8_lossy(&answer));
    let malformed = || {
        proxy
            .audit_lines()
            .iter()
            .filter(|r| {
                r["code"] == "bad_request"
                    && r["status"] == 400
                    && r["detail"].as_str().is_some_and(|d| d.contains("malformed"))
            })
            .count()
    };
    assert!(wait_for(Duration::from_secs(5), || malformed() == 2).await, "{:?}", proxy.audit_lines());

    // A tenant removed by a reload while its connection stays open.
    let mut beta =
        client::open(proxy.addr(), ("beta", BETA_TOKEN), "api.beta.test", port, &[&ca], Http::H1).await.unwrap();
    let without_beta = standard_config(&upstream, "", "\n[limits]\nheader_read_timeout = \"1s\"\n")
        .split("[tenants.beta]")
        .next()
        .unwrap()
        .to_owned();
    std::fs::write(proxy.home.path.join("airlock.toml"), without_beta).unwrap();
    proxy.proxy.reload().unwrap();
    let resp = beta.send(client::get("api.beta.test", port, "/echo", &[], Http::H1)).await.unwrap();
    assert_eq!(resp.status(), 407);
    let removed = records("api.beta.test");
    assert!(
        removed.iter().any(|r| r["tenant"] == "beta"
            && r["code"] == "unknown_tenant"
            && r["method"] == "GET"
            && r["detail"].as_str().is_some_and(|d| d.contains("removed by a reload"))),
        "{removed:?}"
    );
}

fn upstream_ca_pem(upstream: &Upstream) -> String {
    std::fs::read_to_string(upstream.ca_path()).unwrap()
}

/// Requests anyone can send without a token — not proxy requests, malformed
/// heads — cannot flood the log: coalesced per address like wrong tokens.
/// And a long path is cut in its record.
#[tokio::test]
async fn unauthenticated_refusals_are_coalesced_and_long_paths_cut() {
    let upstream = Upstream::start(Protocols::Both).await;
    let proxy = TestProxy::start(&standard_config(&upstream, "", "")).await;
    // 200 origin-form requests pipelined on one connection.
    let mut raw = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let one = "GET /x HTTP/1.1\r\nHost: a\r\n\r\n";
    raw.write_all(one.repeat(200).as_bytes()).await.unwrap();
    let mut answers = Vec::new();
    let mut buf = vec![0u8; 65536];
    while String::from_utf8_lossy(&answers).matches("HTTP/1.1 400").count() < 200 {
        let n = tokio::time::timeout(Duration::from_secs(10), raw.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed early");
        answers.extend_from_slice(&buf[..n]);
    }
    // 100 action API requests with the wrong method, pipelined.
    let mut raw = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    raw.write_all("GET /v1/actions HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".repeat(100).as_bytes()).await.unwrap();
    let mut answers = Vec::new();
    while String::from_utf8_lossy(&answers).matches("HTTP/1.1 405").count() < 100 {
        let n = tokio::time::timeout(Duration::from_secs(10), raw.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed early");
        answers.extend_from_slice(&buf[..n]);
    }
    // 20 malformed heads, each on its own connection.
    for _ in 0..20 {
        let mut raw = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
        raw.write_all(b"GET http://a/ HTTP/1.1\r\nbad header\r\n\r\n").await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut answer)).await;
    }
    // A long path on a route, denied (DELETE is not among its methods).
    let long = format!("/{}", "p".repeat(60_000));
    let req = hyper::Request::builder()
        .method("DELETE")
        .uri(long.as_str())
        .header("host", format!("api.acme.test:{}", upstream.port()))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let tls = client::tunnel(
        proxy.addr(),
        ("acme", ACME_TOKEN),
        "api.acme.test",
        upstream.port(),
        &[&proxy.ca_pem()],
        Http::H1,
    )
    .await
    .unwrap();
    let replies = client::send_all(tls, Http::H1, vec![req]).await.unwrap();
    assert_eq!(replies[0].status, 403);

    proxy.proxy.shutdown().await;
    let lines = audit_records(&proxy.home.path.join("audit.jsonl"));
    let refused: Vec<_> = lines.iter().filter(|l| l["code"] == "bad_request").collect();
    let counted: u64 = refused.iter().map(|l| l["attempts"].as_u64().unwrap_or(1)).sum();
    // One table for every refusal before authentication: 200 + 100 + 20.
    assert_eq!(counted, 320, "{refused:?}");
    assert!(refused.len() <= 4, "{} records for 320 unauthenticated refusals", refused.len());
    let denied = lines.iter().find(|l| l["code"] == "method_not_allowed" && !l["tenant"].is_null()).unwrap();
    let path = denied["path"].as_str().unwrap();
    assert!(path.len() <= 1024 + 3 && path.ends_with('…'), "{}", path.len());
}

/// `airlock audit` filters: refusals only, one request id (as a denial
/// gives it), one route, a time, the stored JSON; and each line names its
/// request id.
#[tokio::test]
async fn audit_filters_find_a_denial_by_its_request_id() {
    let upstream = Upstream::start(Protocols::Both).await;
    let proxy = TestProxy::start(&standard_config(&upstream, "", "")).await;
    let port = upstream.port();
    let url = |path: &str| format!("https://api.acme.test:{port}{path}");
    let auth = format!("Authorization: Bearer {ACME_PLACEHOLDER}");
    let ok = proxy.curl().args(["-o", "/dev/null", "-H", &auth]).arg(url("/echo")).output().await.unwrap();
    assert!(ok.status.success());
    let denied = proxy.curl().args(["-X", "DELETE", "-H", &auth]).arg(url("/echo")).output().await.unwrap();
    let denial: serde_json::Value = serde_json::from_slice(&denied.stdout).unwrap();
    let id = denial["error"]["request_id"].as_str().unwrap().to_owned();
    assert!(wait_for(Duration::from_secs(5), || proxy.audit_lines().len() >= 2).await);
    let audit = |args: &[&str]| {
        let out = StdCommand::new(airlock_bin())
            .arg("audit")
            .args(args)
            .env("AIRLOCK_HOME", &proxy.home.path)
            .env_remove("AIRLOCK_CONFIG")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (_, all, _) = audit(&["--json"]);
    // The log's opening event, and the two records.
    assert_eq!(all.lines().count(), 3, "{all}");
    let (_, all, _) = audit(&[]);
    assert!(all.lines().any(|l| l.contains(&format!(" {id} deny "))), "each line names its request id: {all}");
    let (_, deny, _) = audit(&["--deny"]);
    assert_eq!(deny.lines().filter(|l| !l.starts_with("    ")).count(), 1, "{deny}");
    assert!(deny.contains("method_not_allowed") && deny.contains(&id), "{deny}");
    let (_, by_id, _) = audit(&["--request-id", &id, "--json"]);
    let record: serde_json::Value = serde_json::from_str(by_id.trim()).unwrap();
    assert_eq!(
        (record["request_id"].as_str(), record["code"].as_str()),
        (Some(id.as_str()), Some("method_not_allowed"))
    );
    // The record keeps what the agent was told, and the readable line says it.
    assert_eq!(record["message"], denial["error"]["message"]);
    assert_eq!(record["next_step"], denial["error"]["next_step"]);
    assert!(deny.contains(&format!("next step: {}", denial["error"]["next_step"].as_str().unwrap())), "{deny}");
    let (_, by_route, _) = audit(&["--route", "echo", "--json"]);
    assert_eq!(by_route.lines().count(), 2, "{by_route}");
    let (_, other_route, _) = audit(&["--route", "beta"]);
    assert_eq!(other_route, "", "{other_route}");
    let (_, recent, _) = audit(&["--since", "1h", "--deny", "--json"]);
    assert_eq!(recent.lines().count(), 1, "{recent}");
    let (_, future, _) = audit(&["--since", "2099-01-01"]);
    assert_eq!(future, "");
    let (ok, _, said) = audit(&["--since", "yesterday"]);
    assert!(!ok && said.contains("--since"), "{said}");
    // --follow prints what is appended, filtered too.
    let mut follow = tokio::process::Command::new(airlock_bin())
        .args(["audit", "--follow", "--deny"])
        .env("AIRLOCK_HOME", &proxy.home.path)
        .env_remove("AIRLOCK_CONFIG")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(follow.stdout.take().unwrap()));
    // The next record's line (not the message lines under one).
    let mut next_record = async || loop {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await.unwrap().unwrap().unwrap();
        if !line.starts_with("    ") {
            return line;
        }
    };
    let first = next_record().await;
    assert!(first.contains(&id), "{first}");
    let again = proxy.curl().args(["-X", "PATCH", "-H", &auth]).arg(url("/echo")).output().await.unwrap();
    let again: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    let next = next_record().await;
    assert!(next.contains(again["error"]["request_id"].as_str().unwrap()) && next.contains(" PATCH "), "{next}");
    follow.kill().await.unwrap();
    proxy.proxy.shutdown().await;
}
