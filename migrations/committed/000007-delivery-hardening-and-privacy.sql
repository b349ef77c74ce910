--! Previous: sha1:8d7249786c8acb6717494567c86bd4f35b33256b
--! Hash: sha1:9c3856b1c631891f86ad2db43908a35e29cd9f9c
--! Message: delivery-hardening-and-privacy

--! split: 1-delivery-hardening.sql
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

--! split: 2-privacy.sql
/*
 * Privacy: right of access, right to erasure, retention.
 *
 * A subject is named by kind and value: visitor_id, email, phone (also a call's caller number)
 * or click_id (a gclid, gbraid or wbraid). subject_links finds every row linked to it, directly
 * or through the visitors its sales and calls lead to and all of their sessions; access exports
 * those rows, erasure deletes or strips them. The ledger is never touched: it holds no personal
 * data, so invoices and reconciliation stay exact.
 */

alter table app_public.sites add column if not exists data_retention_months integer not null default 13;
do $$
begin
  if not exists (select 1 from pg_constraint where conname = 'sites_data_retention_months_range') then
    alter table app_public.sites add constraint sites_data_retention_months_range check (data_retention_months between 1 and 13);
  end if;
end;
$$;
comment on column app_public.sites.data_retention_months is
  E'How long events, sessions and the personal data of calls are kept, in months (1 to 13; 13 by default).';
grant select (data_retention_months) on app_public.sites to :DATABASE_VISITOR;

/* The subject in its canonical form (email and phone normalised as Google hashes them); OMSUB when it is not one. */
create function app_private.normalize_subject(kind text, value text) returns text
  language plpgsql immutable
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_normalized text;
begin
  v_normalized := case normalize_subject.kind
    when 'visitor_id' then case when normalize_subject.value ~ '^[A-Za-z0-9_-]{1,64}$' then normalize_subject.value end
    when 'email' then app_hidden.normalize_email(normalize_subject.value)
    when 'phone' then app_hidden.normalize_phone(normalize_subject.value)
    when 'click_id' then case when normalize_subject.value ~ '^[A-Za-z0-9_-]{1,255}$' then normalize_subject.value end
  end;
  if v_normalized is null then
    raise exception using errcode = 'OMSUB', message =
      'A subject is a visitor_id, email, phone (with its country code) or click_id, with a value of that kind.';
  end if;
  return v_normalized;
end;
$$;
comment on function app_private.normalize_subject(text, text) is E'A subject''s value in canonical form; OMSUB for an unknown kind or a malformed value.';

/* What a receipt keeps of the subject: an HMAC with the site's secret salt (proves which subject, reveals nothing). */
create function app_private.hash_subject(site_id uuid, kind text, normalized text) returns text
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select pg_catalog.encode(public.hmac(pg_catalog.convert_to(kind || ':' || normalized, 'UTF8'), s.salt, 'sha256'), 'hex')
    from app_private.site_salts s where s.site_id = hash_subject.site_id;
$$;
comment on function app_private.hash_subject(uuid, text, text) is E'HMAC-SHA256 of kind:value with the site''s secret salt.';

create type app_private.subject_link_set as (
  visitor_ids text[],
  visitor_keys text[],
  session_ids uuid[],
  call_ids uuid[],
  sale_ids uuid[],
  consent_hashes bytea[]
);

/*
 * Everything linked to a subject on one site. From the subject to its sales and calls, from
 * those to their visitors and sessions, from the visitors to every session they had (by raw
 * id and by each daily hash whose salt still exists; older hashes are already unlinkable),
 * and back to every call and sale of those sessions and visitors.
 */
create function app_private.subject_links(site_id uuid, kind text, normalized text) returns app_private.subject_link_set
  language plpgsql stable
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v app_private.subject_link_set := row('{}', '{}', '{}', '{}', '{}', '{}');
  v_hash text;
