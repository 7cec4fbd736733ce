//! The desk core's decisions, given / when / then.
use super::*;
use cc_contracts::call::TransferTarget;
use cc_contracts::domain::{DeviceId, QueueNumber};
use cc_contracts::pbx::Party;
use cc_testkit::decider::{given, Scenario};
use chrono::TimeZone;

fn a(n: &str) -> AgentNumber {
    AgentNumber::parse(n).unwrap()
}
fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap()
}
fn at(secs: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::seconds(secs)
}
fn rec(event: CallEvent) -> Event {
    Event::Call {
        tenant: "acme".into(),
        at: t0(),
        event,
    }
}
fn ask(what: What) -> Ask {
    Ask {
        tenant: "acme".into(),
        now: at(5),
        what,
    }
}
fn hold(agent: &str, held: bool) -> Ask {
    ask(What::Hold {
        agent: a(agent),
        held,
    })
}
fn hangup(agent: &str) -> Ask {
    ask(What::Hangup { agent: a(agent) })
}
fn complete(agent: &str) -> Ask {
    ask(What::Complete { agent: a(agent) })
}
fn cancel(agent: &str) -> Ask {
    ask(What::Cancel { agent: a(agent) })
}
fn gone(channel: &str) -> Ask {
    ask(What::LegGone {
        channel: channel.into(),
        cause: HangupCause::Normal,
    })
}
fn q() -> QueueNumber {
    QueueNumber::parse("500").unwrap()
}

/// Bob (1002) answered call "c" from queue 500 on leg "bob"; the customer is on "cust".
fn answered() -> Vec<Event> {
    vec![
        rec(CallEvent::CallEnteredQueue {
            call: "c".into(),
            queue: q(),
            caller: Party {
                number: "5551234".into(),
                name: "Jane".into(),
            },
            channel: "cust".into(),
            priority: 0,
        }),
        rec(CallEvent::CallOffered {
            call: "c".into(),
            queue: q(),
            agent: a("1002"),
            device: DeviceId::parse("1002").unwrap(),
            offer: "bob".into(),
            ring_timeout_s: None,
        }),
        rec(CallEvent::CallAnswered {
            call: "c".into(),
            queue: q(),
            agent: a("1002"),
            offer: "bob".into(),
            wait_ms: 5,
        }),
    ]
}

fn connected() -> Vec<Event> {
    let mut v = answered();
    v.push(rec(CallEvent::CallConnected {
        call: "c".into(),
        agent: a("1002"),
        bridge: "c".into(),
    }));
    v
}

/// Bob consults Carol (1003, leg "tgt") in an attended transfer; she answered, the customer
/// is held.
fn consulting() -> Vec<Event> {
    let mut v = connected();
    v.extend([
        rec(CallEvent::CallHeld {
            call: "c".into(),
            agent: a("1002"),
        }),
        rec(CallEvent::TransferStarted {
            call: "c".into(),
            transfer: "t".into(),
            agent: a("1002"),
            method: TransferMethod::Attended,
            target: TransferTarget::Agent(a("1003")),
            leg: Some("tgt".into()),
            target_agent: Some(a("1003")),
            queue: Some(q()),
        }),
        rec(CallEvent::TransferAnswered {
            call: "c".into(),
            transfer: "t".into(),
            agent: a("1002"),
            target_agent: Some(a("1003")),
        }),
    ]);
    v
}

/// Carol (1003, on leg "tgt") is given the call: the transfer completes, she is connected and
/// bridged with the customer.
fn handed_to_carol() -> Vec<Event> {
    vec![
        call(CallEvent::TransferCompleted {
            call: "c".into(),
            transfer: "t".into(),
            agent: a("1002"),
            target_agent: Some(a("1003")),
        }),
        call(CallEvent::CallConnected {
            call: "c".into(),
            agent: a("1003"),
            bridge: "c".into(),
        }),
        Event::Act(
            Step::After,
            Pbx::Bridge {
                bridge: "c".into(),
                channels: vec!["cust".into(), "tgt".into()],
            },
        ),
    ]
}

