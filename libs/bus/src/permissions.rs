//! Who may publish and subscribe what on NATS: the one table of the product's NATS users.
//!
//! Every service target connects as its own user, allowed only the subjects of [`SERVICES`];
//! `callcenter nats-config` renders the table as a nats-server `authorization` block (the file
//! that scripts/run, the tests, docker-compose and Kubernetes give the server), so the
//! permissions are written once, here. Passwords never appear in that file: each user's
//! password is a reference to an environment variable of the nats-server process
//! ([`password_var`]), which the same secret fills on the client side.
//!
//! Besides the services there are three kinds of user:
//! - `callcenter`: the union of every service's rights, for `callcenter run --target all`
//!   with a single connection;
//! - `operator`: everything, for the operator commands (`callcenter tenant`, `pbx`, `events`);
//! - `integration-<tenant>`: an integrator of one tenant, who may only read
//!   `<p>.events.<tenant>.>` through the durable consumer [`integrator_durable`].
//!
//! Each user gets its own reply-inbox prefix (`_INBOX.<user>`), so one user cannot read the
//! replies meant for another.

use crate::Subjects;

/// One right of a service on the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Right {
    /// Answers the commands of a service: subscribes `<p>.cmd.<service>.*.*` and replies.
    Serves(&'static str),
    /// Sends commands (requests) to a service: publishes `<p>.cmd.<service>.*.*`.
    Asks(&'static str),
    /// The outbox: publishes the domain events (and their copies for transfer targets) and
    /// owns the JetStream stream that holds them.
    RelaysEvents,
    /// The PBX side: publishes the PBX facts `<p>.pbx.evt.>` into the PBX stream.
    ReportsPbxFacts,
    /// Reads the PBX stream through the durable consumer of this name (and may create the
    /// stream if it does not exist yet).
    ConsumesPbx(&'static str),
    /// As [`Right::ConsumesPbx`], one durable consumer per partition (`<name>-p<k>`, see
    /// `CC_PARTITIONS`), and the name alone (the consumer when there is one partition).
    ConsumesPbxPartitioned(&'static str),
    /// Reads the events stream through durable consumers it names itself (one per webhook).
    ConsumesEvents,
    /// Publishes read-model view changes `<p>.views.>` (core NATS).
    PublishesViews,
    /// Subscribes to read-model view changes `<p>.views.>`.
    ReadsViews,
}

use Right::*;

/// Every service target and its rights: the single source of the NATS permissions.
pub const SERVICES: &[(&str, &[Right])] = &[
    ("relay", &[RelaysEvents]),
    ("auth", &[Serves("auth"), Asks("agent-session")]),
    (
        "agent-session",
        &[
            Serves("agent-session"),
            Asks("auth"),
            Asks("queue-router"),
            Asks("call-control"),
            Asks("pbx"),
            ConsumesPbx("agent-session-devices"),
        ],
    ),
    (
        "queue-router",
        &[
            Serves("queue-router"),
            Asks("auth"),
            Asks("agent-session"),
            Asks("call-control"),
            Asks("pbx"),
            ConsumesPbxPartitioned("queue-router-channels"),
        ],
    ),
    (
        "call-control",
        &[
            Serves("call-control"),
            Asks("agent-session"),
            Asks("queue-router"),
            Asks("pbx"),
            ConsumesPbxPartitioned("call-control-channels"),
        ],
    ),
    ("projection", &[PublishesViews]),
    (
        "portal",
        &[
            Asks("auth"),
            Asks("agent-session"),
            Asks("queue-router"),
            Asks("call-control"),
            Asks("pbx"),
            Asks("sip-gateway"),
            Asks("webhooks"),
            ReadsViews,
        ],
    ),
    (
        "pbx-sim",
        &[Serves("pbx"), Serves("pbx-sim"), ReportsPbxFacts],
    ),
    (
        "sip-gateway",
        &[
            Serves("pbx"),
            Serves("sip-gateway"),
            Asks("queue-router"),
            ReportsPbxFacts,
        ],
    ),
    ("webhooks", &[Serves("webhooks"), ConsumesEvents]),
];

/// The user that holds the union of every service's rights (`run --target all`, one connection).
pub const COMBINED_USER: &str = "callcenter";
/// The user of the operator commands: every subject.
pub const OPERATOR_USER: &str = "operator";

/// The rights of a service target, `None` for an unknown name.
pub fn service_rights(service: &str) -> Option<&'static [Right]> {
    SERVICES
        .iter()
        .find(|(name, _)| *name == service)
        .map(|(_, rights)| *rights)
}

/// The environment variable that holds a user's password, on the nats-server side and on the
/// client side alike: `CC_NATS_PASSWORD_<USER>` (upper case, `-` as `_`).
pub fn password_var(user: &str) -> String {
    format!(
        "CC_NATS_PASSWORD_{}",
        user.to_uppercase().replace(['-', '.'], "_")
    )
}

/// The reply-inbox prefix of a user (clients must connect with it, see the module doc).
pub fn inbox_prefix(user: &str) -> String {
    format!("_INBOX.{user}")
}

/// The NATS user of a tenant's integrator.
pub fn integrator_user(tenant: &str) -> String {
    format!("integration-{tenant}")
}

/// The one durable consumer an integrator of `tenant` may create and read.
pub fn integrator_durable(tenant: &str) -> String {
    format!("integration-{tenant}")
}

/// Whoever may create the PBX stream (its reporters and its consumers, whichever starts first)
/// may also update it: to the replica count of a cluster it was not created in.
fn pbx_stream_rights(perm: &mut Permissions, pbx: &str) {
    for api in ["CREATE", "UPDATE", "INFO"] {
        perm.add_pub(format!("$JS.API.STREAM.{api}.{pbx}"));
    }
}

/// What one user may publish and subscribe (NATS subject patterns).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
    /// May publish to the reply subject of a request it received (and only once, at once).
    pub allow_responses: bool,
}

impl Permissions {
    fn add_pub(&mut self, s: String) {
        if !self.publish.contains(&s) {
            self.publish.push(s);
        }
    }
    fn add_sub(&mut self, s: String) {
        if !self.subscribe.contains(&s) {
            self.subscribe.push(s);
        }
    }

    fn merge(&mut self, other: Permissions) {
        other.publish.into_iter().for_each(|s| self.add_pub(s));
        other.subscribe.into_iter().for_each(|s| self.add_sub(s));
        self.allow_responses |= other.allow_responses;
    }

    /// The permissions of a set of rights for `user` (whose inbox they include), with the
    /// store's tenants over `partitions` partitions.
    pub fn of(subjects: &Subjects, user: &str, rights: &[Right], partitions: u32) -> Permissions {
        let events = subjects.events_stream();
        let pbx = subjects.pbx_stream();
        let mut perm = Permissions::default();
        perm.add_sub(format!("{}.>", inbox_prefix(user)));
        for right in rights {
            match right {
                Serves(service) => {
                    perm.add_sub(subjects.service_commands(service));
                    perm.allow_responses = true;
                }
                Asks(service) => perm.add_pub(subjects.service_commands(service)),
                RelaysEvents => {
                    perm.add_pub(subjects.all_events());
                    perm.add_pub(subjects.all_target_events());
                    for api in ["CREATE", "UPDATE", "INFO", "MSG.GET"] {
                        perm.add_pub(format!("$JS.API.STREAM.{api}.{events}"));
                    }
                    perm.add_pub(format!("$JS.API.DIRECT.GET.{events}"));
                    perm.add_pub(format!("$JS.API.DIRECT.GET.{events}.>"));
                }
                ReportsPbxFacts => {
                    perm.add_pub(subjects.all_pbx_events());
                    pbx_stream_rights(&mut perm, &pbx);
                }
                ConsumesPbx(name) => {
                    pbx_stream_rights(&mut perm, &pbx);
                    consumer_rights(&mut perm, &pbx, name, None);
                    // A new leader re-creates it from the first fact not acknowledged.
                    perm.add_pub(format!("$JS.API.CONSUMER.DELETE.{pbx}.{name}"));
                }
                ConsumesPbxPartitioned(base) => {
                    pbx_stream_rights(&mut perm, &pbx);
                    // The name alone as well: the consumer of a store of one partition.
                    let mut names = vec![base.to_string()];
                    if partitions > 1 {
                        names.extend((0..partitions).map(|k| format!("{base}-p{k}")));
                    }
                    for name in &names {
                        consumer_rights(&mut perm, &pbx, name, None);
                        perm.add_pub(format!("$JS.API.CONSUMER.DELETE.{pbx}.{name}"));
                    }
                }
                ConsumesEvents => {
                    perm.add_pub(format!("$JS.API.STREAM.INFO.{events}"));
                    consumer_rights(&mut perm, &events, "*", None);
                    perm.add_pub(format!("$JS.API.CONSUMER.DELETE.{events}.*"));
                }
                PublishesViews => perm.add_pub(subjects.all_views()),
                ReadsViews => perm.add_sub(subjects.all_views()),
            }
        }
        perm
    }

    /// The permissions of a service target, `None` for an unknown name.
    pub fn service(subjects: &Subjects, service: &str, partitions: u32) -> Option<Permissions> {
        Some(Self::of(
            subjects,
            service,
            service_rights(service)?,
            partitions,
        ))
    }

    /// The union of every service's rights, for the [`COMBINED_USER`].
    pub fn combined(subjects: &Subjects, partitions: u32) -> Permissions {
        let mut perm = Permissions::default();
        for (_, rights) in SERVICES {
            perm.merge(Self::of(subjects, COMBINED_USER, rights, partitions));
        }
        // Its services ask each other over the one connection they share, and nats-server
        // grants no response permission for a request a connection delivers to itself: the
        // replies go to its own inbox, which it may publish to (no other user reads it).
        perm.add_pub(format!("{}.>", inbox_prefix(COMBINED_USER)));
        perm
    }

    /// An integrator of `tenant`: reads `<p>.events.<tenant>.>` through its one durable
    /// consumer (creates it, reads its info, pulls, acks) and nothing else.
    pub fn integrator(subjects: &Subjects, tenant: &str) -> Permissions {
        let user = integrator_user(tenant);
        let mut perm = Permissions::default();
        perm.add_sub(format!("{}.>", inbox_prefix(&user)));
        let filter = subjects.tenant_events(tenant);
        consumer_rights(
            &mut perm,
            &subjects.events_stream(),
            &integrator_durable(tenant),
            Some(&filter),
        );
        perm
    }
}

/// Create (only with `filter` when given: the server checks the filter in the subject against
/// the consumer's), read the info of, pull from and ack a durable consumer.
fn consumer_rights(perm: &mut Permissions, stream: &str, name: &str, filter: Option<&str>) {
    match filter {
        Some(f) => perm.add_pub(format!("$JS.API.CONSUMER.CREATE.{stream}.{name}.{f}")),
        None => {
            perm.add_pub(format!("$JS.API.CONSUMER.CREATE.{stream}.{name}"));
            perm.add_pub(format!("$JS.API.CONSUMER.CREATE.{stream}.{name}.>"));
        }
    }
    perm.add_pub(format!("$JS.API.CONSUMER.INFO.{stream}.{name}"));
    perm.add_pub(format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{name}"));
    perm.add_pub(format!("$JS.ACK.{stream}.{name}.>"));
}

/// The nats-server `authorization` block of every user: the services, the combined user, the
/// operator and the integrators of `integrator_tenants`. Passwords are `$CC_NATS_PASSWORD_*`
/// references resolved from the nats-server's environment.
pub fn server_config(
    subjects: &Subjects,
    integrator_tenants: &[String],
    partitions: u32,
) -> String {
    let mut users: Vec<(String, Permissions)> = SERVICES
        .iter()
        .map(|(name, rights)| {
            (
                name.to_string(),
                Permissions::of(subjects, name, rights, partitions),
            )
        })
        .collect();
    users.push((
        COMBINED_USER.to_string(),
        Permissions::combined(subjects, partitions),
    ));
    users.push((
        OPERATOR_USER.to_string(),
        Permissions {
            publish: vec![">".into()],
            subscribe: vec![">".into()],
            allow_responses: false,
        },
    ));
    for t in integrator_tenants {
        users.push((integrator_user(t), Permissions::integrator(subjects, t)));
    }
    let list = |v: &[String]| {
        v.iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = String::new();
    out.push_str(&format!(
        "# Generated by `callcenter nats-config` (subject prefix \"{}\") from the permission\n\
         # table in libs/bus/src/permissions.rs. Do not edit: regenerate.\n\
         # Each password is the nats-server's environment variable of the same name.\n\
         authorization {{\n  users = [\n",
        subjects.prefix()
    ));
    for (user, perm) in users {
        out.push_str(&format!(
            "    {{\n      user: \"{user}\"\n      password: ${}\n      permissions: {{\n        publish: {{ allow: [{}] }}\n        subscribe: {{ allow: [{}] }}\n",
            password_var(&user),
            list(&perm.publish),
            list(&perm.subscribe),
        ));
        if perm.allow_responses {
            out.push_str("        allow_responses: true\n");
        }
        out.push_str("      }\n    }\n");
    }
    out.push_str("  ]\n}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_relay_publishes_events_and_only_the_pbx_side_publishes_facts() {
        let s = Subjects::new("cc");
        for (name, _) in SERVICES {
            let p = Permissions::service(&s, name, 1).unwrap();
            assert_eq!(
                p.publish.contains(&"cc.events.>".to_string()),
                *name == "relay",
                "{name}"
            );
            assert_eq!(
                p.publish.contains(&"cc.pbx.evt.>".to_string()),
                ["pbx-sim", "sip-gateway"].contains(name),
                "{name}"
            );
            assert!(p.subscribe.contains(&format!("_INBOX.{name}.>")));
            assert!(!p.publish.iter().any(|s| s == ">" || s == "$JS.API.>"));
        }
    }

    #[test]
    fn an_integrator_reads_only_its_tenant_through_its_durable() {
        let p = Permissions::integrator(&Subjects::new("cc"), "acme");
        assert_eq!(
            p.publish,
            [
                "$JS.API.CONSUMER.CREATE.CC_EVENTS.integration-acme.cc.events.acme.>",
                "$JS.API.CONSUMER.INFO.CC_EVENTS.integration-acme",
                "$JS.API.CONSUMER.MSG.NEXT.CC_EVENTS.integration-acme",
                "$JS.ACK.CC_EVENTS.integration-acme.>",
            ]
        );
        assert_eq!(p.subscribe, ["_INBOX.integration-acme.>"]);
        assert!(!p.allow_responses);
    }

    #[test]
    fn the_config_names_every_user_and_no_password() {
        let c = server_config(&Subjects::new("cc"), &["acme".into()], 1);
        for user in [
            "relay",
            "portal",
            "callcenter",
            "operator",
            "integration-acme",
        ] {
            assert!(c.contains(&format!("user: \"{user}\"")), "{user}");
        }
        assert!(c.contains("password: $CC_NATS_PASSWORD_QUEUE_ROUTER"));
        assert!(c.contains("password: $CC_NATS_PASSWORD_INTEGRATION_ACME"));
    }
}
