//! Every error code a command can be refused with, and the kind of refusal it is. The HTTP API
//! maps each kind to one status ([`Kind::status`]); a test keeps this table, the code the
//! services send and the error table of docs/getting-started.md in step.

/// What kind of refusal a code is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The request itself is malformed: a field missing, of the wrong type or out of range.
    BadRequest,
    /// Not signed in, or the credentials are wrong.
    Unauthenticated,
    /// Signed in, but this role or account may not do it.
    Forbidden,
    /// What the request names does not exist.
    NotFound,
    /// Well-formed, but what it names cannot be used for this (an offline device, one's own).
    Unprocessable,
    /// Valid, but the current state refuses it (already paused, not on a call, ...).
    Conflict,
    /// Too many attempts: try again later.
    Throttled,
    /// A service or the PBX did not answer.
    Unavailable,
    /// A fault of ours.
    Internal,
}

impl Kind {
    /// The HTTP status of this kind of refusal.
    pub fn status(self) -> u16 {
        match self {
            Kind::BadRequest => 400,
            Kind::Unauthenticated => 401,
            Kind::Forbidden => 403,
            Kind::NotFound => 404,
            Kind::Unprocessable => 422,
            Kind::Conflict => 409,
            Kind::Throttled => 429,
            Kind::Unavailable => 503,
            Kind::Internal => 500,
        }
    }
}

impl Kind {
    /// What a refusal of this kind means, in a few words (the OpenAPI document's).
    pub fn meaning(self) -> &'static str {
        match self {
            Kind::BadRequest => "Bad input (names the field)",
            Kind::Unauthenticated => "Not signed in, or the credentials are wrong",
            Kind::Forbidden => "Signed in, but this role or account may not do it",
            Kind::NotFound => "What the request names does not exist",
            Kind::Unprocessable => "Well-formed, but what it names cannot be used for this",
            Kind::Conflict => "Refused by the current state",
            Kind::Throttled => "Too many attempts: try again later",
            Kind::Unavailable => "A service or the PBX does not answer now",
            Kind::Internal => "A fault of ours",
        }
    }
}

use Kind::*;

/// Every code, with its kind.
pub const CODES: &[(&str, Kind)] = &[
    ("invalid_json", BadRequest),
    ("invalid_field", BadRequest),
    ("missing_field", BadRequest),
    ("missing_tenant", BadRequest),
    ("invalid_tenant", BadRequest),
    ("invalid_subject", BadRequest),
    ("unauthenticated", Unauthenticated),
    ("invalid_credentials", Unauthenticated),
    ("forbidden", Forbidden),
    ("account_disabled", Forbidden),
    ("queue_change_not_allowed", Forbidden),
    ("unknown_agent", NotFound),
    ("unknown_queue", NotFound),
    ("unknown_tenant", NotFound),
    ("unknown_extension", NotFound),
    ("unknown_channel", NotFound),
    ("unknown_command", NotFound),
    ("not_found", NotFound),
    ("unknown_pause_reason", Unprocessable),
    ("unknown_disposition", Unprocessable),
    ("unknown_device", Unprocessable),
    ("device_offline", Unprocessable),
    ("device_unavailable", Unprocessable),
    ("queue_not_assigned", Unprocessable),
    ("own_device", Unprocessable),
    ("agent_not_logged_in", Unprocessable),
    ("no_route", Unprocessable),
    ("already_logged_in", Conflict),
    ("not_logged_in", Conflict),
    ("already_paused", Conflict),
    ("not_paused", Conflict),
    ("already_in_queue", Conflict),
    ("not_in_queue", Conflict),
    ("device_in_use", Conflict),
    ("agent_exists", Conflict),
    ("queue_exists", Conflict),
    ("pause_reason_exists", Conflict),
    ("user_exists", Conflict),
    ("not_assigned", Conflict),
    ("conflict", Conflict),
    ("on_call", Conflict),
    ("no_call", Conflict),
    ("not_connected", Conflict),
    ("already_on_hold", Conflict),
    ("not_on_hold", Conflict),
    ("not_in_wrap_up", Conflict),
    ("disposition_required", Conflict),
    ("transfer_in_progress", Conflict),
    ("no_transfer", Conflict),
    ("transfer_target", Conflict),
    ("monitor_in_progress", Conflict),
    ("no_monitor", Conflict),
    ("not_sip_tenant", Conflict),
    ("channel_exists", Conflict),
    ("already_answered", Conflict),
    ("not_bridged", Conflict),
    ("not_inbound", Conflict),
    ("bridge_too_large", Conflict),
    ("too_many_attempts", Throttled),
    ("unavailable", Unavailable),
    ("internal", Internal),
];

/// The kind of a code; `None` for a code this table does not know (a test keeps that from
/// happening; the API answers such a code as an internal fault).
pub fn kind_of(code: &str) -> Option<Kind> {
    CODES.iter().find(|(c, _)| *c == code).map(|(_, k)| *k)
}
