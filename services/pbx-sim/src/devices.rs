//! Simulated devices: their registration state, and the PBX events that report it.

use cc_bus::CommandError;
use cc_contracts::domain::DeviceId;
use cc_contracts::pbx::{DeviceEvent, DeviceState};
use cc_runtime::Context;
use chrono::Utc;
use sqlx::{PgPool, Row};

/// The demo tenant's devices: 1001-1006 registered, 1007 unregistered (to show "offline").
pub const DEMO_DEVICES: &[(&str, bool)] = &[
    ("1001", true),
    ("1002", true),
    ("1003", true),
    ("1004", true),
    ("1005", true),
    ("1006", true),
    ("1007", false),
];

pub async fn list(pool: &PgPool, tenant: &str) -> Result<Vec<DeviceState>, CommandError> {
    let rows = sqlx::query(
        "select device, registered from pbx_sim_devices where tenant = $1 order by device",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            Some(DeviceState {
                device: DeviceId::parse(r.get::<&str, _>(0)).ok()?,
                registered: r.get(1),
            })
        })
        .collect())
}

/// The simulator's registrations in memory, written through to `pbx_sim_devices` (which
/// survives restarts): Originate checks the device for every call it rings, without a query.
/// Like the calls, they belong to the one simulator process of a database.
#[derive(Clone, Default)]
pub struct Registry(
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<(String, String), bool>>>,
);

impl Registry {
    fn known(&self, tenant: &str, device: &DeviceId) -> Option<bool> {
        self.0
            .lock()
            .expect("registry lock")
            .get(&(tenant.to_string(), device.to_string()))
            .copied()
    }

    fn set(&self, tenant: &str, device: &DeviceId, registered: bool) {
        self.0
            .lock()
            .expect("registry lock")
            .insert((tenant.to_string(), device.to_string()), registered);
    }
}

/// One device of a tenant's PBX, if it exists.
pub async fn get(
    pool: &PgPool,
    registry: &Registry,
    tenant: &str,
    device: &DeviceId,
) -> Result<Option<DeviceState>, CommandError> {
    if let Some(registered) = registry.known(tenant, device) {
        return Ok(Some(DeviceState {
            device: device.clone(),
            registered,
        }));
    }
    let registered: Option<bool> = sqlx::query_scalar(
        "select registered from pbx_sim_devices where tenant = $1 and device = $2",
    )
    .bind(tenant)
    .bind(device.as_str())
    .fetch_optional(pool)
    .await?;
    if let Some(r) = registered {
        registry.set(tenant, device, r);
    }
    Ok(registered.map(|registered| DeviceState {
        device: device.clone(),
        registered,
    }))
}

/// Adds a device (unregistered) to a tenant's PBX. Adding an existing one changes nothing.
pub async fn add(
    ctx: &Context,
    registry: &Registry,
    tenant: &str,
    device: &DeviceId,
) -> Result<DeviceState, CommandError> {
    cc_eventstore::StreamName::new(tenant, "device", device.as_str())
        .map_err(|e| CommandError::field("invalid_field", "tenant", e.to_string()))?;
    let added = sqlx::query("insert into pbx_sim_devices (tenant, device, registered) values ($1, $2, false) on conflict do nothing")
        .bind(tenant)
        .bind(device.as_str())
        .execute(&ctx.pool)
        .await?
        .rows_affected()
        == 1;
    if added {
        // A new extension exists, not registered yet: reported so that "offline" can be told
        // apart from "no such device".
        publish(
            ctx,
            tenant,
            &DeviceEvent::DeviceUnregistered {
                tenant: tenant.into(),
                device: device.clone(),
                at: Utc::now(),
            },
        )
        .await?;
    }
    let registered: bool = sqlx::query_scalar(
        "select registered from pbx_sim_devices where tenant = $1 and device = $2",
    )
    .bind(tenant)
    .bind(device.as_str())
    .fetch_one(&ctx.pool)
    .await?;
    registry.set(tenant, device, registered);
    Ok(DeviceState {
        device: device.clone(),
        registered,
    })
}

/// Registers or unregisters a device and reports it on the PBX contract.
pub async fn set_registered(
    ctx: &Context,
    registry: &Registry,
    tenant: &str,
    device: &DeviceId,
    registered: bool,
) -> Result<DeviceState, CommandError> {
    let at = Utc::now();
    let updated = sqlx::query("update pbx_sim_devices set registered = $3, updated_at = $4 where tenant = $1 and device = $2")
        .bind(tenant)
        .bind(device.as_str())
        .bind(registered)
        .bind(at)
        .execute(&ctx.pool)
        .await?
        .rows_affected();
    if updated == 0 {
        return Err(CommandError::field(
            "unknown_device",
            "device",
            format!("There is no device {device} on this PBX"),
        ));
    }
    registry.set(tenant, device, registered);
    let event = if registered {
        DeviceEvent::DeviceRegistered {
            tenant: tenant.into(),
            device: device.clone(),
            at,
        }
    } else {
        DeviceEvent::DeviceUnregistered {
            tenant: tenant.into(),
            device: device.clone(),
            at,
        }
    };
    publish(ctx, tenant, &event).await?;
    Ok(DeviceState {
        device: device.clone(),
        registered,
    })
}

async fn publish(ctx: &Context, tenant: &str, event: &DeviceEvent) -> Result<(), CommandError> {
    let subject =
        ctx.bus
            .subjects
            .pbx_event(tenant, "device", event.device().as_str(), event.type_name());
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", uuid::Uuid::now_v7().to_string().as_str());
    let body = serde_json::to_vec(event).expect("events serialize");
    let ack = ctx
        .bus
        .jetstream
        .publish_with_headers(subject, headers, body.into())
        .await
        .map_err(|e| {
            CommandError::new(
                "unavailable",
                format!("could not report the device event: {e}"),
            )
        })?;
    ack.await.map_err(|e| {
        CommandError::new(
            "unavailable",
            format!("JetStream did not take the device event: {e}"),
        )
    })?;
    Ok(())
}

/// Creates the demo tenant's devices on first start (never outside demo mode).
pub async fn seed_demo(ctx: &Context, registry: &Registry) -> anyhow::Result<()> {
    let have: i64 =
        sqlx::query_scalar("select count(*) from pbx_sim_devices where tenant = 'demo'")
            .fetch_one(&ctx.pool)
            .await?;
    if have > 0 {
        return Ok(());
    }
    for (d, registered) in DEMO_DEVICES {
        let device = DeviceId::parse(d).expect("demo devices are valid");
        add(ctx, registry, "demo", &device).await?;
        if *registered {
            set_registered(ctx, registry, "demo", &device, true).await?;
        }
    }
    tracing::info!("demo tenant devices created in the PBX simulator");
    Ok(())
}
