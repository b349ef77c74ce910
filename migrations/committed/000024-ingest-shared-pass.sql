--! Previous: sha1:44bef9d525a984352da3d54dca5ceb601b9e91da
--! Hash: sha1:c10c8a5444bde7998950a036f704fe7bf85f7c1a
--! Message: ingest-shared-pass

--! split: 1-current.sql
/*
 * A group's requests for one site share one pass over their events.
 *
 * 000023 ran a group's requests one after the other, each a whole ingest_events call in its own
 * subtransaction. Measured with pgbench on the benchmark's database, ten one-event requests
 * that way cost about twice what one ten-event request does: the request itself (validating its
 * events, writing them, building its answer) costs as much as an event's work. So the work is
 * split in two:
 *
 *   admit_request   the request-level checks (site key, origin, rate limit, envelope, bot user
 *                   agent); raises as before, so a refused request writes nothing;
 *   store_events    validation, ledger, quota, consent, sessions and events for one site's
 *                   batches of events at once, answering per batch.
 *
 * ingest_events (one request) is admit_request + store_events of one batch, as before.
 * ingest_requests (a group) admits each request in its own subtransaction, then stores each
 * site's admitted batches in one pass. If anything in that raises, everything the group did is
 * rolled back and each request runs alone through ingest_events in its own subtransaction, so
 * one failing request is still refused alone, with nothing of it stored.
 */

drop function if exists app_private.ingest_requests(jsonb, text[]);
drop function if exists app_private.ingest_events(text, jsonb, text, text, text, text[]);
drop function if exists app_private.store_events(app_public.sites, jsonb, boolean[]);
drop function if exists app_private.admit_request(text, jsonb, text, text, text, text[]);

create function app_private.admit_request(public_key text, events jsonb, origin text, client_ip text, user_agent text,
                                          global_origins text[], out site app_public.sites, out is_bot boolean)
  language plpgsql security definer
  set search_path to pg_catalog, public, pg_temp
  set enable_seqscan to off
as $$
begin
  site := app_private.find_site(admit_request.public_key, admit_request.origin, admit_request.global_origins, admit_request.client_ip);
  if pg_catalog.jsonb_typeof(admit_request.events) is distinct from 'array'
     or pg_catalog.jsonb_array_length(admit_request.events) not between 1 and 100 then
    raise exception using errcode = 'OMENV', message = 'events must be an array of 1 to 100 events.';
  end if;
  is_bot := exists (select 1 from app_private.bot_user_agents b
                     where pg_catalog.strpos(pg_catalog.lower(coalesce(admit_request.user_agent, '')), b.pattern) > 0);
end;
$$;
comment on function app_private.admit_request(text, jsonb, text, text, text, text[]) is
  E'The request-level checks of POST /api/sync: the site of the key, its origin, the rate limit, the envelope, and whether the user agent is a bot. Raises OMUSK, OMORG, OM429 or OMENV.';

create function app_private.store_events(site app_public.sites, batches jsonb, bots boolean[]) returns jsonb
  language plpgsql security definer
  set search_path to pg_catalog, public, pg_temp
  set enable_seqscan to off  -- every statement here is a key look-up; see 000012
as $$
declare
  v_site app_public.sites := store_events.site;
  v_now timestamptz := pg_catalog.now();
  v_batches integer := pg_catalog.jsonb_array_length(store_events.batches);
  v_is_bot boolean;
  v_salt bytea;
  -- Per batch (1-based): what its answer will say.
  v_accepted integer[] := pg_catalog.array_fill(0, array[v_batches]);
  v_duplicates integer[] := pg_catalog.array_fill(0, array[v_batches]);
  v_rejected jsonb[] := pg_catalog.array_fill('[]'::jsonb, array[v_batches]);
  v_locked_visitor text;  -- the visitor whose lock was taken last
  v_event record;
  v_consent jsonb;
  v_consents jsonb := '{}';
  v_granted boolean;
  v_visitor_key text;
  v_period date;
  v_open_period date;  -- the last period found open (and share-locked) in this call
  v_billable boolean;
  v_inserted boolean;
  v_session_id uuid;
  v_rebuild_since timestamptz;
  v_rebuild_since_event_id uuid;
  -- The session being extended or opened, held while the loop stays on its visitor key, and
  -- its state for store_session: 'stored', 'changed' or 'new'.
  v_session app_public.sessions;
  v_session_state text;
  -- Accepted events not yet written: one INSERT writes them all.
  v_pending app_public.events[] := '{}';
