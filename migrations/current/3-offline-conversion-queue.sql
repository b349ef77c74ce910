/*
 * The outbox to Google. A row is written in the same transaction as the sale that causes it,
 * together with the graphile-worker job that will upload it; uploaders claim rows with
 * FOR UPDATE SKIP LOCKED under a lease, so a crashed uploader's rows return to the pool.
 *
 *   pending ──claim──▶ processing ──▶ sent (awaiting Google's processing) ──▶ accepted
 *      ▲                   │  └──────────────────────────────────────────────▶ accepted
 *      └── retry_at ◀──────┤ (TOO_RECENT_*, transient, quota, lease expired)
 *                          └──▶ failed (Google's final code)
 *   pending ──undo──▶ cancelled;  delivered ──undo──▶ a retraction row of its own
 */
drop function if exists app_private.assert_caller_role(uuid, app_public.site_role, text, text, text) cascade;
drop function if exists app_private.claim_offline_conversion_jobs(text, integer, uuid, text, integer) cascade;
drop function if exists app_private.enqueue_upload(uuid, text, timestamptz) cascade;

create table app_public.offline_conversion_queue (
  site_id uuid not null references app_public.sites on delete cascade,
  id uuid not null default gen_random_uuid(),
  sale_id uuid not null,
  provider text not null default 'google' constraint offline_conversion_queue_provider check (provider in ('google')),
  kind text not null default 'conversion' constraint offline_conversion_queue_kind check (kind in ('conversion', 'retraction')),
  status text not null default 'pending'
    constraint offline_conversion_queue_status check (status in ('pending', 'processing', 'sent', 'accepted', 'failed', 'cancelled')),
  order_id text not null,
  click_id text,
  click_id_type text constraint offline_conversion_queue_click_id_type check (click_id_type in ('gclid', 'gbraid', 'wbraid')),
  conversion_at timestamptz not null,
  value numeric not null,
  currency text not null,
  ad_user_data text not null constraint offline_conversion_queue_ad_user_data check (ad_user_data in ('granted', 'denied', 'unspecified')),
  ad_personalization text not null constraint offline_conversion_queue_ad_personalization check (ad_personalization in ('granted', 'denied', 'unspecified')),
  attempts integer not null default 0,
  retry_at timestamptz not null default now(),
  locked_by text,
  locked_until timestamptz,
  last_error_code text,
  last_error_message text,
  request_id text,
  sent_at timestamptz,
  accepted_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (site_id, id),
  constraint offline_conversion_queue_sale_fkey foreign key (site_id, sale_id) references app_public.sales (site_id, id) on delete cascade,
  constraint offline_conversion_queue_once unique (site_id, sale_id, provider, kind)
);
comment on table app_public.offline_conversion_queue is
  E'@behavior +aggregates +aggregates:filterBy +aggregates:orderBy +groupedAggregates\nConversions (and retractions of undone ones) on their way to Google, one row each, with their honest status.';
comment on column app_public.offline_conversion_queue.site_id is E'The site.';
comment on column app_public.offline_conversion_queue.id is E'Identifier.';
comment on column app_public.offline_conversion_queue.sale_id is E'The sale it reports.';
comment on column app_public.offline_conversion_queue.provider is E'Where it goes (google).';
comment on column app_public.offline_conversion_queue.kind is E'conversion, or retraction of one already delivered.';
comment on column app_public.offline_conversion_queue.status is
  E'pending (waiting; see retry_at), processing (an uploader holds it), sent (Google has it, result pending), accepted, failed (see last_error_code) or cancelled.';
comment on column app_public.offline_conversion_queue.order_id is E'Sent as the order / transaction id, the same on every attempt, so Google counts the conversion once.';
comment on column app_public.offline_conversion_queue.click_id is E'The Google click id it is attributed to; filled in later if it becomes known before delivery.';
comment on column app_public.offline_conversion_queue.click_id_type is E'gclid, gbraid or wbraid.';
comment on column app_public.offline_conversion_queue.conversion_at is E'When the conversion happened.';
comment on column app_public.offline_conversion_queue.value is E'Conversion value.';
comment on column app_public.offline_conversion_queue.currency is E'ISO 4217 code.';
comment on column app_public.offline_conversion_queue.ad_user_data is E'Consent Mode v2 signal sent with it; hashed email and phone go only when granted.';
comment on column app_public.offline_conversion_queue.ad_personalization is E'Consent Mode v2 signal sent with it.';
comment on column app_public.offline_conversion_queue.attempts is E'How many times an uploader claimed it.';
comment on column app_public.offline_conversion_queue.retry_at is E'Not claimed before this time (Google asked us to wait, or an error backs off).';
comment on column app_public.offline_conversion_queue.locked_by is E'The uploader holding it, while processing.';
comment on column app_public.offline_conversion_queue.locked_until is E'The lease: past it, another uploader may reclaim the row.';
comment on column app_public.offline_conversion_queue.last_error_code is E'Google''s (or our) code for the last failure.';
comment on column app_public.offline_conversion_queue.last_error_message is E'The last failure in words.';
comment on column app_public.offline_conversion_queue.request_id is E'Google''s request id of the upload that carried it.';
comment on column app_public.offline_conversion_queue.sent_at is E'When Google first took the upload.';
comment on column app_public.offline_conversion_queue.accepted_at is E'When Google accepted it.';
comment on column app_public.offline_conversion_queue.created_at is E'When it was queued.';
comment on column app_public.offline_conversion_queue.updated_at is E'When it last changed.';
-- What claimers look for: due pending rows, and processing rows whose lease has run out.
create index offline_conversion_queue_due_idx on app_public.offline_conversion_queue (provider, retry_at) where status = 'pending';
create index offline_conversion_queue_lease_idx on app_public.offline_conversion_queue (provider, locked_until) where status = 'processing';
create index offline_conversion_queue_sale_idx on app_public.offline_conversion_queue (site_id, sale_id);
alter table app_public.offline_conversion_queue enable row level security;
create policy select_member on app_public.offline_conversion_queue for select using (site_id in (select app_hidden.current_user_site_ids()));
grant select on app_public.offline_conversion_queue to :DATABASE_VISITOR;
create trigger _100_touch_updated_at before update on app_public.offline_conversion_queue
  for each row execute function app_private.tg__touch_updated_at();

