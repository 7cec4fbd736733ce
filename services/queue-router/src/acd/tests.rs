//! The ACD's choices, given events, with the clock in hand.

use super::*;
use cc_contracts::call::{CallEvent as C, Strategy};
use cc_contracts::session::AgentSessionEvent as S;
use chrono::TimeZone;

fn t(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap()
}
fn a(n: &str) -> AgentNumber {
    AgentNumber::parse(n).unwrap()
}
fn q(n: &str) -> QueueNumber {
    QueueNumber::parse(n).unwrap()
}

/// A tenant with queue 500 (and 501), agents 1001..=1004 assigned with penalties 4,3,2,1,
/// logged in one second apart (so 1001 has been idle longest).
fn given(strategy: Strategy) -> Acd {
    let mut acd = Acd::default();
    for queue in ["500", "501"] {
        acd.apply_queue(
            "acme",
            &QueueEvent::QueueCreated {
                queue: q(queue),
                name: queue.into(),
            },
        );
        let settings = QueueSettings {
            strategy,
            ..Default::default()
        };
        acd.apply_queue(
            "acme",
            &QueueEvent::QueueConfigured {
                queue: q(queue),
                settings,
            },
        );
    }
    for (i, n) in ["1001", "1002", "1003", "1004"].iter().enumerate() {
        acd.apply_queue(
            "acme",
            &QueueEvent::AgentAssignedToQueue {
                queue: q("500"),
                agent: a(n),
                penalty: 4 - i as i32,
            },
        );
        let login = S::AgentLoggedIn {
            agent: a(n),
            login_id: Default::default(),
            device: DeviceId::parse(n).unwrap(),
            queues: vec![q("500")],
        };
        acd.apply_session("acme", &login, t(i as i64));
    }
    acd
}

fn enter(acd: &mut Acd, call: &str, queue: &str, at: i64) {
    let caller = Party {
        number: "555".into(),
        name: String::new(),
    };
    acd.apply_call(
        "acme",
        &C::CallEnteredQueue {
            call: call.into(),
            queue: q(queue),
            caller,
            channel: format!("ch-{call}"),
            priority: 0,
        },
        t(at),
    );
}

fn offered(d: &[Decision]) -> Vec<(String, Vec<String>)> {
    d.iter()
        .filter_map(|d| match d {
            Decision::Offer { call, agents } => Some((
                call.clone(),
                agents.iter().map(|(a, _)| a.to_string()).collect(),
            )),
            _ => None,
        })
        .collect()
}

fn offer(acd: &mut Acd, call: &str, agent: &str, at: i64) {
    acd.apply_call(
        "acme",
        &C::CallOffered {
            call: call.into(),
            queue: q("500"),
            agent: a(agent),
            device: DeviceId::parse(agent).unwrap(),
            offer: format!("o-{call}-{agent}"),
            ring_timeout_s: None,
        },
        t(at),
    );
}

fn answer(acd: &mut Acd, call: &str, agent: &str, at: i64) {
    acd.apply_call(
        "acme",
        &C::CallAnswered {
            call: call.into(),
            queue: q("500"),
            agent: a(agent),
            offer: format!("o-{call}-{agent}"),
            wait_ms: 0,
        },
        t(at),
    );
}

/// The agent hangs up a call of 1 s talk at `at`, and its wrap-up of `seconds` starts.
fn hang_up_into_wrap_up(acd: &mut Acd, call: &str, agent: &str, at: i64, seconds: i64) {
    acd.apply_call(
        "acme",
        &C::CallEnded {
            call: call.into(),
            agent: a(agent),
            by: cc_contracts::call::EndedBy::Agent,
            talk_ms: 1000,
        },
        t(at),
    );
    acd.apply_call(
        "acme",
        &C::WrapUpStarted {
            call: call.into(),
            agent: a(agent),
            seconds,
        },
        t(at),
    );
}

fn finish(acd: &mut Acd, call: &str, agent: &str, talk_ms: i64, at: i64) {
    acd.apply_call(
        "acme",
        &C::CallEnded {
            call: call.into(),
            agent: a(agent),
            by: cc_contracts::call::EndedBy::Caller,
            talk_ms,
        },
        t(at),
    );
    acd.apply_call(
        "acme",
        &C::WrapUpStarted {
            call: call.into(),
            agent: a(agent),
            seconds: 0,
        },
        t(at),
    );
    acd.apply_call(
        "acme",
        &C::WrapUpEnded {
            call: call.into(),
            agent: a(agent),
            early: false,
        },
        t(at),
    );
}

