--! Previous: sha1:fda971019106e805589fc0a8a83f2ae24e20c634
--! Hash: sha1:601f8181c7d169ccca42e3c0a590681f09da4abf
--! Message: watchtower

--! split: 1-current.sql
/*
 * Watchtower: the product watching each site's loop to Google, and saying so where the site's
 * people look (GraphQL), not only where operators look (/api/metrics).
 *
 * app_public.watchtower_checks holds the latest verdict of each check for each site: ok, warn
 * or fail, what was seen (detail), when it was checked and since when the verdict has stood.
 * One row per (site, check), replaced in place: the history of figures belongs to Prometheus;
 * what a person needs here is what is wrong now and for how long.
 *
 * The watchtower task (tasks/watchtower.ts, every 5 minutes) runs app_private.run_watchtower().
 * The checks are about things a site can act on, each decided in SQL:
 * - destination_credentials: the site's live destination can upload (fail while Google has
 *   refused its credentials: needs_reauth, with Google's code);
 * - delivery_lag: the longest-due conversion has waited under an hour (ok), under six hours
 *   (warn), or longer (fail);
 * - erasure_requests: no erasure request has waited more than 24 hours (fail otherwise: the law
 *   gives a month, but a request stuck for a day means the job is failing).
 * A site only gets the checks that apply to it: delivery checks once it has a live destination,
 * the erasure check once it has had a request. Each is cheap however large the site: the lag
 * reads the queue's due index, the others read a site's destination and erasure requests.
 * (A failure-rate check would read a site's whole delivered history, which no index orders by
 * time; the per-row codes are in GraphQL and the totals in conversionTotals.)
 */
drop function if exists app_private.run_watchtower();
drop table if exists app_public.watchtower_checks;

create table app_public.watchtower_checks (
  site_id uuid not null references app_public.sites (id) on delete cascade,
  check_name text not null,
  status text not null constraint watchtower_checks_status check (status in ('ok', 'warn', 'fail')),
  detail jsonb not null default '{}',
  checked_at timestamptz not null default now(),
  status_since timestamptz not null default now(),
  primary key (site_id, check_name)
);
alter table app_public.watchtower_checks enable row level security;
create policy select_member on app_public.watchtower_checks for select
  using (site_id in (select app_hidden.current_user_site_ids()));
grant select on app_public.watchtower_checks to :DATABASE_VISITOR;

comment on table app_public.watchtower_checks is
  E'@behavior -insert -update -delete\nWatchtower: the latest verdict of each check on a site (ok, warn, fail), refreshed every 5 minutes.';
comment on column app_public.watchtower_checks.site_id is E'The site.';
comment on column app_public.watchtower_checks.check_name is
  E'destination_credentials, delivery_lag or erasure_requests.';
comment on column app_public.watchtower_checks.status is E'ok, warn or fail.';
comment on column app_public.watchtower_checks.detail is E'What the check saw (figures and codes; never personal data).';
comment on column app_public.watchtower_checks.checked_at is E'When the check last ran.';
comment on column app_public.watchtower_checks.status_since is E'Since when the status has been what it is.';

create function app_private.run_watchtower()
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

comment on function app_private.run_watchtower() is
  E'Runs every Watchtower check for every site and stores each verdict in watchtower_checks (status_since kept while the verdict holds); returns how many it wrote.';
