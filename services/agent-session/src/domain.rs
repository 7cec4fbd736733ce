//! The agent's session as a pure decision function: state + command -> events, and
//! state + event -> state. No I/O here; the adapters gather what a decision needs first.

use cc_contracts::domain::{AgentNumber, DeviceId, QueueNumber};
use cc_contracts::session::{AgentSessionEvent as E, LogoutReason};
use cc_core::Decider;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The session as the command side keeps it (also stored as a snapshot with its version).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Session {
    pub login: Option<Login>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Login {
    pub login_id: Uuid,
    pub device: DeviceId,
    pub queues: Vec<QueueNumber>,
    pub paused: Option<String>,
    pub device_online: bool,
    #[serde(default)]
    pub since: Option<DateTime<Utc>>,
}

/// What is asked of a session, with the facts gathered from other services.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionCommand {
    Login {
        device: DeviceId,
        queues: Vec<QueueNumber>,
        login_id: Uuid,
    },
    Logout {
        reason: LogoutReason,
    },
    Pause {
        reason: String,
    },
    Unpause,
    JoinQueue {
        queue: QueueNumber,
    },
    LeaveQueue {
        queue: QueueNumber,
    },
    DeviceOffline {
        device: DeviceId,
    },
    DeviceOnline {
        device: DeviceId,
    },
}

/// Why a command was refused. Each maps to one error code for the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    AlreadyLoggedIn { device: DeviceId },
    NotLoggedIn,
    AlreadyPaused { reason: String },
    NotPaused,
    AlreadyInQueue { queue: QueueNumber },
    NotInQueue { queue: QueueNumber },
}

impl Refusal {
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::AlreadyLoggedIn { .. } => "already_logged_in",
            Refusal::NotLoggedIn => "not_logged_in",
            Refusal::AlreadyPaused { .. } => "already_paused",
            Refusal::NotPaused => "not_paused",
            Refusal::AlreadyInQueue { .. } => "already_in_queue",
            Refusal::NotInQueue { .. } => "not_in_queue",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Refusal::AlreadyLoggedIn { device } => {
                format!("The agent is already logged in on device {device}")
            }
            Refusal::NotLoggedIn => "The agent is not logged in".into(),
            Refusal::AlreadyPaused { reason } => format!("The agent is already paused ({reason})"),
            Refusal::NotPaused => "The agent is not paused".into(),
            Refusal::AlreadyInQueue { queue } => {
                format!("The agent is already logged into queue {queue}")
            }
            Refusal::NotInQueue { queue } => format!("The agent is not logged into queue {queue}"),
        }
    }
}

/// Decides the events a command produces, or refuses it. Device presence facts never refuse:
/// they produce nothing when they change nothing.
pub fn decide(agent: &AgentNumber, s: &Session, cmd: SessionCommand) -> Result<Vec<E>, Refusal> {
    let agent = agent.clone();
    match (cmd, &s.login) {
        (SessionCommand::Login { device, .. }, Some(l)) => {
            let _ = device;
            Err(Refusal::AlreadyLoggedIn {
                device: l.device.clone(),
            })
        }
        (
            SessionCommand::Login {
                device,
                mut queues,
                login_id,
            },
            None,
        ) => {
            queues.sort();
            queues.dedup();
            Ok(vec![E::AgentLoggedIn {
                agent,
                login_id,
                device,
                queues,
            }])
        }
        (SessionCommand::DeviceOffline { .. } | SessionCommand::DeviceOnline { .. }, None) => {
            Ok(vec![])
        }
        (_, None) => Err(Refusal::NotLoggedIn),
        (SessionCommand::Logout { reason }, Some(l)) => Ok(vec![E::AgentLoggedOut {
            agent,
            login_id: l.login_id,
            reason,
        }]),
        (SessionCommand::Pause { reason }, Some(l)) => match &l.paused {
            Some(current) if *current == reason => Err(Refusal::AlreadyPaused { reason }),
            Some(current) => Ok(vec![E::AgentPauseReasonChanged {
                agent,
                from: current.clone(),
                to: reason,
            }]),
            None => Ok(vec![E::AgentPaused { agent, reason }]),
        },
        (SessionCommand::Unpause, Some(l)) => match &l.paused {
            Some(reason) => Ok(vec![E::AgentUnpaused {
                agent,
                reason: reason.clone(),
            }]),
            None => Err(Refusal::NotPaused),
        },
        (SessionCommand::JoinQueue { queue }, Some(l)) => {
            if l.queues.contains(&queue) {
                Err(Refusal::AlreadyInQueue { queue })
            } else {
                Ok(vec![E::AgentJoinedQueue { agent, queue }])
            }
        }
        (SessionCommand::LeaveQueue { queue }, Some(l)) => {
            if l.queues.contains(&queue) {
                Ok(vec![E::AgentLeftQueue { agent, queue }])
            } else {
                Err(Refusal::NotInQueue { queue })
            }
        }
        (SessionCommand::DeviceOffline { device }, Some(l)) => {
            Ok(if l.device == device && l.device_online {
                vec![E::AgentDeviceWentOffline { agent, device }]
            } else {
                vec![]
            })
        }
        (SessionCommand::DeviceOnline { device }, Some(l)) => {
            Ok(if l.device == device && !l.device_online {
                vec![E::AgentDeviceCameOnline { agent, device }]
            } else {
                vec![]
            })
        }
    }
}

