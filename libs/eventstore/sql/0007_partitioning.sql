-- How many partitions this store's tenants are spread over (CC_PARTITIONS), set by the first
-- replica that starts; a replica started with another count is refused (a tenant's partition
-- would change under it). One row.
create table if not exists es_partitioning (
    only_row boolean primary key default true check (only_row),
    partitions integer not null check (partitions between 1 and 1024),
    set_at timestamptz not null default now()
);

-- The replicas of each partitioned service that are alive (seen within seconds) and the
-- partitions each leads: every replica takes its fair share, ceil(partitions / replicas), of
-- the partitions nobody alive leads (cc_runtime::partitions). The leases decide; this only
-- says who to leave alone.
create table if not exists es_members (
    service text not null,
    member uuid not null,
    partitions integer[] not null default '{}',
    seen_at timestamptz not null default now(),
    primary key (service, member)
);
