//! The decide phase: the policy's pure decision on the request as the
//! connection's destination names it (never its `Host`) — the route and
//! the headers carrying its placeholder, or a denial that ends the request
//! before anything leaves the machine.

use http::Request;

use airlock_policy::{Decision, Injection, RequestInfo, RouteId};

use crate::error::Error;

use super::ctx::{Destination, RequestCtx};

/// An allowed request.
pub(crate) struct Decided {
    /// The route that matched.
    pub(crate) route: RouteId,
    /// The headers carrying its placeholder (indices into the request's
    /// fields in order).
    pub(crate) injections: Vec<Injection>,
    /// The query pairs (indices of the `&`-separated pairs) whose value
    /// carries it, in parameters the route lists.
    pub(crate) query: Vec<usize>,
}

/// Decides `req` (whose fields, in order, are `headers`) for the
/// context's tenant; the route is noted in the context and the span.
pub(crate) fn decide<B>(
    ctx: &RequestCtx,
    dest: &Destination,
    req: &Request<B>,
    headers: &[(&str, &[u8])],
) -> Result<Decided, Error> {
    let policy = &ctx.loaded.policy;
    let Some(tenant) = ctx.tenant else {
        return Err(Error::Auth(airlock_policy::AuthError::Unknown));
    };
    let target = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let info = RequestInfo { method: req.method().as_str(), host: &dest.host, port: dest.port, target, headers };
    let decision = policy.decide(tenant, &info);
    // The route the decision names, allowed or refused under it.
    let named = match &decision {
        Decision::Allow { route, .. } => Some(*route),
        Decision::Deny(denial) => denial.route,
    };
    if let Some(route) = named {
        tracing::Span::current().record("route", tracing::field::display(&policy.route(route).name));
    }
    match decision {
        Decision::Allow { route, injections, query } => {
            let _ = ctx.route.set(route);
            Ok(Decided { route, injections, query })
        }
        Decision::Deny(denial) => Err(Error::Policy(denial)),
    }
}
