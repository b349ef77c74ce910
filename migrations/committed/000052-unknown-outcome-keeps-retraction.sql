--! Previous: sha1:fb6cd6c23aaa7e97fb336e7c9bd5cf5e3146c113
--! Hash: sha1:671731d6a8007a570f9e3ef99605a693114de095
--! Message: unknown-outcome-keeps-retraction

--! split: 1-current.sql
/*
 * An upload that ended without an answer leaves the retraction of an undone sale in place, on
 * every path.
 *
 * Migration 000046 made undoing a sale (and erasure) retract a conversion whose last upload ended
 * without an answer (DEADLINE_EXCEEDED, UNAVAILABLE, CANCELLED, UNKNOWN, INTERNAL, ABORTED):
 * Google may have it. One path still read such an upload as "never delivered": a row leased
 * through the lease API, whose sale was undone while it was out (a retraction was queued then),
 * and whose uploader then recorded such a retry. record_batch_outcomes cancelled the conversion
 * and dropped the retraction as needless. Now the retraction stays. The codes are one list,
 * outcome_unknown, which upload_outcome_unknown uses too.
 */
create or replace function app_private.outcome_unknown(code text) returns boolean
  language sql immutable
as $$
  select code in ('DEADLINE_EXCEEDED', 'UNAVAILABLE', 'CANCELLED', 'UNKNOWN', 'INTERNAL', 'ABORTED');
$$;
comment on function app_private.outcome_unknown(text) is
  E'True for a code an upload ends with when Google gave no answer (a timeout, a dropped connection): Google may have the conversions.';

create or replace function app_private.upload_outcome_unknown(q app_public.offline_conversion_queue) returns boolean
  language sql immutable
as $$
  select q.status = 'pending' and q.attempts > 0 and app_private.outcome_unknown(q.last_error_code);
$$;

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
           last_error_message = case when o.undone and o.kind = 'retry' and app_private.outcome_unknown(o.code)
                                       then 'The sale was undone after an upload whose outcome is unknown; a retraction follows.'
                                     when o.undone then 'The sale was undone before Google took the conversion.'
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
    returning q.sale_id, q.kind, q.status, o.kind as outcome, o.code as outcome_code
  )
  -- Google never had these, so a retraction queued for them has nothing to do; unless the
  -- upload ended without an answer, when Google may have it after all.
  select count(*), pg_catalog.array_agg(a.sale_id) filter (where a.kind = 'conversion' and a.status in ('failed', 'cancelled')
                                                             and not (a.outcome = 'retry' and app_private.outcome_unknown(a.outcome_code)))
    into v_count, v_never_delivered
    from applied a;
  if v_never_delivered is not null then
    perform app_private.drop_needless_retractions(record_batch_outcomes.site_id, v_never_delivered);
  end if;
  return v_count;
end;
$$;
