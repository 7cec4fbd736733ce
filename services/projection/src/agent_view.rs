//! How each event changes an agent's view: a pure function, tested without a database.

use cc_contracts::auth::AgentAccountEvent;
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
pub enum Fact {
    Account(AgentAccountEvent),
    Session(AgentSessionEvent),
    Queue(QueueEvent),
}

/// Applies a fact about `v`'s agent. `queue_name` resolves a queue number to its name.
pub fn apply(v: &mut AgentView, fact: &Fact, at: DateTime<Utc>, queue_name: &dyn Fn(&str) -> String) {
    let queue_ref = |q: &str| QueueRef { queue: q.to_string(), name: queue_name(q) };
    match fact {
        Fact::Account(e) => match e {
            AgentAccountEvent::AgentAccountCreated { display_name, may_manage_queues, .. }
            | AgentAccountEvent::AgentAccountUpdated { display_name, may_manage_queues, .. } => {
                v.display_name = display_name.clone();
                v.may_manage_queues = *may_manage_queues;
            }
            AgentAccountEvent::AgentAccountDisabled { .. } => v.enabled = false,
            AgentAccountEvent::AgentAccountEnabled { .. } => v.enabled = true,
            AgentAccountEvent::AgentPasswordChanged { .. } => {}
        },
        Fact::Session(e) => match e {
            AgentSessionEvent::AgentLoggedIn { device, queues, .. } => {
                v.device = Some(device.to_string());
                v.device_online = true;
                v.login_time = Some(at);
                v.pause_reason = None;
                v.queues = queues.iter().map(|q| queue_ref(q.as_str())).collect();
                set_status(v, AgentStatus::Idle, at);
            }
            AgentSessionEvent::AgentLoggedOut { .. } => {
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
            AgentSessionEvent::AgentLeftQueue { queue, .. } => v.queues.retain(|q| q.queue != queue.as_str()),
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
            QueueEvent::AgentUnassignedFromQueue { queue, .. } => v.assigned_queues.retain(|q| q.queue != queue.as_str()),
            QueueEvent::QueueCreated { queue, name } => {
                for q in v.queues.iter_mut().chain(v.assigned_queues.iter_mut()) {
                    if q.queue == queue.as_str() {
                        q.name = name.clone();
                    }
                }
            }
        },
    }
    v.version += 1;
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
        let names = |q: &str| if q == "500" { "Sales".to_string() } else { q.to_string() };
        let login = AgentSessionEvent::AgentLoggedIn {
            agent: a(),
            login_id: Default::default(),
            device: DeviceId::parse("1001").unwrap(),
            queues: vec![QueueNumber::parse("500").unwrap()],
        };
        apply(&mut v, &Fact::Session(login), t0, &names);
        assert_eq!((v.status, v.status_label.as_str()), (AgentStatus::Idle, "Idle"));
        assert_eq!(v.queues, vec![QueueRef { queue: "500".into(), name: "Sales".into() }]);
        assert_eq!(v.login_time, Some(t0));
        apply(&mut v, &Fact::Session(AgentSessionEvent::AgentPaused { agent: a(), reason: "Lunch".into() }), t0, &names);
        assert_eq!((v.status, v.pause_reason.as_deref()), (AgentStatus::Paused, Some("Lunch")));
        apply(&mut v, &Fact::Session(AgentSessionEvent::AgentUnpaused { agent: a(), reason: "Lunch".into() }), t0, &names);
        assert_eq!((v.status, v.pause_reason.as_deref()), (AgentStatus::Idle, None));
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
        assert_eq!((v.status, v.device.as_deref(), v.queues.len()), (AgentStatus::LoggedOut, None, 0));
        assert_eq!(v.version, 4);
    }
}