/// The session's core in the shape every domain core has ([`Decider`]): the command names the
/// agent it is for, since the session's state does not.
pub struct SessionCore;

impl Decider for SessionCore {
    type State = Session;
    type Command = (AgentNumber, SessionCommand);
    type Event = E;
    type Refusal = Refusal;

    fn decide(s: &Session, (agent, cmd): &Self::Command) -> Result<Vec<E>, Refusal> {
        decide(agent, s, cmd.clone())
    }

    fn evolve(s: &mut Session, e: &E) {
        *s = evolve(std::mem::take(s), e);
    }
}

/// Applies one event. A login's `since` is left empty: the time is not in the event, and the
/// adapter stamps it with the commit's time ([`stamp_login`]).
pub fn evolve(mut s: Session, e: &E) -> Session {
    match e {
        E::AgentLoggedIn {
            login_id,
            device,
            queues,
            ..
        } => {
            s.login = Some(Login {
                login_id: *login_id,
                device: device.clone(),
                queues: queues.clone(),
                paused: None,
                device_online: true,
                since: None,
            });
        }
        E::AgentLoggedOut { .. } => s.login = None,
        _ => {
            if let Some(l) = s.login.as_mut() {
                match e {
                    E::AgentPaused { reason, .. } => l.paused = Some(reason.clone()),
                    E::AgentPauseReasonChanged { to, .. } => l.paused = Some(to.clone()),
                    E::AgentUnpaused { .. } => l.paused = None,
                    E::AgentJoinedQueue { queue, .. } => l.queues.push(queue.clone()),
                    E::AgentLeftQueue { queue, .. } => l.queues.retain(|q| q != queue),
                    E::AgentDeviceWentOffline { .. } => l.device_online = false,
                    E::AgentDeviceCameOnline { .. } => l.device_online = true,
                    E::AgentLoggedIn { .. } | E::AgentLoggedOut { .. } => unreachable!(),
                }
            }
        }
    }
    s
}

/// The login just recorded by `events`, if any, stamped with the time it was recorded.
pub fn stamp_login(s: &mut Session, events: &[E], at: DateTime<Utc>) {
    if events.iter().any(|e| matches!(e, E::AgentLoggedIn { .. })) {
        if let Some(l) = s.login.as_mut() {
            l.since = Some(at);
        }
    }
}

