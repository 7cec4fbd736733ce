//! `callcenter parked`: the events consumers parked because they could not apply them
//! (`bus_parked`, see docs/operations.md "Poison events"), listed and cleared. It needs only
//! PostgreSQL; the services may keep running.

use anyhow::Context as _;
use cc_bus::parked::{self, Clearing, ParkedEvent};
use cc_runtime::Config;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum ParkedCommand {
    /// List the parked events, oldest position first.
    List {
        /// Only this consumer's (e.g. `portal-projection`).
        #[arg(long)]
        consumer: Option<String>,
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
        /// One JSON array of rows (every field, the whole error) instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Clear a consumer's parked events once dealt with (the events stay in the store).
    Clear {
        #[arg(long)]
        consumer: String,
        /// The parked event's position (the `POSITION` column of `parked list`).
        #[arg(long, required_unless_present = "all", conflicts_with = "all")]
        position: Option<i64>,
        /// Every event parked by the consumer.
        #[arg(long)]
        all: bool,
    },
}

pub async fn run(config: &Config, cmd: ParkedCommand) -> anyhow::Result<()> {
    match cmd {
        ParkedCommand::List {
            consumer,
            tenant,
            json,
        } => {
            if let Some(t) = &tenant {
                crate::ops::check_slug(t)?;
            }
            let pool = connect(config).await?;
            let rows = parked::list(&pool, consumer.as_deref(), tenant.as_deref())
                .await
                .map_err(missing_table)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else if rows.is_empty() {
                println!("no parked events");
            } else {
                print!("{}", table(&rows));
            }
        }
        ParkedCommand::Clear {
            consumer,
            position,
            all,
        } => {
            let which = match (position, all) {
                (Some(p), false) if p > 0 => Clearing::At(p),
                (Some(p), false) => anyhow::bail!("--position {p}: a position is 1 or more"),
                (None, true) => Clearing::All,
                _ => anyhow::bail!("give --position P or --all"),
            };
            let pool = connect(config).await?;
            let known = parked::consumers(&pool).await.map_err(missing_table)?;
            if !known.contains(&consumer) {
                anyhow::bail!(
                    "consumer {consumer:?} has no parked events (consumers with parked events: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                );
            }
            let cleared = parked::clear(&pool, &consumer, which).await?;
            if let (Clearing::At(p), 0) = (which, cleared) {
                anyhow::bail!(
                    "consumer {consumer} has no event parked at position {p} (see `callcenter parked list --consumer {consumer}`)"
                );
            }
            println!(
                "cleared {cleared} parked event{} of {consumer}",
                if cleared == 1 { "" } else { "s" }
            );
        }
    }
    Ok(())
}

/// One connection, no waiting: an operator's command says at once what is wrong.
async fn connect(config: &Config) -> anyhow::Result<sqlx::PgPool> {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .connect(&config.database_url)
        .await
        .with_context(|| {
            format!(
                "cannot connect to PostgreSQL at {} (CC_DATABASE_URL)",
                cc_runtime::redact_url(&config.database_url)
            )
        })
}

fn missing_table(e: sqlx::Error) -> anyhow::Error {
    match &e {
        sqlx::Error::Database(d) if d.code().as_deref() == Some("42P01") => anyhow::anyhow!(
            "the database has no bus_parked table: is it the product's, migrated (`callcenter migrate`)?"
        ),
        _ => anyhow::Error::new(e).context("cannot read bus_parked"),
    }
}

/// The rows as an aligned table, the error cut to one short line (`--json` has all of it).
fn table(rows: &[ParkedEvent]) -> String {
    const ERROR_WIDTH: usize = 60;
    let header = [
        "POSITION",
        "CONSUMER",
        "TENANT",
        "STREAM",
        "VERSION",
        "TYPE",
        "REASON",
        "PARKED AT",
        "ERROR",
    ];
    let cells: Vec<[String; 9]> = rows
        .iter()
        .map(|r| {
            let error: String = r.error.split_whitespace().collect::<Vec<_>>().join(" ");
            let error = if error.chars().count() > ERROR_WIDTH {
                let cut: String = error.chars().take(ERROR_WIDTH - 1).collect();
                format!("{cut}…")
            } else {
                error
            };
            [
                r.position.to_string(),
                r.consumer.clone(),
                r.tenant.clone(),
                r.stream.clone(),
                r.version.to_string(),
                r.event_type.clone(),
                r.reason.clone(),
                r.parked_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                error,
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: Vec<&str>| {
        let mut s = String::new();
        for (i, (c, w)) in cols.iter().zip(widths).enumerate() {
            if i + 1 == cols.len() {
                s.push_str(c);
            } else {
                s.push_str(c);
                s.push_str(&" ".repeat(w - c.chars().count() + 2));
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(header.to_vec());
    for row in &cells {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(position: i64, consumer: &str, error: &str) -> ParkedEvent {
        ParkedEvent {
            consumer: consumer.into(),
            position,
            tenant: "acme".into(),
            stream: "acme/call-c1".into(),
            version: 3,
            event_type: "CallTeleported".into(),
            event_id: uuid::Uuid::nil(),
            reason: "undecodable".into(),
            error: error.into(),
            parked_at: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        }
    }

    #[test]
    fn the_table_aligns_its_columns_and_cuts_long_errors_to_one_line() {
        let t = table(&[
            row(7, "queue-router", "unknown variant\n`CallTeleported`"),
            row(1234, "portal-projection", &"x".repeat(100)),
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(
            lines[0].starts_with("POSITION  CONSUMER           TENANT"),
            "{t}"
        );
        assert!(
            lines[1].starts_with("7         queue-router       acme"),
            "{t}"
        );
        assert!(
            lines[1].ends_with("unknown variant `CallTeleported`"),
            "{t}"
        );
        assert!(lines[2].contains("2023-11-14 22:13:20"), "{t}");
        assert!(lines[2].ends_with(&format!("{}…", "x".repeat(59))), "{t}");
    }
}
