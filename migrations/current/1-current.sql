--! Ingest plans that do not depend on table statistics.
--
-- Every statement of the tracker hot path finds rows by key. PL/pgSQL keeps each statement's
-- plan for the life of a pooled connection, and a plan made while a partition was still empty
-- (a fresh install, the first minutes of a month, or wherever autovacuum is off or behind)
-- reads that partition with a sequential scan, which gets slower with every event stored.
-- With sequential scans ruled out the planner always takes the key's index.
alter function app_private.record_consent(text, text, jsonb, text, text, text[]) set enable_seqscan = off;

--! Event validation as one SQL expression.
--
-- A PL/pgSQL function sets up every one of its expressions again in each transaction, which
-- for a one-event request cost more than the checks themselves. As a SQL table function of a
-- single SELECT, this one is inlined into the query ingest_events loops over: one expression,
-- the first failing check giving the event's error code and message.
drop function if exists app_private.event_problem(jsonb, app_public.sites, timestamptz);
create function app_private.event_problem(event jsonb, site app_public.sites, now timestamptz)
  returns table (code text, message text, occurred_at timestamptz)
  language sql stable
as $$
  -- OFFSET 0 keeps each sub-select from being merged into its caller, which would repeat
  -- the time parsing and the CASE for every reference to their results.
  select pg_catalog.split_part(p.problem, '|', 1), pg_catalog.split_part(p.problem, '|', 2),
         case when p.problem is null then p.ts end
    from (select t.ts, case
      when pg_catalog.jsonb_typeof(event) is distinct from 'object'
        then 'invalid_event|An event must be a JSON object with valid strings.'
      when pg_catalog.jsonb_typeof(event -> 'id') is distinct from 'string'
           or event ->> 'id' !~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
        then 'invalid_event|id must be a UUID.'
      when pg_catalog.jsonb_typeof(event -> 'type') is distinct from 'string' or event ->> 'type' !~ '^[a-z][a-z0-9_]{0,39}$'
        then 'invalid_event|type must match ^[a-z][a-z0-9_]{0,39}$.'
      when pg_catalog.jsonb_typeof(event -> 'visitor_id') is distinct from 'string' or event ->> 'visitor_id' !~ '^[A-Za-z0-9_-]{1,64}$'
        then 'invalid_event|visitor_id must be 1 to 64 letters, digits, _ or -.'
      when t.ts is null
        then 'invalid_ts|ts must be an ISO-8601 time with a zone.'
      when t.ts < now - interval '7 days' or t.ts > now + interval '5 minutes'
        then 'invalid_ts|ts must lie between 7 days ago and 5 minutes from now.'
      when t.has_url and (pg_catalog.jsonb_typeof(event -> 'url') <> 'string' or pg_catalog.length(event ->> 'url') > 2048
                          or event ->> 'url' !~* '^https?://[^\s/?#]+([/?#][^\s]*)?$')
        then 'invalid_event|url must be an absolute http(s) URL of at most 2048 characters.'
      when t.has_url and not coalesce(app_hidden.host_is_on(app_hidden.url_host(event ->> 'url'), site.domain), false)
        then 'url_not_on_site|url is not on the site''s domain.'
      when not t.has_url and event ->> 'type' = 'pageview'
        then 'invalid_event|A pageview needs a url.'
      when event ? 'referrer' and pg_catalog.jsonb_typeof(event -> 'referrer') <> 'null' and event ->> 'referrer' <> ''
           and (pg_catalog.jsonb_typeof(event -> 'referrer') <> 'string' or pg_catalog.length(event ->> 'referrer') > 2048
                or event ->> 'referrer' !~* '^https?://[^\s/?#]+([/?#][^\s]*)?$')
        then 'invalid_event|referrer must be an absolute http(s) URL or empty.'
      when event ? 'title' and pg_catalog.jsonb_typeof(event -> 'title') <> 'null'
           and (pg_catalog.jsonb_typeof(event -> 'title') <> 'string' or pg_catalog.length(event ->> 'title') > 1000)
        then 'invalid_event|title must be a string of at most 1000 characters.'
      when event ? 'props' and pg_catalog.jsonb_typeof(event -> 'props') <> 'null'
           and (pg_catalog.jsonb_typeof(event -> 'props') <> 'object' or pg_catalog.octet_length((event -> 'props')::text) > 4096
                or pg_catalog.jsonb_path_exists(event -> 'props', 'strict $.**{4 to last}'))
        then 'invalid_event|props must be an object of at most 4 KiB, nested at most 3 levels.'
      when event ? 'consent' and pg_catalog.jsonb_typeof(event -> 'consent') <> 'null' and not app_private.valid_consent(event -> 'consent')
        then 'invalid_event|consent must map Consent Mode signals to granted or denied.'
      when event ? 'device' and pg_catalog.jsonb_typeof(event -> 'device') <> 'null'
           and (pg_catalog.jsonb_typeof(event -> 'device') <> 'object' or pg_catalog.octet_length((event -> 'device')::text) > 1024
                or pg_catalog.jsonb_path_exists(event -> 'device', 'strict $.* ? (@.type() != "string")'))
        then 'invalid_event|device must be an object of strings of at most 1 KiB.'
    end as problem
    from (select case when pg_catalog.jsonb_typeof(event -> 'ts') = 'string' then app_hidden.parse_timestamptz(event ->> 'ts') end as ts,
                 event ? 'url' and pg_catalog.jsonb_typeof(event -> 'url') <> 'null' as has_url
          offset 0) t
    offset 0) p;
