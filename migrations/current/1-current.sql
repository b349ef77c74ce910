/*
 * Delivery hardening, from end-to-end tests of the upload loop:
 * - each sent row keeps the request id of the request that carried it (Data Manager splits
 *   a rejected batch into several requests);
 * - a retraction never overtakes its conversion, and is dropped when the conversion never
 *   reached Google;
 * - a conversion whose sale was undone while it was in flight is not uploaded afterwards;
 * - order ids every rail accepts (printable ASCII, no spaces, at most 64 characters);
 * - a new sale never waits behind an upload job scheduled for later.
 */

/* The order id sent to Google: the external id when every rail takes it, else a stable digest of it. */
create or replace function app_hidden.google_order_id(site_id uuid, external_id text) returns text
  language sql immutable strict parallel safe
  set search_path to pg_catalog, public, pg_temp
as $$
  select case when external_id ~ '^[!-~]{1,64}$' then external_id
              else 'om-' || pg_catalog.left(pg_catalog.encode(public.digest(pg_catalog.convert_to(site_id::text || '/' || external_id, 'UTF8'), 'sha256'), 'hex'), 40)
         end;
$$;
comment on function app_hidden.google_order_id(uuid, text) is
  E'The sale''s external id as Google''s order id, or om-<SHA-256 prefix> when it has spaces, non-ASCII or over 64 characters (the same on every re-send).';

create or replace function app_private.enqueue_conversion(sale app_public.sales, consent jsonb)
  returns app_public.offline_conversion_queue
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_row app_public.offline_conversion_queue;
begin
  insert into app_public.offline_conversion_queue (site_id, sale_id, order_id, click_id, click_id_type, conversion_at, value, currency,
                                                   ad_user_data, ad_personalization)
  values (sale.site_id, sale.id, app_hidden.google_order_id(sale.site_id, sale.external_id), sale.click_id, sale.click_id_type,
          sale.occurred_at, sale.amount, sale.currency,
          coalesce(consent ->> 'ad_user_data', 'unspecified'), coalesce(consent ->> 'ad_personalization', 'unspecified'))
  on conflict on constraint offline_conversion_queue_once do nothing
  returning * into v_row;
  if v_row.id is not null then
    perform app_private.enqueue_upload(sale.site_id, 'google');
  end if;
  return v_row;
end;
$$;

/*
 * One upload job per site, due at the earliest time anyone asked for: a job already waiting
 * for a later time is brought forward, never pushed back.
 */
create or replace function app_private.enqueue_upload(site_id uuid, provider text, run_at timestamptz default null) returns void
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_key text := 'upload_conversions:' || enqueue_upload.provider || ':' || enqueue_upload.site_id::text;
  v_run_at timestamptz := coalesce(enqueue_upload.run_at, pg_catalog.now());
  v_waiting timestamptz;
begin
  select j.run_at into v_waiting from graphile_worker._private_jobs j where j.key = v_key and j.locked_at is null;
  perform graphile_worker.add_job('upload_conversions',
    pg_catalog.json_build_object('site_id', enqueue_upload.site_id, 'provider', enqueue_upload.provider),
    job_key => v_key, job_key_mode => 'replace', run_at => least(v_run_at, v_waiting));
end;
$$;

create or replace function app_private.claim_offline_conversion_jobs(
  provider text, "limit" integer, site_id uuid default null, worker text default null, lease_seconds integer default 300
) returns setof app_public.offline_conversion_queue
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  if (claim_offline_conversion_jobs."limit" between 1 and 2000 and claim_offline_conversion_jobs.lease_seconds between 10 and 86400) is not true then
    raise exception using errcode = '22023', message = 'limit must be 1 to 2000 and lease_seconds 10 to 86400.';
  end if;
  return query
  with due as (
    select q.site_id, q.id
      from app_public.offline_conversion_queue q
     where q.provider = claim_offline_conversion_jobs.provider
       and (claim_offline_conversion_jobs.site_id is null or q.site_id = claim_offline_conversion_jobs.site_id)
       and ((q.status = 'pending' and q.retry_at <= pg_catalog.now())
            or (q.status = 'processing' and q.locked_until < pg_catalog.now()))
       -- A retraction waits while its conversion is in flight: Google must see them in order.
       and not (q.kind = 'retraction' and exists (
             select 1 from app_public.offline_conversion_queue c
              where c.site_id = q.site_id and c.sale_id = q.sale_id and c.provider = q.provider
                and c.kind = 'conversion' and c.status in ('pending', 'processing')))
     order by q.retry_at, q.created_at, q.id
     limit claim_offline_conversion_jobs."limit"
       for update skip locked
  )
  update app_public.offline_conversion_queue q
     set status = 'processing',
         locked_by = coalesce(claim_offline_conversion_jobs.worker, pg_catalog.pg_backend_pid()::text),
         locked_until = pg_catalog.now() + pg_catalog.make_interval(secs => claim_offline_conversion_jobs.lease_seconds),
         attempts = q.attempts + 1
    from due
   where q.site_id = due.site_id and q.id = due.id
  returning q.*;
