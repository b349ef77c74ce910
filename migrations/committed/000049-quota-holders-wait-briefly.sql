--! Previous: sha1:14f2cb6bf9064d663ef0474e36d1e7ab295a83c5
--! Hash: sha1:9665863762373e328cadb7832300622b3bbbf6dc
--! Message: quota-holders-wait-briefly

--! split: 1-current.sql
/*
 * A transaction that already holds a quota shard waits a little for a busy one before refusing.
 *
 * take_quota lets a transaction that holds a shard (it took an event from it) never wait for
 * another, so that no two waiters hold what the other waits for. But near the end of a month's
 * quota the units left are often only in shards other transactions hold for a few milliseconds;
 * the holder then refused its event as quota_exceeded although units remained, and the site ended
 * the month under its quota with events refused. Now a holder finding no free shard waits for a
 * busy one that still has units, for at most 200 ms (lock_timeout, well under deadlock_timeout):
 * the usual holder commits within that and the unit is taken. Two holders waiting for each other
 * cannot deadlock: the first to time out refuses its event, as before, and goes on.
 */
create or replace function app_private.take_quota(site app_public.sites, period date) returns boolean
  language plpgsql volatile
as $$
declare
  v_own smallint := (pg_catalog.pg_backend_pid() % 16)::smallint;
  v_holding boolean := pg_catalog.current_setting('app.holds_quota_shard', true) = 'on';
  v_shard smallint;
  v_lock_timeout text;
begin
  if site.monthly_event_quota is null then
    return true;
  end if;
  -- Our own shard first, then any shard nobody holds.
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
  elsif v_shard is null then
    -- Holding a shard: wait for a busy one, but briefly (see above). The subtransaction is only
    -- on this path, which is near the end of a quota and under contention.
    v_lock_timeout := pg_catalog.current_setting('lock_timeout');
    begin
      perform pg_catalog.set_config('lock_timeout', '200ms', true);
      select q.shard into v_shard from app_private.quota_shards q
       where q.site_id = site.id and q.period = take_quota.period and q.remaining > 0
       order by q.shard limit 1 for update;
    exception when lock_not_available then
      v_shard := null;
    end;
    perform pg_catalog.set_config('lock_timeout', v_lock_timeout, true);
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
