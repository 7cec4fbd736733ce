//! The router's rules, given events, when a fact or a tick, then the events and actions.

use super::*;
use cc_contracts::call::{EndedBy, QueueSettings, Strategy};
use cc_contracts::session::LogoutReason;
use cc_testkit::decider::{given, Scenario};
use chrono::TimeZone;

const T: &str = "acme";

fn t(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap()
}
fn a(n: &str) -> AgentNumber {
    AgentNumber::parse(n).unwrap()
}
fn q(n: &str) -> QueueNumber {
    QueueNumber::parse(n).unwrap()
}
fn seed() -> Uuid {
    Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000)
}
fn ids() -> Ids {
    Ids::new(seed())
}
fn caller() -> Party {
    Party {
        number: "555".into(),
        name: String::new(),
    }
}

fn call(event: CallEvent, at: i64) -> Event {
    Event::Call {
        tenant: T.into(),
        event,
        at: t(at),
    }
}
fn session(event: AgentSessionEvent, at: i64) -> Event {
    Event::Session {
        tenant: T.into(),
        event,
        at: t(at),
    }
}
fn hang_up(call: &str, channel: &str) -> Event {
    Event::Act(Action::HangUp {
        tenant: T.into(),
        call: call.into(),
        channel: channel.into(),
        cause: HangupCause::Normal,
    })
}

/// Queue 500 with these settings; agents 1001 and 1002 assigned and logged in (1001 first).
fn queue(settings: QueueSettings) -> Vec<Event> {
    let mut events = vec![
        Event::Queue {
            tenant: T.into(),
            event: QueueEvent::QueueCreated {
                queue: q("500"),
                name: "Sales".into(),
            },
        },
        Event::Queue {
            tenant: T.into(),
            event: QueueEvent::QueueConfigured {
                queue: q("500"),
                settings,
            },
        },
    ];
    for (i, n) in ["1001", "1002"].iter().enumerate() {
        events.push(Event::Queue {
            tenant: T.into(),
            event: QueueEvent::AgentAssignedToQueue {
                queue: q("500"),
                agent: a(n),
                penalty: 0,
            },
        });
        events.push(session(
            AgentSessionEvent::AgentLoggedIn {
                agent: a(n),
                login_id: Uuid::nil(),
                device: DeviceId::parse(n).unwrap(),
                queues: vec![q("500")],
            },
            i as i64,
        ));
    }
    events
}

fn ring_all() -> QueueSettings {
    QueueSettings {
        strategy: Strategy::RingAll,
        ..Default::default()
    }
}

fn entered(c: &str, at: i64) -> Event {
    call(
        CallEvent::CallEnteredQueue {
            call: c.into(),
            queue: q("500"),
            caller: caller(),
            channel: format!("ch-{c}"),
            priority: 0,
        },
        at,
    )
}
fn offered(c: &str, agent: &str, at: i64) -> Event {
    call(
        CallEvent::CallOffered {
            call: c.into(),
            queue: q("500"),
            agent: a(agent),
            device: DeviceId::parse(agent).unwrap(),
            offer: format!("o-{c}-{agent}"),
            ring_timeout_s: Some(20),
        },
        at,
    )
}
fn answered(c: &str, agent: &str, at: i64, wait_ms: i64) -> Event {
    call(
        CallEvent::CallAnswered {
            call: c.into(),
            queue: q("500"),
            agent: a(agent),
            offer: format!("o-{c}-{agent}"),
            wait_ms,
        },
        at,
    )
}
fn withdrawn(c: &str, agent: &str, reason: WithdrawReason, at: i64) -> Event {
    call(
        CallEvent::OfferWithdrawn {
            call: c.into(),
            agent: a(agent),
            offer: format!("o-{c}-{agent}"),
            reason,
        },
        at,
    )
}

