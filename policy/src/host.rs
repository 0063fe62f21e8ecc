//! Host names as policy sees them: normalisation of request hosts and the
//! route host patterns (`name`, `name:port`, `*.suffix`, `*.suffix:port`).
//!
//! Matching is done on normalised hosts only ([`normalize`]): ASCII lower
//! case, no trailing dot, IPv6 literals without brackets. Internationalised
//! names must be written in their ASCII (punycode, `xn--`) form; a non-ASCII
//! host never matches anything. The normaliser is `airlock-host`'s, the
//! one the CA uses too.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

/// Default port of a route host written without one.
pub const DEFAULT_PORT: u16 = 443;

/// The one host normaliser, shared with the CA (see [`airlock_host`]): a
/// host it accepts is one the CA can mint a certificate for, so a host the
/// policy admits is always one the proxy can intercept.
pub use airlock_host::normalize;

/// Splits `host[:port]` (IPv6 literals bracketed) into a host and an optional
/// port. Returns `None` when the port is not a number in 1..=65535 or the
/// brackets are unbalanced.
pub fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            p => Some((host, Some(parse_port(p.strip_prefix(':')?)?))),
        };
    }
    match authority.rsplit_once(':') {
        // A bare IPv6 literal has several colons and no port.
        Some((h, _)) if h.contains(':') => Some((authority, None)),
        Some((h, p)) => Some((h, Some(parse_port(p)?))),
        None => Some((authority, None)),
    }
}

fn parse_port(p: &str) -> Option<u16> {
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse::<u16>().ok().filter(|&p| p != 0)
}

/// Why a route's host is refused. Holds the host as written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidPattern {
    /// Not `host` or `host:port` (a port out of 1-65535, unbalanced
    /// brackets).
    #[error("'{0}' is not a host or host:port")]
    NotAuthority(String),
    /// Not ASCII: internationalised names are written in punycode.
    #[error("'{0}' is not ASCII; write internationalised names in punycode (xn--…)")]
    NotAscii(String),
    /// Not a valid host name or IP literal.
    #[error("'{0}' is not a valid host")]
    NotAHost(String),
    /// A wildcard over a single label or an IP address (`*.com`).
    #[error("'{0}': a wildcard needs a domain of at least two labels after '*.'")]
    WildcardTooBroad(String),
    /// A `*` anywhere but as the whole first label.
    #[error("'{0}': '*' is only allowed as a whole first label ('*.example.com')")]
    MisplacedWildcard(String),
}

/// The host part of a route: an exact name (or IP literal), or a wildcard
/// `*.suffix` that matches any name with at least one label before
/// `.suffix` — never the bare `suffix` itself.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// Matches exactly this normalised host.
    Exact(String),
    /// Matches `<one or more labels>.<suffix>`; holds the suffix without the
    /// leading `*.`.
    Wildcard(String),
}

impl HostPattern {
    /// Parses `name`, `*.suffix`, optionally followed by `:port`.
    pub fn parse(spec: &str) -> Result<(Self, u16), InvalidPattern> {
        let (host, port) = split_host_port(spec).ok_or_else(|| InvalidPattern::NotAuthority(spec.to_owned()))?;
        let port = port.unwrap_or(DEFAULT_PORT);
        if !host.is_ascii() {
            return Err(InvalidPattern::NotAscii(spec.to_owned()));
        }
        if let Some(suffix) = host.strip_prefix("*.") {
            let suffix = normalize(suffix).ok_or_else(|| InvalidPattern::NotAHost(spec.to_owned()))?;
            if suffix.parse::<IpAddr>().is_ok() || !suffix.contains('.') {
                return Err(InvalidPattern::WildcardTooBroad(spec.to_owned()));
            }
            return Ok((HostPattern::Wildcard(suffix), port));
        }
        if host.contains('*') {
            return Err(InvalidPattern::MisplacedWildcard(spec.to_owned()));
        }
        let host = normalize(host).ok_or_else(|| InvalidPattern::NotAHost(spec.to_owned()))?;
        Ok((HostPattern::Exact(host), port))
    }

