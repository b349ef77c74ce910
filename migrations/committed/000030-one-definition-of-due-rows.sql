--! Previous: sha1:61cfd93214d90660439985bdbc2c66aadda54b43
--! Hash: sha1:28ffb6bd7b8890479f6f21aa89ac020b7db22a90
--! Message: one-definition-of-due-rows

--! split: 1-current.sql
/*
 * One definition of a site's due rows.
 *
 * Which of a site's rows an uploader may take next (open, due, not leased or its lease run out,
 * a retraction only once its conversion is out of flight, oldest first) was written in
 * claim_offline_conversion_jobs and again in lock_conversion_batch (migration 000027). It now
 * lives in lock_due_conversions, which both call: it locks up to "limit" of them for the
 * calling transaction (FOR UPDATE SKIP LOCKED, walking the due index in order: migration
 * 000019) and returns their ctids and the rows as locked, oldest first. Taking the rows after that is each
 * caller's own business: a lease, or the upload loop's transaction.
 */
drop function if exists app_private.lock_due_conversions(uuid, text, integer);

create function app_private.lock_due_conversions(site_id uuid, provider text, "limit" integer)
  returns table (row_ctid tid, queued app_public.offline_conversion_queue)
  language sql volatile
  set search_path to pg_catalog, public, pg_temp
  set jit to off
  set enable_bitmapscan to off
as $$
  select q.ctid, q from app_public.offline_conversion_queue q
   where q.site_id = lock_due_conversions.site_id and q.stage = 'open' and q.retry_at <= pg_catalog.now()
     and (q.status = 'pending' or q.locked_until < pg_catalog.now())
     and q.provider = lock_due_conversions.provider
     -- A retraction waits while its conversion is in flight: Google must see them in order.
     and (q.kind = 'conversion'
          or coalesce((select c.status in ('pending', 'processing') from app_public.offline_conversion_queue c
                        where c.site_id = q.site_id and c.sale_id = q.sale_id and c.provider = q.provider
                          and c.kind = 'conversion'), false) is false)
   order by q.retry_at, q.created_at, q.id
   limit lock_due_conversions."limit"
     for update of q skip locked;
$$;

comment on function app_private.lock_due_conversions(uuid, text, integer) is
  E'Locks up to "limit" of the site''s rows an uploader may take next (due, not leased, a retraction only once its conversion is out of flight), oldest first, for the calling transaction; returns their ctids and the rows as locked.';

create or replace function app_private.claim_offline_conversion_jobs(provider text, "limit" integer, site_id uuid default null,
                                                                     worker text default null, lease_seconds integer default 300,
                                                                     destination_id uuid default null)
  returns setof app_public.offline_conversion_queue
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
  set jit to off
  set enable_bitmapscan to off
as $$
declare
  v_rows tid[];
begin
  if (claim_offline_conversion_jobs."limit" between 1 and 2000 and claim_offline_conversion_jobs.lease_seconds between 10 and 86400) is not true then
    raise exception using errcode = '22023', message = 'limit must be 1 to 2000 and lease_seconds 10 to 86400.';
  end if;
  if claim_offline_conversion_jobs.site_id is not null then
    v_rows := array(select d.row_ctid from app_private.lock_due_conversions(claim_offline_conversion_jobs.site_id,
                                                                            claim_offline_conversion_jobs.provider,
                                                                            claim_offline_conversion_jobs."limit") d);
  else
    -- Every site at once (not the upload loop's way): the same rule, without the per-site index order.
    v_rows := array(
      select q.ctid from app_public.offline_conversion_queue q
       where q.stage = 'open' and q.retry_at <= pg_catalog.now()
         and (q.status = 'pending' or q.locked_until < pg_catalog.now())
         and q.provider = claim_offline_conversion_jobs.provider
         and (q.kind = 'conversion'
              or coalesce((select c.status in ('pending', 'processing') from app_public.offline_conversion_queue c
                            where c.site_id = q.site_id and c.sale_id = q.sale_id and c.provider = q.provider
                              and c.kind = 'conversion'), false) is false)
       order by q.retry_at, q.created_at, q.id
       limit claim_offline_conversion_jobs."limit"
         for update skip locked);
  end if;
  return query
  update app_public.offline_conversion_queue q
     set status = 'processing',
         locked_by = coalesce(claim_offline_conversion_jobs.worker, pg_catalog.pg_backend_pid()::text),
         locked_until = pg_catalog.now() + pg_catalog.make_interval(secs => claim_offline_conversion_jobs.lease_seconds),
         attempts = q.attempts + 1,
         destination_id = coalesce(claim_offline_conversion_jobs.destination_id, q.destination_id),
         updated_at = greatest(pg_catalog.now(), q.updated_at + interval '1 millisecond')
   where q.ctid = any (v_rows)
  returning q.*;
end;
$$;

create or replace function app_private.lock_conversion_batch(
  site_id uuid, "limit" integer, lease_seconds integer,
  out ctids tid[], out ids uuid[], out payloads json)
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
  set jit to off
as $$
declare
  v_rows app_public.offline_conversion_queue[];
begin
  if (lock_conversion_batch."limit" between 1 and 2000 and lock_conversion_batch.lease_seconds between 10 and 86400) is not true then
    raise exception using errcode = '22023', message = 'limit must be 1 to 2000 and lease_seconds 10 to 86400.';
  end if;
  -- The lease: a session that holds the batch and stops talking is ended, which releases it.
  perform pg_catalog.set_config('idle_in_transaction_session_timeout', (lock_conversion_batch.lease_seconds * 1000)::text, true);
  select coalesce(pg_catalog.array_agg(d.row_ctid), '{}'), coalesce(pg_catalog.array_agg((d.queued).id), '{}'),
         coalesce(pg_catalog.array_agg(d.queued), '{}')
    into ctids, ids, v_rows
    from app_private.lock_due_conversions(lock_conversion_batch.site_id, 'google', lock_conversion_batch."limit") d;
  select coalesce(pg_catalog.json_agg(p), '[]') into payloads
    from app_private.shape_conversion_payloads(lock_conversion_batch.site_id, v_rows) p;
end;
$$;
