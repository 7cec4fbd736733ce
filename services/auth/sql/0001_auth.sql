-- The auth service's state. Every change here is recorded by an event appended in the same
-- transaction (agent_account-*, user-*, tenant-*, portal_session-* streams); secrets (password
-- hashes, session token hashes) live only here, never in events.
create table if not exists auth_tenants (
    tenant     text primary key,
    name       text not null,
    demo       boolean not null,
    created_at timestamptz not null default now()
);

create table if not exists auth_agents (
    tenant            text not null,
    agent             text not null,
    display_name      text not null,
    may_manage_queues boolean not null,
    enabled           boolean not null,
    password_hash     text not null,
    primary key (tenant, agent)
);

create table if not exists auth_users (
    tenant        text not null,
    username      text not null,
    display_name  text not null,
    role          text not null,
    password_hash text not null,
    primary key (tenant, username)
);

-- Portal sessions: only the SHA-256 of the token is stored.
create table if not exists auth_sessions (
    token_hash   bytea primary key,
    session_id   uuid not null unique,
    tenant       text not null,
    principal    text not null,
    role         text not null,
    display_name text not null,
    created_at   timestamptz not null default now(),
    expires_at   timestamptz not null,
    revoked_at   timestamptz
);
create index if not exists auth_sessions_principal on auth_sessions (tenant, principal) where revoked_at is null;

-- Failed sign-ins per key (`login:<kind>:<login>` or `addr:<client>`), for throttling.
create table if not exists auth_throttle (
    tenant           text not null,
    key              text not null,
    failures         integer not null,
    first_failure_at timestamptz not null,
    locked_until     timestamptz,
    primary key (tenant, key)
);
