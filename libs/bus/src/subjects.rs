/// Every NATS subject and JetStream stream name of the product. The prefix (default `cc`) lets
/// several installations or tests share one NATS server.
///
/// | what | subject |
/// |---|---|
/// | domain events (from the relay) | `<p>.events.<tenant>.<category>.<stream id>.<EventType>.<agent>.<queue>` |
/// | transfer events again, for their receiving agent | `<p>.target_events.<tenant>.call.<call id>.<EventType>.<target agent>.<queue>` |
/// | commands (request/reply) | `<p>.cmd.<service>.<tenant>.<CommandName>` |
/// | PBX events | `<p>.pbx.evt.<tenant>.<kind>.<id>.<EventType>` |
/// | PBX commands (service `pbx`) | `<p>.cmd.pbx.<tenant>.<CommandName>` |
/// | read-model view changes (core NATS) | `<p>.views.<tenant>.<kind>.<id>` |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
}

impl Default for Subjects {
    fn default() -> Self {
        Self::new("cc")
    }
}

impl Subjects {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The subject of one domain event:
    /// `<p>.events.<tenant>.<category>.<id>.<Type>.<agent>.<queue>`, where `agent` and `queue`
    /// are the event's `agent` and `queue` fields (`_` when it has none), so a subscriber can
    /// filter by tenant, category, stream, type, agent and queue with the subject alone. A type
    /// that cannot be a subject token (only a row written around the store's API could have
    /// one: a dot, a space, a wildcard) is `_` too, so such an event is still relayed.
    pub fn event(
        &self,
        tenant: &str,
        category: &str,
        stream_id: &str,
        event_type: &str,
        agent: Option<&str>,
        queue: Option<&str>,
    ) -> String {
        let token = |v: Option<&str>| match v {
            Some(v)
                if !v.is_empty()
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
            {
                v.to_string()
            }
            _ => "_".to_string(),
        };
        format!(
            "{}.events.{tenant}.{category}.{stream_id}.{}.{}.{}",
            self.prefix,
            token(Some(event_type)),
            token(agent),
            token(queue)
        )
    }

    /// The second subject of a transfer event whose target is an agent (a copy of the event in
    /// the same stream): `<p>.target_events.<tenant>.<category>.<id>.<Type>.<target agent>.<queue>`,
    /// the same tokens as [`Subjects::event`] but the receiving agent in the agent token. So
    /// `<p>.*.<tenant>.*.*.*.<agent>.*` is everything about an agent, as the one who acts and as
    /// the one a transfer goes to.
    pub fn target_event(
        &self,
        tenant: &str,
        category: &str,
        stream_id: &str,
        event_type: &str,
        target_agent: &str,
        queue: Option<&str>,
    ) -> String {
        let primary = self.event(
            tenant,
            category,
            stream_id,
            event_type,
            Some(target_agent),
            queue,
        );
        format!(
            "{}.target_events.{}",
            self.prefix,
            &primary[self.prefix.len() + ".events.".len()..]
        )
    }

    /// All domain events of all tenants.
    pub fn all_events(&self) -> String {
        format!("{}.events.>", self.prefix)
    }

    /// All the copies of transfer events on their target agent's subject.
    pub fn all_target_events(&self) -> String {
        format!("{}.target_events.>", self.prefix)
    }

    /// All domain events of one tenant.
    pub fn tenant_events(&self, tenant: &str) -> String {
        format!("{}.events.{tenant}.>", self.prefix)
    }

    /// The JetStream stream that holds the domain events (`CC_EVENTS` for prefix `cc`).
    pub fn events_stream(&self) -> String {
        format!(
            "{}_EVENTS",
            self.prefix.to_uppercase().replace(['.', '-'], "_")
        )
    }

    /// The JetStream stream that holds the PBX events.
    pub fn pbx_stream(&self) -> String {
        format!(
            "{}_PBX",
            self.prefix.to_uppercase().replace(['.', '-'], "_")
        )
    }

    /// One command to one service for one tenant.
    pub fn command(&self, service: &str, tenant: &str, command: &str) -> String {
        format!("{}.cmd.{service}.{tenant}.{command}", self.prefix)
    }

