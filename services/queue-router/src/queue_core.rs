//! A queue's configuration as a pure core ([`Decider`]): created once, agents assigned with a
//! penalty and unassigned, its routing settings changed. The state is the queue as recorded
//! (none before its creation). The adapter (queues.rs) checks the inputs (the name, the
//! penalty's range, the settings, that the agent exists), locks the queue's row, and keeps the
//! tables `qr_queues` and `qr_members` in step with the events it appends.

use cc_contracts::call::QueueSettings;
use cc_contracts::domain::{AgentNumber, QueueNumber};
use cc_contracts::queue::{QueueEvent as E, QueueInfo, QueueMember};
use cc_core::Decider;

/// The queue configuration's core.
pub struct QueueCore;

#[derive(Debug, Clone, PartialEq)]
pub enum QueueCommand {
    Create {
        queue: QueueNumber,
        name: String,
    },
    /// Assigned, or its penalty changed.
    Assign {
        queue: QueueNumber,
        agent: AgentNumber,
        penalty: i32,
    },
    Unassign {
        queue: QueueNumber,
        agent: AgentNumber,
    },
    Configure {
        queue: QueueNumber,
        settings: QueueSettings,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    QueueExists {
        queue: QueueNumber,
    },
    UnknownQueue {
        queue: QueueNumber,
    },
    NotAssigned {
        queue: QueueNumber,
        agent: AgentNumber,
    },
}

impl Decider for QueueCore {
    type State = Option<QueueInfo>;
    type Command = QueueCommand;
    type Event = E;
    type Refusal = Refusal;

    fn decide(q: &Option<QueueInfo>, cmd: &QueueCommand) -> Result<Vec<E>, Refusal> {
        use QueueCommand as C;
        let member = |agent: &AgentNumber| {
            q.as_ref()
                .and_then(|q| q.members.iter().find(|m| &m.agent == agent))
        };
        match (cmd, q) {
            (C::Create { queue, .. }, Some(_)) => Err(Refusal::QueueExists {
                queue: queue.clone(),
            }),
            (C::Create { queue, name }, None) => Ok(vec![E::QueueCreated {
                queue: queue.clone(),
                name: name.clone(),
            }]),
            // Unassigning from a queue that does not exist: the agent is not assigned to it.
            (C::Unassign { queue, agent }, _) if member(agent).is_none() => {
                Err(Refusal::NotAssigned {
                    queue: queue.clone(),
                    agent: agent.clone(),
                })
            }
            (C::Unassign { queue, agent }, Some(_)) => Ok(vec![E::AgentUnassignedFromQueue {
                queue: queue.clone(),
                agent: agent.clone(),
            }]),
            (
                C::Assign { queue, .. } | C::Configure { queue, .. } | C::Unassign { queue, .. },
                None,
            ) => Err(Refusal::UnknownQueue {
                queue: queue.clone(),
            }),
            (C::Assign { agent, penalty, .. }, Some(_))
                if member(agent).is_some_and(|m| m.penalty == *penalty) =>
            {
                Ok(vec![])
            }
            (
                C::Assign {
                    queue,
                    agent,
                    penalty,
                },
                Some(_),
            ) => Ok(vec![E::AgentAssignedToQueue {
                queue: queue.clone(),
                agent: agent.clone(),
                penalty: *penalty,
            }]),
            (C::Configure { queue, settings }, Some(_)) => Ok(vec![E::QueueConfigured {
                queue: queue.clone(),
                settings: settings.clone(),
            }]),
        }
    }

    fn evolve(q: &mut Option<QueueInfo>, e: &E) {
        match (e, q.as_mut()) {
            (E::QueueCreated { queue, name }, _) => {
                *q = Some(QueueInfo {
                    queue: queue.clone(),
                    name: name.clone(),
                    members: vec![],
                    settings: QueueSettings::default(),
                })
            }
            (E::AgentAssignedToQueue { agent, penalty, .. }, Some(q)) => {
                q.members.retain(|m| &m.agent != agent);
                q.members.push(QueueMember {
                    agent: agent.clone(),
                    penalty: *penalty,
                });
                q.members
                    .sort_by(|a, b| (a.penalty, &a.agent).cmp(&(b.penalty, &b.agent)));
            }
            (E::AgentUnassignedFromQueue { agent, .. }, Some(q)) => {
                q.members.retain(|m| &m.agent != agent)
            }
            (E::QueueConfigured { settings, .. }, Some(q)) => q.settings = settings.clone(),
            (_, None) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cc_testkit::decider::given;

    fn q() -> QueueNumber {
        QueueNumber::parse("500").unwrap()
    }
    fn a(n: &str) -> AgentNumber {
        AgentNumber::parse(n).unwrap()
    }
    fn created() -> E {
        E::QueueCreated {
            queue: q(),
            name: "Sales".into(),
        }
    }
    fn assigned(agent: &str, penalty: i32) -> E {
        E::AgentAssignedToQueue {
            queue: q(),
            agent: a(agent),
            penalty,
        }
    }

    #[test]
    fn a_queue_is_created_once_and_nothing_is_done_to_one_that_does_not_exist() {
        let create = QueueCommand::Create {
            queue: q(),
            name: "Sales".into(),
        };
        given::<QueueCore>([])
            .when(create.clone())
            .then([created()]);
        given::<QueueCore>([created()])
            .when(create)
            .then_refused(Refusal::QueueExists { queue: q() });
        given::<QueueCore>([])
            .when(QueueCommand::Assign {
                queue: q(),
                agent: a("1001"),
                penalty: 0,
            })
            .then_refused(Refusal::UnknownQueue { queue: q() });
    }

    #[test]
    fn an_assignment_records_a_new_penalty_only_and_an_unassignment_needs_a_member() {
        let assign = |penalty| QueueCommand::Assign {
            queue: q(),
            agent: a("1001"),
            penalty,
        };
        let state = given::<QueueCore>([created()])
            .when(assign(2))
            .then([assigned("1001", 2)]);
        assert_eq!(state.unwrap().members.len(), 1);
        given::<QueueCore>([created(), assigned("1001", 2)])
            .when(assign(2))
            .then_nothing();
        given::<QueueCore>([created(), assigned("1001", 2)])
            .when(assign(5))
            .then([assigned("1001", 5)]);
        let unassign = QueueCommand::Unassign {
            queue: q(),
            agent: a("1001"),
        };
        let state = given::<QueueCore>([created(), assigned("1001", 2)])
            .when(unassign.clone())
            .then([E::AgentUnassignedFromQueue {
                queue: q(),
                agent: a("1001"),
            }]);
        assert!(state.unwrap().members.is_empty());
        given::<QueueCore>([created()])
            .when(unassign)
            .then_refused(Refusal::NotAssigned {
                queue: q(),
                agent: a("1001"),
            });
    }
}