fn channel(fact: ChannelEvent, at: i64) -> Command {
    Command::Channel {
        fact,
        now: t(at),
        ids: ids(),
    }
}
fn arrives(ch: &str, dialed: &str, at: i64) -> Command {
    channel(
        ChannelEvent::ChannelCreated {
            tenant: T.into(),
            channel: ch.into(),
            direction: Direction::Inbound,
            caller: caller(),
            dialed: Some(dialed.into()),
            device: None,
            number: None,
            at: t(at),
        },
        at,
    )
}
fn phone_answers(ch: &str, at: i64) -> Command {
    channel(
        ChannelEvent::ChannelAnswered {
            tenant: T.into(),
            channel: ch.into(),
            at: t(at),
        },
        at,
    )
}
fn hangs_up(ch: &str, cause: HangupCause, at: i64) -> Command {
    channel(
        ChannelEvent::ChannelHungUp {
            tenant: T.into(),
            channel: ch.into(),
            cause,
            at: t(at),
        },
        at,
    )
}

#[test]
fn a_caller_dialling_a_queue_enters_it_once() {
    let id = seed().simple().to_string();
    let state = given::<Routing>(queue(ring_all()))
        .when(arrives("ch-9", "500", 10))
        .then([call(
            CallEvent::CallEnteredQueue {
                call: id.clone(),
                queue: q("500"),
                caller: caller(),
                channel: "ch-9".into(),
                priority: 0,
            },
            10,
        )]);
    // The same report delivered again enters nobody.
    Scenario::<Routing>::from_state(state)
        .when(arrives("ch-9", "500", 11))
        .then_nothing();
    given::<Routing>(queue(ring_all()))
        .when(arrives("ch-8", "700", 10))
        .then_nothing();
}

#[test]
fn a_caller_is_sent_away_at_once_when_nobody_is_logged_into_a_queue_that_says_so() {
    let id = seed().simple().to_string();
    let settings = QueueSettings {
        leave_when_no_agents: true,
        ..Default::default()
    };
    let mut events = queue(settings);
    for n in ["1001", "1002"] {
        events.push(session(
            AgentSessionEvent::AgentLoggedOut {
                agent: a(n),
                login_id: Uuid::nil(),
                reason: LogoutReason::Agent,
            },
            5,
        ));
    }
    given::<Routing>(events)
        .when(arrives("ch-9", "500", 10))
        .then([
            call(
                CallEvent::CallEnteredQueue {
                    call: id.clone(),
                    queue: q("500"),
                    caller: caller(),
                    channel: "ch-9".into(),
                    priority: 0,
                },
                10,
            ),
            call(
                CallEvent::CallLeftQueue {
                    call: id.clone(),
                    queue: q("500"),
                    reason: LeaveReason::NoAgents,
                    wait_ms: 0,
                },
                10,
            ),
            hang_up(&id, "ch-9"),
        ]);
}

#[test]
fn a_dispatch_offers_a_waiting_call_and_rings_the_phones() {
    let offer = |n: usize| format!("{OFFER_PREFIX}{}", ids().nth(n).simple());
    given::<Routing>(queue(ring_all()))
        .and([entered("c1", 10)])
        .when(Command::Dispatch {
            now: t(10),
            ids: ids(),
        })
        .then_check(|events| {
            assert!(matches!(
                events[0],
                Event::Noted(Note::Dispatched {
                    recheck_at: None,
                    ..
                })
            ));
            let offered: Vec<_> = events[1..3]
                .iter()
                .map(|e| match e {
                    Event::Call {
                        event: CallEvent::CallOffered { agent, offer, .. },
                        ..
                    } => (agent.to_string(), offer.clone()),
                    e => panic!("an offer expected, not {e:?}"),
                })
                .collect();
            assert_eq!(
                offered,
                [("1001".into(), offer(0)), ("1002".into(), offer(1))]
            );
            assert!(matches!(
                &events[3..],
                [Event::Act(Action::Ring { offer: o1, .. }), Event::Act(Action::Ring { offer: o2, .. })]
                    if *o1 == offer(0) && *o2 == offer(1)
            ));
        });
}

#[test]
fn the_first_answer_wins_and_the_other_phones_stop_ringing() {
    let state = given::<Routing>(queue(ring_all()))
        .and([
            entered("c1", 10),
            offered("c1", "1001", 10),
            offered("c1", "1002", 10),
        ])
        .when(phone_answers("o-c1-1002", 13))
        .then([
            withdrawn("c1", "1001", WithdrawReason::AnsweredElsewhere, 13),
            answered("c1", "1002", 13, 3000),
            hang_up("c1", "o-c1-1001"),
        ]);
    assert_eq!(state.calls["c1"].answered, Some(a("1002")));
}

