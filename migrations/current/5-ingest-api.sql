/*
 * The tracker's front door: one call per HTTP request does everything, in one transaction —
 * site and origin check, rate limit, per-event validation, consent-based minimisation,
 * duplicate detection, quota, ledger row, event row and sessions. A request-level failure
 * raises, so nothing of the request is stored; an event-level problem rejects that event only.
 *
 * Lock order, to stay free of deadlocks: rate-limit slot, then visitor advisory locks in sorted
 * order, then quota shards (a transaction that already holds a shard never waits for another).
 */
create function app_private.daily_salt(day date) returns bytea
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_salt bytea;
begin
  select d.salt into v_salt from app_private.daily_salts d where d.day = daily_salt.day;
  if v_salt is null then
    insert into app_private.daily_salts (day) values (daily_salt.day) on conflict do nothing;
    select d.salt into v_salt from app_private.daily_salts d where d.day = daily_salt.day;
  end if;
  return v_salt;
end;
$$;
comment on function app_private.daily_salt(date) is E'The salt of a UTC day, created on first use.';

create function app_private.origin_allowed(site app_public.sites, origin text, global_origins text[]) returns boolean
  language sql immutable
  set search_path to pg_catalog, public, pg_temp
as $$
  select origin is not null
     and (pg_catalog.lower(origin) = any(site.allowed_origins) or pg_catalog.lower(origin) = any(global_origins));
$$;
comment on function app_private.origin_allowed(app_public.sites, text, text[]) is
  E'True when a browser Origin is in the site''s allowed_origins or the global list. A missing Origin is refused.';

/* Per site, hashed client IP and minute. Raises OM429 with the seconds to wait in DETAIL. */
create function app_private.check_rate_limit(site app_public.sites, client_ip text) returns void
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_window timestamptz := pg_catalog.date_trunc('minute', pg_catalog.now());
  v_ip_hash bytea;
  v_hits bigint;
begin
  if site.rate_limit_per_minute = 0 or client_ip is null then
    return;
  end if;
  v_ip_hash := public.hmac(pg_catalog.convert_to(client_ip, 'UTF8'), app_private.daily_salt(v_window::date), 'sha256');
  insert into app_private.rate_counters as r (site_id, ip_hash, window_start, slot, hits)
  values (site.id, v_ip_hash, v_window, pg_catalog.pg_backend_pid() % 16, 1)
  on conflict (site_id, ip_hash, window_start, slot) do update set hits = r.hits + 1;
  select pg_catalog.sum(r.hits) into v_hits from app_private.rate_counters r
   where r.site_id = site.id and r.ip_hash = v_ip_hash and r.window_start = v_window;
  if v_hits > site.rate_limit_per_minute then
    raise exception using errcode = 'OM429', message = 'Too many requests.',
      detail = pg_catalog.ceil(extract(epoch from v_window + interval '1 minute' - pg_catalog.now()))::text;
  end if;
end;
$$;
comment on function app_private.check_rate_limit(app_public.sites, text) is
  E'Counts a request against the site''s per-IP limit; raises OM429 (detail: seconds until the next minute) when over.';

/*
 * Creates a site's quota shards for a period on first use, from the quota minus what the ledger
 * already billed (so a quota set mid-month still counts the month's earlier events). Called
 * before the event's own ledger row is written, so that row is not counted twice.
 */
create function app_private.ensure_quota_shards(site app_public.sites, period date) returns void
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
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
     and l.occurred_at >= ensure_quota_shards.period and l.occurred_at < ensure_quota_shards.period + interval '1 month';
  insert into app_private.quota_shards (site_id, period, shard, remaining)
  select site.id, ensure_quota_shards.period, s, v_left / v_shards + case when s < v_left % v_shards then 1 else 0 end
    from pg_catalog.generate_series(0, v_shards - 1) as s
  on conflict do nothing;
end;
$$;
comment on function app_private.ensure_quota_shards(app_public.sites, date) is
  E'Creates the 16 quota shards of a site and month on first use, holding the quota left.';

/* Takes one billable event from the site's quota for a period; false when it is used up. */
create function app_private.take_quota(site app_public.sites, period date) returns boolean
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_own smallint := (pg_catalog.pg_backend_pid() % 16)::smallint;
  v_holding boolean := pg_catalog.current_setting('app.holds_quota_shard', true) = 'on';
  v_shard smallint;
