//! What one distinct injected header value costs: the time to make the
//! pattern set a response to its request is scrubbed with, and the memory
//! that set holds, for values of 36 bytes (`Bearer <key>`) to 40 KiB (the
//! placeholder followed by random text, so each value is new), in two
//! shapes:
//!
//! - `union_dfa`: the tenant's set compiled again with the value, an
//!   aho-corasick DFA whenever there are at most 100 patterns (airlock
//!   before issue 16);
//! - `chained`: the value's own layer chained over the tenant's set
//!   compiled once, each layer Teddy (after);
//! - `chained_nfa`: the same with both layers contiguous NFAs (what a
//!   layer of over 64 patterns gets).
//!
//! And the scan of a 16 MiB body, JSON and base64 text, with each shape's
//! set: what chaining costs the scan, and why the layers are Teddy; and a
//! hit in a cache like the proxy's (quick_cache, keyed by the injected
//! bytes), against building the layer again.
//! Run: `cargo bench -p airlock-benches --bench pattern_sets`.

use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

use aho_corasick::AhoCorasickKind;
use airlock::redact::{MatcherKind, PatternSet, PatternSetBuilder, SecretForms, Stream};
use airlock_tests::random_text;

const KEY: &[u8] = b"sk_live_acme_0123456789abcdef";
/// Injected values: `Bearer <key>` then, past the first, a space and
/// random text to the given total length.
const VALUES: [(&str, usize); 6] =
    [("36B", 0), ("53B", 53), ("1KiB", 1 << 10), ("4KiB", 4 << 10), ("16KiB", 16 << 10), ("40KiB", 40 << 10)];
const NFA: MatcherKind = MatcherKind::Automaton(Some(AhoCorasickKind::ContiguousNFA));
const BODY: usize = 16 << 20;
const FRAME: usize = 16 << 10;

/// The injected value and what the agent sent, `len` bytes long (at
/// least `Bearer <key>`).
fn injected(len: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let (mut value, mut original) = ([&b"Bearer "[..], KEY].concat(), b"Bearer AIRLOCK_ACME_KEY".to_vec());
    if len > value.len() + 1 {
        let tail = random_text(seed, len - value.len() - 1).into_bytes();
        for v in [&mut value, &mut original] {
            v.push(b' ');
            v.extend_from_slice(&tail);
        }
    }
    (value, original)
}

