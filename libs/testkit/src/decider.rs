//! The test harness of every domain core ([`cc_core::Decider`]):
//!
//! ```ignore
//! given::<SessionCore>([logged_in()]).when(pause("lunch")).then([paused("lunch")]);
//! given::<SessionCore>([]).when(pause("lunch")).then_refused(Refusal::NotLoggedIn);
//! ```
//!
//! `then` also checks that the events decided evolve the state without a panic and returns the
//! state after them, so a scenario can go on from there with [`Scenario::from_state`].

use std::fmt::Debug;

use cc_core::Decider;

/// A core's state, built from the events given.
pub struct Scenario<D: Decider> {
    state: D::State,
}

/// The state built by `events`, from the start.
pub fn given<D: Decider>(events: impl IntoIterator<Item = D::Event>) -> Scenario<D> {
    let mut state = D::State::default();
    for e in events {
        D::evolve(&mut state, &e);
    }
    Scenario { state }
}

impl<D: Decider> Scenario<D> {
    /// A scenario that starts from a state (for one that goes on from an earlier `then`).
    pub fn from_state(state: D::State) -> Self {
        Scenario { state }
    }

    /// More events, applied to the state so far.
    pub fn and(mut self, events: impl IntoIterator<Item = D::Event>) -> Self {
        for e in events {
            D::evolve(&mut self.state, &e);
        }
        self
    }

    /// The state so far.
    pub fn state(&self) -> &D::State {
        &self.state
    }

    /// The core decides on `command`.
    pub fn when(self, command: D::Command) -> Outcome<D>
    where
        D::Command: Debug,
    {
        let result = D::decide(&self.state, &command);
        Outcome {
            state: self.state,
            command: format!("{command:?}"),
            result,
        }
    }
}

/// What the core decided.
pub struct Outcome<D: Decider> {
    state: D::State,
    command: String,
    result: Result<Vec<D::Event>, D::Refusal>,
}

impl<D: Decider> Outcome<D>
where
    D::Event: Debug + PartialEq,
    D::Refusal: Debug + PartialEq,
{
    /// The command is decided with exactly these events, in this order. Returns the state after
    /// them.
    #[track_caller]
    pub fn then(self, expected: impl IntoIterator<Item = D::Event>) -> D::State {
        let expected: Vec<D::Event> = expected.into_iter().collect();
        match self.result {
            Ok(events) => {
                assert_eq!(
                    events, expected,
                    "when {}: the events decided differ from those expected",
                    self.command
                );
                let mut state = self.state;
                for e in &events {
                    D::evolve(&mut state, e);
                }
                state
            }
            Err(refusal) => panic!(
                "when {}: expected events {expected:?}, but the command was refused: {refusal:?}",
                self.command
            ),
        }
    }

    /// The command is accepted with no event: it asks for what already is.
    #[track_caller]
    pub fn then_nothing(self) -> D::State {
        self.then([])
    }

    /// The command is refused for this reason, and decides nothing.
    #[track_caller]
    pub fn then_refused(self, expected: D::Refusal) -> D::State {
        match self.result {
            Err(refusal) => {
                assert_eq!(refusal, expected, "when {}: refused for another reason", self.command);
                self.state
            }
            Ok(events) => panic!(
                "when {}: expected the refusal {expected:?}, but the command was decided with {events:?}",
                self.command
            ),
        }
    }

    /// The events decided satisfy `check` (for events with ids or times a test cannot know).
    /// Returns the state after them.
    #[track_caller]
    pub fn then_check(self, check: impl FnOnce(&[D::Event])) -> D::State {
        match self.result {
            Ok(events) => {
                check(&events);
                let mut state = self.state;
                for e in &events {
                    D::evolve(&mut state, e);
                }
                state
            }
            Err(refusal) => panic!(
                "when {}: expected events, but the command was refused: {refusal:?}",
                self.command
            ),
        }
    }
}
