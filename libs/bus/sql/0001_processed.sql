-- Event ids a consumer has handled: a redelivered event is recognised and changes nothing.
create table if not exists bus_processed (
    consumer     text not null,
    event_id     uuid not null,
    processed_at timestamptz not null default now(),
    primary key (consumer, event_id)
);
