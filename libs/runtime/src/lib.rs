//! What every process of the product shares.
//!
//! - [`Config`]: a TOML file plus `CC_*` environment variables, with laptop defaults.
//! - [`telemetry::init`]: JSON or human logs.
//! - [`admin`]: `/healthz`, `/readyz` (names the missing dependency) and Prometheus `/metrics`.
//! - [`shutdown`]: SIGTERM/SIGINT cancel a token; services finish in-flight work.
//! - [`connect`]: PostgreSQL and NATS connections that wait and retry with a clear log line.
//! - [`Context`]: what a service gets to run.

pub mod admin;
mod config;
pub mod connect;
mod context;
pub mod leading;
pub mod partitions;
pub mod shutdown;
pub mod telemetry;
pub mod web;

pub use admin::{Metrics, Readiness};
pub use config::{
    redact_url, Config, ConfigError, LogFormat, NatsAuth, Networks, PbxTrunk, PresencePackage,
    ProxyHeader, SipConfig, WebhookConfig,
};
pub use context::Context;