fn call(event: CallEvent) -> Event {
    Event::Call {
        tenant: "acme".into(),
        at: at(5),
        event,
    }
}

#[test]
fn hold_asks_the_pbx_first_and_refuses_what_already_is() {
    let held = given::<CallCore>(connected())
        .when(hold("1002", true))
        .then([
            Event::Act(
                Step::Before,
                Pbx::Hold {
                    channel: "cust".into(),
                    held: true,
                },
            ),
            call(CallEvent::CallHeld {
                call: "c".into(),
                agent: a("1002"),
            }),
        ]);
    assert!(held.calls["c"].held);
    let mut history = connected();
    history.push(call(CallEvent::CallHeld {
        call: "c".into(),
        agent: a("1002"),
    }));
    given::<CallCore>(history)
        .when(hold("1002", true))
        .then_refused(Refusal::AlreadyOnHold);
    given::<CallCore>(connected())
        .when(hold("1002", false))
        .then_refused(Refusal::NotOnHold);
    given::<CallCore>(answered())
        .when(hold("1002", true))
        .then_refused(Refusal::NotConnected);
}

#[test]
fn an_agent_without_a_call_or_only_a_transfers_target_is_refused_with_the_reason() {
    given::<CallCore>(connected())
        .when(hangup("1001"))
        .then_refused(Refusal::NoCall { agent: a("1001") });
    given::<CallCore>(consulting())
        .when(hold("1003", true))
        .then_refused(Refusal::TransferTarget {
            from: a("1002"),
            method: TransferMethod::Attended,
        });
    given::<CallCore>(connected())
        .when(complete("1002"))
        .then_refused(Refusal::NoTransferToComplete);
    given::<CallCore>(connected())
        .when(cancel("1002"))
        .then_refused(Refusal::NoTransferToCancel);
}

#[test]
fn the_agents_hangup_ends_the_call_with_the_talk_time_and_hangs_up_every_leg() {
    let after = given::<CallCore>(connected()).when(hangup("1002")).then([
        call(CallEvent::CallEnded {
            call: "c".into(),
            agent: a("1002"),
            by: EndedBy::Agent,
            talk_ms: 5000,
        }),
        Event::Act(
            Step::After,
            Pbx::HangUp {
                legs: vec!["cust".into(), "bob".into()],
            },
        ),
    ]);
    assert!(after.agent_call("acme", &a("1002")).is_none());
}

#[test]
fn completing_a_consultation_hands_the_call_to_its_target_and_bridges_them() {
    let after = given::<CallCore>(consulting()).when(complete("1002")).then(
        [call(CallEvent::CallEnded {
            call: "c".into(),
            agent: a("1002"),
            by: EndedBy::Transferred,
            talk_ms: 5000,
        })]
        .into_iter()
        .chain(handed_to_carol())
        .chain([
            Event::Act(
                Step::After,
                Pbx::Hold {
                    channel: "tgt".into(),
                    held: false,
                },
            ),
            Event::Act(
                Step::After,
                Pbx::Hold {
                    channel: "cust".into(),
                    held: false,
                },
            ),
            Event::Act(
                Step::After,
                Pbx::HangUp {
                    legs: vec!["bob".into()],
                },
            ),
        ]),
    );
    assert_eq!(after.agent_call("acme", &a("1003")).as_deref(), Some("c"));
    // The agent's Hangup during the consultation is the same as Complete.
    let (complete, hangup) = (
        CallCore::decide(&CallCore::fold(&consulting()), &complete("1002")),
        CallCore::decide(&CallCore::fold(&consulting()), &hangup("1002")),
    );
    assert_eq!(complete, hangup);
}

#[test]
fn cancelling_a_consultation_brings_the_agent_back_to_the_customer() {
    given::<CallCore>(consulting()).when(cancel("1002")).then([
        call(CallEvent::TransferCancelled {
            call: "c".into(),
            transfer: "t".into(),
            agent: a("1002"),
            target_agent: Some(a("1003")),
        }),
        call(CallEvent::CallResumed {
            call: "c".into(),
            agent: a("1002"),
        }),
        Event::Act(
            Step::After,
            Pbx::HangUp {
                legs: vec!["tgt".into()],
            },
        ),
        Event::Act(
            Step::After,
            Pbx::Bridge {
                bridge: "c".into(),
                channels: vec!["cust".into(), "bob".into()],
            },
        ),
        Event::Act(
            Step::After,
            Pbx::Hold {
                channel: "cust".into(),
                held: false,
            },
        ),
    ]);
}

