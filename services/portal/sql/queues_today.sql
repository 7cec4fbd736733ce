-- Each queue of tenant $1 now and today: the callers waiting now and since when the longest
-- waits, and today's figures (the tenant's day, in its time zone: reporting.tenants.time_zone,
-- UTC when unknown) counted as reporting.queue_intervals counts them: a call once per queue,
-- its first wait there (today); service level = answered within the queue's threshold over the
-- waits that ended, less those abandoned within 5 s; average wait over the waits that ended
-- (answered, abandoned, left the queue).
with day as (
  select date_trunc('day', now() at time zone coalesce(t.time_zone, 'UTC')) at time zone coalesce(t.time_zone, 'UTC') as start,
         (now() at time zone coalesce(t.time_zone, 'UTC'))::date as day
    from (select 1) one
    left join reporting.tenants t on t.tenant = $1
),
waits as (
  select g.queue, g.ended_at, g.duration_ms, g.outcome,
         row_number() over (partition by g.call, g.queue order by g.seq) as nth
    from reporting.call_segments g, day
   where g.tenant = $1 and g.kind = 'queue' and g.started_at >= day.start
),
today as (
  select w.queue,
         count(*) as offered,
         count(*) filter (where w.outcome = 'answered') as answered,
         count(*) filter (where w.outcome = 'abandoned') as abandoned,
         count(*) filter (where w.outcome = 'abandoned' and w.duration_ms < 5000) as abandoned_short,
         count(*) filter (where w.ended_at is not null) as ended,
         avg(w.duration_ms) filter (where w.ended_at is not null) as avg_wait_ms,
         array_agg(w.duration_ms) filter (where w.outcome = 'answered') as answer_ms
    from waits w
   where w.nth = 1
   group by w.queue
),
now_waiting as (
  select s.queue, count(*) as waiting, min(s.started_at) as since
    from reporting.call_segments s
   where s.tenant = $1 and s.kind = 'queue' and s.ended_at is null
   group by s.queue
)
select q.queue, q.name,
       coalesce(n.waiting, 0) as waiting,
       n.since as longest_waiting_since,
       day.day::text as day,
       coalesce(rq.service_level_s, 20) as service_level_s,
       coalesce(t.offered, 0) as offered,
       coalesce(t.answered, 0) as answered,
       coalesce(t.abandoned, 0) as abandoned,
       round(100.0 * (select count(*) from unnest(t.answer_ms) a where a <= coalesce(rq.service_level_s, 20) * 1000)
             / nullif(t.ended - t.abandoned_short, 0), 1)::float8 as service_level_pct,
       round(t.avg_wait_ms)::bigint as avg_wait_ms
  from rm_queue_names q
  cross join day
  left join reporting.queues rq on rq.tenant = q.tenant and rq.queue = q.queue
  left join today t on t.queue = q.queue
  left join now_waiting n on n.queue = q.queue
 where q.tenant = $1
 order by q.queue
