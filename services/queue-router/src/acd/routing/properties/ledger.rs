//! The recorded call events folded as a projection would, independently of the model, and
//! the invariants checked on each event and between steps.

use std::collections::{BTreeMap, BTreeSet};

use super::world::World;
use super::*;

/// A call as the recorded call events tell it.
#[derive(Debug, Clone)]
pub(super) struct CallRecord {
    pub(super) queue: QueueNumber,
    pub(super) channel: String,
    pub(super) answered_by: Option<AgentNumber>,
    pub(super) ends: u32,
}

/// The recorded call events, folded independently of the model (as a projection would).
#[derive(Debug, Default)]
pub(super) struct Ledger {
    pub(super) calls: BTreeMap<String, CallRecord>,
    /// offer -> (call, agent)
    pub(super) open_offers: BTreeMap<String, (String, AgentNumber)>,
    pub(super) ended_offers: BTreeSet<String>,
    pub(super) connected: BTreeMap<AgentNumber, String>,
    pub(super) wrap_up: BTreeMap<AgentNumber, String>,
    pub(super) reject_until: BTreeMap<AgentNumber, DateTime<Utc>>,
    pub(super) completed: BTreeMap<AgentNumber, u32>,
    pub(super) missed: BTreeMap<AgentNumber, u32>,
    pub(super) rejected: BTreeMap<AgentNumber, u32>,
}

impl World {
    /// Takes a recorded call event into the ledger, checking it against what was recorded
    /// before and what the world knows.
    pub(super) fn account(&mut self, e: &CallEvent, at: DateTime<Utc>) -> Check {
        let l = &mut self.ledger;
        match e {
            CallEvent::CallEnteredQueue {
                call,
                queue,
                channel,
                ..
            } => {
                ensure!(!l.calls.contains_key(call), "call {call} entered twice");
                ensure!(
                    !l.calls.values().any(|c| c.channel == *channel),
                    "caller {channel} entered twice"
                );
                l.calls.insert(
                    call.clone(),
                    CallRecord {
                        queue: queue.clone(),
                        channel: channel.clone(),
                        answered_by: None,
                        ends: 0,
                    },
                );
            }
            CallEvent::CallOffered {
                call,
                queue,
                agent: a,
                offer,
                ..
            } => {
                let c = l
                    .calls
                    .get(call)
                    .ok_or(format!("offer of unknown {call}"))?;
                ensure!(
                    c.ends == 0 && c.answered_by.is_none(),
                    "offer of {call}, answered or ended"
                );
                ensure!(*queue == c.queue, "offer in another queue");
                let s = &self.sessions[a];
                ensure!(s.logged_in, "offer to {a}, logged out");
                ensure!(!s.paused, "offer to {a}, paused");
                ensure!(s.online, "offer to {a}, device offline");
                ensure!(
                    s.queues.contains(queue),
                    "offer to {a}, not in queue {queue}"
                );
                let qi = QUEUES.iter().position(|n| *n == queue.as_str()).unwrap();
                ensure!(
                    ASSIGNED[qi].iter().any(|&i| agent(i) == *a),
                    "offer to {a}, not assigned to {queue}"
                );
                ensure!(
                    !l.open_offers.values().any(|(_, o)| o == a),
                    "offer to {a}, ringing already"
                );
                ensure!(!l.connected.contains_key(a), "offer to {a}, on a call");
                ensure!(!l.wrap_up.contains_key(a), "offer to {a}, in wrap-up");
                ensure!(
                    l.reject_until.get(a).is_none_or(|u| *u <= at),
                    "offer to {a}, in a reject delay"
                );
                ensure!(
                    !l.open_offers.contains_key(offer) && !l.ended_offers.contains(offer),
                    "offer id {offer} reused"
                );
                l.open_offers
                    .insert(offer.clone(), (call.clone(), a.clone()));
            }
            CallEvent::OfferRejected {
                call,
                agent: a,
                offer,
            }
            | CallEvent::OfferTimedOut {
                call,
                agent: a,
                offer,
            }
            | CallEvent::OfferWithdrawn {
                call,
                agent: a,
                offer,
                ..
            } => {
                ensure!(
                    l.open_offers.remove(offer) == Some((call.clone(), a.clone())),
                    "{e:?}: the offer is not open (ended twice?)"
                );
                l.ended_offers.insert(offer.clone());
                match e {
                    CallEvent::OfferRejected { .. } => {
                        *l.rejected.entry(a.clone()).or_default() += 1;
                        let delay = self.settings[QUEUES
                            .iter()
                            .position(|n| *n == l.calls[call].queue.as_str())
                            .unwrap()]
                        .reject_delay_s;
                        l.reject_until
                            .insert(a.clone(), at + Duration::seconds(delay));
                    }
                    CallEvent::OfferTimedOut { .. } => *l.missed.entry(a.clone()).or_default() += 1,
                    _ => {}
                }
            }
            CallEvent::CallAnswered {
                call,
                agent: a,
                offer,
                ..
            } => {
                ensure!(
                    l.open_offers.remove(offer) == Some((call.clone(), a.clone())),
                    "{e:?}: the offer is not open"
                );
                l.ended_offers.insert(offer.clone());
                ensure!(
                    !l.open_offers.values().any(|(c, _)| c == call),
                    "{call} answered by {a} while other offers of it ring"
                );
                let c = l.calls.get_mut(call).unwrap();
                ensure!(c.answered_by.is_none(), "{call} answered twice");
                ensure!(c.ends == 0, "{call} answered after its end");
                ensure!(
                    self.sessions[a].logged_in,
                    "{a}, logged out, connected to {call}"
                );
                ensure!(!l.connected.contains_key(a), "{a} connected to two calls");
                c.answered_by = Some(a.clone());
                l.connected.insert(a.clone(), call.clone());
            }
            CallEvent::CallAbandoned { call, .. } | CallEvent::CallLeftQueue { call, .. } => {
                ensure!(
                    !l.open_offers.values().any(|(c, _)| c == call),
                    "{e:?} while offers of it ring"
                );
                let c = l.calls.get_mut(call).unwrap();
                ensure!(c.answered_by.is_none(), "{e:?}: the call was answered");
                ensure!(c.ends == 0, "{e:?}: the call ended already");
                c.ends += 1;
            }
            CallEvent::CallEnded { call, agent: a, .. } => {
                ensure!(
                    l.connected.remove(a).as_ref() == Some(call),
                    "{e:?}: not connected"
                );
                let c = l.calls.get_mut(call).unwrap();
                ensure!(c.ends == 0, "{e:?}: the call ended already");
                c.ends += 1;
                *l.completed.entry(a.clone()).or_default() += 1;
            }
            CallEvent::WrapUpStarted { call, agent: a, .. } => {
                ensure!(
                    l.calls.get(call).and_then(|c| c.answered_by.as_ref()) == Some(a),
                    "{e:?}: not the agent's call"
                );
                ensure!(
                    l.wrap_up.insert(a.clone(), call.clone()).is_none(),
                    "{e:?}: in a wrap-up already"
                );
            }
            CallEvent::WrapUpEnded { call, agent: a, .. } => {
                ensure!(
                    l.wrap_up.remove(a).as_ref() == Some(call),
                    "{e:?}: not in that wrap-up"
                );
            }
            other => return Err(format!("unexpected {other:?}")),
        }
        Ok(())
    }

