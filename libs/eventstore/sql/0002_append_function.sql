-- Appends events to one stream in one round trip and one transaction.
-- p_expected: null = any version, 0 = the stream must not exist, n = the stream must be at n.
-- Outcomes: 'appended', 'duplicate' (every id already stored in this stream: same result again),
-- 'conflict' (expected version mismatch, stream_version = actual), 'id_reused'.
-- Two writers racing for the same next version: the second waits on the unique index
-- (stream, version) until the first commits, then fails with a unique violation, which the
-- caller reports as a conflict (or retries, for "any version"). No per-stream row is locked or
-- updated: that halves the write-ahead log of an append.
create or replace function es_append(
    p_stream text, p_tenant text, p_category text, p_stream_id text, p_expected bigint,
    p_ids uuid[], p_types text[], p_schema_versions integer[], p_data jsonb[], p_metadata jsonb[])
returns table (outcome text, stream_version bigint, positions bigint[])
-- Generic plans of the statements below get high cost estimates (array parameters), which
-- would make PostgreSQL JIT-compile them on every call: a millisecond each.
language plpgsql set jit = off as $$
#variable_conflict use_column
declare
    v_current  bigint;
    v_existing bigint;
    v_n        bigint := coalesce(array_length(p_ids, 1), 0);
    v_positions bigint[];
begin
    select coalesce(max(e.version), 0) into v_current from es_events e where e.stream = p_stream;

    select count(*) into v_existing from es_events e where e.event_id = any (p_ids);
    if v_existing > 0 then
        if v_existing = v_n and not exists (
            select 1 from es_events e where e.event_id = any (p_ids) and e.stream <> p_stream) then
            select array_agg(e.position order by e.version), max(e.version)
              into v_positions, v_current
              from es_events e where e.event_id = any (p_ids);
            return query select 'duplicate'::text, v_current, v_positions;
        else
            return query select 'id_reused'::text, v_current, null::bigint[];
        end if;
        return;
    end if;

    if p_expected is not null and p_expected <> v_current then
        return query select 'conflict'::text, v_current, null::bigint[];
        return;
    end if;

    with inserted as (
        insert into es_events (event_id, tenant, stream, category, stream_id, version,
                               event_type, schema_version, data, metadata)
        select u.id, p_tenant, p_stream, p_category, p_stream_id, v_current + u.ord,
               u.typ, u.sv, u.d, u.m
          from unnest(p_ids, p_types, p_schema_versions, p_data, p_metadata)
               with ordinality as u (id, typ, sv, d, m, ord)
         order by u.ord
        returning position, version
    )
    select array_agg(i.position order by i.version) into v_positions from inserted i;

    -- No NOTIFY here: NOTIFY serialises the commits of every notifying transaction (a global
    -- lock held through the commit's fsync), which defeats group commit. The writer sends the
    -- wake-up hint after its commit instead (see EventStore::append).
    return query select 'appended'::text, v_current + v_n, v_positions;
end $$;