$$;
comment on function app_private.event_problem(jsonb, app_public.sites, timestamptz) is
  'Validates one tracker event (SPEC §5.1): an event-level error code and message, or for a valid event nulls and its parsed time.';
revoke all on function app_private.event_problem(jsonb, app_public.sites, timestamptz) from public;

--! Time parsing as one SQL expression.
--
-- The same checks as before (000011), as a SQL function that its callers inline instead of a
-- PL/pgSQL call per event. STABLE, like the text-to-timestamptz cast inside it: a function
-- declared IMMUTABLE around a STABLE expression is never inlined.
create or replace function app_hidden.parse_timestamptz(value text) returns timestamptz
  language sql stable parallel safe
as $$
  select case
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
$$;

--! The tracker endpoint: validation, sorting and visitor locks in the loop's own query.
--
-- Valid events are no longer collected into a JSON array and read back; the loop's query
-- validates and sorts them, and each visitor's lock is taken as the loop reaches it (the
-- order is the same for every request, by visitor id, so two requests cannot deadlock).
create or replace function app_private.ingest_events(public_key text, events jsonb, origin text, client_ip text, user_agent text,
                                                     global_origins text[] default '{}') returns jsonb
  language plpgsql security definer
  set search_path to pg_catalog, public, pg_temp
  set enable_seqscan to off  -- see the note at the top of this migration
as $$
declare
  v_site app_public.sites;
  v_now timestamptz := pg_catalog.now();
  v_is_bot boolean;
  v_salt bytea;
  v_rejected jsonb := '[]';
  v_locked_visitor text;  -- the visitor whose lock was taken last
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

  -- One query validates every event and sorts the valid ones by visitor and time; each visitor
  -- is locked when the loop reaches its first event, so every request locks in the same order.
  for v_event in
    select e.ordinal - 1 as ordinal, e.value as event, p.code, p.message,
           case when p.code is null then (e.value ->> 'id')::uuid end as id, p.occurred_at,
           e.value ->> 'visitor_id' as visitor_id, e.value ->> 'type' as type, e.value ->> 'url' as url,
           nullif(e.value ->> 'referrer', '') as referrer
      from pg_catalog.jsonb_array_elements(ingest_events.events) with ordinality as e(value, ordinal)
           cross join lateral app_private.event_problem(e.value, v_site, v_now) p
     order by p.code is not null, 7, 6, 5
  loop
    if v_event.code is not null then
      v_rejected := v_rejected || pg_catalog.jsonb_build_object('index', v_event.ordinal, 'error', v_event.code, 'message', v_event.message);
      continue;
    end if;
    if v_event.visitor_id is distinct from v_locked_visitor then
      perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended(v_site.id::text || '/' || v_event.visitor_id, 0));
      v_locked_visitor := v_event.visitor_id;
    end if;

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