#[test]
fn ring_all_rings_every_eligible_agent_and_the_first_answer_wins() {
    let mut acd = given(Strategy::RingAll);
    enter(&mut acd, "c1", "500", 10);
    assert_eq!(
        offered(&acd.dispatch(t(10))),
        [(
            "c1".to_string(),
            vec!["1001".into(), "1002".into(), "1003".into(), "1004".into()]
        )]
    );
    for n in ["1001", "1002", "1003", "1004"] {
        offer(&mut acd, "c1", n, 10);
    }
    // The others' offers are withdrawn when 1003 answers; none of them counts as missed.
    answer(&mut acd, "c1", "1003", 12);
    for n in ["1001", "1002", "1004"] {
        acd.apply_call(
            "acme",
            &C::OfferWithdrawn {
                call: "c1".into(),
                agent: a(n),
                offer: format!("o-c1-{n}"),
                reason: cc_contracts::call::WithdrawReason::AnsweredElsewhere,
            },
            t(12),
        );
    }
    assert_eq!(acd.agents[&("acme".into(), a("1001"))].missed_in_row, 0);
    enter(&mut acd, "c2", "500", 13);
    assert!(
        offered(&acd.dispatch(t(13))).is_empty(),
        "the withdrawn legs are not reported gone yet: their phones would be busy"
    );
    for n in ["1001", "1002", "1004"] {
        acd.channel_gone(&format!("o-c1-{n}"));
    }
    let d = offered(&acd.dispatch(t(13)));
    assert_eq!(d[0].1, ["1001", "1002", "1004"], "1003 is on a call");
}

#[test]
fn a_withdrawn_leg_never_reported_gone_holds_the_agent_back_only_a_while() {
    let mut acd = given(Strategy::LongestIdle);
    enter(&mut acd, "c1", "500", 10);
    assert_eq!(offered(&acd.dispatch(t(10)))[0].1, ["1001"]);
    offer(&mut acd, "c1", "1001", 10);
    acd.apply_call(
        "acme",
        &C::OfferWithdrawn {
            call: "c1".into(),
            agent: a("1001"),
            offer: "o-c1-1001".into(),
            reason: cc_contracts::call::WithdrawReason::CallerGone,
        },
        t(11),
    );
    enter(&mut acd, "c2", "500", 11);
    assert_eq!(
        offered(&acd.dispatch(t(11)))[0].1,
        ["1002"],
        "1001's leg is still up"
    );
    offer(&mut acd, "c2", "1002", 11);
    enter(&mut acd, "c3", "500", 12);
    let _ = acd.dispatch(t(12));
    // The hangup fact was lost: after the wait, 1001 is rung anyway.
    let later = t(11) + chrono::Duration::milliseconds(super::LEG_GONE_WAIT_MS);
    let d = offered(&acd.dispatch(later));
    assert!(
        d.iter()
            .any(|(_, agents)| agents.contains(&"1001".to_string())),
        "{d:?}"
    );
}

#[test]
fn longest_idle_picks_who_waited_longest_since_their_last_call() {
    let mut acd = given(Strategy::LongestIdle);
    enter(&mut acd, "c1", "500", 10);
    assert_eq!(offered(&acd.dispatch(t(10)))[0].1, ["1001"]);
    offer(&mut acd, "c1", "1001", 10);
    answer(&mut acd, "c1", "1001", 11);
    finish(&mut acd, "c1", "1001", 5000, 20);
    enter(&mut acd, "c2", "500", 21);
    assert_eq!(
        offered(&acd.dispatch(t(21)))[0].1,
        ["1002"],
        "1001 just finished a call"
    );
}