    /// Whether a normalised host matches this pattern.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h == host,
            HostPattern::Wildcard(suffix) => host
                .strip_suffix(suffix.as_str())
                .and_then(|prefix| prefix.strip_suffix('.'))
                .is_some_and(|labels| !labels.is_empty()),
        }
    }

    /// Larger is more specific: exact names beat every wildcard, and a
    /// longer wildcard suffix beats a shorter one.
    pub fn specificity(&self) -> usize {
        match self {
            HostPattern::Exact(_) => usize::MAX,
            HostPattern::Wildcard(s) => s.len(),
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(h) if h.contains(':') => write!(f, "[{h}]"),
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Wildcard(s) => write!(f, "*.{s}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_hosts() {
        let cases = [
            ("API.Example.COM.", Some("api.example.com")),
            ("api.example.com", Some("api.example.com")),
            ("[::1]", Some("::1")),
            ("::1", Some("::1")),
            ("127.0.0.1", Some("127.0.0.1")),
            ("xn--bcher-kva.example", Some("xn--bcher-kva.example")),
            ("bücher.example", None),
            ("", None),
            (".", None),
            ("a..b", None),
            ("evil.com/x", None),
            ("user@host", None),
            ("a b", None),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input).as_deref(), want, "{input:?}");
        }
    }

    /// A host no certificate can name is no host to the policy either. The
    /// policy used to accept these (a label starting or ending in `-`, a
    /// last label that is a number, which clients read as an IPv4 address,
    /// brackets around anything but IPv6) while the CA refused them, so
    /// under `egress = "deny"` the proxy intercepted a CONNECT to one and
    /// the agent's handshake failed when the CA would not mint.
    #[test]
    fn refuses_hosts_no_certificate_can_name() {
        let hosts = [
            "a-.test",
            "-a.test",
            "a.-b.test",
            "127.1",
            "1.2.3.999",
            "0x7f.1",
            "2130706433",
            "0127.0.0.1",
            "x.0",
            "[127.0.0.1]",
            "[a.test]",
        ];
        for host in hosts {
            assert_eq!(normalize(host), None, "{host:?}");
        }
        for spec in ["a-.test", "127.1:8443", "*.a-.test"] {
            assert_eq!(HostPattern::parse(spec), Err(InvalidPattern::NotAHost(spec.to_owned())), "{spec:?}");
        }
    }

    #[test]
    fn splits_authorities() {
        assert_eq!(split_host_port("a.test:8443"), Some(("a.test", Some(8443))));
        assert_eq!(split_host_port("a.test"), Some(("a.test", None)));
        assert_eq!(split_host_port("[::1]:443"), Some(("::1", Some(443))));
        assert_eq!(split_host_port("[::1]"), Some(("::1", None)));
        assert_eq!(split_host_port("::1"), Some(("::1", None)));
        assert_eq!(split_host_port("a.test:0"), None);
        assert_eq!(split_host_port("a.test:99999"), None);
        assert_eq!(split_host_port("a.test:+1"), None);
        assert_eq!(split_host_port("[::1"), None);
    }

    #[test]
    fn wildcard_never_matches_the_bare_domain() {
        let (p, port) = HostPattern::parse("*.example.com").expect("valid pattern");
        assert_eq!(port, 443);
        assert!(p.matches("api.example.com"));
        assert!(p.matches("a.b.example.com"));
        assert!(!p.matches("example.com"));
        assert!(!p.matches("evil-example.com"));
        assert!(!p.matches("example.com.evil.test"));
    }

    #[test]
    fn rejects_bad_patterns() {
        let cases = [
            ("*.com", InvalidPattern::WildcardTooBroad("*.com".into())),
            ("*.1.2.3.4", InvalidPattern::WildcardTooBroad("*.1.2.3.4".into())),
            ("a.*.com", InvalidPattern::MisplacedWildcard("a.*.com".into())),
            ("*", InvalidPattern::MisplacedWildcard("*".into())),
            ("bücher.example", InvalidPattern::NotAscii("bücher.example".into())),
            ("x:port", InvalidPattern::NotAuthority("x:port".into())),
            ("", InvalidPattern::NotAHost("".into())),
        ];
        for (bad, want) in cases {
            assert_eq!(HostPattern::parse(bad), Err(want), "{bad:?}");
        }
        let (p, port) = HostPattern::parse("API.Test.:8443").expect("valid");
        assert_eq!((p, port), (HostPattern::Exact("api.test".into()), 8443));
        let (p, _) = HostPattern::parse("[::1]:9").expect("valid");
        assert_eq!(p.to_string(), "[::1]");
    }
}

