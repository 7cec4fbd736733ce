-- The simulated PBX's devices (SIP extensions) per tenant.
create table if not exists pbx_sim_devices (
    tenant     text not null,
    device     text not null,
    registered boolean not null,
    updated_at timestamptz not null default now(),
    primary key (tenant, device)
);