end;
$$;

/*
 * Outcomes now carry the request id of the row's own request. A conversion that must be
 * tried again but whose sale was undone meanwhile is cancelled instead; a conversion that
 * ended without reaching Google takes its queued retraction with it.
 */
create or replace function app_private.record_upload_outcomes(site_id uuid, worker text, outcomes jsonb, request_id text default null)
  returns integer
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_count integer;
begin
  with applied as (
    update app_public.offline_conversion_queue q
       set status = case
             when o.kind = 'retry' and q.kind = 'conversion' and s.status = 'cancelled' then 'cancelled'
             when o.kind = 'accepted' then 'accepted' when o.kind = 'sent' then 'sent' when o.kind = 'retry' then 'pending' else 'failed' end,
           retry_at = case when o.kind = 'retry' then pg_catalog.now() + pg_catalog.make_interval(secs => coalesce(o.retry_after_seconds, 300)) else q.retry_at end,
           last_error_code = case
             when o.kind = 'retry' and q.kind = 'conversion' and s.status = 'cancelled' then 'SALE_UNDONE'
             when o.kind in ('accepted', 'sent') then o.code else coalesce(o.code, 'UNKNOWN') end,
           last_error_message = case
             when o.kind = 'retry' and q.kind = 'conversion' and s.status = 'cancelled' then 'The sale was undone before Google took the conversion.'
             when o.kind in ('accepted', 'sent') then null else pg_catalog.left(o.message, 1000) end,
           request_id = case when o.kind in ('accepted', 'sent') then coalesce(o.request_id, record_upload_outcomes.request_id, q.request_id) else q.request_id end,
           sent_at = case when o.kind in ('accepted', 'sent') then coalesce(q.sent_at, pg_catalog.now()) else q.sent_at end,
           accepted_at = case when o.kind = 'accepted' then pg_catalog.now() else q.accepted_at end,
           locked_by = null, locked_until = null
      from pg_catalog.jsonb_to_recordset(record_upload_outcomes.outcomes)
             as o(id uuid, kind text, code text, message text, retry_after_seconds integer, request_id text),
           app_public.sales s
     where q.site_id = record_upload_outcomes.site_id and q.id = o.id
       and s.site_id = q.site_id and s.id = q.sale_id
       and q.status = 'processing' and q.locked_by = record_upload_outcomes.worker
    returning q.site_id, q.sale_id, q.kind, q.status
  ), dropped_retractions as (
    update app_public.offline_conversion_queue r
       set status = 'cancelled', last_error_code = 'NOTHING_TO_RETRACT',
           last_error_message = 'The conversion never reached Google, so there is nothing to retract.'
      from applied a
     where a.kind = 'conversion' and a.status in ('failed', 'cancelled')
       and r.site_id = a.site_id and r.sale_id = a.sale_id and r.kind = 'retraction' and r.status = 'pending'
  )
  select count(*) into v_count from applied;
  return v_count;
end;
$$;