#[test]
fn resuming_the_customer_during_a_consultation_holds_the_target() {
    given::<CallCore>(consulting())
        .when(hold("1002", false))
        .then([
            Event::Act(
                Step::Before,
                Pbx::Hold {
                    channel: "cust".into(),
                    held: false,
                },
            ),
            call(CallEvent::CallResumed {
                call: "c".into(),
                agent: a("1002"),
            }),
            Event::Act(
                Step::After,
                Pbx::Hold {
                    channel: "tgt".into(),
                    held: true,
                },
            ),
            Event::Act(
                Step::After,
                Pbx::Bridge {
                    bridge: "c".into(),
                    channels: vec!["cust".into(), "bob".into()],
                },
            ),
        ]);
}

#[test]
fn the_caller_gone_ends_the_call_fails_the_transfer_and_hangs_up_the_others() {
    given::<CallCore>(consulting()).when(gone("cust")).then([
        call(CallEvent::TransferFailed {
            call: "c".into(),
            transfer: "t".into(),
            agent: a("1002"),
            reason: TransferFailure::CallerGone,
            target_agent: Some(a("1003")),
        }),
        call(CallEvent::CallEnded {
            call: "c".into(),
            agent: a("1002"),
            by: EndedBy::Caller,
            talk_ms: 5000,
        }),
        Event::Act(
            Step::After,
            Pbx::HangUp {
                legs: vec!["bob".into(), "tgt".into()],
            },
        ),
    ]);
    // The agent's phone hanging up is the agent's end of the call.
    given::<CallCore>(connected()).when(gone("bob")).then([
        call(CallEvent::CallEnded {
            call: "c".into(),
            agent: a("1002"),
            by: EndedBy::AgentPhone,
            talk_ms: 5000,
        }),
        Event::Act(
            Step::After,
            Pbx::HangUp {
                legs: vec!["cust".into(), "bob".into()],
            },
        ),
    ]);
    // A leg of no call: nothing.
    given::<CallCore>(connected())
        .when(gone("nobody"))
        .then_nothing();
    // The answered target hanging up fails the transfer: Bob is back with the customer.
    given::<CallCore>(consulting()).when(gone("tgt")).then([
        call(CallEvent::TransferFailed {
            call: "c".into(),
            transfer: "t".into(),
            agent: a("1002"),
            reason: TransferFailure::TargetHungUp,
            target_agent: Some(a("1003")),
        }),
        call(CallEvent::CallResumed {
            call: "c".into(),
            agent: a("1002"),
        }),
        Event::Act(
            Step::After,
            Pbx::Bridge {
                bridge: "c".into(),
                channels: vec!["cust".into(), "bob".into()],
            },
        ),
        Event::Act(
            Step::After,
            Pbx::Hold {
                channel: "cust".into(),
                held: false,
            },
        ),
    ]);
}

/// Bob's blind transfer to Carol rings her: Bob has dropped.
fn blind_ringing() -> Vec<Event> {
    let mut v = connected();
    v.extend([
        rec(CallEvent::TransferStarted {
            call: "c".into(),
            transfer: "t".into(),
            agent: a("1002"),
            method: TransferMethod::Blind,
            target: TransferTarget::Agent(a("1003")),
            leg: Some("tgt".into()),
            target_agent: Some(a("1003")),
            queue: Some(q()),
        }),
        rec(CallEvent::CallEnded {
            call: "c".into(),
            agent: a("1002"),
            by: EndedBy::Transferred,
            talk_ms: 0,
        }),
    ]);
    v
}

