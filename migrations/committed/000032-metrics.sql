--! Previous: sha1:6690e67af1cf71e5deedd3cce6834596a964b7cf
--! Hash: sha1:fda971019106e805589fc0a8a83f2ae24e20c634
--! Message: metrics

--! split: 1-current.sql
/*
 * What GET /api/metrics reports (Prometheus), read from the database in one call.
 *
 * PostgreSQL is the only server, so it is also where the numbers live: nothing is counted in a
 * process's memory, and every instance answers the same. Each figure must stay cheap at scale,
 * because Prometheus asks every few seconds:
 * - the queue's open and sent rows are read through their partial indexes (rows still moving,
 *   not the delivered history);
 * - the ledger and events written are counters kept by PostgreSQL's own statistics
 *   (pg_stat_user_tables, summed over partitions): no count(*) over billions of rows, and a
 *   reset (a crash, pg_stat_reset) is what Prometheus already expects of a counter;
 * - jobs, destinations, erasure requests and connections are small sets.
 * One row per sample: metric name, help, type (gauge or counter), labels, value.
 */
create or replace function app_private.metrics()
  returns table (name text, help text, kind text, labels jsonb, value double precision)
  language plpgsql stable
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  -- PL/pgSQL, not SQL: graphile-worker's schema is installed beside the migrations, not by them.
  return query
  select 'opsmantik_worker_heartbeat_age_seconds'::text, 'Seconds since a worker last completed its heartbeat job.'::text, 'gauge'::text, '{}'::jsonb,
         (select extract(epoch from pg_catalog.now() - max(h.beat_at)) from app_private.worker_heartbeats h)::float8
  union all
  select 'opsmantik_jobs', 'Background jobs by state: queued (waiting or due), running, failed (out of attempts).', 'gauge',
         pg_catalog.jsonb_build_object('state', s.state), coalesce(j.n, 0)::float8
    from (values ('queued'), ('running'), ('failed')) s(state)
    left join (select case when j.locked_at is not null then 'running' when j.attempts >= j.max_attempts then 'failed' else 'queued' end as state,
                      count(*) as n
                 from graphile_worker.jobs j group by 1) j on j.state = s.state
  union all
  select 'opsmantik_jobs_oldest_due_seconds', 'Seconds the longest-waiting due job has waited (0 when none).', 'gauge', '{}'::jsonb,
         coalesce((select extract(epoch from pg_catalog.now() - min(j.run_at)) from graphile_worker.jobs j
                    where j.locked_at is null and j.run_at <= pg_catalog.now() and j.attempts < j.max_attempts), 0)::float8
  union all
  select 'opsmantik_offline_conversions', 'Conversions and retractions not yet settled with Google: due (may go now), waiting (retry time not come), sent (Google has them, verdict pending).', 'gauge',
         pg_catalog.jsonb_build_object('state', s.state), coalesce(q.n, 0)::float8
    from (values ('due'), ('waiting'), ('sent')) s(state)
    left join (select case when q.stage = 'sent' then 'sent' when q.retry_at <= pg_catalog.now() then 'due' else 'waiting' end as state, count(*) as n
                 from app_public.offline_conversion_queue q where q.stage in ('open', 'sent') group by 1) q on q.state = s.state
  union all
  select 'opsmantik_offline_conversions_oldest_due_seconds', 'Seconds the longest-due conversion has waited since its retry time (0 when none).', 'gauge', '{}'::jsonb,
         coalesce((select extract(epoch from pg_catalog.now() - min(q.retry_at)) from app_public.offline_conversion_queue q
                    where q.stage = 'open' and q.retry_at <= pg_catalog.now()), 0)::float8
  union all
  select 'opsmantik_destinations', 'Delivery destinations by status.', 'gauge', pg_catalog.jsonb_build_object('status', s.status), coalesce(d.n, 0)::float8
    from (values ('active'), ('needs_reauth'), ('paused')) s(status)
    left join (select d.status, count(*) as n from app_public.destinations d group by 1) d on d.status = s.status
  union all
  select 'opsmantik_erasure_requests', 'Erasure requests not completed, by status.', 'gauge', pg_catalog.jsonb_build_object('status', s.status), coalesce(e.n, 0)::float8
    from (values ('pending'), ('running'), ('failed')) s(status)
    left join (select e.status, count(*) as n from app_public.erasure_requests e where e.status <> 'completed' group by 1) e on e.status = s.status
  union all
  select 'opsmantik_ledger_rows_written_total', 'Idempotency ledger rows written (PostgreSQL statistics; resets with them).', 'counter', '{}'::jsonb,
         coalesce((select sum(t.n_tup_ins) from pg_catalog.pg_stat_user_tables t
                    where t.schemaname = 'app_public' and t.relname ~ '^ingest_idempotency(_|$)'), 0)::float8
  union all
  select 'opsmantik_events_written_total', 'Tracker events written (PostgreSQL statistics; resets with them).', 'counter', '{}'::jsonb,
         coalesce((select sum(t.n_tup_ins) from pg_catalog.pg_stat_user_tables t
                    where t.schemaname = 'app_public' and t.relname ~ '^events(_|$)'), 0)::float8
  union all
  select 'opsmantik_database_connections', 'Connections to this database by state.', 'gauge', pg_catalog.jsonb_build_object('state', a.state), a.n::float8
    from (select coalesce(a.state, 'unknown') as state, count(*) as n from pg_catalog.pg_stat_activity a
           where a.datname = pg_catalog.current_database() group by 1) a;
end;
$$;

comment on function app_private.metrics() is
  E'The samples GET /api/metrics reports: name, help, type (gauge or counter), labels and value, each cheap to read at scale.';
