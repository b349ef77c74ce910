--! Previous: sha1:d4a1edb8cf82d8978f435a24d546955828b388ec
--! Hash: sha1:edf178cde7f5ae855c1e7db6a31ac045fb438c69
--! Message: ingest-fewer-statements

--! split: 1-current.sql
--! Ingest hot path: helpers that PostgreSQL can inline or whose plans it can keep.
--
-- A SQL-language function that the planner cannot inline (a FROM clause, a sub-select, or
-- STRICT over a body that is not strict, such as one with OR or CASE) is parsed and planned
-- again on every call; a PL/pgSQL block with an EXCEPTION clause opens a subtransaction on
-- every entry. The tracker endpoint calls these helpers for every event, so each is rewritten
-- here to avoid both, with the same results for every input.

-- Inlinable: a plain expression, and not STRICT (the body already gives null for null input).
create or replace function app_hidden.host_is_on(host text, domain text) returns boolean
  language sql immutable parallel safe
as $$
  select host = domain or pg_catalog.right(host, pg_catalog.length(domain) + 1) = '.' || domain;
$$;

create or replace function app_hidden.social_network_of_source(utm_source text) returns text
  language sql immutable parallel safe
as $$
  select case pg_catalog.lower(utm_source)
    when 'facebook' then 'facebook' when 'fb' then 'facebook' when 'meta' then 'meta'
    when 'instagram' then 'instagram' when 'ig' then 'instagram'
    when 'tiktok' then 'tiktok' when 'linkedin' then 'linkedin'
    when 'twitter' then 'twitter' when 'x' then 'twitter'
    when 'pinterest' then 'pinterest' when 'snapchat' then 'snapchat' when 'reddit' then 'reddit'
  end;
$$;

create or replace function app_hidden.social_network_of_host(host text) returns text
  language sql immutable parallel safe
as $$
  select case
    when app_hidden.host_is_on(host, 'facebook.com') then 'facebook'
    when app_hidden.host_is_on(host, 'instagram.com') then 'instagram'
    when app_hidden.host_is_on(host, 't.co') or app_hidden.host_is_on(host, 'twitter.com')
      or app_hidden.host_is_on(host, 'x.com') then 'twitter'
    when app_hidden.host_is_on(host, 'linkedin.com') or app_hidden.host_is_on(host, 'lnkd.in') then 'linkedin'
    when app_hidden.host_is_on(host, 'tiktok.com') then 'tiktok'
    when app_hidden.host_is_on(host, 'pinterest.com') then 'pinterest'
    when app_hidden.host_is_on(host, 'reddit.com') then 'reddit'
    when app_hidden.host_is_on(host, 'snapchat.com') then 'snapchat'
  end;
$$;

create or replace function app_hidden.is_search_host(host text) returns boolean
  language sql immutable parallel safe
as $$
  select host ~ '(^|\.)(google|yandex)\.[a-z]{2,3}(\.[a-z]{2})?$'
      or app_hidden.host_is_on(host, 'bing.com') or app_hidden.host_is_on(host, 'yahoo.com')
      or app_hidden.host_is_on(host, 'duckduckgo.com') or app_hidden.host_is_on(host, 'baidu.com')
      or app_hidden.host_is_on(host, 'ecosia.org') or host = 'search.brave.com';
$$;

-- The site's consent mode as defaults, overlaid by the event's own signals or else the last
-- recorded ones. One expression, so it inlines into the caller.
create or replace function app_private.effective_consent(site app_public.sites, own jsonb, recorded jsonb) returns jsonb
  language sql immutable
as $$
  select case when site.consent_mode = 'implied'
              then '{"analytics_storage": "granted", "ad_storage": "granted", "ad_user_data": "granted", "ad_personalization": "granted"}'::jsonb
              else '{"analytics_storage": "denied", "ad_storage": "denied", "ad_user_data": "denied", "ad_personalization": "denied"}'::jsonb
         end || coalesce(own, recorded, '{}'::jsonb);
$$;

-- Only the four Consent Mode signals, each granted or denied. One expression (no sub-select
-- over jsonb_each), which PL/pgSQL evaluates without starting a query.
create or replace function app_private.valid_consent(consent jsonb) returns boolean
  language plpgsql immutable