begin
  if kind = 'visitor_id' then
    v.visitor_ids := array[normalized];
  elsif kind in ('email', 'phone') then
    v_hash := app_hidden.identifier_sha256(normalized);
    select coalesce(array_agg(i.sale_id), '{}') into v.sale_ids from app_private.sale_identifiers i
     where i.site_id = subject_links.site_id
       and (case when kind = 'email' then i.email_sha256 else i.phone_sha256 end) = v_hash;
    if kind = 'phone' then
      select coalesce(array_agg(c.id), '{}') into v.call_ids from app_public.calls c
       where c.site_id = subject_links.site_id and c.caller = normalized;
    end if;
  else
    select coalesce(array_agg(distinct s.id), '{}'), coalesce(array_agg(distinct s.visitor_key), '{}')
      into v.session_ids, v.visitor_keys
      from app_public.sessions s
     where s.site_id = subject_links.site_id and (s.click_id = normalized or s.assisting_click_id = normalized);
    select coalesce(array_agg(c.id), '{}') into v.call_ids from app_public.calls c
     where c.site_id = subject_links.site_id and (c.gclid = normalized or c.click_id = normalized);
    select coalesce(array_agg(s.id), '{}') into v.sale_ids from app_public.sales s
     where s.site_id = subject_links.site_id and (s.gclid = normalized or s.click_id = normalized);
  end if;

  -- Sales lead to their calls, visitors and sessions; calls to theirs.
  select v.call_ids || coalesce(array_agg(s.call_id) filter (where s.call_id is not null), '{}'),
         v.visitor_ids || coalesce(array_agg(s.visitor_id) filter (where s.visitor_id is not null), '{}'),
         v.session_ids || coalesce(array_agg(s.session_id) filter (where s.session_id is not null), '{}')
    into v.call_ids, v.visitor_ids, v.session_ids
    from app_public.sales s where s.site_id = subject_links.site_id and s.id = any(v.sale_ids);
  select v.visitor_ids || coalesce(array_agg(c.visitor_id) filter (where c.visitor_id is not null), '{}'),
         v.session_ids || coalesce(array_agg(c.session_id) filter (where c.session_id is not null), '{}')
    into v.visitor_ids, v.session_ids
    from app_public.calls c where c.site_id = subject_links.site_id and c.id = any(v.call_ids);
  -- Sessions lead to their visitors.
  select v.visitor_keys || coalesce(array_agg(distinct s.visitor_key), '{}'),
         v.visitor_ids || coalesce(array_agg(distinct s.visitor_id) filter (where s.visitor_id is not null), '{}')
    into v.visitor_keys, v.visitor_ids
    from app_public.sessions s where s.site_id = subject_links.site_id and s.id = any(v.session_ids);
  -- A visitor is known by its raw id and by the daily hashes of the days whose salts remain.
  select array(select distinct unnest(v.visitor_ids)) into v.visitor_ids;
  select array(select distinct k from (
           select unnest(v.visitor_keys) as k
           union all select unnest(v.visitor_ids)
           union all select 'h:' || pg_catalog.encode(pg_catalog.substr(public.hmac(pg_catalog.convert_to(subject_links.site_id::text || '/' || i.id, 'UTF8'),
                                                                  d.salt, 'sha256'), 1, 16), 'hex')
             from unnest(v.visitor_ids) as i(id) cross join app_private.daily_salts d) keys)
    into v.visitor_keys;
  -- Every session of those visitors, and every call and sale of those sessions and visitors.
  select array(select distinct id from (
           select unnest(v.session_ids) as id
           union all select s.id from app_public.sessions s
            where s.site_id = subject_links.site_id and s.visitor_key = any(v.visitor_keys)) ids)
    into v.session_ids;
  select array(select distinct id from (
           select unnest(v.call_ids) as id
           union all select c.id from app_public.calls c
            where c.site_id = subject_links.site_id and (c.session_id = any(v.session_ids) or c.visitor_id = any(v.visitor_ids))) ids)
    into v.call_ids;
  select array(select distinct id from (
           select unnest(v.sale_ids) as id
           union all select s.id from app_public.sales s
            where s.site_id = subject_links.site_id
              and (s.session_id = any(v.session_ids) or s.visitor_id = any(v.visitor_ids) or s.call_id = any(v.call_ids))) ids)
    into v.sale_ids;
  select array(select public.hmac(pg_catalog.convert_to(i.id, 'UTF8'), s.salt, 'sha256')
                 from unnest(v.visitor_ids) as i(id), app_private.site_salts s where s.site_id = subject_links.site_id)
    into v.consent_hashes;
  return v;
end;
$$;
comment on function app_private.subject_links(uuid, text, text) is
  E'Every visitor, session, call, sale and consent record linked to a subject on a site.';

/*
 * Events removed for privacy (erasure, retention), counted per site, month and reason, so the
 * billing reconciliation can still account for every ledger row: stored + removed = ledger.
 */
create table app_private.event_removals (
  site_id uuid not null,
  period date not null,
  reason text not null constraint event_removals_reason check (reason in ('erasure', 'retention')),
  events bigint not null default 0,
  primary key (site_id, period, reason)
);
comment on table app_private.event_removals is E'How many events of a site and month were deleted for privacy, and why (no personal data).';
alter table app_private.event_removals enable row level security;

