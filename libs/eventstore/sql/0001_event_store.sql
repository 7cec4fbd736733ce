-- The event store of record. Every state change of the product is one row here.
create table if not exists es_events (
    -- Global position: allocated at insert time, so NOT in commit order (see xid). Unique by
    -- construction; its index is (xid, position) below, the order readers use: one index
    -- fewer to maintain on every append.
    position       bigint generated always as identity,
    -- The writing transaction's id (pg_current_xact_id). Readers only read rows whose xid is
    -- below the oldest transaction still running, and order by (xid, position), so a
    -- transaction that commits late can never be skipped.
    xid            bigint not null default (pg_current_xact_id()::text::bigint),
    event_id       uuid not null unique,
    tenant         text not null,
    stream         text not null,
    category       text not null,
    stream_id      text not null,
    version        bigint not null,
    event_type     text not null,
    schema_version integer not null,
    data           jsonb not null,
    metadata       jsonb not null,
    recorded_at    timestamptz not null default clock_timestamp(),
    unique (stream, version)
);
create unique index if not exists es_events_xid_position on es_events (xid, position);
create index if not exists es_events_category_xid_position on es_events (category, xid, position);

-- Named reader positions (relay, subscribers that do not keep their own).
create table if not exists es_checkpoints (
    name       text primary key,
    xid        bigint not null,
    position   bigint not null,
    updated_at timestamptz not null default now()
);
