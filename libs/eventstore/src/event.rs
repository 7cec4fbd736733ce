use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::StreamName;

/// Who and what caused an event. Carried with every event; never holds secrets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    pub tenant: String,
    /// Ties together everything caused by one outside request.
    pub correlation_id: Uuid,
    /// The event or command that directly caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// Who acted: `agent:1001`, `user:alice`, `system:auth`, `operator`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// The W3C trace context of the work that appended it (when traces are exported): filled
    /// by the store from the appending span, so one trace follows the event to its readers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl Metadata {
    /// Metadata for a new flow of work started by `actor`.
    pub fn new(tenant: &str, actor: impl Into<String>) -> Self {
        Self {
            tenant: tenant.into(),
            correlation_id: Uuid::now_v7(),
            causation_id: None,
            actor: Some(actor.into()),
            traceparent: None,
        }
    }

    /// Metadata for work caused by `cause` (same correlation, causation = the cause's id).
    pub fn caused_by(cause: &RecordedEvent, actor: impl Into<String>) -> Self {
        Self {
            tenant: cause.metadata.tenant.clone(),
            correlation_id: cause.metadata.correlation_id,
            causation_id: Some(cause.event_id),
            actor: Some(actor.into()),
            traceparent: None,
        }
    }
}

/// An event to append.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: i32,
    pub data: Value,
    pub metadata: Metadata,
}

impl NewEvent {
    /// A new event with a fresh UUIDv7 id.
    pub fn new(
        event_type: impl Into<String>,
        schema_version: i32,
        data: Value,
        metadata: Metadata,
    ) -> Self {
        Self {
            event_id: Uuid::now_v7(),
            event_type: event_type.into(),
            schema_version,
            data,
            metadata,
        }
    }
}

/// The version a writer expects a stream to be at. Versions count events: an empty stream is at 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpectedVersion {
    Any,
    NoStream,
    Exact(i64),
}

impl ExpectedVersion {
    pub(crate) fn as_sql(self) -> Option<i64> {
        match self {
            ExpectedVersion::Any => None,
            ExpectedVersion::NoStream => Some(0),
            ExpectedVersion::Exact(v) => Some(v),
        }
    }
}

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendResult {
    /// The stream's version after the append (the version of its last event).
    pub stream_version: i64,
    /// Global positions of the appended events, in order.
    pub positions: Vec<i64>,
    /// True when every event id was already stored: nothing was written this time.
    pub duplicate: bool,
}

/// A reader's position in the global order `(xid, position)`. Start from [`Checkpoint::START`].
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Checkpoint {
    pub xid: i64,
    pub position: i64,
}

impl Checkpoint {
    pub const START: Checkpoint = Checkpoint {
        xid: 0,
        position: 0,
    };
}

impl std::fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.xid, self.position)
    }
}

impl std::str::FromStr for Checkpoint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (x, p) = s
            .split_once('.')
            .ok_or_else(|| format!("checkpoint {s:?} is not <xid>.<position>"))?;
        Ok(Checkpoint {
            xid: x
                .parse()
                .map_err(|_| format!("checkpoint {s:?}: xid is not a number"))?,
            position: p
                .parse()
                .map_err(|_| format!("checkpoint {s:?}: position is not a number"))?,
        })
    }
}

/// An event as stored (after upcasting to the newest schema version known to the reader).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent {
    pub position: i64,
    pub xid: i64,
    pub event_id: Uuid,
    pub stream: StreamName,
    pub version: i64,
    pub event_type: String,
    pub schema_version: i32,
    pub data: Value,
    pub metadata: Metadata,
    pub recorded_at: DateTime<Utc>,
}

impl RecordedEvent {
    /// The checkpoint just after this event.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            xid: self.xid,
            position: self.position,
        }
    }

    pub fn tenant(&self) -> &str {
        self.stream.tenant()
    }

    /// Deserializes the data into a typed event.
    pub fn data_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(&self.data)
    }
}