/*
 * Requests (the visitor role, i.e. GraphQL and the HTTP API) must hold min_role on the site.
 * The owner's own sessions (the worker, migrations, a DBA connected as the owner or a
 * superuser) are not limited. Anything else fails closed.
 */
create function app_private.assert_caller_role(site_id uuid, min_role app_public.site_role, action text, target_table text, target_id text)
  returns void
  language plpgsql stable
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  if pg_catalog.current_setting('role', true) is distinct from ':DATABASE_VISITOR'
     and (session_user = ':DATABASE_OWNER' or exists (select 1 from pg_catalog.pg_roles r where r.rolname = session_user and r.rolsuper)) then
    return;
  end if;
  perform app_hidden.assert_site_role(assert_caller_role.site_id, assert_caller_role.min_role, assert_caller_role.action,
                                      assert_caller_role.target_table, assert_caller_role.target_id);
end;
$$;
comment on function app_private.assert_caller_role(uuid, app_public.site_role, text, text, text) is
  E'Raises OM403 unless the caller holds min_role on the site; the owner''s own sessions (worker, DBA) pass.';

/*
 * The upload job, in the caller's transaction. One job per site is enough however many rows
 * are waiting (job_key); if that job is already running, graphile-worker queues a fresh one,
 * so a row added during an upload is never left behind.
 */
create function app_private.enqueue_upload(site_id uuid, provider text, run_at timestamptz default null) returns void
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  perform graphile_worker.add_job('upload_conversions',
    pg_catalog.json_build_object('site_id', enqueue_upload.site_id, 'provider', enqueue_upload.provider),
    job_key => 'upload_conversions:' || enqueue_upload.provider || ':' || enqueue_upload.site_id::text,
    job_key_mode => 'preserve_run_at',
    run_at => coalesce(enqueue_upload.run_at, pg_catalog.now()));
end;
$$;
comment on function app_private.enqueue_upload(uuid, text, timestamptz) is E'Schedules the upload_conversions job of a site (one per site; idempotent).';

/*
 * Hands an uploader up to "limit" rows that are due (pending past retry_at, or processing with
 * an expired lease), marking them processing under a lease. SKIP LOCKED: two uploaders never
 * get the same row and never wait for each other.
 */
create function app_private.claim_offline_conversion_jobs(
  provider text, "limit" integer, site_id uuid default null, worker text default null, lease_seconds integer default 300
) returns setof app_public.offline_conversion_queue
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  if claim_offline_conversion_jobs."limit" not between 1 and 2000 or claim_offline_conversion_jobs.lease_seconds not between 10 and 86400 then
    raise exception using errcode = '22023', message = 'limit must be 1 to 2000 and lease_seconds 10 to 86400.';
  end if;
  return query
  with due as (
    select q.site_id, q.id
      from app_public.offline_conversion_queue q
     where q.provider = claim_offline_conversion_jobs.provider
       and (claim_offline_conversion_jobs.site_id is null or q.site_id = claim_offline_conversion_jobs.site_id)
       and ((q.status = 'pending' and q.retry_at <= pg_catalog.now())
            or (q.status = 'processing' and q.locked_until < pg_catalog.now()))
     order by q.retry_at, q.created_at, q.id
     limit claim_offline_conversion_jobs."limit"
       for update skip locked
  )
  update app_public.offline_conversion_queue q
     set status = 'processing',
         locked_by = coalesce(claim_offline_conversion_jobs.worker, pg_catalog.pg_backend_pid()::text),
         locked_until = pg_catalog.now() + pg_catalog.make_interval(secs => claim_offline_conversion_jobs.lease_seconds),
         attempts = q.attempts + 1
    from due
   where q.site_id = due.site_id and q.id = due.id
  returning q.*;
end;
$$;
comment on function app_private.claim_offline_conversion_jobs(text, integer, uuid, text, integer) is
  E'Claims up to limit due conversions (optionally of one site) for an uploader, under a lease of lease_seconds (FOR UPDATE SKIP LOCKED).';