as $$
begin
  return case when pg_catalog.jsonb_typeof(consent) is distinct from 'object' then false
              else consent - array['analytics_storage', 'ad_storage', 'ad_user_data', 'ad_personalization'] = '{}'::jsonb
                   and coalesce(consent -> 'analytics_storage', '"denied"') in ('"granted"', '"denied"')
                   and coalesce(consent -> 'ad_storage', '"denied"') in ('"granted"', '"denied"')
                   and coalesce(consent -> 'ad_user_data', '"denied"') in ('"granted"', '"denied"')
                   and coalesce(consent -> 'ad_personalization', '"denied"') in ('"granted"', '"denied"') end;
end;
$$;

-- PL/pgSQL keeps the plan of its query for the session; the SQL version was planned per call.
create or replace function app_private.latest_consent(site_id uuid, visitor_hash bytea) returns jsonb
  language plpgsql stable
as $$
begin
  return (select pg_catalog.jsonb_build_object('analytics_storage', c.analytics_storage, 'ad_storage', c.ad_storage,
                                               'ad_user_data', c.ad_user_data, 'ad_personalization', c.ad_personalization)
            from app_public.consents c
           where c.site_id = latest_consent.site_id and c.visitor_hash = latest_consent.visitor_hash
           order by c.recorded_at desc, c.id desc
           limit 1);
end;
$$;

-- Decoding only when there is something to decode, and the exception block (a subtransaction)
-- only around the decoding itself.
create or replace function app_hidden.percent_decode(value text) returns text
  language plpgsql immutable strict parallel safe
as $$
begin
  if pg_catalog.strpos(value, '%') = 0 then
    return pg_catalog.replace(value, '+', ' ');
  end if;
  begin
    return pg_catalog.convert_from(
      (select pg_catalog.string_agg(
                case when m.token[1] ~ '^%[0-9A-Fa-f]{2}$' then pg_catalog.decode(pg_catalog.substr(m.token[1], 2), 'hex')
                     else pg_catalog.convert_to(m.token[1], 'UTF8') end, ''::bytea order by m.n)
         from pg_catalog.regexp_matches(pg_catalog.replace(value, '+', ' '), '%[0-9A-Fa-f]{2}|[^%]+|%', 'g')
              with ordinality as m(token, n)),
      'UTF8');
  exception when character_not_in_repertoire or untranslatable_character then
    return pg_catalog.replace(value, '+', ' ');  -- not UTF-8 once decoded: keep it as sent
  end;
end;
$$;

create or replace function app_hidden.url_params(url text) returns jsonb
  language plpgsql immutable strict parallel safe
as $$
begin
  if pg_catalog.strpos(url, '?') = 0 then
    return '{}';
  end if;
  return (select coalesce(pg_catalog.jsonb_object_agg(p.name, p.value) filter (where p.value is not null), '{}'::jsonb)
            from (select distinct on (q.name) q.name,
                         nullif(pg_catalog.btrim(case when pg_catalog.strpos(q.raw, '%') = 0 then pg_catalog.replace(q.raw, '+', ' ')
                                                      else app_hidden.percent_decode(q.raw) end), '') as value
                    from (select pg_catalog.split_part(t.pair, '=', 1) as name,
                                 pg_catalog.substr(t.pair, pg_catalog.strpos(t.pair, '=') + 1) as raw, t.n
                            from pg_catalog.regexp_split_to_table(pg_catalog.substring(url, '\?([^#]*)'), '&') with ordinality as t(pair, n)
                           where pg_catalog.strpos(t.pair, '=') > 1) q
                   order by q.name, q.n) p);
end;
$$;

-- An ISO-8601 time with a zone, or null. The fields are range-checked so that the cast cannot
-- fail, instead of catching its error (which costs a subtransaction per event); one CASE, so
-- PL/pgSQL evaluates it as a single expression. The fields sit at fixed places once the
-- pattern matches; the zone is whatever follows the last sign after the minutes. 24:00 and
-- leap second 60, which the cast would roll over, are refused: no tracker sends them.
create or replace function app_hidden.parse_timestamptz(value text) returns timestamptz
  language plpgsql immutable strict parallel safe