begin
  if site.monthly_event_quota is null then
    return true;
  end if;
  -- Our own shard first, then any shard nobody holds; wait for a busy one only while holding
  -- none, so that waiting transactions never hold what others wait for.
  select q.shard into v_shard from app_private.quota_shards q
   where q.site_id = site.id and q.period = take_quota.period and q.shard = v_own and q.remaining > 0
   for update skip locked;
  if v_shard is null then
    select q.shard into v_shard from app_private.quota_shards q
     where q.site_id = site.id and q.period = take_quota.period and q.remaining > 0
     order by q.shard limit 1 for update skip locked;
  end if;
  if v_shard is null and not v_holding then
    select q.shard into v_shard from app_private.quota_shards q
     where q.site_id = site.id and q.period = take_quota.period and q.remaining > 0
     order by q.shard limit 1 for update;
  end if;
  if v_shard is null then
    return false;
  end if;
  update app_private.quota_shards q set remaining = q.remaining - 1
   where q.site_id = site.id and q.period = take_quota.period and q.shard = v_shard;
  perform pg_catalog.set_config('app.holds_quota_shard', 'on', true);
  return true;
end;
$$;
comment on function app_private.take_quota(app_public.sites, date) is
  E'Consumes one event of a site''s monthly quota, exact under concurrency, without one hot counter row.';

/* The visitor's most recent banner choice, or null. */
create function app_private.latest_consent(site_id uuid, visitor_hash bytea) returns jsonb
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select pg_catalog.jsonb_build_object('analytics_storage', c.analytics_storage, 'ad_storage', c.ad_storage,
                                       'ad_user_data', c.ad_user_data, 'ad_personalization', c.ad_personalization)
    from app_public.consents c
   where c.site_id = latest_consent.site_id and c.visitor_hash = latest_consent.visitor_hash
   order by c.recorded_at desc, c.id desc
   limit 1;
$$;
comment on function app_private.latest_consent(uuid, bytea) is E'A visitor''s latest recorded consent choice.';

create function app_private.valid_consent(consent jsonb) returns boolean
  language sql immutable
  set search_path to pg_catalog, public, pg_temp
as $$
  select pg_catalog.jsonb_typeof(consent) = 'object'
     and not exists (select 1 from pg_catalog.jsonb_each(consent) c
                      where c.key not in ('analytics_storage', 'ad_storage', 'ad_user_data', 'ad_personalization')
                         or c.value not in ('"granted"', '"denied"'));
$$;
comment on function app_private.valid_consent(jsonb) is E'True for an object of Consent Mode v2 signals, each granted or denied.';

/*
 * SPEC §8: an event's own consent, else the visitor's latest banner choice, else the site
 * default (required: all denied; implied: all granted). Missing signals take the default.
 */
create function app_private.effective_consent(site app_public.sites, own jsonb, recorded jsonb) returns jsonb
  language sql immutable
  set search_path to pg_catalog, public, pg_temp
as $$
  select pg_catalog.jsonb_build_object(
           'analytics_storage', v.d, 'ad_storage', v.d, 'ad_user_data', v.d, 'ad_personalization', v.d)
         || coalesce(own, recorded, '{}'::jsonb)
    from (select case when site.consent_mode = 'implied' then 'granted' else 'denied' end as d) v;
$$;
comment on function app_private.effective_consent(app_public.sites, jsonb, jsonb) is E'The consent signals that apply to an event.';

create function app_private.find_site(public_key text, origin text, global_origins text[], client_ip text)
  returns app_public.sites
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_site app_public.sites;
begin
  select * into v_site from app_public.sites s where s.public_key = find_site.public_key;
  if v_site.id is null then
    raise exception using errcode = 'OMUSK', message = 'Unknown site key.';
  end if;
  if not app_private.origin_allowed(v_site, find_site.origin, find_site.global_origins) then
    raise exception using errcode = 'OMORG', message = 'This origin may not send events for the site.';
  end if;
  perform app_private.check_rate_limit(v_site, find_site.client_ip);
  return v_site;
end;
$$;
comment on function app_private.find_site(text, text, text[], text) is
  E'The site of a public key, after the origin check (OMORG) and the rate limit (OM429); OMUSK when unknown.';

create function app_hidden.parse_timestamptz(value text) returns timestamptz
  language plpgsql immutable strict
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  if value !~ '^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}(:?\d{2})?)$' then
    return null;
  end if;
  return value::timestamptz;
exception when others then
  return null;
end;
$$;
comment on function app_hidden.parse_timestamptz(text) is E'An ISO-8601 timestamp with zone, or null when it is not one.';

