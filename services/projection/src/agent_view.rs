//! How each event changes an agent's view: a pure function, tested without a database.

use cc_contracts::auth::AgentAccountEvent;
use cc_contracts::call::CallEvent;
use cc_contracts::queue::QueueEvent;
use cc_contracts::session::AgentSessionEvent;
use cc_contracts::views::{AgentStatus, AgentView, Counts, QueueRef};
use chrono::{DateTime, Utc};

/// A view for an agent no event has described yet.
pub fn empty(tenant: &str, agent: &str, at: DateTime<Utc>) -> AgentView {
    AgentView {
        tenant: tenant.into(),
        agent: agent.into(),
        display_name: agent.into(),
        enabled: true,
        status: AgentStatus::LoggedOut,
        status_label: AgentStatus::LoggedOut.label().into(),
        pause_reason: None,
        device: None,
        device_online: false,
        login_time: None,
        status_since: at,
        queues: vec![],
        assigned_queues: vec![],
        may_manage_queues: false,
        counts: Counts::default(),
        current_call: None,
        logged_out_by: None,
        dial_failure: None,
        version: 0,
    }
}

fn set_status(v: &mut AgentView, status: AgentStatus, at: DateTime<Utc>) {
    if v.status != status {
        v.status = status;
        v.status_label = status.label().into();
        v.status_since = at;
    }
}

/// The event families the portal view follows, decoded.
// One fact at a time is made and applied, never many kept: the size of a call fact is fine.
#[allow(clippy::large_enum_variant)]
pub enum Fact {
    Account(AgentAccountEvent),
    Session(AgentSessionEvent),
    Queue(QueueEvent),
    /// A call event with what the portal shows of the call (from its `CallEnteredQueue`).
    Call(CallEvent, Option<CallInfo>),
}

/// The Call Details of a queue call.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CallInfo {
    pub queue: String,
    pub caller_number: String,
    pub caller_name: String,
    pub entered_at: DateTime<Utc>,
    /// With a `TransferStarted`: the display name of the agent transferring the call.
    #[serde(default)]
    pub transferred_by_name: Option<String>,
}

/// The status the portal shows: the call's phase first, then paused, idle or logged out.
fn derive_status(v: &AgentView) -> AgentStatus {
    match v.current_call.as_ref().and_then(|c| c["phase"].as_str()) {
        Some("ringing") => AgentStatus::Ringing,
        Some("dialing") => AgentStatus::Dialing,
        Some("connected") => AgentStatus::Connected,
        Some("on_hold") => AgentStatus::OnHold,
        Some("wrap_up") => AgentStatus::WrapUp,
        _ if v.login_time.is_none() => AgentStatus::LoggedOut,
        _ if v.pause_reason.is_some() => AgentStatus::Paused,
        _ => AgentStatus::Idle,
    }
}

/// The word the portal shows: the status's, except for an agent consulting the target of
/// their attended transfer (the customer waits on hold, but the agent is talking): "Consulting".
fn label_of(v: &AgentView) -> &'static str {
    let consulting = v.status == AgentStatus::OnHold
        && v.current_call
            .as_ref()
            .and_then(|c| c.get("transfer"))
            .is_some_and(|t| t["method"] == "attended" && t["state"] == "answered");
    if consulting {
        "Consulting"
    } else {
        v.status.label()
    }
}

fn set_phase(v: &mut AgentView, call: &str, phase: &str, extra: &[(&str, serde_json::Value)]) {
    if let Some(c) = v.current_call.as_mut().filter(|c| c["call"] == call) {
        c["phase"] = serde_json::Value::String(phase.into());
        for (k, val) in extra {
            c[*k] = val.clone();
        }
    }
}

/// The Call Details of a call ringing at the agent's phone (`queue` none: a transferred
/// outbound call, which has no queue and no wrap-up).
fn ringing(
    call: &str,
    queue: Option<&str>,
    queue_name: &str,
    info: Option<&CallInfo>,
    at: DateTime<Utc>,
) -> serde_json::Value {
    serde_json::json!({
        "call": call,
        "phase": "ringing",
        "queue": queue,
        "queue_name": queue_name,
        "caller_number": info.map(|i| i.caller_number.clone()),
        "caller_name": info.map(|i| i.caller_name.clone()),
        "entered_queue_at": info.map(|i| i.entered_at),
        "offered_at": at,
    })
}

