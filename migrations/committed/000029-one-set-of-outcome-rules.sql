--! Previous: sha1:fcf7d84f53c3ad8aabda6c8cb4cfbf8ab8c669f6
--! Hash: sha1:61cfd93214d90660439985bdbc2c66aadda54b43
--! Message: one-set-of-outcome-rules

--! split: 1-current.sql
/*
 * One set of outcome rules for both ways of holding a row.
 *
 * Migration 000027 wrote the rules for turning an upload's per-row outcome into a queue row's
 * state (status, codes, retry time, request id, an undone sale's cancellation, retractions no
 * longer needed) a second time, in record_batch_outcomes, beside record_upload_outcomes.
 * Now record_upload_outcomes (the lease API) only finds and locks the rows the worker still
 * holds under its lease and hands them to record_batch_outcomes, which alone knows the rules.
 * Its attempt was counted when the lease was taken, so it is not counted again
 * (count_attempt => false).
 */
drop function if exists app_private.record_batch_outcomes(uuid, uuid, tid[], uuid[], text[], text[], text[], integer[], text[], text);

create or replace function app_private.record_batch_outcomes(
  site_id uuid, destination_id uuid, ctids tid[], ids uuid[], kinds text[], codes text[], messages text[],
  retry_after_seconds integer[], request_ids text[], request_id text default null, count_attempt boolean default true)
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
    select o.*, held.held_ctid,
           -- A conversion not taken whose sale was undone meanwhile becomes a cancellation
           -- (the sale is looked up only for those rows: AND stops at the kind).
           o.kind in ('retry', 'released') and held.kind = 'conversion'
             and exists (select 1 from app_public.sales s
                          where s.site_id = record_batch_outcomes.site_id and s.id = held.sale_id and s.status = 'cancelled') as undone
      from rows from (pg_catalog.unnest(record_batch_outcomes.ctids), pg_catalog.unnest(record_batch_outcomes.ids),
                      pg_catalog.unnest(record_batch_outcomes.kinds), pg_catalog.unnest(record_batch_outcomes.codes),
                      pg_catalog.unnest(record_batch_outcomes.messages), pg_catalog.unnest(record_batch_outcomes.retry_after_seconds),
                      pg_catalog.unnest(record_batch_outcomes.request_ids))
             as o(row_ctid, id, kind, code, message, retry_after_seconds, request_id)
     -- Each outcome fetches its own row by ctid, checked against the id locked (a lateral probe
     -- that cannot be flattened: outcomes outside, one TID fetch each inside, whatever the
     -- statistics say; migration 000022 has the story).
     cross join lateral (select q.ctid as held_ctid, q.kind, q.sale_id from app_public.offline_conversion_queue q
                          where q.ctid = o.row_ctid and q.site_id = record_batch_outcomes.site_id and q.id = o.id and q.stage = 'open'
                         offset 0) held
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
           -- An upload that was made counts (once: a lease counted it when taken); a batch handed back unsent does not.
           attempts = case when o.kind = 'released' or not record_batch_outcomes.count_attempt then q.attempts else q.attempts + 1 end,
           -- A lease ends here.
           locked_by = null, locked_until = null,
           destination_id = coalesce(record_batch_outcomes.destination_id, q.destination_id),
           updated_at = greatest(pg_catalog.now(), q.updated_at + interval '1 millisecond')
      from o
     -- Only the ctid just fetched: no condition of the queue's own that could make it look like a
     -- handful of rows worth scanning first.
     where q.ctid = o.held_ctid
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

comment on function app_private.record_batch_outcomes(uuid, uuid, tid[], uuid[], text[], text[], text[], integer[], text[], text, boolean) is
  E'Writes the outcome of each row the calling transaction has locked (parallel arrays in the order of ctids): sent, accepted, retry, failed or released (handed back unsent). The one place the outcome rules live. Returns how many rows it wrote.';

create or replace function app_private.record_upload_outcomes(site_id uuid, worker text, outcomes jsonb, request_id text default null)
  returns integer
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
  set jit to off
as $$
declare
  v_held record;
begin
  -- Each outcome finds its own row by primary key (a lateral probe that cannot be flattened, so
  -- no statistics can turn it into a scan: migration 000022), and only while this worker still
  -- holds its lease; the row is locked, so the lease cannot pass to another claimer before the
  -- outcome is written.
  select pg_catalog.array_agg(held.row_ctid) as ctids, pg_catalog.array_agg(o.id) as ids, pg_catalog.array_agg(o.kind) as kinds,
         pg_catalog.array_agg(o.code) as codes, pg_catalog.array_agg(o.message) as messages,
         pg_catalog.array_agg(o.retry_after_seconds) as retry_after_seconds, pg_catalog.array_agg(o.request_id) as request_ids
    into v_held
    from pg_catalog.jsonb_to_recordset(record_upload_outcomes.outcomes)
           as o(id uuid, kind text, code text, message text, retry_after_seconds integer, request_id text)
   cross join lateral (select q.ctid as row_ctid from app_public.offline_conversion_queue q
                        where q.site_id = record_upload_outcomes.site_id and q.id = o.id
                          and q.status = 'processing' and q.locked_by = record_upload_outcomes.worker
                        offset 0
                          for update) held
   where o.kind in ('accepted', 'sent', 'retry', 'failed');
  if v_held.ctids is null then
    return 0;
  end if;
  return app_private.record_batch_outcomes(record_upload_outcomes.site_id, null, v_held.ctids, v_held.ids, v_held.kinds, v_held.codes,
                                           v_held.messages, v_held.retry_after_seconds, v_held.request_ids,
                                           record_upload_outcomes.request_id, count_attempt => false);
end;
$$;

comment on function app_private.record_upload_outcomes(uuid, text, jsonb, text) is
  E'Applies the rails'' per-row outcomes to rows the worker still holds under its lease (claim_offline_conversion_jobs), by record_batch_outcomes'' rules; returns how many changed.';
