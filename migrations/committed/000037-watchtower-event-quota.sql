--! Previous: sha1:756b5af5f7652280a5c24a167a8a5d423efcdd45
--! Hash: sha1:bd4eca9aad8e0ee491a2807ceb7e83c2a3159f13
--! Message: watchtower-event-quota

--! split: 1-current.sql
/*
 * Watchtower's fourth check, event_quota: a site's tracking is not about to go blind.
 *
 * Past its monthly event quota a site's events are refused one by one (quota_exceeded): the
 * tracker is told, but nobody reads a tracker's answers, and attribution, sessions and the
 * conversions built on them stop for the rest of the month. The check reads what is left of the
 * current month's quota (its 16 shards; no shards yet means none used): ok, warn once a tenth or
 * less is left, fail when nothing is. Only sites with a quota get it.
 */
create or replace function app_private.run_watchtower()
  returns integer
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_count integer;
begin
  with verdicts as (
    -- The live destination can upload.
    select d.site_id, 'destination_credentials'::text as check_name,
           case when d.status = 'needs_reauth' then 'fail' else 'ok' end as status,
           pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object('destination_id', d.id, 'rail', d.rail, 'status', d.status,
                                                                      'reason', d.status_reason)) as detail
      from app_public.destinations d
     where d.status <> 'paused'
    union all
    -- The longest-due conversion's wait (the queue's open rows, through its due index).
    select d.site_id, 'delivery_lag',
           case when lag.waited is null or lag.waited < interval '1 hour' then 'ok'
                when lag.waited < interval '6 hours' then 'warn' else 'fail' end,
           pg_catalog.jsonb_build_object('oldest_due_seconds', coalesce(extract(epoch from lag.waited)::bigint, 0), 'due', lag.due)
      from app_public.destinations d
     cross join lateral (select pg_catalog.now() - min(q.retry_at) as waited, count(*) as due
                           from app_public.offline_conversion_queue q
                          where q.site_id = d.site_id and q.stage = 'open' and q.retry_at <= pg_catalog.now()) lag
     where d.status <> 'paused'
    union all
    -- Tracking is not about to go blind: what is left of this month's event quota (its 16 shards).
    select s.id, 'event_quota',
           case when q.left_now = 0 then 'fail' when q.left_now * 10 <= s.monthly_event_quota then 'warn' else 'ok' end,
           pg_catalog.jsonb_build_object('period', q.period, 'quota', s.monthly_event_quota, 'left', q.left_now)
      from app_public.sites s
     cross join lateral (select p.period, coalesce(sum(sh.remaining), s.monthly_event_quota) as left_now
                           from (select pg_catalog.date_trunc('month', pg_catalog.now() at time zone 'UTC')::date as period) p
                           left join app_private.quota_shards sh on sh.site_id = s.id and sh.period = p.period
                          group by p.period) q
     where s.monthly_event_quota is not null
    union all
    -- No erasure request waits more than a day.
    select e.site_id, 'erasure_requests',
           case when count(*) filter (where e.status <> 'completed' and e.requested_at < pg_catalog.now() - interval '24 hours') > 0
                then 'fail' else 'ok' end,
           pg_catalog.jsonb_build_object('open', count(*) filter (where e.status <> 'completed'),
                                         'overdue', count(*) filter (where e.status <> 'completed' and e.requested_at < pg_catalog.now() - interval '24 hours'))
      from app_public.erasure_requests e
     group by e.site_id
  ), written as (
    insert into app_public.watchtower_checks as w (site_id, check_name, status, detail, checked_at, status_since)
    select v.site_id, v.check_name, v.status, v.detail, pg_catalog.now(), pg_catalog.now() from verdicts v
    on conflict (site_id, check_name) do update
       set status = excluded.status, detail = excluded.detail, checked_at = excluded.checked_at,
           status_since = case when w.status = excluded.status then w.status_since else excluded.checked_at end
    returning 1
  )
  select count(*) into v_count from written;
  -- A check that no longer applies (the destination was paused or removed) is not left standing.
  delete from app_public.watchtower_checks w
   where w.checked_at < pg_catalog.now();
  return v_count;
end;
$$;

comment on column app_public.watchtower_checks.check_name is
  E'destination_credentials, delivery_lag, event_quota or erasure_requests.';