#[test]
fn round_robin_remembers_who_was_offered_last_and_wraps_around() {
    let mut acd = given(Strategy::RoundRobin);
    let mut got = vec![];
    for (i, call) in ["c1", "c2", "c3", "c4", "c5"].iter().enumerate() {
        enter(&mut acd, call, "500", 10 + i as i64);
        let d = offered(&acd.dispatch(t(10 + i as i64)));
        let agent = d[0].1[0].clone();
        offer(&mut acd, call, &agent, 10 + i as i64);
        // Each offer is declined at once, so every agent stays free for the next call.
        acd.apply_call(
            "acme",
            &C::OfferWithdrawn {
                call: (*call).into(),
                agent: a(&agent),
                offer: format!("o-{call}-{agent}"),
                reason: cc_contracts::call::WithdrawReason::CallerGone,
            },
            t(10 + i as i64),
        );
        acd.apply_call(
            "acme",
            &C::CallAbandoned {
                call: (*call).into(),
                queue: q("500"),
                wait_ms: 0,
                position: 1,
            },
            t(10 + i as i64),
        );
        got.push(agent);
    }
    assert_eq!(got, ["1001", "1002", "1003", "1004", "1001"]);
}

#[test]
fn fewest_calls_and_least_talk_time_count_since_login() {
    let mut acd = given(Strategy::FewestCalls);
    for (call, agent, talk) in [
        ("a", "1001", 100),
        ("b", "1002", 90_000),
        ("c", "1003", 100),
        ("d", "1001", 100),
    ] {
        enter(&mut acd, call, "500", 10);
        offer(&mut acd, call, agent, 10);
        answer(&mut acd, call, agent, 11);
        finish(&mut acd, call, agent, talk, 12);
    }
    enter(&mut acd, "x", "500", 20);
    assert_eq!(offered(&acd.dispatch(t(20)))[0].1, ["1004"], "no calls yet");
    let mut acd2 = given(Strategy::LeastTalkTime);
    for (call, agent, talk) in [
        ("a", "1001", 100),
        ("b", "1002", 90_000),
        ("c", "1003", 50),
        ("d", "1004", 70),
    ] {
        enter(&mut acd2, call, "500", 10);
        offer(&mut acd2, call, agent, 10);
        answer(&mut acd2, call, agent, 11);
        finish(&mut acd2, call, agent, talk, 12);
    }
    enter(&mut acd2, "x", "500", 20);
    assert_eq!(offered(&acd2.dispatch(t(20)))[0].1, ["1003"]);
    // A new login starts the counts again.
    acd.apply_session(
        "acme",
        &S::AgentLoggedOut {
            agent: a("1001"),
            login_id: Default::default(),
            reason: cc_contracts::session::LogoutReason::Agent,
        },
        t(30),
    );
    acd.apply_session(
        "acme",
        &S::AgentLoggedIn {
            agent: a("1001"),
            login_id: Default::default(),
            device: DeviceId::parse("1001").unwrap(),
            queues: vec![q("500")],
        },
        t(31),
    );
    assert_eq!(acd.agents[&("acme".into(), a("1001"))].calls_answered, 0);
}

#[test]
fn linear_goes_top_down_by_penalty() {
    let mut acd = given(Strategy::Linear);
    enter(&mut acd, "c1", "500", 10);
    enter(&mut acd, "c2", "500", 11);
    // Two waiting calls: the first goes to the lowest penalty (1004), the second to the next.
    assert_eq!(
        offered(&acd.dispatch(t(12))),
        [
            ("c1".to_string(), vec!["1004".to_string()]),
            ("c2".to_string(), vec!["1003".to_string()])
        ]
    );
}

#[test]
fn random_picks_among_the_eligible_only() {
    let mut acd = given(Strategy::Random);
    acd.apply_session(
        "acme",
        &S::AgentPaused {
            agent: a("1002"),
            reason: "Lunch".into(),
        },
        t(5),
    );
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..40 {
        let call = format!("c{i}");
        enter(&mut acd, &call, "500", 10 + i);
        let d = offered(&acd.dispatch(t(10 + i)));
        seen.insert(d[0].1[0].clone());
        acd.apply_call(
            "acme",
            &C::CallAbandoned {
                call: call.clone(),
                queue: q("500"),
                wait_ms: 0,
                position: 1,
            },
            t(10 + i),
        );
    }
    assert!(!seen.contains("1002"), "a paused agent is never chosen");
    assert!(
        seen.len() >= 2,
        "more than one agent is chosen over 40 calls: {seen:?}"
    );
}

