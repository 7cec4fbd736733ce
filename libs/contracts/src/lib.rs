//! The contracts between the services and with other systems: event types (what happened),
//! commands (what is asked, with typed replies) and the views of the read models.
//!
//! Events are enums tagged by their type name. [`encode`] turns one into a
//! [`cc_eventstore::NewEvent`] (type name in the store's `event_type`, the fields as `data`);
//! [`decode`] reads it back.

pub mod auth;
pub mod call;
pub mod domain;
pub mod pbx;
pub mod queue;
pub mod schema;
pub mod session;
pub mod sip;
pub mod views;

use cc_eventstore::{Metadata, NewEvent, RecordedEvent};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// A family of events of one stream category, serialized with `#[serde(tag = "type")]`.
pub trait EventFamily: Serialize + DeserializeOwned {
    /// The stream category these events are appended to.
    const CATEGORY: &'static str;

    /// The schema version of each event type (1 until a type changes incompatibly).
    fn schema_version(_event_type: &str) -> i32 {
        1
    }
}

/// Turns an event into a storable [`NewEvent`].
pub fn encode<E: EventFamily>(event: &E, metadata: Metadata) -> NewEvent {
    let mut value = serde_json::to_value(event).expect("events serialize");
    let event_type = match value.as_object_mut().and_then(|o| o.remove("type")) {
        Some(Value::String(t)) => t,
        _ => panic!("events are tagged enums with a `type` field"),
    };
    NewEvent::new(event_type.clone(), E::schema_version(&event_type), value, metadata)
}

/// Reads a stored event of family `E` (`None` for another family's type).
pub fn decode<E: EventFamily>(event: &RecordedEvent) -> Option<E> {
    if event.stream.category() != E::CATEGORY {
        return None;
    }
    let mut data = event.data.clone();
    data.as_object_mut()?.insert("type".into(), Value::String(event.event_type.clone()));
    serde_json::from_value(data).ok()
}
