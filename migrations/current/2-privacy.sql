/*
 * Privacy: right of access, right to erasure, retention.
 *
 * A subject is named by kind and value: visitor_id, email, phone (also a call's caller number)
 * or click_id (a gclid, gbraid or wbraid). subject_links finds every row linked to it, directly
 * or through the visitors its sales and calls lead to and all of their sessions; access exports
 * those rows, erasure deletes or strips them. The ledger is never touched: it holds no personal
 * data, so invoices and reconciliation stay exact.
 */
drop function if exists app_private.subject_links(uuid, text, text) cascade;
drop function if exists app_private.hash_subject(uuid, text, text) cascade;
drop function if exists app_private.normalize_subject(text, text) cascade;
drop function if exists app_public.export_subject_data(uuid, text, text) cascade;
drop function if exists app_public.request_erasure(uuid, text, text) cascade;
drop function if exists app_private.carry_out_erasure(uuid, uuid) cascade;
drop function if exists app_private.retention_cleanup() cascade;
drop function if exists app_public.set_data_retention(uuid, integer) cascade;
drop table if exists app_private.erasure_subjects cascade;
drop function if exists app_private.count_event_removals(uuid, text, timestamptz[]) cascade;
drop table if exists app_private.event_removals cascade;
drop function if exists app_private.tg__forget_site_tracking() cascade;
drop table if exists app_public.erasure_requests cascade;
drop type if exists app_private.subject_link_set cascade;

alter table app_public.sites add column if not exists data_retention_months integer not null default 13;
do $$
begin
  if not exists (select 1 from pg_constraint where conname = 'sites_data_retention_months_range') then
    alter table app_public.sites add constraint sites_data_retention_months_range check (data_retention_months between 1 and 13);
  end if;
end;
$$;
comment on column app_public.sites.data_retention_months is
  E'How long events, sessions and the personal data of calls are kept, in months (1 to 13; 13 by default).';
grant select (data_retention_months) on app_public.sites to :DATABASE_VISITOR;

/* The subject in its canonical form (email and phone normalised as Google hashes them); OMSUB when it is not one. */
create function app_private.normalize_subject(kind text, value text) returns text
  language plpgsql immutable
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_normalized text;
begin
  v_normalized := case normalize_subject.kind
    when 'visitor_id' then case when normalize_subject.value ~ '^[A-Za-z0-9_-]{1,64}$' then normalize_subject.value end
    when 'email' then app_hidden.normalize_email(normalize_subject.value)
    when 'phone' then app_hidden.normalize_phone(normalize_subject.value)
    when 'click_id' then case when normalize_subject.value ~ '^[A-Za-z0-9_-]{1,255}$' then normalize_subject.value end
  end;
  if v_normalized is null then
    raise exception using errcode = 'OMSUB', message =
      'A subject is a visitor_id, email, phone (with its country code) or click_id, with a value of that kind.';
  end if;
  return v_normalized;
end;
$$;
comment on function app_private.normalize_subject(text, text) is E'A subject''s value in canonical form; OMSUB for an unknown kind or a malformed value.';

/* What a receipt keeps of the subject: an HMAC with the site's secret salt (proves which subject, reveals nothing). */
create function app_private.hash_subject(site_id uuid, kind text, normalized text) returns text
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select pg_catalog.encode(public.hmac(pg_catalog.convert_to(kind || ':' || normalized, 'UTF8'), s.salt, 'sha256'), 'hex')
    from app_private.site_salts s where s.site_id = hash_subject.site_id;
$$;
comment on function app_private.hash_subject(uuid, text, text) is E'HMAC-SHA256 of kind:value with the site''s secret salt.';

create type app_private.subject_link_set as (
  visitor_ids text[],
  visitor_keys text[],
  session_ids uuid[],
  call_ids uuid[],
  sale_ids uuid[],
  consent_hashes bytea[]
);

/*
 * Everything linked to a subject on one site. From the subject to its sales and calls, from
 * those to their visitors and sessions, from the visitors to every session they had (by raw
 * id and by each daily hash whose salt still exists; older hashes are already unlinkable),
 * and back to every call and sale of those sessions and visitors.
 */
create function app_private.subject_links(site_id uuid, kind text, normalized text) returns app_private.subject_link_set
  language plpgsql stable
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v app_private.subject_link_set := row('{}', '{}', '{}', '{}', '{}', '{}');
  v_hash text;
