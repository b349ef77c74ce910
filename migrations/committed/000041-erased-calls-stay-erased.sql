--! Previous: sha1:178fe6b3bcb31c926d31c9819b1f00cbdf55f95a
--! Hash: sha1:31e5f2ebe1c331d41aefc191360ba58284880da6
--! Message: erased-calls-stay-erased

--! split: 1-current.sql
/*
 * An erased call stays erased when its provider writes about it again.
 *
 * Erasure strips a call of the subject's data (caller, visitor id, click ids, session), but the
 * call-tracking provider goes on sending events for the same call id (answered, ended), and
 * record_call_event fills each column that is still empty from the event: the next event put
 * the caller's number back, behind a completed erasure receipt. Erasure now stamps the call
 * (calls.erased_at), and later events for a stamped call fill none of those columns; status and
 * duration still follow the provider.
 */
alter table app_public.calls add column if not exists erased_at timestamptz;
comment on column app_public.calls.erased_at is
  E'When an erasure stripped this call of its subject''s data; later events about the call add none back.';

create or replace function app_private.carry_out_erasure(site_id uuid, request_id uuid) returns jsonb
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
     set caller = null, visitor_id = null, gclid = null, session_id = null, click_id = null, click_id_type = null,
         erased_at = coalesce(c.erased_at, pg_catalog.now())
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
  -- A call whose subject was erased takes no personal data from later events about it.
  on conflict on constraint calls_site_call_id_key do update set
    status = case when (v_rank ->> excluded.status)::int > (v_rank ->> c.status)::int then excluded.status else c.status end,
    duration_s = greatest(c.duration_s, excluded.duration_s),
    caller = case when c.erased_at is null then coalesce(c.caller, excluded.caller) end,
    tracking_number = coalesce(c.tracking_number, excluded.tracking_number),
    visitor_id = case when c.erased_at is null then coalesce(c.visitor_id, excluded.visitor_id) end,
    gclid = case when c.erased_at is null then coalesce(c.gclid, excluded.gclid) end,
    session_id = case when c.erased_at is null then coalesce(c.session_id, excluded.session_id) end,
    attribution_tier = coalesce(c.attribution_tier, excluded.attribution_tier),
    attribution_source = coalesce(c.attribution_source, excluded.attribution_source),
    click_id = case when c.erased_at is null then coalesce(c.click_id, excluded.click_id) end,
    click_id_type = case when c.erased_at is null then coalesce(c.click_id_type, excluded.click_id_type) end,
    via_google_forwarding = c.via_google_forwarding or excluded.via_google_forwarding,
    updated_at = pg_catalog.now()
  returning * into v_call;
  return pg_catalog.jsonb_build_object('call_id', v_call.call_id, 'id', v_call.id, 'status', v_call.status,
    'session_id', v_call.session_id, 'attribution_tier', v_call.attribution_tier, 'attribution_source', v_call.attribution_source);
end;
$$;
