-- What the portal shows of a queue call while an agent handles it.
create table if not exists rm_call_info (
    tenant        text not null,
    call          text not null,
    queue         text not null,
    caller_number text not null,
    caller_name   text not null,
    entered_at    timestamptz not null,
    primary key (tenant, call)
);
