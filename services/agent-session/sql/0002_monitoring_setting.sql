-- The tenant setting "agents see when a supervisor is on their call" (default off).
alter table as_agent_defaults add column if not exists agents_see_monitoring boolean not null default false;
