//! The HTTP JSON API. Every route is in `openapi.json` (a test keeps the two in step).

pub mod admin;
pub mod agent;
pub mod desk;
pub mod devices;
pub mod reports;
pub mod supervisor;
pub mod webhooks;
