--! Previous: sha1:cbc4270084afb63e37797c82725d57d066f0f129
--! Hash: sha1:d4a1edb8cf82d8978f435a24d546955828b388ec
--! Message: queue-rules-in-sql

--! split: 1-queue-rules-in-sql.sql
/*
 * Settling Data Manager requests, and when to come back, are rules about the queue: they live
 * here beside it rather than in the upload loop. (Moved from src/delivery/deliver.ts; same
 * behaviour: a request is asked about 5 minutes after it was sent, for up to 2 days.)
 */

/* Data Manager requests whose rows are sent but have no verdict yet and are due for asking. */
create function app_private.unsettled_requests(site_id uuid) returns setof text
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select distinct q.request_id from app_public.offline_conversion_queue q
   where q.site_id = unsettled_requests.site_id and q.status = 'sent' and q.request_id is not null and q.last_error_code is null
     and q.sent_at < pg_catalog.now() - interval '5 minutes' and q.sent_at > pg_catalog.now() - interval '2 days'
   limit 50;
$$;
comment on function app_private.unsettled_requests(uuid) is E'Request ids whose processing status is due to be asked (sent 5 minutes to 2 days ago, no verdict yet).';

/*
 * Google's verdict on a request: SUCCESS makes its rows accepted, FAILED failed with the first
 * reason; PARTIAL_SUCCESS cannot say which rows failed, so they stay sent with the reasons
 * recorded. errors: [{"reason", "count"}] in Google's order. Returns the rows changed.
 */
create function app_private.settle_request(site_id uuid, request_id text, status text, errors jsonb) returns integer
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_reasons text := (select pg_catalog.string_agg((e ->> 'reason') || '×' || (e ->> 'count'), ', ' order by o)
                       from pg_catalog.jsonb_array_elements(settle_request.errors) with ordinality as x(e, o));
  v_count integer;
begin
  update app_public.offline_conversion_queue q
     set status = case settle_request.status when 'SUCCESS' then 'accepted' when 'FAILED' then 'failed' else q.status end,
         accepted_at = case when settle_request.status = 'SUCCESS' then pg_catalog.now() else q.accepted_at end,
         last_error_code = case settle_request.status when 'FAILED' then coalesce(settle_request.errors -> 0 ->> 'reason', 'PROCESSING_FAILED')
                                                      when 'PARTIAL_SUCCESS' then 'PARTIAL_SUCCESS' else q.last_error_code end,
         last_error_message = case settle_request.status
           when 'FAILED' then 'Google could not process the upload: ' || coalesce(nullif(v_reasons, ''), 'no reason given') || '.'
           when 'PARTIAL_SUCCESS' then 'Google processed the upload with some rows rejected (' || coalesce(v_reasons, '') || '); it does not say which.'
           else q.last_error_message end
   where q.site_id = settle_request.site_id and q.request_id = settle_request.request_id and q.status = 'sent'
     and settle_request.status in ('SUCCESS', 'FAILED', 'PARTIAL_SUCCESS');
  get diagnostics v_count = row_count;
  return v_count;
end;
$$;
comment on function app_private.settle_request(uuid, text, text, jsonb) is E'Applies Google''s processing status of a Data Manager request to the rows it carried.';

/* The site's next upload job: when the earliest postponed row, or an unsettled request, is due. */
create function app_private.schedule_next_upload(site_id uuid) returns void
  language sql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
  select app_private.enqueue_upload(schedule_next_upload.site_id, 'google', n.next_at)
    from (select min(case when q.status = 'pending' then q.retry_at else q.sent_at + interval '5 minutes' end) as next_at
            from app_public.offline_conversion_queue q
           where q.site_id = schedule_next_upload.site_id
             and (q.status = 'pending' or (q.status = 'sent' and q.request_id is not null and q.last_error_code is null
                                           and q.sent_at > pg_catalog.now() - interval '2 days'))) n
   where n.next_at is not null;
$$;
comment on function app_private.schedule_next_upload(uuid) is E'Schedules the site''s upload job for its earliest due row or unsettled request.';

