--! Previous: sha1:28ffb6bd7b8890479f6f21aa89ac020b7db22a90
--! Hash: sha1:6690e67af1cf71e5deedd3cce6834596a964b7cf
--! Message: csv-rows-are-not-requests

--! split: 1-current.sql
/*
 * A scheduled CSV export is not a Data Manager request.
 *
 * Rows Google's scheduled import took from GET /api/oci/export.csv are `sent` with request id
 * 'csv', and stay so (Google gives the CSV no request to ask about). unsettled_requests listed
 * 'csv' among the requests to ask Data Manager about once a site moved to that rail; Google
 * answers INVALID_REQUEST_ID, and the uploader stops asking for that run at its first refusal,
 * so the site's real requests could stay unsettled for as long as the CSV rows stayed in the
 * window (two days).
 */
create or replace function app_private.unsettled_requests(site_id uuid)
  returns setof text
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select distinct q.request_id from app_public.offline_conversion_queue q
   where q.site_id = unsettled_requests.site_id and q.stage = 'sent' and q.request_id is not null and q.request_id <> 'csv'
     and q.last_error_code is null
     and q.sent_at < pg_catalog.now() - interval '5 minutes' and q.sent_at > pg_catalog.now() - interval '2 days'
   limit 50;
$$;
