//! What the benchmarks share: timing, percentiles, the summary line, fresh databases.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

/// Prints `bench <name>: <value> <unit> (baseline <value> <unit>, ratio <r>)`.
pub fn summary(name: &str, value: f64, unit: &str, baseline: f64) {
    let ratio = if baseline > 0.0 {
        value / baseline
    } else {
        f64::NAN
    };
    println!(
        "bench {name}: {} {unit} (baseline {} {unit}, ratio {ratio:.2})",
        fmt(value),
        fmt(baseline)
    );
}

fn fmt(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// The `p`-th percentile (0..=100) of `samples`, in milliseconds.
pub fn percentile_ms(samples: &mut [Duration], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_unstable();
    let idx = ((p / 100.0) * (samples.len() - 1) as f64).round() as usize;
    samples[idx].as_secs_f64() * 1000.0
}

/// Creates a fresh database for one benchmark run on the server of `admin_url`.
pub async fn fresh_database(
    admin_url: &str,
    name: &str,
    max_connections: u32,
) -> anyhow::Result<(PgPool, String)> {
    let admin: PgConnectOptions = admin_url.parse()?;
    let mut conn = admin.connect().await?;
    sqlx::query(&format!("drop database if exists {name} with (force)"))
        .execute(&mut conn)
        .await?;
    sqlx::query(&format!("create database {name}"))
        .execute(&mut conn)
        .await?;
    let opts = admin.database(name);
    let url = opts.to_url_lossy().to_string();
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .connect_with(opts)
        .await?;
    Ok((pool, url))
}

/// Drops a database [`fresh_database`] made (its connections closed by force).
pub async fn drop_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    let admin: PgConnectOptions = admin_url.parse()?;
    let mut conn = admin.connect().await?;
    sqlx::query(&format!("drop database if exists {name} with (force)"))
        .execute(&mut conn)
        .await?;
    Ok(())
}

pub fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// The resident memory of a process, in KiB (Linux).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse()
                    .unwrap_or(0)
            })
        })
        .unwrap_or(0)
}

/// The CPU time a process has used (user and system), in clock ticks of 10 ms (Linux).
pub fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // After the command's closing parenthesis: state (field 3), ..., utime (14), stime (15).
            let rest = &s[s.rfind(')')? + 1..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

/// The CPU time (clock ticks of 10 ms) of every process whose command name is `name`
/// (`postgres`: the server and all its backends), alive now (Linux).
pub fn cpu_ticks_named(name: &str) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == name)
        })
        .map(cpu_ticks)
        .sum()
}

/// The body of a plain HTTP GET (the admin ports' `/metrics`).
pub async fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("{addr}{path}: no HTTP response"))?;
    anyhow::ensure!(
        head.starts_with("HTTP/1.1 200"),
        "{addr}{path}: {}",
        head.lines().next().unwrap_or("")
    );
    Ok(body.to_string())
}

/// The value of an unlabelled metric in a Prometheus text exposition.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Waits until an HTTP endpoint answers 200.
pub async fn wait_http_ok(addr: &str, path: &str, timeout: Duration) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Ok(mut s) = tokio::net::TcpStream::connect(addr).await {
            let _ = s
                .write_all(
                    format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await;
            let mut buf = vec![0u8; 64];
            if let Ok(n) = s.read(&mut buf).await {
                if String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200") {
                    return Ok(());
                }
            }
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("{addr}{path} did not answer 200 within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Deletes the JetStream streams a run made under its subject prefix (the shared nats-server
/// would otherwise keep every run's events: gigabytes after a few dozen runs, and a slower
/// server for the next run).
pub async fn drop_streams(client: &async_nats::Client, prefix: &str) -> anyhow::Result<()> {
    use futures::TryStreamExt;
    let js = async_nats::jetstream::new(client.clone());
    let ours = prefix.to_uppercase().replace(['.', '-'], "_");
    let names: Vec<String> = js.stream_names().try_collect().await?;
    for name in names.into_iter().filter(|n| n.starts_with(&ours)) {
        js.delete_stream(&name).await?;
    }
    Ok(())
}

/// Runs `f(0..n)` with at most `width` at a time; the first error stops it.
pub async fn parallel<F, Fut>(n: usize, width: usize, f: F) -> anyhow::Result<()>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    use futures::StreamExt;
    let mut s = futures::stream::iter((0..n).map(f)).buffer_unordered(width);
    while let Some(r) = s.next().await {
        r?;
    }
    Ok(())
}

/// Creates the tenant of `c` (waiting for the auth service) and ten queues 600-609 with the
/// load tests' settings (longest idle, 15 s ring timeout, 1 s wrap-up). Returns the queues.
pub async fn bench_tenant(
    bus: &cc_bus::Bus,
    c: &cc_bus::CommandContext,
) -> anyhow::Result<Vec<String>> {
    use cc_contracts::auth::CreateTenant;
    use cc_contracts::call::{ConfigureQueue, QueueSettings, Strategy};
    use cc_contracts::domain::QueueNumber;
    use cc_contracts::queue::CreateQueue;
    loop {
        match bus
            .request(
                c,
                &CreateTenant {
                    name: "Bench".into(),
                    demo: false,
                    time_zone: "UTC".into(),
                },
            )
            .await
        {
            Ok(_) => break,
            Err(cc_bus::RequestError::NoResponders(_)) => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => return Err(e.into()),
        }
    }
    let queues: Vec<String> = (0..10).map(|i| format!("{}", 600 + i)).collect();
    for q in &queues {
        bus.request(
            c,
            &CreateQueue {
                queue: QueueNumber::parse(q)?,
                name: format!("Queue {q}"),
            },
        )
        .await?;
        let settings = QueueSettings {
            strategy: Strategy::LongestIdle,
            ring_timeout_s: 15,
            wrap_up_s: 1,
            ..Default::default()
        };
        bus.request(
            c,
            &ConfigureQueue {
                queue: QueueNumber::parse(q)?,
                settings,
            },
        )
        .await?;
    }
    Ok(queues)
}

/// Logs each agent in on its own device and every assigned queue, 8 at a time, retrying
/// (10 s at most) while the device's registration is still on its way to agent-session.
pub async fn log_in_agents(
    bus: &cc_bus::Bus,
    c: &cc_bus::CommandContext,
    agents: Vec<String>,
) -> anyhow::Result<()> {
    use cc_contracts::domain::AgentNumber;
    use cc_contracts::session::LoginAgent;
    parallel(agents.len(), 8, |i| {
        let (bus, c, number) = (bus.clone(), c.clone(), agents[i].clone());
        async move {
            let agent = AgentNumber::parse(&number)?;
            for attempt in 0.. {
                match bus
                    .request(
                        &c,
                        &LoginAgent {
                            agent: agent.clone(),
                            device: None,
                            queues: None,
                        },
                    )
                    .await
                {
                    Ok(_) => break,
                    Err(cc_bus::RequestError::Rejected(e))
                        if (e.error == "unknown_device" || e.error == "device_offline")
                            && attempt < 600 =>
                    {
                        tokio::time::sleep(Duration::from_millis(100)).await
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(())
        }
    })
    .await
}
