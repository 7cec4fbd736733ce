//! Operator commands that talk to running services over NATS.

use anyhow::Context as _;
use cc_bus::{Bus, CommandContext, Subjects};
use cc_contracts::auth::{CreateTenant, CreateUser, Role};
use cc_contracts::domain::DeviceId;
use cc_contracts::pbx::ListDevices;
use cc_pbx_sim::calls::PhoneAction;
use cc_pbx_sim::control::{
    AddDevice, CallerHangup, ListSimChannels, PhoneDo, PlaceCall, SetRegistered,
};
use cc_runtime::Config;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum TenantCommand {
    /// Read-only NATS credentials for a tenant's integrator: its own events
    /// (`<prefix>.events.<tenant>.>`) through its one durable consumer, nothing else.
    Credentials { tenant: String },
    /// Create a tenant with its first admin account.
    Create {
        /// The tenant's slug: its subdomain (a-z, 0-9, '-').
        tenant: String,
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "admin")]
        admin_username: String,
        /// The IANA time zone of the tenant's day boundaries in reports.
        #[arg(long, default_value = "UTC")]
        time_zone: String,
        /// The admin's password (at least 6 characters).
        #[arg(long, env = "CC_ADMIN_PASSWORD")]
        admin_password: String,
    },
}

#[derive(Subcommand)]
pub enum PbxCommand {
    /// List a tenant's devices and whether they are registered.
    Devices {
        #[arg(long, default_value = "demo")]
        tenant: String,
    },
    /// Add a device (extension) to a tenant's simulated PBX.
    AddDevice {
        #[arg(long, default_value = "demo")]
        tenant: String,
        device: String,
    },
    /// Make a simulated phone register (come online).
    Register {
        #[arg(long, default_value = "demo")]
        tenant: String,
        device: String,
    },
    /// Make a simulated phone unregister (go offline).
    Unregister {
        #[arg(long, default_value = "demo")]
        tenant: String,
        device: String,
    },
    /// Put a caller into a queue (they dial the queue number).
    Call {
        #[arg(long, default_value = "demo")]
        tenant: String,
        #[arg(long)]
        queue: String,
        /// The caller's number.
        #[arg(long)]
        caller: String,
        /// The caller's name.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// The phone of a device answers its ringing call.
    Answer {
        #[arg(long, default_value = "demo")]
        tenant: String,
        device: String,
    },
    /// The phone of a device declines its ringing call.
    Reject {
        #[arg(long, default_value = "demo")]
        tenant: String,
        device: String,
    },
    /// The phone of a device hangs up its call.
    Hangup {
        #[arg(long, default_value = "demo")]
        tenant: String,
        device: String,
    },
    /// A caller hangs up (by channel id, see `pbx channels`).
    CallerHangup {
        #[arg(long, default_value = "demo")]
        tenant: String,
        channel: String,
    },
    /// The live channels (call legs).
    Channels {
        #[arg(long, default_value = "demo")]
        tenant: String,
    },
    /// Generate calls: Poisson arrivals into queues; phones answer by themselves.
    Traffic {
        #[arg(long, default_value = "demo")]
        tenant: String,
        /// Comma-separated queue numbers.
        #[arg(long, value_delimiter = ',', default_value = "500,501")]
        queues: Vec<String>,
        /// New calls per second (mean).
        #[arg(long, default_value_t = 0.5)]
        rate: f64,
        #[arg(long, default_value_t = 60)]
        duration: u64,
        /// Mean caller patience in ms (0: callers never give up).
        #[arg(long, default_value_t = 30_000)]
        patience_ms: u64,
        /// Mean talk time in ms of the phones that answer.
        #[arg(long, default_value_t = 20_000)]
        talk_ms: u64,
        /// Probability that a ringing phone answers (else it rings out).
        #[arg(long, default_value_t = 0.9)]
        answer_probability: f64,
    },
}

/// The operator commands connect as CC_NATS_USER (e.g. `operator`, or an integrator).
async fn bus(config: &Config) -> anyhow::Result<Bus> {
    let identity = cc_runtime::connect::NatsIdentity::of_process(config);
    let client = cc_runtime::connect::nats_once(config, identity.as_ref()).await?;
    Ok(Bus::new(client, Subjects::new(&config.subject_prefix))
        .with_stream_replicas(config.nats_replicas)
        .with_partitions(config.partitions))
}

/// `callcenter nats-config`: the nats-server authorization block of every NATS user, from the
/// permission table (libs/bus/src/permissions.rs).
pub fn nats_config(config: &Config, tenants: Option<Vec<String>>) -> String {
    cc_bus::permissions::server_config(
        &Subjects::new(&config.subject_prefix),
        &tenants
            .unwrap_or_else(|| config.nats.integrator_tenants.clone())
            .into_iter()
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>(),
        config.partitions,
    )
}

/// A tenant's slug as an operator typed it: a-z, 0-9 and '-'.
pub fn check_slug(tenant: &str) -> anyhow::Result<()> {
    if tenant.is_empty()
        || !tenant
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        anyhow::bail!("tenant {tenant:?}: a tenant's slug is a-z, 0-9 and '-'");
    }
    Ok(())
}

