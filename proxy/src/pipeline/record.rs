//! The record phase: the one audit record of a request (or of a refused
//! connection), built here from its [`RequestCtx`] and nowhere else, and
//! the one way a refusal is answered, logged and recorded
//! ([`RequestCtx::deny`]).
//!
//! A refusal before authentication is not written at once: anyone can
//! send one, so it goes to the throttle, which coalesces them per address
//! (`throttle::AuthThrottle`), and is logged at debug only.

use http::Response;
use tracing::{debug, info};

use crate::Body;
use crate::audit::{self, Outcome, Record};
use crate::error::Error;
use crate::respond::{self, Audience, Form, Refusal};

use super::ctx::RequestCtx;

impl RequestCtx {
    /// The record of this exchange with `outcome` and `status`; the caller
    /// adds what only the end knows (redactions, bytes down, completeness).
    pub(crate) fn record(&self, outcome: Outcome, status: u16) -> Record {
        let policy = &self.loaded.policy;
        Record {
            tenant: self.tenant_name.clone(),
            route: self.route().map(|r| policy.route(r).name.clone()),
            path: self.record_path(),
            query: self.record_query(),
            injected: self.injected(),
            bytes_up: self.bytes_up.load(std::sync::atomic::Ordering::Relaxed),
            body_placeholders: Some(self.body.data()).filter(|&n| n > 0),
            duration_ms: self.started.elapsed().as_millis() as u64,
            in_flight: self.in_flight.clone(),
            ..Record::new(
                self.ts.clone(),
                self.request_id.clone(),
                self.method.clone(),
                self.host.clone(),
                self.port,
                outcome,
                status,
            )
        }
    }

    /// The record of a refusal.
    fn refusal_record(&self, refusal: &Refusal, detail: Option<String>) -> Record {
        let policy = &self.loaded.policy;
        let mut record = self.record(Outcome::Deny, refusal.status);
        if record.route.is_none() {
            record.route = refusal.route.map(|r| policy.route(r).name.clone());
        }
        record.code = Some(refusal.code.as_str().to_owned());
        record.detail = detail;
        record.message = Some(refusal.message.clone());
        record.next_step = Some(refusal.next_step.to_string());
        // A refused request was not carried through: its record counts no
        // body bytes, however many were read before the refusal.
        record.bytes_up = 0;
        record
    }

    /// The path for the record, then the query: as scrubbed at the start,
    /// unless the vault has learnt a value since (a secret fetched for the
    /// first time during this request), in which case they are scrubbed
    /// again. Cut after scrubbing, never before: a cut secret would no
    /// longer match.
    fn record_path(&self) -> String {
        self.for_record(&self.path)
    }

    fn record_query(&self) -> Option<String> {
        self.query.as_deref().map(|q| self.for_record(q))
    }

    fn for_record(&self, scrubbed: &str) -> String {
        let text = if self.tenant.is_some() && self.shared.vault.version() != self.path_version {
            self.scrub(scrubbed)
        } else {
            scrubbed.to_owned()
        };
        audit::clip_path(text)
    }

    /// Refuses the request: maps `err` (the one mapping,
    /// [`respond::refusal`]), scrubs its texts, records and logs it, and
    /// answers in `form`.
    pub(crate) fn deny(&self, err: Error, to: Audience, form: Form) -> Response<Body> {
        self.deny_with(err, to, form, None)
    }

    /// [`RequestCtx::deny`], with a `detail` for the record.
    pub(crate) fn deny_with(&self, err: Error, to: Audience, form: Form, detail: Option<String>) -> Response<Body> {
        let refusal = self.refuse(&err, to, detail);
        refusal.response(&self.request_id, form)
    }

    /// Records and logs a refusal without answering it (a connection
    /// refused before its first request, a head hyper answered itself);
    /// the scrubbed refusal is returned for an answer.
    pub(crate) fn refuse(&self, err: &Error, to: Audience, detail: Option<String>) -> Refusal {
        let refusal = respond::refusal(err, to).scrubbed(|t| self.scrub(t));
        let record = self.refusal_record(&refusal, detail);
        let (id, code, side) = (&self.request_id, refusal.code, err.side());
        match (err, self.tenant_name.is_some()) {
            (Error::Auth(e), false) => {
                debug!(request_id = %id, %code, ?side, "refused");
                self.shared.auth.refused(self.peer.ip(), *e, record);
            }
            (_, true) => {
                info!(request_id = %id, %code, ?side, "refused");
                self.shared.audit.write(record);
            }
            // Before authentication anyone can send these: coalesced in the
            // audit log, and not logged above debug.
            (_, false) => {
                debug!(request_id = %id, %code, ?side, "refused");
                self.shared.auth.refused_unauthenticated(self.peer.ip(), record);
            }
        }
        refusal
    }

    /// Records a refusal that has no answer: its text goes to the record's
    /// `detail`.
    pub(crate) fn record_refused(&self, err: &Error) {
        self.refuse(err, Audience::Proxy, Some(err.to_string()));
    }
}
