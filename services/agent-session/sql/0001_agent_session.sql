-- The agent-session service's state. Each row change is recorded by events appended in the same
-- transaction; the rows are snapshots that make decisions fast and consistent.

-- The session of each agent (a snapshot of the `agent-<number>` stream at `version`).
create table if not exists as_sessions (
    tenant  text not null,
    agent   text not null,
    state   jsonb not null,
    version bigint not null,
    primary key (tenant, agent)
);

-- One logged-in agent per device: the primary key settles two logins racing for a device.
create table if not exists as_device_claims (
    tenant text not null,
    device text not null,
    agent  text not null,
    primary key (tenant, device)
);

-- Device presence as the PBX reports it.
create table if not exists as_devices (
    tenant     text not null,
    device     text not null,
    registered boolean not null,
    updated_at timestamptz not null,
    primary key (tenant, device)
);

create table if not exists as_pause_reasons (
    tenant   text not null,
    name     text not null,
    active   boolean not null,
    position bigserial,
    primary key (tenant, name)
);

create table if not exists as_agent_defaults (
    tenant            text primary key,
    may_manage_queues boolean not null
);
