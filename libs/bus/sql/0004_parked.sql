-- Stored events a consumer could not apply and skipped (parked), one row per consumer and
-- event: what an operator lists to see what a read model or decider left out, and why.
-- `reason`: 'undecodable' (a type this build does not know, data that does not fit it) or
-- 'refused' (its application failed for a reason in the data, e.g. a constraint). The event
-- itself stays in the store: a rebuild (projections) or a new lease (deciders) reads it again.
create table if not exists bus_parked (
    consumer   text not null,
    position   bigint not null,
    xid        bigint not null,
    event_id   uuid not null,
    tenant     text not null,
    stream     text not null,
    version    bigint not null,
    event_type text not null,
    reason     text not null,
    error      text not null,
    parked_at  timestamptz not null default now(),
    primary key (consumer, position)
);