#[test]
fn only_available_agents_are_offered_calls() {
    let mut acd = given(Strategy::LongestIdle);
    acd.apply_session(
        "acme",
        &S::AgentPaused {
            agent: a("1001"),
            reason: "Lunch".into(),
        },
        t(5),
    );
    acd.apply_session(
        "acme",
        &S::AgentDeviceWentOffline {
            agent: a("1002"),
            device: DeviceId::parse("1002").unwrap(),
        },
        t(5),
    );
    acd.apply_session(
        "acme",
        &S::AgentLeftQueue {
            agent: a("1003"),
            queue: q("500"),
        },
        t(5),
    );
    enter(&mut acd, "c1", "500", 10);
    assert_eq!(offered(&acd.dispatch(t(10)))[0].1, ["1004"]);
    offer(&mut acd, "c1", "1004", 10);
    enter(&mut acd, "c2", "500", 11);
    assert!(
        offered(&acd.dispatch(t(11))).is_empty(),
        "1004 is ringing: one offer per agent"
    );
    // A reject puts the agent on a reject delay.
    acd.apply_call(
        "acme",
        &C::OfferRejected {
            call: "c1".into(),
            agent: a("1004"),
            offer: "o-c1-1004".into(),
        },
        t(12),
    );
    assert!(offered(&acd.dispatch(t(13))).is_empty(), "reject delay");
    let d = offered(&acd.dispatch(t(12 + 5)));
    assert_eq!(
        d[0],
        ("c1".to_string(), vec!["1004".to_string()]),
        "the older call first, after the delay"
    );
    // Wrap-up keeps an agent out until it ends.
    offer(&mut acd, "c1", "1004", 17);
    answer(&mut acd, "c1", "1004", 18);
    hang_up_into_wrap_up(&mut acd, "c1", "1004", 20, 10);
    assert!(offered(&acd.dispatch(t(21))).is_empty());
    assert!(
        acd.due(t(30))
            .iter()
            .any(|d| matches!(d, Decision::WrapUpOver { .. })),
        "the wrap-up timer is derived from state"
    );
}

#[test]
fn ring_timeouts_and_max_wait_fall_due_from_the_recorded_times() {
    let mut acd = given(Strategy::LongestIdle);
    let settings = QueueSettings {
        ring_timeout_s: 15,
        max_wait_s: 60,
        ..Default::default()
    };
    acd.apply_queue(
        "acme",
        &QueueEvent::QueueConfigured {
            queue: q("500"),
            settings,
        },
    );
    enter(&mut acd, "c1", "500", 0);
    offer(&mut acd, "c1", "1001", 1);
    assert!(acd.due(t(15)).is_empty());
    assert_eq!(acd.next_deadline(), Some(t(16)));
    assert!(
        matches!(&acd.due(t(16))[..], [Decision::OfferTimedOut { agent, .. }] if agent == &a("1001"))
    );
    acd.apply_call(
        "acme",
        &C::OfferTimedOut {
            call: "c1".into(),
            agent: a("1001"),
            offer: "o-c1-1001".into(),
        },
        t(16),
    );
    assert_eq!(acd.agents[&("acme".into(), a("1001"))].missed_in_row, 1);
    assert!(acd
        .due(t(60))
        .iter()
        .any(|d| matches!(d, Decision::MaxWait { call } if call == "c1")));
}

#[test]
fn the_longest_waiting_call_is_served_first_across_queues() {
    let mut acd = given(Strategy::LongestIdle);
    // 1001 alone, in both queues.
    acd.apply_queue(
        "acme",
        &QueueEvent::AgentAssignedToQueue {
            queue: q("501"),
            agent: a("1001"),
            penalty: 0,
        },
    );
    acd.apply_session(
        "acme",
        &S::AgentJoinedQueue {
            agent: a("1001"),
            queue: q("501"),
        },
        t(5),
    );
    for n in ["1002", "1003", "1004"] {
        acd.apply_session(
            "acme",
            &S::AgentPaused {
                agent: a(n),
                reason: "Break".into(),
            },
            t(5),
        );
    }
    enter(&mut acd, "late", "500", 20);
    enter(&mut acd, "early", "501", 10);
    assert_eq!(
        offered(&acd.dispatch(t(21))),
        [("early".to_string(), vec!["1001".to_string()])]
    );
    assert_eq!(acd.position("late"), 1);
}

