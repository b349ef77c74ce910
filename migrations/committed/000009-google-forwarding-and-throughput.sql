--! Previous: sha1:0e4203371b027c84736ad9b3c63717d48a4eb2b1
--! Hash: sha1:cbc4270084afb63e37797c82725d57d066f0f129
--! Message: google-forwarding-and-throughput

--! split: 1-google-forwarding-and-throughput.sql
/*
 * Calls through a Google forwarding number: the call-tracking provider says so
 * (`"google_forwarding": true` in the call event), and the sealed call's conversion goes to the
 * Google Ads API as a call conversion (UploadCallConversions: caller number and call start).
 */
alter table app_public.calls add column if not exists via_google_forwarding boolean not null default false;
comment on column app_public.calls.via_google_forwarding is
  E'The call came through a Google forwarding number (the provider said so): its conversion is uploaded as a call conversion.';

create or replace function app_private.record_call_event(site_id uuid, body jsonb) returns jsonb
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_started_at timestamptz := app_hidden.parse_timestamptz(body ->> 'started_at');
  v_status text := body ->> 'status';
  -- A call only moves forward: ringing -> missed, or ringing -> answered -> ended.
  v_rank constant jsonb := '{"ringing": 1, "missed": 2, "answered": 3, "ended": 4}';
  v_session app_public.sessions;
  v_call app_public.calls;
  v_site app_public.sites;
  v_tier text;
  v_source text;
  v_click_id text;
  v_click_type text;
