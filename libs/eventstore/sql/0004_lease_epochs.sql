-- Each lease's epoch: raised by every new holder as it takes the lease. An append fenced with
-- an epoch (EventStore::append_fenced) commits only while that epoch is the lease's: it reads
-- the epoch FOR SHARE, which a new holder's raise waits for, so once a holder has raised the
-- epoch no append of an earlier holder can commit any more.
create table if not exists es_lease_epochs (
    name text primary key,
    epoch bigint not null
);