/* Claimed rows go back untouched, except conversions whose sale was undone meanwhile: cancelled. */
create or replace function app_private.release_claimed_conversions(site_id uuid, worker text, code text, message text, retry_after_seconds integer)
  returns integer
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_count integer;
begin
  update app_public.offline_conversion_queue q
     set status = case when q.kind = 'conversion' and s.status = 'cancelled' then 'cancelled' else 'pending' end,
         locked_by = null, locked_until = null, attempts = greatest(q.attempts - 1, 0),
         last_error_code = case when q.kind = 'conversion' and s.status = 'cancelled' then 'SALE_UNDONE' else release_claimed_conversions.code end,
         last_error_message = case when q.kind = 'conversion' and s.status = 'cancelled' then 'The sale was undone before Google took the conversion.'
                                   else release_claimed_conversions.message end,
         retry_at = pg_catalog.now() + pg_catalog.make_interval(secs => release_claimed_conversions.retry_after_seconds)
    from app_public.sales s
   where q.site_id = release_claimed_conversions.site_id and q.status = 'processing' and q.locked_by = release_claimed_conversions.worker
     and s.site_id = q.site_id and s.id = q.sale_id;
  get diagnostics v_count = row_count;
  -- Their retractions are no longer needed either.
  update app_public.offline_conversion_queue r
     set status = 'cancelled', last_error_code = 'NOTHING_TO_RETRACT',
         last_error_message = 'The conversion never reached Google, so there is nothing to retract.'
   where r.site_id = release_claimed_conversions.site_id and r.kind = 'retraction' and r.status = 'pending'
     and exists (select 1 from app_public.offline_conversion_queue c
                  where c.site_id = r.site_id and c.sale_id = r.sale_id and c.kind = 'conversion'
                    and c.status = 'cancelled' and c.last_error_code = 'SALE_UNDONE');
  return v_count;
end;
$$;

/*
 * Sessions are re-derived when late events arrive, and a visit whose first event changes gets
 * a new id. A sale therefore also remembers the event its session started with, and finds the
 * visit again through it when the id it named is gone (so a late ad click still reaches its
 * conversion).
 */
alter table app_public.sales add column if not exists session_event_id uuid;
comment on column app_public.sales.session_event_id is
  E'The first event of the session the sale was attributed to: finds the visit again if late events re-derive its id.';
drop function if exists app_private.resolve_sale_attribution(uuid, uuid, text, uuid, text, timestamptz);
drop function if exists app_private.resolve_sale_attribution(uuid, uuid, text, uuid, text, timestamptz, uuid);
create function app_private.resolve_sale_attribution(site_id uuid, session_id uuid, visitor_id text, call_id uuid, gclid text, at timestamptz,
                                                     anchor_event_id uuid default null)
  returns table (attributed_session_id uuid, session_anchor_event_id uuid, attribution_tier text, attribution_source text, click_id text, click_id_type text, session_visitor_id text)
  language plpgsql stable
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_session app_public.sessions;
  v_call app_public.calls;
begin
  if resolve_sale_attribution.session_id is not null then
    select * into v_session from app_public.sessions s
     where s.site_id = resolve_sale_attribution.site_id and s.id = resolve_sale_attribution.session_id
     limit 1;
  end if;
  if v_session.id is null and resolve_sale_attribution.call_id is not null then
    select * into v_call from app_public.calls c
     where c.site_id = resolve_sale_attribution.site_id and c.id = resolve_sale_attribution.call_id;
    if v_call.session_id is not null then
      select * into v_session from app_public.sessions s
       where s.site_id = resolve_sale_attribution.site_id and s.id = v_call.session_id
       limit 1;
    end if;
  end if;
  -- The session named may have been re-derived since (a late earlier event gives a visit a new
  -- id): the visit is the one that now holds the event the sale's session started with.
  if v_session.id is null and resolve_sale_attribution.anchor_event_id is not null then
    select s.* into v_session
      from app_public.events e
      join app_public.sessions s on s.site_id = e.site_id and s.id = e.session_id
     where e.site_id = resolve_sale_attribution.site_id and e.id = resolve_sale_attribution.anchor_event_id
     limit 1;
  end if;
  if v_session.id is null and v_call.id is null and resolve_sale_attribution.visitor_id is not null then
    -- By the raw id (analytics consent) or by the daily hash of any day whose salt remains.
    select * into v_session from app_public.sessions s
     where s.site_id = resolve_sale_attribution.site_id
       and s.visitor_key = any (array[resolve_sale_attribution.visitor_id] || array(
             select 'h:' || pg_catalog.encode(pg_catalog.substr(public.hmac(pg_catalog.convert_to(resolve_sale_attribution.site_id::text || '/'
                      || resolve_sale_attribution.visitor_id, 'UTF8'), d.salt, 'sha256'), 1, 16), 'hex')
               from app_private.daily_salts d))
       and s.started_at <= resolve_sale_attribution.at and s.started_at > resolve_sale_attribution.at - interval '90 days'
     order by s.started_at desc, s.first_event_id desc
     limit 1;
  end if;

  if v_session.id is not null then
    attributed_session_id := v_session.id;
    session_anchor_event_id := v_session.first_event_id;
    attribution_tier := v_session.attribution_tier;
    attribution_source := v_session.attribution_source;
    session_visitor_id := v_session.visitor_id;
    if v_session.attribution_tier = 'S1' then
      click_id := v_session.click_id; click_id_type := v_session.click_id_type;
    elsif v_session.attribution_tier = 'S3' then
      click_id := v_session.assisting_click_id; click_id_type := v_session.assisting_click_id_type;
    end if;
  elsif v_call.id is not null and v_call.attribution_tier is not null then
    attribution_tier := v_call.attribution_tier;
    attribution_source := v_call.attribution_source;
    click_id := v_call.click_id; click_id_type := v_call.click_id_type;
  end if;
  if click_id is null and resolve_sale_attribution.gclid is not null then
    click_id := resolve_sale_attribution.gclid; click_id_type := 'gclid';
    if attribution_tier is null then
      attribution_tier := 'S1'; attribution_source := 'google_ads';
    end if;
  end if;
  if click_id_type not in ('gclid', 'gbraid', 'wbraid') then
    click_id := null; click_id_type := null;  -- msclkid and friends are not Google's
  end if;
  return next;