/*
 * One rule, one place: a retraction is needed only if its conversion may have reached Google.
 * Recording outcomes and releasing claimed rows both end conversions that never did; both now
 * hand those sales to drop_needless_retractions instead of each spelling the rule out.
 */
create or replace function app_private.drop_needless_retractions(site_id uuid, sale_ids uuid[]) returns integer
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_count integer;
begin
  update app_public.offline_conversion_queue r
     set status = 'cancelled', last_error_code = 'NOTHING_TO_RETRACT',
         last_error_message = 'The conversion never reached Google, so there is nothing to retract.'
   where r.site_id = drop_needless_retractions.site_id and r.sale_id = any(drop_needless_retractions.sale_ids)
     and r.kind = 'retraction' and r.status = 'pending'
     and exists (select 1 from app_public.offline_conversion_queue c
                  where c.site_id = r.site_id and c.sale_id = r.sale_id and c.provider = r.provider
                    and c.kind = 'conversion' and c.status in ('failed', 'cancelled'));
  get diagnostics v_count = row_count;
  return v_count;
end;
$$;
comment on function app_private.drop_needless_retractions(uuid, uuid[]) is
  E'Cancels pending retractions of these sales whose conversion ended without reaching Google (failed or cancelled).';

create or replace function app_private.record_upload_outcomes(site_id uuid, worker text, outcomes jsonb, request_id text default null)
  returns integer
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_count integer;
  v_never_delivered uuid[];
begin
  with o as (
    select o.*,
           -- A retry of a conversion whose sale was undone meanwhile becomes a cancellation.
           o.kind = 'retry' and exists (select 1 from app_public.offline_conversion_queue q2 join app_public.sales s
                                          on s.site_id = q2.site_id and s.id = q2.sale_id
                                         where q2.site_id = record_upload_outcomes.site_id and q2.id = o.id
                                           and q2.kind = 'conversion' and s.status = 'cancelled') as undone
      from pg_catalog.jsonb_to_recordset(record_upload_outcomes.outcomes)
             as o(id uuid, kind text, code text, message text, retry_after_seconds integer, request_id text)
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
           locked_by = null, locked_until = null
      from o
     where q.site_id = record_upload_outcomes.site_id and q.id = o.id
       and q.status = 'processing' and q.locked_by = record_upload_outcomes.worker
    returning q.site_id, q.sale_id, q.kind, q.status
  )
  select count(*), pg_catalog.array_agg(a.sale_id) filter (where a.kind = 'conversion' and a.status in ('failed', 'cancelled'))
    into v_count, v_never_delivered
    from applied a;
  perform app_private.drop_needless_retractions(record_upload_outcomes.site_id, v_never_delivered);
  return v_count;
end;
$$;


create or replace function app_private.release_claimed_conversions(site_id uuid, worker text, code text, message text, retry_after_seconds integer)
  returns integer
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_count integer;
  v_never_delivered uuid[];
begin
  with released as (
    update app_public.offline_conversion_queue q
       set status = case when q.kind = 'conversion' and s.status = 'cancelled' then 'cancelled' else 'pending' end,
           locked_by = null, locked_until = null, attempts = greatest(q.attempts - 1, 0),
           last_error_code = case when q.kind = 'conversion' and s.status = 'cancelled' then 'SALE_UNDONE' else release_claimed_conversions.code end,
           last_error_message = case when q.kind = 'conversion' and s.status = 'cancelled' then 'The sale was undone before Google took the conversion.'
                                     else release_claimed_conversions.message end,
           retry_at = pg_catalog.now() + pg_catalog.make_interval(secs => release_claimed_conversions.retry_after_seconds)
      from app_public.sales s
     where q.site_id = release_claimed_conversions.site_id and q.status = 'processing' and q.locked_by = release_claimed_conversions.worker
       and s.site_id = q.site_id and s.id = q.sale_id
    returning q.sale_id, q.kind, q.status
  )
  select count(*), pg_catalog.array_agg(r.sale_id) filter (where r.kind = 'conversion' and r.status = 'cancelled')
    into v_count, v_never_delivered
    from released r;
  -- Their retractions are no longer needed either.
  perform app_private.drop_needless_retractions(release_claimed_conversions.site_id, v_never_delivered);
  return v_count;
end;
$$;