/* Why an event cannot be accepted (an event-level error code), or null when it is fine. */
create function app_private.event_problem(event jsonb, site app_public.sites, now timestamptz, out code text, out message text)
  language plpgsql stable
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_ts timestamptz;
  v_url text;
  v_host text;
begin
  if pg_catalog.jsonb_typeof(event) is distinct from 'object' then
    code := 'invalid_event'; message := 'An event must be a JSON object with valid strings.'; return;
  end if;
  if pg_catalog.jsonb_typeof(event -> 'id') is distinct from 'string'
     or event ->> 'id' !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then
    code := 'invalid_event'; message := 'id must be a UUID.'; return;
  end if;
  if pg_catalog.jsonb_typeof(event -> 'type') is distinct from 'string' or event ->> 'type' !~ '^[a-z][a-z0-9_]{0,39}$' then
    code := 'invalid_event'; message := 'type must match ^[a-z][a-z0-9_]{0,39}$.'; return;
  end if;
  if pg_catalog.jsonb_typeof(event -> 'visitor_id') is distinct from 'string' or event ->> 'visitor_id' !~ '^[A-Za-z0-9_-]{1,64}$' then
    code := 'invalid_event'; message := 'visitor_id must be 1 to 64 letters, digits, _ or -.'; return;
  end if;
  v_ts := case when pg_catalog.jsonb_typeof(event -> 'ts') = 'string' then app_hidden.parse_timestamptz(event ->> 'ts') end;
  if v_ts is null then
    code := 'invalid_ts'; message := 'ts must be an ISO-8601 time with a zone.'; return;
  end if;
  if v_ts < event_problem.now - interval '7 days' or v_ts > event_problem.now + interval '5 minutes' then
    code := 'invalid_ts'; message := 'ts must lie between 7 days ago and 5 minutes from now.'; return;
  end if;
  if event ? 'url' and pg_catalog.jsonb_typeof(event -> 'url') <> 'null' then
    v_url := event ->> 'url';
    if pg_catalog.jsonb_typeof(event -> 'url') <> 'string' or pg_catalog.length(v_url) > 2048
       or v_url !~* '^https?://[^\s/?#]+([/?#][^\s]*)?$' then
      code := 'invalid_event'; message := 'url must be an absolute http(s) URL of at most 2048 characters.'; return;
    end if;
    v_host := app_hidden.url_host(v_url);
    if v_host is null or not app_hidden.host_is_on(v_host, site.domain) then
      code := 'url_not_on_site'; message := 'url is not on the site''s domain.'; return;
    end if;
  elsif event ->> 'type' = 'pageview' then
    code := 'invalid_event'; message := 'A pageview needs a url.'; return;
  end if;
  if event ? 'referrer' and pg_catalog.jsonb_typeof(event -> 'referrer') <> 'null' and event ->> 'referrer' <> ''
     and (pg_catalog.jsonb_typeof(event -> 'referrer') <> 'string' or pg_catalog.length(event ->> 'referrer') > 2048
          or event ->> 'referrer' !~* '^https?://[^\s/?#]+([/?#][^\s]*)?$') then
    code := 'invalid_event'; message := 'referrer must be an absolute http(s) URL or empty.'; return;
  end if;
  if event ? 'title' and pg_catalog.jsonb_typeof(event -> 'title') <> 'null'
     and (pg_catalog.jsonb_typeof(event -> 'title') <> 'string' or pg_catalog.length(event ->> 'title') > 1000) then
    code := 'invalid_event'; message := 'title must be a string of at most 1000 characters.'; return;
  end if;
  if event ? 'props' and pg_catalog.jsonb_typeof(event -> 'props') <> 'null'
     and (pg_catalog.jsonb_typeof(event -> 'props') <> 'object' or pg_catalog.octet_length((event -> 'props')::text) > 4096
          or pg_catalog.jsonb_path_exists(event -> 'props', 'strict $.**{4 to last}')) then
    code := 'invalid_event'; message := 'props must be an object of at most 4 KiB, nested at most 3 levels.'; return;
  end if;
  if event ? 'consent' and pg_catalog.jsonb_typeof(event -> 'consent') <> 'null' and not app_private.valid_consent(event -> 'consent') then
    code := 'invalid_event'; message := 'consent must map Consent Mode signals to granted or denied.'; return;
  end if;
  if event ? 'device' and pg_catalog.jsonb_typeof(event -> 'device') <> 'null'
     and (pg_catalog.jsonb_typeof(event -> 'device') <> 'object' or pg_catalog.octet_length((event -> 'device')::text) > 1024
          or exists (select 1 from pg_catalog.jsonb_each(event -> 'device') d where pg_catalog.jsonb_typeof(d.value) <> 'string')) then
    code := 'invalid_event'; message := 'device must be an object of strings of at most 1 KiB.'; return;
  end if;