#[test]
fn a_failed_target_puts_a_blind_transfer_back_at_the_head_of_the_queue_and_brings_a_consultation_back(
) {
    let m = CallCore::fold(&blind_ringing());
    let l = &m.calls["c"];
    assert_eq!(
        target_fails(at(5), "c", l, TransferFailure::Rejected),
        [
            call(CallEvent::TransferFailed {
                call: "c".into(),
                transfer: "t".into(),
                agent: a("1002"),
                reason: TransferFailure::Rejected,
                target_agent: Some(a("1003")),
            }),
            call(CallEvent::CallEnteredQueue {
                call: "c".into(),
                queue: q(),
                caller: Party {
                    number: "5551234".into(),
                    name: "Jane".into(),
                },
                channel: "cust".into(),
                priority: REQUEUE_PRIORITY,
            }),
        ]
    );
    let m = CallCore::fold(&consulting());
    let d = target_fails(at(5), "c", &m.calls["c"], TransferFailure::TargetHungUp);
    assert_eq!(
        d[1],
        call(CallEvent::CallResumed {
            call: "c".into(),
            agent: a("1002"),
        })
    );
    assert_eq!(
        d[2],
        Event::Act(
            Step::After,
            Pbx::Bridge {
                bridge: "c".into(),
                channels: vec!["cust".into(), "bob".into()],
            },
        )
    );
}

fn monitored(joined: bool) -> Vec<Event> {
    let mut v = connected();
    v.push(rec(CallEvent::MonitorStarted {
        call: "c".into(),
        monitor: "m".into(),
        agent: a("1002"),
        supervisor: "sue".into(),
        supervisor_name: "Sue".into(),
        device: DeviceId::parse("1009").unwrap(),
        leg: "sup".into(),
        mode: MonitorMode::Listen,
    }));
    if joined {
        v.push(rec(CallEvent::MonitorJoined {
            call: "c".into(),
            monitor: "m".into(),
            agent: a("1002"),
            supervisor: "sue".into(),
        }));
    }
    v
}

fn set_mode(supervisor: &str, mode: MonitorMode) -> Ask {
    ask(What::SetMonitorMode {
        agent: a("1002"),
        supervisor: supervisor.into(),
        mode,
    })
}

#[test]
fn only_the_supervisor_on_the_call_switches_or_leaves_and_a_joined_leg_hears_the_new_mode() {
    given::<CallCore>(monitored(true))
        .when(set_mode("sue", MonitorMode::Whisper))
        .then([
            call(CallEvent::MonitorModeChanged {
                call: "c".into(),
                monitor: "m".into(),
                agent: a("1002"),
                supervisor: "sue".into(),
                mode: MonitorMode::Whisper,
            }),
            Event::Act(
                Step::After,
                Pbx::SetBridgeMode {
                    channel: "sup".into(),
                    mode: BridgeMode::Whisper { to: "bob".into() },
                },
            ),
        ]);
    // Not joined yet: the mode is recorded, the phone hears it when it joins.
    let decided = CallCore::decide(
        &CallCore::fold(&monitored(false)),
        &set_mode("sue", MonitorMode::Barge),
    )
    .unwrap();
    assert_eq!(decided.len(), 1);
    given::<CallCore>(monitored(true))
        .when(set_mode("sue", MonitorMode::Listen))
        .then_nothing();
    given::<CallCore>(monitored(true))
        .when(set_mode("max", MonitorMode::Barge))
        .then_refused(Refusal::NotYourMonitor {
            agent: a("1002"),
            supervisor: "sue".into(),
        });
    given::<CallCore>(connected())
        .when(ask(What::StopMonitor {
            agent: a("1002"),
            supervisor: "sue".into(),
        }))
        .then_refused(Refusal::NoMonitor { agent: a("1002") });
    given::<CallCore>(monitored(true))
        .when(ask(What::StopMonitor {
            agent: a("1002"),
            supervisor: "sue".into(),
        }))
        .then([
            call(CallEvent::MonitorEnded {
                call: "c".into(),
                monitor: "m".into(),
                agent: a("1002"),
                supervisor: "sue".into(),
                reason: MonitorEndReason::Left,
            }),
            Event::Act(
                Step::After,
                Pbx::HangUp {
                    legs: vec!["sup".into()],
                },
            ),
        ]);
}