fn in_wrap_up(v: &AgentView) -> bool {
    v.current_call
        .as_ref()
        .is_some_and(|c| c["phase"] == "wrap_up")
}

/// Changes fields of one part of `call`'s details (`transfer`, `monitor`), if it has that part.
fn set_part(v: &mut AgentView, call: &str, part: &str, fields: &[(&str, serde_json::Value)]) {
    if let Some(t) = v
        .current_call
        .as_mut()
        .filter(|c| c["call"] == call)
        .and_then(|c| c.get_mut(part))
        .filter(|t| t.is_object())
    {
        for (k, val) in fields {
            t[*k] = val.clone();
        }
    }
}

/// Changes fields of the transfer going on in `call`, if any.
fn set_transfer(v: &mut AgentView, call: &str, fields: &[(&str, serde_json::Value)]) {
    set_part(v, call, "transfer", fields)
}

fn drop_transfer(v: &mut AgentView, call: &str) {
    if let Some(c) = v
        .current_call
        .as_mut()
        .filter(|c| c["call"] == call)
        .and_then(|c| c.as_object_mut())
    {
        c.remove("transfer");
    }
}

/// Changes what the receiving agent of a transfer in `call` is in, if they are.
fn set_received(v: &mut AgentView, call: &str, f: impl FnOnce(&mut serde_json::Value)) {
    if let Some(r) = v
        .current_call
        .as_mut()
        .filter(|c| c["call"] == call)
        .and_then(|c| c.get_mut("received_transfer"))
        .filter(|r| r.is_object())
    {
        f(r);
    }
}

/// Changes fields of the supervisor's monitoring of `call`, if any.
fn set_monitor(v: &mut AgentView, call: &str, fields: &[(&str, serde_json::Value)]) {
    set_part(v, call, "monitor", fields)
}

/// The hold timer and count of the Call Details: `held_since` while the customer is on hold,
/// `hold_count` holds so far and `hold_ms` their time (ended holds), so the talk time shown
/// can leave hold out as the reports do (`reporting.calls.talk_ms`).
fn count_hold(v: &mut AgentView, call: &str, held: bool, at: DateTime<Utc>) {
    let Some(c) = v.current_call.as_mut().filter(|c| c["call"] == call) else {
        return;
    };
    let since = c
        .get("held_since")
        .and_then(|s| s.as_str())
        .and_then(|s| s.parse::<DateTime<Utc>>().ok());
    match (held, since) {
        (true, None) => {
            let n = c["hold_count"].as_i64().unwrap_or(0);
            c["hold_count"] = serde_json::json!(n + 1);
            c["held_since"] = serde_json::json!(at);
        }
        (false, Some(since)) => {
            let ms = c["hold_ms"].as_i64().unwrap_or(0) + (at - since).num_milliseconds().max(0);
            c["hold_ms"] = serde_json::json!(ms);
            c["held_since"] = serde_json::Value::Null;
        }
        _ => {}
    }
}

fn clear_call(v: &mut AgentView, call: &str) {
    if v.current_call.as_ref().is_some_and(|c| c["call"] == call) {
        v.current_call = None;
    }
}

