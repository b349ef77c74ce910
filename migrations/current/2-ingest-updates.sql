/*
 * Ingestion learns about frozen invoices: an event whose month is frozen is rejected with
 * period_closed (ingest_events as in 000002, plus that check before the ledger write).
 * Month bounds are UTC instants (period_bounds), whatever the session's time zone.
 */
create or replace function app_private.ingest_events(
  public_key text, events jsonb, origin text, client_ip text, user_agent text, global_origins text[] default '{}'
) returns jsonb
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_site app_public.sites;
  v_now timestamptz := pg_catalog.now();
  v_is_bot boolean;
  v_salt bytea;
  v_rejected jsonb := '[]';
  v_valid jsonb := '[]';
  v_visitor_hash bytea;
  v_accepted integer := 0;
  v_duplicates integer := 0;
  v_event record;
  v_problem record;
  v_consent jsonb;
  v_consents jsonb := '{}';
  v_granted boolean;
  v_visitor_key text;
  v_period date;
  v_billable boolean;
  v_session_id uuid;
  v_rebuild_since timestamptz;
  v_rebuild_since_event_id uuid;
  v_inserted boolean;
begin
  v_site := app_private.find_site(ingest_events.public_key, ingest_events.origin, ingest_events.global_origins, ingest_events.client_ip);
  if pg_catalog.jsonb_typeof(ingest_events.events) <> 'array' or pg_catalog.jsonb_array_length(ingest_events.events) not between 1 and 100 then
    raise exception using errcode = 'OMENV', message = 'events must be an array of 1 to 100 events.';
  end if;
  v_is_bot := exists (select 1 from app_private.bot_user_agents b
                       where pg_catalog.strpos(pg_catalog.lower(coalesce(ingest_events.user_agent, '')), b.pattern) > 0);
  select s.salt into v_salt from app_private.site_salts s where s.site_id = v_site.id;

  -- Validate everything first, then lock every visitor of the batch in one sorted pass.
  for v_event in select e.value, e.ordinal - 1 as ordinal from pg_catalog.jsonb_array_elements(ingest_events.events) with ordinality as e(value, ordinal) loop
    select * into v_problem from app_private.event_problem(v_event.value, v_site, v_now);
    if v_problem.code is not null then
      v_rejected := v_rejected || pg_catalog.jsonb_build_object('index', v_event.ordinal, 'error', v_problem.code, 'message', v_problem.message);
    else
      v_valid := v_valid || pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('ordinal', v_event.ordinal, 'event', v_event.value));
    end if;
  end loop;
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended(v_site.id::text || '/' || b.visitor_id, 0))
     from (select distinct v.value -> 'event' ->> 'visitor_id' as visitor_id
             from pg_catalog.jsonb_array_elements(v_valid) v order by 1) b;

  for v_event in
    select (v.value ->> 'ordinal')::integer as ordinal, v.value -> 'event' as event, (v.value -> 'event' ->> 'id')::uuid as id,
           (v.value -> 'event' ->> 'ts')::timestamptz as occurred_at, v.value -> 'event' ->> 'visitor_id' as visitor_id
      from pg_catalog.jsonb_array_elements(v_valid) v
     order by 5, 4, 3
  loop
    if exists (select 1 from app_public.ingest_idempotency l
                where l.site_id = v_site.id and l.idempotency_key = v_event.id
                  and l.occurred_at between v_event.occurred_at - interval '8 days' and v_event.occurred_at + interval '8 days') then
      v_duplicates := v_duplicates + 1;
      continue;
    end if;
    -- A frozen period takes no more events: its invoice is final. The shared lock lets
    -- freeze_invoice (exclusive) wait for requests already writing into the period.
    v_period := pg_catalog.date_trunc('month', v_event.occurred_at at time zone 'UTC')::date;
    perform pg_catalog.pg_advisory_xact_lock_shared(
      pg_catalog.hashtextextended('invoice/' || v_site.id::text || '/' || v_period::text, 0));
    if exists (select 1 from app_public.invoice_snapshots s where s.site_id = v_site.id and s.period = v_period) then
      v_rejected := v_rejected || pg_catalog.jsonb_build_object('index', v_event.ordinal, 'error', 'period_closed',
                                                                'message', 'The invoice for this month is frozen.');
      continue;
    end if;
    -- The ledger row first: a concurrent copy of this event waits here for ours and then
    -- counts as a duplicate. Only a new event consumes quota; over quota, the row goes again.
    v_billable := not v_is_bot;
    if v_billable then
      perform app_private.ensure_quota_shards(v_site, v_period);
    end if;
    insert into app_public.ingest_idempotency (site_id, idempotency_key, occurred_at, received_at, billable, reason)
    values (v_site.id, v_event.id, v_event.occurred_at, v_now, v_billable, case when v_is_bot then 'bot' end)
    on conflict do nothing
    returning true into v_inserted;
    if v_inserted is null then
      v_duplicates := v_duplicates + 1;
      continue;
    end if;
    v_inserted := null;
    if v_billable and not app_private.take_quota(v_site, v_period) then
      delete from app_public.ingest_idempotency l
       where l.site_id = v_site.id and l.idempotency_key = v_event.id and l.occurred_at = v_event.occurred_at;
      v_rejected := v_rejected || pg_catalog.jsonb_build_object('index', v_event.ordinal, 'error', 'quota_exceeded',
                                                                'message', 'The site''s monthly event quota is used up.');
      continue;
    end if;

    -- Consent decides what is kept: without analytics consent no raw visitor id, no device
    -- data, and the visitor is known only by a hash whose salt changes every day.
    if v_event.event -> 'consent' is null and not v_consents ? v_event.visitor_id then
      v_visitor_hash := public.hmac(pg_catalog.convert_to(v_event.visitor_id, 'UTF8'), v_salt, 'sha256');
      v_consents := v_consents || pg_catalog.jsonb_build_object(v_event.visitor_id,
                      coalesce(app_private.latest_consent(v_site.id, v_visitor_hash), 'null'::jsonb));
    end if;
    v_consent := app_private.effective_consent(v_site, nullif(v_event.event -> 'consent', 'null'::jsonb),
                                               nullif(v_consents -> v_event.visitor_id, 'null'::jsonb));
    v_granted := v_consent ->> 'analytics_storage' = 'granted';
    v_visitor_key := case when v_granted then v_event.visitor_id
                          else 'h:' || pg_catalog.encode(pg_catalog.substr(public.hmac(pg_catalog.convert_to(v_site.id::text || '/' || v_event.visitor_id, 'UTF8'),
                                 app_private.daily_salt((v_event.occurred_at at time zone 'UTC')::date), 'sha256'), 1, 16), 'hex') end;

    v_session_id := null;
    v_rebuild_since := null;
    v_rebuild_since_event_id := null;
    if not v_is_bot then
      select p.session_id, p.rebuild_since, p.rebuild_since_event_id into v_session_id, v_rebuild_since, v_rebuild_since_event_id
        from app_private.place_event(v_site.id, v_visitor_key, case when v_granted then v_event.visitor_id end,
        v_event.id, v_event.occurred_at, v_event.event ->> 'type', v_event.event ->> 'url',
        nullif(v_event.event ->> 'referrer', ''), v_site.domain) p;
    end if;
    insert into app_public.events (site_id, id, occurred_at, received_at, type, visitor_key, visitor_id, session_id,
                                   url, referrer, title, props, device, consent, is_bot)
    values (v_site.id, v_event.id, v_event.occurred_at, v_now, v_event.event ->> 'type', v_visitor_key,
            case when v_granted then v_event.visitor_id end, v_session_id,
            v_event.event ->> 'url', nullif(v_event.event ->> 'referrer', ''), v_event.event ->> 'title',
            coalesce(nullif(v_event.event -> 'props', 'null'::jsonb), '{}'),
            case when v_granted then nullif(v_event.event -> 'device', 'null'::jsonb) end, v_consent, v_is_bot);
    if v_rebuild_since is not null then
      perform app_private.rebuild_sessions(v_site.id, v_visitor_key, v_rebuild_since, v_rebuild_since_event_id, v_site.domain);
    end if;
    v_accepted := v_accepted + 1;
  end loop;

  return pg_catalog.jsonb_build_object('accepted', v_accepted, 'duplicates', v_duplicates,
    'rejected', (select coalesce(pg_catalog.jsonb_agg(r order by (r ->> 'index')::int), '[]') from pg_catalog.jsonb_array_elements(v_rejected) r));