fn transfer(method: TransferMethod, target: TransferTarget, device: Option<&str>) -> Ask {
    ask(What::Transfer {
        cmd: TransferCall {
            agent: a("1002"),
            method,
            target,
            device: device.map(|d| DeviceId::parse(d).unwrap()),
            target_agent: None,
            ring_timeout_s: 20,
        },
        transfer: "t".into(),
        leg: "tgt".into(),
    })
}

#[test]
fn a_transfer_is_checked_before_anything_is_touched() {
    let to_ext = |d| {
        transfer(
            TransferMethod::Attended,
            TransferTarget::Extension(DeviceId::parse("1005").unwrap()),
            d,
        )
    };
    given::<CallCore>(answered())
        .when(to_ext(Some("1005")))
        .then_refused(Refusal::TransferNotConnected);
    given::<CallCore>(consulting())
        .when(to_ext(Some("1005")))
        .then_refused(Refusal::TransferInProgress);
    given::<CallCore>(connected())
        .when(to_ext(None))
        .then_refused(Refusal::Invalid {
            code: "missing_field",
            field: "device",
            message: "the device to ring is required".into(),
        });
    given::<CallCore>(connected())
        .when(to_ext(Some("1002")))
        .then_refused(Refusal::Invalid {
            code: "own_device",
            field: "target",
            message: "Extension 1002 is your own device".into(),
        });
    given::<CallCore>(connected())
        .when(transfer(
            TransferMethod::Live,
            TransferTarget::Queue(q()),
            None,
        ))
        .then_refused(Refusal::Invalid {
            code: "invalid_field",
            field: "method",
            message: "a call goes to a queue by blind transfer only".into(),
        });
    given::<CallCore>(connected())
        .when(transfer(
            TransferMethod::Blind,
            TransferTarget::Number("12ab".into()),
            None,
        ))
        .then_refused(Refusal::Invalid {
            code: "invalid_field",
            field: "target",
            message: "\"12ab\" is not a phone number (digits, may start with +)".into(),
        });
}

#[test]
fn an_attended_transfer_holds_the_customer_and_rings_the_target_once_its_device_is_online() {
    given::<CallCore>(connected())
        .when(transfer(
            TransferMethod::Attended,
            TransferTarget::Extension(DeviceId::parse("1005").unwrap()),
            Some("1005"),
        ))
        .then([
            Event::Act(
                Step::Before,
                Pbx::CheckOnline {
                    device: DeviceId::parse("1005").unwrap(),
                    field: "target",
                },
            ),
            call(CallEvent::TransferStarted {
                call: "c".into(),
                transfer: "t".into(),
                agent: a("1002"),
                method: TransferMethod::Attended,
                target: TransferTarget::Extension(DeviceId::parse("1005").unwrap()),
                leg: Some("tgt".into()),
                target_agent: None,
                queue: Some(q()),
            }),
            call(CallEvent::CallHeld {
                call: "c".into(),
                agent: a("1002"),
            }),
            Event::Act(
                Step::After,
                Pbx::Hold {
                    channel: "cust".into(),
                    held: true,
                },
            ),
            Event::Act(
                Step::After,
                Pbx::RingTarget {
                    transfer: "t".into(),
                    leg: "tgt".into(),
                    endpoint: Endpoint::Device(DeviceId::parse("1005").unwrap()),
                    caller: Party {
                        number: "5551234".into(),
                        name: "Jane".into(),
                    },
                    ring_timeout_s: 20,
                },
            ),
        ]);
}

