//! airlock's one host normaliser, shared by the policy (which matches
//! routes and decides on it) and the CA (which mints a certificate for it
//! and keys its cache by it).
//!
//! A host is accepted here exactly when the CA can name it in a
//! certificate a client will check, so a host the policy lets through is
//! always one the proxy can intercept. When the two crates had rules of
//! their own, hosts one accepted and the other refused (`a-.test`, `127.1`)
//! passed the policy, and under `egress = "deny"` the agent got a failed TLS
//! handshake where it should have got a denial.
//!
//! It is a crate of its own so that `airlock-ca` shares it without
//! depending on `airlock-policy` (the CA knows nothing of policy).
//! `airlock_policy::host::normalize` re-exports it.
//!
//! What this crate must never do: perform I/O, or depend on another airlock
//! crate.
#![deny(missing_docs)]

use std::net::IpAddr;

use rustls_pki_types::DnsName;

/// Normalises a host to its one spelling, or `None` when it is not a host.
///
/// - IP literals (IPv4 in dotted-quad form, IPv6 with or without
///   brackets) come back in canonical form without brackets:
///   `"[::1]"` → `"::1"`.
/// - DNS names come back in ASCII lower case without their trailing dot:
///   `"API.Example.COM."` → `"api.example.com"`.
///
/// Refused: empty input, wildcards, spaces, `/`, `@`, `:` outside an IPv6
/// literal, control and non-ASCII characters (internationalised names
/// arrive in their `xn--` form), brackets around anything but an IPv6
/// address, IPv6 zone ids, empty labels (`a..b`, and `a..`: one trailing
/// dot is removed, not two), labels over 63 or names over 253 characters,
/// labels starting or ending in `-`, and names whose last label is a
/// decimal or hex number (`127.1`, `0x7f.1`, `1.2.3.999`: clients read
/// those as IPv4 addresses, so a certificate naming them as DNS names would
/// never match).
pub fn normalize(host: &str) -> Option<String> {
    if let Some(inner) = host.strip_prefix('[') {
        // Brackets only ever delimit an IPv6 literal (RFC 3986 §3.2.2).
        return match inner.strip_suffix(']')?.parse::<IpAddr>() {
            Ok(ip @ IpAddr::V6(_)) => Some(ip.to_string()),
            _ => None,
        };
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(ip.to_string());
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    // DnsName takes a trailing dot as part of a name; one was removed above
    // and a second is an empty label.
    if !name.is_ascii() || name.ends_with('.') {
        return None;
    }
    let name = name.to_ascii_lowercase();
    // rustls-pki-types holds the DNS name rules rustls clients apply
    // (letters, digits, `-` and `_`; label and name lengths; hyphens inside
    // a label only; no numeric last label): checking with them means the
    // CA never mints, and the policy never admits, a name a client could
    // not ask for.
    DnsName::try_from(name.as_str()).ok()?;
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn normalises_names_and_ip_literals() {
        let long_labels = format!("{}.{}.example", "a".repeat(63), "b".repeat(63));
        let long_name = format!("{}.test", ["a"; 124].join("."));
        assert_eq!(long_name.len(), 252);
        let cases = [
            ("API.Example.COM.", "api.example.com"),
            ("api.example.com", "api.example.com"),
            ("localhost", "localhost"),
            ("a_b.test", "a_b.test"),
            ("_a.test", "_a.test"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
            ("a-b.c-d.test", "a-b.c-d.test"),
            ("1.example", "1.example"),
            ("x.0xg", "x.0xg"),
            ("127.0.0.1", "127.0.0.1"),
            ("[::1]", "::1"),
            ("::1", "::1"),
            ("[2001:DB8:0:0::1]", "2001:db8::1"),
            ("::ffff:127.0.0.1", "::ffff:127.0.0.1"),
            ("[::ffff:1.2.3.4]", "::ffff:1.2.3.4"),
            (long_labels.as_str(), long_labels.as_str()),
            (long_name.as_str(), long_name.as_str()),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input).as_deref(), Some(want), "{input:?}");
            // A normalised host normalises to itself.
            assert_eq!(normalize(want).as_deref(), Some(want), "{want:?}");
        }
    }

    #[test]
    fn refuses_what_cannot_be_a_certificate_name() {
        let too_long_label = format!("{}.test", "a".repeat(64));
        let too_long_name = format!("{}.test", ["a"; 126].join("."));
        let bad = [
            "",
            ".",
            "..",
            "a..b",
            "a..",
            ".a.test",
            "a b.test",
            " a.test",
            "a/b",
            "evil.com/x",
            "u@h.test",
            "a.test:443",
            "*.a.test",
            "*",
            "bücher.de",
            "x\n.test",
            "x\0",
            "a.test\r",
            "-a.test",
            "a-.test",
            "a.-b.test",
            "127.1",
            "1.2.3",
            "1.2.3.999",
            "0127.0.0.1",
            "2130706433",
            "0x7f.1",
            "0x7f000001",
            "example.123",
            "x.0",
            "[a.test]",
            "[127.0.0.1]",
            "[]",
            "[::1",
            "::1]",
            "fe80::1%eth0",
            "[fe80::1%25eth0]",
            too_long_label.as_str(),
            too_long_name.as_str(),
        ];
        for input in bad {
            assert_eq!(normalize(input), None, "{input:?}");
        }
    }
}
