//! Host normalisation for certificate names.

use std::net::IpAddr;

use crate::CaError;

/// Normalises a host for a certificate and the cache key: ASCII lower case,
/// no trailing dot, IPv6 brackets removed, IP literals in canonical form.
/// Rejects anything that is not a DNS name (letters, digits, `-`, `_`,
/// dot-separated labels of 1–63 characters) or an IP literal.
pub fn normalize_host(host: &str) -> Result<String, CaError> {
    let bad = || CaError::InvalidHost(host.chars().take(80).collect());
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(ip.to_string());
    }
    if host.starts_with('[') || host.ends_with(']') {
        // Brackets are for IPv6 literals only.
        return Err(bad());
    }
    let name = bare.strip_suffix('.').unwrap_or(bare);
    if name.is_empty() || name.len() > 253 {
        return Err(bad());
    }
    let label_ok = |l: &str| {
        !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !name.split('.').all(label_ok) {
        return Err(bad());
    }
    Ok(name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::normalize_host;

    #[test]
    fn normalises() {
        let ok = [
            ("API.Example.COM.", "api.example.com"),
            ("[::1]", "::1"),
            ("::1", "::1"),
            ("127.0.0.1", "127.0.0.1"),
            ("[2001:DB8::1]", "2001:db8::1"),
            ("a_b.test", "a_b.test"),
        ];
        for (input, want) in ok {
            assert_eq!(normalize_host(input).ok().as_deref(), Some(want), "{input}");
        }
        for bad in ["", ".", "a..b", "a b", "a/b", "u@h", "bücher.de", "[a.test]", "x\n", "*.a.test"] {
            assert!(normalize_host(bad).is_err(), "{bad:?}");
        }
    }
}
