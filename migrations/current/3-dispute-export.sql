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
