//! The HTTP JSON API: one module per group of handlers, each with its routes (method, path,
//! who may call it, what the document says of it). The router and the OpenAPI document are
//! both built from [`routes`].

pub mod admin;
pub mod agent;
pub mod call;
pub mod desk;
pub mod devices;
pub mod reports;
pub mod supervisor;
pub mod webhooks;

/// Every route of the API, in the order of the groups.
pub fn routes() -> Vec<crate::route::Route> {
    let mut all = agent::routes();
    all.extend(call::routes());
    all.extend(desk::routes());
    all.extend(crate::sse::routes());
    all.extend(supervisor::routes());
    all.extend(admin::routes());
    all.extend(devices::routes());
    all.extend(webhooks::routes());
    all.extend(reports::routes());
    all
}