begin
  -- One query validates every event of every batch and sorts the valid ones by visitor and
  -- time; each visitor is locked when the loop reaches its first event, so every call locks in
  -- the same order.
  for v_event in
    select e.ordinal - 1 as ordinal, e.value as event, p.code, p.message,
           case when p.code is null then (e.value ->> 'id')::uuid end as id, p.occurred_at,
           e.value ->> 'visitor_id' as visitor_id, e.value ->> 'type' as type, e.value ->> 'url' as url,
           nullif(e.value ->> 'referrer', '') as referrer, b.ordinal::integer as batch
      from pg_catalog.jsonb_array_elements(store_events.batches) with ordinality as b(events, ordinal)
           cross join lateral pg_catalog.jsonb_array_elements(b.events) with ordinality as e(value, ordinal)
           cross join lateral app_private.event_problem(e.value, v_site, v_now) p
     order by p.code is not null, 7, 6, 5
  loop
    if v_event.code is not null then
      v_rejected[v_event.batch] := v_rejected[v_event.batch]
        || pg_catalog.jsonb_build_object('index', v_event.ordinal, 'error', v_event.code, 'message', v_event.message);
      continue;
    end if;
    v_is_bot := store_events.bots[v_event.batch];
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
          v_duplicates[v_event.batch] := v_duplicates[v_event.batch] + 1;  -- a retry of an event the invoice already counts
        else
          v_rejected[v_event.batch] := v_rejected[v_event.batch]
            || pg_catalog.jsonb_build_object('index', v_event.ordinal, 'error', 'period_closed', 'message', 'The invoice for this month is frozen.');
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
    insert into app_public.ingest_idempotency (site_id, idempotency_key, occurred_at, received_at, billable, reason)
    select v_site.id, v_event.id, v_event.occurred_at, v_now, v_billable, case when v_is_bot then 'bot' end
     where not exists (select 1 from app_public.ingest_idempotency l
                        where l.site_id = v_site.id and l.idempotency_key = v_event.id
                          and l.occurred_at between v_event.occurred_at - interval '8 days' and v_event.occurred_at + interval '8 days')
    on conflict do nothing
    returning true into v_inserted;
    if v_inserted is null then
      v_duplicates[v_event.batch] := v_duplicates[v_event.batch] + 1;
      continue;
    end if;
    if v_billable and v_site.monthly_event_quota is not null and not app_private.take_quota(v_site, v_period) then
      delete from app_public.ingest_idempotency l
       where l.site_id = v_site.id and l.idempotency_key = v_event.id and l.occurred_at = v_event.occurred_at;
      v_rejected[v_event.batch] := v_rejected[v_event.batch]
        || pg_catalog.jsonb_build_object('index', v_event.ordinal, 'error', 'quota_exceeded', 'message', 'The site''s monthly event quota is used up.');
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
    v_accepted[v_event.batch] := v_accepted[v_event.batch] + 1;
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

  return (select pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('accepted', v_accepted[i], 'duplicates', v_duplicates[i],
            'rejected', (select coalesce(pg_catalog.jsonb_agg(r order by (r ->> 'index')::int), '[]') from pg_catalog.jsonb_array_elements(v_rejected[i]) r))
            order by i)
            from pg_catalog.generate_series(1, v_batches) i);
end;
$$;
comment on function app_private.store_events(app_public.sites, jsonb, boolean[]) is
  E'Stores admitted tracker events of one site: batches is an array of event arrays (one per request), bots says per batch whether its user agent is a bot. Validation, ledger, quota, consent, sessions and events in one pass sorted by visitor; returns one {accepted, duplicates, rejected[]} per batch, in order.';

create function app_private.ingest_events(public_key text, events jsonb, origin text, client_ip text, user_agent text,
                                          global_origins text[] default '{}') returns jsonb
  language plpgsql security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_admitted record;
begin
  v_admitted := app_private.admit_request(ingest_events.public_key, ingest_events.events, ingest_events.origin,
                                          ingest_events.client_ip, ingest_events.user_agent, ingest_events.global_origins);
  return app_private.store_events(v_admitted.site, pg_catalog.jsonb_build_array(ingest_events.events), array[v_admitted.is_bot]) -> 0;
end;
$$;
comment on function app_private.ingest_events(text, jsonb, text, text, text, text[]) is
  E'POST /api/sync in one call: returns {accepted, duplicates, rejected[]}; raises OMUSK, OMORG, OM429 or OMENV for the whole request.';
grant execute on function app_private.ingest_events(text, jsonb, text, text, text, text[]) to :DATABASE_AUTHENTICATOR;