begin
  if kind = 'visitor_id' then
    v.visitor_ids := array[normalized];
  elsif kind in ('email', 'phone') then
    v_hash := app_hidden.identifier_sha256(normalized);
    select coalesce(array_agg(i.sale_id), '{}') into v.sale_ids from app_private.sale_identifiers i
     where i.site_id = subject_links.site_id
       and (case when kind = 'email' then i.email_sha256 else i.phone_sha256 end) = v_hash;
    if kind = 'phone' then
      select coalesce(array_agg(c.id), '{}') into v.call_ids from app_public.calls c
       where c.site_id = subject_links.site_id and c.caller = normalized;
    end if;
  else
    select coalesce(array_agg(distinct s.id), '{}'), coalesce(array_agg(distinct s.visitor_key), '{}')
      into v.session_ids, v.visitor_keys
      from app_public.sessions s
     where s.site_id = subject_links.site_id and (s.click_id = normalized or s.assisting_click_id = normalized);
    select coalesce(array_agg(c.id), '{}') into v.call_ids from app_public.calls c
     where c.site_id = subject_links.site_id and (c.gclid = normalized or c.click_id = normalized);
    select coalesce(array_agg(s.id), '{}') into v.sale_ids from app_public.sales s
     where s.site_id = subject_links.site_id and (s.gclid = normalized or s.click_id = normalized);
  end if;

  -- Sales lead to their calls, visitors and sessions; calls to theirs.
  select v.call_ids || coalesce(array_agg(s.call_id) filter (where s.call_id is not null), '{}'),
         v.visitor_ids || coalesce(array_agg(s.visitor_id) filter (where s.visitor_id is not null), '{}'),
         v.session_ids || coalesce(array_agg(s.session_id) filter (where s.session_id is not null), '{}')
    into v.call_ids, v.visitor_ids, v.session_ids
    from app_public.sales s where s.site_id = subject_links.site_id and s.id = any(v.sale_ids);
  select v.visitor_ids || coalesce(array_agg(c.visitor_id) filter (where c.visitor_id is not null), '{}'),
         v.session_ids || coalesce(array_agg(c.session_id) filter (where c.session_id is not null), '{}')
    into v.visitor_ids, v.session_ids
    from app_public.calls c where c.site_id = subject_links.site_id and c.id = any(v.call_ids);
  -- Sessions lead to their visitors.
  select v.visitor_keys || coalesce(array_agg(distinct s.visitor_key), '{}'),
         v.visitor_ids || coalesce(array_agg(distinct s.visitor_id) filter (where s.visitor_id is not null), '{}')
    into v.visitor_keys, v.visitor_ids
    from app_public.sessions s where s.site_id = subject_links.site_id and s.id = any(v.session_ids);
  -- A visitor is known by its raw id and by the daily hashes of the days whose salts remain.
  select array(select distinct unnest(v.visitor_ids)) into v.visitor_ids;
  select array(select distinct k from (
           select unnest(v.visitor_keys) as k
           union all select unnest(v.visitor_ids)
           union all select 'h:' || pg_catalog.encode(pg_catalog.substr(public.hmac(pg_catalog.convert_to(subject_links.site_id::text || '/' || i.id, 'UTF8'),
                                                                  d.salt, 'sha256'), 1, 16), 'hex')
             from unnest(v.visitor_ids) as i(id) cross join app_private.daily_salts d) keys)
    into v.visitor_keys;
  -- Every session of those visitors, and every call and sale of those sessions and visitors.
  select array(select distinct id from (
           select unnest(v.session_ids) as id
           union all select s.id from app_public.sessions s
            where s.site_id = subject_links.site_id and s.visitor_key = any(v.visitor_keys)) ids)
    into v.session_ids;
  select array(select distinct id from (
           select unnest(v.call_ids) as id
           union all select c.id from app_public.calls c
            where c.site_id = subject_links.site_id and (c.session_id = any(v.session_ids) or c.visitor_id = any(v.visitor_ids))) ids)
    into v.call_ids;
  select array(select distinct id from (
           select unnest(v.sale_ids) as id
           union all select s.id from app_public.sales s
            where s.site_id = subject_links.site_id
              and (s.session_id = any(v.session_ids) or s.visitor_id = any(v.visitor_ids) or s.call_id = any(v.call_ids))) ids)
    into v.sale_ids;
  select array(select public.hmac(pg_catalog.convert_to(i.id, 'UTF8'), s.salt, 'sha256')
                 from unnest(v.visitor_ids) as i(id), app_private.site_salts s where s.site_id = subject_links.site_id)
    into v.consent_hashes;
  return v;
