-- Webhook subscriptions of each tenant (the secret signs the deliveries; it is shown once).
create table if not exists wh_subscriptions (
    id               uuid primary key,
    tenant           text not null,
    url              text not null,
    secret           text not null,
    event_types      text[] not null,
    agents           text[] not null,
    queues           text[] not null,
    allow_http       boolean not null,
    description      text not null,
    status           text not null default 'active',
    suspended_reason text,
    -- Retries count from here after a resume (not from the event's time).
    resumed_at       timestamptz,
    created_at       timestamptz not null default now()
);
create index if not exists wh_subscriptions_tenant on wh_subscriptions (tenant);

-- Every attempt, newest kept (pruned to the last 1000 per subscription).
create table if not exists wh_deliveries (
    subscription uuid not null,
    seq          bigserial,
    event_id     uuid not null,
    event_type   text not null,
    attempt      int not null,
    outcome      text not null,
    status_code  int,
    latency_ms   bigint not null,
    error        text,
    at           timestamptz not null default now(),
    primary key (subscription, seq)
);