    /// Every command of one service (what its handlers subscribe to, in a queue group).
    pub fn service_commands(&self, service: &str) -> String {
        format!("{}.cmd.{service}.*.*", self.prefix)
    }

    /// One PBX event.
    pub fn pbx_event(&self, tenant: &str, kind: &str, id: &str, event_type: &str) -> String {
        format!("{}.pbx.evt.{tenant}.{kind}.{id}.{event_type}", self.prefix)
    }

    /// The tenant of a PBX event's subject ([`Subjects::pbx_event`]).
    pub fn pbx_event_tenant<'a>(&self, subject: &'a str) -> Option<&'a str> {
        subject
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(".pbx.evt.")?
            .split('.')
            .next()
    }

    /// The device events of all tenants.
    pub fn all_pbx_device_events(&self) -> String {
        format!("{}.pbx.evt.*.device.>", self.prefix)
    }

    /// The channel and bridge events of all tenants.
    pub fn all_pbx_call_events(&self) -> Vec<String> {
        vec![
            format!("{}.pbx.evt.*.channel.>", self.prefix),
            format!("{}.pbx.evt.*.bridge.>", self.prefix),
        ]
    }

    /// All PBX events of all tenants.
    pub fn all_pbx_events(&self) -> String {
        format!("{}.pbx.evt.>", self.prefix)
    }

    /// A changed read-model view (core NATS, not persisted): `<p>.views.<tenant>.<kind>.<id>`.
    pub fn view(&self, tenant: &str, kind: &str, id: &str) -> String {
        format!("{}.views.{tenant}.{kind}.{id}", self.prefix)
    }

    /// Every view change of every tenant.
    pub fn all_views(&self) -> String {
        format!("{}.views.>", self.prefix)
    }

    /// Splits a view subject into (tenant, kind, id).
    pub fn parse_view<'a>(&self, subject: &'a str) -> Option<(&'a str, &'a str, &'a str)> {
        let rest = subject
            .strip_prefix(&self.prefix)?
            .strip_prefix(".views.")?;
        let mut parts = rest.split('.');
        let (tenant, kind, id) = (parts.next()?, parts.next()?, parts.next()?);
        parts.next().is_none().then_some((tenant, kind, id))
    }

    /// Splits a command subject into (service, tenant, command name).
    pub fn parse_command<'a>(&self, subject: &'a str) -> Option<(&'a str, &'a str, &'a str)> {
        let rest = subject.strip_prefix(&self.prefix)?.strip_prefix(".cmd.")?;
        let mut parts = rest.split('.');
        let (service, tenant, name) = (parts.next()?, parts.next()?, parts.next()?);
        parts.next().is_none().then_some((service, tenant, name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_carry_tenant_category_and_type() {
        let s = Subjects::new("cc");
        assert_eq!(
            s.event("acme", "agent", "1001", "AgentPaused", Some("1001"), None),
            "cc.events.acme.agent.1001.AgentPaused.1001._"
        );
        assert_eq!(
            s.event(
                "acme",
                "call",
                "c1",
                "CallOffered",
                Some("1001"),
                Some("500")
            ),
            "cc.events.acme.call.c1.CallOffered.1001.500"
        );
        assert_eq!(
            s.event("acme", "call", "c1", "CallEnded", Some("a.b"), Some("")),
            "cc.events.acme.call.c1.CallEnded._._"
        );
        assert_eq!(s.events_stream(), "CC_EVENTS");
        assert_eq!(
            s.target_event("demo", "call", "c1", "TransferStarted", "1003", Some("500")),
            "cc.target_events.demo.call.c1.TransferStarted.1003.500"
        );
        assert_eq!(
            s.target_event("demo", "call", "c1", "TransferCompleted", "1003", None),
            "cc.target_events.demo.call.c1.TransferCompleted.1003._"
        );
        assert_eq!(
            s.command("agent-session", "acme", "PauseAgent"),
            "cc.cmd.agent-session.acme.PauseAgent"
        );
        assert_eq!(
            s.parse_command("cc.cmd.agent-session.acme.PauseAgent"),
            Some(("agent-session", "acme", "PauseAgent"))
        );
        assert_eq!(s.parse_command("cc.cmd.agent-session.acme"), None);
        assert_eq!(Subjects::new("t-1a").events_stream(), "T_1A_EVENTS");
    }
}
