--! Previous: sha1:f9521c3f529b36952d197dd8a7dc34285d71605a
--! Hash: sha1:dc14a8f5b6f38d05afccf8576a06b65e533d7877
--! Message: delivery-batch-in-one-transaction

--! split: 1-current.sql
/*
 * The upload loop holds a batch in a transaction instead of a lease: one write per conversion.
 *
 * A batch used to be written twice before it was done: the claim set every row 'processing'
 * under a lease (and committed), and after the upload the record found every row again by
 * primary key and wrote its outcome. In `npm run bench -- oci` the database spent about 60 µs
 * per conversion on this, most of the run's CPU.
 *
 * Now the upload loop opens a transaction, locks the batch's rows (FOR UPDATE SKIP LOCKED, a
 * row lock and no new row version), sends it to Google, writes each row's outcome by the ctid
 * found at the lock, and commits. Each conversion is written once.
 *
 * - The lock is the lease. Other uploaders skip the rows while it holds (SKIP LOCKED, as they
 *   skip a live lease). If the uploader dies, its connection goes and PostgreSQL rolls the
 *   transaction back: the rows are due again at once, untouched, and the re-send carries the
 *   same order ids, so Google counts each conversion once. If the uploader hangs, the session
 *   ends after lease_seconds idle in the transaction (idle_in_transaction_session_timeout).
 * - Nothing reads as 'processing' any more on this path; a batch in flight reads 'pending' until
 *   its outcome commits, and 'attempts' counts the uploads whose outcome was recorded. The
 *   lease API (claim_offline_conversion_jobs, record_upload_outcomes,
 *   release_claimed_conversions) stays for other claimers, and a row whose lease ran out is
 *   taken over here too.
 * - Whoever else changes a row in flight (undoing its sale, an erasure) waits for the commit,
 *   then sees the outcome: a conversion Google has is retracted, not cancelled.
 * - ctids are safe to carry from the lock to the record: no one else can update or delete a
 *   row while it is locked, and VACUUM does not move live rows. The record also checks each
 *   row's id against the one locked.
 */
drop function if exists app_private.claim_conversion_payloads(uuid, integer, text, integer, uuid);

create or replace function app_private.lock_conversion_batch(
  site_id uuid, "limit" integer, lease_seconds integer,
  out ctids tid[], out ids uuid[], out payloads json)
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
  set jit to off
  set enable_bitmapscan to off
as $$
declare
  v_rows app_public.offline_conversion_queue[];
begin
  if (lock_conversion_batch."limit" between 1 and 2000 and lock_conversion_batch.lease_seconds between 10 and 86400) is not true then
    raise exception using errcode = '22023', message = 'limit must be 1 to 2000 and lease_seconds 10 to 86400.';
  end if;
  -- The lease: a session that holds the batch and stops talking is ended, which releases it.
  perform pg_catalog.set_config('idle_in_transaction_session_timeout', (lock_conversion_batch.lease_seconds * 1000)::text, true);
  -- The same due rows, in the same order, as claim_offline_conversion_jobs takes.
  select pg_catalog.array_agg(due.ctid), pg_catalog.array_agg(due.id), pg_catalog.array_agg(due.q)
    into ctids, ids, v_rows
    from (select q.ctid, q.id, q from app_public.offline_conversion_queue q
           where q.site_id = lock_conversion_batch.site_id and q.stage = 'open' and q.retry_at <= pg_catalog.now()
             and (q.status = 'pending' or q.locked_until < pg_catalog.now())
             and q.provider = 'google'
             -- A retraction waits while its conversion is in flight: Google must see them in order.
             and (q.kind = 'conversion'
                  or coalesce((select c.status in ('pending', 'processing') from app_public.offline_conversion_queue c
                                where c.site_id = q.site_id and c.sale_id = q.sale_id and c.provider = q.provider
                                  and c.kind = 'conversion'), false) is false)
           order by q.retry_at, q.created_at, q.id
           limit lock_conversion_batch."limit"
             for update of q skip locked) due;
  ids := coalesce(ids, '{}');
  ctids := coalesce(ctids, '{}');
  select coalesce(pg_catalog.json_agg(p), '[]') into payloads
    from app_private.shape_conversion_payloads(lock_conversion_batch.site_id, coalesce(v_rows, '{}')) p;
end;
$$;

comment on function app_private.lock_conversion_batch(uuid, integer, integer) is
  E'Locks up to "limit" due rows of the site for the calling transaction (the upload loop''s lease; the session ends after lease_seconds idle) and returns them ready to send: their ctids and ids in one order, for record_batch_outcomes, and their payloads.';

