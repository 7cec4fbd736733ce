//! The rules: each input's decision, over the model's state (see [`super`]).

use std::collections::HashSet;

use super::*;

/// A decision being made: its output, in order.
#[derive(Default)]
pub(super) struct Decided {
    pub(super) out: Vec<Event>,
}

impl Decided {
    fn record(&mut self, tenant: &str, event: CallEvent, at: DateTime<Utc>) {
        self.out.push(Event::Call {
            tenant: tenant.to_string(),
            event,
            at,
        });
    }

    fn act(&mut self, action: Action) {
        self.out.push(Event::Act(action));
    }

    fn hang_up(&mut self, tenant: &str, call: &str, channel: &str) {
        self.act(Action::HangUp {
            tenant: tenant.to_string(),
            call: call.to_string(),
            channel: channel.to_string(),
            cause: HangupCause::Normal,
        });
    }

    /// The phone could not be rung: the offer is withdrawn, unless it ended meanwhile
    /// (answered, rejected, the caller gone).
    pub(super) fn not_rung(
        &mut self,
        acd: &Acd,
        tenant: &str,
        call: &str,
        agent: &AgentNumber,
        offer: &str,
        now: DateTime<Utc>,
    ) {
        if acd.offer_open(call, offer) {
            let w = CallEvent::OfferWithdrawn {
                call: call.to_string(),
                agent: agent.clone(),
                offer: offer.to_string(),
                reason: WithdrawReason::DeviceUnavailable,
            };
            self.record(tenant, w, now);
        }
    }

    /// The offers ringing agents who can no longer take them, withdrawn and hung up.
    pub(super) fn withdraw_unavailable(
        &mut self,
        acd: &Acd,
        only: &Option<(String, AgentNumber)>,
        now: DateTime<Utc>,
    ) {
        let only = only.as_ref().map(|(t, a)| (t.as_str(), a));
        for (tenant, call, agent, offer, reason) in acd.offers_to_withdraw(only) {
            let w = CallEvent::OfferWithdrawn {
                call: call.clone(),
                agent,
                offer: offer.clone(),
                reason,
            };
            self.record(&tenant, w, now);
            self.hang_up(&tenant, &call, &offer);
        }
    }

    /// The agent's wrap-up after their part of a call, for the time of the call's queue.
    pub(super) fn start_wrap_up(
        &mut self,
        acd: &Acd,
        tenant: &str,
        call: &str,
        agent: &AgentNumber,
        now: DateTime<Utc>,
    ) {
        // The agent's record names the call they handled, with its queue.
        let queue = acd
            .agents
            .get(&(tenant.to_string(), agent.clone()))
            .and_then(|a| a.last_call.as_ref())
            .filter(|(c, _)| c == call)
            .map(|(_, q)| q);
        if let Some(queue) = queue {
            let seconds = acd.settings(tenant, queue).wrap_up_s;
            let e = CallEvent::WrapUpStarted {
                call: call.to_string(),
                agent: agent.clone(),
                seconds,
            };
            self.record(tenant, e, now);
        }
    }

    pub(super) fn channel(&mut self, acd: &Acd, fact: &ChannelEvent, now: DateTime<Utc>, ids: Ids) {
        match fact {
            ChannelEvent::ChannelCreated {
                tenant,
                channel,
                direction: Direction::Inbound,
                caller,
                dialed: Some(dialed),
                ..
            } => self.arrival(acd, tenant, channel, caller, dialed, now, ids),
            ChannelEvent::ChannelAnswered {
                tenant, channel, ..
            } => self.answered(acd, tenant, channel, now),
            ChannelEvent::ChannelHungUp {
                tenant,
                channel,
                cause,
                ..
            } => self.hung_up(acd, tenant, channel, *cause, now),
            _ => {}
        }
    }

    /// A caller dialled a queue number.
    #[allow(clippy::too_many_arguments)]
    fn arrival(
        &mut self,
        acd: &Acd,
        tenant: &str,
        channel: &str,
        caller: &Party,
        dialed: &str,
        now: DateTime<Utc>,
        ids: Ids,
    ) {
        let Some(queue) = acd.has_queue(tenant, dialed) else {
            return;
        };
        if acd.channels.contains_key(channel) || acd.caller_seen(channel) {
            return; // a redelivery
        }
        let call = ids.nth(0).simple().to_string();
        // The PBX's text as it can be recorded (no control characters, bounded lengths).
        let entered = CallEvent::CallEnteredQueue {
            call: call.clone(),
            queue: queue.clone(),
            caller: caller.cleaned(),
            channel: channel.to_string(),
            priority: 0,
        };
        self.record(tenant, entered, now);
        if acd.settings(tenant, &queue).leave_when_no_agents
            && !acd.anyone_logged_in(tenant, &queue)
        {
            let left = CallEvent::CallLeftQueue {
                call: call.clone(),
                queue,
                reason: LeaveReason::NoAgents,
                wait_ms: 0,
            };
            self.record(tenant, left, now);
            self.hang_up(tenant, &call, channel);
        }
    }

