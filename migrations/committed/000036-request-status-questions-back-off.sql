--! Previous: sha1:1eedc29f82b205deb31d5374829ef6e736be1516
--! Hash: sha1:756b5af5f7652280a5c24a167a8a5d423efcdd45
--! Message: request-status-questions-back-off

--! split: 1-current.sql
/*
 * Asking Google about a request backs off.
 *
 * After an upload run, schedule_next_upload brings the site's job back when its earliest
 * postponed row is due or, for rows awaiting Data Manager's processing status, five minutes after
 * they were sent. Once those five minutes had passed, a request Google was still processing
 * (PROCESSING), or a status service that did not answer, had every run schedule the next one at
 * once: the job ran back to back, asking Google again each time, until Google gave a verdict or
 * the rows were two days old. Now the next question waits as long as the request is old (it was
 * last asked no earlier than that), at least five minutes and at most an hour: asked at 5, 10,
 * 20, 40 and 80 minutes, then hourly.
 */
create or replace function app_private.schedule_next_upload(site_id uuid) returns void
  language sql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
  select app_private.enqueue_upload(schedule_next_upload.site_id, 'google', n.next_at)
    from (select min(case when q.status = 'pending' then q.retry_at
                          when q.sent_at > pg_catalog.now() - interval '5 minutes' then q.sent_at + interval '5 minutes'
                          else pg_catalog.now() + least(pg_catalog.now() - q.sent_at, interval '1 hour') end) as next_at
            from app_public.offline_conversion_queue q
           where q.site_id = schedule_next_upload.site_id
             and ((q.stage = 'open' and q.status = 'pending') or (q.stage = 'sent' and app_private.awaits_request_status(q)))) n
   where n.next_at is not null;
$$;
