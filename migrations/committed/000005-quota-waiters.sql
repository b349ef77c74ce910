--! Previous: sha1:e22fe2173a6defb9c3d02d442db72a778399cc41
--! Hash: sha1:8f1a59c1d938d2223808df8f36c598b5b2df3058
--! Message: quota-waiters

--! split: 1-quota-waiters.sql
/*
 * Quota without deadlocks under contention: transactions that must wait for a busy quota shard
 * (their own and every free one are used up) now wait one at a time per site and month. Seen as
 * a rare "deadlock detected" (HTTP 500) when 40 single-event requests raced for a quota of 20.
 */
/* Takes one billable event from the site's quota for a period; false when it is used up. */
create or replace function app_private.take_quota(site app_public.sites, period date) returns boolean
  language plpgsql volatile
as $$
declare
  v_own smallint := (pg_catalog.pg_backend_pid() % 16)::smallint;
  v_holding boolean := pg_catalog.current_setting('app.holds_quota_shard', true) = 'on';
  v_shard smallint;
begin
  if site.monthly_event_quota is null then
    return true;
  end if;
  -- Our own shard first, then any shard nobody holds; wait for a busy one only while holding
  -- none, so that waiting transactions never hold what others wait for.
  select q.shard into v_shard from app_private.quota_shards q
   where q.site_id = site.id and q.period = take_quota.period and q.shard = v_own and q.remaining > 0
   for update skip locked;
  if v_shard is null then
    select q.shard into v_shard from app_private.quota_shards q
     where q.site_id = site.id and q.period = take_quota.period and q.remaining > 0
     order by q.shard limit 1 for update skip locked;
  end if;
  if v_shard is null and not v_holding then
    -- One waiter per site and month: a waiting FOR UPDATE keeps its lock on a row it then
    -- finds used up, so two waiters could otherwise each hold a row the other waits for.
    perform pg_catalog.pg_advisory_xact_lock(
      pg_catalog.hashtextextended('quota/' || site.id::text || '/' || take_quota.period::text, 0));
    select q.shard into v_shard from app_private.quota_shards q
     where q.site_id = site.id and q.period = take_quota.period and q.remaining > 0
     order by q.shard limit 1 for update;
  end if;
  if v_shard is null then
    return false;
  end if;
  update app_private.quota_shards q set remaining = q.remaining - 1
   where q.site_id = site.id and q.period = take_quota.period and q.shard = v_shard;
  perform pg_catalog.set_config('app.holds_quota_shard', 'on', true);
  return true;
end;
$$;
comment on function app_private.take_quota(app_public.sites, date) is
  E'Consumes one event of a site''s monthly quota, exact under concurrency, without one hot counter row.';