end;
$$;
comment on function app_private.subject_links(uuid, text, text) is
  E'Every visitor, session, call, sale and consent record linked to a subject on a site.';

/*
 * Events removed for privacy (erasure, retention), counted per site, month and reason, so the
 * billing reconciliation can still account for every ledger row: stored + removed = ledger.
 */
create table app_private.event_removals (
  site_id uuid not null,
  period date not null,
  reason text not null constraint event_removals_reason check (reason in ('erasure', 'retention')),
  events bigint not null default 0,
  primary key (site_id, period, reason)
);
comment on table app_private.event_removals is E'How many events of a site and month were deleted for privacy, and why (no personal data).';
alter table app_private.event_removals enable row level security;

create function app_private.count_event_removals(site_id uuid, reason text, occurred timestamptz[]) returns bigint
  language sql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
  with groups as (
    select pg_catalog.date_trunc('month', o at time zone 'UTC')::date as period, count(*) as events
      from unnest(count_event_removals.occurred) o
     group by 1
  ), counted as (
    insert into app_private.event_removals as r (site_id, period, reason, events)
    select count_event_removals.site_id, g.period, count_event_removals.reason, g.events from groups g
    on conflict (site_id, period, reason) do update set events = r.events + excluded.events
  )
  select coalesce(sum(g.events), 0)::bigint from groups g;
$$;
comment on function app_private.count_event_removals(uuid, text, timestamptz[]) is E'Adds deleted events to the per-month removal counts; returns how many.';

/* ---------------------------------------------------------------- access */

create function app_public.export_subject_data(site_id uuid, kind text, value text) returns jsonb
  language plpgsql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_normalized text;
  v app_private.subject_link_set;
begin
  perform app_private.assert_caller_role(export_subject_data.site_id, 'admin', 'export_subject_data', 'sites', export_subject_data.site_id::text);
  v_normalized := app_private.normalize_subject(export_subject_data.kind, export_subject_data.value);
  v := app_private.subject_links(export_subject_data.site_id, export_subject_data.kind, v_normalized);
  return pg_catalog.jsonb_build_object(
    'site_id', export_subject_data.site_id,
    'subject', pg_catalog.jsonb_build_object('kind', export_subject_data.kind, 'value', v_normalized),
    'exported_at', pg_catalog.now(),
    'sessions', coalesce((select pg_catalog.jsonb_agg(pg_catalog.to_jsonb(s) order by s.started_at) from app_public.sessions s
                            where s.site_id = export_subject_data.site_id and s.id = any(v.session_ids)), '[]'),
    'events', coalesce((select pg_catalog.jsonb_agg(pg_catalog.to_jsonb(e) order by e.occurred_at, e.id) from app_public.events e
                          where e.site_id = export_subject_data.site_id
                            and (e.visitor_key = any(v.visitor_keys) or e.session_id = any(v.session_ids))), '[]'),
    'consents', coalesce((select pg_catalog.jsonb_agg(pg_catalog.to_jsonb(c) - 'visitor_hash' order by c.recorded_at) from app_public.consents c
                            where c.site_id = export_subject_data.site_id and c.visitor_hash = any(v.consent_hashes)), '[]'),
    'calls', coalesce((select pg_catalog.jsonb_agg(pg_catalog.to_jsonb(c) order by c.started_at) from app_public.calls c
                         where c.site_id = export_subject_data.site_id and c.id = any(v.call_ids)), '[]'),
    'conversations', coalesce((select pg_catalog.jsonb_agg(pg_catalog.to_jsonb(c) order by c.created_at) from app_public.conversations c
                                 where c.site_id = export_subject_data.site_id
                                   and (c.call_id = any(v.call_ids) or c.session_id = any(v.session_ids)
                                        or c.id in (select s.conversation_id from app_public.sales s
                                                     where s.site_id = export_subject_data.site_id and s.id = any(v.sale_ids)))), '[]'),
    'sales', coalesce((select pg_catalog.jsonb_agg(pg_catalog.to_jsonb(s) || pg_catalog.jsonb_build_object(
                                 'email_sha256', i.email_sha256, 'phone_sha256', i.phone_sha256) order by s.occurred_at)
                         from app_public.sales s left join app_private.sale_identifiers i on i.site_id = s.site_id and i.sale_id = s.id
                        where s.site_id = export_subject_data.site_id and s.id = any(v.sale_ids)), '[]'),
    'conversions', coalesce((select pg_catalog.jsonb_agg(pg_catalog.to_jsonb(q) - 'locked_by' - 'locked_until' order by q.created_at)
                               from app_public.offline_conversion_queue q
                              where q.site_id = export_subject_data.site_id and q.sale_id = any(v.sale_ids)), '[]'));
