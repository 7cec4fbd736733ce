-- Reports and decisions the router could not record for a reason that retrying cannot cure
-- (the store refused the events themselves, e.g. text PostgreSQL cannot hold): parked here, with
-- what caused them, and skipped from then on (a caller channel named here is not entered
-- again, a call named here gets no further decision), instead of being retried forever.
create table if not exists qr_parked (
    id bigint generated always as identity primary key,
    tenant text not null,
    -- The PBX report that led to it: its subject and its sequence in the PBX stream (none for
    -- the router's own decisions: timers, wrap-ups, reconciliation).
    subject text,
    stream_sequence bigint,
    payload bytea,
    -- The caller channel and the call, control characters escaped.
    channel text,
    call text not null,
    event_types text[] not null,
    error text not null,
    parked_at timestamptz not null default now()
);
