-- The portal read model: one view per agent, and the history of its changes (for SSE resume).
create table if not exists rm_agents (
    tenant  text not null,
    agent   text not null,
    view    jsonb not null,
    version bigint not null,
    primary key (tenant, agent)
);

-- Every change of every view, kept a day: a browser that reconnects with Last-Event-ID gets
-- each change it missed, in order.
create table if not exists rm_agent_updates (
    tenant      text not null,
    agent       text not null,
    version     bigint not null,
    view        jsonb not null,
    recorded_at timestamptz not null default now(),
    primary key (tenant, agent, version)
);

create table if not exists rm_queue_names (
    tenant text not null,
    queue  text not null,
    name   text not null,
    primary key (tenant, queue)
);

-- Checkpoints of the projections, written in the same transaction as their rows.
create table if not exists rm_checkpoints (
    name     text primary key,
    xid      bigint not null,
    position bigint not null
);