/// Applies a fact about `v`'s agent. `queue_name` resolves a queue number to its name.
pub fn apply(
    v: &mut AgentView,
    fact: &Fact,
    at: DateTime<Utc>,
    queue_name: &dyn Fn(&str) -> String,
) {
    let queue_ref = |q: &str| QueueRef {
        queue: q.to_string(),
        name: queue_name(q),
    };
    match fact {
        Fact::Account(e) => match e {
            AgentAccountEvent::AgentAccountCreated {
                display_name,
                may_manage_queues,
                ..
            }
            | AgentAccountEvent::AgentAccountUpdated {
                display_name,
                may_manage_queues,
                ..
            } => {
                v.display_name = display_name.clone();
                v.may_manage_queues = *may_manage_queues;
            }
            AgentAccountEvent::AgentAccountDisabled { .. } => v.enabled = false,
            AgentAccountEvent::AgentAccountEnabled { .. } => v.enabled = true,
            AgentAccountEvent::AgentPasswordChanged { .. } => {}
        },
        Fact::Session(e) => match e {
            AgentSessionEvent::AgentLoggedIn { device, queues, .. } => {
                // The counts the portal shows are those of this login.
                v.counts = Counts::default();
                v.dial_failure = None;
                v.logged_out_by = None;
                v.device = Some(device.to_string());
                v.device_online = true;
                v.login_time = Some(at);
                v.pause_reason = None;
                v.queues = queues.iter().map(|q| queue_ref(q.as_str())).collect();
                set_status(v, AgentStatus::Idle, at);
            }
            AgentSessionEvent::AgentLoggedOut { reason, .. } => {
                v.logged_out_by = Some(*reason);
                v.current_call = None;
                v.device = None;
                v.device_online = false;
                v.login_time = None;
                v.pause_reason = None;
                v.queues.clear();
                v.current_call = None;
                set_status(v, AgentStatus::LoggedOut, at);
            }
            AgentSessionEvent::AgentPaused { reason, .. } => {
                v.pause_reason = Some(reason.clone());
                set_status(v, AgentStatus::Paused, at);
            }
            AgentSessionEvent::AgentPauseReasonChanged { to, .. } => {
                v.pause_reason = Some(to.clone());
                v.status_since = at;
            }
            AgentSessionEvent::AgentUnpaused { .. } => {
                v.pause_reason = None;
                set_status(v, AgentStatus::Idle, at);
            }
            AgentSessionEvent::AgentJoinedQueue { queue, .. } => {
                if !v.queues.iter().any(|q| q.queue == queue.as_str()) {
                    v.queues.push(queue_ref(queue.as_str()));
                    v.queues.sort_by(|a, b| a.queue.cmp(&b.queue));
                }
            }
            AgentSessionEvent::AgentLeftQueue { queue, .. } => {
                v.queues.retain(|q| q.queue != queue.as_str())
            }
            AgentSessionEvent::AgentDeviceWentOffline { .. } => v.device_online = false,
            AgentSessionEvent::AgentDeviceCameOnline { .. } => v.device_online = true,
        },
        Fact::Queue(e) => match e {
            QueueEvent::AgentAssignedToQueue { queue, .. } => {
                if !v.assigned_queues.iter().any(|q| q.queue == queue.as_str()) {
                    v.assigned_queues.push(queue_ref(queue.as_str()));
                    v.assigned_queues.sort_by(|a, b| a.queue.cmp(&b.queue));
                }
            }
            QueueEvent::AgentUnassignedFromQueue { queue, .. } => {
                v.assigned_queues.retain(|q| q.queue != queue.as_str())
            }
            QueueEvent::QueueCreated { queue, name } => {
                for q in v.queues.iter_mut().chain(v.assigned_queues.iter_mut()) {
                    if q.queue == queue.as_str() {
                        q.name = name.clone();
                    }
                }
            }
            QueueEvent::QueueConfigured { .. } => {}
        },
        Fact::Call(e, info) => {
            use serde_json::json;
            match e {
                CallEvent::CallOffered {
                    call,
                    queue,
                    ring_timeout_s,
                    ..
                } => {
                    // A new offer ends a wrap-up: the router records the wrap-up's end and the
                    // next offer on different call streams, so the store may hold them in
                    // either order (the old call's WrapUpEnded then no longer matches).
                    if v.current_call.is_none() || in_wrap_up(v) {
                        let mut c = ringing(
                            call,
                            Some(queue.as_str()),
                            &queue_name(queue.as_str()),
                            info.as_ref(),
                            at,
                        );
                        // The ring countdown: when the offer counts as missed.
                        if let Some(s) = ring_timeout_s {
                            c["ring_until"] = json!(at + chrono::Duration::seconds(*s));
                        }
                        v.current_call = Some(c);
                    }
                }
                CallEvent::OfferRejected { call, .. } => {
                    v.counts.rejected += 1;
                    clear_call(v, call);
                }
                CallEvent::OfferTimedOut { call, .. } => {
                    v.counts.missed += 1;
                    clear_call(v, call);
                }
                CallEvent::OfferWithdrawn { call, .. } => clear_call(v, call),
                CallEvent::CallAnswered { call, wait_ms, .. } => set_phase(
                    v,
                    call,
                    "connected",
                    &[("answered_at", json!(at)), ("wait_ms", json!(wait_ms))],
                ),
                CallEvent::CallConnected { call, .. } => {
                    // An outbound call's talk starts when the far end answers.
                    let dialing = v
                        .current_call
                        .as_ref()
                        .is_some_and(|c| c["call"] == call.as_str() && c["phase"] == "dialing");
                    let extra = if dialing {
                        vec![("answered_at", json!(at))]
                    } else {
                        vec![]
                    };
                    set_phase(v, call, "connected", &extra);
                }
                CallEvent::OutboundCallStarted {
                    call,
                    agent,
                    number,
                    extension,
                    ..
                } if agent.as_str() == v.agent => {
                    v.dial_failure = None;
                    v.current_call = Some(json!({
                        "call": call,
                        "phase": "dialing",
                        "direction": "outbound",
                        "queue": null,
                        "number": number,
                        "extension": extension,
                        "caller_number": number,
                        "caller_name": "",
                        // agent_ringing: the agent's own phone rings; number_ringing: then the
                        // number they dialled.
                        "dial_state": "agent_ringing",
                        "dialed_at": at,
                    }));
                }
                CallEvent::OutboundCallDialed { call, agent } if agent.as_str() == v.agent => {
                    set_phase(
                        v,
                        call,
                        "dialing",
                        &[("dial_state", json!("number_ringing"))],
                    );
                }
                CallEvent::OutboundCallFailed {
                    call,
                    agent,
                    reason,
                } if agent.as_str() == v.agent => {
                    if let Some(c) = v
                        .current_call
                        .as_ref()
                        .filter(|c| c["call"] == call.as_str())
                    {
                        v.dial_failure = Some(cc_contracts::views::DialFailure {
                            call: call.clone(),
                            number: c["number"].as_str().unwrap_or_default().to_string(),
                            reason: *reason,
                            label: reason.label().into(),
                            at,
                        });
                    }
                    clear_call(v, call);
                }
                CallEvent::OutboundCallStarted { .. }
                | CallEvent::OutboundCallDialed { .. }
                | CallEvent::OutboundCallFailed { .. } => {}
                CallEvent::CallResumed { call, .. } | CallEvent::CallHeld { call, .. } => {
                    let held = matches!(e, CallEvent::CallHeld { .. });
                    count_hold(v, call, held, at);
                    set_phase(v, call, if held { "on_hold" } else { "connected" }, &[]);
                    set_transfer(v, call, &[("customer_held", json!(held))]);
                }
                CallEvent::CallEnded { call, .. }
                    if v.current_call.as_ref().is_some_and(|c| {
                        c["call"] == call.as_str() && c.get("queue").is_some_and(|q| q.is_null())
                    }) =>
                {
                    // A call without a queue (an outbound call) has no wrap-up: the agent is
                    // free at once.
                    v.counts.completed += 1;
                    clear_call(v, call);
                }
                CallEvent::CallEnded {
                    call, talk_ms, by, ..
                } => {
                    v.counts.completed += 1;
                    // A hold still open when the call ends counts up to the end.
                    count_hold(v, call, false, at);
                    set_phase(
                        v,
                        call,
                        "wrap_up",
                        &[
                            ("ended_at", json!(at)),
                            ("talk_ms", json!(talk_ms)),
                            ("ended_by", json!(by)),
                        ],
                    );
                    drop_transfer(v, call);
                }
                CallEvent::TransferStarted {
                    call,
                    agent,
                    method,
                    target,
                    target_agent,
                    queue,
                    ..
                } => {
                    if agent.as_str() == v.agent {
                        let held = *method == cc_contracts::call::TransferMethod::Attended
                            || v.current_call
                                .as_ref()
                                .is_some_and(|c| c["phase"] == "on_hold");
                        if let Some(c) = v
                            .current_call
                            .as_mut()
                            .filter(|c| c["call"] == call.as_str())
                        {
                            c["transfer"] = json!({
                                "method": method,
                                "target": target,
                                "target_label": target.label(),
                                "state": "ringing",
                                "customer_held": held,
                            });
                        }
                    } else if target_agent.as_ref().is_some_and(|t| t.as_str() == v.agent)
                        && (v.current_call.is_none() || in_wrap_up(v))
                    {
                        // The receiving agent's phone rings with a transferred call.
                        let q = queue.as_ref().map(|q| q.as_str());
                        let mut c = ringing(
                            call,
                            q,
                            &q.map(queue_name).unwrap_or_default(),
                            info.as_ref(),
                            at,
                        );
                        c["transferred_from"] = json!(agent);
                        c["transferred_from_name"] =
                            json!(info.as_ref().and_then(|i| i.transferred_by_name.clone()));
                        // What the receiving agent is in until the transfer completes: the
                        // call is theirs only then (see `set_options`).
                        c["received_transfer"] = json!({"method": method, "state": "ringing"});
                        v.current_call = Some(c);
                    }
                }
                CallEvent::TransferAnswered {
                    call, target_agent, ..
                }
                | CallEvent::ConferenceFormed {
                    call, target_agent, ..
                } => {
                    if target_agent.as_ref().is_some_and(|t| t.as_str() == v.agent) {
                        if v.current_call
                            .as_ref()
                            .is_some_and(|c| c["phase"] == "ringing")
                        {
                            // The wait of this offer: from the transfer's start, not the
                            // customer's entry into the queue (which includes the first
                            // agent's talk).
                            let wait_ms = v
                                .current_call
                                .as_ref()
                                .and_then(|c| c["offered_at"].as_str())
                                .and_then(|t| t.parse::<DateTime<Utc>>().ok())
                                .map(|t| (at - t).num_milliseconds().max(0));
                            set_phase(
                                v,
                                call,
                                "connected",
                                &[("answered_at", json!(at)), ("wait_ms", json!(wait_ms))],
                            );
                        }
                        set_received(v, call, |r| {
                            // Attended: consulting the transferring agent; live: the 3-way call;
                            // blind: the call is theirs at once (TransferCompleted comes with it).
                            r["state"] = json!(match r["method"].as_str() {
                                Some("attended") => "consultation",
                                Some("live") => "conference",
                                _ => "answered",
                            });
                        });
                    } else {
                        let state = if matches!(e, CallEvent::ConferenceFormed { .. }) {
                            "conference"
                        } else {
                            "answered"
                        };
                        set_transfer(v, call, &[("state", json!(state))]);
                    }
                }
                CallEvent::TransferFailed {
                    call, target_agent, ..
                }
                | CallEvent::TransferCancelled {
                    call, target_agent, ..
                } => {
                    if target_agent.as_ref().is_some_and(|t| t.as_str() == v.agent) {
                        clear_call(v, call); // no count: a transfer is not a queue offer
                    } else {
                        drop_transfer(v, call);
                    }
                }
                CallEvent::TransferCompleted {
                    call, target_agent, ..
                } => {
                    if target_agent.as_ref().is_some_and(|t| t.as_str() == v.agent) {
                        // The call is the receiving agent's now.
                        if let Some(c) = v
                            .current_call
                            .as_mut()
                            .filter(|c| c["call"] == call.as_str())
                            .and_then(|c| c.as_object_mut())
                        {
                            c.remove("received_transfer");
                        }
                    }
                }
                CallEvent::TransferredCallEnded { .. } => {}
                CallEvent::MonitorStarted {
                    call,
                    agent,
                    supervisor,
                    supervisor_name,
                    mode,
                    ..
                } if agent.as_str() == v.agent => {
                    if let Some(c) = v
                        .current_call
                        .as_mut()
                        .filter(|c| c["call"] == call.as_str())
                    {
                        c["monitor"] = json!({
                            "supervisor": supervisor,
                            "supervisor_name": supervisor_name,
                            "mode": mode,
                            "mode_label": mode.label(),
                            "state": "ringing",
                            "since": at,
                        });
                    }
                }
                CallEvent::MonitorJoined { call, agent, .. } if agent.as_str() == v.agent => {
                    set_monitor(v, call, &[("state", json!("on_call"))]);
                }
                CallEvent::MonitorModeChanged {
                    call, agent, mode, ..
                } if agent.as_str() == v.agent => {
                    set_monitor(
                        v,
                        call,
                        &[("mode", json!(mode)), ("mode_label", json!(mode.label()))],
                    );
                }
                CallEvent::MonitorEnded { call, agent, .. } if agent.as_str() == v.agent => {
                    if let Some(c) = v
                        .current_call
                        .as_mut()
                        .filter(|c| c["call"] == call.as_str())
                        .and_then(|c| c.as_object_mut())
                    {
                        c.remove("monitor");
                    }
                }
                CallEvent::MonitorStarted { .. }
                | CallEvent::MonitorJoined { .. }
                | CallEvent::MonitorModeChanged { .. }
                | CallEvent::MonitorEnded { .. } => {}
                CallEvent::WrapUpStarted { call, seconds, .. } => set_phase(
                    v,
                    call,
                    "wrap_up",
                    &[(
                        "wrap_up_until",
                        json!(at + chrono::Duration::seconds(*seconds)),
                    )],
                ),
                CallEvent::WrapUpEnded { call, .. } => clear_call(v, call),
                CallEvent::CallDispositionRecorded {
                    call,
                    agent,
                    disposition,
                    note,
                    ..
                } if agent.as_str() == v.agent => set_phase(
                    v,
                    call,
                    "wrap_up",
                    &[("disposition", json!(disposition)), ("note", json!(note))],
                ),
                CallEvent::CallDispositionRecorded { .. } => {}
                CallEvent::CallEnteredQueue { .. }
                | CallEvent::CallAbandoned { .. }
                | CallEvent::CallLeftQueue { .. } => {}
            }
        }
    }
    let status = derive_status(v);
    set_status(v, status, at);
    let label = label_of(v);
    if v.status_label != label {
        v.status_label = label.into();
        v.status_since = at;
    }
    set_options(v);
    v.version += 1;
}

