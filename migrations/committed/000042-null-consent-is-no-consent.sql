--! Previous: sha1:31e5f2ebe1c331d41aefc191360ba58284880da6
--! Hash: sha1:a927f81cff52fca9ec81b5d77e73ef3babf5a07f
--! Message: null-consent-is-no-consent

--! split: 1-current.sql
/*
 * An event sent with "consent": null falls back to the visitor's recorded choice.
 *
 * SPEC section 8: the effective consent of an event is its own consent, else the visitor's
 * latest /api/consent record, else the site's default. Validation and effective_consent read a
 * JSON null consent as absent, but the look-up of the visitor's record tested for SQL NULL, which
 * `event -> 'consent'` is not when the field holds JSON null. So such an event skipped the
 * visitor's record and took the site's default: on an `implied` site, a visitor who had denied
 * analytics had the raw visitor id and device stored. Which of a visitor's events in one pass came
 * first also changed the outcome (the record, once looked up for another event, was applied).
 */
create or replace function app_private.store_events(site app_public.sites, batches jsonb, bots boolean[]) returns jsonb
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
  v_answers jsonb[] := '{}';
  v_batch integer;
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
    -- "consent": null is no consent given, as validation reads it: the visitor's recorded choice applies.
    if nullif(v_event.event -> 'consent', 'null'::jsonb) is null and not v_consents ? v_event.visitor_id then
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

  -- The answers, built without a query: a batch's rejections are sorted by index only when it
  -- has more than one (see the top of this migration).
  for v_batch in 1 .. v_batches loop
    if pg_catalog.jsonb_array_length(v_rejected[v_batch]) > 1 then
      v_rejected[v_batch] := (select pg_catalog.jsonb_agg(r order by (r ->> 'index')::int)
                                from pg_catalog.jsonb_array_elements(v_rejected[v_batch]) r);
    end if;
    v_answers[v_batch] := pg_catalog.jsonb_build_object('accepted', v_accepted[v_batch], 'duplicates', v_duplicates[v_batch],
                                                        'rejected', v_rejected[v_batch]);
  end loop;
  return pg_catalog.to_jsonb(v_answers);
end;
$$;
