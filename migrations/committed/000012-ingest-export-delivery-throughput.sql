--! Previous: sha1:edf178cde7f5ae855c1e7db6a31ac045fb438c69
--! Hash: sha1:71bed758f185b709a44489409052c308d1bb7189
--! Message: ingest-export-delivery-throughput

--! split: 1-current.sql
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

--! split: 2-delivery-throughput.sql
-- Delivery throughput (issue 5): the SQL around each 2,000-row upload batch.
--
-- Measured on a 200k-row queue (npm run bench -- oci, EXPLAIN ANALYZE, auto_explain of nested
-- statements, perf of the backend), per batch: the claim planned a sequential scan of the whole
-- queue (hash join back to the claimed rows) and a sort of every pending row of the site (the
-- due index cannot serve an OR of pending and expired rows), its cost estimate passed
-- jit_above_cost so every claim compiled JIT code (~15 ms); google_time was not inlined (a FROM
-- clause, and STRICT over a CASE) and ran through the SQL-function executor per row; and each
-- row's two updates (claim, outcome) fired the plpgsql updated_at trigger and wrote a new entry
-- into every index of the queue, destination_idx included. Backend CPU per batch (claim, shape,
-- record) went from ~100-115 ms to ~70-80 ms. What remains is mostly the two non-HOT updates of
-- each row (a heap tuple and an entry in the primary key, the unique key and one partial index,
-- each time: ~40%), the foreign-key check on destination_id when the claim first sets it
-- (~10%), and the joins that shape the payload (~15%).
-- Everything here is idempotent; functions keep their signatures, owners, comments and grants.

-- A plain expression PostgreSQL inlines into the calling query (no FROM clause; not STRICT, as
-- the CASE in the body is not strict; STABLE like to_char). Output unchanged, minutes of the
-- offset rounded as before.
create or replace function app_private.google_time(at timestamptz, zone text) returns text
  language sql stable
as $$
  select pg_catalog.to_char(at at time zone zone, 'YYYY-MM-DD HH24:MI:SS')
         || case when (at at time zone zone) < (at at time zone 'UTC') then '-' else '+' end
         || pg_catalog.to_char(pg_catalog.abs((extract(epoch from (at at time zone zone) - (at at time zone 'UTC')) / 60)::integer) / 60, 'FM00')
         || ':'
         || pg_catalog.to_char(pg_catalog.abs((extract(epoch from (at at time zone zone) - (at at time zone 'UTC')) / 60)::integer) % 60, 'FM00');
$$;