/// `callcenter tenant credentials <tenant>`: a new password for the tenant's integrator and
/// what to do with it (the nats-server learns it from its environment; see
/// docs/operations.md).
pub fn credentials(config: &Config, tenant: &str) -> anyhow::Result<String> {
    use cc_bus::permissions::{integrator_durable, integrator_user, password_var};
    check_slug(tenant)?;
    let s = Subjects::new(&config.subject_prefix);
    let user = integrator_user(tenant);
    use rand::Rng;
    // A letter, then 47 alphanumeric characters from the OS's generator (about 280 bits): the
    // nats-server reads the variable as a configuration value, which must be a plain string.
    let password: String = std::iter::once('k')
        .chain(
            rand::rngs::OsRng
                .sample_iter(&rand::distributions::Alphanumeric)
                .take(47)
                .map(char::from),
        )
        .collect();
    Ok(format!(
        "# NATS credentials of tenant {tenant}'s integrator: read-only, its own events only.\n\
         # 1. Give the nats-server this variable (a Kubernetes Secret, the compose .env):\n\
         {var}={password}\n\
         # 2. List the tenant in CC_NATS_INTEGRATOR_TENANTS, regenerate the server's file with\n\
         #    `callcenter nats-config` and reload it (nats-server --signal reload).\n\
         # 3. Hand the integrator:\n\
         user={user}\n\
         password={password}\n\
         durable_consumer={durable}\n\
         stream={stream}\n\
         filter_subject={filter}\n\
         inbox_prefix={inbox}\n\
         # e.g. CC_NATS_USER={user} CC_NATS_PASSWORD=... callcenter events --durable {durable} --subject '{filter}'\n",
        var = password_var(&user),
        durable = integrator_durable(tenant),
        stream = s.events_stream(),
        filter = s.tenant_events(tenant),
        inbox = cc_bus::permissions::inbox_prefix(&user),
    ))
}

pub async fn tenant(config: &Config, cmd: TenantCommand) -> anyhow::Result<()> {
    if let TenantCommand::Credentials { tenant } = &cmd {
        print!("{}", credentials(config, tenant)?);
        return Ok(());
    }
    let bus = bus(config).await?;
    match cmd {
        TenantCommand::Credentials { .. } => unreachable!("answered above"),
        TenantCommand::Create {
            tenant,
            name,
            admin_username,
            admin_password,
            time_zone,
        } => {
            let c = CommandContext::new(&tenant, "operator");
            let created = bus
                .request(
                    &c,
                    &CreateTenant {
                        name,
                        demo: false,
                        time_zone,
                    },
                )
                .await?;
            if !created {
                anyhow::bail!("tenant {tenant} already exists");
            }
            let user = CreateUser {
                username: admin_username,
                display_name: "Administrator".into(),
                password: admin_password,
                role: Role::Admin,
            };
            let u = bus.request(&c, &user).await?;
            println!("tenant {tenant} created with admin {}", u.username);
        }
    }
    Ok(())
}

