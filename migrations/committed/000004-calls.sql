--! Previous: sha1:e1b0f985ac5cec18a873d24addfc02955cde49e7
--! Hash: sha1:e22fe2173a6defb9c3d02d442db72a778399cc41
--! Message: calls

--! split: 1-calls.sql
/*
 * Calls from the call-tracking provider (POST /api/call-event/v2). The HTTP layer checks the
 * request's HMAC signature against the site's current and previous secrets; this function
 * then records the call, idempotent by the provider's call_id (later statuses update it), and
 * ties it to the session that caused it: by session id, else the visitor's latest session,
 * else the session that carried the gclid. The call takes that session's attribution.
 */
-- Calls and sales find the session of a Google click by its gclid.
create index sessions_click_id_idx on app_public.sessions (site_id, click_id);

create table app_public.calls (
  site_id uuid not null references app_public.sites on delete cascade,
  id uuid not null default gen_random_uuid(),
  call_id text not null constraint calls_call_id_format check (call_id ~ '^[A-Za-z0-9_.:-]{1,200}$'),
  status text not null constraint calls_status check (status in ('ringing', 'answered', 'missed', 'ended')),
  caller text constraint calls_caller_e164 check (caller ~ '^\+[1-9][0-9]{6,14}$'),
  tracking_number text constraint calls_tracking_number_e164 check (tracking_number ~ '^\+[1-9][0-9]{6,14}$'),
  started_at timestamptz not null,
  duration_s integer not null default 0 constraint calls_duration check (duration_s between 0 and 86400),
  visitor_id text,
  session_id uuid,
  gclid text,
  attribution_tier text constraint calls_attribution_tier check (attribution_tier in ('S1', 'S2', 'S3', 'S4', 'S5')),
  attribution_source text,
  click_id text,
  click_id_type text,
  received_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (site_id, id),
  constraint calls_site_call_id_key unique (site_id, call_id)
);
comment on table app_public.calls is
  E'@behavior +aggregates +aggregates:filterBy +aggregates:orderBy\nPhone calls reported by the call-tracking provider, tied to the session that caused them.';
comment on column app_public.calls.site_id is E'The site.';
comment on column app_public.calls.id is E'Our identifier.';
comment on column app_public.calls.call_id is E'The provider''s identifier; repeated events with it update this call.';
comment on column app_public.calls.status is E'ringing, then missed, or answered and ended; a late event never moves a call back.';
comment on column app_public.calls.caller is E'Caller number (E.164).';
comment on column app_public.calls.tracking_number is E'The tracking number dialled (E.164).';
comment on column app_public.calls.started_at is E'When the call started.';
comment on column app_public.calls.duration_s is E'Duration in seconds.';
comment on column app_public.calls.visitor_id is E'The website visitor the provider linked, if any.';
comment on column app_public.calls.session_id is E'The session the call was matched to.';
comment on column app_public.calls.gclid is E'The Google click id the provider reported, if any.';
comment on column app_public.calls.attribution_tier is E'The matched session''s tier (S1 when only a gclid is known).';
comment on column app_public.calls.attribution_source is E'The matched session''s attribution source.';
comment on column app_public.calls.click_id is E'The click id to upload a conversion with: the session''s own (S1) or its assisting one (S3).';
comment on column app_public.calls.click_id_type is E'gclid, gbraid or wbraid (or msclkid for S2).';
comment on column app_public.calls.received_at is E'When we first heard of the call.';
comment on column app_public.calls.updated_at is E'When the call last changed.';
alter table app_public.calls enable row level security;
create policy select_member on app_public.calls for select using (site_id in (select app_hidden.current_user_site_ids()));
grant select on app_public.calls to :DATABASE_VISITOR;

/* For the HTTP layer's signature check: the site and its current and previous secrets. */
create function app_private.call_event_secrets_for(public_key text)
  returns table (site_id uuid, current_secret text, previous_secret text)
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select c.site_id, c.current_secret, c.previous_secret
    from app_public.sites s join app_private.call_event_secrets c on c.site_id = s.id
   where s.public_key = call_event_secrets_for.public_key;
$$;
comment on function app_private.call_event_secrets_for(text) is
  E'The signing secrets of the site with this public key (used only to verify signatures, never returned to clients).';
grant execute on function app_private.call_event_secrets_for(text) to :DATABASE_AUTHENTICATOR;

/* Records a verified call event; raises OMCAL (with a message naming the field) for a bad body. */
create function app_private.record_call_event(site_id uuid, body jsonb) returns jsonb
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
                                     visitor_id, session_id, gclid, attribution_tier, attribution_source, click_id, click_id_type)
  values (record_call_event.site_id, body ->> 'call_id', v_status, body ->> 'caller', body ->> 'tracking_number', v_started_at,
          coalesce((body ->> 'duration_s')::integer, 0), body ->> 'visitor_id', v_session.id, body ->> 'gclid',
          v_tier, v_source, v_click_id, v_click_type)
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
    updated_at = pg_catalog.now()
  returning * into v_call;
  return pg_catalog.jsonb_build_object('call_id', v_call.call_id, 'id', v_call.id, 'status', v_call.status,
    'session_id', v_call.session_id, 'attribution_tier', v_call.attribution_tier, 'attribution_source', v_call.attribution_source);
end;
$$;
comment on function app_private.record_call_event(uuid, jsonb) is
  E'Records a signature-verified call event (idempotent by call_id) and matches it to its session; OMCAL for a bad body.';
grant execute on function app_private.record_call_event(uuid, jsonb) to :DATABASE_AUTHENTICATOR;

/*
 * Rotation without downtime: the current secret becomes the previous one (still accepted)
 * until retire_call_event_secret forgets it. Returns the new secret, shown once.
 */
create function app_private.rotate_call_event_secret(site_id uuid) returns text
  language sql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
  update app_private.call_event_secrets c
     set previous_secret = c.current_secret, current_secret = app_private.new_call_event_secret(), rotated_at = pg_catalog.now()
   where c.site_id = rotate_call_event_secret.site_id
  returning c.current_secret;
$$;
comment on function app_private.rotate_call_event_secret(uuid) is E'Makes a new current call-event secret; the old one stays valid as the previous secret.';

create function app_private.retire_call_event_secret(site_id uuid) returns boolean
  language sql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
  update app_private.call_event_secrets c set previous_secret = null
   where c.site_id = retire_call_event_secret.site_id
  returning c.previous_secret is null;
$$;
comment on function app_private.retire_call_event_secret(uuid) is E'Stops accepting the previous call-event secret.';