as $$
begin
  return case
    when value !~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)$' then null
    when pg_catalog.substr(value, 1, 4) = '0000'
      or pg_catalog.substr(value, 6, 2) not between '01' and '12'
      or pg_catalog.substr(value, 9, 2) < '01'
      or pg_catalog.substr(value, 9, 2) > case when pg_catalog.substr(value, 6, 2) = '02'
                                                 then case when pg_catalog.substr(value, 1, 4)::integer % 4 = 0
                                                            and (pg_catalog.substr(value, 1, 4)::integer % 100 <> 0 or pg_catalog.substr(value, 1, 4)::integer % 400 = 0)
                                                           then '29' else '28' end
                                               when pg_catalog.substr(value, 6, 2) in ('04', '06', '09', '11') then '30'
                                               else '31' end
      or pg_catalog.substr(value, 12, 2) > '23' or pg_catalog.substr(value, 15, 2) > '59'
      or (pg_catalog.substr(value, 17, 1) = ':' and pg_catalog.substr(value, 18, 2) > '59')
      or pg_catalog.substr(value, 17) ~ '[+-](1[6-9]|[2-9][0-9])|[+-][0-9]{2}:?[6-9][0-9]$' then null
    else value::timestamptz
  end;
end;
$$;

--! The tracker endpoint with fewer statements per event.
--
-- Validation is one query over the batch. The visitor's session comes from one look-up of the
-- visitor's latest session (the session index) instead of three look-ups of events and
-- sessions, and stays in memory while the batch is on that visitor, so a batch writes each
-- session once. Events are written in one statement at the end. A late event (one that sorts
-- before the visitor's latest session ends) takes the old path, place_event and
-- rebuild_sessions, after everything held in memory has been written.
--
-- This relies on what sessionization guarantees: every non-bot event belongs to exactly one
-- session of its visitor key, and sessions do not overlap, so the latest session by
-- (started_at, first_event_id) holds the latest event, (ended_at, last_event_id).
drop function if exists app_private.event_problem(jsonb, app_public.sites, timestamptz);
create function app_private.event_problem(event jsonb, site app_public.sites, now timestamptz,
                                          out code text, out message text, out occurred_at timestamptz)
  language plpgsql stable
as $$
declare
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
  occurred_at := case when pg_catalog.jsonb_typeof(event -> 'ts') = 'string' then app_hidden.parse_timestamptz(event ->> 'ts') end;
  if occurred_at is null then
    code := 'invalid_ts'; message := 'ts must be an ISO-8601 time with a zone.'; return;
  end if;
  if occurred_at < event_problem.now - interval '7 days' or occurred_at > event_problem.now + interval '5 minutes' then
    occurred_at := null;
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
  'Validates one tracker event (SPEC §5.1): an event-level error code and message, or for a valid event nulls and its parsed time.';
revoke all on function app_private.event_problem(jsonb, app_public.sites, timestamptz) from public;

-- Writes a session held in memory by ingest_events: 'new' is inserted, 'changed' updated
-- (only its end moves), 'stored' needs nothing.
create or replace function app_private.store_session(session app_public.sessions, state text) returns void
  language plpgsql
as $$
begin
  if state = 'new' then
    insert into app_public.sessions select session.*;
  elsif state = 'changed' then
    update app_public.sessions s
       set ended_at = session.ended_at, last_event_id = session.last_event_id, event_count = session.event_count
     where s.site_id = session.site_id and s.id = session.id and s.started_at = session.started_at;
  end if;
end;
$$;
comment on function app_private.store_session(app_public.sessions, text) is
  'Writes a session that ingest_events held in memory: new is inserted, changed has its end updated.';
revoke all on function app_private.store_session(app_public.sessions, text) from public;

create or replace function app_private.ingest_events(public_key text, events jsonb, origin text, client_ip text, user_agent text,
                                                     global_origins text[] default '{}') returns jsonb
  language plpgsql security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_site app_public.sites;
  v_now timestamptz := pg_catalog.now();
  v_is_bot boolean;
  v_salt bytea;
  v_rejected jsonb;
  v_valid jsonb;
  v_accepted integer := 0;
  v_duplicates integer := 0;
  v_event record;
  v_consent jsonb;
  v_consents jsonb := '{}';
  v_granted boolean;
  v_visitor_key text;
  v_period date;
  v_open_period date;  -- the last period found open (and share-locked) in this request
  v_billable boolean;
  v_inserted boolean;
  v_session_id uuid;
  v_rebuild_since timestamptz;
  v_rebuild_since_event_id uuid;
  -- The session being extended or opened, held while the batch stays on its visitor key, and
  -- its state for store_session: 'stored', 'changed' or 'new'.
  v_session app_public.sessions;
  v_session_state text;
  -- Accepted events not yet written: one INSERT writes them all.
  v_pending app_public.events[] := '{}';
begin
  v_site := app_private.find_site(ingest_events.public_key, ingest_events.origin, ingest_events.global_origins, ingest_events.client_ip);
  if pg_catalog.jsonb_typeof(ingest_events.events) <> 'array' or pg_catalog.jsonb_array_length(ingest_events.events) not between 1 and 100 then
    raise exception using errcode = 'OMENV', message = 'events must be an array of 1 to 100 events.';
  end if;
  v_is_bot := exists (select 1 from app_private.bot_user_agents b
                       where pg_catalog.strpos(pg_catalog.lower(coalesce(ingest_events.user_agent, '')), b.pattern) > 0);

  -- Validate everything in one pass, then lock every visitor of the batch in one sorted pass.
  select coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('index', e.ordinal - 1, 'error', p.code, 'message', p.message))
                    filter (where p.code is not null), '[]'),
         coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('ordinal', e.ordinal - 1, 'event', e.value, 'ts', p.occurred_at))
                    filter (where p.code is null), '[]')
    into v_rejected, v_valid
    from pg_catalog.jsonb_array_elements(ingest_events.events) with ordinality as e(value, ordinal)
         cross join lateral app_private.event_problem(e.value, v_site, v_now) p;
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended(v_site.id::text || '/' || b.visitor_id, 0))
     from (select distinct v.value -> 'event' ->> 'visitor_id' as visitor_id
             from pg_catalog.jsonb_array_elements(v_valid) v order by 1) b;

  for v_event in
    select (v.value ->> 'ordinal')::integer as ordinal, v.value -> 'event' as event, (v.value -> 'event' ->> 'id')::uuid as id,
           (v.value ->> 'ts')::timestamptz as occurred_at, v.value -> 'event' ->> 'visitor_id' as visitor_id,
           v.value -> 'event' ->> 'type' as type, v.value -> 'event' ->> 'url' as url,
           nullif(v.value -> 'event' ->> 'referrer', '') as referrer
      from pg_catalog.jsonb_array_elements(v_valid) v
     order by 5, 4, 3
  loop
    -- A frozen period takes no more events: its invoice is final. The shared lock lets
    -- freeze_invoice (exclusive) wait for requests already writing into the period.
    v_period := pg_catalog.date_trunc('month', v_event.occurred_at at time zone 'UTC')::date;
    if v_period is distinct from v_open_period then
      perform pg_catalog.pg_advisory_xact_lock_shared(
        pg_catalog.hashtextextended('invoice/' || v_site.id::text || '/' || v_period::text, 0));
      if exists (select 1 from app_public.invoice_snapshots s where s.site_id = v_site.id and s.period = v_period) then
        if exists (select 1 from app_public.ingest_idempotency l  -- the same 8-day rule as below
                    where l.site_id = v_site.id and l.idempotency_key = v_event.id
                      and l.occurred_at between v_event.occurred_at - interval '8 days' and v_event.occurred_at + interval '8 days') then
          v_duplicates := v_duplicates + 1;  -- a retry of an event the invoice already counts
        else
          v_rejected := v_rejected || pg_catalog.jsonb_build_object('index', v_event.ordinal, 'error', 'period_closed',
                                                                    'message', 'The invoice for this month is frozen.');
        end if;
        continue;
      end if;
      v_open_period := v_period;
    end if;

    -- The ledger row first: a copy of this event id within 8 days is a duplicate, and a
    -- concurrent copy waits here on the primary key for ours and then counts as one too.
    -- Only a new event consumes quota; over quota, the row goes again.
    v_billable := not v_is_bot;
    if v_billable and v_site.monthly_event_quota is not null then
      perform app_private.ensure_quota_shards(v_site, v_period);
    end if;
    v_inserted := null;
    insert into app_public.ingest_idempotency (site_id, idempotency_key, occurred_at, received_at, billable, reason)
    select v_site.id, v_event.id, v_event.occurred_at, v_now, v_billable, case when v_is_bot then 'bot' end
     where not exists (select 1 from app_public.ingest_idempotency l
                        where l.site_id = v_site.id and l.idempotency_key = v_event.id
                          and l.occurred_at between v_event.occurred_at - interval '8 days' and v_event.occurred_at + interval '8 days')
    on conflict do nothing
    returning true into v_inserted;
    if v_inserted is null then
      v_duplicates := v_duplicates + 1;
      continue;
    end if;
    if v_billable and v_site.monthly_event_quota is not null and not app_private.take_quota(v_site, v_period) then
      delete from app_public.ingest_idempotency l
       where l.site_id = v_site.id and l.idempotency_key = v_event.id and l.occurred_at = v_event.occurred_at;
      v_rejected := v_rejected || pg_catalog.jsonb_build_object('index', v_event.ordinal, 'error', 'quota_exceeded',
                                                                'message', 'The site''s monthly event quota is used up.');
      continue;
    end if;

    -- Consent decides what is kept: without analytics consent no raw visitor id, no device
    -- data, and the visitor is known only by a hash whose salt changes every day.
    if v_event.event -> 'consent' is null and not v_consents ? v_event.visitor_id then
      if v_salt is null then
        select s.salt into v_salt from app_private.site_salts s where s.site_id = v_site.id;
      end if;
      v_consents := v_consents || pg_catalog.jsonb_build_object(v_event.visitor_id,
                      coalesce(app_private.latest_consent(v_site.id, public.hmac(pg_catalog.convert_to(v_event.visitor_id, 'UTF8'), v_salt, 'sha256')),
                               'null'::jsonb));
    end if;
    v_consent := app_private.effective_consent(v_site, nullif(v_event.event -> 'consent', 'null'::jsonb),
                                               nullif(v_consents -> v_event.visitor_id, 'null'::jsonb));
    v_granted := v_consent ->> 'analytics_storage' = 'granted';
    v_visitor_key := case when v_granted then v_event.visitor_id
                          else 'h:' || pg_catalog.encode(pg_catalog.substr(public.hmac(pg_catalog.convert_to(v_site.id::text || '/' || v_event.visitor_id, 'UTF8'),
                                 app_private.daily_salt((v_event.occurred_at at time zone 'UTC')::date), 'sha256'), 1, 16), 'hex') end;

    v_session_id := null;
    v_rebuild_since := null;
    if not v_is_bot then
      if v_session.visitor_key is distinct from v_visitor_key then
        -- Another visitor key: write the held session, then read this key's latest one. No
        -- session starts after now + 5 minutes (no event may), which bounds the partitions read.
        if v_session_state <> 'stored' then
          perform app_private.store_session(v_session, v_session_state);
        end if;
        v_session := null;
        select * into v_session from app_public.sessions s
         where s.site_id = v_site.id and s.visitor_key = v_visitor_key
           and s.started_at > v_event.occurred_at - interval '35 days' and s.started_at <= v_now + interval '5 minutes'
         order by s.started_at desc, s.first_event_id desc
         limit 1;
        v_session_state := 'stored';
      end if;

      if v_session.id is null or (v_session.ended_at, v_session.last_event_id) < (v_event.occurred_at, v_event.id) then
        -- In order: extend the latest session if it ended within 30 minutes and this is not a
        -- landing from a new click or campaign, else open a new one.
        if v_session.id is not null and v_session.ended_at >= v_event.occurred_at - interval '30 minutes'
           and not (v_event.type = 'pageview'
                    and app_hidden.starts_new_session(v_event.url, v_session.click_id, v_session.utm_source, v_session.utm_campaign)) then
          v_session.ended_at := v_event.occurred_at;
          v_session.last_event_id := v_event.id;
          v_session.event_count := v_session.event_count + 1;
          if v_session_state = 'stored' then
            v_session_state := 'changed';
          end if;
        else
          if v_session_state <> 'stored' then
            perform app_private.store_session(v_session, v_session_state);
          end if;
          v_session := app_private.open_session(v_site.id, v_visitor_key, case when v_granted then v_event.visitor_id end,
                                                v_event.id, v_event.occurred_at, v_event.url, v_event.referrer, v_site.domain);
          v_session_state := 'new';
        end if;
        v_session_id := v_session.id;
      else
        -- Late: write everything held, then place the event as place_event always has (it
        -- reads the tables), which may re-derive the visitor's sessions once it is stored.
        if v_session_state <> 'stored' then
          perform app_private.store_session(v_session, v_session_state);
        end if;
        v_session := null;
        v_session_state := null;
        insert into app_public.events select * from pg_catalog.unnest(v_pending);
        v_pending := '{}';
        select p.session_id, p.rebuild_since, p.rebuild_since_event_id into v_session_id, v_rebuild_since, v_rebuild_since_event_id
          from app_private.place_event(v_site.id, v_visitor_key, case when v_granted then v_event.visitor_id end,
                                       v_event.id, v_event.occurred_at, v_event.type, v_event.url, v_event.referrer, v_site.domain) p;
      end if;
    end if;

    v_pending := v_pending || row(v_site.id, v_event.id, v_event.occurred_at, v_now, v_event.type, v_visitor_key,
                                  case when v_granted then v_event.visitor_id end, v_session_id, v_event.url, v_event.referrer,
                                  v_event.event ->> 'title', coalesce(nullif(v_event.event -> 'props', 'null'::jsonb), '{}'),
                                  case when v_granted then nullif(v_event.event -> 'device', 'null'::jsonb) end, v_consent, v_is_bot
                                 )::app_public.events;
    v_accepted := v_accepted + 1;
    if v_rebuild_since is not null then
      insert into app_public.events select * from pg_catalog.unnest(v_pending);
      v_pending := '{}';
      perform app_private.rebuild_sessions(v_site.id, v_visitor_key, v_rebuild_since, v_rebuild_since_event_id, v_site.domain);
    end if;
  end loop;

  if v_session_state <> 'stored' then
    perform app_private.store_session(v_session, v_session_state);
  end if;
  if pg_catalog.cardinality(v_pending) > 0 then
    insert into app_public.events select * from pg_catalog.unnest(v_pending);
  end if;

  return pg_catalog.jsonb_build_object('accepted', v_accepted, 'duplicates', v_duplicates,
    'rejected', (select coalesce(pg_catalog.jsonb_agg(r order by (r ->> 'index')::int), '[]') from pg_catalog.jsonb_array_elements(v_rejected) r));
