//! The admit phase: where a request may go and whether its head is
//! acceptable — a CONNECT's target or an absolute-form URI's authority
//! parsed into the destination, the request's `Host` and authority checked
//! against the connection's destination, and the head's size checked
//! against `[limits]`. (Proxy authentication is the listener's, through
//! `throttle::AuthThrottle`.)

use http::{Request, header};

use airlock_policy::{Limits, host};

use crate::error::Error;

use super::ctx::Destination;

/// Refuses a request whose head is over `max_header_bytes` or
/// `max_headers` with `431 request_too_large`. (hyper enforces twice these
/// as a hard cap and answers a bare 431 above it.)
pub(crate) fn check_head<B>(req: &Request<B>, limits: &Limits) -> Result<(), Error> {
    let count = req.headers().len();
    let uri = req.uri();
    let target = uri.scheme_str().map_or(0, |s| s.len() + 3)
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(0, |p| p.as_str().len());
    let bytes = req.method().as_str().len()
        + target
        + req.headers().iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum::<usize>();
    if count > limits.max_headers {
        return Err(Error::TooManyHeaderFields { count, max: limits.max_headers });
    }
    if bytes > limits.max_header_bytes {
        return Err(Error::HeadTooLarge { bytes, max: limits.max_header_bytes });
    }
    Ok(())
}

/// Checks that the request names the connection's destination: the `Host`
/// header (exactly one) and, in HTTP/2 or absolute form, the URI authority.
pub(crate) fn check_authority<B>(req: &Request<B>, dest: &Destination) -> Result<(), Error> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err(Error::MultipleHost);
    }
    let named = first
        .map(|h| h.to_str().ok().map(str::to_owned))
        .into_iter()
        .chain(req.uri().authority().map(|a| Some(a.as_str().to_owned())));
    for authority in named {
        let ok = authority
            .and_then(|a| parse_destination(&a, dest.default_port()))
            .is_some_and(|(h, p)| h == dest.host && p == dest.port);
        if !ok {
            return Err(Error::Misdirected { connected: dest.authority() });
        }
    }
    Ok(())
}

/// A CONNECT's target, before anything is looked up or connected: RFC
/// 9110 §9.3.6 allows only the authority form, `host:port` with the port
/// given (and an IPv6 literal in brackets), never a URI with a scheme or
/// path. None for anything else.
pub(crate) fn connect_target(uri: &http::Uri) -> Option<(String, u16)> {
    if uri.scheme().is_some() || uri.path_and_query().is_some() {
        return None;
    }
    let authority = uri.authority()?.as_str();
    host::split_host_port(authority)?.1?;
    parse_destination(authority, 0)
}

/// Parses a CONNECT target or absolute URI authority into a normalised
/// host and port.
pub fn parse_destination(authority: &str, default_port: u16) -> Option<(String, u16)> {
    if authority.contains('@') {
        return None;
    }
    let (h, p) = host::split_host_port(authority)?;
    // Brackets hold an IPv6 address and nothing else (RFC 3986 §3.2.2).
    if authority.starts_with('[') && h.parse::<std::net::Ipv6Addr>().is_err() {
        return None;
    }
    Some((host::normalize(h)?, p.unwrap_or(default_port)))
}

/// A request hyper refused before airlock saw it — a malformed or
/// oversized head, which hyper answers itself (400, 431) before closing
/// the connection. Other connection errors (the agent went away, or sent
/// nothing within `header_read_timeout`) are not requests.
pub(crate) fn refused_head(e: &hyper::Error) -> Option<Error> {
    if e.is_parse_too_large() {
        Some(Error::HeadRejected { too_large: true })
    } else if e.is_parse() {
        Some(Error::HeadRejected { too_large: false })
    } else {
        None
    }
}