end;
$$;
comment on function app_public.export_subject_data(uuid, text, text) is
  E'Right of access (admin or owner): everything held about a subject on the site as one JSON document. kind is visitor_id, email, phone (also matches callers) or click_id; email and phone are matched by their normalised SHA-256.';

/* ---------------------------------------------------------------- erasure */

create table app_public.erasure_requests (
  site_id uuid not null references app_public.sites on delete cascade,
  id uuid not null default gen_random_uuid(),
  subject_kind text not null constraint erasure_requests_subject_kind check (subject_kind in ('visitor_id', 'email', 'phone', 'click_id')),
  subject_hash text not null,
  status text not null default 'pending' constraint erasure_requests_status check (status in ('pending', 'running', 'completed', 'failed')),
  requested_by_user_id uuid,
  requested_by_api_key_id uuid,
  requested_by_db_role text not null default session_user,
  requested_at timestamptz not null default now(),
  started_at timestamptz,
  completed_at timestamptz,
  attempts integer not null default 0,
  receipt jsonb,
  last_error text,
  primary key (site_id, id)
);
comment on table app_public.erasure_requests is
  E'Right-to-erasure requests and their receipts: what was erased (counts per table), when, by whom. The subject is kept only as a salted hash.';
comment on column app_public.erasure_requests.site_id is E'The site.';
comment on column app_public.erasure_requests.id is E'Identifier.';
comment on column app_public.erasure_requests.subject_kind is E'visitor_id, email, phone or click_id.';
comment on column app_public.erasure_requests.subject_hash is E'HMAC-SHA256 of the subject with the site''s secret salt: identifies the request without holding the subject.';
comment on column app_public.erasure_requests.status is E'pending, running, completed or failed (then retried).';
comment on column app_public.erasure_requests.requested_by_user_id is E'Who asked (dashboard user).';
comment on column app_public.erasure_requests.requested_by_api_key_id is E'Who asked (API key).';
comment on column app_public.erasure_requests.requested_by_db_role is E'The database login that asked (a DBA''s own role for the CLI).';
comment on column app_public.erasure_requests.requested_at is E'When it was asked for.';
comment on column app_public.erasure_requests.started_at is E'When the worker last started on it.';
comment on column app_public.erasure_requests.completed_at is E'When everything was erased.';
comment on column app_public.erasure_requests.attempts is E'How many times the worker started on it.';
comment on column app_public.erasure_requests.receipt is E'Rows erased or stripped, per table.';
comment on column app_public.erasure_requests.last_error is E'Why the last attempt failed, if it did.';
alter table app_public.erasure_requests enable row level security;
create policy select_admin on app_public.erasure_requests for select using (site_id in (select app_hidden.current_user_site_ids('admin')));
grant select on app_public.erasure_requests to :DATABASE_VISITOR;
create trigger _500_audit after insert or update on app_public.erasure_requests
  for each row execute function app_private.tg__audit('site_id', 'id');

/* The subject itself, held only until its erasure completes. */
create table app_private.erasure_subjects (
  site_id uuid not null,
  request_id uuid not null,
  normalized_value text not null,
  primary key (site_id, request_id),
  foreign key (site_id, request_id) references app_public.erasure_requests (site_id, id) on delete cascade
);
comment on table app_private.erasure_subjects is E'The subject of a pending erasure, deleted when it completes.';
alter table app_private.erasure_subjects enable row level security;

create function app_public.request_erasure(site_id uuid, kind text, value text) returns app_public.erasure_requests
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_normalized text;
  v_hash text;
  v_request app_public.erasure_requests;
