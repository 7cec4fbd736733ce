-- Replies of commands sent with an Idempotency-Key: a retry with the same key gets the same
-- reply and has no second effect.
create table if not exists bus_idempotency (
    service    text not null,
    tenant     text not null,
    key        text not null,
    command    text not null,
    reply      jsonb not null,
    created_at timestamptz not null default now(),
    primary key (service, tenant, key)
);