pub async fn pbx(config: &Config, cmd: PbxCommand) -> anyhow::Result<()> {
    let bus = bus(config).await?;
    let device = |d: &str| DeviceId::parse(d).map_err(|e| anyhow::anyhow!(e.message));
    let show = |d: cc_contracts::pbx::DeviceState| {
        println!(
            "{} {}",
            d.device,
            if d.registered {
                "registered"
            } else {
                "unregistered"
            }
        )
    };
    match cmd {
        PbxCommand::Devices { tenant } => {
            for d in bus
                .request(&CommandContext::new(&tenant, "operator"), &ListDevices {})
                .await?
            {
                show(d);
            }
        }
        PbxCommand::AddDevice { tenant, device: d } => show(
            bus.request(
                &CommandContext::new(&tenant, "operator"),
                &AddDevice {
                    device: device(&d)?,
                },
            )
            .await?,
        ),
        PbxCommand::Register { tenant, device: d } => show(
            bus.request(
                &CommandContext::new(&tenant, "operator"),
                &SetRegistered {
                    device: device(&d)?,
                    registered: true,
                },
            )
            .await?,
        ),
        PbxCommand::Unregister { tenant, device: d } => show(
            bus.request(
                &CommandContext::new(&tenant, "operator"),
                &SetRegistered {
                    device: device(&d)?,
                    registered: false,
                },
            )
            .await?,
        ),
        PbxCommand::Call {
            tenant,
            queue,
            caller,
            name,
        } => {
            let ch = bus
                .request(
                    &CommandContext::new(&tenant, "operator"),
                    &PlaceCall {
                        queue,
                        caller_number: caller,
                        caller_name: name,
                    },
                )
                .await?;
            println!("caller on channel {}", ch.channel);
        }
        PbxCommand::Answer { tenant, device: d } => {
            phone(&bus, &tenant, device(&d)?, PhoneAction::Answer).await?
        }
        PbxCommand::Reject { tenant, device: d } => {
            phone(&bus, &tenant, device(&d)?, PhoneAction::Reject).await?
        }
        PbxCommand::Hangup { tenant, device: d } => {
            phone(&bus, &tenant, device(&d)?, PhoneAction::Hangup).await?
        }
        PbxCommand::CallerHangup { tenant, channel } => {
            bus.request(
                &CommandContext::new(&tenant, "operator"),
                &CallerHangup { channel },
            )
            .await?
        }
        PbxCommand::Traffic {
            tenant,
            queues,
            rate,
            duration,
            patience_ms,
            talk_ms,
            answer_probability,
        } => {
            let phones = cc_pbx_sim::calls::PhoneMode::Agent {
                after_ms: 1500,
                probability: answer_probability,
                talk_ms,
            };
            let cmd = cc_pbx_sim::traffic::StartTraffic {
                queues,
                calls_per_second: rate,
                duration_s: duration,
                patience_ms,
                phones: Some(phones),
                caller_prefix: "555".into(),
            };
            bus.request(&CommandContext::new(&tenant, "operator"), &cmd)
                .await?;
            println!("traffic started for {duration} s");
        }
        PbxCommand::Channels { tenant } => {
            for c in bus
                .request(
                    &CommandContext::new(&tenant, "operator"),
                    &ListSimChannels {},
                )
                .await?
            {
                println!("{}", serde_json::to_string(&c)?);
            }
        }
    }
    Ok(())
}

async fn phone(
    bus: &Bus,
    tenant: &str,
    device: DeviceId,
    action: PhoneAction,
) -> anyhow::Result<()> {
    Ok(bus
        .request(
            &CommandContext::new(tenant, "operator"),
            &PhoneDo { device, action },
        )
        .await?)
}

