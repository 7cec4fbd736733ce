-- Queues and their members (snapshots of the `queue-<number>` streams).
create table if not exists qr_queues (
    tenant text not null,
    queue  text not null,
    name   text not null,
    primary key (tenant, queue)
);

create table if not exists qr_members (
    tenant  text not null,
    queue   text not null,
    agent   text not null,
    penalty integer not null,
    primary key (tenant, queue, agent)
);
create index if not exists qr_members_agent on qr_members (tenant, agent);