create function app_private.count_event_removals(site_id uuid, reason text, occurred timestamptz[]) returns bigint
  language sql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
  with groups as (
    select pg_catalog.date_trunc('month', o at time zone 'UTC')::date as period, count(*) as events
      from unnest(count_event_removals.occurred) o
     group by 1
  ), counted as (
    insert into app_private.event_removals as r (site_id, period, reason, events)
    select count_event_removals.site_id, g.period, count_event_removals.reason, g.events from groups g
    on conflict (site_id, period, reason) do update set events = r.events + excluded.events
  )
  select coalesce(sum(g.events), 0)::bigint from groups g;
$$;
comment on function app_private.count_event_removals(uuid, text, timestamptz[]) is E'Adds deleted events to the per-month removal counts; returns how many.';

/* ---------------------------------------------------------------- access */

create function app_public.export_subject_data(site_id uuid, kind text, value text) returns jsonb
  language plpgsql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_normalized text;
  v app_private.subject_link_set;
begin
  perform app_private.assert_caller_role(export_subject_data.site_id, 'admin', 'export_subject_data', 'sites', export_subject_data.site_id::text);
  v_normalized := app_private.normalize_subject(export_subject_data.kind, export_subject_data.value);
  v := app_private.subject_links(export_subject_data.site_id, export_subject_data.kind, v_normalized);
  return pg_catalog.jsonb_build_object(
    'site_id', export_subject_data.site_id,
    'subject', pg_catalog.jsonb_build_object('kind', export_subject_data.kind, 'value', v_normalized),
    'exported_at', pg_catalog.now(),
    'sessions', coalesce((select pg_catalog.jsonb_agg(pg_catalog.to_jsonb(s) order by s.started_at) from app_public.sessions s
                            where s.site_id = export_subject_data.site_id and s.id = any(v.session_ids)), '[]'),
    'events', coalesce((select pg_catalog.jsonb_agg(pg_catalog.to_jsonb(e) order by e.occurred_at, e.id) from app_public.events e
                          where e.site_id = export_subject_data.site_id
                            and (e.visitor_key = any(v.visitor_keys) or e.session_id = any(v.session_ids))), '[]'),
    'consents', coalesce((select pg_catalog.jsonb_agg(pg_catalog.to_jsonb(c) - 'visitor_hash' order by c.recorded_at) from app_public.consents c
                            where c.site_id = export_subject_data.site_id and c.visitor_hash = any(v.consent_hashes)), '[]'),
    'calls', coalesce((select pg_catalog.jsonb_agg(pg_catalog.to_jsonb(c) order by c.started_at) from app_public.calls c
                         where c.site_id = export_subject_data.site_id and c.id = any(v.call_ids)), '[]'),
    'conversations', coalesce((select pg_catalog.jsonb_agg(pg_catalog.to_jsonb(c) order by c.created_at) from app_public.conversations c
                                 where c.site_id = export_subject_data.site_id
                                   and (c.call_id = any(v.call_ids) or c.session_id = any(v.session_ids)
                                        or c.id in (select s.conversation_id from app_public.sales s
                                                     where s.site_id = export_subject_data.site_id and s.id = any(v.sale_ids)))), '[]'),
    'sales', coalesce((select pg_catalog.jsonb_agg(pg_catalog.to_jsonb(s) || pg_catalog.jsonb_build_object(
                                 'email_sha256', i.email_sha256, 'phone_sha256', i.phone_sha256) order by s.occurred_at)
                         from app_public.sales s left join app_private.sale_identifiers i on i.site_id = s.site_id and i.sale_id = s.id
                        where s.site_id = export_subject_data.site_id and s.id = any(v.sale_ids)), '[]'),
    'conversions', coalesce((select pg_catalog.jsonb_agg(pg_catalog.to_jsonb(q) - 'locked_by' - 'locked_until' order by q.created_at)
                               from app_public.offline_conversion_queue q
                              where q.site_id = export_subject_data.site_id and q.sale_id = any(v.sale_ids)), '[]'));
end;
$$;
comment on function app_public.export_subject_data(uuid, text, text) is
  E'Right of access (admin or owner): everything held about a subject on the site as one JSON document. kind is visitor_id, email, phone (also matches callers) or click_id; email and phone are matched by their normalised SHA-256.';

/* ---------------------------------------------------------------- erasure */

