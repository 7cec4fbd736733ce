-- The SIP gateway's devices: what digest verification needs (HA1 = MD5(user:realm:password)),
-- never the password itself.
create table if not exists sip_devices (
    tenant     text not null,
    device     text not null,
    realm      text not null,
    ha1        text not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    primary key (tenant, device)
);

-- Each device's registration (one binding per device: the newest REGISTER wins). Kept so that
-- devices stay online across a gateway restart.
create table if not exists sip_bindings (
    tenant     text not null,
    device     text not null,
    contact    text not null,
    transport  text not null,
    source     text not null,
    expires_at timestamptz not null,
    primary key (tenant, device)
);

-- The gateway's live channels. Dialogs and RTP live in memory; after a restart every channel
-- listed here is reported hung up, so no agent stays on a call that no longer exists.
create table if not exists sip_channels (
    tenant     text not null,
    channel    text not null,
    created_at timestamptz not null default now(),
    primary key (tenant, channel)
);
