-- es_append as one SQL statement (replaces the PL/pgSQL function of 0002 for the hot path).
-- Inserts the events at the next versions when the stream is at the expected version
-- ($5: null = any), and returns the version the stream was at and the new positions.
-- Nothing inserted + a version other than expected = a conflict. A reused event id or a
-- concurrent writer taking the same version fail on the unique indexes; the caller turns
-- those into "duplicate" or "conflict". Kept here for reference: the statement itself lives in
-- src/store.rs (APPEND), prepared once per connection.
drop function if exists es_append(text, text, text, text, bigint, uuid[], text[], integer[], jsonb[], jsonb[]);