/// Whether the agent may be offered queue calls in `queue` (the routing invariant, as far
/// as the session knows: calls add "not ringing, not on a call, not in wrap-up").
pub fn available_for(s: &Session, queue: &QueueNumber) -> bool {
    matches!(&s.login, Some(l) if l.paused.is_none() && l.device_online && l.queues.contains(queue))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cc_testkit::decider as harness;
    use proptest::prelude::*;

    fn agent() -> AgentNumber {
        AgentNumber::parse("1001").unwrap()
    }
    fn dev(d: &str) -> DeviceId {
        DeviceId::parse(d).unwrap()
    }
    fn q(n: &str) -> QueueNumber {
        QueueNumber::parse(n).unwrap()
    }

    fn logged_in() -> Vec<E> {
        vec![E::AgentLoggedIn {
            agent: agent(),
            login_id: Uuid::nil(),
            device: dev("1001"),
            queues: vec![q("500")],
        }]
    }

    fn ask(cmd: SessionCommand) -> (AgentNumber, SessionCommand) {
        (agent(), cmd)
    }

    fn pause(reason: &str) -> (AgentNumber, SessionCommand) {
        ask(SessionCommand::Pause {
            reason: reason.into(),
        })
    }

    #[test]
    fn pausing_twice_is_a_clear_refusal_and_changing_reason_is_its_own_event() {
        let paused = E::AgentPaused {
            agent: agent(),
            reason: "Lunch".into(),
        };
        harness::given::<SessionCore>(logged_in())
            .and([paused.clone()])
            .when(pause("Lunch"))
            .then_refused(Refusal::AlreadyPaused {
                reason: "Lunch".into(),
            });
        harness::given::<SessionCore>(logged_in())
            .and([paused])
            .when(pause("Break"))
            .then([E::AgentPauseReasonChanged {
                agent: agent(),
                from: "Lunch".into(),
                to: "Break".into(),
            }]);
        harness::given::<SessionCore>(logged_in())
            .when(ask(SessionCommand::Unpause))
            .then_refused(Refusal::NotPaused);
    }

    #[test]
    fn a_logged_out_agent_can_only_log_in() {
        harness::given::<SessionCore>([])
            .when(ask(SessionCommand::Unpause))
            .then_refused(Refusal::NotLoggedIn);
        harness::given::<SessionCore>([])
            .when(ask(SessionCommand::Logout {
                reason: LogoutReason::Agent,
            }))
            .then_refused(Refusal::NotLoggedIn);
        harness::given::<SessionCore>([])
            .when(ask(SessionCommand::DeviceOffline {
                device: dev("1001"),
            }))
            .then_nothing();
        harness::given::<SessionCore>(logged_in())
            .when(ask(SessionCommand::Login {
                device: dev("1002"),
                queues: vec![],
                login_id: Uuid::nil(),
            }))
            .then_refused(Refusal::AlreadyLoggedIn {
                device: dev("1001"),
            });
    }

    #[test]
    fn an_offline_device_takes_the_agent_out_of_routing_until_it_registers_again() {
        let offline = |d: &str| ask(SessionCommand::DeviceOffline { device: dev(d) });
        let s = harness::given::<SessionCore>(logged_in());
        assert!(available_for(s.state(), &q("500")));
        let s = s.when(offline("1001")).then([E::AgentDeviceWentOffline {
            agent: agent(),
            device: dev("1001"),
        }]);
        assert!(!available_for(&s, &q("500")));
        let s = harness::Scenario::<SessionCore>::from_state(s)
            .when(offline("1001"))
            .then_nothing();
        let s = harness::Scenario::<SessionCore>::from_state(s)
            .when(ask(SessionCommand::DeviceOnline {
                device: dev("1001"),
            }))
            .then([E::AgentDeviceCameOnline {
                agent: agent(),
                device: dev("1001"),
            }]);
        assert!(available_for(&s, &q("500")));
        // Another device's presence does not matter.
        harness::Scenario::<SessionCore>::from_state(s)
            .when(offline("1009"))
            .then_nothing();
    }

    fn command() -> impl Strategy<Value = SessionCommand> {
        let queue = prop_oneof![Just(q("500")), Just(q("501")), Just(q("502"))];
        let device = prop_oneof![Just(dev("1001")), Just(dev("1002"))];
        prop_oneof![
            (
                device.clone(),
                proptest::collection::vec(queue.clone(), 0..3)
            )
                .prop_map(|(device, queues)| SessionCommand::Login {
                    device,
                    queues,
                    login_id: Uuid::nil()
                }),
            Just(SessionCommand::Logout {
                reason: LogoutReason::Agent
            }),
            prop_oneof![Just("Lunch"), Just("Break")]
                .prop_map(|r| SessionCommand::Pause { reason: r.into() }),
            Just(SessionCommand::Unpause),
            queue
                .clone()
                .prop_map(|queue| SessionCommand::JoinQueue { queue }),
            queue.prop_map(|queue| SessionCommand::LeaveQueue { queue }),
            device
                .clone()
                .prop_map(|device| SessionCommand::DeviceOffline { device }),
            device.prop_map(|device| SessionCommand::DeviceOnline { device }),
        ]
    }

    proptest! {
        /// Any sequence of commands keeps the invariants: a refused command changes nothing,
        /// an accepted one changes the state, paused implies logged in, queue lists hold no
        /// duplicates, and replaying the recorded events rebuilds the same state.
        #[test]
        fn any_command_sequence_keeps_the_invariants(cmds in proptest::collection::vec(command(), 0..60)) {
            let mut s = Session::default();
            let mut history = Vec::new();
            for cmd in cmds {
                let is_presence = matches!(cmd, SessionCommand::DeviceOffline { .. } | SessionCommand::DeviceOnline { .. });
                if let Ok(events) = SessionCore::decide(&s, &(agent(), cmd)) {
                    let before = s.clone();
                    for e in &events {
                        SessionCore::evolve(&mut s, e);
                    }
                    prop_assert!(is_presence || s != before, "an accepted command changes the state");
                    history.extend(events);
                }
                if let Some(l) = &s.login {
                    let mut qs = l.queues.clone();
                    qs.sort();
                    qs.dedup();
                    prop_assert_eq!(qs.len(), l.queues.len(), "no queue twice");
                }
            }
            prop_assert_eq!(SessionCore::fold(&history), s);
        }
    }
}