#[test]
fn a_second_answer_is_withdrawn_and_hung_up() {
    // The two answers crossed: the second one's offer is still open when its report comes.
    let mut events = queue(ring_all());
    events.extend([
        entered("c1", 10),
        offered("c1", "1001", 10),
        offered("c1", "1002", 10),
        answered("c1", "1001", 12, 2000),
    ]);
    given::<Routing>(events)
        .when(phone_answers("o-c1-1002", 12))
        .then([
            withdrawn("c1", "1002", WithdrawReason::AnsweredElsewhere, 12),
            hang_up("c1", "o-c1-1002"),
        ]);
}

#[test]
fn an_agent_who_logged_out_is_never_connected_to_the_caller() {
    given::<Routing>(queue(Default::default()))
        .and([
            entered("c1", 10),
            offered("c1", "1001", 10),
            session(
                AgentSessionEvent::AgentLoggedOut {
                    agent: a("1001"),
                    login_id: Uuid::nil(),
                    reason: LogoutReason::Agent,
                },
                11,
            ),
        ])
        .when(phone_answers("o-c1-1001", 12))
        .then([
            withdrawn("c1", "1001", WithdrawReason::AgentLoggedOut, 12),
            hang_up("c1", "o-c1-1001"),
        ]);
}

#[test]
fn a_phone_that_declines_rejects_and_one_that_rings_out_misses() {
    let given_offer = || {
        given::<Routing>(queue(Default::default()))
            .and([entered("c1", 10), offered("c1", "1001", 10)])
    };
    given_offer()
        .when(hangs_up("o-c1-1001", HangupCause::Busy, 12))
        .then([call(
            CallEvent::OfferRejected {
                call: "c1".into(),
                agent: a("1001"),
                offer: "o-c1-1001".into(),
            },
            12,
        )]);
    let state = given_offer()
        .when(hangs_up("o-c1-1001", HangupCause::NoAnswer, 30))
        .then([call(
            CallEvent::OfferTimedOut {
                call: "c1".into(),
                agent: a("1001"),
                offer: "o-c1-1001".into(),
            },
            30,
        )]);
    // Reported again, the leg is an offer no more: nothing counts twice.
    Scenario::<Routing>::from_state(state)
        .when(hangs_up("o-c1-1001", HangupCause::NoAnswer, 31))
        .then_nothing();
}

#[test]
fn the_queues_limit_of_missed_offers_in_a_row_pauses_the_agent() {
    let settings = QueueSettings {
        auto_pause_after: 2,
        ..Default::default()
    };
    let timed_out = |c: &str, at| {
        call(
            CallEvent::OfferTimedOut {
                call: c.into(),
                agent: a("1001"),
                offer: format!("o-{c}-1001"),
            },
            at,
        )
    };
    given::<Routing>(queue(settings))
        .and([
            entered("c1", 10),
            offered("c1", "1001", 10),
            timed_out("c1", 30),
            offered("c1", "1001", 40),
        ])
        .when(hangs_up("o-c1-1001", HangupCause::NoAnswer, 60))
        .then([
            timed_out("c1", 60),
            Event::Act(Action::PauseAgent {
                tenant: T.into(),
                agent: a("1001"),
                reason: "Missed 2 calls".into(),
            }),
        ]);
}

#[test]
fn a_caller_who_hangs_up_before_an_answer_abandons_and_the_phones_stop_ringing() {
    let state = given::<Routing>(queue(ring_all()))
        .and([entered("c1", 10), offered("c1", "1001", 10)])
        .when(hangs_up("ch-c1", HangupCause::Normal, 14))
        .then([
            withdrawn("c1", "1001", WithdrawReason::CallerGone, 14),
            call(
                CallEvent::CallAbandoned {
                    call: "c1".into(),
                    queue: q("500"),
                    wait_ms: 4000,
                    position: 1,
                },
                14,
            ),
            hang_up("c1", "o-c1-1001"),
        ]);
    // The withdrawn leg's end, reported: its agent may ring again.
    Scenario::<Routing>::from_state(state)
        .when(hangs_up("o-c1-1001", HangupCause::Normal, 15))
        .then([Event::Noted(Note::LegGone {
            channel: "o-c1-1001".into(),
        })]);
}