#[test]
fn a_reject_delay_is_one_timer_that_ends_by_routing_again() {
    let mut acd = given(Strategy::LongestIdle);
    for n in ["1001", "1002", "1003"] {
        acd.apply_session(
            "acme",
            &S::AgentPaused {
                agent: a(n),
                reason: "Break".into(),
            },
            t(5),
        );
    }
    let settings = QueueSettings {
        reject_delay_s: 5,
        ..Default::default()
    };
    acd.apply_queue(
        "acme",
        &QueueEvent::QueueConfigured {
            queue: q("500"),
            settings,
        },
    );
    enter(&mut acd, "c1", "500", 10);
    offer(&mut acd, "c1", "1004", 10);
    acd.apply_call(
        "acme",
        &C::OfferRejected {
            call: "c1".into(),
            agent: a("1004"),
            offer: "o-c1-1004".into(),
        },
        t(12),
    );
    assert!(offered(&acd.dispatch(t(12))).is_empty());
    assert_eq!(
        acd.next_deadline(),
        Some(t(17)),
        "the router wakes when the delay ends"
    );
    assert!(
        acd.due(t(17)).is_empty(),
        "nothing to record when a reject delay ends"
    );
    assert_ne!(
        acd.next_deadline(),
        Some(t(17)),
        "and that timer is spent (no busy loop on a past deadline)"
    );
    assert_eq!(
        offered(&acd.dispatch(t(17))),
        [("c1".to_string(), vec!["1004".to_string()])]
    );
}

#[test]
fn a_call_whose_offer_rang_out_keeps_its_place_in_line() {
    let mut acd = given(Strategy::LongestIdle);
    for n in ["1002", "1003", "1004"] {
        acd.apply_session(
            "acme",
            &S::AgentPaused {
                agent: a(n),
                reason: "Break".into(),
            },
            t(5),
        );
    }
    enter(&mut acd, "first", "500", 10);
    offer(&mut acd, "first", "1001", 10);
    enter(&mut acd, "second", "500", 11);
    enter(&mut acd, "third", "500", 12);
    assert!(
        offered(&acd.dispatch(t(12))).is_empty(),
        "the only agent is ringing"
    );
    acd.apply_call(
        "acme",
        &C::OfferTimedOut {
            call: "first".into(),
            agent: a("1001"),
            offer: "o-first-1001".into(),
        },
        t(25),
    );
    assert_eq!(
        offered(&acd.dispatch(t(25))),
        [("first".to_string(), vec!["1001".to_string()])]
    );
    assert!(
        offered(&acd.dispatch(t(25))).is_empty(),
        "decided once; nothing changed since"
    );
    assert_eq!(acd.position("third"), 3);
}

#[test]
fn settings_changed_while_an_offer_rings_move_its_timer() {
    let mut acd = given(Strategy::LongestIdle);
    enter(&mut acd, "c1", "500", 0);
    offer(&mut acd, "c1", "1001", 1);
    let settings = QueueSettings {
        ring_timeout_s: 5,
        ..Default::default()
    };
    acd.apply_queue(
        "acme",
        &QueueEvent::QueueConfigured {
            queue: q("500"),
            settings,
        },
    );
    assert_eq!(acd.next_deadline(), Some(t(6)));
    assert!(matches!(
        &acd.due(t(6))[..],
        [Decision::OfferTimedOut { .. }]
    ));
    assert_eq!(acd.due(t(6)).len(), 1, "due until the timeout is recorded");
    acd.apply_call(
        "acme",
        &C::OfferTimedOut {
            call: "c1".into(),
            agent: a("1001"),
            offer: "o-c1-1001".into(),
        },
        t(6),
    );
    assert!(acd.due(t(6)).is_empty());
}

