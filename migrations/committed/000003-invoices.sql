--! Previous: sha1:8f0b6abfd95e77402b5a26aa0285e0504716da68
--! Hash: sha1:e1b0f985ac5cec18a873d24addfc02955cde49e7
--! Message: invoices

--! split: 1-invoices.sql
/*
 * The revenue kernel. The idempotency ledger is the only source of billing truth; an invoice
 * is its frozen summary. Once a period's late-arrival window has closed (8 days after the
 * month ends: events may be 7 days late), freeze_invoice writes an immutable snapshot with
 * ledger_digest = SHA-256 of the period's ledger lines (SPEC §9), which the tenant can
 * recompute from the dispute export. Later events for a frozen period are refused.
 */
/* A billing period is a UTC calendar month, named by its first day. */
create function app_private.period_start(period date) returns date
  language plpgsql immutable strict
as $$
begin
  if period <> pg_catalog.date_trunc('month', period)::date then
    raise exception using errcode = 'OMPER', message = 'A billing period is named by the first day of its month (YYYY-MM-01).';
  end if;
  return period;
end;
$$;
comment on function app_private.period_start(date) is E'Checks that a date names a billing period (the first of a month); raises OMPER otherwise.';

/* A period's bounds as instants: UTC midnight to UTC midnight, whatever the session's time zone. */
create function app_private.period_bounds(period date, out starts_at timestamptz, out ends_at timestamptz)
  language sql immutable strict parallel safe
as $$
  select period::timestamp at time zone 'UTC', (period + interval '1 month') at time zone 'UTC';
$$;
comment on function app_private.period_bounds(date) is E'The first and the first-after-last instants of a billing period, in UTC.';

create table app_public.invoice_snapshots (
  -- Invoices outlive nothing silently: a site with frozen invoices cannot be deleted.
  site_id uuid not null constraint invoice_snapshots_site_id_fkey references app_public.sites on delete restrict,
  period date not null constraint invoice_snapshots_period_is_month check (period = date_trunc('month', period)::date),
  frozen_at timestamptz not null default now(),
  billable_events bigint not null,
  non_billable_events bigint not null,
  ledger_digest text not null constraint invoice_snapshots_digest_format check (ledger_digest ~ '^[0-9a-f]{64}$'),
  frozen_by text not null,
  primary key (site_id, period)
);
comment on table app_public.invoice_snapshots is
  E'Frozen monthly invoices: immutable once written (updates, deletes and truncates are refused for every role).';
comment on column app_public.invoice_snapshots.site_id is E'The site invoiced.';
comment on column app_public.invoice_snapshots.period is E'The UTC calendar month, as its first day.';
comment on column app_public.invoice_snapshots.frozen_at is E'When the invoice was frozen.';
comment on column app_public.invoice_snapshots.billable_events is E'Billable ledger rows of the period: the amount invoiced.';
comment on column app_public.invoice_snapshots.non_billable_events is E'Ledger rows stored but not billed (bots).';
comment on column app_public.invoice_snapshots.ledger_digest is
  E'Lower-case hex SHA-256 of the lines "<idempotency key>,<occurred_at as YYYY-MM-DDTHH:MM:SS.mmmZ>,<true|false>\\n" of every ledger row of the period, ordered by key (bytewise). Recompute it from the dispute export.';
comment on column app_public.invoice_snapshots.frozen_by is E'Who froze it: the worker''s schedule, a user, or a database role.';
alter table app_public.invoice_snapshots enable row level security;
create policy select_admin on app_public.invoice_snapshots for select
  using (site_id in (select app_hidden.current_user_site_ids('admin')));
grant select on app_public.invoice_snapshots to :DATABASE_VISITOR;
create trigger _100_immutable before update or delete on app_public.invoice_snapshots
  for each row execute function app_private.tg__refuse_change();
create trigger _100_immutable_truncate before truncate on app_public.invoice_snapshots
  for each statement execute function app_private.tg__refuse_change();
create trigger _500_audit after insert on app_public.invoice_snapshots
  for each row execute function app_private.tg__audit('site_id', 'period');

/* Billing reads: admins and owners of the site, or a DBA / the worker connecting as itself. */
create function app_private.assert_billing_access(site_id uuid, action text) returns void
  language plpgsql stable
as $$
begin
  if pg_catalog.current_setting('role', true) = ':DATABASE_VISITOR' then
    perform app_hidden.assert_site_role(assert_billing_access.site_id, 'admin', assert_billing_access.action, 'invoice_snapshots',
                                        assert_billing_access.site_id::text);
  end if;
end;
$$;
comment on function app_private.assert_billing_access(uuid, text) is
  E'Raises OM403 for a request (visitor role) that is not admin or owner of the site; direct SQL is not limited.';

create function app_hidden.ledger_line(idempotency_key uuid, occurred_at timestamptz, billable boolean) returns text
  language sql immutable strict parallel safe