create function app_private.ingest_requests(requests jsonb, global_origins text[] default '{}')
returns jsonb
language plpgsql
security definer
set search_path = pg_catalog, public, pg_temp
as $$
declare
  v_count integer;
  v_outcomes jsonb[];
  v_request jsonb;
  v_index integer;
  v_admitted record;
  -- Per admitted request, in order: its site, the site's id, its index in the group, bot or not.
  v_sites app_public.sites[] := '{}';
  v_site_ids uuid[] := '{}';
  v_indexes integer[] := '{}';
  v_bots boolean[] := '{}';
  v_site_id uuid;
  v_batches jsonb;
  v_batch_indexes integer[];
  v_batch_bots boolean[];
  v_results jsonb;
  v_state text;
  v_detail text;
  v_message text;
begin
  if pg_catalog.jsonb_typeof(requests) is distinct from 'array' then
    raise exception using errcode = 'OMENV', message = 'requests must be an array.';
  end if;
  v_count := pg_catalog.jsonb_array_length(requests);
  v_outcomes := pg_catalog.array_fill(null::jsonb, array[v_count]);

  begin
    -- Admit each request on its own: a refusal rolls back only that request's checks.
    for v_index in 1 .. v_count loop
      v_request := requests -> (v_index - 1);
      begin
        v_admitted := app_private.admit_request(v_request ->> 'site', v_request -> 'events', v_request ->> 'origin',
                                                v_request ->> 'client_ip', v_request ->> 'user_agent', global_origins);
        v_sites := v_sites || v_admitted.site;
        v_site_ids := v_site_ids || (v_admitted.site).id;
        v_indexes := v_indexes || v_index;
        v_bots := v_bots || v_admitted.is_bot;
      exception when others then
        get stacked diagnostics v_state = returned_sqlstate, v_detail = pg_exception_detail, v_message = message_text;
        v_outcomes[v_index] := pg_catalog.jsonb_build_object('code', v_state, 'detail', v_detail, 'message', v_message);
      end;
    end loop;
    -- Then one pass per site, sites in id order (the same order in every group).
    for v_site_id in select distinct s from pg_catalog.unnest(v_site_ids) s order by 1 loop
      select pg_catalog.jsonb_agg(requests -> (a.i - 1) -> 'events' order by a.i), pg_catalog.array_agg(a.i order by a.i),
             pg_catalog.array_agg(a.bot order by a.i)
        into v_batches, v_batch_indexes, v_batch_bots
        from unnest(v_site_ids, v_indexes, v_bots) a(site_id, i, bot)  -- multi-array unnest: FROM syntax, not a pg_catalog function
       where a.site_id = v_site_id;
      v_results := app_private.store_events(v_sites[pg_catalog.array_position(v_site_ids, v_site_id)], v_batches, v_batch_bots);
      for v_index in 1 .. pg_catalog.cardinality(v_batch_indexes) loop
        v_outcomes[v_batch_indexes[v_index]] := pg_catalog.jsonb_build_object('result', v_results -> (v_index - 1));
      end loop;
    end loop;
    return pg_catalog.to_jsonb(v_outcomes);
  exception when others then
    -- Something in the shared pass failed: it is all rolled back. Below, each request runs
    -- alone, so the failure stays with the request that causes it.
    null;
  end;

  for v_index in 1 .. v_count loop
    v_request := requests -> (v_index - 1);
    begin
      v_outcomes[v_index] := pg_catalog.jsonb_build_object('result',
        app_private.ingest_events(v_request ->> 'site', v_request -> 'events', v_request ->> 'origin',
                                  v_request ->> 'client_ip', v_request ->> 'user_agent', global_origins));
    exception when others then
      get stacked diagnostics v_state = returned_sqlstate, v_detail = pg_exception_detail, v_message = message_text;
      v_outcomes[v_index] := pg_catalog.jsonb_build_object('code', v_state, 'detail', v_detail, 'message', v_message);
    end;
  end loop;
  return pg_catalog.to_jsonb(v_outcomes);
end;
$$;
comment on function app_private.ingest_requests(jsonb, text[]) is
  E'POST /api/sync under load: several requests ({site, events, origin, client_ip, user_agent}) in one transaction. Each is admitted on its own; each site''s admitted requests are stored in one pass; if that raises, each request runs alone in its own subtransaction. Returns one outcome per request, in order: {result} or {code, detail, message} for a request that was refused and left nothing.';
revoke all on function app_private.ingest_requests(jsonb, text[]) from public;
grant execute on function app_private.ingest_requests(jsonb, text[]) to :DATABASE_AUTHENTICATOR;
