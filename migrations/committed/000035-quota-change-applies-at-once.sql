--! Previous: sha1:9a8bab02086d27c09861cbf1f0543ed24228a62d
--! Hash: sha1:1eedc29f82b205deb31d5374829ef6e736be1516
--! Message: quota-change-applies-at-once

--! split: 1-current.sql
/*
 * A site's monthly event quota, changed mid-month, applies at once.
 *
 * A month's quota is held as 16 shards of what is left (app_private.quota_shards), made when the
 * month's first billable event arrives. Nothing touched them when sites.monthly_event_quota
 * changed, so a raised quota went on refusing events as quota_exceeded until the next month, and
 * a lowered one let the old number through. Now a change recounts what is left, from the ledger,
 * for every month that still takes events. (A quota set to null needs nothing: take_quota lets
 * every event through without reading the shards, and they are recounted if a quota returns.)
 */

/* What is left of the site's quota for a month: the quota less the month's billable ledger rows. */
create or replace function app_private.quota_left(site app_public.sites, period date) returns bigint
  language sql stable
as $$
  select greatest(site.monthly_event_quota - pg_catalog.count(*), 0)
    from app_public.ingest_idempotency l
   where l.site_id = site.id and l.billable
     and l.occurred_at >= (app_private.period_bounds(quota_left.period)).starts_at
     and l.occurred_at < (app_private.period_bounds(quota_left.period)).ends_at;
$$;
comment on function app_private.quota_left(app_public.sites, date) is
  E'The site''s monthly quota less the billable events of that month in the ledger (never below 0).';

/* An amount split over the 16 shards as evenly as whole events allow. */
create or replace function app_private.quota_shares(total bigint) returns table (shard smallint, remaining bigint)
  language sql immutable
as $$
  select s::smallint, quota_shares.total / 16 + case when s < quota_shares.total % 16 then 1 else 0 end
    from pg_catalog.generate_series(0, 15) as s;
$$;
comment on function app_private.quota_shares(bigint) is E'Splits what is left of a month''s quota over its 16 shards.';

create or replace function app_private.ensure_quota_shards(site app_public.sites, period date) returns void
  language plpgsql volatile
as $$
declare
  v_site app_public.sites;
begin
  if site.monthly_event_quota is null
     or exists (select 1 from app_private.quota_shards q where q.site_id = site.id and q.period = ensure_quota_shards.period) then
    return;
  end if;
  -- The quota as it stands now, not as the request found it, and held until commit: a change
  -- being made waits for these shards and then recounts them, or these wait for the change.
  select s.* into v_site from app_public.sites s where s.id = site.id for share;
  if v_site.monthly_event_quota is null then
    return;
  end if;
  insert into app_private.quota_shards (site_id, period, shard, remaining)
  select v_site.id, ensure_quota_shards.period, s.shard, s.remaining
    from app_private.quota_shares(app_private.quota_left(v_site, ensure_quota_shards.period)) s
  on conflict do nothing;
end;
$$;

/*
 * Runs as the owner: the quota is changed by an admin's session, which cannot see the shards.
 * Every shard of a month is locked first, in shard order: a transaction holding one (it took an
 * event from it) commits before the count, and one arriving later waits, then reads the new
 * figures. Shards being made meanwhile hold the site row (ensure_quota_shards), so the update
 * that fired this waited for them. The months that still take events are the current one and,
 * for events up to 7 days late, the one before.
 */
create or replace function app_private.tg_sites__apply_quota_change() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_period date;
begin
  for v_period in
    select distinct q.period from app_private.quota_shards q
     where q.site_id = new.id
       and q.period >= pg_catalog.date_trunc('month', (pg_catalog.now() - interval '7 days') at time zone 'UTC')::date
     order by 1
  loop
    perform 1 from app_private.quota_shards q where q.site_id = new.id and q.period = v_period order by q.shard for update;
    update app_private.quota_shards q set remaining = s.remaining
      from app_private.quota_shares(app_private.quota_left(new, v_period)) s
     where q.site_id = new.id and q.period = v_period and q.shard = s.shard;
  end loop;
  return null;
end;
$$;
comment on function app_private.tg_sites__apply_quota_change() is
  E'Recounts what is left of a site''s quota for the months still taking events when the quota changes.';

drop trigger if exists _300_apply_quota_change on app_public.sites;
create trigger _300_apply_quota_change after update of monthly_event_quota on app_public.sites
  for each row when (new.monthly_event_quota is not null and new.monthly_event_quota is distinct from old.monthly_event_quota)
  execute function app_private.tg_sites__apply_quota_change();