end;
$$;

-- The rate limit only costs a call when the site has one.
create or replace function app_private.find_site(public_key text, origin text, global_origins text[], client_ip text) returns app_public.sites
  language plpgsql
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
  if v_site.rate_limit_per_minute <> 0 and find_site.client_ip is not null then
    perform app_private.check_rate_limit(v_site, find_site.client_ip);
  end if;
  return v_site;
end;
$$;

-- A new session from its first event: the landing's attribution, or S3 when an S1/S2
-- session of the visitor started within the 90 days before. Built in one assignment.
create or replace function app_private.open_session(site_id uuid, visitor_key text, visitor_id text, event_id uuid, occurred_at timestamptz,
                                                    url text, referrer text, site_domain text) returns app_public.sessions
  language plpgsql stable
as $$
declare
  v_landing app_hidden.landing_attribution := app_hidden.classify_landing(open_session.url, open_session.referrer, open_session.site_domain);
  v_assist_id uuid;
  v_assist_click_id text;
  v_assist_click_id_type text;
  v_session app_public.sessions;
begin
  if v_landing.tier not in ('S1', 'S2') then
    select s.id, s.click_id, s.click_id_type into v_assist_id, v_assist_click_id, v_assist_click_id_type
      from app_public.sessions s
     where s.site_id = open_session.site_id and s.visitor_key = open_session.visitor_key
       and s.started_at >= open_session.occurred_at - interval '90 days'
       and s.started_at < open_session.occurred_at
       and s.attribution_tier in ('S1', 'S2')
     order by s.started_at desc, s.first_event_id desc  -- ties go to the later event in (ts, id) order
     limit 1;
  end if;
  v_session := row(
    open_session.site_id, app_private.session_id_for(open_session.site_id, open_session.event_id),
    open_session.occurred_at, open_session.occurred_at, open_session.event_id, open_session.event_id,
    open_session.visitor_key, open_session.visitor_id, 1, open_session.url, nullif(open_session.referrer, ''),
    case when v_assist_id is not null then 'S3' else v_landing.tier end,
    case when v_assist_id is not null then 'ads_assisted' else v_landing.source end,
    coalesce(v_landing.click_id, v_landing.landing_click_id),
    case when v_landing.click_id is not null then v_landing.click_id_type else v_landing.landing_click_id_type end,
    v_assist_click_id, v_assist_click_id_type, v_assist_id,
    v_landing.utm_source, v_landing.utm_medium, v_landing.utm_campaign)::app_public.sessions;
  return v_session;
end;
$$;
