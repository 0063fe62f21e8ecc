//! Host normalisation: one spelling per host, for the certificate's SAN and
//! the cache key alike. The rules are `airlock-host`'s, the ones the policy
//! applies before the proxy asks for a leaf: a host the policy admits is
//! always one the CA can mint for.

use crate::CaError;

/// Normalises `host` for a certificate and the leaf cache (see
/// [`airlock_host::normalize`] for the rules).
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
    airlock_host::normalize(host).ok_or_else(|| CaError::InvalidHost(host.chars().take(80).collect()))
}

#[cfg(test)]
mod tests {
    use super::normalize_host;

    // The rules themselves are tested where they live, in `airlock-host`.

    /// A name still ending in a dot once its one trailing dot is removed is
    /// no host: the CA used to accept `a..` as `a.`, a leaf and cache entry
    /// of its own for a name the policy refuses.
    #[test]
    fn refuses_a_name_with_two_trailing_dots() {
        for host in ["a..", "api.example.com.."] {
            assert!(normalize_host(host).is_err(), "{host:?} must be rejected, got {:?}", normalize_host(host));
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