create table app_public.erasure_requests (
  site_id uuid not null references app_public.sites on delete cascade,
  id uuid not null default gen_random_uuid(),
  subject_kind text not null constraint erasure_requests_subject_kind check (subject_kind in ('visitor_id', 'email', 'phone', 'click_id')),
  subject_hash text not null,
  status text not null default 'pending' constraint erasure_requests_status check (status in ('pending', 'running', 'completed', 'failed')),
  requested_by_user_id uuid,
  requested_by_api_key_id uuid,
  requested_by_db_role text not null default session_user,
  requested_at timestamptz not null default now(),
  started_at timestamptz,
  completed_at timestamptz,
  attempts integer not null default 0,
  receipt jsonb,
  last_error text,
  primary key (site_id, id)
);
comment on table app_public.erasure_requests is
  E'Right-to-erasure requests and their receipts: what was erased (counts per table), when, by whom. The subject is kept only as a salted hash.';
comment on column app_public.erasure_requests.site_id is E'The site.';
comment on column app_public.erasure_requests.id is E'Identifier.';
comment on column app_public.erasure_requests.subject_kind is E'visitor_id, email, phone or click_id.';
comment on column app_public.erasure_requests.subject_hash is E'HMAC-SHA256 of the subject with the site''s secret salt: identifies the request without holding the subject.';
comment on column app_public.erasure_requests.status is E'pending, running, completed or failed (then retried).';
comment on column app_public.erasure_requests.requested_by_user_id is E'Who asked (dashboard user).';
comment on column app_public.erasure_requests.requested_by_api_key_id is E'Who asked (API key).';
comment on column app_public.erasure_requests.requested_by_db_role is E'The database login that asked (a DBA''s own role for the CLI).';
comment on column app_public.erasure_requests.requested_at is E'When it was asked for.';
comment on column app_public.erasure_requests.started_at is E'When the worker last started on it.';
comment on column app_public.erasure_requests.completed_at is E'When everything was erased.';
comment on column app_public.erasure_requests.attempts is E'How many times the worker started on it.';
comment on column app_public.erasure_requests.receipt is E'Rows erased or stripped, per table.';
comment on column app_public.erasure_requests.last_error is E'Why the last attempt failed, if it did.';
alter table app_public.erasure_requests enable row level security;
create policy select_admin on app_public.erasure_requests for select using (site_id in (select app_hidden.current_user_site_ids('admin')));
grant select on app_public.erasure_requests to :DATABASE_VISITOR;
create trigger _500_audit after insert or update on app_public.erasure_requests
  for each row execute function app_private.tg__audit('site_id', 'id');

/* The subject itself, held only until its erasure completes. */
create table app_private.erasure_subjects (
  site_id uuid not null,
  request_id uuid not null,
  normalized_value text not null,
  primary key (site_id, request_id),
  foreign key (site_id, request_id) references app_public.erasure_requests (site_id, id) on delete cascade
);
comment on table app_private.erasure_subjects is E'The subject of a pending erasure, deleted when it completes.';
alter table app_private.erasure_subjects enable row level security;

create function app_public.request_erasure(site_id uuid, kind text, value text) returns app_public.erasure_requests
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_normalized text;
  v_hash text;
  v_request app_public.erasure_requests;
begin
  perform app_private.assert_caller_role(request_erasure.site_id, 'admin', 'request_erasure', 'erasure_requests', request_erasure.kind);
  v_normalized := app_private.normalize_subject(request_erasure.kind, request_erasure.value);
  if not exists (select 1 from app_public.sites s where s.id = request_erasure.site_id) then
    raise exception using errcode = 'OMNSS', message = 'No such site.';
  end if;
  v_hash := app_private.hash_subject(request_erasure.site_id, request_erasure.kind, v_normalized);
  -- Asking again while one is under way is the same request.
  select * into v_request from app_public.erasure_requests r
   where r.site_id = request_erasure.site_id and r.subject_hash = v_hash and r.status in ('pending', 'running', 'failed');
  if v_request.id is not null then
    if v_request.status = 'failed' then
      -- Its job may have used up its attempts: asking again starts it afresh.
      perform graphile_worker.add_job('carry_out_erasure',
        pg_catalog.json_build_object('site_id', v_request.site_id, 'request_id', v_request.id),
        job_key => 'carry_out_erasure:' || v_request.id::text, max_attempts => 25);
    end if;
    return v_request;
  end if;
  insert into app_public.erasure_requests (site_id, subject_kind, subject_hash, requested_by_user_id, requested_by_api_key_id)
  values (request_erasure.site_id, request_erasure.kind, v_hash, app_hidden.current_user_id(), app_hidden.current_api_key_id())
  returning * into v_request;
  insert into app_private.erasure_subjects (site_id, request_id, normalized_value) values (v_request.site_id, v_request.id, v_normalized);
  perform graphile_worker.add_job('carry_out_erasure',
    pg_catalog.json_build_object('site_id', v_request.site_id, 'request_id', v_request.id),
    job_key => 'carry_out_erasure:' || v_request.id::text, max_attempts => 25);
  return v_request;