#[test]
fn a_caller_who_hangs_up_after_the_answer_is_call_controls() {
    given::<Routing>(queue(Default::default()))
        .and([
            entered("c1", 10),
            offered("c1", "1001", 10),
            answered("c1", "1001", 12, 2000),
        ])
        .when(hangs_up("ch-c1", HangupCause::Normal, 40))
        .then_nothing();
    given::<Routing>(queue(Default::default()))
        .when(hangs_up("ch-unknown", HangupCause::Normal, 40))
        .then_nothing();
}

#[test]
fn another_tenants_report_about_a_channel_changes_nothing() {
    let mut fact = hangs_up("o-c1-1001", HangupCause::Busy, 12);
    if let Command::Channel {
        fact: ChannelEvent::ChannelHungUp { tenant, .. },
        ..
    } = &mut fact
    {
        *tenant = "other".into();
    }
    given::<Routing>(queue(Default::default()))
        .and([entered("c1", 10), offered("c1", "1001", 10)])
        .when(fact)
        .then_nothing();
}

#[test]
fn a_ring_timeout_asks_the_pbx_to_end_the_ring_and_its_answer_decides() {
    let state = given::<Routing>(queue(Default::default()))
        .and([entered("c1", 10), offered("c1", "1001", 10)])
        .when(Command::Due { now: t(30) })
        .then([
            Event::Noted(Note::RingTimeoutPostponed {
                call: "c1".into(),
                offer: "o-c1-1001".into(),
                until: t(31),
            }),
            Event::Act(Action::CancelRing {
                tenant: T.into(),
                call: "c1".into(),
                agent: a("1001"),
                offer: "o-c1-1001".into(),
            }),
        ]);
    let ended = |how, at| Command::RingEnded {
        tenant: T.into(),
        call: "c1".into(),
        agent: a("1001"),
        offer: "o-c1-1001".into(),
        how,
        now: t(at),
    };
    let state = Scenario::<Routing>::from_state(state)
        .when(Command::Due { now: t(30) })
        .then_nothing();
    Scenario::<Routing>::from_state(state.clone())
        .when(ended(RingEnded::Answered, 30))
        .then_nothing();
    Scenario::<Routing>::from_state(state.clone())
        .when(ended(RingEnded::Gone, 32))
        .then([withdrawn(
            "c1",
            "1001",
            WithdrawReason::DeviceUnavailable,
            32,
        )]);
    let state = Scenario::<Routing>::from_state(state)
        .when(ended(RingEnded::Cancelled, 30))
        .then([call(
            CallEvent::OfferTimedOut {
                call: "c1".into(),
                agent: a("1001"),
                offer: "o-c1-1001".into(),
            },
            30,
        )]);
    // The PBX's answer again (a retried request): the offer is over.
    Scenario::<Routing>::from_state(state)
        .when(ended(RingEnded::Cancelled, 31))
        .then_nothing();
}

#[test]
fn a_caller_who_waited_too_long_leaves_and_every_leg_is_hung_up() {
    let settings = QueueSettings {
        ring_timeout_s: 60,
        max_wait_s: 60,
        ..Default::default()
    };
    // The tick comes late: the offer's ring timeout is due too, and moot once the caller left.
    given::<Routing>(queue(settings))
        .and([entered("c1", 0), offered("c1", "1001", 1)])
        .when(Command::Due { now: t(61) })
        .then([
            withdrawn("c1", "1001", WithdrawReason::CallerGone, 61),
            call(
                CallEvent::CallLeftQueue {
                    call: "c1".into(),
                    queue: q("500"),
                    reason: LeaveReason::MaxWait,
                    wait_ms: 61_000,
                },
                61,
            ),
            hang_up("c1", "o-c1-1001"),
            hang_up("c1", "ch-c1"),
        ]);
}

