--! Previous: sha1:de7056978e23c6921ae40dcf67ba8ee454f0bc72
--! Hash: sha1:fb6cd6c23aaa7e97fb336e7c9bd5cf5e3146c113
--! Message: former-destinations-still-asked

--! split: 1-current.sql
/*
 * Requests of a Data Manager destination the site has moved away from are still asked about.
 *
 * Only the site's live destination asked Google for the processing status of its requests. After
 * a site paused its Data Manager destination (and perhaps went on through Google Ads), the rows
 * that destination had sent waited as `sent` for a question nobody asked, and ended, two days
 * later, as NO_PROCESSING_STATUS. Now the upload run also asks, with a former destination's own
 * credentials, about the requests that destination sent. unsettled_requests takes the
 * destination whose requests are wanted.
 */
drop function if exists app_private.unsettled_requests(uuid);
create or replace function app_private.unsettled_requests(site_id uuid, destination_id uuid default null)
  returns setof text
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select distinct q.request_id from app_public.offline_conversion_queue q
   where q.site_id = unsettled_requests.site_id and q.stage = 'sent' and app_private.awaits_request_status(q)
     and (unsettled_requests.destination_id is null or q.destination_id = unsettled_requests.destination_id)
     and q.sent_at < pg_catalog.now() - interval '5 minutes'
   limit 50;
$$;
comment on function app_private.unsettled_requests(uuid, uuid) is
  E'Request ids whose processing status is due to be asked (sent 5 minutes to 2 days ago, no verdict yet), of one destination or (null) any.';

/* The site's paused Data Manager destinations whose requests still wait for Google's verdict. */
create or replace function app_private.former_destinations_awaiting_status(site_id uuid)
  returns setof uuid
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select d.id from app_public.destinations d
   where d.site_id = former_destinations_awaiting_status.site_id and d.status = 'paused' and d.rail = 'datamanager'
     and exists (select 1 from app_public.offline_conversion_queue q
                  where q.site_id = d.site_id and q.stage = 'sent' and q.destination_id = d.id and app_private.awaits_request_status(q)
                    and q.sent_at < pg_catalog.now() - interval '5 minutes');
$$;
comment on function app_private.former_destinations_awaiting_status(uuid) is
  E'Paused Data Manager destinations of a site with requests whose processing status is due to be asked.';
