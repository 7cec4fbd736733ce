//! Queues and their members (the queue-router service).

use serde::{Deserialize, Serialize};

use crate::domain::{AgentNumber, QueueNumber};
use crate::session::AssignedQueue;
use crate::EventFamily;
use cc_core::Command;

/// Events of a queue. Stream: `queue-<queue number>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type")]
pub enum QueueEvent {
    QueueCreated {
        queue: QueueNumber,
        name: String,
    },
    /// The agent is assigned to the queue; lower penalty = asked first by linear routing.
    AgentAssignedToQueue {
        queue: QueueNumber,
        agent: AgentNumber,
        penalty: i32,
    },
    AgentUnassignedFromQueue {
        queue: QueueNumber,
        agent: AgentNumber,
    },
    QueueConfigured {
        queue: QueueNumber,
        settings: crate::call::QueueSettings,
    },
}
impl EventFamily for QueueEvent {
    const CATEGORY: &'static str = "queue";
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct QueueMember {
    pub agent: AgentNumber,
    pub penalty: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct QueueInfo {
    pub queue: QueueNumber,
    pub name: String,
    pub members: Vec<QueueMember>,
    /// The queue's routing settings.
    #[serde(default)]
    pub settings: crate::call::QueueSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CreateQueue {
    #[schemars(example = &"502")]
    pub queue: QueueNumber,
    /// 1 to 80 characters (trimmed), no control characters.
    #[schemars(pattern(crate::domain::NAME_80), example = &"Billing")]
    pub name: String,
}
impl Command for CreateQueue {
    const SERVICE: &'static str = "queue-router";
    const NAME: &'static str = "CreateQueue";
    type Reply = QueueInfo;
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AssignAgent {
    pub queue: QueueNumber,
    pub agent: AgentNumber,
    #[serde(default)]
    pub penalty: i32,
}
impl Command for AssignAgent {
    const SERVICE: &'static str = "queue-router";
    const NAME: &'static str = "AssignAgent";
    type Reply = QueueInfo;
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct UnassignAgent {
    pub queue: QueueNumber,
    pub agent: AgentNumber,
}
impl Command for UnassignAgent {
    const SERVICE: &'static str = "queue-router";
    const NAME: &'static str = "UnassignAgent";
    type Reply = QueueInfo;
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ListQueues {}
impl Command for ListQueues {
    const SERVICE: &'static str = "queue-router";
    const NAME: &'static str = "ListQueues";
    type Reply = Vec<QueueInfo>;
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct GetAssignments {
    pub agent: AgentNumber,
}
impl Command for GetAssignments {
    const SERVICE: &'static str = "queue-router";
    const NAME: &'static str = "GetAssignments";
    type Reply = Vec<AssignedQueue>;
}