    /// An offer's leg answered: the first answer wins.
    fn answered(&mut self, acd: &Acd, tenant: &str, channel: &str, now: DateTime<Utc>) {
        let Some(call) = acd.offers.get(channel) else {
            return;
        };
        let Some(c) = acd.calls.get(call).filter(|c| c.tenant == tenant) else {
            return;
        };
        let Some(offer) = c.offers.iter().find(|o| o.offer == channel) else {
            return;
        };
        // The agent can no longer take it (the router withdraws such offers as soon as it
        // knows; this answer came first): the caller is never connected to them, and the call
        // goes on to the next agent.
        if let Some(reason) = acd.unavailable(tenant, &offer.agent) {
            let w = CallEvent::OfferWithdrawn {
                call: call.clone(),
                agent: offer.agent.clone(),
                offer: channel.to_string(),
                reason,
            };
            self.record(tenant, w, now);
            self.hang_up(tenant, call, channel);
            return;
        }
        if c.answered.is_some() || c.done {
            // A second answer: the first one won.
            let w = CallEvent::OfferWithdrawn {
                call: call.clone(),
                agent: offer.agent.clone(),
                offer: channel.to_string(),
                reason: WithdrawReason::AnsweredElsewhere,
            };
            self.record(tenant, w, now);
            self.hang_up(tenant, call, channel);
            return;
        }
        let others: Vec<_> = c.offers.iter().filter(|o| o.offer != channel).collect();
        for o in &others {
            let w = CallEvent::OfferWithdrawn {
                call: call.clone(),
                agent: o.agent.clone(),
                offer: o.offer.clone(),
                reason: WithdrawReason::AnsweredElsewhere,
            };
            self.record(tenant, w, now);
        }
        let answered = CallEvent::CallAnswered {
            call: call.clone(),
            queue: c.queue.clone(),
            agent: offer.agent.clone(),
            offer: channel.to_string(),
            wait_ms: (now - c.entered_at).num_milliseconds(),
        };
        self.record(tenant, answered, now);
        for o in others {
            self.hang_up(tenant, call, &o.offer);
        }
    }

    /// A channel hung up: an offer's leg at the phone, or a caller.
    fn hung_up(
        &mut self,
        acd: &Acd,
        tenant: &str,
        channel: &str,
        cause: HangupCause,
        now: DateTime<Utc>,
    ) {
        if acd.legs_up.contains_key(channel) {
            self.out.push(Event::Noted(Note::LegGone {
                channel: channel.to_string(),
            }));
        }
        if let Some(call) = acd.offers.get(channel) {
            let Some(c) = acd.calls.get(call).filter(|c| c.tenant == tenant) else {
                return;
            };
            let Some(o) = c.offers.iter().find(|o| o.offer == channel) else {
                return;
            };
            let (call, agent, offer) = (call.clone(), o.agent.clone(), channel.to_string());
            if cause == HangupCause::NoAnswer {
                self.record(tenant, CallEvent::OfferTimedOut { call, agent, offer }, now);
                self.auto_pause(acd, tenant, &c.queue, &o.agent);
            } else {
                self.record(tenant, CallEvent::OfferRejected { call, agent, offer }, now);
            }
        } else if let Some(call) = acd.channels.get(channel) {
            let Some(c) = acd.calls.get(call).filter(|c| c.tenant == tenant) else {
                return;
            };
            if c.answered.is_some() || c.done {
                return; // call-control's from the answer on
            }
            self.withdraw_all(acd, call, WithdrawReason::CallerGone, now);
            let abandoned = CallEvent::CallAbandoned {
                call: call.clone(),
                queue: c.queue.clone(),
                wait_ms: (now - c.entered_at).num_milliseconds(),
                position: acd.position(call),
            };
            self.record(tenant, abandoned, now);
            for o in &c.offers {
                self.hang_up(tenant, call, &o.offer);
            }
        }
    }

    /// Every offer of the call withdrawn (the caller is gone, or leaves the queue).
    fn withdraw_all(&mut self, acd: &Acd, call: &str, reason: WithdrawReason, now: DateTime<Utc>) {
        let Some(c) = acd.calls.get(call) else { return };
        for o in &c.offers {
            let w = CallEvent::OfferWithdrawn {
                call: call.to_string(),
                agent: o.agent.clone(),
                offer: o.offer.clone(),
                reason,
            };
            self.record(&c.tenant, w, now);
        }
    }

    /// An agent who missed the queue's limit of offers in a row with this one is paused (when
    /// the queue says so).
    fn auto_pause(&mut self, acd: &Acd, tenant: &str, queue: &QueueNumber, agent: &AgentNumber) {
        let limit = acd.settings(tenant, queue).auto_pause_after;
        let before = acd
            .agents
            .get(&(tenant.to_string(), agent.clone()))
            .map_or(0, |a| a.missed_in_row);
        let missed = before + 1;
        if limit > 0 && missed >= limit {
            self.act(Action::PauseAgent {
                tenant: tenant.to_string(),
                agent: agent.clone(),
                reason: format!("Missed {missed} calls"),
            });
        }
    }

