-- Sign-in throttling that cannot be turned against an office (src/throttle.rs): failures per
-- account from one address (`pair:...`), per account (`login:...`) and per address (`addr:...`)
-- in fixed windows; a key over its limit refuses until its window ends, so `locked_until` goes.
-- The old `addr:` keys were taken from any client's X-Forwarded-For: they are dropped.
delete from auth_throttle;
alter table auth_throttle drop column if exists locked_until;
create index if not exists auth_throttle_window on auth_throttle (first_failure_at);

-- Where each account last signed in with the right password: a throttled account or address
-- still lets its own people in from there. Pruned after 30 days without a sign-in.
create table if not exists auth_known_clients (
    tenant          text not null,
    account         text not null,  -- `<agent|user>:<login>`
    client          text not null,  -- an IPv4 address or an IPv6 /64
    last_success_at timestamptz not null,
    primary key (tenant, account, client)
);
create index if not exists auth_known_clients_age on auth_known_clients (last_success_at);

-- Pruning finds expired and ended sessions without a full scan.
create index if not exists auth_sessions_expiry on auth_sessions (expires_at);
create index if not exists auth_sessions_revoked on auth_sessions (revoked_at) where revoked_at is not null;
