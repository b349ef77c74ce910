--! Previous: sha1:601f8181c7d169ccca42e3c0a590681f09da4abf
--! Hash: sha1:9a8bab02086d27c09861cbf1f0543ed24228a62d
--! Message: requests-awaiting-status-defined-once

--! split: 1-current.sql
/*
 * Which sent rows wait for Google's processing status: one rule, and a way out for a request
 * Google will not answer about.
 *
 * The rule was written twice, in unsettled_requests (which requests to ask about) and in
 * schedule_next_upload (when to come back to ask), and migration 000031 changed only the first:
 * rows a scheduled CSV export took (request id 'csv') still scheduled an upload run five minutes
 * after they were taken. Once that moment had passed, every run ended by scheduling the next one
 * at once, so a site that moved from the CSV to Data Manager ran its upload job without pause
 * until the CSV rows were two days old. Both now use awaits_request_status.
 *
 * A request Google refuses to report on (INVALID_ARGUMENT, e.g. INVALID_REQUEST_ID, or
 * NOT_FOUND) was asked about again on every run for two days, and the uploader stopped asking
 * for the rest of each run at that refusal, so the site's later requests were not settled either.
 * settle_request now takes REQUEST_REFUSED: the rows stay sent (Google took them; whether they
 * matched is unknown) with Google's reason as their code, which ends the asking.
 */

/* Inlined where it is used (SQL, no SET clause), so the callers' plans still use the sent index. */
create or replace function app_private.awaits_request_status(q app_public.offline_conversion_queue) returns boolean
  language sql stable
as $$
  select q.stage = 'sent' and q.request_id is not null and q.request_id <> 'csv' and q.last_error_code is null
     and q.sent_at > pg_catalog.now() - interval '2 days';
$$;
comment on function app_private.awaits_request_status(app_public.offline_conversion_queue) is
  E'True for a row a Data Manager request carried whose processing status Google has not yet given (asked for up to two days; never for rows a CSV export took).';

create or replace function app_private.unsettled_requests(site_id uuid)
  returns setof text
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select distinct q.request_id from app_public.offline_conversion_queue q
   where q.site_id = unsettled_requests.site_id and q.stage = 'sent' and app_private.awaits_request_status(q)
     and q.sent_at < pg_catalog.now() - interval '5 minutes'
   limit 50;
$$;

create or replace function app_private.schedule_next_upload(site_id uuid) returns void
  language sql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
  select app_private.enqueue_upload(schedule_next_upload.site_id, 'google', n.next_at)
    from (select min(case when q.status = 'pending' then q.retry_at else q.sent_at + interval '5 minutes' end) as next_at
            from app_public.offline_conversion_queue q
           where q.site_id = schedule_next_upload.site_id
             and ((q.stage = 'open' and q.status = 'pending') or (q.stage = 'sent' and app_private.awaits_request_status(q)))) n
   where n.next_at is not null;
$$;

/*
 * Google's verdict on a request: SUCCESS makes its rows accepted, FAILED failed with the first
 * reason; PARTIAL_SUCCESS cannot say which rows failed, so they stay sent with the reasons
 * recorded; REQUEST_REFUSED (ours: Google will not report on the request) leaves them sent with
 * Google's reason. errors: [{"reason", "count"}] in Google's order. Returns the rows changed.
 */
create or replace function app_private.settle_request(site_id uuid, request_id text, status text, errors jsonb) returns integer
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_reasons text := (select pg_catalog.string_agg((e ->> 'reason') || '×' || (e ->> 'count'), ', ' order by o)
                       from pg_catalog.jsonb_array_elements(settle_request.errors) with ordinality as x(e, o));
  v_first_reason text := settle_request.errors -> 0 ->> 'reason';
  v_count integer;
begin
  if settle_request.status not in ('SUCCESS', 'FAILED', 'PARTIAL_SUCCESS', 'REQUEST_REFUSED') then
    return 0;  -- PROCESSING or unknown: ask again later
  end if;
  update app_public.offline_conversion_queue q
     set status = case settle_request.status when 'SUCCESS' then 'accepted' when 'FAILED' then 'failed' else q.status end,
         accepted_at = case when settle_request.status = 'SUCCESS' then pg_catalog.now() else q.accepted_at end,
         last_error_code = case settle_request.status
           when 'FAILED' then coalesce(v_first_reason, 'PROCESSING_FAILED')
           when 'PARTIAL_SUCCESS' then 'PARTIAL_SUCCESS'
           when 'REQUEST_REFUSED' then coalesce(v_first_reason, 'REQUEST_REFUSED')
           else q.last_error_code end,
         last_error_message = case settle_request.status
           when 'FAILED' then 'Google could not process the upload: ' || coalesce(nullif(v_reasons, ''), 'no reason given') || '.'
           when 'PARTIAL_SUCCESS' then 'Google processed the upload with some rows rejected (' || coalesce(v_reasons, '') || '); it does not say which.'
           when 'REQUEST_REFUSED' then 'Google took the upload but will not report how it was processed ('
                                       || coalesce(v_first_reason, 'no reason given') || '); whether these conversions matched is unknown.'
           else q.last_error_message end
   where q.site_id = settle_request.site_id and q.request_id = settle_request.request_id and q.stage = 'sent';
  get diagnostics v_count = row_count;
  return v_count;
end;
$$;