end;
$$;
comment on function app_public.request_erasure(uuid, text, text) is
  E'Right to erasure (admin or owner): records the request and schedules its erasure, in one transaction. kind is visitor_id, email, phone or click_id. Asking again while it is under way returns the same request.';

/*
 * Carries out an erasure in one transaction: all of it or, after a crash, none of it (and the
 * job runs again). Running it again after it completed changes nothing and returns the receipt.
 */
create function app_private.carry_out_erasure(site_id uuid, request_id uuid) returns jsonb
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_request app_public.erasure_requests;
  v_subject text;
  v app_private.subject_link_set;
  v_receipt jsonb := '{}';
  v_count integer;
  v_conversion record;
begin
  select * into v_request from app_public.erasure_requests r
   where r.site_id = carry_out_erasure.site_id and r.id = carry_out_erasure.request_id
     for update;
  if v_request.id is null then
    raise exception using errcode = 'OMNER', message = 'No such erasure request.';
  end if;
  if v_request.status = 'completed' then
    return v_request.receipt;
  end if;
  select e.normalized_value into v_subject from app_private.erasure_subjects e
   where e.site_id = v_request.site_id and e.request_id = v_request.id;
  v := app_private.subject_links(v_request.site_id, v_request.subject_kind, v_subject);

  with deleted as (
    delete from app_public.events e
     where e.site_id = v_request.site_id and (e.visitor_key = any(v.visitor_keys) or e.session_id = any(v.session_ids))
    returning e.occurred_at
  )
  select app_private.count_event_removals(v_request.site_id, 'erasure', array(select occurred_at from deleted)) into v_count;
  v_receipt := v_receipt || pg_catalog.jsonb_build_object('events_deleted', v_count);
  delete from app_public.sessions s
   where s.site_id = v_request.site_id and (s.visitor_key = any(v.visitor_keys) or s.id = any(v.session_ids));
  get diagnostics v_count = row_count; v_receipt := v_receipt || pg_catalog.jsonb_build_object('sessions_deleted', v_count);
  delete from app_public.consents c where c.site_id = v_request.site_id and c.visitor_hash = any(v.consent_hashes);
  get diagnostics v_count = row_count; v_receipt := v_receipt || pg_catalog.jsonb_build_object('consents_deleted', v_count);
  update app_public.calls c
     set caller = null, visitor_id = null, gclid = null, session_id = null, click_id = null, click_id_type = null
   where c.site_id = v_request.site_id and c.id = any(v.call_ids);
  get diagnostics v_count = row_count; v_receipt := v_receipt || pg_catalog.jsonb_build_object('calls_stripped', v_count);
  update app_public.conversations c set session_id = null
   where c.site_id = v_request.site_id and c.session_id = any(v.session_ids);
  get diagnostics v_count = row_count; v_receipt := v_receipt || pg_catalog.jsonb_build_object('conversations_stripped', v_count);
  delete from app_private.sale_identifiers i where i.site_id = v_request.site_id and i.sale_id = any(v.sale_ids);
  get diagnostics v_count = row_count; v_receipt := v_receipt || pg_catalog.jsonb_build_object('sale_identifiers_deleted', v_count);

  -- Conversions: not yet with Google → cancelled; possibly with Google → a retraction (where the rail can).
  v_receipt := v_receipt || '{"conversions_cancelled": 0, "retractions_queued": 0}';
  for v_conversion in
    select q.* from app_public.offline_conversion_queue q
     where q.site_id = v_request.site_id and q.sale_id = any(v.sale_ids) and q.kind = 'conversion'
       for update
  loop
    if v_conversion.status = 'pending' then
      update app_public.offline_conversion_queue q set status = 'cancelled', last_error_code = 'ERASED',
             last_error_message = 'The subject''s data was erased before delivery.'
       where q.site_id = v_conversion.site_id and q.id = v_conversion.id;
      v_receipt := pg_catalog.jsonb_set(v_receipt, '{conversions_cancelled}', pg_catalog.to_jsonb((v_receipt ->> 'conversions_cancelled')::int + 1));
    elsif v_conversion.status in ('processing', 'sent', 'accepted') then
      insert into app_public.offline_conversion_queue (site_id, sale_id, kind, order_id, conversion_at, value, currency, ad_user_data, ad_personalization)
      values (v_conversion.site_id, v_conversion.sale_id, 'retraction', v_conversion.order_id, v_conversion.conversion_at, v_conversion.value,
              v_conversion.currency, v_conversion.ad_user_data, v_conversion.ad_personalization)
      on conflict on constraint offline_conversion_queue_once do nothing;
      if found then
        v_receipt := pg_catalog.jsonb_set(v_receipt, '{retractions_queued}', pg_catalog.to_jsonb((v_receipt ->> 'retractions_queued')::int + 1));
      end if;
      perform app_private.enqueue_upload(v_conversion.site_id, v_conversion.provider);
    end if;
  end loop;
  -- Google's error messages may quote what was sent: they go with the click ids.
  update app_public.offline_conversion_queue q set click_id = null, click_id_type = null, last_error_message = null
   where q.site_id = v_request.site_id and q.sale_id = any(v.sale_ids) and (q.click_id is not null or q.last_error_message is not null);
  update app_public.sales s
     set visitor_id = null, gclid = null, click_id = null, click_id_type = null, session_id = null, session_event_id = null
   where s.site_id = v_request.site_id and s.id = any(v.sale_ids);
  get diagnostics v_count = row_count; v_receipt := v_receipt || pg_catalog.jsonb_build_object('sales_stripped', v_count);
  -- A CRM may have used the subject itself (an email, a phone number) as its order id: such ids
  -- are replaced, except on a retraction still waiting to tell Google which order to withdraw.
  update app_public.sales s set external_id = 'erased:' || s.id::text
   where s.site_id = v_request.site_id and s.id = any(v.sale_ids)
     and (pg_catalog.strpos(pg_catalog.lower(s.external_id), pg_catalog.lower(v_subject)) > 0
          or app_hidden.normalize_email(s.external_id) = v_subject or app_hidden.normalize_phone(s.external_id) = v_subject);
  get diagnostics v_count = row_count; v_receipt := v_receipt || pg_catalog.jsonb_build_object('order_ids_replaced', v_count);
  update app_public.offline_conversion_queue q set order_id = 'erased:' || q.sale_id::text
   where q.site_id = v_request.site_id and q.sale_id = any(v.sale_ids)
     and (pg_catalog.strpos(pg_catalog.lower(q.order_id), pg_catalog.lower(v_subject)) > 0
          or app_hidden.normalize_email(q.order_id) = v_subject or app_hidden.normalize_phone(q.order_id) = v_subject)
     and not (q.kind = 'retraction' and q.status in ('pending', 'processing'));

  delete from app_private.erasure_subjects e where e.site_id = v_request.site_id and e.request_id = v_request.id;
  update app_public.erasure_requests r
     set status = 'completed', completed_at = pg_catalog.now(), receipt = v_receipt, last_error = null,
         attempts = r.attempts + 1, started_at = coalesce(r.started_at, pg_catalog.now())
   where r.site_id = v_request.site_id and r.id = v_request.id;
  return v_receipt;