-- The claim in three steps, each with a plan that touches only what it takes: expired leases
-- first (the lease index; normally none), then due pending rows in claim order straight from
-- the partial due index (no sort, stops at the limit), then one update of exactly the rows
-- locked, by their ctid (a TID scan; this transaction holds their row locks, so no other can
-- move them before the update). Expired leases going first only matters when more than a batch
-- is due, and they are the rows that have waited longest. A retraction still waits while its
-- conversion is pending or in flight (one index probe, only for retractions). JIT is off: the
-- plans are a few index scans, and compiling them cost more than running them. updated_at is
-- set here as the trigger would, so the trigger's WHEN clause skips its plpgsql call per row.
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
  v_rows := array(
    select q.ctid from app_public.offline_conversion_queue q
     where q.provider = claim_offline_conversion_jobs.provider and q.status = 'processing' and q.locked_until < pg_catalog.now()
       and (claim_offline_conversion_jobs.site_id is null or q.site_id = claim_offline_conversion_jobs.site_id)
       -- A retraction waits while its conversion is in flight: Google must see them in order.
       and (q.kind = 'conversion'
            or coalesce((select c.status in ('pending', 'processing') from app_public.offline_conversion_queue c
                          where c.site_id = q.site_id and c.sale_id = q.sale_id and c.provider = q.provider
                            and c.kind = 'conversion'), false) is false)
     order by q.retry_at, q.created_at, q.id
     limit claim_offline_conversion_jobs."limit"
       for update skip locked);
  if pg_catalog.cardinality(v_rows) < claim_offline_conversion_jobs."limit" then
    if claim_offline_conversion_jobs.site_id is not null then
      v_rows := v_rows || array(
        select q.ctid from app_public.offline_conversion_queue q
         where q.site_id = claim_offline_conversion_jobs.site_id and q.status = 'pending' and q.retry_at <= pg_catalog.now()
           and q.provider = claim_offline_conversion_jobs.provider
           and (q.kind = 'conversion'
                or coalesce((select c.status in ('pending', 'processing') from app_public.offline_conversion_queue c
                              where c.site_id = q.site_id and c.sale_id = q.sale_id and c.provider = q.provider
                                and c.kind = 'conversion'), false) is false)
         order by q.retry_at, q.created_at, q.id
         limit claim_offline_conversion_jobs."limit" - pg_catalog.cardinality(v_rows)
           for update skip locked);
    else
      -- Every site at once (not the upload loop's way): the same rule, without the per-site index order.
      v_rows := v_rows || array(
        select q.ctid from app_public.offline_conversion_queue q
         where q.status = 'pending' and q.retry_at <= pg_catalog.now() and q.provider = claim_offline_conversion_jobs.provider
           and (q.kind = 'conversion'
                or coalesce((select c.status in ('pending', 'processing') from app_public.offline_conversion_queue c
                              where c.site_id = q.site_id and c.sale_id = q.sale_id and c.provider = q.provider
                                and c.kind = 'conversion'), false) is false)
         order by q.retry_at, q.created_at, q.id
         limit claim_offline_conversion_jobs."limit" - pg_catalog.cardinality(v_rows)
           for update skip locked);
    end if;
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

-- The payload rule, spelled once, over queue rows handed in whole (an array of rows), so that
-- the claim shapes the rows its update returned without reading them again by id (reading them
-- back, as conversion_payloads(ids) did inside the claim, cost ~20 ms of a 2,000-row batch).
-- Each row is joined to its sale, identifiers and call by key: LATERAL subqueries kept apart
-- (OFFSET 0), as plain joins were planned as a hash join over a sequential scan of all sales
-- (~3x the cost at 200k sales, and growing with them). Sessions (a lookup in every partition)
-- are looked at only for sales that have one. The time to send is computed in a subquery of its
-- own, so that google_time's argument is a plain column and the function inlines.
create or replace function app_private.shape_conversion_payloads(site_id uuid, queued app_public.offline_conversion_queue[])
  returns table (id uuid, kind text, order_id text, click_id text, click_id_type text, conversion_time text, adjustment_time text,
                 value text, currency text, email_sha256 text, phone_sha256 text, ad_user_data text, ad_personalization text,
                 conversion_at timestamptz, caller_id text, call_start_time text)
  language sql stable
  set search_path to pg_catalog, public, pg_temp
  set jit to off
as $$
  select q.id, q.kind, q.order_id, q.click_id, q.click_id_type,
         app_private.google_time(t.conversion_at, st.timezone),
         case when q.kind = 'retraction' then app_private.google_time(pg_catalog.now(), st.timezone) end,
         q.value::text, q.currency,
         case when q.ad_user_data = 'granted' then i.email_sha256 end,
         case when q.ad_user_data = 'granted' then i.phone_sha256 end,
         q.ad_user_data, q.ad_personalization, q.conversion_at,
         -- A call through a Google forwarding number is reported as a call conversion (caller
         -- number and call start; the number is user data, so only with ad_user_data granted).
         case when q.ad_user_data = 'granted' then c.caller end,
         case when q.ad_user_data = 'granted' then app_private.google_time(c.started_at, st.timezone) end
    from pg_catalog.unnest(shape_conversion_payloads.queued) q
    cross join (select st.timezone from app_public.sites st where st.id = shape_conversion_payloads.site_id) st
    cross join lateral (select s.session_id, s.call_id from app_public.sales s where s.site_id = q.site_id and s.id = q.sale_id offset 0) s
    left join lateral (select i.email_sha256, i.phone_sha256 from app_private.sale_identifiers i
                        where i.site_id = q.site_id and i.sale_id = q.sale_id offset 0) i on true
    left join lateral (select c.caller, c.started_at from app_public.calls c
                        where c.site_id = q.site_id and c.id = s.call_id and c.via_google_forwarding and c.caller is not null) c on true
    -- Never before the click: a second after the session that brought the sale began.
    cross join lateral (select case when s.session_id is null then q.conversion_at
                                    else greatest(q.conversion_at, (select min(se.started_at) + interval '1 second' from app_public.sessions se
                                                                     where se.site_id = q.site_id and se.id = s.session_id)) end as conversion_at
                         offset 0) t
   where q.site_id = shape_conversion_payloads.site_id;
$$;
comment on function app_private.shape_conversion_payloads(uuid, app_public.offline_conversion_queue[]) is
  E'Queue rows in the shape the rails send: time in the site''s zone (never before the click), identifiers and caller only with ad_user_data granted.';
revoke all on function app_private.shape_conversion_payloads(uuid, app_public.offline_conversion_queue[]) from public;

create or replace function app_private.conversion_payloads(site_id uuid, ids uuid[])
  returns table (id uuid, kind text, order_id text, click_id text, click_id_type text, conversion_time text, adjustment_time text,
                 value text, currency text, email_sha256 text, phone_sha256 text, ad_user_data text, ad_personalization text,
                 conversion_at timestamptz, caller_id text, call_start_time text)
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select p.* from app_private.shape_conversion_payloads(conversion_payloads.site_id, array(
    select q from app_public.offline_conversion_queue q
     where q.site_id = conversion_payloads.site_id and q.id = any (conversion_payloads.ids))) p;
$$;

create or replace function app_private.claim_conversion_payloads(site_id uuid, "limit" integer, worker text, lease_seconds integer, destination_id uuid)
  returns table (id uuid, kind text, order_id text, click_id text, click_id_type text, conversion_time text, adjustment_time text,
                 value text, currency text, email_sha256 text, phone_sha256 text, ad_user_data text, ad_personalization text,
                 conversion_at timestamptz, caller_id text, call_start_time text)
  language sql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
  select p.* from app_private.shape_conversion_payloads(claim_conversion_payloads.site_id, array(
    select j from app_private.claim_offline_conversion_jobs('google', claim_conversion_payloads."limit", claim_conversion_payloads.site_id,
                                                            claim_conversion_payloads.worker, claim_conversion_payloads.lease_seconds,
                                                            claim_conversion_payloads.destination_id) j)) p;
$$;

-- Same rules; updated_at set here as the trigger would (the trigger's WHEN clause then skips
-- it), JIT off, and the needless-retraction check only called when a conversion ended unsent.
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
       and q.status = 'processing' and q.locked_by = record_upload_outcomes.worker
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

-- The trigger keeps updated_at moving on every update; a statement that sets updated_at itself
-- (the claim and the outcomes above, to exactly the trigger's value) no longer pays a plpgsql
-- call per row: the WHEN clause is evaluated by the executor.
drop trigger if exists _100_touch_updated_at on app_public.offline_conversion_queue;
create trigger _100_touch_updated_at before update on app_public.offline_conversion_queue
  for each row when (new.updated_at is not distinct from old.updated_at) execute function app_private.tg__touch_updated_at();

-- Every status change rewrote an entry of destination_idx (site, destination, status) for every
-- row, twice per delivery. What read it: the destination's totals and the foreign key's ON
-- DELETE (a site's rows: the primary key's site_id prefix serves both), and the Data Manager
-- follow-up (unsettled requests, settling one, scheduling the next run) and the CSV export,
-- which only want rows in status sent: they get this much smaller index, which Google Ads rows
-- (accepted straight away) never enter.
create index if not exists offline_conversion_queue_sent_idx on app_public.offline_conversion_queue (site_id, request_id) include (sent_at)
  where status = 'sent';
drop index if exists app_public.offline_conversion_queue_destination_idx;

--! split: 3-dispute-export.sql
-- Dispute export and invoice digest: ledger_line inlines into the query that calls it.
--
-- ledger_line was declared IMMUTABLE, but its body calls to_char(timestamp, text), which is
-- only STABLE. PostgreSQL refuses to inline a SQL function whose body is more volatile than its
-- declaration, so every row of the dispute export (and of compute_ledger_digest, which
-- freeze_invoice runs) went through the SQL-function executor: about half of the export's
-- database time for a 1M-row month (EXPLAIN VERBOSE showed app_hidden.ledger_line(...) as a call;
-- inlined, the export's backend CPU went from ~3.0 s to ~1.5 s, and freezing that month from
-- 4.5 s to 2.3 s).
-- Declared STABLE, which is what it truly is, it inlines into the plain expression below: the
-- body is unchanged, so every line, and every ledger_digest, is byte for byte what it was.
-- Nothing needs it IMMUTABLE (no index, constraint or generated column uses it).
-- CREATE OR REPLACE keeps its owner, comment and grants (EXECUTE for the visitor role only).
create or replace function app_hidden.ledger_line(idempotency_key uuid, occurred_at timestamptz, billable boolean) returns text
  language sql stable strict parallel safe
as $$
  select idempotency_key::text || ',' || pg_catalog.to_char(occurred_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
         || ',' || billable::text;
$$;

-- Equal keys in one month (a retry more than 8 days from its first copy is a new event) go in
-- time order, so the digest and the export, which orders its rows the same way, never depend
-- on the order of rows on disk. The primary key makes (key, occurred_at) unique within a site.
create or replace function app_private.compute_ledger_digest(site_id uuid, period date) returns text
  language sql stable
as $$
  select pg_catalog.encode(public.digest(coalesce(pg_catalog.string_agg(
           app_hidden.ledger_line(l.idempotency_key, l.occurred_at, l.billable) || E'\n', ''
           order by l.idempotency_key::text collate "C", l.occurred_at), ''), 'sha256'), 'hex')
    from app_public.ingest_idempotency l
   where l.site_id = compute_ledger_digest.site_id
     and l.occurred_at >= (app_private.period_bounds(compute_ledger_digest.period)).starts_at
     and l.occurred_at < (app_private.period_bounds(compute_ledger_digest.period)).ends_at;
$$;
