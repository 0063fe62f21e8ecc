//! Criterion benches of airlock's hot paths. Run: `cargo bench -p airlock-benches`.

use std::path::Path;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

use airlock_benches::config_with_routes;
use airlock_policy::{Policy, RequestInfo};

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

criterion_group!(benches, decide, inject);
criterion_main!(benches);