end;
$$;
comment on function app_private.carry_out_erasure(uuid, uuid) is
  E'Erases everything linked to a request''s subject, in one transaction; idempotent. Returns the receipt (counts per table).';

/* ---------------------------------------------------------------- retention */

create function app_public.set_data_retention(site_id uuid, months integer) returns app_public.sites
  language plpgsql volatile strict security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_site app_public.sites;
begin
  perform app_private.assert_caller_role(set_data_retention.site_id, 'admin', 'set_data_retention', 'sites', set_data_retention.site_id::text);
  update app_public.sites s set data_retention_months = set_data_retention.months where s.id = set_data_retention.site_id
  returning * into v_site;
  if v_site.id is null then
    raise exception using errcode = 'OMNSS', message = 'No such site.';
  end if;
  return v_site;
end;
$$;
comment on function app_public.set_data_retention(uuid, integer) is
  E'Shortens (or restores, up to 13) how many months the site''s events, sessions and call personal data are kept (admin or owner).';

/*
 * The nightly retention pass. pg_partman drops whole monthly partitions of events and sessions
 * after 13 months; this removes what sites chose to keep for less, consents past their proof
 * period, and personal data of calls, sales and conversions once it has served its purpose.
 */
create function app_private.retention_cleanup() returns jsonb
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_site record;
  v_count integer;
  v_result jsonb := '{"events_deleted": 0, "sessions_deleted": 0, "calls_stripped": 0}';
