//! A bounded load test against a real `airlock serve`: N requests (10,000
//! unless `AIRLOCK_LOAD_REQUESTS` says otherwise) over 200 keep-alive
//! intercepted connections, each injected and each echoing the key back for
//! the redactor. Zero errors, zero leaks, and the proxy's RSS after the run
//! within a stated bound of its RSS after warm-up. Ignored by default (it
//! takes a while in a debug build); `.ci/run` runs it with a smaller count.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use airlock_tests::client::{self, Http};
use airlock_tests::upstream::Protocols;
use airlock_tests::*;
use http_body_util::BodyExt;

const CONCURRENCY: usize = 200;

/// Sends `count` requests over `CONCURRENCY` connections; returns errors.
async fn drive(addr: std::net::SocketAddr, ca: &str, port: u16, count: usize) -> Vec<String> {
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for c in 0..CONCURRENCY {
        let (next, errors, ca) = (Arc::clone(&next), Arc::clone(&errors), ca.to_owned());
        tasks.push(tokio::spawn(async move {
            let http = if c % 2 == 0 { Http::H1 } else { Http::H2 };
            let mut sender = match client::open(addr, ("acme", ACME_TOKEN), "api.acme.test", port, &[&ca], http).await {
                Ok(s) => s,
                Err(e) => return errors.lock().unwrap().push(format!("open: {e}")),
            };
            let auth = format!("Bearer {ACME_PLACEHOLDER}");
            while next.fetch_add(1, Ordering::Relaxed) < count {
                let req = client::get("api.acme.test", port, "/echo", &[("authorization", &auth)], http);
                let result = async {
                    let resp = sender.send(req).await.map_err(|e| e.to_string())?;
                    let status = resp.status();
                    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
                    let text = String::from_utf8_lossy(&body).into_owned();
                    if status != 200 || !text.contains(&auth) {
                        return Err(format!("{status}: {text}"));
                    }
                    for form in secret_forms(ACME_SECRET) {
                        if text.contains(&form) {
                            return Err("a secret form leaked".to_owned());
                        }
                    }
                    Ok(())
                }
                .await;
                if let Err(e) = result {
                    errors.lock().unwrap().push(e);
                    return;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    Arc::try_unwrap(errors).unwrap().into_inner().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a load test; .ci/run runs it with --ignored and a bounded count"]
async fn ten_thousand_requests_at_concurrency_200() {
    let count: usize = std::env::var("AIRLOCK_LOAD_REQUESTS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let upstream = Upstream::start(Protocols::Both).await;
    let home = TempHome::new("load");
    store_standard_secrets(&home.path);
    std::fs::write(home.path.join("airlock.toml"), standard_config(&upstream, "", "")).unwrap();
    let mut serve = Served::start(&home.path, "warn").await;
    let addr = serve.addr;
    let ca = std::fs::read_to_string(home.path.join("ca.pem")).unwrap();

    // Warm up (TLS sessions, leaf cache, pools, allocator arenas), then
    // measure the full run.
    let errors = drive(addr, &ca, upstream.port(), count / 10).await;
    assert!(errors.is_empty(), "warm-up errors: {:?}", &errors[..errors.len().min(5)]);
    let before = serve.rss_kib();
    let started = Instant::now();
    let errors = drive(addr, &ca, upstream.port(), count).await;
    let elapsed = started.elapsed();
    let after = serve.rss_kib();
    eprintln!(
        "load: {count} requests at concurrency {CONCURRENCY} in {elapsed:?} ({:.0} req/s); proxy RSS {before} KiB before, {after} KiB after",
        count as f64 / elapsed.as_secs_f64()
    );
    assert!(errors.is_empty(), "{} errors, first: {:?}", errors.len(), &errors[..errors.len().min(5)]);
    assert!(upstream.seen().len() >= count + count / 10);
    // All connections are closed by now; what remains is caches and
    // allocator slack. Bound: twice the warmed-up RSS plus 64 MiB.
    assert!(after <= before * 2 + 64 * 1024, "RSS grew from {before} KiB to {after} KiB");

    serve.child.kill().await.unwrap();
    let audit = std::fs::read_to_string(home.path.join("audit.jsonl")).unwrap();
    assert_no_secret("audit", &audit, &[ACME_SECRET, BETA_SECRET]);
    assert_no_secret("serve's log", &serve.log(), &[ACME_SECRET, BETA_SECRET]);
}
