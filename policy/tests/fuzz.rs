//! Fuzz targets, proptest-driven so they run everywhere `cargo test` does:
//! the config parser, the header injection (Basic decode/re-encode
//! included) and the authority parser. Each starts from the committed
//! corpus in `fuzz-corpus/` and mutates it; none may panic, and each checks
//! an invariant on what it accepts. `PROPTEST_CASES` raises the count.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use airlock_policy::inject::{basic_credentials, inject};
use airlock_policy::{Policy, host};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use proptest::prelude::*;

fn corpus(dir: &str) -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz-corpus").join(dir);
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files.iter().map(|p| std::fs::read_to_string(p).unwrap()).collect()
}

/// The authority seeds, one per line.
fn authorities() -> Vec<String> {
    corpus("authority").iter().flat_map(|f| f.lines().map(str::to_owned).collect::<Vec<_>>()).collect()
}

/// A seed with a few random byte edits: inserts, deletes and overwrites.
fn mutated(seeds: Vec<String>) -> impl Strategy<Value = Vec<u8>> {
    let edits = prop::collection::vec((0usize..3, any::<prop::sample::Index>(), any::<u8>()), 0..8);
    (prop::sample::select(seeds), edits).prop_map(|(seed, edits)| {
        let mut bytes = seed.into_bytes();
        for (kind, at, byte) in edits {
            if bytes.is_empty() {
                bytes.push(byte);
                continue;
            }
            let i = at.index(bytes.len());
            match kind {
                0 => bytes.insert(i, byte),
                1 => {
                    bytes.remove(i);
                }
                _ => bytes[i] = byte,
            }
        }
        bytes
    })
}

fn load(text: &str) -> Result<Policy, airlock_policy::ConfigError> {
    Policy::from_toml(text, "fuzz.toml", Path::new("/etc/airlock"), Path::new("/home/u/.local/share/airlock"))
}

#[test]
fn corpus_configs_load() {
    for text in corpus("config") {
        load(&text).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Any text: a policy or an error naming the file, never a panic.
    #[test]
    fn config_parser(bytes in mutated(corpus("config"))) {
        let text = String::from_utf8_lossy(&bytes);
        if let Err(e) = load(&text) {
            prop_assert!(e.to_string().contains("fuzz.toml"), "{e}");
        }
    }

    /// Injection: never panics; a swapped value holds the secret where the
    /// placeholder was, and `Basic` credentials decode to the swapped pair.
    #[test]
    fn header_injection(
        user in "[ -~]{0,12}",
        rest in "[ -~]{0,12}",
        noise in prop::collection::vec(any::<u8>(), 0..40),
        basic in any::<bool>(),
    ) {
        let (placeholder, secret) = (b"AIRLOCK_FUZZ_KEY".as_slice(), b"sk_fuzz_secret_value".as_slice());
        let _ = inject(&noise, placeholder, secret);
        let _ = basic_credentials(&noise);
        let plain = format!("{user}AIRLOCK_FUZZ_KEY{rest}");
        let value = if basic { format!("Basic {}", STANDARD.encode(&plain)) } else { format!("Bearer {plain}") };
        let out = inject(value.as_bytes(), placeholder, secret).unwrap();
        let want = format!("{user}sk_fuzz_secret_value{rest}");
        if basic {
            let decoded = basic_credentials(&out).unwrap();
            prop_assert_eq!(decoded.as_slice(), want.as_bytes());
        } else {
            let bearer = format!("Bearer {want}");
            prop_assert_eq!(out.as_slice(), bearer.as_bytes());
        }
    }

    /// Authorities: splitting and normalising never panic, and a normalised
    /// host normalises to itself.
    #[test]
    fn authority_parser(bytes in mutated(authorities())) {
        let text = String::from_utf8_lossy(&bytes);
        if let Some((h, _port)) = host::split_host_port(&text)
            && let Some(n) = host::normalize(h)
        {
            let again = host::normalize(&n);
            prop_assert_eq!(again.as_deref(), Some(n.as_str()));
            prop_assert!(!n.ends_with('.') && n == n.to_ascii_lowercase());
        }
        let _ = host::normalize(&text);
    }
}
