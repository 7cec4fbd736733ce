//! The one shape every domain core has: a decision from state and command to events (or a
//! typed refusal), and the state evolved by each event. Both are pure: no database, bus or
//! clock inside. Whatever a decision needs from the world (the time, a device's presence, a
//! queue's settings) comes in the command; whatever it concludes goes out in the events. The
//! adapters around a core load its state, ask it, and append what it decided with the version
//! it decided on (a conflict means: load again, decide again).
//!
//! `cc_testkit::decider` has the `given(events).when(command).then(events)` harness for it.

/// A domain core. Implemented by a marker type, so one state can serve more than one core.
pub trait Decider {
    /// What the core knows. [`Default`] is the state before the first event.
    type State: Default;
    /// What is asked of it, with the facts gathered for the decision.
    type Command;
    /// What it decides: the facts that are appended, and that [`Decider::evolve`] applies.
    type Event;
    /// Why a command is refused: each maps to one error code (`cc_contracts::errors`).
    type Refusal;

    /// Decide on `command` in `state`: the events that record the decision, possibly none (the
    /// command asks for what already is), or why it is refused.
    fn decide(
        state: &Self::State,
        command: &Self::Command,
    ) -> Result<Vec<Self::Event>, Self::Refusal>;

    /// `state` after `event`.
    fn evolve(state: &mut Self::State, event: &Self::Event);

    /// The state that `events` build, from the start.
    fn fold<'a>(events: impl IntoIterator<Item = &'a Self::Event>) -> Self::State
    where
        Self::Event: 'a,
    {
        let mut state = Self::State::default();
        for e in events {
            Self::evolve(&mut state, e);
        }
        state
    }
}