/// The call options that apply now (the portal shows exactly these, and call-control accepts
/// each): while connected or on hold `hangup`, `hold` or `resume`, and the three transfers;
/// during a transfer `complete`, `cancel` and `hold` / `resume` (the customer); in wrap-up
/// `end_wrap_up`. The receiving agent of a transfer that is not complete yet may only leave
/// it: `end_consultation` (attended) or `leave_conference` (live), both a Hangup.
fn set_options(v: &mut AgentView) {
    let Some(c) = v.current_call.as_mut() else {
        return;
    };
    let transfer = c.get("transfer").filter(|t| t.is_object());
    let received = c
        .get("received_transfer")
        .and_then(|r| r["state"].as_str())
        .map(str::to_string);
    let options: &[&str] = match (c["phase"].as_str(), transfer, received.as_deref()) {
        (Some("ringing"), _, _) => &[],
        // Hangup ends the dial (the agent's phone or the number stops ringing).
        (Some("dialing"), _, _) => &["hangup"],
        (Some("wrap_up"), _, _) => &["end_wrap_up"],
        (_, _, Some("consultation")) => &["end_consultation"],
        (_, _, Some("conference")) => &["leave_conference"],
        (phase, transfer, _) => options_of(phase, transfer),
    };
    c["options"] = serde_json::json!(options);
}

