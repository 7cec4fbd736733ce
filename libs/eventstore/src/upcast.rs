use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use crate::RecordedEvent;

type UpcastFn = Arc<dyn Fn(Value) -> Value + Send + Sync>;

/// Upgrades stored events of an old schema version to the current one on read.
///
/// Each registered function upgrades one type from version `n` to `n + 1`; they are chained, so
/// an event stored at version 1 is read as version 3 when 1->2 and 2->3 are registered.
#[derive(Clone, Default)]
pub struct Upcasters {
    steps: HashMap<(String, i32), UpcastFn>,
}

impl Upcasters {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the upgrade of `event_type` from `from_version` to `from_version + 1`.
    pub fn register(
        mut self,
        event_type: &str,
        from_version: i32,
        f: impl Fn(Value) -> Value + Send + Sync + 'static,
    ) -> Self {
        self.steps
            .insert((event_type.to_string(), from_version), Arc::new(f));
        self
    }

    pub(crate) fn apply(&self, event: &mut RecordedEvent) {
        if self.steps.is_empty() {
            return;
        }
        while let Some(step) = self
            .steps
            .get(&(event.event_type.clone(), event.schema_version))
        {
            event.data = step(std::mem::take(&mut event.data));
            event.schema_version += 1;
        }
    }
}
