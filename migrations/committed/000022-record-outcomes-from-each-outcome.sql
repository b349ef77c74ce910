--! Previous: sha1:426d1477e527fa22a759b94a44cdebfa89f3afd0
--! Hash: sha1:2721776f92f7df74bce8a434b9ae88862e124ce8
--! Message: record-outcomes-from-each-outcome

--! split: 1-current.sql
/*
 * Recording a batch's outcomes finds each row from its outcome, whatever the statistics say.
 *
 * The update joined the outcomes to the queue and left the join order to the planner. The
 * planner estimates the rows this worker holds (status 'processing', its own lease) from the
 * last ANALYZE, which almost always ran while nothing was in flight: it expects one such row,
 * puts the queue first and scans the outcomes once per queue row. For a batch of 2,000 that is
 * 4 million comparisons: 660–940 ms per batch instead of about 25 ms (seen in `npm run bench --
 * oci`'s warm-up, on a connection's first calls, whose custom plans see the site's real id).
 *
 * Now each outcome looks up its own row by primary key in a lateral subquery that cannot be
 * flattened (offset 0), which fixes the order: outcomes outside, one index probe each inside.
 * The update then takes the rows by the ctid found (a TID scan per row, the only cheap way in),
 * and still checks the lease, so a row another worker took meanwhile is left alone. The lookup
 * also yields the sale and kind, so an undone sale is one probe of `sales`, not a second join.
 */
create or replace function app_private.record_upload_outcomes(site_id uuid, worker text, outcomes jsonb, request_id text default null)
  returns integer
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
  set jit to off
as $$
declare
  v_count integer;
  v_never_delivered uuid[];
begin
  with o as (
    select o.*, held.row_ctid, held.held_status, held.held_by,
           -- A retry of a conversion whose sale was undone meanwhile becomes a cancellation.
           o.kind = 'retry' and held.kind = 'conversion'
             and exists (select 1 from app_public.sales s
                          where s.site_id = record_upload_outcomes.site_id and s.id = held.sale_id and s.status = 'cancelled') as undone
      from pg_catalog.jsonb_to_recordset(record_upload_outcomes.outcomes)
             as o(id uuid, kind text, code text, message text, retry_after_seconds integer, request_id text)
     cross join lateral (select q.ctid as row_ctid, q.status as held_status, q.locked_by as held_by, q.sale_id, q.kind
                           from app_public.offline_conversion_queue q
                          where q.site_id = record_upload_outcomes.site_id and q.id = o.id
                            and q.status = 'processing' and q.locked_by = record_upload_outcomes.worker
                         offset 0) held
  ), applied as (
    update app_public.offline_conversion_queue q
       set status = case when o.undone then 'cancelled'
             when o.kind = 'accepted' then 'accepted' when o.kind = 'sent' then 'sent' when o.kind = 'retry' then 'pending' else 'failed' end,
           retry_at = case when o.kind = 'retry' then pg_catalog.now() + pg_catalog.make_interval(secs => coalesce(o.retry_after_seconds, 300)) else q.retry_at end,
           last_error_code = case when o.undone then 'SALE_UNDONE'
             when o.kind in ('accepted', 'sent') then o.code else coalesce(o.code, 'UNKNOWN') end,
           last_error_message = case when o.undone then 'The sale was undone before Google took the conversion.'
             when o.kind in ('accepted', 'sent') then null else pg_catalog.left(o.message, 1000) end,
           request_id = case when o.kind in ('accepted', 'sent') then coalesce(o.request_id, record_upload_outcomes.request_id, q.request_id) else q.request_id end,
           sent_at = case when o.kind in ('accepted', 'sent') then coalesce(q.sent_at, pg_catalog.now()) else q.sent_at end,
           accepted_at = case when o.kind = 'accepted' then pg_catalog.now() else q.accepted_at end,
           locked_by = null, locked_until = null,
           updated_at = greatest(pg_catalog.now(), q.updated_at + interval '1 millisecond')
      from o
     where q.ctid = o.row_ctid
       -- The lease again, on the row as it is when updated (if another worker took it since, its
       -- lease having run out, it is not this worker's to record), compared with the values just
       -- found rather than constants: so the queue has no condition of its own that could make it
       -- look like a handful of rows worth scanning first.
       and q.status = o.held_status and q.locked_by = o.held_by
    returning q.site_id, q.sale_id, q.kind, q.status
  )
  select count(*), pg_catalog.array_agg(a.sale_id) filter (where a.kind = 'conversion' and a.status in ('failed', 'cancelled'))
    into v_count, v_never_delivered
    from applied a;
  if v_never_delivered is not null then
    perform app_private.drop_needless_retractions(record_upload_outcomes.site_id, v_never_delivered);
  end if;
  return v_count;
end;
$$;
