//! The streaming redactor against aho-corasick's own `find_iter` over the
//! same pattern set and the same buffer in one piece; and the redactor over
//! a body dense in JSON, URL and HTML escapes, which it has to normalise.
//! Run: `cargo bench -p airlock-benches --bench redactor`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

use airlock::redact::{PatternSet, PatternSetBuilder, SecretForms, Stream, scrub_headers};

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
    lines(line, secrets)
}

/// The same with escapes in every line: no frame can be matched where it
/// lies, each is normalised first.
fn escaped_body(secrets: &[Vec<u8>]) -> Vec<u8> {
    let line = b"{\"id\": 12345, \"name\": \"a \\\"typical\\\" record\", \"url\": \"https:\\/\\/api.test\\/v1?q=a%20b&r=1\", \"html\": \"&lt;b&gt;\"}\n";
    lines(line, secrets)
}

/// `line` repeated to [`BODY`] bytes, with a secret every ~64 KiB.
fn lines(line: &[u8], secrets: &[Vec<u8>]) -> Vec<u8> {
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
        let built = started.elapsed();
        // The first response head a set scrubs builds its header-name
        // automaton.
        let started = Instant::now();
        let mut head = http::HeaderMap::new();
        head.insert("content-type", http::HeaderValue::from_static("application/json"));
        std::hint::black_box(scrub_headers(&set, head));
        eprintln!(
            "pattern set for {n} secrets: {} patterns, built in {built:?}, first head scrubbed in {:?}, hold {} bytes",
            set.len(),
            started.elapsed(),
            set.hold()
        );
        let input = body(&secrets);
        let stream = |input: &[u8]| {
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
        };
        group.bench_with_input(BenchmarkId::new("streaming", n), &n, |b, _| b.iter(|| stream(&input)));
        let escaped = escaped_body(&secrets);
        group.bench_with_input(BenchmarkId::new("streaming_escaped", n), &n, |b, _| b.iter(|| stream(&escaped)));
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

/// The value and its base64 at three offsets in two alphabets: for these
/// secrets (letters, digits, `_`), exactly the patterns the set compiles.
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