#[test]
fn a_blind_transfer_to_a_queue_drops_the_agent_and_puts_the_caller_at_its_head() {
    let other = QueueNumber::parse("501").unwrap();
    let after = given::<CallCore>(connected())
        .when(transfer(
            TransferMethod::Blind,
            TransferTarget::Queue(other.clone()),
            None,
        ))
        .then([
            call(CallEvent::TransferStarted {
                call: "c".into(),
                transfer: "t".into(),
                agent: a("1002"),
                method: TransferMethod::Blind,
                target: TransferTarget::Queue(other.clone()),
                leg: None,
                target_agent: None,
                queue: Some(q()),
            }),
            call(CallEvent::CallEnded {
                call: "c".into(),
                agent: a("1002"),
                by: EndedBy::Transferred,
                talk_ms: 5000,
            }),
            call(CallEvent::TransferCompleted {
                call: "c".into(),
                transfer: "t".into(),
                agent: a("1002"),
                target_agent: None,
            }),
            call(CallEvent::CallEnteredQueue {
                call: "c".into(),
                queue: other,
                caller: Party {
                    number: "5551234".into(),
                    name: "Jane".into(),
                },
                channel: "cust".into(),
                priority: REQUEUE_PRIORITY,
            }),
            Event::Act(
                Step::After,
                Pbx::HangUp {
                    legs: vec!["bob".into()],
                },
            ),
        ]);
    assert!(after.agent_call("acme", &a("1002")).is_none());
    assert!(after.waiting.contains_key("c"));
}

#[test]
fn a_target_answering_forms_the_consultation_once() {
    // consulting() has the answer already: a repeated report decides nothing.
    given::<CallCore>(consulting())
        .when(ask(What::LegAnswered {
            channel: "tgt".into(),
        }))
        .then_nothing();
    let mut ringing = consulting();
    ringing.pop(); // before TransferAnswered
    given::<CallCore>(ringing)
        .when(ask(What::LegAnswered {
            channel: "tgt".into(),
        }))
        .then([
            call(CallEvent::TransferAnswered {
                call: "c".into(),
                transfer: "t".into(),
                agent: a("1002"),
                target_agent: Some(a("1003")),
            }),
            Event::Act(
                Step::After,
                Pbx::Bridge {
                    bridge: "c-consult".into(),
                    channels: vec!["bob".into(), "tgt".into()],
                },
            ),
        ]);
    // The customer's or the agent's leg answering is not a decision of this core.
    given::<CallCore>(connected())
        .when(ask(What::LegAnswered {
            channel: "cust".into(),
        }))
        .then_nothing();
}

#[test]
fn a_blind_transfers_target_answering_is_joined_with_the_customer_and_has_the_call() {
    let after = given::<CallCore>(blind_ringing())
        .when(ask(What::LegAnswered {
            channel: "tgt".into(),
        }))
        .then(
            [call(CallEvent::TransferAnswered {
                call: "c".into(),
                transfer: "t".into(),
                agent: a("1002"),
                target_agent: Some(a("1003")),
            })]
            .into_iter()
            .chain(handed_to_carol()),
        );
    assert_eq!(after.agent_call("acme", &a("1003")).as_deref(), Some("c"));
}

fn dev(n: &str) -> DeviceId {
    DeviceId::parse(n).unwrap()
}

fn dial(agent: &str, device: &str, number: &str, devices: &[(&str, bool)]) -> Ask {
    ask(What::Dial {
        cmd: DialOutbound {
            agent: a(agent),
            device: dev(device),
            number: cc_contracts::domain::DialString::parse(number).unwrap(),
            ring_timeout_s: 45,
        },
        devices: devices.iter().map(|(d, up)| (dev(d), *up)).collect(),
        call: "o".into(),
        leg: "mine".into(),
        far_leg: "far".into(),
    })
}

/// Alice (1001) dialled 5550100 from her device 1001.
fn dialling() -> Vec<Event> {
    vec![rec(CallEvent::OutboundCallStarted {
        call: "o".into(),
        agent: a("1001"),
        device: dev("1001"),
        number: cc_contracts::domain::DialString::parse("5550100").unwrap(),
        extension: false,
        leg: "mine".into(),
        far_leg: "far".into(),
        ring_timeout_s: 45,
    })]
}

fn answered_leg(channel: &str) -> Ask {
    ask(What::LegAnswered {
        channel: channel.into(),
    })
}