end;
$$;
comment on function app_private.resolve_sale_attribution(uuid, uuid, text, uuid, text, timestamptz, uuid) is
  E'The session (and its first event), tier and Google click id a sale is attributed to, from its session, call, visitor or gclid.';

create or replace function app_private.record_sale(
  site app_public.sites, external_id text, amount numeric, currency text, occurred_at timestamptz,
  session_id uuid, visitor_id text, call_ref text, gclid text, email text, phone text, consent jsonb,
  conversation_id uuid
) returns app_public.sales
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_minor integer := app_hidden.currency_minor_units(record_sale.currency);
  v_email text := app_hidden.normalize_email(record_sale.email);
  v_phone text := app_hidden.normalize_phone(record_sale.phone);
  v_call app_public.calls;
  v_attribution record;
  v_sale app_public.sales;
begin
  if record_sale.external_id is null or record_sale.external_id !~ '^[[:graph:]]([[:graph:] ]{0,126}[[:graph:]])?$' then
    raise exception using errcode = 'OMSAL', message = 'external_id must be 1 to 128 printable characters.';
  end if;
  if record_sale.amount is null or record_sale.amount < 0 or record_sale.amount >= 1e12 then
    raise exception using errcode = 'OMSAL', message = 'amount must be a number from 0 up to 999999999999.';
  end if;
  if v_minor is null then
    raise exception using errcode = 'OMSAL', message = 'currency must be an ISO 4217 code in circulation, like TRY, EUR or USD.';
  end if;
  if pg_catalog.round(record_sale.amount, v_minor) <> record_sale.amount then
    raise exception using errcode = 'OMSAL', message = pg_catalog.format('amount has more decimals than %s allows (%s).', record_sale.currency, v_minor);
  end if;
  if record_sale.occurred_at is null or record_sale.occurred_at > pg_catalog.now() + interval '5 minutes'
     or record_sale.occurred_at < pg_catalog.now() - interval '1 year' then
    raise exception using errcode = 'OMSAL', message = 'occurred_at must be a time with a zone, not in the future and within the last year.';
  end if;
  if record_sale.visitor_id !~ '^[A-Za-z0-9_-]{1,64}$' or record_sale.gclid !~ '^[A-Za-z0-9_-]{1,255}$' then
    raise exception using errcode = 'OMSAL', message = 'visitor_id and gclid must be plain identifiers (letters, digits, _ and -).';
  end if;
  if record_sale.email is not null and v_email is null then
    raise exception using errcode = 'OMSAL', message = 'email is not a valid email address.';
  end if;
  if record_sale.phone is not null and v_phone is null then
    raise exception using errcode = 'OMSAL', message = 'phone must be an international number with its country code, like +90 555 111 22 33.';
  end if;
  if record_sale.consent is not null and (not app_private.valid_consent(record_sale.consent)
      or exists (select 1 from pg_catalog.jsonb_object_keys(record_sale.consent) k where k not in ('ad_user_data', 'ad_personalization'))) then
    raise exception using errcode = 'OMSAL', message = 'consent may hold ad_user_data and ad_personalization, each granted or denied.';
  end if;

  if record_sale.session_id is not null and not exists (
       select 1 from app_public.sessions s where s.site_id = site.id and s.id = record_sale.session_id) then
    raise exception using errcode = 'OMUSS', message = 'No session of this site has this id.';
  end if;
  if record_sale.call_ref is not null then
    select * into v_call from app_public.calls c
     where c.site_id = site.id
       and (c.call_id = record_sale.call_ref
            or (record_sale.call_ref ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' and c.id = record_sale.call_ref::uuid))
     order by c.call_id = record_sale.call_ref desc
     limit 1;
    if v_call.id is null then
      raise exception using errcode = 'OMUCL', message = 'No call of this site has this id.';
    end if;
  end if;

  select * into v_attribution
    from app_private.resolve_sale_attribution(site.id, record_sale.session_id, record_sale.visitor_id, v_call.id, record_sale.gclid, record_sale.occurred_at);

  insert into app_public.sales as s (site_id, external_id, amount, currency, occurred_at, conversation_id, call_id, session_id,
                                     visitor_id, gclid, attribution_tier, attribution_source, click_id, click_id_type,
                                     session_event_id, created_by_user_id, created_by_api_key_id)
  values (site.id, record_sale.external_id, record_sale.amount, record_sale.currency, record_sale.occurred_at,
          record_sale.conversation_id, v_call.id, v_attribution.attributed_session_id, record_sale.visitor_id, record_sale.gclid,
          v_attribution.attribution_tier, v_attribution.attribution_source, v_attribution.click_id, v_attribution.click_id_type,
          v_attribution.session_anchor_event_id, app_hidden.current_user_id(), app_hidden.current_api_key_id())
  on conflict on constraint sales_external_id_key do nothing
  returning * into v_sale;
  if v_sale.id is null then
    raise exception using errcode = 'OMSEX', message = 'A sale with this external_id already exists.';
  end if;

  if v_email is not null or v_phone is not null then
    insert into app_private.sale_identifiers (site_id, sale_id, email_sha256, phone_sha256)
    values (site.id, v_sale.id, app_hidden.identifier_sha256(v_email), app_hidden.identifier_sha256(v_phone));
  end if;

  -- What is known of the visitor's consent, with the CRM's own record (if any) laid over it:
  -- a signal the CRM does not mention keeps its known value.
  perform app_private.enqueue_conversion(v_sale,
    app_private.conversion_consent(site, coalesce(record_sale.visitor_id, v_attribution.session_visitor_id), v_attribution.attributed_session_id)
    || coalesce(record_sale.consent, '{}'));
  return v_sale;
end;
$$;

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
     where q.site_id = refresh_conversion_attribution.site_id and q.kind = 'conversion' and q.status = 'pending' and q.click_id is null
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

/*
 * Honest status per destination: each row remembers the destination it was sent to, and a
 * destination shows how many of its conversions are waiting, in flight, sent, accepted,
 * failed or cancelled, so "uploaded" is never mistaken for "accepted".
 */
alter table app_public.offline_conversion_queue add column if not exists destination_id uuid;
comment on column app_public.offline_conversion_queue.destination_id is E'The destination it was last sent to.';
do $$
begin
  if not exists (select 1 from pg_constraint where conname = 'offline_conversion_queue_destination_fkey') then
    alter table app_public.offline_conversion_queue add constraint offline_conversion_queue_destination_fkey
      foreign key (site_id, destination_id) references app_public.destinations (site_id, id) on delete set null (destination_id);
  end if;
end;
$$;
create index if not exists offline_conversion_queue_destination_idx on app_public.offline_conversion_queue (site_id, destination_id, status);

drop function if exists app_public.destinations_conversion_totals(app_public.destinations);
drop type if exists app_public.conversion_totals;
create type app_public.conversion_totals as (
  pending integer, processing integer, sent integer, accepted integer, failed integer, cancelled integer, retractions integer
);
comment on type app_public.conversion_totals is E'Conversions of a destination by status (retractions counted apart).';

create function app_public.destinations_conversion_totals(d app_public.destinations) returns app_public.conversion_totals
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select (count(*) filter (where q.kind = 'conversion' and q.status = 'pending'),
          count(*) filter (where q.kind = 'conversion' and q.status = 'processing'),
          count(*) filter (where q.kind = 'conversion' and q.status = 'sent'),
          count(*) filter (where q.kind = 'conversion' and q.status = 'accepted'),
          count(*) filter (where q.kind = 'conversion' and q.status = 'failed'),
          count(*) filter (where q.kind = 'conversion' and q.status = 'cancelled'),
          count(*) filter (where q.kind = 'retraction'))::app_public.conversion_totals
    from app_public.offline_conversion_queue q
   where q.site_id = d.site_id and q.destination_id = d.id;
$$;
comment on function app_public.destinations_conversion_totals(app_public.destinations) is
  E'How many of the conversions sent to this destination are pending a retry, in flight, sent (awaiting Google''s processing), accepted, failed or cancelled.';

/* A national trunk prefix written as "(0)" after the country code is not part of the E.164 number. */
create or replace function app_hidden.normalize_phone(phone text) returns text
  language sql immutable strict parallel safe
  set search_path to pg_catalog, public, pg_temp
as $$
  select case when v.p ~ '^\+[1-9][0-9]{6,14}$' then v.p end
    from (select pg_catalog.regexp_replace(pg_catalog.regexp_replace(pg_catalog.regexp_replace(pg_catalog.btrim(phone), '\(0\)', '', 'g'),
                                                                     '[[:space:]().-]', '', 'g'), '^00', '+') as p) v;
$$;

/* The CSV lists only rows that still have their gclid (an erasure strips it), and says it cannot retract. */
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
   where q.site_id = v_site.id and q.kind = 'conversion' and q.status = 'pending' and q.click_id_type = 'gclid'
     and q.conversion_at > pg_catalog.now() - interval '90 days';
  -- A scheduled import cannot retract: such a retraction says so instead of waiting for ever.
  update app_public.offline_conversion_queue q
     set status = 'failed', last_error_code = 'RETRACTION_UNSUPPORTED',
         last_error_message = 'Google''s scheduled CSV import cannot retract a conversion; remove it in Google Ads.'
   where q.site_id = v_site.id and q.kind = 'retraction' and q.status = 'pending';
  return next 'Parameters:TimeZone=' || v_site.timezone;
  return next 'Google Click ID,Conversion Name,Conversion Time,Conversion Value,Conversion Currency,Ad User Data,Ad Personalization';
  return query
  select pg_catalog.concat_ws(',', q.click_id, app_private.csv_field(oci_export_lines.conversion_name),
           pg_catalog.to_char(q.conversion_at at time zone v_site.timezone, 'YYYY-MM-DD HH24:MI:SS'), q.value::text, q.currency,
           case q.ad_user_data when 'granted' then 'GRANTED' when 'denied' then 'DENIED' else '' end,
           case q.ad_personalization when 'granted' then 'GRANTED' when 'denied' then 'DENIED' else '' end)
    from app_public.offline_conversion_queue q
   where q.site_id = v_site.id and q.kind = 'conversion' and q.status = 'sent' and q.request_id = 'csv'
     and q.conversion_at > pg_catalog.now() - interval '90 days'
     and q.click_id is not null and q.click_id_type = 'gclid'
   order by q.conversion_at, q.id;
end;
$$;

create or replace function app_public.confirm_sale_and_enqueue(
  site_id uuid, external_id text, amount numeric, currency text, occurred_at timestamptz,
  session_id uuid default null, visitor_id text default null, call_id text default null, gclid text default null,
  email text default null, phone text default null, consent jsonb default null
) returns app_public.sales
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_site app_public.sites;
begin
  -- The target is the site: a CRM's order id may be an email, which a denial's audit row must not keep.
  perform app_private.assert_caller_role(confirm_sale_and_enqueue.site_id, 'editor', 'confirm_sale', 'sales', confirm_sale_and_enqueue.site_id::text);
  select * into v_site from app_public.sites s where s.id = confirm_sale_and_enqueue.site_id;
  if v_site.id is null then
    raise exception using errcode = 'OMNSS', message = 'No such site.';
  end if;
  return app_private.record_sale(v_site, confirm_sale_and_enqueue.external_id, confirm_sale_and_enqueue.amount,
    pg_catalog.upper(confirm_sale_and_enqueue.currency), confirm_sale_and_enqueue.occurred_at, confirm_sale_and_enqueue.session_id,
    confirm_sale_and_enqueue.visitor_id, confirm_sale_and_enqueue.call_id, confirm_sale_and_enqueue.gclid,
    confirm_sale_and_enqueue.email, confirm_sale_and_enqueue.phone, confirm_sale_and_enqueue.consent, null);
end;
$$;

