-- The agent's calls today ($1 tenant, $2 agent): one row per call that rang the agent's phone,
-- was transferred to them or that they dialled, since the start of the tenant's day (its time
-- zone), newest first.
with day as (
  select date_trunc('day', now() at time zone coalesce(t.time_zone, 'UTC')) at time zone coalesce(t.time_zone, 'UTC') as start
    from (select 1) one
    left join reporting.tenants t on t.tenant = $1
),
mine as (
  select s.call,
         min(s.started_at) filter (where s.kind in ('offer', 'connected', 'dial')) as at,
         bool_or(s.kind = 'dial' and s.ended_at is null) as dialing,
         bool_or(s.kind = 'dial' and s.outcome like 'failed:%') as not_connected,
         bool_or(s.kind = 'connected') as connected,
         bool_or(s.kind = 'connected' and s.ended_at is null) as connected_now,
         bool_or(s.kind = 'offer' and s.outcome = 'missed') as missed,
         bool_or(s.kind = 'offer' and s.outcome = 'rejected') as rejected,
         bool_or(s.kind = 'offer' and s.ended_at is null) as ringing,
         (array_agg(s.queue order by s.seq) filter (where s.kind = 'offer'))[1] as offer_queue,
         coalesce(sum(s.duration_ms) filter (where s.kind = 'connected'), 0)
           - coalesce(sum(s.duration_ms) filter (where s.kind = 'hold'), 0) as talk_ms
    from reporting.call_segments s, day
   where s.tenant = $1 and s.agent = $2 and s.kind in ('offer', 'connected', 'hold', 'dial')
     and s.started_at >= day.start
   group by s.call
)
select m.call, m.at, c.caller_number, c.caller_name,
       coalesce(m.offer_queue, c.queue, '') as queue,
       coalesce(q.name, m.offer_queue, c.queue, '') as queue_name,
       case when m.connected_now then 'in_progress'
            when m.connected then 'answered'
            when m.dialing then 'dialing'
            when m.not_connected then 'not_connected'
            when m.missed then 'missed'
            when m.rejected then 'rejected'
            when m.ringing then 'ringing'
            else 'withdrawn' end as outcome,
       greatest(m.talk_ms, 0)::bigint as talk_ms,
       case when c.disposition_agent = $2 then c.disposition end as disposition,
       coalesce(c.direction, 'inbound') as direction
  from mine m
  join reporting.calls c on c.tenant = $1 and c.call = m.call
  left join reporting.queues q on q.tenant = $1 and q.queue = coalesce(m.offer_queue, c.queue)
 where m.at is not null
 order by m.at desc
 limit 100