begin
  select * into v_site from app_public.sites s where s.id = record_call_event.site_id;
  if pg_catalog.jsonb_typeof(body -> 'call_id') is distinct from 'string' or body ->> 'call_id' !~ '^[A-Za-z0-9_.:-]{1,200}$' then
    raise exception using errcode = 'OMCAL', message = 'call_id must be 1 to 200 letters, digits or _.:-';
  end if;
  if v_status is null or not v_rank ? v_status then
    raise exception using errcode = 'OMCAL', message = 'status must be ringing, answered, missed or ended.';
  end if;
  if v_started_at is null or v_started_at > pg_catalog.now() + interval '5 minutes' or v_started_at < pg_catalog.now() - interval '7 days' then
    raise exception using errcode = 'OMCAL', message = 'started_at must be an ISO-8601 time with a zone within the last 7 days.';
  end if;
  if body ? 'duration_s' and (pg_catalog.jsonb_typeof(body -> 'duration_s') <> 'number'
                              or (body ->> 'duration_s') !~ '^[0-9]{1,5}$' or (body ->> 'duration_s')::integer > 86400) then
    raise exception using errcode = 'OMCAL', message = 'duration_s must be a whole number of seconds up to 86400.';
  end if;
  if (body ->> 'caller') !~ '^\+[1-9][0-9]{6,14}$' or (body ->> 'tracking_number') !~ '^\+[1-9][0-9]{6,14}$' then
    raise exception using errcode = 'OMCAL', message = 'caller and tracking_number must be E.164 numbers like +905551112233.';
  end if;
  if body ? 'google_forwarding' and pg_catalog.jsonb_typeof(body -> 'google_forwarding') <> 'boolean' then
    raise exception using errcode = 'OMCAL', message = 'google_forwarding must be true or false.';
  end if;
  if (body ->> 'session_id') !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
     or (body ->> 'visitor_id') !~ '^[A-Za-z0-9_-]{1,64}$' or (body ->> 'gclid') !~ '^[A-Za-z0-9_-]{1,255}$' then
    raise exception using errcode = 'OMCAL', message = 'session_id must be a UUID, visitor_id and gclid plain identifiers.';
  end if;

  -- The session that caused the call: named, else the visitor's latest before the call (by
  -- the raw id, or the hashed key of that day), else the one that carried the gclid.
  if body ? 'session_id' then
    select * into v_session from app_public.sessions s
     where s.site_id = record_call_event.site_id and s.id = (body ->> 'session_id')::uuid;
  end if;
  if v_session.id is null and body ? 'visitor_id' then
    select * into v_session from app_public.sessions s
     where s.site_id = record_call_event.site_id
       and s.visitor_key in (body ->> 'visitor_id',
             'h:' || pg_catalog.encode(pg_catalog.substr(public.hmac(pg_catalog.convert_to(record_call_event.site_id::text || '/' || (body ->> 'visitor_id'), 'UTF8'),
                     app_private.daily_salt((v_started_at at time zone 'UTC')::date), 'sha256'), 1, 16), 'hex'))
       and s.started_at <= v_started_at and s.started_at > v_started_at - interval '90 days'
     order by s.started_at desc, s.first_event_id desc
     limit 1;
  end if;
  if v_session.id is null and body ? 'gclid' then
    select * into v_session from app_public.sessions s
     where s.site_id = record_call_event.site_id and s.click_id = body ->> 'gclid'
       and s.started_at <= v_started_at and s.started_at > v_started_at - interval '90 days'
     order by s.started_at desc, s.first_event_id desc
     limit 1;
  end if;
  if v_session.id is not null then
    v_tier := v_session.attribution_tier;
    v_source := v_session.attribution_source;
    v_click_id := case when v_session.attribution_tier = 'S3' then v_session.assisting_click_id else v_session.click_id end;
    v_click_type := case when v_session.attribution_tier = 'S3' then v_session.assisting_click_id_type else v_session.click_id_type end;
  elsif body ? 'gclid' then
    v_tier := 'S1'; v_source := 'google_ads'; v_click_id := body ->> 'gclid'; v_click_type := 'gclid';
  end if;

  insert into app_public.calls as c (site_id, call_id, status, caller, tracking_number, started_at, duration_s,
                                     visitor_id, session_id, gclid, attribution_tier, attribution_source, click_id, click_id_type,
                                     via_google_forwarding)
  values (record_call_event.site_id, body ->> 'call_id', v_status, body ->> 'caller', body ->> 'tracking_number', v_started_at,
          coalesce((body ->> 'duration_s')::integer, 0), body ->> 'visitor_id', v_session.id, body ->> 'gclid',
          v_tier, v_source, v_click_id, v_click_type, coalesce((body ->> 'google_forwarding')::boolean, false))
  on conflict on constraint calls_site_call_id_key do update set
    status = case when (v_rank ->> excluded.status)::int > (v_rank ->> c.status)::int then excluded.status else c.status end,
    duration_s = greatest(c.duration_s, excluded.duration_s),
    caller = coalesce(c.caller, excluded.caller),
    tracking_number = coalesce(c.tracking_number, excluded.tracking_number),
    visitor_id = coalesce(c.visitor_id, excluded.visitor_id),
    gclid = coalesce(c.gclid, excluded.gclid),
    session_id = coalesce(c.session_id, excluded.session_id),
    attribution_tier = coalesce(c.attribution_tier, excluded.attribution_tier),
    attribution_source = coalesce(c.attribution_source, excluded.attribution_source),
    click_id = coalesce(c.click_id, excluded.click_id),
    click_id_type = coalesce(c.click_id_type, excluded.click_id_type),
    via_google_forwarding = c.via_google_forwarding or excluded.via_google_forwarding,
    updated_at = pg_catalog.now()
  returning * into v_call;
  return pg_catalog.jsonb_build_object('call_id', v_call.call_id, 'id', v_call.id, 'status', v_call.status,
    'session_id', v_call.session_id, 'attribution_tier', v_call.attribution_tier, 'attribution_source', v_call.attribution_source);
end;
$$;