end;
$$;
comment on function app_private.event_problem(jsonb, app_public.sites, timestamptz) is
  E'Validates one tracker event (SPEC §5.1); returns an event-level error code and message, or nulls.';

create function app_private.ingest_events(
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
    -- The ledger row first: a concurrent copy of this event waits here for ours and then
    -- counts as a duplicate. Only a new event consumes quota; over quota, the row goes again.
    v_period := pg_catalog.date_trunc('month', v_event.occurred_at at time zone 'UTC')::date;
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
    if not v_consents ? v_event.visitor_id then
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

create function app_private.record_consent(
  public_key text, visitor_id text, consent jsonb, origin text, client_ip text, global_origins text[] default '{}'
) returns jsonb
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_site app_public.sites;
  v_full jsonb;
begin
  v_site := app_private.find_site(record_consent.public_key, record_consent.origin, record_consent.global_origins, record_consent.client_ip);
  if record_consent.visitor_id is null or record_consent.visitor_id !~ '^[A-Za-z0-9_-]{1,64}$' then
    raise exception using errcode = 'OMENV', message = 'visitor_id must be 1 to 64 letters, digits, _ or -.';
  end if;
  if not app_private.valid_consent(record_consent.consent) then
    raise exception using errcode = 'OMENV', message = 'consent must map Consent Mode signals to granted or denied.';
  end if;
  -- Signals the banner did not send are recorded as denied: proof must never overstate consent.
  v_full := pg_catalog.jsonb_build_object('analytics_storage', 'denied', 'ad_storage', 'denied',
                                          'ad_user_data', 'denied', 'ad_personalization', 'denied') || record_consent.consent;
  insert into app_public.consents (site_id, visitor_hash, analytics_storage, ad_storage, ad_user_data, ad_personalization)
  select v_site.id, public.hmac(pg_catalog.convert_to(record_consent.visitor_id, 'UTF8'), s.salt, 'sha256'), v_full ->> 'analytics_storage',
         v_full ->> 'ad_storage', v_full ->> 'ad_user_data', v_full ->> 'ad_personalization'
    from app_private.site_salts s where s.site_id = v_site.id;
  return pg_catalog.jsonb_build_object('recorded', true, 'consent', v_full);
end;
$$;
comment on function app_private.record_consent(text, text, jsonb, text, text, text[]) is
  E'POST /api/consent: appends the visitor''s choice to consents (proof of consent).';

grant execute on function app_private.ingest_events(text, jsonb, text, text, text, text[]) to :DATABASE_AUTHENTICATOR;
grant execute on function app_private.record_consent(text, text, jsonb, text, text, text[]) to :DATABASE_AUTHENTICATOR;

/* Preflight requests carry no site key: answer them for origins that some site allows. */
create index sites_allowed_origins_idx on app_public.sites using gin (allowed_origins);
create function app_private.origin_known(origin text, global_origins text[] default '{}') returns boolean
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select pg_catalog.lower(origin_known.origin) = any(origin_known.global_origins)
      or exists (select 1 from app_public.sites s where s.allowed_origins @> array[pg_catalog.lower(origin_known.origin)]);
$$;
comment on function app_private.origin_known(text, text[]) is E'True when some site (or the global list) allows the origin: the CORS preflight check.';
grant execute on function app_private.origin_known(text, text[]) to :DATABASE_AUTHENTICATOR;

/* Housekeeping for the worker: spent rate-limit windows, and salts past the late-event window. */
create function app_private.ingest_cleanup() returns jsonb
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_counters bigint;
  v_salts bigint;
begin
  delete from app_private.rate_counters r where r.window_start < pg_catalog.now() - interval '2 minutes';
  get diagnostics v_counters = row_count;
  -- Past 8 days no late event can need the salt; deleting it makes those hashes unlinkable.
  delete from app_private.daily_salts d where d.day < (pg_catalog.now() at time zone 'UTC')::date - 8;
  get diagnostics v_salts = row_count;
  return pg_catalog.jsonb_build_object('rate_counters', v_counters, 'daily_salts', v_salts);
end;
$$;
comment on function app_private.ingest_cleanup() is E'Deletes spent rate-limit counters and daily salts older than 8 days.';
