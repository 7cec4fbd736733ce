-- Snapshots: a folded state with the store position it covers, so a new leader takes over from
-- the newest one plus the events after it instead of replaying the whole history. A cache: a
-- missing, unreadable or other-format row means a full replay, never wrong state (deleting
-- every row is always safe). One row per name (the newest); `format` is the writer's state
-- format, `events` how many events the state has folded since the first event.
create table if not exists es_snapshots (
    name text primary key,
    format text not null,
    xid bigint not null,
    position bigint not null,
    events bigint not null,
    taken_at timestamptz not null default now(),
    state bytea not null
);