drop function if exists app_private.conversion_payloads(uuid, uuid[]);
create function app_private.conversion_payloads(site_id uuid, ids uuid[])
  returns table (id uuid, kind text, order_id text, click_id text, click_id_type text, conversion_time text, adjustment_time text,
                 value text, currency text, email_sha256 text, phone_sha256 text, ad_user_data text, ad_personalization text,
                 conversion_at timestamptz, caller_id text, call_start_time text)
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select q.id, q.kind, q.order_id, q.click_id, q.click_id_type,
         app_private.google_time(greatest(q.conversion_at, x.started_at + interval '1 second'), st.timezone),
         app_private.google_time(pg_catalog.now(), st.timezone),
         q.value::text, q.currency,
         case when q.ad_user_data = 'granted' then i.email_sha256 end,
         case when q.ad_user_data = 'granted' then i.phone_sha256 end,
         q.ad_user_data, q.ad_personalization, q.conversion_at,
         -- A call through a Google forwarding number is reported as a call conversion, which
         -- Google matches by the caller's number and the call's start; the number is user data,
         -- so it goes only with ad_user_data granted (else the click id, if any, is used).
         case when q.ad_user_data = 'granted' then c.caller end,
         case when q.ad_user_data = 'granted' then app_private.google_time(c.started_at, st.timezone) end
    from app_public.offline_conversion_queue q
    join app_public.sites st on st.id = q.site_id
    join app_public.sales s on s.site_id = q.site_id and s.id = q.sale_id
    left join app_private.sale_identifiers i on i.site_id = q.site_id and i.sale_id = q.sale_id
    left join app_public.calls c on c.site_id = s.site_id and c.id = s.call_id and c.via_google_forwarding and c.caller is not null
    left join lateral (select min(se.started_at) as started_at from app_public.sessions se
                        where se.site_id = s.site_id and se.id = s.session_id) x on true
   where q.site_id = conversion_payloads.site_id and q.id = any (conversion_payloads.ids);
$$;

comment on function app_private.conversion_payloads(uuid, uuid[]) is E'Claimed queue rows in the shape the rails send.';

/*
 * Delivery throughput (npm run bench -- oci showed ~400 ms of SQL around every 2,000-row batch):
 * - the claim records the destination itself, and hands back the payloads in the same statement;
 * - the time format inlines (no SET clause), the retraction time and the session look-up are
 *   computed only where needed;
 * - outcomes consult the sale only for rows that would be retried;
 * - two indexes fewer (the sale index repeated the unique key; due rows are found per site,
 *   in claim order, by one partial index).
 */
drop index if exists app_public.offline_conversion_queue_sale_idx;
drop index if exists app_public.offline_conversion_queue_due_idx;
drop index if exists app_public.offline_conversion_queue_provider_due_idx;
create index if not exists offline_conversion_queue_site_due_idx on app_public.offline_conversion_queue (site_id, retry_at, created_at, id)
  where status = 'pending';

create or replace function app_private.google_time(at timestamptz, zone text) returns text
  language sql stable strict
as $$
  select pg_catalog.to_char(at at time zone zone, 'YYYY-MM-DD HH24:MI:SS')
         || case when o.minutes < 0 then '-' else '+' end
         || pg_catalog.to_char(pg_catalog.abs(o.minutes) / 60, 'FM00') || ':' || pg_catalog.to_char(pg_catalog.abs(o.minutes) % 60, 'FM00')
    from (select (extract(epoch from ((at at time zone zone) - (at at time zone 'UTC'))) / 60)::integer as minutes) o;
$$;

