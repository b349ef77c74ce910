--! Previous: sha1:493ebdbae029d109afdb25aa1e33070629ada1db
--! Hash: sha1:f9521c3f529b36952d197dd8a7dc34285d71605a
--! Message: upload-job-left-waiting

--! split: 1-current.sql
/*
 * A confirmed sale no longer rewrites its site's upload job when that job is already waiting.
 *
 * enqueue_upload (000007) called graphile_worker.add_job for every sale, in replace mode. With a
 * job for the site already waiting, unlocked, never tried and due no later than this sale asks,
 * that call changes nothing a worker reads (same payload, same run_at, attempts already 0): it
 * only bumps the job's revision and writes a new version of its row. One row rewritten per sale
 * is a hot row: its dead versions pile up in the job key's index until vacuum, and every later
 * add_job walks them. pg_stat_statements over the oci benchmark's seeding (104,000 sales on 10
 * sites, confirm_sale_and_enqueue): 84 s of its 108 s inside add_job, 51 s of that in its
 * "clear the key of a locked job" update, which matched no row each time; sales confirmed
 * dropped from 1,600 to 1,100 a second as the run went on.
 *
 * A job that has failed (attempts > 0, its run_at pushed back by the retry delay), is running
 * (locked) or is due later still goes through add_job as before, which resets or replaces it.
 * The job left waiting is row-locked until the sale commits (add_job's upsert locked it too),
 * so a worker taking jobs (FOR UPDATE SKIP LOCKED) starts its run only once the sale is there
 * to be claimed; a worker that took it first has marked it locked, and the sale replaces it.
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
    job_key => v_key, job_key_mode => 'replace', run_at => least(v_run_at, v_waiting));
end;
$$;
