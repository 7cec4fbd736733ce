//! The NATS bus of the product.
//!
//! - [`Subjects`]: every subject name, in one place.
//! - [`Command`] / [`CommandHandlers`] / [`Bus::request`]: typed request/reply commands. A
//!   malformed or unknown command gets an error reply naming what is wrong (never a timeout,
//!   never a panic).
//! - [`consumer`]: JetStream durable consumers and the idempotency table that makes a
//!   redelivered event change nothing.
//! - [`parked`]: what a consumer does with an event it cannot apply: parks it (a row in
//!   `bus_parked`, an error log line, a metric), never a silent skip, never a retry loop.
//! - [`relay`]: the outbox that moves committed events from the store to JetStream, in store
//!   order, exactly once per event id, with one active relay at a time.

pub mod codes;
mod command;
pub mod consumer;
pub mod facts;
pub mod leader;
pub mod parked;
pub mod permissions;
pub mod relay;
mod subjects;

pub use command::{
    conflict_backoff, field_name, header, inject_trace, parse_json, Command, CommandContext,
    CommandCounter, CommandError, CommandHandlers, RequestError, TenantScope, CONFLICT,
    DECIDE_ATTEMPTS,
};
pub use leader::Leader;
pub use subjects::Subjects;

use cc_eventstore::Migration;

/// The bus's own tables (consumer idempotency, parked events), component `bus`.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "processed_events",
        sql: include_str!("../sql/0001_processed.sql"),
    },
    Migration {
        version: 2,
        name: "idempotency_keys",
        sql: include_str!("../sql/0002_idempotency.sql"),
    },
    Migration {
        version: 3,
        name: "idempotency_claims",
        sql: include_str!("../sql/0003_idempotency_claims.sql"),
    },
    Migration {
        version: 4,
        name: "parked_events",
        sql: include_str!("../sql/0004_parked.sql"),
    },
];

/// A connection to the bus: the NATS client, its JetStream context and the subject names.
#[derive(Clone)]
pub struct Bus {
    pub client: async_nats::Client,
    pub jetstream: async_nats::jetstream::Context,
    pub subjects: Subjects,
    /// The replica count asked for (`CC_NATS_REPLICAS`); `None`: see [`Bus::stream_replicas`].
    replicas: Option<usize>,
    /// The store's partition count (`CC_PARTITIONS`): the PBX stream files each channel fact
    /// under its tenant's partition when it is above 1 ([`Bus::ensure_pbx_stream`]).
    partitions: u32,
}

impl Bus {
    pub fn new(client: async_nats::Client, subjects: Subjects) -> Self {
        let jetstream = async_nats::jetstream::new(client.clone());
        Self {
            client,
            jetstream,
            subjects,
            replicas: None,
            partitions: 1,
        }
    }

    /// The same bus for a store of `partitions` partitions (`CC_PARTITIONS`).
    pub fn with_partitions(mut self, partitions: u32) -> Self {
        self.partitions = partitions.max(1);
        self
    }

    /// The PBX stream's durable consumers of channel facts read this: every tenant's, or with
    /// partitions one partition's (`<p>.pbx.evt.*.channel.<k>.>`, as the stream files them).
    pub fn pbx_channel_filter(&self, partition: cc_core::Partition) -> String {
        let p = self.subjects.prefix();
        if self.partitions <= 1 || partition.count <= 1 {
            format!("{p}.pbx.evt.*.channel.>")
        } else {
            format!("{p}.pbx.evt.*.channel.{}.>", partition.index)
        }
    }

    /// The same bus with the streams' replica count fixed (`None`: chosen by the server).
    pub fn with_stream_replicas(mut self, replicas: Option<usize>) -> Self {
        self.replicas = replicas;
        self
    }

    /// How many servers hold a copy of each stream the product creates: the count set with
    /// [`Bus::with_stream_replicas`], else 3 when the server this client is connected to is
    /// part of a cluster (its INFO names one), else 1. A cluster of fewer than three
    /// JetStream servers must set the count (1 or 2), or the streams cannot be placed.
    pub fn stream_replicas(&self) -> usize {
        self.replicas
            .unwrap_or(match self.client.server_info().cluster {
                Some(_) => 3,
                None => 1,
            })
    }

