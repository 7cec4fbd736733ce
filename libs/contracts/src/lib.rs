//! The contracts between the services and with other systems: event types (what happened),
//! commands (what is asked, with typed replies) and the views of the read models.
//!
//! Events are enums tagged by their type name. [`encode`] turns one into a
//! [`cc_core::NewEvent`] (type name in the store's `event_type`, the fields as `data`);
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
pub mod webhooks;

use std::sync::LazyLock;

use cc_core::{Metadata, NewEvent, RecordedEvent};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
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
    NewEvent::new(
        event_type.clone(),
        E::schema_version(&event_type),
        value,
        metadata,
    )
}

/// Reads a stored event of family `E`: `None` for an event of another family's category, and
/// `None` for one of this family's category that does not decode (a type this build does not
/// know, data that does not fit it). The latter is not silent: it is logged at error level with
/// its stream, position and type, and counted in [`undecodable_events`]
/// (`cc_events_undecodable_total{category, event_type}`). A consumer that parks what it cannot
/// apply uses [`decode_checked`], which says which of the two it was.
pub fn decode<E: EventFamily>(event: &RecordedEvent) -> Option<E> {
    match decode_checked(event) {
        Decoded::Event(e) => Some(e),
        Decoded::OtherFamily | Decoded::Undecodable(_) => None,
    }
}

/// What [`decode_checked`] made of a stored event.
#[derive(Debug)]
pub enum Decoded<E> {
    /// An event of the family.
    Event(E),
    /// An event of another family's category: not this reader's business.
    OtherFamily,
    /// An event of the family's category that does not decode (already logged and counted as
    /// [`decode`] does), with why: the consumer parks it (`cc_bus::parked`).
    Undecodable(String),
}

/// As [`decode`], telling an event of another category from one of the family's that does not
/// decode.
pub fn decode_checked<E: EventFamily>(event: &RecordedEvent) -> Decoded<E> {
    if event.stream.category() != E::CATEGORY {
        return Decoded::OtherFamily;
    }
    match try_decode::<E>(event) {
        Ok(e) => Decoded::Event(e),
        Err(error) => {
            tracing::error!(
                stream = %event.stream,
                position = event.position,
                version = event.version,
                event_type = %event.event_type,
                schema_version = event.schema_version,
                %error,
                "a stored event does not decode; skipped",
            );
            UNDECODABLE
                .get_or_create(&vec![
                    ("category".to_string(), E::CATEGORY.to_string()),
                    ("event_type".to_string(), event.event_type.clone()),
                ])
                .inc();
            Decoded::Undecodable(error.to_string())
        }
    }
}

/// As [`decode`] for an event of the family's category, saying why it does not decode (nothing
/// is logged or counted).
pub fn try_decode<E: EventFamily>(event: &RecordedEvent) -> Result<E, serde_json::Error> {
    let mut data = event.data.clone();
    match data.as_object_mut() {
        Some(o) => {
            o.insert("type".into(), Value::String(event.event_type.clone()));
        }
        None => {
            return Err(serde::de::Error::custom(format!(
                "the data of {} is not a JSON object",
                event.event_type
            )))
        }
    }
    serde_json::from_value(data)
}

/// Stored events that did not decode, by category and event type.
pub type UndecodableEvents = Family<Vec<(String, String)>, Counter>;

static UNDECODABLE: LazyLock<UndecodableEvents> = LazyLock::new(UndecodableEvents::default);