begin
  perform app_private.assert_caller_role(request_erasure.site_id, 'admin', 'request_erasure', 'erasure_requests', request_erasure.kind);
  v_normalized := app_private.normalize_subject(request_erasure.kind, request_erasure.value);
  if not exists (select 1 from app_public.sites s where s.id = request_erasure.site_id) then
    raise exception using errcode = 'OMNSS', message = 'No such site.';
  end if;
  v_hash := app_private.hash_subject(request_erasure.site_id, request_erasure.kind, v_normalized);
  -- Asking again while one is under way is the same request.
  select * into v_request from app_public.erasure_requests r
   where r.site_id = request_erasure.site_id and r.subject_hash = v_hash and r.status in ('pending', 'running', 'failed');
  if v_request.id is not null then
    if v_request.status = 'failed' then
      -- Its job may have used up its attempts: asking again starts it afresh.
      perform graphile_worker.add_job('carry_out_erasure',
        pg_catalog.json_build_object('site_id', v_request.site_id, 'request_id', v_request.id),
        job_key => 'carry_out_erasure:' || v_request.id::text, max_attempts => 25);
    end if;
    return v_request;
  end if;
  insert into app_public.erasure_requests (site_id, subject_kind, subject_hash, requested_by_user_id, requested_by_api_key_id)
  values (request_erasure.site_id, request_erasure.kind, v_hash, app_hidden.current_user_id(), app_hidden.current_api_key_id())
  returning * into v_request;
  insert into app_private.erasure_subjects (site_id, request_id, normalized_value) values (v_request.site_id, v_request.id, v_normalized);
  perform graphile_worker.add_job('carry_out_erasure',
    pg_catalog.json_build_object('site_id', v_request.site_id, 'request_id', v_request.id),
    job_key => 'carry_out_erasure:' || v_request.id::text, max_attempts => 25);
  return v_request;
end;
$$;
comment on function app_public.request_erasure(uuid, text, text) is
  E'Right to erasure (admin or owner): records the request and schedules its erasure, in one transaction. kind is visitor_id, email, phone or click_id. Asking again while it is under way returns the same request.';

/*
 * Carries out an erasure in one transaction: all of it or, after a crash, none of it (and the
 * job runs again). Running it again after it completed changes nothing and returns the receipt.
 */
create function app_private.carry_out_erasure(site_id uuid, request_id uuid) returns jsonb
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_request app_public.erasure_requests;
  v_subject text;
  v app_private.subject_link_set;
  v_receipt jsonb := '{}';
  v_count integer;
  v_conversion record;
