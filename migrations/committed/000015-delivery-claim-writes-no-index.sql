--! Previous: sha1:f75df92c850c8458cfcf6d2b69308619257270fc
--! Hash: sha1:ad2c3b94c438784dcb1a45dfc0eb46e5b122f78e
--! Message: delivery-claim-writes-no-index

--! split: 1-current.sql
--! Claiming a conversion writes no index entry.
--
-- The upload loop changes every queue row twice: the claim (pending → processing, with the
-- lease) and the outcome (processing → sent, accepted, failed or pending again). Each change
-- was a non-HOT update, a new entry in every index of the queue, because `status` is a key of
-- the destination index and appears in the predicates of the due, lease and sent indexes; the
-- claim also set `destination_id`, so the foreign key was checked for every row. Per batch of
-- 2,000 that was about 30 ms of the database's time before Google saw a single row.
--
-- Now no index mentions `status`, `locked_by`, `locked_until` or `attempts`:
--   * `stage` is derived from `status` ('open' while pending or processing, 'sent', 'closed')
--     and the partial indexes use it, so pending → processing leaves every indexed value as it
--     was and, with room on the page (fillfactor 50), the claim is a HOT update;
--   * the lease index is gone: a processing row never has a `retry_at` later than its claim,
--     so the due index (open rows by `retry_at`) finds expired leases and due rows in one scan;
--   * a queued row gets its site's destination when it is enqueued, so the claim normally
--     leaves `destination_id` unchanged (it still moves rows to a destination that replaced
--     the one they were queued for);
--   * the destination index keys (site, destination) only. Filters and ordering on `status`
--     stay available in GraphQL (`@isIndexed`): a destination's conversions are found through
--     that index and the open and sent ones through their partial indexes.
-- The outcome stays a non-HOT update (the row leaves the open stage), one per row.
alter table app_public.offline_conversion_queue
  add column if not exists stage text not null
    generated always as (case when status in ('pending', 'processing') then 'open' when status = 'sent' then 'sent' else 'closed' end) stored;
comment on column app_public.offline_conversion_queue.stage is
  E'@behavior -*\nDerived from status for the queue''s partial indexes: open (pending or processing), sent, closed. A claim leaves it unchanged.';
comment on column app_public.offline_conversion_queue.status is
  E'@isIndexed\npending (waiting; see retry_at), processing (an uploader holds it), sent (Google has it, result pending), accepted, failed (see last_error_code) or cancelled.';
alter table app_public.offline_conversion_queue set (fillfactor = 50);

drop index if exists app_public.offline_conversion_queue_lease_idx;
drop index if exists app_public.offline_conversion_queue_site_due_idx;
create index offline_conversion_queue_site_due_idx on app_public.offline_conversion_queue (site_id, retry_at, created_at, id)
  where stage = 'open';
drop index if exists app_public.offline_conversion_queue_sent_idx;
create index offline_conversion_queue_sent_idx on app_public.offline_conversion_queue (site_id, request_id) include (sent_at)
  where stage = 'sent';
drop index if exists app_public.offline_conversion_queue_destination_idx;
create index offline_conversion_queue_destination_idx on app_public.offline_conversion_queue (site_id, destination_id);

-- A row is queued for the destination its site has now.
create or replace function app_private.tg_offline_conversion_queue__destination() returns trigger
  language plpgsql
  security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  new.destination_id := (select d.id from app_public.destinations d where d.site_id = new.site_id and d.status <> 'paused');
  return new;
end;
$$;
comment on function app_private.tg_offline_conversion_queue__destination() is
  E'Queues a conversion for its site''s live destination (one per site), so claiming it changes no indexed column.';
revoke all on function app_private.tg_offline_conversion_queue__destination() from public;
drop trigger if exists _050_queue_destination on app_public.offline_conversion_queue;
create trigger _050_queue_destination before insert on app_public.offline_conversion_queue
  for each row when (new.destination_id is null) execute function app_private.tg_offline_conversion_queue__destination();
update app_public.offline_conversion_queue q set destination_id = d.id
  from app_public.destinations d
 where d.site_id = q.site_id and d.status <> 'paused' and q.destination_id is null and q.stage = 'open';

-- Due rows and expired leases come from one scan of the due index, oldest first: a processing
-- row's retry_at is never later than its claim, so both kinds sit among the open rows that are
-- due. Rows leased to a live uploader are skipped as the scan reaches them (at most the
-- batches in flight). The update changes no indexed column, so it writes no index entry.
create or replace function app_private.claim_offline_conversion_jobs(
  provider text, "limit" integer, site_id uuid default null, worker text default null, lease_seconds integer default 300,
  destination_id uuid default null
) returns setof app_public.offline_conversion_queue
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
  set jit to off
as $$
declare
  v_rows tid[];