#[test]
fn a_dial_is_checked_first_then_recorded_and_rings_the_agents_own_phone_first() {
    let online = [("1001", true), ("1003", true)];
    // On a call, to their own device, or from a device not registered: refused, nothing done.
    given::<CallCore>(connected())
        .when(dial("1002", "1002", "5550100", &[("1002", true)]))
        .then_refused(Refusal::OnCall);
    given::<CallCore>(vec![])
        .when(dial("1001", "1001", "1001", &online))
        .then_refused(Refusal::Invalid {
            code: "own_device",
            field: "number",
            message: "Extension 1001 is your own device".into(),
        });
    given::<CallCore>(vec![])
        .when(dial("1001", "1001", "5550100", &[("1001", false)]))
        .then_refused(Refusal::Invalid {
            code: "device_offline",
            field: "device",
            message: "Your device 1001 is not registered: register your phone, then dial".into(),
        });
    // A number: its route checked, the call recorded, the agent's phone rung showing it.
    let started = dialling().remove(0);
    let Event::Call { event: started, .. } = started else {
        unreachable!()
    };
    given::<CallCore>(vec![])
        .when(dial("1001", "1001", "5550100", &online))
        .then([
            Event::Act(
                Step::Before,
                Pbx::CheckRoute {
                    endpoint: Endpoint::Number("5550100".into()),
                    field: "number",
                },
            ),
            call(started),
            Event::Act(
                Step::After,
                Pbx::RingDialer {
                    leg: "mine".into(),
                    device: dev("1001"),
                    caller: Party {
                        number: "5550100".into(),
                        name: "Call 5550100".into(),
                    },
                },
            ),
        ]);
    // Another extension is rung as that device.
    given::<CallCore>(vec![])
        .when(dial("1001", "1001", "1003", &online))
        .then_check(|out| {
            assert_eq!(
                out[0],
                Event::Act(
                    Step::Before,
                    Pbx::CheckRoute {
                        endpoint: Endpoint::Device(dev("1003")),
                        field: "number"
                    }
                )
            );
            assert!(matches!(
                &out[1],
                Event::Call {
                    event: CallEvent::OutboundCallStarted {
                        extension: true,
                        ..
                    },
                    ..
                }
            ));
        });
}

#[test]
fn the_agent_answering_rings_the_number_once_and_a_leg_gone_fails_the_call_saying_why() {
    let far_rung = [
        call(CallEvent::OutboundCallDialed {
            call: "o".into(),
            agent: a("1001"),
        }),
        Event::Act(
            Step::After,
            Pbx::RingFar {
                leg: "far".into(),
                endpoint: Endpoint::Number("5550100".into()),
                caller: Party {
                    number: "1001".into(),
                    name: String::new(),
                },
                ring_timeout_s: 45,
            },
        ),
    ];
    let after = given::<CallCore>(dialling())
        .when(answered_leg("mine"))
        .then(far_rung);
    // A repeated report finds the number dialled already.
    Scenario::<CallCore>::from_state(after)
        .when(answered_leg("mine"))
        .then_nothing();
    let mut dialled = dialling();
    dialled.push(rec(CallEvent::OutboundCallDialed {
        call: "o".into(),
        agent: a("1001"),
    }));
    // The agent declines their own phone's ring; the number busy; the agent hangs up while
    // the number rings.
    let fails = |reason| {
        vec![call(CallEvent::OutboundCallFailed {
            call: "o".into(),
            agent: a("1001"),
            reason,
        })]
    };
    let gone_as = |channel: &str, cause| {
        ask(What::LegGone {
            channel: channel.into(),
            cause,
        })
    };
    for (given_events, channel, cause, reason) in [
        (
            dialling(),
            "mine",
            HangupCause::Rejected,
            OutboundFailure::AgentDeclined,
        ),
        (
            dialled.clone(),
            "far",
            HangupCause::Busy,
            OutboundFailure::Busy,
        ),
        (
            dialled.clone(),
            "mine",
            HangupCause::Normal,
            OutboundFailure::Cancelled,
        ),
    ] {
        given::<CallCore>(given_events)
            .when(gone_as(channel, cause))
            .then_check(|out| {
                assert_eq!(out[..1], fails(reason)[..], "{channel} {cause:?}");
                assert!(matches!(
                    out[1],
                    Event::Act(Step::After, Pbx::HangUp { .. })
                ));
            });
    }
    // The far leg before it was placed: nothing.
    given::<CallCore>(dialling())
        .when(gone_as("far", HangupCause::Normal))
        .then_nothing();
}

