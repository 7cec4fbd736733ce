//! Logs: human-readable for a terminal, JSON lines for a log pipeline.

use tracing_subscriber::EnvFilter;

use crate::LogFormat;

/// Installs the global subscriber. `filter` is a tracing filter such as `info`.
pub fn init(format: LogFormat, filter: &str) {
    // PostgreSQL's notices ("relation already exists, skipping") are noise at info level.
    let filter = format!("{filter},sqlx::postgres::notice=warn");
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Human => builder.try_init(),
    };
}