/// Follows the events stream (an ordered, ephemeral consumer) and prints one line per event.
pub async fn events(
    config: &Config,
    subject: Option<String>,
    from_start: bool,
    count: Option<usize>,
    durable: Option<String>,
) -> anyhow::Result<()> {
    use async_nats::jetstream::consumer::{pull, pull::OrderedConfig, AckPolicy, DeliverPolicy};
    use futures::StreamExt;
    let bus = bus(config).await?;
    let stream_name = bus.subjects.events_stream();
    let filter = subject.unwrap_or_else(|| bus.subjects.all_events());
    let print = |m: &async_nats::jetstream::Message| {
        let header = |k: &str| {
            m.headers
                .as_ref()
                .and_then(|h| h.get(k))
                .map(|v| v.as_str().to_string())
                .unwrap_or_default()
        };
        println!(
            "{} {} {} {}",
            header("ce-time"),
            m.subject,
            header("ce-type"),
            String::from_utf8_lossy(&m.payload)
        );
    };
    let mut seen = 0;
    match durable {
        // An integrator's durable consumer: replays from the first stored event the first
        // time, then follows live; acknowledged events are not delivered again, so a restart
        // goes on where it stopped.
        // (No stream info needed: an integrator's permissions allow only its consumer.)
        Some(name) => {
            let consumer: async_nats::jetstream::consumer::PullConsumer = bus
                .jetstream
                .create_consumer_on_stream(
                    pull::Config {
                        durable_name: Some(name.clone()),
                        filter_subject: filter,
                        deliver_policy: DeliverPolicy::All,
                        ack_policy: AckPolicy::Explicit,
                        ..Default::default()
                    },
                    &stream_name,
                )
                .await
                .with_context(|| format!("cannot open the durable consumer {name}"))?;
            match count {
                // Pull exactly as many as asked, so none is left delivered but unacknowledged.
                Some(c) => {
                    while seen < c {
                        let mut batch = consumer
                            .batch()
                            .max_messages(c - seen)
                            .expires(std::time::Duration::from_secs(30))
                            .messages()
                            .await?;
                        while let Some(m) = batch.next().await {
                            let m = m.map_err(|e| anyhow::anyhow!("{e}"))?;
                            print(&m);
                            m.ack().await.map_err(|e| anyhow::anyhow!("ack: {e}"))?;
                            seen += 1;
                        }
                    }
                }
                None => {
                    let mut messages = consumer.messages().await?;
                    while let Some(m) = messages.next().await {
                        let m = m?;
                        print(&m);
                        m.ack().await.map_err(|e| anyhow::anyhow!("ack: {e}"))?;
                    }
                }
            }
        }
        None => {
            let stream = bus
                .jetstream
                .get_stream(&stream_name)
                .await
                .context("the events stream does not exist yet")?;
            let reader = OrderedConfig {
                filter_subject: filter,
                deliver_policy: if from_start {
                    DeliverPolicy::All
                } else {
                    DeliverPolicy::New
                },
                ..Default::default()
            };
            // With a node of a cluster down, nats-server before 2.15.1 may place this consumer
            // on that node, and its creation times out: a few tries (docs/operations.md).
            let mut tries = 0;
            let consumer = loop {
                tries += 1;
                match stream.create_consumer(reader.clone()).await {
                    Ok(c) => break c,
                    Err(e) if tries < 3 => {
                        tracing::warn!(error = %e, "cannot create the reading consumer; trying again")
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            let mut messages = consumer.messages().await?;
            while let Some(m) = messages.next().await {
                print(&m?);
                seen += 1;
                if count.is_some_and(|c| seen >= c) {
                    break;
                }
            }
        }
    }
    Ok(())
}

/// `callcenter rebuild`: the read models from the whole store, swapped in atomically.
pub async fn rebuild(config: &Config, projection: &str) -> anyhow::Result<()> {
    let names: &[&str] = match projection {
        "all" => &["reporting", "portal"],
        "reporting" => &["reporting"],
        "portal" => &["portal"],
        other => anyhow::bail!("unknown projection {other:?}: use reporting, portal or all"),
    };
    cc_runtime::telemetry::init(config.log_format, &config.log);
    let cancel = cc_runtime::shutdown::on_signal();
    let Some(pool) =
        cc_runtime::connect::postgres(config, &cc_runtime::Readiness::default(), &cancel).await?
    else {
        return Ok(());
    };
    crate::targets::migrate_all(&pool).await?;
    let store = cc_eventstore::EventStore::new(pool.clone());
    for name in names {
        eprintln!("{name}: rebuilding from the event store");
        let report = |p: cc_projection::reporting::Progress| eprintln!("{name}: {p}");
        let done = match *name {
            "reporting" => cc_projection::reporting::rebuild(&pool, &store, report).await?,
            _ => {
                cc_projection::portal::rebuild(&pool, &config.database_url, &store, report).await?
            }
        };
        eprintln!(
            "{name}: rebuilt from {} events in {:.1} s ({:.0} events/s), {} rows; swapped in",
            done.events,
            done.elapsed.as_secs_f64(),
            done.events as f64 / done.elapsed.as_secs_f64().max(1e-9),
            done.rows,
        );
    }
    Ok(())
}

/// `callcenter partitions show|set <n>`.
pub async fn partitions(config: &Config, action: &str, count: Option<u32>) -> anyhow::Result<()> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&config.database_url)
        .await?;
    crate::targets::migrate_all(&pool).await?;
    match (action, count) {
        ("show", None) => {
            let n: Option<i32> = sqlx::query_scalar("select partitions from es_partitioning")
                .fetch_optional(&pool)
                .await?;
            match n {
                Some(n) => println!("{n}"),
                None => println!(
                    "not set yet (the first replica to start sets CC_PARTITIONS, {})",
                    config.partitions
                ),
            }
            Ok(())
        }
        ("set", Some(n)) if (1..=1024).contains(&n) => {
            let leading = cc_runtime::partitions::replicas_alive(&pool).await?;
            if leading > 0 {
                anyhow::bail!(
                    "{leading} replica(s) still run partitions: stop every replica first"
                );
            }
            let before = cc_eventstore::partitioning::set(&pool, n).await?;
            println!(
                "partitions: {} -> {n}; start every replica with CC_PARTITIONS={n}",
                before.map_or("unset".into(), |b| b.to_string())
            );
            Ok(())
        }
        ("set", _) => anyhow::bail!("count: give the new partition count, 1 to 1024"),
        (other, _) => anyhow::bail!("action: {other:?} is not show or set"),
    }
}
