--! Previous: sha1:9665863762373e328cadb7832300622b3bbbf6dc
--! Hash: sha1:de7056978e23c6921ae40dcf67ba8ee454f0bc72
--! Message: quota-change-counts-without-holding

--! split: 1-current.sql
/*
 * A quota change counts the month's events without holding ingestion back.
 *
 * Migration 000035 locked every shard of the month and then counted the month's billable ledger
 * rows: for a large site the count takes a while, and the site's ingestion waited for it. Now
 * the count runs first, holding nothing, together with what the shards held at that moment (one
 * snapshot); then the shards are locked (a transaction holding one commits first) and what they
 * lost since is what was taken after the count. Used = counted + (held then - held now), exact:
 * an event is either in the count or took its unit from a shard after it.
 */

/* The site's billable events of a month, in the ledger. */
create or replace function app_private.quota_used(site_id uuid, period date) returns bigint
  language sql stable
as $$
  select pg_catalog.count(*)
    from app_public.ingest_idempotency l
   where l.site_id = quota_used.site_id and l.billable
     and l.occurred_at >= (app_private.period_bounds(quota_used.period)).starts_at
     and l.occurred_at < (app_private.period_bounds(quota_used.period)).ends_at;
$$;
comment on function app_private.quota_used(uuid, date) is E'The billable events of a site and month in the ledger.';

create or replace function app_private.quota_left(site app_public.sites, period date) returns bigint
  language sql stable
as $$
  select greatest(site.monthly_event_quota - app_private.quota_used(site.id, quota_left.period), 0);
$$;

create or replace function app_private.tg_sites__apply_quota_change() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_period date;
  v_counted bigint;
  v_held_then bigint;
  v_held_now bigint;
begin
  for v_period in
    select distinct q.period from app_private.quota_shards q
     where q.site_id = new.id
       and q.period >= pg_catalog.date_trunc('month', (pg_catalog.now() - interval '7 days') at time zone 'UTC')::date
     order by 1
  loop
    -- One statement, one snapshot: the ledger's count and what the shards held beside it.
    select app_private.quota_used(new.id, v_period),
           (select pg_catalog.sum(q.remaining) from app_private.quota_shards q where q.site_id = new.id and q.period = v_period)
      into v_counted, v_held_then;
    perform 1 from app_private.quota_shards q where q.site_id = new.id and q.period = v_period order by q.shard for update;
    select pg_catalog.sum(q.remaining) into v_held_now from app_private.quota_shards q where q.site_id = new.id and q.period = v_period;
    update app_private.quota_shards q set remaining = s.remaining
      from app_private.quota_shares(greatest(new.monthly_event_quota - (v_counted + v_held_then - v_held_now), 0)) s
     where q.site_id = new.id and q.period = v_period and q.shard = s.shard;
  end loop;
  return null;
end;
$$;
