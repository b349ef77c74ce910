/*
 * The revenue kernel. The idempotency ledger is the only source of billing truth; an invoice
 * is its frozen summary. Once a period's late-arrival window has closed (8 days after the
 * month ends: events may be 7 days late), freeze_invoice writes an immutable snapshot with
 * ledger_digest = SHA-256 of the period's ledger lines (SPEC §9), which the tenant can
 * recompute from the dispute export. Later events for a frozen period are refused.
 */
drop function if exists app_private.drop_expired_ledger_partitions(integer);
drop function if exists app_private.freeze_due_invoices(timestamptz);
drop function if exists app_public.freeze_invoice(uuid, date);
drop function if exists app_public.billing_reconciliation(uuid, date);
drop type if exists app_public.billing_reconciliation_result;
drop function if exists app_private.compute_ledger_digest(uuid, date);
drop function if exists app_hidden.ledger_line(uuid, timestamptz, boolean);
drop function if exists app_private.assert_billing_access(uuid, text);
drop function if exists app_private.period_start(date);
drop function if exists app_private.period_bounds(date);
drop table if exists app_public.invoice_snapshots;

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
