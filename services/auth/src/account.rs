//! An agent account's decisions as a pure core ([`Decider`]): created once, its name and queue
//! rights changed, its password changed, disabled and enabled again. The state is the account
//! as recorded (none before its creation). What needs the world stays in the adapter
//! (accounts.rs): the name and password checks, the password's hash, the tenant's default
//! queue rights, the row lock that serialises the account's writers, and ending the portal
//! sessions of a disabled agent.

use cc_contracts::auth::{AgentAccount, AgentAccountEvent as E};
use cc_contracts::domain::AgentNumber;
use cc_core::Decider;

/// The agent account's core.
pub struct AccountCore;

/// What is asked of an account, with its inputs checked already.
#[derive(Debug, Clone, PartialEq)]
pub enum AccountCommand {
    Create {
        agent: AgentNumber,
        display_name: String,
        may_manage_queues: bool,
    },
    /// Only what is given changes.
    Update {
        agent: AgentNumber,
        display_name: Option<String>,
        may_manage_queues: Option<bool>,
    },
    ChangePassword {
        agent: AgentNumber,
    },
    SetEnabled {
        agent: AgentNumber,
        enabled: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    AgentExists { agent: AgentNumber },
    UnknownAgent { agent: AgentNumber },
}

impl Decider for AccountCore {
    type State = Option<AgentAccount>;
    type Command = AccountCommand;
    type Event = E;
    type Refusal = Refusal;

    fn decide(account: &Option<AgentAccount>, cmd: &AccountCommand) -> Result<Vec<E>, Refusal> {
        use AccountCommand as C;
        match (cmd, account) {
            (C::Create { agent, .. }, Some(_)) => Err(Refusal::AgentExists {
                agent: agent.clone(),
            }),
            (
                C::Create {
                    agent,
                    display_name,
                    may_manage_queues,
                },
                None,
            ) => Ok(vec![E::AgentAccountCreated {
                agent: agent.clone(),
                display_name: display_name.clone(),
                may_manage_queues: *may_manage_queues,
            }]),
            (
                C::Update { agent, .. } | C::ChangePassword { agent } | C::SetEnabled { agent, .. },
                None,
            ) => Err(Refusal::UnknownAgent {
                agent: agent.clone(),
            }),
            (
                C::Update {
                    agent,
                    display_name,
                    may_manage_queues,
                },
                Some(a),
            ) => {
                let display_name = display_name.clone().unwrap_or(a.display_name.clone());
                let may_manage_queues = may_manage_queues.unwrap_or(a.may_manage_queues);
                if display_name == a.display_name && may_manage_queues == a.may_manage_queues {
                    return Ok(vec![]);
                }
                Ok(vec![E::AgentAccountUpdated {
                    agent: agent.clone(),
                    display_name,
                    may_manage_queues,
                }])
            }
            (C::ChangePassword { agent }, Some(_)) => Ok(vec![E::AgentPasswordChanged {
                agent: agent.clone(),
            }]),
            (C::SetEnabled { enabled, .. }, Some(a)) if a.enabled == *enabled => Ok(vec![]),
            (C::SetEnabled { agent, enabled }, Some(_)) => Ok(vec![if *enabled {
                E::AgentAccountEnabled {
                    agent: agent.clone(),
                }
            } else {
                E::AgentAccountDisabled {
                    agent: agent.clone(),
                }
            }]),
        }
    }

    fn evolve(account: &mut Option<AgentAccount>, e: &E) {
        match (e, account.as_mut()) {
            (
                E::AgentAccountCreated {
                    agent,
                    display_name,
                    may_manage_queues,
                },
                _,
            ) => {
                *account = Some(AgentAccount {
                    agent: agent.clone(),
                    display_name: display_name.clone(),
                    may_manage_queues: *may_manage_queues,
                    enabled: true,
                })
            }
            (
                E::AgentAccountUpdated {
                    display_name,
                    may_manage_queues,
                    ..
                },
                Some(a),
            ) => {
                a.display_name = display_name.clone();
                a.may_manage_queues = *may_manage_queues;
            }
            (E::AgentAccountDisabled { .. }, Some(a)) => a.enabled = false,
            (E::AgentAccountEnabled { .. }, Some(a)) => a.enabled = true,
            (E::AgentPasswordChanged { .. }, _) | (_, None) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cc_testkit::decider::given;

    fn a() -> AgentNumber {
        AgentNumber::parse("1001").unwrap()
    }

    fn created() -> E {
        E::AgentAccountCreated {
            agent: a(),
            display_name: "Alice".into(),
            may_manage_queues: false,
        }
    }

    #[test]
    fn an_account_is_created_once() {
        let create = AccountCommand::Create {
            agent: a(),
            display_name: "Alice".into(),
            may_manage_queues: false,
        };
        let account = given::<AccountCore>([])
            .when(create.clone())
            .then([created()]);
        assert_eq!(account.map(|a| a.enabled), Some(true));
        given::<AccountCore>([created()])
            .when(create)
            .then_refused(Refusal::AgentExists { agent: a() });
    }

    #[test]
    fn an_update_records_only_a_change_and_an_unknown_agent_is_refused() {
        given::<AccountCore>([created()])
            .when(AccountCommand::Update {
                agent: a(),
                display_name: Some("Alice".into()),
                may_manage_queues: None,
            })
            .then_nothing();
        given::<AccountCore>([created()])
            .when(AccountCommand::Update {
                agent: a(),
                display_name: None,
                may_manage_queues: Some(true),
            })
            .then([E::AgentAccountUpdated {
                agent: a(),
                display_name: "Alice".into(),
                may_manage_queues: true,
            }]);
        given::<AccountCore>([])
            .when(AccountCommand::ChangePassword { agent: a() })
            .then_refused(Refusal::UnknownAgent { agent: a() });
    }

    #[test]
    fn disabling_twice_is_one_event_and_enabling_brings_the_account_back() {
        let disable = AccountCommand::SetEnabled {
            agent: a(),
            enabled: false,
        };
        let disabled = given::<AccountCore>([created()])
            .when(disable.clone())
            .then([E::AgentAccountDisabled { agent: a() }]);
        assert_eq!(disabled.as_ref().map(|a| a.enabled), Some(false));
        given::<AccountCore>([created(), E::AgentAccountDisabled { agent: a() }])
            .when(disable)
            .then_nothing();
        given::<AccountCore>([created(), E::AgentAccountDisabled { agent: a() }])
            .when(AccountCommand::SetEnabled {
                agent: a(),
                enabled: true,
            })
            .then([E::AgentAccountEnabled { agent: a() }]);
    }
}