#[test]
fn offers_ringing_an_agent_who_logged_out_or_whose_device_went_offline_are_to_withdraw() {
    use cc_contracts::call::WithdrawReason;
    let mut acd = given(Strategy::RingAll);
    enter(&mut acd, "c1", "500", 10);
    for n in ["1001", "1002", "1003", "1004"] {
        offer(&mut acd, "c1", n, 10);
    }
    assert!(
        acd.offers_to_withdraw(None).is_empty(),
        "every ringing agent can still take the call"
    );
    acd.apply_session(
        "acme",
        &S::AgentLoggedOut {
            agent: a("1001"),
            login_id: Default::default(),
            reason: cc_contracts::session::LogoutReason::Supervisor,
        },
        t(11),
    );
    acd.apply_session(
        "acme",
        &S::AgentDeviceWentOffline {
            agent: a("1002"),
            device: DeviceId::parse("1002").unwrap(),
        },
        t(11),
    );
    let only = acd.offers_to_withdraw(Some(("acme", &a("1001"))));
    assert_eq!(
        only,
        [(
            "acme".into(),
            "c1".into(),
            a("1001"),
            "o-c1-1001".into(),
            WithdrawReason::AgentLoggedOut
        )]
    );
    let mut all: Vec<_> = acd
        .offers_to_withdraw(None)
        .into_iter()
        .map(|(_, _, agent, _, why)| (agent.to_string(), why))
        .collect();
    all.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        all,
        [
            ("1001".to_string(), WithdrawReason::AgentLoggedOut),
            ("1002".to_string(), WithdrawReason::DeviceOffline)
        ]
    );
    // Once withdrawn (a withdrawal counts nothing), the call rings on with the others.
    for (_, call, agent, offer, reason) in acd.offers_to_withdraw(None) {
        acd.apply_call(
            "acme",
            &C::OfferWithdrawn {
                call,
                agent,
                offer,
                reason,
            },
            t(11),
        );
    }
    assert!(acd.offers_to_withdraw(None).is_empty());
    for n in ["1001", "1002"] {
        let agent = &acd.agents[&("acme".into(), a(n))];
        assert_eq!(
            (agent.ringing, agent.missed_in_row, agent.reject_until),
            (0, 0, None),
            "{n}"
        );
    }
    assert_eq!(acd.calls["c1"].offers.len(), 2);
}

#[test]
fn a_call_whose_only_offer_is_withdrawn_goes_on_to_the_next_eligible_agent() {
    let mut acd = given(Strategy::LongestIdle);
    enter(&mut acd, "c1", "500", 10);
    assert_eq!(offered(&acd.dispatch(t(10)))[0].1, ["1001"]);
    offer(&mut acd, "c1", "1001", 10);
    acd.apply_session(
        "acme",
        &S::AgentLoggedOut {
            agent: a("1001"),
            login_id: Default::default(),
            reason: cc_contracts::session::LogoutReason::Agent,
        },
        t(11),
    );
    for (_, call, agent, offer, reason) in acd.offers_to_withdraw(Some(("acme", &a("1001")))) {
        acd.apply_call(
            "acme",
            &C::OfferWithdrawn {
                call,
                agent,
                offer,
                reason,
            },
            t(11),
        );
    }
    assert_eq!(
        offered(&acd.dispatch(t(11))),
        [("c1".to_string(), vec!["1002".to_string()])]
    );
}

#[test]
fn a_required_disposition_holds_the_wrap_up_timer_until_it_is_given() {
    let mut acd = given(Strategy::LongestIdle);
    let settings = QueueSettings {
        dispositions: vec!["Sale".into(), "No sale".into()],
        disposition_required: true,
        ..Default::default()
    };
    acd.apply_queue(
        "acme",
        &QueueEvent::QueueConfigured {
            queue: q("500"),
            settings,
        },
    );
    enter(&mut acd, "c1", "500", 10);
    offer(&mut acd, "c1", "1001", 10);
    answer(&mut acd, "c1", "1001", 11);
    hang_up_into_wrap_up(&mut acd, "c1", "1001", 20, 10);
    let wrap_up_over = |acd: &mut Acd, at: i64| {
        acd.due(t(at))
            .iter()
            .any(|d| matches!(d, Decision::WrapUpOver { agent, .. } if agent.as_str() == "1001"))
    };
    assert!(
        !wrap_up_over(&mut acd, 40),
        "the timer waits for the disposition"
    );
    // A note alone is not a disposition.
    let recorded = |disposition: Option<&str>| C::CallDispositionRecorded {
        call: "c1".into(),
        agent: a("1001"),
        queue: q("500"),
        disposition: disposition.map(str::to_string),
        note: Some("called back".into()),
    };
    acd.apply_call("acme", &recorded(None), t(41));
    assert!(!wrap_up_over(&mut acd, 42));
    assert!(
        !offered(&acd.dispatch(t(42)))
            .iter()
            .any(|(_, agents)| agents.contains(&"1001".to_string())),
        "still in wrap-up: not offered calls"
    );
    acd.apply_call("acme", &recorded(Some("Sale")), t(43));
    assert!(
        wrap_up_over(&mut acd, 43),
        "past its time, the wrap-up ends once given"
    );
}

