--! Previous: sha1:590b00170d33f03a5a326a0dcf478103de276c74
--! Hash: sha1:6989ffce4346fa4cb63f580f7381a9a7460eaac7
--! Message: request-status-due-once

--! split: 1-current.sql
/*
 * When a request's processing status is due to be asked: one rule.
 *
 * "Waiting for a verdict, and sent at least five minutes ago" was written out in
 * unsettled_requests and again in former_destinations_awaiting_status (migration 000051). It is
 * now request_status_due, inlined into both like awaits_request_status beneath it.
 * (schedule_next_upload keeps its own "sent_at + 5 minutes": it computes when that moment comes.)
 */
create or replace function app_private.request_status_due(q app_public.offline_conversion_queue) returns boolean
  language sql stable
as $$
  select app_private.awaits_request_status(q) and q.sent_at < pg_catalog.now() - interval '5 minutes';
$$;
comment on function app_private.request_status_due(app_public.offline_conversion_queue) is
  E'True for a row whose request''s processing status is due to be asked: no verdict yet, sent 5 minutes to 2 days ago.';

create or replace function app_private.unsettled_requests(site_id uuid, destination_id uuid default null)
  returns setof text
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select distinct q.request_id from app_public.offline_conversion_queue q
   where q.site_id = unsettled_requests.site_id and q.stage = 'sent' and app_private.request_status_due(q)
     and (unsettled_requests.destination_id is null or q.destination_id = unsettled_requests.destination_id)
   limit 50;
$$;

create or replace function app_private.former_destinations_awaiting_status(site_id uuid)
  returns setof uuid
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select d.id from app_public.destinations d
   where d.site_id = former_destinations_awaiting_status.site_id and d.status = 'paused' and d.rail = 'datamanager'
     and exists (select 1 from app_public.offline_conversion_queue q
                  where q.site_id = d.site_id and q.stage = 'sent' and q.destination_id = d.id and app_private.request_status_due(q));
$$;
