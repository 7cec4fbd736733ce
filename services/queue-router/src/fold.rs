//! What the router builds from the store, and its snapshots.
//!
//! [`Folded`] is the router's whole state that events build: the [`Acd`] model, the agents
//! whose wrap-up is still to start, the version of each agent's session stream and of each
//! call's stream. [`Folded::apply`] folds one stored event, with no IO; the router applies every
//! stored event through it and acts on what it reports ([`Applied`]), and the snapshot keeper
//! (`cc_eventstore::Snapshots::keep`) folds the same events on a copy of its own and saves it
//! every 50,000 events or 60 s, so that the next leader loads the newest snapshot and replays
//! only the events after it.
//!
//! A snapshot is a cache (`es_snapshots`, name `queue-router`): it holds what the store's
//! events up to its checkpoint fold to, nothing else, so it is right whoever wrote it and
//! whenever. One that is missing, of another [`FORMAT`] or does not decode (every struct of the
//! state refuses unknown fields and has no defaults: a build whose state has another shape
//! cannot read an older one) means a full replay.

use cc_contracts::call::CallEvent;
use cc_contracts::domain::AgentNumber;
use cc_contracts::queue::QueueEvent;
use cc_contracts::session::AgentSessionEvent;
use cc_contracts::{decode_checked, Decoded};
use cc_eventstore::RecordedEvent;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

use crate::acd::Acd;

/// The snapshots' name in `es_snapshots`.
pub const SNAPSHOT_NAME: &str = "queue-router";
/// The state's format. A build that changes what the state means (same shape, other
/// meaning) names a new one; a change of shape is caught by decoding.
pub const FORMAT: &str = "queue-router/1";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Folded {
    pub acd: Acd,
    /// Agents whose call ended but whose wrap-up was not started yet: (tenant, call, agent).
    /// Followed while the router catches up; live, it starts each wrap-up as the call ends.
    pub ended: HashSet<(String, String, AgentNumber)>,
    /// The version of each agent's session stream applied to the model: the router reads an
    /// agent's newest session events ahead of the store's order before connecting a caller
    /// to them, and skips those events when the store brings them.
    #[serde(with = "cc_core::pairs")]
    pub sessions: HashMap<(String, AgentNumber), i64>,
    /// The version of each call's stream the model stands on: its events from the store and
    /// the ones the router decided. Each append names it: when another writer (call-control,
    /// an agent's wrap-up command) appended to the call first, the append is a conflict, and
    /// the router rebuilds and decides again on what is stored. Calls are forgotten once over
    /// (see [`Folded::forget_version`]); an append to a call forgotten reads its version from
    /// the store.
    pub versions: HashMap<String, i64>,
}

/// What folding one event did, for the router to act on live.
pub enum Applied {
    Nothing,
    /// A session event new to the model.
    Session(AgentSessionEvent),
    Call(CallEvent),
    /// The event does not decode: the model skipped it (the router parks it).
    Undecodable(String),
}

impl Folded {
    /// Folds one stored event. `live`: the router decides on ended calls at once, so they are
    /// not kept in [`Folded::ended`].
    pub fn apply(&mut self, e: &RecordedEvent, live: bool) -> Applied {
        if e.stream.category() == "call" {
            // The map counts the router's own events when it decides them and another
            // writer's when they come: together, the stream's version once all are stored.
            match self.versions.get_mut(e.stream.id()) {
                Some(v) => *v += 1,
                None => {
                    self.versions.insert(e.stream.id().to_string(), e.version);
                }
            }
        }
        let tenant = e.tenant();
        match e.stream.category() {
            "agent" => match decode_checked::<AgentSessionEvent>(e) {
                Decoded::Event(s) => {
                    if self.apply_session(tenant, &s, e.version, e.recorded_at) {
                        Applied::Session(s)
                    } else {
                        Applied::Nothing
                    }
                }
                Decoded::Undecodable(why) => Applied::Undecodable(why),
                Decoded::OtherFamily => Applied::Nothing,
            },
            "queue" => match decode_checked::<QueueEvent>(e) {
                Decoded::Event(q) => {
                    self.acd.apply_queue(tenant, &q);
                    Applied::Nothing
                }
                Decoded::Undecodable(why) => Applied::Undecodable(why),
                Decoded::OtherFamily => Applied::Nothing,
            },
            "call" => match decode_checked::<CallEvent>(e) {
                Decoded::Event(c) => {
                    // The model's evolution by this event (`Routing::evolve`), without a copy.
                    self.acd.apply_call(tenant, &c, e.recorded_at);
                    self.forget_version(&c);
                    match &c {
                        CallEvent::CallEnded { call, agent, .. } if !live => {
                            self.ended
                                .insert((tenant.to_string(), call.clone(), agent.clone()));
                        }
                        CallEvent::WrapUpStarted { call, agent, .. } => {
                            self.ended
                                .remove(&(tenant.to_string(), call.clone(), agent.clone()));
                        }
                        _ => {}
                    }
                    Applied::Call(c)
                }
                Decoded::Undecodable(why) => Applied::Undecodable(why),
                Decoded::OtherFamily => Applied::Nothing,
            },
            _ => Applied::Nothing,
        }
    }

    /// Applies an agent's session event once (`version` in the agent's stream); false when it
    /// was applied already (read ahead).
    pub fn apply_session(
        &mut self,
        tenant: &str,
        s: &AgentSessionEvent,
        version: i64,
        at: DateTime<Utc>,
    ) -> bool {
        let seen = self
            .sessions
            .entry((tenant.to_string(), s.agent().clone()))
            .or_insert(0);
        if version <= *seen {
            return false;
        }
        *seen = version;
        self.acd.apply_session(tenant, s, at);
        true
    }

    /// Forgets the version of a call that `e` ends for the router (nothing of it is decided
    /// after it but by exception), so that the map holds the calls in progress only.
    pub fn forget_version(&mut self, e: &CallEvent) {
        if matches!(
            e,
            CallEvent::WrapUpEnded { .. }
                | CallEvent::CallAbandoned { .. }
                | CallEvent::CallLeftQueue { .. }
        ) && !self.acd.calls.contains_key(e.call())
        {
            self.versions.remove(e.call());
        }
    }
}