#[test]
fn a_logout_ends_the_wait_for_a_required_disposition() {
    let mut acd = given(Strategy::LongestIdle);
    let settings = QueueSettings {
        dispositions: vec!["Sale".into()],
        disposition_required: true,
        ..Default::default()
    };
    acd.apply_queue(
        "acme",
        &QueueEvent::QueueConfigured {
            queue: q("500"),
            settings,
        },
    );
    enter(&mut acd, "c1", "500", 10);
    offer(&mut acd, "c1", "1001", 10);
    answer(&mut acd, "c1", "1001", 11);
    hang_up_into_wrap_up(&mut acd, "c1", "1001", 20, 5);
    let over = |acd: &mut Acd, at: i64| {
        acd.due(t(at))
            .iter()
            .any(|d| matches!(d, Decision::WrapUpOver { .. }))
    };
    assert!(!over(&mut acd, 30), "waits for the disposition");
    let logout = S::AgentLoggedOut {
        agent: a("1001"),
        login_id: Default::default(),
        reason: cc_contracts::session::LogoutReason::Agent,
    };
    acd.apply_session("acme", &logout, t(31));
    assert!(
        over(&mut acd, 31),
        "no agent is stuck in a wrap-up without a form"
    );
}

#[test]
fn an_agent_dialling_out_is_offered_no_queue_call_until_the_call_ends_even_with_ring_in_use() {
    let mut acd = given(Strategy::Linear);
    for queue in ["500", "501"] {
        acd.apply_queue(
            "acme",
            &QueueEvent::QueueConfigured {
                queue: q(queue),
                settings: QueueSettings {
                    strategy: Strategy::Linear,
                    ring_in_use: true,
                    ..Default::default()
                },
            },
        );
    }
    let dial = |call: &str| C::OutboundCallStarted {
        call: call.into(),
        agent: a("1004"),
        device: DeviceId::parse("1004").unwrap(),
        number: cc_contracts::domain::DialString::parse("5551234").unwrap(),
        extension: false,
        leg: format!("leg-{call}"),
        far_leg: format!("far-{call}"),
        ring_timeout_s: 60,
    };
    // 1004 (lowest penalty) dials out: the call goes to 1003, never to 1004.
    acd.apply_call("acme", &dial("out1"), t(10));
    enter(&mut acd, "c1", "500", 11);
    assert_eq!(
        offered(&acd.dispatch(t(11))),
        [("c1".to_string(), vec!["1003".to_string()])]
    );
    offer(&mut acd, "c1", "1003", 11);
    // The dial fails: 1004 is free again and takes the next call.
    acd.apply_call(
        "acme",
        &C::OutboundCallFailed {
            call: "out1".into(),
            agent: a("1004"),
            reason: cc_contracts::call::OutboundFailure::Busy,
        },
        t(12),
    );
    enter(&mut acd, "c2", "500", 13);
    assert_eq!(
        offered(&acd.dispatch(t(13))),
        [("c2".to_string(), vec!["1004".to_string()])]
    );
    offer(&mut acd, "c2", "1004", 13);

    // An offer that crossed a dial is withdrawn (agent_dialed_out); after the outbound call's
    // end the agent is offered calls again.
    acd.apply_call("acme", &dial("out2"), t(14));
    let w = acd.offers_to_withdraw(Some(("acme", &a("1004"))));
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].4, WithdrawReason::AgentDialedOut);
    acd.apply_call(
        "acme",
        &C::OfferWithdrawn {
            call: "c2".into(),
            agent: a("1004"),
            offer: "o-c2-1004".into(),
            reason: WithdrawReason::AgentDialedOut,
        },
        t(14),
    );
    acd.apply_call(
        "acme",
        &C::CallEnded {
            call: "out2".into(),
            agent: a("1004"),
            by: cc_contracts::call::EndedBy::Agent,
            talk_ms: 1000,
        },
        t(20),
    );
    let d = offered(&acd.dispatch(t(21)));
    assert!(
        d.iter()
            .any(|(c, agents)| c == "c2" && agents.contains(&"1004".to_string())),
        "{d:?}"
    );
}
