-- The JetStream ack floor a lease holder re-created a durable consumer from (see
-- cc_bus::consumer::pbx_channels_from_ack_floor): kept outside NATS, so that a consumer deleted
-- by a holder that failed before creating it again (a NATS node lost in between) is created
-- again from its floor by the next holder, not from the newest fact (which skipped the facts
-- in between: a caller never entered, found by the replicas test).
create table if not exists es_consumer_floors (
    name text primary key,
    floor bigint not null,
    updated_at timestamptz not null default now()
);