/// A tenant's builder: its key and nine others.
fn tenant(kind: MatcherKind) -> PatternSetBuilder {
    let mut b = PatternSetBuilder::new();
    b.matcher(kind);
    b.secret(&SecretForms { value: KEY, replacement: b"AIRLOCK_ACME_KEY" });
    for i in 1..10u64 {
        let other = format!("sk_live_{i:08}_{:016x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        b.secret(&SecretForms { value: other.as_bytes(), replacement: b"[REDACTED]" });
    }
    b
}

fn union_dfa(tenant: &PatternSetBuilder, (value, original): &(Vec<u8>, Vec<u8>)) -> PatternSet {
    let mut b = PatternSetBuilder::new();
    b.matcher(MatcherKind::Automaton(None)).injected(value, original);
    b.extend(tenant);
    b.build()
}

fn chained(base: &PatternSet, (value, original): &(Vec<u8>, Vec<u8>), kind: MatcherKind) -> PatternSet {
    let mut b = PatternSetBuilder::new();
    b.matcher(kind).injected(value, original);
    b.build().chain(base)
}

fn per_value(c: &mut Criterion) {
    let tenant = tenant(MatcherKind::Auto);
    let (base, base_nfa) = (tenant.build(), self::tenant(NFA).build());
    eprintln!("tenant set: {} patterns, {} heap bytes", base.len(), base.heap_bytes());
    let mut group = c.benchmark_group("pattern_set_per_injected_value");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    for (name, len) in VALUES {
        let value = injected(len, 1);
        let before = union_dfa(&tenant, &value);
        let (after, nfa) = (chained(&base, &value, MatcherKind::Auto), chained(&base_nfa, &value, NFA));
        // Only the value's own layer is new: the tenant's is shared.
        eprintln!(
            "{name}: union_dfa {} patterns, {} heap bytes; chained: the value's layer {} patterns, {} heap bytes \
             ({} as a contiguous NFA)",
            before.len(),
            before.heap_bytes(),
            after.len() - base.len(),
            after.heap_bytes() - base.heap_bytes(),
            nfa.heap_bytes() - base_nfa.heap_bytes(),
        );
        group.bench_with_input(BenchmarkId::new("union_dfa", name), &value, |b, v| b.iter(|| union_dfa(&tenant, v)));
        group.bench_with_input(BenchmarkId::new("chained", name), &value, |b, v| {
            b.iter(|| chained(&base, v, MatcherKind::Auto))
        });
        group.bench_with_input(BenchmarkId::new("chained_nfa", name), &value, |b, v| {
            b.iter(|| chained(&base_nfa, v, NFA))
        });
    }
    group.finish();
}

/// JSON records, and base64 text (a file or image in a JSON string), each
/// with the injected value echoed every ~1 MiB.
fn bodies(value: &[u8]) -> [(&'static str, Vec<u8>); 2] {
    use base64::Engine;
    let json = b"{\"id\": 12345, \"name\": \"a typical api record\", \"tags\": [\"x\", \"y\"], \"ok\": true}\n";
    let b64 = base64::engine::general_purpose::STANDARD.encode(random_text(7, 3 << 10)).into_bytes();
    [("json", json.to_vec()), ("base64", b64)].map(|(name, unit)| {
        let mut out = Vec::with_capacity(BODY + value.len());
        while out.len() < BODY {
            out.extend_from_slice(&unit);
            if out.len() % (1 << 20) < unit.len() {
                out.extend_from_slice(value);
            }
        }
        (name, out)
    })
}

fn scan(c: &mut Criterion) {
    let tenant = tenant(MatcherKind::Auto);
    let (base, base_nfa) = (tenant.build(), self::tenant(NFA).build());
    let mut group = c.benchmark_group("scan_16MiB_16KiB_frames");
    group.sample_size(10).measurement_time(Duration::from_secs(10)).throughput(Throughput::Bytes(BODY as u64));
    for (name, len) in [VALUES[0], VALUES[1], VALUES[2]] {
        let value = injected(len, 1);
        let sets = [
            ("union_dfa", Arc::new(union_dfa(&tenant, &value))),
            ("chained", Arc::new(chained(&base, &value, MatcherKind::Auto))),
            ("chained_nfa", Arc::new(chained(&base_nfa, &value, NFA))),
        ];
        for (text, body) in bodies(&value.0) {
            for (shape, set) in &sets {
                let id = BenchmarkId::new(format!("{shape}/{text}"), name);
                group.bench_with_input(id, &body, |b, body| {
                    b.iter(|| {
                        let mut s = Stream::new(Arc::clone(set));
                        let mut out = Vec::with_capacity(2 * FRAME);
                        for frame in body.chunks(FRAME) {
                            out.clear();
                            s.push(frame, &mut out);
                        }
                        s.finish(&mut out);
                        s.count()
                    })
                });
            }
        }
    }
    group.finish();
}

/// What the proxy's layer cache costs on a hit: the key made from the
/// value and what the agent sent, looked up among a thousand others.
fn cache_hit(c: &mut Criterion) {
    let key = |(value, original): &(Vec<u8>, Vec<u8>)| {
        let mut k = Vec::with_capacity(value.len() + original.len() + 16);
        for part in [value, original] {
            k.extend_from_slice(&(part.len() as u64).to_le_bytes());
            k.extend_from_slice(part);
        }
        k
    };
    let cache: quick_cache::sync::Cache<Vec<u8>, Arc<PatternSet>> = quick_cache::sync::Cache::new(1024);
    let layer = Arc::new(PatternSet::empty());
    for i in 0..1000u32 {
        let mut v = injected(0, 1);
        v.0.extend_from_slice(&i.to_le_bytes());
        cache.insert(key(&v), Arc::clone(&layer));
    }
    let value = injected(0, 1);
    cache.insert(key(&value), layer);
    c.bench_function("layer_cache_hit/36B", |b| b.iter(|| cache.get(&key(&value))));
}

criterion_group!(benches, per_value, scan, cache_hit);
criterion_main!(benches);
