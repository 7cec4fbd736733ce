//! `callcenter`: every service of the product in one binary.
//!
//! `callcenter run` runs all of them in one process; `callcenter run --target queue-router`
//! (or a comma-separated list) runs a chosen set, for the microservice deployment. The
//! services talk over NATS either way. The operator commands live here too.

mod demo;
mod ops;
mod parked;
mod targets;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use cc_runtime::connect::NatsIdentity;
use cc_runtime::{connect, shutdown, telemetry, Config, Context, Metrics, Readiness};
use clap::{Parser, Subcommand};
use targets::Target;

#[derive(Parser)]
#[command(
    name = "callcenter",
    version,
    about = "Call center agent platform: all services in one binary"
)]
struct Cli {
    /// A TOML configuration file; CC_* environment variables override it.
    #[arg(long, short, global = true, env = "CC_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run services: all of them (the default) or a chosen set.
    Run {
        /// Comma-separated targets: all, relay, auth, agent-session, queue-router,
        /// call-control, projection, portal, pbx-sim.
        #[arg(long, short, value_delimiter = ',', default_value = "all")]
        target: Vec<Target>,
    },
    /// Apply the database migrations of every component, then exit.
    Migrate,
    /// Print the effective configuration (file + environment + defaults), secrets hidden.
    Config,
    /// List the targets and what each runs.
    Targets,
    /// Print the nats-server `authorization` block of every NATS user (each service target,
    /// `callcenter`, `operator`, the integrators), generated from the permission table.
    NatsConfig {
        /// Tenants whose integrator users to list (default CC_NATS_INTEGRATOR_TENANTS).
        #[arg(long, value_delimiter = ',')]
        tenants: Option<Vec<String>>,
    },
    /// Tenants (the services must be running).
    #[command(subcommand)]
    Tenant(ops::TenantCommand),
    /// Play the PBX simulator's phones (the services must be running).
    #[command(subcommand)]
    Pbx(ops::PbxCommand),
    /// Rebuild read models from the whole event store into fresh tables while the old ones
    /// serve, then swap them in atomically; progress on stderr. The services may keep running.
    Rebuild {
        /// `reporting` (the analysts' schema), `portal` (the agents' views) or `all`.
        #[arg(long, default_value = "all")]
        projection: String,
    },
    /// The partition count of the store (`CC_PARTITIONS`): `show` it, or `set` another with
    /// every replica stopped (tenants then move to the partitions of the new count; the new
    /// partitions' leaders replay the store once). Needs only PostgreSQL.
    Partitions {
        /// `show` or `set`.
        action: String,
        /// The new count, 1 to 1024 (for `set`).
        count: Option<u32>,
    },
    /// The events consumers parked because they could not apply them (`bus_parked`): list
    /// them, clear them once dealt with. Needs only PostgreSQL.
    #[command(subcommand)]
    Parked(parked::ParkedCommand),
    /// Print the domain events published on NATS, e.g. one agent's:
    /// `callcenter events --subject 'cc.events.demo.agent.1001.>'`.
    Events {
        /// A subject filter (default: every event of every tenant).
        #[arg(long)]
        subject: Option<String>,
        /// Replay from the first stored event instead of printing only new ones.
        #[arg(long)]
        from_start: bool,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<usize>,
        /// A durable consumer of this name (an integrator's subscription): the first time it
        /// replays from the first stored event, then follows live; acknowledged events are not
        /// delivered again, so the next run goes on where this one stopped.
        #[arg(long)]
        durable: Option<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(cli.config.as_deref())?;
    match cli.command.unwrap_or(Command::Run {
        target: vec![Target::All],
    }) {
        Command::Config => {
            print!("{}", config.redacted_toml());
            Ok(())
        }
        Command::Targets => {
            for t in Target::ALL {
                println!("{:<14} {}", t.name(), t.description());
            }
            Ok(())
        }
        Command::NatsConfig { tenants } => {
            print!("{}", ops::nats_config(&config, tenants));
            Ok(())
        }
        Command::Migrate => runtime()?.block_on(async {
            telemetry::init(config.log_format, &config.log);
            let cancel = shutdown::on_signal();
            let Some(pool) = connect::postgres(&config, &Readiness::default(), &cancel).await?
            else {
                return Ok(());
            };
            targets::migrate_all(&pool).await
        }),
        Command::Run { target } => runtime()?.block_on(run(config, Target::expand(&target))),
        Command::Tenant(cmd) => runtime()?.block_on(ops::tenant(&config, cmd)),
        Command::Pbx(cmd) => runtime()?.block_on(ops::pbx(&config, cmd)),
        Command::Parked(cmd) => runtime()?.block_on(parked::run(&config, cmd)),
        Command::Partitions { action, count } => {
            runtime()?.block_on(ops::partitions(&config, &action, count))
        }
        Command::Rebuild { projection } => runtime()?.block_on(ops::rebuild(&config, &projection)),
        Command::Events {
            subject,
            from_start,
            count,
            durable,
        } => runtime()?.block_on(ops::events(&config, subject, from_start, count, durable)),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

async fn run(config: Config, targets: Vec<Target>) -> anyhow::Result<()> {
    let names: Vec<String> = targets.iter().map(|t| t.name().to_string()).collect();
    let telemetry = telemetry::init_with_traces(
        config.log_format,
        &config.log,
        &telemetry::Traces {
            endpoint: config.otlp_endpoint.clone(),
            service_name: std::env::var("OTEL_SERVICE_NAME")
                .ok()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| service_name(&targets)),
        },
    );
    tracing::info!(targets = ?names, "starting");
    let cancel = shutdown::on_signal();
    let readiness = Readiness::default();
    readiness.expect("migrations");
    let metrics = Metrics::default();
    metrics.register(
        "events_undecodable",
        "Stored events a reader could not decode and skipped, by category and event type",
        cc_contracts::undecodable_events(),
    );
    metrics.register(
        "events_parked",
        "Stored events a consumer could not apply, parked in bus_parked and skipped, by consumer and reason (undecodable, refused)",
        cc_bus::parked::parked_events(),
    );
    metrics.register(
        "messages_unreadable",
        "JetStream messages (PBX facts) a consumer could not read and skipped, by consumer",
        cc_bus::parked::unreadable_messages(),
    );

    // The admin endpoints come first, so /readyz can say what is missing while we wait.
    let admin = cc_runtime::admin::router(readiness.clone(), metrics.clone(), names.clone());
    let listener = tokio::net::TcpListener::bind(&config.admin_addr)
        .await
        .with_context(|| {
            format!(
                "cannot listen on admin_addr {} (CC_ADMIN_ADDR)",
                config.admin_addr
            )
        })?;
    tracing::info!(addr = %config.admin_addr, "admin endpoints: /healthz /readyz /metrics");
    let admin_cancel = cancel.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, admin)
            .with_graceful_shutdown(admin_cancel.cancelled_owned())
            .await;
    });

    let Some(pool) = connect::postgres(&config, &readiness, &cancel).await? else {
        return Ok(());
    };
    // Each target connects as its own NATS user (or all as CC_NATS_USER); targets with the
    // same identity share a connection.
    let mut clients: Vec<(Option<NatsIdentity>, async_nats::Client)> = Vec::new();
    let mut contexts: Vec<(Target, Context)> = Vec::new();
    let store = cc_eventstore::EventStore::new(pool.clone());
    for t in &targets {
        let id = NatsIdentity::of_target(&config, t.name(), |k| std::env::var(k).ok());
        let client = match clients.iter().find(|(i, _)| *i == id) {
            Some((_, c)) => c.clone(),
            None => {
                let Some(c) = connect::nats(&config, id.as_ref(), &readiness, &cancel).await?
                else {
                    return Ok(());
                };
                clients.push((id, c.clone()));
                c
            }
        };
        let ctx = Context {
            store: store.clone(),
            bus: cc_bus::Bus::new(client, cc_bus::Subjects::new(&config.subject_prefix))
                .with_stream_replicas(config.nats_replicas)
                .with_partitions(config.partitions),
            pool: pool.clone(),
            config: config.clone(),
            cancel: cancel.clone(),
            readiness: readiness.clone(),
            metrics: metrics.clone(),
        };
        contexts.push((*t, ctx));
    }
    targets::migrate_all(&pool).await?;
    cc_eventstore::partitioning::settle(&pool, config.partitions).await?;
    readiness.ready("migrations");
    connect::watch(
        pool.clone(),
        clients[0].1.clone(),
        readiness.clone(),
        cancel.clone(),
    );

    tokio::spawn(metrics.clone().watch_lag(pool.clone(), cancel.clone()));
    let mut tasks = tokio::task::JoinSet::new();
    // The demo seed sends admin commands as the portal would (its NATS rights), else as auth.
    let seeder = contexts
        .iter()
        .find(|(t, _)| *t == Target::Portal)
        .or_else(|| contexts.iter().find(|(t, _)| *t == Target::Auth));
    if let (true, Some((_, ctx))) = (config.demo && targets.contains(&Target::Auth), seeder) {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            if let Err(e) = demo::seed(ctx).await {
                tracing::error!(error = %format!("{e:#}"), "could not create the demo tenant");
            }
        });
    }
    for (t, ctx) in contexts {
        tasks.spawn(async move { (t, t.run(ctx).await) });
    }
    // The first task to stop (or a signal) stops the process; a failure makes the exit status
    // non-zero so that the orchestrator restarts the process.
    let mut failure = None;
    tokio::select! {
        _ = cancel.cancelled() => {}
        Some(done) = tasks.join_next() => {
            match done {
                Ok((t, Ok(()))) => tracing::info!(target = t.name(), "service stopped"),
                Ok((t, Err(e))) => {
                    tracing::error!(target = t.name(), error = %format!("{e:#}"), "service failed");
                    failure = Some(anyhow::anyhow!("the {} service failed: {e:#}", t.name()));
                }
                Err(e) => {
                    tracing::error!(error = %e, "service panicked");
                    failure = Some(anyhow::anyhow!("a service panicked: {e}"));
                }
            }
            cancel.cancel();
        }
    }
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let drained =
        tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            ?grace,
            "some work did not finish within the shutdown grace period"
        );
    }
    for (_, c) in &clients {
        let _ = c.flush().await;
    }
    telemetry.shutdown().await;
    tracing::info!("stopped");
    failure.map_or(Ok(()), Err)
}

/// `service.name` of a process's spans: `callcenter` for every target in one process, else
/// `callcenter-<target>[+<target>...]`.
fn service_name(targets: &[Target]) -> String {
    if Target::ALL.iter().all(|t| targets.contains(t)) {
        return "callcenter".into();
    }
    let names: Vec<&str> = targets.iter().map(|t| t.name()).collect();
    format!("callcenter-{}", names.join("+"))
}