    /// Creates a stream of the product if it does not exist, with [`Bus::stream_replicas`]
    /// replicas (more than one on a server of no cluster is an error). An existing stream
    /// gets the subjects of `wanted` it lacks, the replica count (raised, JetStream makes
    /// the new copies from the leader while the stream keeps serving) and `wanted`'s subject
    /// transform if it has one; nothing else of its configuration is changed. Returns once the stream has a leader.
    pub async fn ensure_stream(
        &self,
        wanted: async_nats::jetstream::stream::Config,
    ) -> anyhow::Result<()> {
        let name = wanted.name.clone();
        let replicas = self.stream_replicas();
        // A single server refuses to create such a stream but takes the update of an existing
        // one, which then claims copies that do not exist: refuse both alike.
        if replicas > 1 && self.client.server_info().cluster.is_none() {
            anyhow::bail!(
                "cannot make JetStream stream {name} R{replicas} (CC_NATS_REPLICAS): the NATS server is not part of a cluster"
            );
        }
        let wanted = async_nats::jetstream::stream::Config {
            num_replicas: replicas,
            ..wanted
        };
        let stream = self
            .jetstream
            .get_or_create_stream(wanted.clone())
            .await
            .map_err(|e| {
                anyhow::anyhow!("cannot create JetStream stream {name} (R{replicas}): {e}")
            })?;
        let led = stream
            .cached_info()
            .cluster
            .as_ref()
            .is_some_and(|c| c.leader.is_some());
        let mut config = stream.cached_info().config.clone();
        let transform = wanted
            .subject_transform
            .as_ref()
            .map(|t| (&t.source, &t.destination));
        let transformed = config
            .subject_transform
            .as_ref()
            .map(|t| (&t.source, &t.destination));
        // A stream's subject transform is set by the services that ask for one (the PBX
        // stream's, with partitions) and left as it is by the others: a process not told the
        // partition count must not undo it (a consumer of every tenant's facts reads them
        // alike either way).
        let retransform = transform.is_some() && transform != transformed;
        let missing: Vec<String> = wanted
            .subjects
            .iter()
            .filter(|s| !config.subjects.contains(s))
            .cloned()
            .collect();
        // A server reports R1 as 1; a stream created by an old version may say 0 (= 1).
        let had = config.num_replicas.max(1);
        if missing.is_empty() && had == replicas && !retransform {
            return if led {
                Ok(())
            } else {
                self.await_leader(&name).await
            };
        }
        config.subjects.extend(missing);
        config.num_replicas = replicas;
        if retransform {
            tracing::info!(stream = %name, transform = ?wanted.subject_transform, "JetStream stream subject transform changed");
            config.subject_transform = wanted.subject_transform.clone();
        }
        self.jetstream.update_stream(config).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot update JetStream stream {name} (subjects, R{had} to R{replicas}): {e}"
            )
        })?;
        if had != replicas {
            tracing::info!(stream = %name, from = had, to = replicas, "JetStream stream replicas changed");
        }
        self.await_leader(&name).await
    }

    /// Waits until a stream has a leader (at most 10 s). On a cluster a stream just created or
    /// moved elects one first, and until then a publish finds no stream ("no responders"):
    /// a service that publishes at once after [`Bus::ensure_stream`] must not see that.
    async fn await_leader(&self, name: &str) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let led = match self.jetstream.get_stream(name).await {
                Ok(mut s) => s
                    .info()
                    .await
                    .is_ok_and(|i| i.cluster.as_ref().is_none_or(|c| c.leader.is_some())),
                Err(_) => false,
            };
            if led {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                anyhow::bail!("JetStream stream {name} has no leader after 10 s");
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Creates the JetStream stream of PBX events if it does not exist: file storage, a week of
    /// history, a dedup window for publishers' retries ([`Bus::ensure_stream`]). With
    /// partitions, the stream files each channel fact under its tenant's partition: a token
    /// after `channel` (`<p>.pbx.evt.demo.channel.6.<id>.<fact>`, NATS's FNV-1a of the tenant,
    /// as `cc_core::partition::of`), so each partition's consumer reads its own facts only.
    /// Subscribers of the published subjects see them unchanged.
    pub async fn ensure_pbx_stream(&self) -> anyhow::Result<()> {
        use async_nats::jetstream::stream::{Config, StorageType, SubjectTransform};
        let p = self.subjects.prefix();
        let subject_transform = (self.partitions > 1).then(|| SubjectTransform {
            source: format!("{p}.pbx.evt.*.channel.>"),
            destination: format!(
                "{p}.pbx.evt.{{{{wildcard(1)}}}}.channel.{{{{partition({},1)}}}}.>",
                self.partitions
            ),
        });
        self.ensure_stream(Config {
            subject_transform,
            name: self.subjects.pbx_stream(),
            subjects: vec![self.subjects.all_pbx_events()],
            storage: StorageType::File,
            max_age: std::time::Duration::from_secs(7 * 24 * 3600),
            duplicate_window: std::time::Duration::from_secs(120),
            description: Some("Facts reported by the PBX (devices, channels, bridges)".into()),
            ..Default::default()
        })
        .await
    }
}
