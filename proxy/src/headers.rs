//! Hop-by-hop header handling, both directions.
//!
//! A proxy must not forward the headers that describe one connection
//! (RFC 9110 §7.6.1): the fixed list below and every header named in
//! `Connection`. `Proxy-Authorization` and `Proxy-Authenticate` are always
//! removed: the tenant token is for airlock only.
//!
//! Upgrades (RFC 9110 §7.8): the only protocol airlock relays is WebSocket
//! (RFC 6455), whose frames it can scan. Every other `Upgrade` token —
//! `h2c` (with its `HTTP2-Settings`) above all, which would turn the
//! connection into a pipe no request check or scrubber sees — is removed,
//! so the request goes on as plain HTTP/1.1.

use http::HeaderMap;
use http::header::{self, HeaderName};

/// Headers that only describe one hop. (`Trailer` is end to end: it names
/// the fields of the trailer section, RFC 9110 §6.6.2.)
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    // The h2c upgrade's settings (RFC 7540 §3.2.1), connection-specific.
    HeaderName::from_static("http2-settings"),
];

/// The `Upgrade` token airlock relays (RFC 6455 §4.1).
const WEBSOCKET: &str = "websocket";

/// Removes hop-by-hop headers, including those `Connection` names. When
/// `websocket` is set (a WebSocket handshake, see [`is_websocket_upgrade`]),
/// `Upgrade: websocket` and `Connection: upgrade` are set so the next hop
/// sees the handshake, and nothing else of `Upgrade` survives.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, websocket: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    if websocket {
        headers.insert(header::UPGRADE, http::HeaderValue::from_static(WEBSOCKET));
        headers.insert(header::CONNECTION, http::HeaderValue::from_static("upgrade"));
    }
}

/// Comma-separated list elements of every value of `name`, trimmed
/// (RFC 9110 §5.6.1).
fn list<'a>(headers: &'a HeaderMap, name: &header::HeaderName) -> impl Iterator<Item = &'a str> {
    headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).map(str::trim)
}

/// Whether a request's `TE` accepts trailers: the one `TE` value HTTP/2
/// allows, which a proxy passes on (gRPC servers require it).
pub fn accepts_trailers(headers: &HeaderMap) -> bool {
    list(headers, &header::TE).any(|t| t.split(';').next().is_some_and(|c| c.trim().eq_ignore_ascii_case("trailers")))
}

/// Whether an `Upgrade` field names WebSocket (the token is
/// case-insensitive, RFC 9110 §7.8; a version suffix is not WebSocket).
pub fn upgrades_to_websocket(headers: &HeaderMap) -> bool {
    list(headers, &header::UPGRADE).any(|t| t.eq_ignore_ascii_case(WEBSOCKET))
}

/// Whether an HTTP/1.1 request asks to upgrade to WebSocket: `Connection:
/// upgrade` and `websocket` among the `Upgrade` tokens. Any other upgrade
/// is not one airlock honours.
pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    list(headers, &header::CONNECTION).any(|t| t.eq_ignore_ascii_case("upgrade")) && upgrades_to_websocket(headers)
}

/// Codings of `Transfer-Encoding` other than `chunked` (which the HTTP
/// layer removes), in the order they were applied: they must be decoded
/// like content codings before the body can be scanned.
pub fn transfer_codings(headers: &HeaderMap) -> Vec<String> {
    list(headers, &header::TRANSFER_ENCODING)
        .filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case("chunked"))
        .map(str::to_ascii_lowercase)
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_named() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, x-private".parse().unwrap());
        h.insert("x-private", "1".parse().unwrap());
        h.insert("proxy-authorization", "Basic abc".parse().unwrap());
        h.insert("te", "trailers".parse().unwrap());
        h.insert("accept", "*/*".parse().unwrap());
        assert!(accepts_trailers(&h));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["accept"]);
    }

    #[test]
    fn keeps_upgrade_for_websocket() {
        let mut h = HeaderMap::new();
        h.insert("connection", "Upgrade".parse().unwrap());
        h.insert("upgrade", "WebSocket".parse().unwrap());
        h.insert("proxy-authorization", "Basic abc".parse().unwrap());
        assert!(is_websocket_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
        assert!(!h.contains_key("proxy-authorization"));
    }

    #[test]
    fn every_other_upgrade_is_stripped() {
        for (upgrade, connection) in [
            ("h2c", "Upgrade, HTTP2-Settings"),
            ("H2C", "upgrade"),
            ("TLS/1.2", "upgrade"),
            ("websocketx", "upgrade"),
            ("websocket", "keep-alive"),
        ] {
            let mut h = HeaderMap::new();
            h.insert("connection", connection.parse().unwrap());
            h.insert("upgrade", upgrade.parse().unwrap());
            h.insert("http2-settings", "AAMAAABkAAQAoAAAAAIAAAAA".parse().unwrap());
            assert!(!is_websocket_upgrade(&h), "{upgrade} / {connection}");
            strip_hop_by_hop(&mut h, false);
            assert!(h.is_empty(), "{upgrade}: {h:?}");
        }
        // A list offering h2c and websocket keeps only websocket.
        let mut h = HeaderMap::new();
        h.insert("connection", "upgrade".parse().unwrap());
        h.insert("upgrade", "h2c, websocket".parse().unwrap());
        assert!(is_websocket_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
    }

    #[test]
    fn transfer_codings_other_than_chunked() {
        let mut h = HeaderMap::new();
        h.insert("transfer-encoding", "gzip, Chunked".parse().unwrap());
        assert_eq!(transfer_codings(&h), ["gzip"]);
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        assert!(transfer_codings(&h).is_empty());
    }
}