begin
  select * into v_request from app_public.erasure_requests r
   where r.site_id = carry_out_erasure.site_id and r.id = carry_out_erasure.request_id
     for update;
  if v_request.id is null then
    raise exception using errcode = 'OMNER', message = 'No such erasure request.';
  end if;
  if v_request.status = 'completed' then
    return v_request.receipt;
  end if;
  select e.normalized_value into v_subject from app_private.erasure_subjects e
   where e.site_id = v_request.site_id and e.request_id = v_request.id;
  v := app_private.subject_links(v_request.site_id, v_request.subject_kind, v_subject);

  with deleted as (
    delete from app_public.events e
     where e.site_id = v_request.site_id and (e.visitor_key = any(v.visitor_keys) or e.session_id = any(v.session_ids))
    returning e.occurred_at
  )
  select app_private.count_event_removals(v_request.site_id, 'erasure', array(select occurred_at from deleted)) into v_count;
  v_receipt := v_receipt || pg_catalog.jsonb_build_object('events_deleted', v_count);
  delete from app_public.sessions s
   where s.site_id = v_request.site_id and (s.visitor_key = any(v.visitor_keys) or s.id = any(v.session_ids));
  get diagnostics v_count = row_count; v_receipt := v_receipt || pg_catalog.jsonb_build_object('sessions_deleted', v_count);
  delete from app_public.consents c where c.site_id = v_request.site_id and c.visitor_hash = any(v.consent_hashes);
  get diagnostics v_count = row_count; v_receipt := v_receipt || pg_catalog.jsonb_build_object('consents_deleted', v_count);
  update app_public.calls c
     set caller = null, visitor_id = null, gclid = null, session_id = null, click_id = null, click_id_type = null
   where c.site_id = v_request.site_id and c.id = any(v.call_ids);
  get diagnostics v_count = row_count; v_receipt := v_receipt || pg_catalog.jsonb_build_object('calls_stripped', v_count);
  update app_public.conversations c set session_id = null
   where c.site_id = v_request.site_id and c.session_id = any(v.session_ids);
  get diagnostics v_count = row_count; v_receipt := v_receipt || pg_catalog.jsonb_build_object('conversations_stripped', v_count);
  delete from app_private.sale_identifiers i where i.site_id = v_request.site_id and i.sale_id = any(v.sale_ids);
  get diagnostics v_count = row_count; v_receipt := v_receipt || pg_catalog.jsonb_build_object('sale_identifiers_deleted', v_count);

  -- Conversions: not yet with Google → cancelled; possibly with Google → a retraction (where the rail can).
  v_receipt := v_receipt || '{"conversions_cancelled": 0, "retractions_queued": 0}';
  for v_conversion in
    select q.* from app_public.offline_conversion_queue q
     where q.site_id = v_request.site_id and q.sale_id = any(v.sale_ids) and q.kind = 'conversion'
       for update
  loop
    if v_conversion.status = 'pending' then
      update app_public.offline_conversion_queue q set status = 'cancelled', last_error_code = 'ERASED',
             last_error_message = 'The subject''s data was erased before delivery.'
       where q.site_id = v_conversion.site_id and q.id = v_conversion.id;
      v_receipt := pg_catalog.jsonb_set(v_receipt, '{conversions_cancelled}', pg_catalog.to_jsonb((v_receipt ->> 'conversions_cancelled')::int + 1));
    elsif v_conversion.status in ('processing', 'sent', 'accepted') then
      insert into app_public.offline_conversion_queue (site_id, sale_id, kind, order_id, conversion_at, value, currency, ad_user_data, ad_personalization)
      values (v_conversion.site_id, v_conversion.sale_id, 'retraction', v_conversion.order_id, v_conversion.conversion_at, v_conversion.value,
              v_conversion.currency, v_conversion.ad_user_data, v_conversion.ad_personalization)
      on conflict on constraint offline_conversion_queue_once do nothing;
      if found then
        v_receipt := pg_catalog.jsonb_set(v_receipt, '{retractions_queued}', pg_catalog.to_jsonb((v_receipt ->> 'retractions_queued')::int + 1));
      end if;
      perform app_private.enqueue_upload(v_conversion.site_id, v_conversion.provider);
    end if;
  end loop;
  -- Google's error messages may quote what was sent: they go with the click ids.
  update app_public.offline_conversion_queue q set click_id = null, click_id_type = null, last_error_message = null
   where q.site_id = v_request.site_id and q.sale_id = any(v.sale_ids) and (q.click_id is not null or q.last_error_message is not null);
  update app_public.sales s
     set visitor_id = null, gclid = null, click_id = null, click_id_type = null, session_id = null, session_event_id = null
   where s.site_id = v_request.site_id and s.id = any(v.sale_ids);
  get diagnostics v_count = row_count; v_receipt := v_receipt || pg_catalog.jsonb_build_object('sales_stripped', v_count);
  -- A CRM may have used the subject itself (an email, a phone number) as its order id: such ids
  -- are replaced, except on a retraction still waiting to tell Google which order to withdraw.
  update app_public.sales s set external_id = 'erased:' || s.id::text
   where s.site_id = v_request.site_id and s.id = any(v.sale_ids)
     and (pg_catalog.strpos(pg_catalog.lower(s.external_id), pg_catalog.lower(v_subject)) > 0
          or app_hidden.normalize_email(s.external_id) = v_subject or app_hidden.normalize_phone(s.external_id) = v_subject);
  get diagnostics v_count = row_count; v_receipt := v_receipt || pg_catalog.jsonb_build_object('order_ids_replaced', v_count);
  update app_public.offline_conversion_queue q set order_id = 'erased:' || q.sale_id::text
   where q.site_id = v_request.site_id and q.sale_id = any(v.sale_ids)
     and (pg_catalog.strpos(pg_catalog.lower(q.order_id), pg_catalog.lower(v_subject)) > 0
          or app_hidden.normalize_email(q.order_id) = v_subject or app_hidden.normalize_phone(q.order_id) = v_subject)
     and not (q.kind = 'retraction' and q.status in ('pending', 'processing'));

  delete from app_private.erasure_subjects e where e.site_id = v_request.site_id and e.request_id = v_request.id;
  update app_public.erasure_requests r
     set status = 'completed', completed_at = pg_catalog.now(), receipt = v_receipt, last_error = null,
         attempts = r.attempts + 1, started_at = coalesce(r.started_at, pg_catalog.now())
   where r.site_id = v_request.site_id and r.id = v_request.id;
  return v_receipt;