/// The process's count of stored events that [`decode`] could not read (one per reader that
/// tried), for its metrics registry (`events_undecodable`).
pub fn undecodable_events() -> UndecodableEvents {
    UNDECODABLE.clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::CallEvent;
    use crate::session::AgentSessionEvent;
    use cc_core::StreamName;

    fn stored(category: &str, event_type: &str, data: Value) -> RecordedEvent {
        RecordedEvent {
            position: 42,
            xid: 7,
            event_id: uuid::Uuid::now_v7(),
            stream: StreamName::new("acme", category, "c1").unwrap(),
            version: 3,
            event_type: event_type.into(),
            schema_version: 1,
            data,
            metadata: Metadata::new("acme", "test"),
            recorded_at: chrono::Utc::now(),
        }
    }

    /// The log lines written while it is the subscriber's writer.
    #[derive(Clone, Default)]
    struct Log(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl Log {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    impl std::io::Write for Log {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Log {
        type Writer = Log;
        fn make_writer(&'a self) -> Log {
            self.clone()
        }
    }

    fn counted(category: &str, event_type: &str) -> u64 {
        undecodable_events()
            .get_or_create(&vec![
                ("category".to_string(), category.to_string()),
                ("event_type".to_string(), event_type.to_string()),
            ])
            .get()
    }

    #[test]
    fn an_event_that_does_not_decode_is_counted_and_one_of_another_family_is_not() {
        let ok = stored(
            "call",
            "WrapUpEnded",
            serde_json::json!({"call": "c1", "agent": "1001", "early": false}),
        );
        assert!(matches!(
            decode::<CallEvent>(&ok),
            Some(CallEvent::WrapUpEnded { .. })
        ));
        assert_eq!(counted("call", "WrapUpEnded"), 0);

        // A type this build does not know, and a known type whose data does not fit.
        let unknown = stored("call", "CallTeleported", serde_json::json!({"call": "c1"}));
        let misfit = stored(
            "call",
            "WrapUpStarted",
            serde_json::json!({"call": "c1", "agent": "not a number", "seconds": 5}),
        );
        let log = Log::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(log.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            assert!(decode::<CallEvent>(&unknown).is_none())
        });
        let line = log.text();
        assert!(
            line.contains("ERROR") && line.contains("does not decode"),
            "{line}"
        );
        assert!(
            line.contains("stream=acme/call-c1")
                && line.contains("position=42")
                && line.contains("event_type=CallTeleported"),
            "{line}"
        );
        assert!(decode::<CallEvent>(&misfit).is_none());
        assert!(decode::<CallEvent>(&misfit).is_none());
        assert_eq!(counted("call", "CallTeleported"), 1);
        assert_eq!(
            counted("call", "WrapUpStarted"),
            2,
            "each read that fails counts"
        );
        assert!(try_decode::<CallEvent>(&misfit)
            .unwrap_err()
            .to_string()
            .contains("agent number"));

        // Another family's event is not this reader's business: not counted.
        assert!(decode::<AgentSessionEvent>(&unknown).is_none());
        assert_eq!(counted("agent", "CallTeleported"), 0);

        let mut text = prometheus_client::registry::Registry::default();
        text.register("events_undecodable", "", undecodable_events());
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &text).unwrap();
        assert!(
            out.contains(
                r#"events_undecodable_total{category="call",event_type="CallTeleported"} 1"#
            ),
            "{out}"
        );
    }

    /// Data shaped like the family's events (their field names, hostile values) or anything.
    fn event_data(keys: Vec<String>) -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            Just(serde_json::json!(1e300)),
            "[a-z0-9]{0,8}".prop_map(Value::from),
            any::<String>().prop_map(Value::from),
            Just(Value::from("a\u{0}b")),
        ];
        let key = proptest::sample::select(keys);
        leaf.prop_recursive(2, 16, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::vec((key.clone(), inner), 0..8)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    fn property_names(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                if let Some(Value::Object(p)) = o.get("properties") {
                    out.extend(p.keys().cloned());
                }
                o.values().for_each(|v| property_names(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| property_names(v, out)),
            _ => {}
        }
    }

    /// Every event decoder, fed random stored events: no panic; what decodes encodes back to
    /// the same event (nothing is lost or invented on the way).
    #[test]
    fn every_event_decoder_takes_any_stored_data_without_panicking() {
        use proptest::strategy::{Strategy, ValueTree};
        use proptest::test_runner::TestRunner;
        let schemas = crate::schema::events();
        let mut runner = TestRunner::deterministic();
        macro_rules! fuzz {
            ($($t:ty),*) => {$(
                let category = <$t as EventFamily>::CATEGORY;
                let mut keys = vec![];
                let mut types: Vec<String> = vec!["Nonsense".into(), "".into()];
                for s in schemas.iter().filter(|s| s.category == category) {
                    property_names(&s.schema, &mut keys);
                    types.push(s.event_type.clone());
                }
                keys.sort();
                keys.dedup();
                let strategy = (proptest::sample::select(types), event_data(keys));
                for _ in 0..300 {
                    let (event_type, data) = strategy.new_tree(&mut runner).unwrap().current();
                    let e = stored(category, &event_type, data);
                    if let Some(decoded) = decode::<$t>(&e) {
                        let again = encode(&decoded, Metadata::new("acme", "test"));
                        let back = decode::<$t>(&stored(category, &again.event_type, again.data))
                            .expect("an encoded event decodes");
                        assert_eq!(
                            serde_json::to_value(&back).unwrap(),
                            serde_json::to_value(&decoded).unwrap()
                        );
                    }
                }
            )*};
        }
        fuzz!(
            crate::auth::TenantEvent,
            crate::auth::AgentAccountEvent,
            crate::auth::UserEvent,
            crate::auth::PortalSessionEvent,
            AgentSessionEvent,
            crate::session::SettingsEvent,
            crate::queue::QueueEvent,
            CallEvent
        );
    }
}