as $$
  select idempotency_key::text || ',' || pg_catalog.to_char(occurred_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
         || ',' || billable::text;
$$;
comment on function app_hidden.ledger_line(uuid, timestamptz, boolean) is
  E'One ledger row as the digest and the dispute export write it: key,occurred_at,billable (no newline). In app_hidden because the export runs as the visitor role.';

/*
 * SHA-256 over the period's ledger lines, ordered by key bytewise (collation "C"). The lines
 * are hashed as one text, so a site-month is limited to what one text value holds (about
 * 14 million rows); the dispute export streams the same lines.
 */
create function app_private.compute_ledger_digest(site_id uuid, period date) returns text
  language sql stable
as $$
  select pg_catalog.encode(public.digest(coalesce(pg_catalog.string_agg(
           app_hidden.ledger_line(l.idempotency_key, l.occurred_at, l.billable) || E'\n', ''
           order by l.idempotency_key::text collate "C"), ''), 'sha256'), 'hex')
    from app_public.ingest_idempotency l
   where l.site_id = compute_ledger_digest.site_id
     and l.occurred_at >= (app_private.period_bounds(compute_ledger_digest.period)).starts_at
     and l.occurred_at < (app_private.period_bounds(compute_ledger_digest.period)).ends_at;
$$;
comment on function app_private.compute_ledger_digest(uuid, date) is E'The SPEC §9 digest of a site''s ledger for a period, computed now.';

create type app_public.billing_reconciliation_result as (
  site_id uuid,
  period date,
  ledger_billable bigint,
  ledger_non_billable bigint,
  events_stored bigint,
  frozen boolean,
  snapshot_billable bigint,
  snapshot_digest text,
  ledger_digest text,
  drift text[]
);
comment on type app_public.billing_reconciliation_result is
  E'Ledger vs events vs frozen snapshot for one site and month; drift names every disagreement (empty when all agree).';

create function app_public.billing_reconciliation(site_id uuid, period date) returns app_public.billing_reconciliation_result
  language plpgsql stable strict security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  r app_public.billing_reconciliation_result;
  v_snapshot app_public.invoice_snapshots;
  v_bounds record;
begin
  perform app_private.assert_billing_access(billing_reconciliation.site_id, 'reconcile');
  r.site_id := billing_reconciliation.site_id;
  r.period := app_private.period_start(billing_reconciliation.period);
  v_bounds := app_private.period_bounds(r.period);
  r.drift := '{}';
  select pg_catalog.count(*) filter (where l.billable), pg_catalog.count(*) filter (where not l.billable)
    into r.ledger_billable, r.ledger_non_billable
    from app_public.ingest_idempotency l
   where l.site_id = r.site_id and l.occurred_at >= v_bounds.starts_at and l.occurred_at < v_bounds.ends_at;
  select pg_catalog.count(*) into r.events_stored
    from app_public.events e
   where e.site_id = r.site_id and e.occurred_at >= v_bounds.starts_at and e.occurred_at < v_bounds.ends_at;
  if r.events_stored <> r.ledger_billable + r.ledger_non_billable then
    r.drift := r.drift || pg_catalog.format('events: %s stored, but the ledger has %s rows', r.events_stored,
                                            r.ledger_billable + r.ledger_non_billable);
  end if;
  select * into v_snapshot from app_public.invoice_snapshots s where s.site_id = r.site_id and s.period = r.period;
  r.frozen := v_snapshot.site_id is not null;
  if r.frozen then
    r.snapshot_billable := v_snapshot.billable_events;
    r.snapshot_digest := v_snapshot.ledger_digest;
    r.ledger_digest := app_private.compute_ledger_digest(r.site_id, r.period);
    if v_snapshot.billable_events <> r.ledger_billable then
      r.drift := r.drift || pg_catalog.format('snapshot: %s billable events invoiced, the ledger now has %s',
                                              v_snapshot.billable_events, r.ledger_billable);
    end if;
    if v_snapshot.ledger_digest <> r.ledger_digest then
      r.drift := r.drift || 'snapshot: the ledger no longer hashes to the frozen digest'::text;
    end if;
  end if;
  return r;
end;
$$;
comment on function app_public.billing_reconciliation(uuid, date) is
  E'Compares a site''s ledger (billable, non-billable), stored events and frozen snapshot for a month (admins, owners, DBAs) and names any drift.';

/*
 * Idempotent: a frozen period returns its snapshot unchanged. Refused (OMGRC) before the
 * grace has passed: 8 days after the month's end, when no late event can still arrive.
 * The exclusive advisory lock waits for in-flight ingestion of the period, which holds it shared.
 */
create function app_public.freeze_invoice(site_id uuid, period date) returns app_public.invoice_snapshots
  language plpgsql volatile strict security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_period date := app_private.period_start(freeze_invoice.period);
  v_snapshot app_public.invoice_snapshots;
begin
  perform app_private.assert_billing_access(freeze_invoice.site_id, 'freeze');
  if not exists (select 1 from app_public.sites s where s.id = freeze_invoice.site_id) then
    raise exception using errcode = 'OMNSS', message = 'No such site.';
  end if;
  if pg_catalog.now() < (app_private.period_bounds(v_period)).ends_at + interval '8 days' then
    raise exception using errcode = 'OMGRC', message = 'The period cannot be frozen before 8 days after its end.';
  end if;
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('invoice/' || freeze_invoice.site_id::text || '/' || v_period::text, 0));
  select * into v_snapshot from app_public.invoice_snapshots s where s.site_id = freeze_invoice.site_id and s.period = v_period;
  if v_snapshot.site_id is not null then
    return v_snapshot;
  end if;
  insert into app_public.invoice_snapshots (site_id, period, billable_events, non_billable_events, ledger_digest, frozen_by)
  select freeze_invoice.site_id, v_period,
         pg_catalog.count(*) filter (where l.billable), pg_catalog.count(*) filter (where not l.billable),
         app_private.compute_ledger_digest(freeze_invoice.site_id, v_period),
         coalesce('user:' || app_hidden.current_user_id()::text, 'api_key:' || app_hidden.current_api_key_id()::text,
                  nullif(pg_catalog.current_setting('app.frozen_by', true), ''), 'db:' || session_user)
    from app_public.ingest_idempotency l
   where l.site_id = freeze_invoice.site_id
     and l.occurred_at >= (app_private.period_bounds(v_period)).starts_at and l.occurred_at < (app_private.period_bounds(v_period)).ends_at
  returning * into v_snapshot;
  return v_snapshot;