end;
$$;
comment on function app_private.carry_out_erasure(uuid, uuid) is
  E'Erases everything linked to a request''s subject, in one transaction; idempotent. Returns the receipt (counts per table).';

/* ---------------------------------------------------------------- retention */

create function app_public.set_data_retention(site_id uuid, months integer) returns app_public.sites
  language plpgsql volatile strict security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_site app_public.sites;
begin
  perform app_private.assert_caller_role(set_data_retention.site_id, 'admin', 'set_data_retention', 'sites', set_data_retention.site_id::text);
  update app_public.sites s set data_retention_months = set_data_retention.months where s.id = set_data_retention.site_id
  returning * into v_site;
  if v_site.id is null then
    raise exception using errcode = 'OMNSS', message = 'No such site.';
  end if;
  return v_site;
end;
$$;
comment on function app_public.set_data_retention(uuid, integer) is
  E'Shortens (or restores, up to 13) how many months the site''s events, sessions and call personal data are kept (admin or owner).';

/*
 * The nightly retention pass. pg_partman drops whole monthly partitions of events and sessions
 * after 13 months; this removes what sites chose to keep for less, consents past their proof
 * period, and personal data of calls, sales and conversions once it has served its purpose.
 */
create function app_private.retention_cleanup() returns jsonb
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_site record;
  v_count integer;
  v_result jsonb := '{"events_deleted": 0, "sessions_deleted": 0, "calls_stripped": 0}';