fn options_of(
    phase: Option<&str>,
    transfer: Option<&serde_json::Value>,
) -> &'static [&'static str] {
    match (phase, transfer) {
        (Some("connected"), None) => &[
            "hangup",
            "hold",
            "blind_transfer",
            "attended_transfer",
            "live_transfer",
        ],
        (Some("on_hold"), None) => &[
            "hangup",
            "resume",
            "blind_transfer",
            "attended_transfer",
            "live_transfer",
        ],
        (Some("connected"), Some(_)) => &["complete", "cancel", "hold"],
        (Some("on_hold"), Some(_)) => &["complete", "cancel", "resume"],
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cc_contracts::domain::{AgentNumber, DeviceId, QueueNumber};

    fn a() -> AgentNumber {
        AgentNumber::parse("1001").unwrap()
    }

    #[test]
    fn login_pause_unpause_logout_as_the_portal_shows_them() {
        let t0 = Utc::now();
        let mut v = empty("acme", "1001", t0);
        let names = |q: &str| {
            if q == "500" {
                "Sales".to_string()
            } else {
                q.to_string()
            }
        };
        let login = AgentSessionEvent::AgentLoggedIn {
            agent: a(),
            login_id: Default::default(),
            device: DeviceId::parse("1001").unwrap(),
            queues: vec![QueueNumber::parse("500").unwrap()],
        };
        apply(&mut v, &Fact::Session(login), t0, &names);
        assert_eq!(
            (v.status, v.status_label.as_str()),
            (AgentStatus::Idle, "Idle")
        );
        assert_eq!(
            v.queues,
            vec![QueueRef {
                queue: "500".into(),
                name: "Sales".into()
            }]
        );
        assert_eq!(v.login_time, Some(t0));
        apply(
            &mut v,
            &Fact::Session(AgentSessionEvent::AgentPaused {
                agent: a(),
                reason: "Lunch".into(),
            }),
            t0,
            &names,
        );
        assert_eq!(
            (v.status, v.pause_reason.as_deref()),
            (AgentStatus::Paused, Some("Lunch"))
        );
        apply(
            &mut v,
            &Fact::Session(AgentSessionEvent::AgentUnpaused {
                agent: a(),
                reason: "Lunch".into(),
            }),
            t0,
            &names,
        );
        assert_eq!(
            (v.status, v.pause_reason.as_deref()),
            (AgentStatus::Idle, None)
        );
        apply(
            &mut v,
            &Fact::Session(AgentSessionEvent::AgentLoggedOut {
                agent: a(),
                login_id: Default::default(),
                reason: cc_contracts::session::LogoutReason::Agent,
            }),
            t0,
            &names,
        );
        assert_eq!(
            (v.status, v.device.as_deref(), v.queues.len()),
            (AgentStatus::LoggedOut, None, 0)
        );
        assert_eq!(v.version, 4);
    }

    #[test]
    fn a_new_offer_recorded_before_the_last_wrap_up_ends_still_shows_ringing() {
        use cc_contracts::call::{CallEvent as C, EndedBy};
        let t0 = Utc::now();
        let mut v = empty("acme", "1001", t0);
        let names = |q: &str| q.to_string();
        let login = AgentSessionEvent::AgentLoggedIn {
            agent: a(),
            login_id: Default::default(),
            device: DeviceId::parse("1001").unwrap(),
            queues: vec![QueueNumber::parse("500").unwrap()],
        };
        apply(&mut v, &Fact::Session(login), t0, &names);
        let offer = |call: &str| C::CallOffered {
            call: call.into(),
            queue: QueueNumber::parse("500").unwrap(),
            agent: a(),
            device: DeviceId::parse("1001").unwrap(),
            offer: format!("{call}-o"),
            ring_timeout_s: None,
        };
        let call = |e: C| Fact::Call(e, None);
        apply(&mut v, &call(offer("old")), t0, &names);
        apply(
            &mut v,
            &call(C::CallAnswered {
                call: "old".into(),
                queue: QueueNumber::parse("500").unwrap(),
                agent: a(),
                offer: "old-o".into(),
                wait_ms: 0,
            }),
            t0,
            &names,
        );
        apply(
            &mut v,
            &call(C::CallEnded {
                call: "old".into(),
                agent: a(),
                by: EndedBy::Caller,
                talk_ms: 5,
            }),
            t0,
            &names,
        );
        assert_eq!(v.status, AgentStatus::WrapUp);
        // The router's writers may store the next offer before the old call's WrapUpEnded.
        apply(&mut v, &call(offer("new")), t0, &names);
        apply(
            &mut v,
            &call(C::WrapUpEnded {
                call: "old".into(),
                agent: a(),
                early: false,
            }),
            t0,
            &names,
        );
        assert_eq!(v.status, AgentStatus::Ringing);
        assert_eq!(v.current_call.as_ref().unwrap()["call"], "new");
        assert_eq!(v.counts.completed, 1);
    }

    #[test]
    fn the_ring_deadline_comes_from_the_offer_and_holds_are_counted_and_timed() {
        use cc_contracts::call::{CallEvent as C, EndedBy};
        let t0 = Utc::now();
        let s = chrono::Duration::seconds;
        let mut v = empty("acme", "1001", t0);
        let names = |q: &str| q.to_string();
        let login = AgentSessionEvent::AgentLoggedIn {
            agent: a(),
            login_id: Default::default(),
            device: DeviceId::parse("1001").unwrap(),
            queues: vec![QueueNumber::parse("500").unwrap()],
        };
        apply(&mut v, &Fact::Session(login), t0, &names);
        let call = |e: C| Fact::Call(e, None);
        apply(
            &mut v,
            &call(C::CallOffered {
                call: "c".into(),
                queue: QueueNumber::parse("500").unwrap(),
                agent: a(),
                device: DeviceId::parse("1001").unwrap(),
                offer: "o".into(),
                ring_timeout_s: Some(15),
            }),
            t0,
            &names,
        );
        let c = |v: &AgentView| v.current_call.clone().unwrap();
        assert_eq!(c(&v)["ring_until"], serde_json::json!(t0 + s(15)));
        apply(
            &mut v,
            &call(C::CallAnswered {
                call: "c".into(),
                queue: QueueNumber::parse("500").unwrap(),
                agent: a(),
                offer: "o".into(),
                wait_ms: 0,
            }),
            t0 + s(2),
            &names,
        );
        let held = || {
            call(C::CallHeld {
                call: "c".into(),
                agent: a(),
            })
        };
        let resumed = || {
            call(C::CallResumed {
                call: "c".into(),
                agent: a(),
            })
        };
        apply(&mut v, &held(), t0 + s(10), &names);
        // A second CallHeld while on hold (e.g. the customer held during a transfer) is the
        // same hold.
        apply(&mut v, &held(), t0 + s(11), &names);
        assert_eq!(c(&v)["hold_count"], 1);
        assert_eq!(c(&v)["held_since"], serde_json::json!(t0 + s(10)));
        apply(&mut v, &resumed(), t0 + s(14), &names);
        assert_eq!(
            (c(&v)["hold_ms"].clone(), c(&v)["held_since"].clone()),
            (serde_json::json!(4000), serde_json::Value::Null)
        );
        apply(&mut v, &held(), t0 + s(20), &names);
        // The call ends while the customer is on hold: that hold counts up to the end.
        apply(
            &mut v,
            &call(C::CallEnded {
                call: "c".into(),
                agent: a(),
                by: EndedBy::Caller,
                talk_ms: 21_000,
            }),
            t0 + s(23),
            &names,
        );
        assert_eq!(c(&v)["hold_count"], 2);
        assert_eq!(c(&v)["hold_ms"], 7000);
    }

    #[test]
    fn the_receiving_agent_is_offered_only_what_they_can_do_until_the_transfer_completes() {
        use cc_contracts::call::{CallEvent as C, TransferMethod, TransferTarget};
        let t0 = Utc::now();
        let names = |q: &str| q.to_string();
        let carol = AgentNumber::parse("1003").unwrap();
        let bob = AgentNumber::parse("1002").unwrap();
        let q = QueueNumber::parse("500").unwrap();
        let info = CallInfo {
            queue: "500".into(),
            caller_number: "555".into(),
            caller_name: "J".into(),
            entered_at: t0,
            transferred_by_name: Some("Bob Agent".into()),
        };
        let call = |e: C| Fact::Call(e, Some(info.clone()));
        let options = |v: &AgentView| v.current_call.as_ref().unwrap()["options"].clone();
        for method in [
            TransferMethod::Attended,
            TransferMethod::Live,
            TransferMethod::Blind,
        ] {
            let mut v = empty("acme", "1003", t0);
            let login = AgentSessionEvent::AgentLoggedIn {
                agent: carol.clone(),
                login_id: Default::default(),
                device: DeviceId::parse("1003").unwrap(),
                queues: vec![],
            };
            apply(&mut v, &Fact::Session(login), t0, &names);
            let started = C::TransferStarted {
                call: "c".into(),
                transfer: "t".into(),
                agent: bob.clone(),
                method,
                target: TransferTarget::Agent(carol.clone()),
                leg: Some("l".into()),
                target_agent: Some(carol.clone()),
                queue: Some(q.clone()),
            };
            // Bob talked a minute before: Carol's wait starts with the transfer.
            let at = t0 + chrono::Duration::seconds(60);
            apply(&mut v, &call(started), at, &names);
            assert_eq!(options(&v), serde_json::json!([]));
            let c = v.current_call.as_ref().unwrap();
            assert_eq!(c["transferred_from_name"], "Bob Agent");
            let answered = C::TransferAnswered {
                call: "c".into(),
                transfer: "t".into(),
                agent: bob.clone(),
                target_agent: Some(carol.clone()),
            };
            apply(
                &mut v,
                &call(answered),
                at + chrono::Duration::seconds(3),
                &names,
            );
            assert_eq!(v.current_call.as_ref().unwrap()["wait_ms"], 3000);
            let expected = match method {
                TransferMethod::Attended => serde_json::json!(["end_consultation"]),
                TransferMethod::Live => serde_json::json!(["leave_conference"]),
                TransferMethod::Blind => serde_json::json!([
                    "hangup",
                    "hold",
                    "blind_transfer",
                    "attended_transfer",
                    "live_transfer"
                ]),
            };
            assert_eq!(options(&v), expected, "{method:?}");
            let completed = C::TransferCompleted {
                call: "c".into(),
                transfer: "t".into(),
                agent: bob.clone(),
                target_agent: Some(carol.clone()),
            };
            apply(&mut v, &call(completed), at, &names);
            assert_eq!(
                options(&v),
                serde_json::json!([
                    "hangup",
                    "hold",
                    "blind_transfer",
                    "attended_transfer",
                    "live_transfer"
                ]),
                "the call is Carol's: {method:?}"
            );
        }
    }
}
