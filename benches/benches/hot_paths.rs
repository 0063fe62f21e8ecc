//! Criterion benches of airlock's hot paths: `policy::decide`, placeholder
//! injection, the leaf-certificate cache (hit and mint), and one whole
//! proxied HTTPS request over keep-alive against the same request sent
//! directly, and against one airlock signs again (`aws_sigv4`). Run:
//! `cargo bench -p airlock-benches --bench hot_paths`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

use airlock_benches::client::{Agent, Conn, Via};
use airlock_benches::{API_HOST, AWS_HOST, AWS_PLACEHOLDER, KEY, PLACEHOLDER, TOKEN, config_with_routes, write_home};
use airlock_ca::{CertificateAuthority, LeafCache};
use airlock_policy::{Policy, RequestInfo};
use airlock_tests::{TempHome, TestCa};

fn decide(c: &mut Criterion) {
    let mut group = c.benchmark_group("policy_decide");
    for n in [1usize, 100, 10_000] {
        let policy = Policy::from_toml(&config_with_routes(n), "bench", Path::new("/"), Path::new("/"))
            .expect("bench config is valid");
        let (acme, _) = policy.tenant_by_name("acme").expect("tenant exists");
        let host = format!("api{}.example.com", n - 1);
        let auth = format!("Bearer AIRLOCK_KEY_{:06}", n - 1);
        let headers: Vec<(&str, &[u8])> =
            vec![("authorization", auth.as_bytes()), ("accept", b"application/json"), ("user-agent", b"bench/1.0")];
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                let req = RequestInfo {
                    method: "GET",
                    host: &host,
                    port: 443,
                    target: "/v1/things?page=2",
                    headers: &headers,
                };
                std::hint::black_box(policy.decide(acme, &req))
            })
        });
    }
    group.finish();
}

fn inject(c: &mut Criterion) {
    c.bench_function("inject_bearer", |b| {
        b.iter(|| {
            airlock_policy::inject::inject(
                b"Bearer AIRLOCK_KEY_000001",
                b"AIRLOCK_KEY_000001",
                b"sk_live_0123456789abcdef",
            )
        })
    });
    let basic = b"Basic QUlSTE9DS19LRVlfMDAwMDAxOg==";
    c.bench_function("inject_basic", |b| {
        b.iter(|| airlock_policy::inject::inject(basic, b"AIRLOCK_KEY_000001", b"sk_live_0123456789abcdef"))
    });
}

fn leaf_cache(c: &mut Criterion) {
    let home = TempHome::new("bench-ca");
    let ca = Arc::new(CertificateAuthority::load_or_create(&home.path).expect("a CA in a fresh dir"));
    let alpn = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let cache = LeafCache::new(ca, alpn, 10_000, LeafCache::DEFAULT_TTL);
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
    rt.block_on(cache.server_config("api.example.com")).expect("mint");
    let mut group = c.benchmark_group("leaf_cache");
    group.bench_function("hit", |b| {
        b.iter(|| rt.block_on(cache.server_config("api.example.com")).expect("cached"));
    });
    // Every iteration a host never seen: a fresh P-256 key, a signed leaf
    // and a rustls server config.
    let mut n = 0u64;
    group.bench_function("miss_mint", |b| {
        b.iter(|| {
            n += 1;
            rt.block_on(cache.server_config(&format!("h{n}.example.com"))).expect("mint")
        });
    });
    group.finish();
}

/// One GET of a small JSON document over a keep-alive HTTPS connection:
/// through an in-process airlock (decide, inject, redact with ten secrets
/// loaded, audit), and straight to the same in-process upstream.
fn proxied_request(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime");
    let home = TempHome::new("bench-proxy");
    let (mut direct, mut proxied, mut signed, _proxy, _upstream) = rt.block_on(async {
        let ca = TestCa::new("airlock bench upstream CA");
        let ca_path = home.path.join("upstream-ca.pem");
        std::fs::write(&ca_path, ca.pem()).expect("write the CA");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let up = listener.local_addr().expect("bound");
        let upstream =
            tokio::spawn(airlock_benches::upstream::serve(listener, airlock_benches::upstream::tls_config(&ca), KEY));
        write_home(&home.path, up.port(), &ca_path, &[]).expect("write the home");
        let config = home.path.join("airlock.toml");
        let policy = Policy::load(&config, &home.path).expect("valid config");
        let proxy = airlock::Proxy::bind(&home.path, &config, policy).await.expect("bind").spawn();
        let airlock_ca = std::fs::read_to_string(home.path.join("ca.pem")).expect("the proxy's CA");
        let via = Via::Proxy { addr: proxy.addr(), creds: Some(format!("bench:{TOKEN}")) };
        let proxied = Agent::new(via.clone(), &airlock_ca, format!("Bearer {PLACEHOLDER}")).expect("agent");
        // Signed as an SDK would with the placeholder (airlock signs
        // anew, whatever the agent's signature).
        let sigv4 = format!(
            "AWS4-HMAC-SHA256 Credential={AWS_PLACEHOLDER}/20261130/eu-west-1/execute-api/aws4_request, \
             SignedHeaders=host, Signature={}",
            "0".repeat(64)
        );
        let signing = Agent::new(via, &airlock_ca, sigv4).expect("agent");
        let direct = Agent::new(Via::Direct(up), &ca.pem(), format!("Bearer {KEY}")).expect("agent");
        let mut p = proxied.open(API_HOST, up.port()).await.expect("open through airlock");
        let mut d = direct.open(API_HOST, up.port()).await.expect("open directly");
        assert_eq!(p.get("/small").await.expect("request").0, 200, "airlock must inject the key");
        assert_eq!(d.get("/small").await.expect("request").0, 200);
        let mut s = signing.open(AWS_HOST, up.port()).await.expect("open through airlock");
        assert_eq!(s.get("/small").await.expect("request").0, 200, "airlock must sign");
        (d, p, s, proxy, upstream)
    });
    let mut group = c.benchmark_group("https_get_keepalive");
    let run = |conn: &mut Conn, iters: u64| -> Duration {
        rt.block_on(async {
            let start = Instant::now();
            for _ in 0..iters {
                std::hint::black_box(conn.get("/small").await.expect("request"));
            }
            start.elapsed()
        })
    };
    group.bench_function("direct", |b| b.iter_custom(|iters| run(&mut direct, iters)));
    group.bench_function("airlock", |b| b.iter_custom(|iters| run(&mut proxied, iters)));
    group.bench_function("airlock_sigv4", |b| b.iter_custom(|iters| run(&mut signed, iters)));
    group.finish();
}

criterion_group!(benches, decide, inject, leaf_cache, proxied_request);
criterion_main!(benches);