/*
 * One outcome per locked row, as parallel arrays in the order lock_conversion_batch returned
 * the rows: kind (accepted, sent, retry, failed, or released: not sent, e.g. the credentials
 * were refused), Google's code and message, seconds to wait before a retry, and the request id
 * that carried the row (request_id is the fallback for rows without one).
 */
create or replace function app_private.record_batch_outcomes(
  site_id uuid, destination_id uuid, ctids tid[], ids uuid[], kinds text[], codes text[], messages text[],
  retry_after_seconds integer[], request_ids text[], request_id text default null)
  returns integer
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
  set jit to off
as $$
declare
  v_count integer;
  v_never_delivered uuid[];
begin
  if pg_catalog.cardinality(record_batch_outcomes.ids) <> pg_catalog.cardinality(record_batch_outcomes.ctids)
     or pg_catalog.cardinality(record_batch_outcomes.kinds) <> pg_catalog.cardinality(record_batch_outcomes.ctids) then
    raise exception using errcode = '22023', message = 'ctids, ids and kinds must be parallel arrays.';
  end if;
  with o as (
    select o.*,
           -- A conversion not taken whose sale was undone meanwhile becomes a cancellation
           -- (evaluated only for those rows: AND stops at the kind).
           o.kind in ('retry', 'released')
             and exists (select 1 from app_public.offline_conversion_queue c
                           join app_public.sales s on s.site_id = c.site_id and s.id = c.sale_id
                          where c.ctid = o.row_ctid and c.kind = 'conversion' and s.status = 'cancelled') as undone
      from rows from (pg_catalog.unnest(record_batch_outcomes.ctids), pg_catalog.unnest(record_batch_outcomes.ids),
                      pg_catalog.unnest(record_batch_outcomes.kinds), pg_catalog.unnest(record_batch_outcomes.codes),
                      pg_catalog.unnest(record_batch_outcomes.messages), pg_catalog.unnest(record_batch_outcomes.retry_after_seconds),
                      pg_catalog.unnest(record_batch_outcomes.request_ids))
             as o(row_ctid, id, kind, code, message, retry_after_seconds, request_id)
  ), applied as (
    update app_public.offline_conversion_queue q
       set status = case when o.undone then 'cancelled'
             when o.kind = 'accepted' then 'accepted' when o.kind = 'sent' then 'sent'
             when o.kind in ('retry', 'released') then 'pending' else 'failed' end,
           retry_at = case when o.kind in ('retry', 'released') then pg_catalog.now() + pg_catalog.make_interval(secs => coalesce(o.retry_after_seconds, 300))
             else q.retry_at end,
           last_error_code = case when o.undone then 'SALE_UNDONE'
             when o.kind in ('accepted', 'sent') then o.code else coalesce(o.code, 'UNKNOWN') end,
           last_error_message = case when o.undone then 'The sale was undone before Google took the conversion.'
             when o.kind in ('accepted', 'sent') then null else pg_catalog.left(o.message, 1000) end,
           request_id = case when o.kind in ('accepted', 'sent') then coalesce(o.request_id, record_batch_outcomes.request_id, q.request_id) else q.request_id end,
           sent_at = case when o.kind in ('accepted', 'sent') then coalesce(q.sent_at, pg_catalog.now()) else q.sent_at end,
           accepted_at = case when o.kind = 'accepted' then pg_catalog.now() else q.accepted_at end,
           -- An upload that was made counts; a batch handed back unsent does not.
           attempts = case when o.kind = 'released' then q.attempts else q.attempts + 1 end,
           -- A lease that ran out (another claimer's) ends here too.
           locked_by = null, locked_until = null,
           destination_id = coalesce(record_batch_outcomes.destination_id, q.destination_id),
           updated_at = greatest(pg_catalog.now(), q.updated_at + interval '1 millisecond')
      from o
     where q.ctid = o.row_ctid and q.site_id = record_batch_outcomes.site_id and q.id = o.id and q.stage = 'open'
    returning q.sale_id, q.kind, q.status
  )
  select count(*), pg_catalog.array_agg(a.sale_id) filter (where a.kind = 'conversion' and a.status in ('failed', 'cancelled'))
    into v_count, v_never_delivered
    from applied a;
  if v_never_delivered is not null then
    perform app_private.drop_needless_retractions(record_batch_outcomes.site_id, v_never_delivered);
  end if;
  return v_count;
end;
$$;

comment on function app_private.record_batch_outcomes(uuid, uuid, tid[], uuid[], text[], text[], text[], integer[], text[], text) is
  E'Writes the outcome of each row the calling transaction locked with lock_conversion_batch (parallel arrays in its order): sent, accepted, retry, failed or released (handed back unsent). Returns how many rows it wrote.';