#[test]
fn a_wrap_up_starts_after_the_agents_part_and_ends_on_time() {
    let settings = QueueSettings {
        wrap_up_s: 15,
        ..Default::default()
    };
    let state = given::<Routing>(queue(settings))
        .and([
            entered("c1", 0),
            offered("c1", "1001", 0),
            answered("c1", "1001", 2, 2000),
            call(
                CallEvent::CallEnded {
                    call: "c1".into(),
                    agent: a("1001"),
                    by: EndedBy::Agent,
                    talk_ms: 8000,
                },
                10,
            ),
        ])
        .when(Command::StartWrapUp {
            tenant: T.into(),
            call: "c1".into(),
            agent: a("1001"),
            now: t(10),
        })
        .then([call(
            CallEvent::WrapUpStarted {
                call: "c1".into(),
                agent: a("1001"),
                seconds: 15,
            },
            10,
        )]);
    let state = Scenario::<Routing>::from_state(state)
        .when(Command::Due { now: t(24) })
        .then_nothing();
    Scenario::<Routing>::from_state(state)
        .when(Command::Due { now: t(25) })
        .then([call(
            CallEvent::WrapUpEnded {
                call: "c1".into(),
                agent: a("1001"),
                early: false,
            },
            25,
        )]);
}

#[test]
fn a_phone_that_could_not_be_rung_is_withdrawn_unless_its_offer_ended_meanwhile() {
    given::<Routing>(queue(Default::default()))
        .and([entered("c1", 0), offered("c1", "1001", 0)])
        .when(Command::NotRung {
            tenant: T.into(),
            call: "c1".into(),
            agent: a("1001"),
            offer: "o-c1-1001".into(),
            now: t(1),
        })
        .then([withdrawn(
            "c1",
            "1001",
            WithdrawReason::DeviceUnavailable,
            1,
        )]);
    // The caller hung up while the ring was asked for: the offer is withdrawn already, and the
    // agent is rung for the next call. A second withdrawal (as the rule was) took that ring off
    // the agent, who was then offered a third call (once the withdrawn leg's wait was over)
    // while their phone rang for the second.
    let state = given::<Routing>(queue(Default::default()))
        .and([
            entered("c1", 0),
            offered("c1", "1001", 0),
            withdrawn("c1", "1001", WithdrawReason::CallerGone, 1),
            entered("c2", 10),
            offered("c2", "1001", 10),
            entered("c3", 11),
        ])
        .when(Command::NotRung {
            tenant: T.into(),
            call: "c1".into(),
            agent: a("1001"),
            offer: "o-c1-1001".into(),
            now: t(11),
        })
        .then_nothing();
    assert_eq!(state.agents[&(T.to_string(), a("1001"))].ringing, 1);
    let offered_to: Vec<_> = state
        .clone()
        .dispatch(t(11))
        .into_iter()
        .flat_map(|d| match d {
            Decision::Offer { agents, .. } => agents,
            _ => vec![],
        })
        .map(|(a, _)| a.to_string())
        .collect();
    assert_eq!(offered_to, ["1002"], "1001 is ringing for c2");
}

#[test]
fn the_offers_of_an_agent_who_logged_out_are_withdrawn_and_their_legs_hung_up() {
    given::<Routing>(queue(Default::default()))
        .and([
            entered("c1", 0),
            offered("c1", "1001", 0),
            session(
                AgentSessionEvent::AgentLoggedOut {
                    agent: a("1001"),
                    login_id: Uuid::nil(),
                    reason: LogoutReason::Agent,
                },
                1,
            ),
        ])
        .when(Command::WithdrawUnavailable {
            only: Some((T.into(), a("1001"))),
            now: t(1),
        })
        .then([
            withdrawn("c1", "1001", WithdrawReason::AgentLoggedOut, 1),
            hang_up("c1", "o-c1-1001"),
        ]);
}

#[test]
fn the_end_of_a_reject_delay_is_noted_once() {
    let state = given::<Routing>(queue(Default::default()))
        .and([
            entered("c1", 0),
            offered("c1", "1001", 0),
            call(
                CallEvent::OfferRejected {
                    call: "c1".into(),
                    agent: a("1001"),
                    offer: "o-c1-1001".into(),
                },
                1,
            ),
        ])
        .when(Command::Due { now: t(6) })
        .then([Event::Noted(Note::RejectDelayOver {
            tenant: T.into(),
            agent: a("1001"),
            at: t(6),
        })]);
    Scenario::<Routing>::from_state(state)
        .when(Command::Due { now: t(6) })
        .then_nothing();
}