    pub(super) fn dispatch(&mut self, acd: &Acd, now: DateTime<Utc>, ids: Ids) {
        let Some(plan) = acd.plan_dispatch(now) else {
            return;
        };
        self.out.push(Event::Noted(Note::Dispatched {
            recheck_at: plan.recheck_at,
            rng: plan.rng,
        }));
        let mut n = 0;
        for d in plan.offers {
            let Decision::Offer { call, agents } = d else {
                continue;
            };
            let Some(c) = acd.calls.get(&call) else {
                continue;
            };
            let ring_timeout_s = acd.settings(&c.tenant, &c.queue).ring_timeout_s;
            let mut rings = vec![];
            for (agent, device) in agents {
                let offer = format!("{OFFER_PREFIX}{}", ids.nth(n).simple());
                n += 1;
                let e = CallEvent::CallOffered {
                    call: call.clone(),
                    queue: c.queue.clone(),
                    agent: agent.clone(),
                    device: device.clone(),
                    offer: offer.clone(),
                    ring_timeout_s: Some(ring_timeout_s),
                };
                self.record(&c.tenant, e, now);
                rings.push(Action::Ring {
                    tenant: c.tenant.clone(),
                    call: call.clone(),
                    offer,
                    agent,
                    device,
                    caller: c.caller.clone(),
                });
            }
            for r in rings {
                self.act(r);
            }
        }
    }

    pub(super) fn due(&mut self, acd: &Acd, now: DateTime<Utc>) {
        let (decisions, wakes) = acd.due_at(now);
        for (at, (tenant, agent)) in wakes {
            self.out
                .push(Event::Noted(Note::RejectDelayOver { tenant, agent, at }));
        }
        // Calls that leave the queue in this decision: their offers' timeouts are moot.
        let mut left: HashSet<String> = HashSet::new();
        for d in decisions {
            match d {
                Decision::OfferTimedOut { call, agent, offer } => {
                    if left.contains(&call) {
                        continue;
                    }
                    let Some(tenant) = acd.calls.get(&call).map(|c| c.tenant.clone()) else {
                        continue;
                    };
                    // The PBX ends the ring, unless the phone answered first: only then is the
                    // offer missed. Meanwhile the timer is moved on.
                    let until = now + Duration::milliseconds(RING_END_WAIT_MS);
                    self.out.push(Event::Noted(Note::RingTimeoutPostponed {
                        call: call.clone(),
                        offer: offer.clone(),
                        until,
                    }));
                    self.act(Action::CancelRing {
                        tenant,
                        call,
                        agent,
                        offer,
                    });
                }
                Decision::MaxWait { call } => {
                    self.leave(acd, &call, LeaveReason::MaxWait, now);
                    left.insert(call);
                }
                Decision::NoAgents { call } => {
                    self.leave(acd, &call, LeaveReason::NoAgents, now);
                    left.insert(call);
                }
                Decision::WrapUpOver {
                    call,
                    tenant,
                    agent,
                } => {
                    let e = CallEvent::WrapUpEnded {
                        call,
                        agent,
                        early: false,
                    };
                    self.record(&tenant, e, now);
                }
                Decision::Offer { .. } => {}
            }
        }
    }

    /// The caller leaves the queue (waited too long, or nobody is logged into it): the offers
    /// are withdrawn and their legs hung up, and so is the caller.
    fn leave(&mut self, acd: &Acd, call: &str, reason: LeaveReason, now: DateTime<Utc>) {
        let Some(c) = acd.calls.get(call) else {
            return;
        };
        self.withdraw_all(acd, call, WithdrawReason::CallerGone, now);
        let e = CallEvent::CallLeftQueue {
            call: call.to_string(),
            queue: c.queue.clone(),
            reason,
            wait_ms: (now - c.entered_at).num_milliseconds(),
        };
        self.record(&c.tenant, e, now);
        for o in &c.offers {
            self.hang_up(&c.tenant, call, &o.offer);
        }
        self.hang_up(&c.tenant, call, &c.channel);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn ring_ended(
        &mut self,
        acd: &Acd,
        tenant: &str,
        call: &str,
        agent: &AgentNumber,
        offer: &str,
        how: RingEnded,
        now: DateTime<Utc>,
    ) {
        // Already decided by the PBX's report of the leg (answered, rejected, rung out).
        if !acd.offer_open(call, offer) {
            return;
        }
        let (call, agent, offer) = (call.to_string(), agent.clone(), offer.to_string());
        match how {
            RingEnded::Cancelled => {
                let queue = acd.calls.get(&call).map(|c| c.queue.clone());
                let e = CallEvent::OfferTimedOut {
                    call,
                    agent: agent.clone(),
                    offer,
                };
                self.record(tenant, e, now);
                if let Some(queue) = queue {
                    self.auto_pause(acd, tenant, &queue, &agent);
                }
            }
            // The answer's report comes and decides; the timer asks again meanwhile.
            RingEnded::Answered => {}
            RingEnded::Gone => {
                let w = CallEvent::OfferWithdrawn {
                    call,
                    agent,
                    offer,
                    reason: WithdrawReason::DeviceUnavailable,
                };
                self.record(tenant, w, now);
            }
        }
    }
}