end;
$$;
comment on function app_private.ingest_events(text, jsonb, text, text, text, text[]) is
  E'POST /api/sync in one call: returns {accepted, duplicates, rejected[]}; raises OMUSK, OMORG, OM429 or OMENV for the whole request.';

create or replace function app_private.ensure_quota_shards(site app_public.sites, period date) returns void
  language plpgsql volatile
as $$
declare
  v_shards constant integer := 16;
  v_left bigint;
begin
  if site.monthly_event_quota is null
     or exists (select 1 from app_private.quota_shards q where q.site_id = site.id and q.period = ensure_quota_shards.period) then
    return;
  end if;
  select greatest(site.monthly_event_quota - pg_catalog.count(*), 0) into v_left
    from app_public.ingest_idempotency l
   where l.site_id = site.id and l.billable
     and l.occurred_at >= (app_private.period_bounds(ensure_quota_shards.period)).starts_at
     and l.occurred_at < (app_private.period_bounds(ensure_quota_shards.period)).ends_at;
  insert into app_private.quota_shards (site_id, period, shard, remaining)
  select site.id, ensure_quota_shards.period, s, v_left / v_shards + case when s < v_left % v_shards then 1 else 0 end
    from pg_catalog.generate_series(0, v_shards - 1) as s
  on conflict do nothing;
end;
$$;
comment on function app_private.ensure_quota_shards(app_public.sites, date) is
  E'Creates the 16 quota shards of a site and month on first use, holding the quota left.';