begin
  for v_site in select s.id, s.data_retention_months from app_public.sites s loop
    -- (pg_partman drops whole partitions past 13 months; rows in the default partition, and
    -- sites that keep less, are deleted here.)
    begin
      with deleted as (
        delete from app_public.events e
         where e.site_id = v_site.id and e.occurred_at < pg_catalog.now() - pg_catalog.make_interval(months => v_site.data_retention_months)
        returning e.occurred_at
      )
      select app_private.count_event_removals(v_site.id, 'retention', array(select occurred_at from deleted)) into v_count;
      v_result := pg_catalog.jsonb_set(v_result, '{events_deleted}', pg_catalog.to_jsonb((v_result ->> 'events_deleted')::int + v_count));
      delete from app_public.sessions s
       where s.site_id = v_site.id and s.ended_at < pg_catalog.now() - pg_catalog.make_interval(months => v_site.data_retention_months);
      get diagnostics v_count = row_count;
      v_result := pg_catalog.jsonb_set(v_result, '{sessions_deleted}', pg_catalog.to_jsonb((v_result ->> 'sessions_deleted')::int + v_count));
    end;
    update app_public.calls c set caller = null, visitor_id = null, gclid = null, click_id = null, click_id_type = null, session_id = null
     where c.site_id = v_site.id and c.started_at < pg_catalog.now() - pg_catalog.make_interval(months => v_site.data_retention_months)
       and (c.caller is not null or c.visitor_id is not null or c.gclid is not null or c.click_id is not null or c.session_id is not null);
    get diagnostics v_count = row_count;
    v_result := pg_catalog.jsonb_set(v_result, '{calls_stripped}', pg_catalog.to_jsonb((v_result ->> 'calls_stripped')::int + v_count));
  end loop;

  delete from app_public.consents c where c.recorded_at < pg_catalog.now() - interval '36 months';
  get diagnostics v_count = row_count; v_result := v_result || pg_catalog.jsonb_build_object('consents_deleted', v_count);
  -- Hashed identifiers and click ids are needed only until Google has the conversion (and a
  -- retraction could still follow): 90 days after the conversion's final state.
  -- (A row handed to Google's scheduled CSV import stays sent: it counts as final too.)
  delete from app_private.sale_identifiers i
   where not exists (select 1 from app_public.offline_conversion_queue q
                      where q.site_id = i.site_id and q.sale_id = i.sale_id
                        and ((q.status in ('pending', 'processing') or (q.status = 'sent' and q.request_id is distinct from 'csv'))
                             or q.updated_at > pg_catalog.now() - interval '90 days'));
  get diagnostics v_count = row_count; v_result := v_result || pg_catalog.jsonb_build_object('sale_identifiers_deleted', v_count);
  -- On the same schedule, nothing personal stays linked to the sale either.
  update app_public.sales s set visitor_id = null, gclid = null, click_id = null, click_id_type = null
   where (s.visitor_id is not null or s.gclid is not null or s.click_id is not null)
     and not exists (select 1 from app_public.offline_conversion_queue q
                      where q.site_id = s.site_id and q.sale_id = s.id
                        and ((q.status in ('pending', 'processing') or (q.status = 'sent' and q.request_id is distinct from 'csv'))
                             or q.updated_at > pg_catalog.now() - interval '90 days'));
  get diagnostics v_count = row_count; v_result := v_result || pg_catalog.jsonb_build_object('sales_stripped', v_count);
  update app_public.offline_conversion_queue q set click_id = null, click_id_type = null
   where (q.status in ('accepted', 'failed', 'cancelled') or (q.status = 'sent' and q.request_id = 'csv'))
     and q.updated_at < pg_catalog.now() - interval '90 days' and q.click_id is not null;
  get diagnostics v_count = row_count; v_result := v_result || pg_catalog.jsonb_build_object('conversion_click_ids_stripped', v_count);
  return v_result;
end;
$$;
comment on function app_private.retention_cleanup() is
  E'Deletes or strips personal data past its retention (site months for events, sessions and calls; 36 months for consents; 90 days after delivery for hashed identifiers and click ids).';

-- Whole partitions of events and sessions older than 13 months go at partition maintenance.
update partman.part_config set retention = '13 months', retention_keep_table = false, retention_keep_index = false
 where parent_table in ('app_public.events', 'app_public.sessions');

/* ---------------------------------------------------------------- reconciliation */

do $$
begin
  if not exists (select 1 from pg_catalog.pg_attribute a where a.attrelid = 'app_public.billing_reconciliation_result'::regclass
                  and a.attname = 'events_removed' and not a.attisdropped) then
    alter type app_public.billing_reconciliation_result add attribute events_removed bigint;
  end if;
end;
$$;
comment on type app_public.billing_reconciliation_result is
  E'Ledger vs events (stored, plus removed for privacy) vs frozen snapshot for one site and month; drift names every disagreement (empty when all agree).';

create or replace function app_public.billing_reconciliation(site_id uuid, period date) returns app_public.billing_reconciliation_result
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
  -- Events erased or past their retention are gone from events but still in the ledger (it holds
  -- no personal data): they are counted, so they are not drift.
  select coalesce(sum(x.events), 0) into r.events_removed
    from app_private.event_removals x where x.site_id = r.site_id and x.period = r.period;
  if r.events_stored + r.events_removed <> r.ledger_billable + r.ledger_non_billable then
    r.drift := r.drift || pg_catalog.format('events: %s stored and %s removed for privacy, but the ledger has %s rows',
                                            r.events_stored, r.events_removed, r.ledger_billable + r.ledger_non_billable);
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

/* ---------------------------------------------------------------- loose ends */

-- A CRM may use an email or phone number as its order id: the audit log keeps the sale's id, not that.
drop trigger if exists _500_audit on app_public.sales;
create trigger _500_audit after insert or update or delete on app_public.sales
  for each row execute function app_private.tg__audit('site_id', 'id', '-external_id', '-visitor_id', '-gclid', '-click_id');

/*
 * Events, sessions and the ledger are partitioned and carry no foreign key to sites: deleting a
 * site removes them here. (A site with frozen invoices cannot be deleted at all.)
 */
create function app_private.tg__forget_site_tracking() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  delete from app_public.events e where e.site_id = old.id;
  delete from app_public.sessions s where s.site_id = old.id;
  delete from app_public.ingest_idempotency l where l.site_id = old.id;
  delete from app_private.event_removals r where r.site_id = old.id;
  return null;
end;
$$;
comment on function app_private.tg__forget_site_tracking() is E'Deletes a deleted site''s events, sessions and ledger rows (partitioned tables carry no foreign key).';
drop trigger if exists _900_forget_tracking on app_public.sites;
create trigger _900_forget_tracking after delete on app_public.sites
  for each row execute function app_private.tg__forget_site_tracking();