/// Whether an address is not a global unicast address of the public
/// internet. Only global unicast is public: every range of IANA's IPv4 and
/// IPv6 special-purpose address registries (RFC 6890 and its updates) that
/// is not globally reachable is refused — loopback, private (RFC 1918),
/// shared (100.64/10), link-local (169.254/16, where cloud metadata
/// services live), "this network", IETF protocol assignments, documentation,
/// benchmarking, multicast, reserved (240/4) and broadcast; unique- and
/// site-local, discard-only and SRv6 space; and any IPv6 address outside
/// 2000::/3.
///
/// IPv6 forms that carry an IPv4 address are judged by it: mapped
/// (`::ffff:a.b.c.d`), NAT64 (`64:ff9b::/96`, RFC 6052) and 6to4
/// (`2002::/16`, RFC 3056). The deprecated IPv4-compatible form (`::/96`)
/// and Teredo (`2001::/32`) are never public.
pub fn is_non_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !is_global_v4(v4),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
            if let Some(v4) = v6.to_ipv4_mapped() {
                return !is_global_v4(v4);
            }
            // NAT64's well-known prefix: the IPv4 address in the last 32 bits.
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return !is_global_v4(embedded(s[6], s[7]));
            }
            // 6to4: the IPv4 address in bits 16-47.
            if s[0] == 0x2002 {
                return !is_global_v4(embedded(s[1], s[2]));
            }
            let global_unicast = (s[0] & 0xe000) == 0x2000;
            // 2001::/23: IETF protocol assignments, Teredo among them;
            // 2001:db8::/32 and 3fff::/20: documentation (RFC 3849, 9637).
            let special = (s[0] == 0x2001 && (s[1] < 0x0200 || s[1] == 0x0db8)) || (s[0] & 0xfff0) == 0x3ff0;
            !global_unicast || special
        }
    }
}

/// Whether an IPv4 address is global unicast (see [`is_non_public`]).
fn is_global_v4(v4: Ipv4Addr) -> bool {
    let [a, b, c, _] = v4.octets();
    let special = a == 0 // "this network"
        || a == 10
        || a == 127
        || (a == 100 && (64..128).contains(&b)) // shared (RFC 6598)
        || (a == 169 && b == 254)
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // documentation
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast (deprecated)
        || (a == 192 && b == 168)
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || (a == 198 && b == 51 && c == 100) // documentation
        || (a == 203 && b == 0 && c == 113) // documentation
        || a >= 224; // multicast, reserved, broadcast
    !special
}

#[cfg(test)]
mod egress_tests {
    use super::is_non_public;

    #[test]
    fn only_global_unicast_is_public() {
        // Every special-purpose range (IANA's IPv4 and IPv6 registries),
        // and IPv6 forms that embed a non-public IPv4 address.
        for ip in [
            "0.1.2.3",
            "10.1.2.3",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "127.255.255.254",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.254",
            "192.0.0.8",
            "192.0.0.170",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.254",
            "198.51.100.1",
            "203.0.113.1",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::a9fe:a9fe",
            "::127.0.0.1",
            "::8.8.8.8",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::7f00:1",
            "64:ff9b::10.0.0.1",
            "64:ff9b:1::808:808",
            "100::1",
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:1::2",
            "2001:db8::1",
            "2002:a9fe:a9fe::1",
            "2002:7f00:1::1",
            "2002:c0a8:101::1",
            "3fff::1",
            "5f00::1",
            "fc00::1",
            "fd00::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "ff0e::1",
            "4000::1",
            "::2",
        ] {
            assert!(is_non_public(ip.parse().expect("ip")), "{ip} is not public");
        }
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "100.128.0.1",
            "100.63.255.255",
            "172.32.0.1",
            "192.0.3.1",
            "198.20.0.1",
            "223.255.255.254",
            "2606:4700::1111",
            "2001:4860:4860::8888",
            "2a00:1450::1",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_non_public(ip.parse().expect("ip")), "{ip} is public");
        }
    }
}
