--! Previous: sha1:bd4eca9aad8e0ee491a2807ceb7e83c2a3159f13
--! Hash: sha1:8594c3f107cf217f471b65ed49b53445f5204319
--! Message: upload-runs-take-turns

--! split: 1-current.sql
/*
 * A site's upload runs one at a time.
 *
 * The site's upload job has a job key, so at most one waits; but a job added while the site's
 * run is under way (a sale, or the sweep seeing that run's held rows as due) is a second job,
 * and a second worker slot started it beside the first. That run found the first run's batches
 * locked (SKIP LOCKED) and claimed nothing, yet those rows still looked due to
 * schedule_next_upload, so it scheduled the next run at once: run after run, each claiming
 * nothing (and on Data Manager asking Google about every unsettled request), until the first
 * run committed. Now every upload job of a site is in the site's own named queue, which
 * graphile-worker runs in series: the second job waits for the first to finish.
 */
create or replace function app_private.enqueue_upload(site_id uuid, provider text, run_at timestamptz default null) returns void
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_key text := 'upload_conversions:' || enqueue_upload.provider || ':' || enqueue_upload.site_id::text;
  v_run_at timestamptz := coalesce(enqueue_upload.run_at, pg_catalog.now());
  v_waiting timestamptz;
  v_attempts integer;
begin
  -- Row-locked until this transaction ends: a worker picking jobs skips locked rows, so it
  -- cannot start this job's run before the sale it is left waiting for has committed.
  select j.run_at, j.attempts into v_waiting, v_attempts
    from graphile_worker._private_jobs j where j.key = v_key and j.locked_at is null
     for update;
  if v_attempts = 0 and v_waiting <= v_run_at then
    return;  -- already due in time, and replacing it would change nothing a worker reads
  end if;
  perform graphile_worker.add_job('upload_conversions',
    pg_catalog.json_build_object('site_id', enqueue_upload.site_id, 'provider', enqueue_upload.provider),
    queue_name => v_key, job_key => v_key, job_key_mode => 'replace', run_at => least(v_run_at, v_waiting));
end;
$$;
