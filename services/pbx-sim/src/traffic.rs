//! The traffic generator: callers arrive into queues as a Poisson process at a given rate, each
//! with a patience drawn from an exponential distribution (they hang up if still waiting when
//! it runs out); agents' phones answer after a delay with a given probability and talk for an
//! exponentially distributed time. Drives demos, end-to-end tests and the load benchmark.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cc_bus::{Command, CommandError};
use cc_contracts::pbx::{HangupCause, Party};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::calls::PhoneMode;
use crate::Sim;

/// Starts generating calls (replacing a running generator of the tenant).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartTraffic {
    /// The queue numbers callers dial (picked at random).
    pub queues: Vec<String>,
    /// New calls per second (the mean of a Poisson process).
    pub calls_per_second: f64,
    /// How long to generate, in seconds.
    pub duration_s: u64,
    /// Mean caller patience in ms (0 = callers never give up).
    #[serde(default)]
    pub patience_ms: u64,
    /// How every phone of the tenant reacts while the traffic runs (unset: unchanged).
    #[serde(default)]
    pub phones: Option<PhoneMode>,
    /// Caller numbers are this prefix followed by a sequence number.
    #[serde(default = "default_prefix")]
    pub caller_prefix: String,
}

fn default_prefix() -> String {
    "555".into()
}

impl Command for StartTraffic {
    const SERVICE: &'static str = "pbx-sim";
    const NAME: &'static str = "StartTraffic";
    type Reply = ();
}

/// Stops the tenant's generator.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StopTraffic {}
impl Command for StopTraffic {
    const SERVICE: &'static str = "pbx-sim";
    const NAME: &'static str = "StopTraffic";
    type Reply = ();
}

static SEED: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);

/// A uniform number in [0, 1) (a small xorshift generator; good enough for traffic).
pub fn uniform() -> f64 {
    let mut x = SEED.load(Ordering::Relaxed);
    if x == 0x9E37_79B9_7F4A_7C15 {
        x ^= std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
    }
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    SEED.store(x, Ordering::Relaxed);
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// A duration drawn from an exponential distribution with the given mean in ms.
pub fn exponential(mean_ms: f64) -> Duration {
    Duration::from_secs_f64(-(1.0 - uniform()).ln() * mean_ms / 1000.0)
}

pub async fn start(sim: &Sim, tenant: &str, cmd: StartTraffic) -> Result<(), CommandError> {
    if cmd.queues.is_empty() {
        return Err(CommandError::field(
            "invalid_field",
            "queues",
            "name at least one queue".to_string(),
        ));
    }
    if !(cmd.calls_per_second > 0.0 && cmd.calls_per_second <= 1000.0) {
        return Err(CommandError::field(
            "invalid_field",
            "calls_per_second",
            "between 0 and 1000".to_string(),
        ));
    }
    if !cmd.caller_prefix.is_empty() {
        cc_contracts::domain::CallerNumber::parse(&format!("{}0000000", cmd.caller_prefix))
            .map_err(|e| CommandError::field("invalid_field", "caller_prefix", e.message))?;
    }
    for q in &cmd.queues {
        cc_contracts::domain::QueueNumber::parse(q)
            .map_err(|e| CommandError::field("invalid_field", "queues", e.message))?;
    }
    if cmd.duration_s == 0 || cmd.duration_s > 86_400 {
        return Err(CommandError::field(
            "invalid_field",
            "duration_s",
            "between 1 and 86400 seconds".to_string(),
        ));
    }
    if cmd.patience_ms > crate::calls::MAX_MODE_MS {
        return Err(CommandError::field(
            "invalid_field",
            "patience_ms",
            format!("at most {} ms (an hour)", crate::calls::MAX_MODE_MS),
        ));
    }
    if let Some(mode) = &cmd.phones {
        mode.check()?;
    }
    if let Some(mode) = cmd.phones {
        let devices: Vec<_> = crate::devices::list(&sim.ctx.pool, tenant)
            .await?
            .into_iter()
            .map(|d| d.device)
            .collect();
        sim.calls.set_all_modes(tenant, &devices, mode).await;
    }
    let token = sim.ctx.cancel.child_token();
    if let Some(old) = sim
        .traffic
        .lock()
        .await
        .insert(tenant.to_string(), token.clone())
    {
        old.cancel();
    }
    let (sim, tenant) = (sim.clone(), tenant.to_string());
    tokio::spawn(async move { generate(sim, tenant, cmd, token).await });
    Ok(())
}

pub async fn stop(sim: &Sim, tenant: &str) {
    if let Some(t) = sim.traffic.lock().await.remove(tenant) {
        t.cancel();
    }
}

async fn generate(sim: Sim, tenant: String, cmd: StartTraffic, token: CancellationToken) {
    let start = tokio::time::Instant::now();
    let end = start + Duration::from_secs(cmd.duration_s);
    let mut next = start;
    let mut n: u64 = 0;
    loop {
        next += exponential(1000.0 / cmd.calls_per_second);
        if next > end {
            break;
        }
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
        }
        n += 1;
        let queue =
            cmd.queues[(uniform() * cmd.queues.len() as f64) as usize % cmd.queues.len()].clone();
        let caller = Party {
            number: format!("{}{n:07}", cmd.caller_prefix),
            name: format!("Caller {n}"),
        };
        let (sim2, tenant2, patience) = (sim.clone(), tenant.clone(), cmd.patience_ms);
        tokio::spawn(async move {
            let Ok(ch) = sim2.calls.place_caller(&tenant2, &queue, caller).await else {
                return;
            };
            if patience > 0 {
                tokio::time::sleep(exponential(patience as f64)).await;
                if sim2.calls.waiting(&tenant2, &ch.channel).await {
                    let _ = sim2
                        .calls
                        .hangup(&tenant2, &ch.channel, HangupCause::Normal)
                        .await;
                }
            }
        });
    }
    tracing::info!(tenant, calls = n, "traffic generator done");
}
