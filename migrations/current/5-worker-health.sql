/*
 * The worker proves it is alive by running a job, not by existing: a cron task writes a
 * heartbeat here and GET /api/health reads it. Platform-level, so no site_id.
 */
create table app_private.worker_heartbeats (
  worker_name text primary key,
  beat_at timestamptz not null default now()
);
comment on table app_private.worker_heartbeats is E'Last time each worker process completed a heartbeat job.';
alter table app_private.worker_heartbeats enable row level security;

create function app_private.record_worker_heartbeat(worker_name text) returns void
  language sql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
  insert into app_private.worker_heartbeats (worker_name, beat_at) values (record_worker_heartbeat.worker_name, pg_catalog.now())
  on conflict (worker_name) do update set beat_at = excluded.beat_at;
$$;
comment on function app_private.record_worker_heartbeat(text) is E'Upserts a worker''s heartbeat.';