fn monitor(agent: &str, device: &str) -> Ask {
    ask(What::Monitor {
        cmd: MonitorCall {
            agent: a(agent),
            device: dev(device),
            mode: MonitorMode::Whisper,
            supervisor: "sup".into(),
            supervisor_name: "Sue".into(),
        },
        monitor: "m".into(),
        leg: "sue".into(),
    })
}

#[test]
fn monitoring_starts_on_a_connected_call_only_and_the_supervisor_joins_on_the_answer() {
    given::<CallCore>(answered())
        .when(monitor("1002", "1009"))
        .then_refused(Refusal::MonitorNotConnected { agent: a("1002") });
    given::<CallCore>(connected())
        .when(monitor("1002", "1002"))
        .then_refused(Refusal::Invalid {
            code: "own_device",
            field: "device",
            message: "Extension 1002 is the agent's own device".into(),
        });
    let on_it = match &monitored(false).last() {
        Some(Event::Call {
            event:
                CallEvent::MonitorJoined { supervisor, .. }
                | CallEvent::MonitorStarted { supervisor, .. },
            ..
        }) => supervisor.clone(),
        other => panic!("{other:?}"),
    };
    given::<CallCore>(monitored(false))
        .when(monitor("1002", "1009"))
        .then_refused(Refusal::MonitorInProgress {
            agent: a("1002"),
            supervisor: on_it,
        });
    let ringing = given::<CallCore>(connected())
        .when(monitor("1002", "1009"))
        .then([
            Event::Act(
                Step::Before,
                Pbx::CheckOnline {
                    device: dev("1009"),
                    field: "device",
                },
            ),
            call(CallEvent::MonitorStarted {
                call: "c".into(),
                monitor: "m".into(),
                agent: a("1002"),
                supervisor: "sup".into(),
                supervisor_name: "Sue".into(),
                device: dev("1009"),
                leg: "sue".into(),
                mode: MonitorMode::Whisper,
            }),
            Event::Act(
                Step::After,
                Pbx::RingMonitor {
                    monitor: "m".into(),
                    leg: "sue".into(),
                    device: dev("1009"),
                    caller: Party {
                        number: "5551234".into(),
                        name: "Jane".into(),
                    },
                },
            ),
        ]);
    // The supervisor's phone answers: joined once, in their mode (a whisper to the agent).
    let joined = Scenario::<CallCore>::from_state(ringing)
        .when(answered_leg("sue"))
        .then_check(|out| {
            assert!(matches!(
                &out[0],
                Event::Call {
                    event: CallEvent::MonitorJoined { .. },
                    ..
                }
            ));
            assert_eq!(
                out[1..],
                [
                    Event::Act(
                        Step::After,
                        Pbx::Answer {
                            channel: "sue".into()
                        }
                    ),
                    Event::Act(
                        Step::After,
                        Pbx::JoinBridge {
                            channel: "sue".into(),
                            mode: BridgeMode::Whisper { to: "bob".into() },
                            bridge: "c".into(),
                        }
                    ),
                ]
            );
        });
    Scenario::<CallCore>::from_state(joined)
        .when(answered_leg("sue"))
        .then_nothing();
    // Its ring failing ends the monitoring as unavailable.
    let m = CallCore::fold(&connected_then_monitor());
    let l = &m.calls["c"];
    assert!(matches!(
        &monitor_fails(at(9), "c", l, "m")[..],
        [Event::Call {
            event: CallEvent::MonitorEnded {
                reason: MonitorEndReason::Unavailable,
                ..
            },
            ..
        }]
    ));
    assert!(monitor_fails(at(9), "c", l, "another").is_empty());
}

fn connected_then_monitor() -> Vec<Event> {
    let mut v = connected();
    v.push(rec(CallEvent::MonitorStarted {
        call: "c".into(),
        monitor: "m".into(),
        agent: a("1002"),
        supervisor: "sup".into(),
        supervisor_name: "Sue".into(),
        device: dev("1009"),
        leg: "sue".into(),
        mode: MonitorMode::Whisper,
    }));
    v
}
