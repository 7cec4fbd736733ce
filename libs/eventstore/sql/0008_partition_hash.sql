-- A tenant's partition is the 32-bit FNV-1a hash of its id modulo the count: the hash of NATS's
-- {{partition(n, 1)}} subject transform, so that the PBX stream files each channel fact under
-- its tenant's partition (cc_core::partition::of computes the same). The store reads one
-- partition's events with it.
create or replace function cc_partition(tenant text, partitions bigint) returns bigint
language plpgsql immutable strict parallel safe as $$
declare
    h bigint := 2166136261;
    b integer;
    bytes bytea := convert_to(tenant, 'UTF8');
begin
    for i in 0 .. length(bytes) - 1 loop
        b := get_byte(bytes, i);
        h := ((h # b) * 16777619) & 4294967295;
    end loop;
    return h % partitions;
end
$$;

-- Which hash spread a partitioned store's tenants: builds before this one used MD5. A store
-- spread so over more than one partition is refused until its count is set again (every
-- replica stopped, `callcenter partitions set <n>`); with one partition the hash is moot.
alter table es_partitioning add column if not exists hash text not null default 'md5';
alter table es_partitioning alter column hash set default 'fnv1a';