drop function if exists app_private.claim_offline_conversion_jobs(text, integer, uuid, text, integer);
drop function if exists app_private.claim_offline_conversion_jobs(text, integer, uuid, text, integer, uuid) cascade;
create function app_private.claim_offline_conversion_jobs(
  provider text, "limit" integer, site_id uuid default null, worker text default null, lease_seconds integer default 300,
  destination_id uuid default null
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
         attempts = q.attempts + 1,
         destination_id = coalesce(claim_offline_conversion_jobs.destination_id, q.destination_id)
    from due
   where q.site_id = due.site_id and q.id = due.id
  returning q.*;
end;
$$;
comment on function app_private.claim_offline_conversion_jobs(text, integer, uuid, text, integer, uuid) is
  E'Claims up to limit due conversions (optionally of one site) for an uploader, under a lease of lease_seconds (FOR UPDATE SKIP LOCKED), recording the destination they go to.';

drop function if exists app_private.claim_conversion_payloads(uuid, integer, text, integer, uuid);
drop function if exists app_private.conversion_payloads(uuid, uuid[]);
create function app_private.conversion_payloads(site_id uuid, ids uuid[])
  returns table (id uuid, kind text, order_id text, click_id text, click_id_type text, conversion_time text, adjustment_time text,
                 value text, currency text, email_sha256 text, phone_sha256 text, ad_user_data text, ad_personalization text,
                 conversion_at timestamptz, caller_id text, call_start_time text)
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select q.id, q.kind, q.order_id, q.click_id, q.click_id_type,
         app_private.google_time(case when s.session_id is null then q.conversion_at
                                      else greatest(q.conversion_at, (select min(se.started_at) + interval '1 second' from app_public.sessions se
                                                                       where se.site_id = s.site_id and se.id = s.session_id)) end, st.timezone),
         case when q.kind = 'retraction' then app_private.google_time(pg_catalog.now(), st.timezone) end,
         q.value::text, q.currency,
         case when q.ad_user_data = 'granted' then i.email_sha256 end,
         case when q.ad_user_data = 'granted' then i.phone_sha256 end,
         q.ad_user_data, q.ad_personalization, q.conversion_at,
         -- A call through a Google forwarding number is reported as a call conversion (caller
         -- number and call start; the number is user data, so only with ad_user_data granted).
         case when q.ad_user_data = 'granted' then c.caller end,
         case when q.ad_user_data = 'granted' then app_private.google_time(c.started_at, st.timezone) end
    from app_public.offline_conversion_queue q
    join app_public.sites st on st.id = q.site_id
    join app_public.sales s on s.site_id = q.site_id and s.id = q.sale_id
    left join app_private.sale_identifiers i on i.site_id = q.site_id and i.sale_id = q.sale_id
    left join app_public.calls c on c.site_id = s.site_id and c.id = s.call_id and c.via_google_forwarding and c.caller is not null
   where q.site_id = conversion_payloads.site_id and q.id = any (conversion_payloads.ids);
$$;
comment on function app_private.conversion_payloads(uuid, uuid[]) is
  E'Queue rows in the shape the rails send: time in the site''s zone (never before the click), identifiers and caller only with ad_user_data granted.';

/* Claims a batch for a destination and returns it ready to send, in one statement. */
create function app_private.claim_conversion_payloads(site_id uuid, "limit" integer, worker text, lease_seconds integer, destination_id uuid)
  returns table (id uuid, kind text, order_id text, click_id text, click_id_type text, conversion_time text, adjustment_time text,
                 value text, currency text, email_sha256 text, phone_sha256 text, ad_user_data text, ad_personalization text,
                 conversion_at timestamptz, caller_id text, call_start_time text)
  language sql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
  select p.* from app_private.conversion_payloads(claim_conversion_payloads.site_id, array(
    select j.id from app_private.claim_offline_conversion_jobs('google', claim_conversion_payloads."limit", claim_conversion_payloads.site_id,
                                                               claim_conversion_payloads.worker, claim_conversion_payloads.lease_seconds,
                                                               claim_conversion_payloads.destination_id) j)) p;
$$;
comment on function app_private.claim_conversion_payloads(uuid, integer, text, integer, uuid) is
  E'Claims up to limit due rows of a site for a destination (lease, destination recorded) and returns them as conversion_payloads shapes them.';

create or replace function app_private.record_upload_outcomes(site_id uuid, worker text, outcomes jsonb, request_id text default null)
  returns integer
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_count integer;
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