begin
  if (claim_offline_conversion_jobs."limit" between 1 and 2000 and claim_offline_conversion_jobs.lease_seconds between 10 and 86400) is not true then
    raise exception using errcode = '22023', message = 'limit must be 1 to 2000 and lease_seconds 10 to 86400.';
  end if;
  if claim_offline_conversion_jobs.site_id is not null then
    v_rows := array(
      select q.ctid from app_public.offline_conversion_queue q
       where q.site_id = claim_offline_conversion_jobs.site_id and q.stage = 'open' and q.retry_at <= pg_catalog.now()
         and (q.status = 'pending' or q.locked_until < pg_catalog.now())
         and q.provider = claim_offline_conversion_jobs.provider
         -- A retraction waits while its conversion is in flight: Google must see them in order.
         and (q.kind = 'conversion'
              or coalesce((select c.status in ('pending', 'processing') from app_public.offline_conversion_queue c
                            where c.site_id = q.site_id and c.sale_id = q.sale_id and c.provider = q.provider
                              and c.kind = 'conversion'), false) is false)
       order by q.retry_at, q.created_at, q.id
       limit claim_offline_conversion_jobs."limit"
         for update skip locked);
  else
    -- Every site at once (not the upload loop's way): the same rule, without the per-site index order.
    v_rows := array(
      select q.ctid from app_public.offline_conversion_queue q
       where q.stage = 'open' and q.retry_at <= pg_catalog.now()
         and (q.status = 'pending' or q.locked_until < pg_catalog.now())
         and q.provider = claim_offline_conversion_jobs.provider
         and (q.kind = 'conversion'
              or coalesce((select c.status in ('pending', 'processing') from app_public.offline_conversion_queue c
                            where c.site_id = q.site_id and c.sale_id = q.sale_id and c.provider = q.provider
                              and c.kind = 'conversion'), false) is false)
       order by q.retry_at, q.created_at, q.id
       limit claim_offline_conversion_jobs."limit"
         for update skip locked);
  end if;
  return query
  update app_public.offline_conversion_queue q
     set status = 'processing',
         locked_by = coalesce(claim_offline_conversion_jobs.worker, pg_catalog.pg_backend_pid()::text),
         locked_until = pg_catalog.now() + pg_catalog.make_interval(secs => claim_offline_conversion_jobs.lease_seconds),
         attempts = q.attempts + 1,
         destination_id = coalesce(claim_offline_conversion_jobs.destination_id, q.destination_id),
         updated_at = greatest(pg_catalog.now(), q.updated_at + interval '1 millisecond')
   where q.ctid = any (v_rows)
  returning q.*;
end;
$$;

-- The queries below are unchanged but for naming the stage their partial index covers.
create or replace function app_private.refresh_conversion_attribution(site_id uuid) returns integer
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_count integer := 0;
  v_item record;
begin
  for v_item in
    select s.*, q.id as queue_id
      from app_public.offline_conversion_queue q
      join app_public.sales s on s.site_id = q.site_id and s.id = q.sale_id
     where q.site_id = refresh_conversion_attribution.site_id and q.stage = 'open' and q.kind = 'conversion' and q.status = 'pending' and q.click_id is null
       for update of q
  loop
    declare
      v_attribution record;
    begin
      select * into v_attribution
        from app_private.resolve_sale_attribution(v_item.site_id, v_item.session_id, v_item.visitor_id, v_item.call_id, v_item.gclid,
                                                  v_item.occurred_at, v_item.session_event_id);
      continue when v_attribution.click_id is null;
      update app_public.sales s
         set session_id = coalesce(v_attribution.attributed_session_id, s.session_id),
             session_event_id = coalesce(v_attribution.session_anchor_event_id, s.session_event_id), attribution_tier = v_attribution.attribution_tier,
             attribution_source = v_attribution.attribution_source, click_id = v_attribution.click_id, click_id_type = v_attribution.click_id_type
       where s.site_id = v_item.site_id and s.id = v_item.id;
      update app_public.offline_conversion_queue q
         set click_id = v_attribution.click_id, click_id_type = v_attribution.click_id_type, retry_at = least(q.retry_at, pg_catalog.now())
       where q.site_id = v_item.site_id and q.id = v_item.queue_id;
      v_count := v_count + 1;
    end;
  end loop;
  if v_count > 0 then
    perform app_private.enqueue_upload(refresh_conversion_attribution.site_id, 'google');
  end if;
  return v_count;
end;
$$;

create or replace function app_private.schedule_next_upload(site_id uuid) returns void
  language sql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
  select app_private.enqueue_upload(schedule_next_upload.site_id, 'google', n.next_at)
    from (select min(case when q.status = 'pending' then q.retry_at else q.sent_at + interval '5 minutes' end) as next_at
            from app_public.offline_conversion_queue q
           where q.site_id = schedule_next_upload.site_id
             and ((q.stage = 'open' and q.status = 'pending') or (q.stage = 'sent' and q.request_id is not null and q.last_error_code is null
                                           and q.sent_at > pg_catalog.now() - interval '2 days'))) n
   where n.next_at is not null;
$$;

create or replace function app_private.unsettled_requests(site_id uuid) returns setof text
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select distinct q.request_id from app_public.offline_conversion_queue q
   where q.site_id = unsettled_requests.site_id and q.stage = 'sent' and q.request_id is not null and q.last_error_code is null
     and q.sent_at < pg_catalog.now() - interval '5 minutes' and q.sent_at > pg_catalog.now() - interval '2 days'
   limit 50;
$$;

create or replace function app_private.settle_request(site_id uuid, request_id text, status text, errors jsonb) returns integer
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
   where q.site_id = settle_request.site_id and q.request_id = settle_request.request_id and q.stage = 'sent'
     and settle_request.status in ('SUCCESS', 'FAILED', 'PARTIAL_SUCCESS');
  get diagnostics v_count = row_count;
  return v_count;
end;
$$;

create or replace function app_private.sites_with_due_conversions(provider text)
  returns setof uuid
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select distinct q.site_id from app_public.offline_conversion_queue q
   where q.provider = sites_with_due_conversions.provider
     and q.stage = 'open' and q.retry_at <= pg_catalog.now()
     and (q.status = 'pending' or q.locked_until < pg_catalog.now())
     and exists (select 1 from app_public.destinations d where d.site_id = q.site_id and d.status = 'active');
$$;

create or replace function app_private.oci_export_lines(site_id uuid, conversion_name text)
  returns setof text
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_site app_public.sites;
begin
  select * into v_site from app_public.sites s where s.id = oci_export_lines.site_id;
  if v_site.id is null then
    raise exception using errcode = 'OMNSS', message = 'No such site.';
  end if;
  if exists (select 1 from app_public.destinations d where d.site_id = v_site.id and d.status <> 'paused') then
    return;  -- an API rail delivers this site's conversions; a CSV as well would count them twice
  end if;
  update app_public.offline_conversion_queue q
     set status = 'sent', request_id = 'csv', sent_at = pg_catalog.now(), last_error_code = null, last_error_message = null
   where q.site_id = v_site.id and q.stage = 'open' and q.kind = 'conversion' and q.status = 'pending' and q.click_id_type = 'gclid'
     and q.conversion_at > pg_catalog.now() - interval '90 days';
  -- A scheduled import cannot retract: such a retraction says so instead of waiting for ever.
  update app_public.offline_conversion_queue q
     set status = 'failed', last_error_code = 'RETRACTION_UNSUPPORTED',
         last_error_message = 'Google''s scheduled CSV import cannot retract a conversion; remove it in Google Ads.'
   where q.site_id = v_site.id and q.stage = 'open' and q.kind = 'retraction' and q.status = 'pending';
  return next 'Parameters:TimeZone=' || v_site.timezone;
  return next 'Google Click ID,Conversion Name,Conversion Time,Conversion Value,Conversion Currency,Ad User Data,Ad Personalization';
  return query
  select pg_catalog.concat_ws(',', q.click_id, app_private.csv_field(oci_export_lines.conversion_name),
           pg_catalog.to_char(q.conversion_at at time zone v_site.timezone, 'YYYY-MM-DD HH24:MI:SS'), q.value::text, q.currency,
           case q.ad_user_data when 'granted' then 'GRANTED' when 'denied' then 'DENIED' else '' end,
           case q.ad_personalization when 'granted' then 'GRANTED' when 'denied' then 'DENIED' else '' end)
    from app_public.offline_conversion_queue q
   where q.site_id = v_site.id and q.stage = 'sent' and q.kind = 'conversion' and q.request_id = 'csv'
     and q.conversion_at > pg_catalog.now() - interval '90 days'
     and q.click_id is not null and q.click_id_type = 'gclid'
   order by q.conversion_at, q.id;
end;
$$;

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
           locked_by = null, locked_until = null,
           updated_at = greatest(pg_catalog.now(), q.updated_at + interval '1 millisecond')
      from o
     where q.site_id = record_upload_outcomes.site_id and q.id = o.id
       and q.stage = 'open' and q.status = 'processing' and q.locked_by = record_upload_outcomes.worker
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
     where q.site_id = release_claimed_conversions.site_id and q.stage = 'open' and q.status = 'processing' and q.locked_by = release_claimed_conversions.worker
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


-- Rows are now counted under their destination from the moment they are queued.
comment on function app_public.destinations_conversion_totals(app_public.destinations) is
  E'How many of this destination''s conversions are pending (waiting for their first upload or a retry), in flight, sent (awaiting Google''s processing), accepted, failed or cancelled.';
