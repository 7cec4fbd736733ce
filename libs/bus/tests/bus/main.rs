//! The bus against a real nats-server (one per test) and PostgreSQL (one database per test).

mod commands;
mod facts;
mod relay;
mod replicas;

use cc_bus::{Bus, Subjects};
use cc_testkit::NatsServer;

pub async fn bus(nats: &NatsServer) -> Bus {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("info,cc_bus=debug")
        .with_test_writer()
        .try_init();
    let client = async_nats::connect(nats.url()).await.unwrap();
    Bus::new(client, Subjects::new("cc"))
}
