//! The streaming redactor against aho-corasick's own `find_iter` over the
//! same pattern set and the same buffer in one piece.
//! Run: `cargo bench -p airlock-benches --bench redactor`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

use airlock::redact::{PatternSet, PatternSetBuilder, SecretForms, Stream};

const BODY: usize = 64 << 20;
const FRAME: usize = 16 << 10;

fn secrets(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("sk_live_{i:08}_{:016x}", (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)).into_bytes())
        .collect()
}

fn pattern_set(secrets: &[Vec<u8>]) -> PatternSet {
    let mut b = PatternSetBuilder::new();
    for s in secrets {
        b.secret(&SecretForms { value: s, replacement: b"AIRLOCK_PLACEHOLDER" });
    }
    b.build()
}

/// JSON-ish text with one secret every ~64 KiB.
fn body(secrets: &[Vec<u8>]) -> Vec<u8> {
    let line = b"{\"id\": 12345, \"name\": \"a typical api record\", \"tags\": [\"x\", \"y\"], \"ok\": true}\n";
    let mut out = Vec::with_capacity(BODY + 1024);
    let mut i = 0;
    while out.len() < BODY {
        out.extend_from_slice(line);
        if out.len() % (64 << 10) < line.len() {
            out.extend_from_slice(&secrets[i % secrets.len()]);
            i += 1;
        }
    }
    out.truncate(BODY);
    out
}

fn redactor(c: &mut Criterion) {
    let mut group = c.benchmark_group("redactor_64MiB_16KiB_frames");
    group.sample_size(10).measurement_time(Duration::from_secs(20)).throughput(Throughput::Bytes(BODY as u64));
    for n in [1usize, 10, 100, 1000] {
        let secrets = secrets(n);
        let started = Instant::now();
        let set = Arc::new(pattern_set(&secrets));
        eprintln!("pattern set for {n} secrets: {} patterns, built in {:?}", set.len(), started.elapsed());
        let input = body(&secrets);
        group.bench_with_input(BenchmarkId::new("streaming", n), &n, |b, _| {
            b.iter(|| {
                let mut s = Stream::new(Arc::clone(&set));
                let mut out = Vec::with_capacity(FRAME * 2);
                for frame in input.chunks(FRAME) {
                    out.clear();
                    s.push(frame, &mut out);
                    std::hint::black_box(&out);
                }
                out.clear();
                s.finish(&mut out);
                s.count()
            })
        });
        group.bench_with_input(BenchmarkId::new("oneshot_replace_all", n), &n, |b, _| {
            b.iter(|| {
                let mut out = Vec::with_capacity(input.len());
                set.replace_all(&input, &mut out)
            })
        });
        // The baseline: aho-corasick's own search over the whole buffer,
        // same patterns, same match kind, nothing copied.
        let ac = aho_corasick::AhoCorasick::builder()
            .match_kind(aho_corasick::MatchKind::LeftmostLongest)
            .build(set_patterns(&secrets))
            .expect("patterns build");
        group.bench_with_input(BenchmarkId::new("find_iter_one_piece", n), &n, |b, _| {
            b.iter(|| ac.find_iter(&input).count())
        });
        // The same search frame by frame, to separate per-frame overhead
        // from the redactor's own work.
        group.bench_with_input(BenchmarkId::new("find_iter_per_frame", n), &n, |b, _| {
            b.iter(|| input.chunks(FRAME).map(|f| ac.find_iter(f).count()).sum::<usize>())
        });
    }
    group.finish();
}

/// The same forms the redactor compiles (raw, URL, JSON, base64 ×3 ×2).
fn set_patterns(secrets: &[Vec<u8>]) -> Vec<Vec<u8>> {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let mut out = Vec::new();
    for s in secrets {
        out.push(s.clone());
        for offset in 0..3usize {
            let mut buf = vec![0u8; offset];
            buf.extend_from_slice(s);
            let (start, end) = ((offset * 8).div_ceil(6), buf.len() * 8 / 6);
            for enc in [STANDARD_NO_PAD.encode(&buf), URL_SAFE_NO_PAD.encode(&buf)] {
                out.push(enc.as_bytes()[start..end].to_vec());
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

criterion_group!(benches, redactor);
criterion_main!(benches);