end;
$$;
comment on function app_public.freeze_invoice(uuid, date) is
  E'Freezes a site''s invoice for a month into an immutable snapshot with its ledger digest; returns the existing snapshot when already frozen.';

/* The daily schedule: every site-month with ledger rows whose grace has passed gets frozen. */
create function app_private.freeze_due_invoices(now timestamptz default pg_catalog.now()) returns integer
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_due record;
  v_count integer := 0;
begin
  perform pg_catalog.set_config('app.frozen_by', 'schedule', true);
  for v_due in
    select distinct l.site_id, pg_catalog.date_trunc('month', l.occurred_at at time zone 'UTC')::date as period
      from app_public.ingest_idempotency l
     -- Never ahead of the real clock: freeze_invoice would refuse those periods anyway.
     where l.occurred_at < pg_catalog.date_trunc('month', (least(freeze_due_invoices.now, pg_catalog.now()) - interval '8 days') at time zone 'UTC') at time zone 'UTC'
       and not exists (select 1 from app_public.invoice_snapshots s
                        where s.site_id = l.site_id
                          and s.period = pg_catalog.date_trunc('month', l.occurred_at at time zone 'UTC')::date)
  loop
    perform app_public.freeze_invoice(v_due.site_id, v_due.period);
    v_count := v_count + 1;
  end loop;
  return v_count;
end;
$$;
comment on function app_private.freeze_due_invoices(timestamptz) is E'Freezes every unfrozen site-month whose grace has passed; returns how many.';

/*
 * Ledger partitions are dropped only when the month ended more than `retention_days` ago
 * (at least 90) and every site with rows in it has a frozen invoice for it. Returns the
 * partitions dropped.
 */
create function app_private.drop_expired_ledger_partitions(retention_days integer default 90) returns text[]
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_partition record;
  v_dropped text[] := '{}';
  v_unfrozen boolean;
begin
  if retention_days is null or retention_days < 90 then
    raise exception using errcode = 'OMRET', message = 'Ledger retention must be at least 90 days.';
  end if;
  for v_partition in
    select c.oid::regclass::text as relation,
           (pg_catalog.regexp_match(pg_catalog.pg_get_expr(c.relpartbound, c.oid), 'FROM \(''([^'']+)''\) TO \(''([^'']+)''\)')) as bounds
      from pg_catalog.pg_inherits i join pg_catalog.pg_class c on c.oid = i.inhrelid
     where i.inhparent = 'app_public.ingest_idempotency'::regclass and not c.relname like '%\_default'
  loop
    continue when v_partition.bounds is null or v_partition.bounds[2]::timestamptz + pg_catalog.make_interval(days => retention_days) > pg_catalog.now();
    execute pg_catalog.format(
      'select exists (select 1 from %s l where not exists (select 1 from app_public.invoice_snapshots s
                       where s.site_id = l.site_id and s.period = pg_catalog.date_trunc(''month'', l.occurred_at at time zone ''UTC'')::date))',
      v_partition.relation) into v_unfrozen;
    continue when v_unfrozen;
    execute pg_catalog.format('drop table %s', v_partition.relation);
    v_dropped := v_dropped || v_partition.relation;
  end loop;
  return v_dropped;
end;
$$;
comment on function app_private.drop_expired_ledger_partitions(integer) is
  E'Drops ledger partitions past retention (at least 90 days) whose every site-month is frozen; never an unfrozen month.';

--! split: 2-ingest-updates.sql
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
