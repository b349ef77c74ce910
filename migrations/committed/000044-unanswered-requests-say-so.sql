--! Previous: sha1:4561a636b7c905f0e0a7ddf852b04b1ef09a1541
--! Hash: sha1:26106426d9eca35b75aa8fa7f51e04d1366a051b
--! Message: unanswered-requests-say-so

--! split: 1-current.sql
/*
 * Rows Google gave no processing status for in two days say so.
 *
 * A row a Data Manager request carried waits as `sent` while we ask Google how the request was
 * processed, for two days (awaits_request_status). If no verdict came (the status service kept
 * failing, the request stayed PROCESSING, or the site moved to another rail, which cannot ask),
 * the row stayed `sent` with no code for good, looking like an answer still on its way. Now the
 * site's next upload run gives such rows the code NO_PROCESSING_STATUS: still `sent` (Google took
 * them), with a message saying that whether they matched is unknown.
 */
create or replace function app_private.lacks_request_verdict(q app_public.offline_conversion_queue) returns boolean
  language sql stable
as $$
  select q.stage = 'sent' and q.request_id is not null and q.request_id <> 'csv' and q.last_error_code is null;
$$;
comment on function app_private.lacks_request_verdict(app_public.offline_conversion_queue) is
  E'True for a row a Data Manager request carried on which Google has given no processing verdict (never for rows a CSV export took).';

create or replace function app_private.awaits_request_status(q app_public.offline_conversion_queue) returns boolean
  language sql stable
as $$
  select app_private.lacks_request_verdict(q) and q.sent_at > pg_catalog.now() - interval '2 days';
$$;

create or replace function app_private.close_unanswered_requests(site_id uuid) returns integer
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_count integer;
begin
  update app_public.offline_conversion_queue q
     set last_error_code = 'NO_PROCESSING_STATUS',
         last_error_message = 'Google took the upload but gave no processing status within two days; whether these conversions matched is unknown.'
   where q.site_id = close_unanswered_requests.site_id and q.stage = 'sent' and app_private.lacks_request_verdict(q)
     and q.sent_at <= pg_catalog.now() - interval '2 days';
  get diagnostics v_count = row_count;
  return v_count;
end;
$$;
comment on function app_private.close_unanswered_requests(uuid) is
  E'Gives the site''s rows that waited two days for a processing status in vain the code NO_PROCESSING_STATUS; returns how many.';
