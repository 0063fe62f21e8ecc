//! Host normalisation: one spelling per host, for the certificate's SAN and
//! the cache key alike.

use std::net::IpAddr;

use rustls_pki_types::DnsName;

use crate::CaError;

/// Normalises `host` for a certificate and the leaf cache.
///
/// - IP literals (IPv4, or IPv6 with or without brackets) come back in
///   canonical form without brackets: `"[::1]"` → `"::1"`.
/// - DNS names come back in ASCII lower case without a trailing dot:
///   `"API.Example.COM."` → `"api.example.com"`.
///
/// Rejected: empty input, wildcards, spaces, `/`, `@`, `:` outside an IPv6
/// literal, control and non-ASCII characters (IDNs must arrive in their
/// `xn--` form), empty labels, labels over 63 or names over 253 characters,
/// labels starting or ending in `-`, IPv6 zone ids, and names whose last
/// label is a number (clients treat `127.1` as an IPv4 address, so a DNS
/// SAN for it would never match).
pub fn normalize_host(host: &str) -> Result<String, CaError> {
    let invalid = || CaError::InvalidHost(host.chars().take(80).collect());
    if let Some(inner) = host.strip_prefix('[') {
        // Brackets only ever delimit an IPv6 literal.
        return match inner.strip_suffix(']').map(str::parse::<IpAddr>) {
            Some(Ok(ip @ IpAddr::V6(_))) => Ok(ip.to_string()),
            _ => Err(invalid()),
        };
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ip.to_string());
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    if !name.is_ascii() {
        return Err(invalid());
    }
    let name = name.to_ascii_lowercase();
    // rustls-pki-types holds the DNS name rules rustls clients apply:
    // letters, digits, `-` and `_`; label and name lengths; no numeric last
    // label. Checking with them means we never mint a name a client could
    // not ask for.
    match DnsName::try_from(name.as_str()) {
        Ok(_) => Ok(name),
        Err(_) => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    use super::normalize_host;

    #[test]
    fn normalises_names_and_ip_literals() {
        let long = format!("{}.{}.example", "a".repeat(63), "b".repeat(63));
        let cases = [
            ("API.Example.COM.", "api.example.com"),
            ("api.example.com", "api.example.com"),
            ("localhost", "localhost"),
            ("a_b.test", "a_b.test"),
            ("xn--bcher-kva.de", "xn--bcher-kva.de"),
            ("a-b.c-d.test", "a-b.c-d.test"),
            ("1.example", "1.example"),
            ("127.0.0.1", "127.0.0.1"),
            ("[::1]", "::1"),
            ("::1", "::1"),
            ("[2001:DB8:0:0::1]", "2001:db8::1"),
            ("::ffff:127.0.0.1", "::ffff:127.0.0.1"),
            (long.as_str(), long.as_str()),
        ];
        for (input, want) in cases {
            match normalize_host(input) {
                Ok(got) => assert_eq!(got, want, "{input}"),
                Err(e) => panic!("{input:?}: {e}"),
            }
        }
    }

    #[test]
    fn rejects_what_cannot_be_a_certificate_name() {
        let too_long_label = format!("{}.test", "a".repeat(64));
        let too_long_name = format!("{}.test", ["a"; 126].join("."));
        let bad = [
            "",
            ".",
            "..",
            "a..b",
            ".a.test",
            "a b.test",
            " a.test",
            "a/b",
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
            "127.1",
            "1.2.3.999",
            "0x7f.1",
            "[a.test]",
            "[127.0.0.1]",
            "[::1",
            "::1]",
            "fe80::1%eth0",
            "[fe80::1%25eth0]",
            too_long_label.as_str(),
            too_long_name.as_str(),
        ];
        for input in bad {
            assert!(normalize_host(input).is_err(), "{input:?} must be rejected, got {:?}", normalize_host(input));
        }
    }

    #[test]
    fn errors_quote_and_truncate_the_input() {
        let long = "x ".repeat(100);
        let msg = normalize_host(&long).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.starts_with('"') && msg.len() < 140, "{msg}");
        let msg = normalize_host("a\nb").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("\\n") && !msg.contains('\n'), "control characters are escaped: {msg}");
    }
}