begin
  for v_site in select s.id, s.data_retention_months from app_public.sites s loop
    -- (pg_partman drops whole partitions past 13 months; rows in the default partition, and
    -- sites that keep less, are deleted here.)
    begin
      with deleted as (
        delete from app_public.events e
         where e.site_id = v_site.id and e.occurred_at < pg_catalog.now() - pg_catalog.make_interval(months => v_site.data_retention_months)
        returning e.occurred_at
      )
      select app_private.count_event_removals(v_site.id, 'retention', array(select occurred_at from deleted)) into v_count;
      v_result := pg_catalog.jsonb_set(v_result, '{events_deleted}', pg_catalog.to_jsonb((v_result ->> 'events_deleted')::int + v_count));
      delete from app_public.sessions s
       where s.site_id = v_site.id and s.ended_at < pg_catalog.now() - pg_catalog.make_interval(months => v_site.data_retention_months);
      get diagnostics v_count = row_count;
      v_result := pg_catalog.jsonb_set(v_result, '{sessions_deleted}', pg_catalog.to_jsonb((v_result ->> 'sessions_deleted')::int + v_count));
    end;
    update app_public.calls c set caller = null, visitor_id = null, gclid = null, click_id = null, click_id_type = null, session_id = null
     where c.site_id = v_site.id and c.started_at < pg_catalog.now() - pg_catalog.make_interval(months => v_site.data_retention_months)
       and (c.caller is not null or c.visitor_id is not null or c.gclid is not null or c.click_id is not null or c.session_id is not null);
    get diagnostics v_count = row_count;
    v_result := pg_catalog.jsonb_set(v_result, '{calls_stripped}', pg_catalog.to_jsonb((v_result ->> 'calls_stripped')::int + v_count));
  end loop;

  delete from app_public.consents c where c.recorded_at < pg_catalog.now() - interval '36 months';
  get diagnostics v_count = row_count; v_result := v_result || pg_catalog.jsonb_build_object('consents_deleted', v_count);
  -- Hashed identifiers and click ids are needed only until Google has the conversion (and a
  -- retraction could still follow): 90 days after the conversion's final state.
  -- (A row handed to Google's scheduled CSV import stays sent: it counts as final too.)
  delete from app_private.sale_identifiers i
   where not exists (select 1 from app_public.offline_conversion_queue q
                      where q.site_id = i.site_id and q.sale_id = i.sale_id
                        and ((q.status in ('pending', 'processing') or (q.status = 'sent' and q.request_id is distinct from 'csv'))
                             or q.updated_at > pg_catalog.now() - interval '90 days'));
  get diagnostics v_count = row_count; v_result := v_result || pg_catalog.jsonb_build_object('sale_identifiers_deleted', v_count);
  -- On the same schedule, nothing personal stays linked to the sale either.
  update app_public.sales s set visitor_id = null, gclid = null, click_id = null, click_id_type = null
   where (s.visitor_id is not null or s.gclid is not null or s.click_id is not null)
     and not exists (select 1 from app_public.offline_conversion_queue q
                      where q.site_id = s.site_id and q.sale_id = s.id
                        and ((q.status in ('pending', 'processing') or (q.status = 'sent' and q.request_id is distinct from 'csv'))
                             or q.updated_at > pg_catalog.now() - interval '90 days'));
  get diagnostics v_count = row_count; v_result := v_result || pg_catalog.jsonb_build_object('sales_stripped', v_count);
  update app_public.offline_conversion_queue q set click_id = null, click_id_type = null
   where (q.status in ('accepted', 'failed', 'cancelled') or (q.status = 'sent' and q.request_id = 'csv'))
     and q.updated_at < pg_catalog.now() - interval '90 days' and q.click_id is not null;
  get diagnostics v_count = row_count; v_result := v_result || pg_catalog.jsonb_build_object('conversion_click_ids_stripped', v_count);
  return v_result;
end;
$$;
comment on function app_private.retention_cleanup() is
  E'Deletes or strips personal data past its retention (site months for events, sessions and calls; 36 months for consents; 90 days after delivery for hashed identifiers and click ids).';

-- Whole partitions of events and sessions older than 13 months go at partition maintenance.
update partman.part_config set retention = '13 months', retention_keep_table = false, retention_keep_index = false
 where parent_table in ('app_public.events', 'app_public.sessions');

/* ---------------------------------------------------------------- reconciliation */

do $$
begin
  if not exists (select 1 from pg_catalog.pg_attribute a where a.attrelid = 'app_public.billing_reconciliation_result'::regclass
                  and a.attname = 'events_removed' and not a.attisdropped) then
    alter type app_public.billing_reconciliation_result add attribute events_removed bigint;
  end if;
end;
$$;
comment on type app_public.billing_reconciliation_result is
  E'Ledger vs events (stored, plus removed for privacy) vs frozen snapshot for one site and month; drift names every disagreement (empty when all agree).';

create or replace function app_public.billing_reconciliation(site_id uuid, period date) returns app_public.billing_reconciliation_result
  language plpgsql stable strict security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  r app_public.billing_reconciliation_result;
  v_snapshot app_public.invoice_snapshots;
  v_bounds record;
begin
  perform app_private.assert_billing_access(billing_reconciliation.site_id, 'reconcile');
  r.site_id := billing_reconciliation.site_id;
  r.period := app_private.period_start(billing_reconciliation.period);
  v_bounds := app_private.period_bounds(r.period);
  r.drift := '{}';
  select pg_catalog.count(*) filter (where l.billable), pg_catalog.count(*) filter (where not l.billable)
    into r.ledger_billable, r.ledger_non_billable
    from app_public.ingest_idempotency l
   where l.site_id = r.site_id and l.occurred_at >= v_bounds.starts_at and l.occurred_at < v_bounds.ends_at;
  select pg_catalog.count(*) into r.events_stored
    from app_public.events e
   where e.site_id = r.site_id and e.occurred_at >= v_bounds.starts_at and e.occurred_at < v_bounds.ends_at;
  -- Events erased or past their retention are gone from events but still in the ledger (it holds
  -- no personal data): they are counted, so they are not drift.
  select coalesce(sum(x.events), 0) into r.events_removed
    from app_private.event_removals x where x.site_id = r.site_id and x.period = r.period;
  if r.events_stored + r.events_removed <> r.ledger_billable + r.ledger_non_billable then
    r.drift := r.drift || pg_catalog.format('events: %s stored and %s removed for privacy, but the ledger has %s rows',
                                            r.events_stored, r.events_removed, r.ledger_billable + r.ledger_non_billable);
  end if;
  select * into v_snapshot from app_public.invoice_snapshots s where s.site_id = r.site_id and s.period = r.period;
  r.frozen := v_snapshot.site_id is not null;
  if r.frozen then
    r.snapshot_billable := v_snapshot.billable_events;
    r.snapshot_digest := v_snapshot.ledger_digest;
    r.ledger_digest := app_private.compute_ledger_digest(r.site_id, r.period);
    if v_snapshot.billable_events <> r.ledger_billable then
      r.drift := r.drift || pg_catalog.format('snapshot: %s billable events invoiced, the ledger now has %s',
                                              v_snapshot.billable_events, r.ledger_billable);
    end if;
    if v_snapshot.ledger_digest <> r.ledger_digest then
      r.drift := r.drift || 'snapshot: the ledger no longer hashes to the frozen digest'::text;
    end if;
  end if;
  return r;
end;
$$;

/* ---------------------------------------------------------------- loose ends */

-- A CRM may use an email or phone number as its order id: the audit log keeps the sale's id, not that.
drop trigger if exists _500_audit on app_public.sales;
create trigger _500_audit after insert or update or delete on app_public.sales
  for each row execute function app_private.tg__audit('site_id', 'id', '-external_id', '-visitor_id', '-gclid', '-click_id');

/*
 * Events, sessions and the ledger are partitioned and carry no foreign key to sites: deleting a
 * site removes them here. (A site with frozen invoices cannot be deleted at all.)
 */
create function app_private.tg__forget_site_tracking() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  delete from app_public.events e where e.site_id = old.id;
  delete from app_public.sessions s where s.site_id = old.id;
  delete from app_public.ingest_idempotency l where l.site_id = old.id;
  delete from app_private.event_removals r where r.site_id = old.id;
  return null;
end;
$$;
comment on function app_private.tg__forget_site_tracking() is E'Deletes a deleted site''s events, sessions and ledger rows (partitioned tables carry no foreign key).';
drop trigger if exists _900_forget_tracking on app_public.sites;
create trigger _900_forget_tracking after delete on app_public.sites
  for each row execute function app_private.tg__forget_site_tracking();