    /// The invariants of the state between steps.
    pub(super) fn check_state(&self) -> Check {
        let l = &self.ledger;
        for (a, s) in &self.sessions {
            let ringing = l.open_offers.values().filter(|(_, o)| o == a).count();
            let connected = l.connected.get(a);
            ensure!(
                ringing + connected.iter().count() <= 1,
                "{a} has {ringing} offers and {connected:?}"
            );
            ensure!(
                s.logged_in || connected.is_none(),
                "{a}, logged out, is connected to {connected:?}"
            );
            let m = self.acd.agents.get(&(T.to_string(), a.clone()));
            ensure!(
                m.map_or(0, |m| m.ringing) == ringing,
                "{a}: the model has {:?} rings, the store {ringing}",
                m.map(|m| m.ringing)
            );
            ensure!(
                m.and_then(|m| m.on_call.as_ref()) == connected,
                "{a}: the model's call differs from the store's"
            );
            ensure!(
                m.and_then(|m| m.wrap_up.as_ref().map(|(c, _)| c)) == l.wrap_up.get(a),
                "{a}: the model's wrap-up differs from the store's"
            );
            // The counts: one per end, never more than the phones did.
            let missed = l.missed.get(a).copied().unwrap_or(0);
            let rejected = l.rejected.get(a).copied().unwrap_or(0);
            ensure!(
                missed <= self.rang_out.get(a).copied().unwrap_or(0),
                "{a}: {missed} missed, more than the rings that rang out"
            );
            ensure!(
                rejected <= self.declined.get(a).copied().unwrap_or(0),
                "{a}: {rejected} rejected, more than the phone declined"
            );
            let completed = l.completed.get(a).copied().unwrap_or(0) as usize;
            let ended_calls = l
                .calls
                .values()
                .filter(|c| c.answered_by.as_ref() == Some(a) && c.ends == 1)
                .count();
            ensure!(
                completed == ended_calls,
                "{a}: {completed} completed, {ended_calls} calls ended"
            );
        }
        for (id, c) in &l.calls {
            ensure!(c.ends <= 1, "{id} ended {} times", c.ends);
            if let (Some(a), 0) = (&c.answered_by, c.ends) {
                let agents = self
                    .acd
                    .agents
                    .values()
                    .filter(|m| m.on_call.as_ref() == Some(id))
                    .count();
                ensure!(
                    agents == 1 && l.connected.get(a) == Some(id),
                    "{id}, answered by {a}, has {agents} agents"
                );
            }
        }
        let offers: BTreeSet<&String> = self.acd.offers.keys().collect();
        let open: BTreeSet<&String> = l.open_offers.keys().collect();
        ensure!(
            offers == open,
            "the model's offers {offers:?} differ from the store's {open:?}"
        );
        Ok(())
    }
}
