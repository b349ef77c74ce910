/*
 * What the upload task reads and writes around a call to Google. The task owns no state of
 * its own: what to send comes from conversion_payloads, what happened goes back through
 * record_upload_outcomes, and both are keyed by the lease the task holds.
 */
drop function if exists app_private.conversion_payloads(uuid, uuid[]) cascade;
drop function if exists app_private.google_time(timestamptz, text) cascade;
drop function if exists app_private.record_upload_outcomes(uuid, text, jsonb, text) cascade;
drop function if exists app_private.release_claimed_conversions(uuid, text, text, text, integer) cascade;
drop function if exists app_private.sites_with_due_conversions(text) cascade;
drop function if exists app_private.mark_destination_needs_reauth(uuid, text) cascade;

create function app_private.google_time(at timestamptz, zone text) returns text
  language sql stable strict
  set search_path to pg_catalog, public, pg_temp
as $$
  select pg_catalog.to_char(at at time zone zone, 'YYYY-MM-DD HH24:MI:SS')
         || case when o.minutes < 0 then '-' else '+' end
         || pg_catalog.to_char(pg_catalog.abs(o.minutes) / 60, 'FM00') || ':' || pg_catalog.to_char(pg_catalog.abs(o.minutes) % 60, 'FM00')
    from (select (extract(epoch from ((at at time zone zone) - (at at time zone 'UTC'))) / 60)::integer as minutes) o;
$$;
comment on function app_private.google_time(timestamptz, text) is E'A time as Google''s conversion imports want it: yyyy-mm-dd hh:mm:ss+hh:mm in the given zone.';

/*
 * The claimed rows as Google wants them: time in the site's zone as yyyy-mm-dd hh:mm:ss+hh:mm
 * (never before the click it reports), hashed identifiers only with ad_user_data granted.
 */
create function app_private.conversion_payloads(site_id uuid, ids uuid[])
  returns table (id uuid, kind text, order_id text, click_id text, click_id_type text, conversion_time text, adjustment_time text,
                 value text, currency text, email_sha256 text, phone_sha256 text, ad_user_data text, ad_personalization text,
                 conversion_at timestamptz)
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select q.id, q.kind, q.order_id, q.click_id, q.click_id_type,
         app_private.google_time(greatest(q.conversion_at, x.started_at + interval '1 second'), st.timezone),
         app_private.google_time(pg_catalog.now(), st.timezone),
         q.value::text, q.currency,
         case when q.ad_user_data = 'granted' then i.email_sha256 end,
         case when q.ad_user_data = 'granted' then i.phone_sha256 end,
         q.ad_user_data, q.ad_personalization, q.conversion_at
    from app_public.offline_conversion_queue q
    join app_public.sites st on st.id = q.site_id
    join app_public.sales s on s.site_id = q.site_id and s.id = q.sale_id
    left join app_private.sale_identifiers i on i.site_id = q.site_id and i.sale_id = q.sale_id
    left join lateral (select min(se.started_at) as started_at from app_public.sessions se
                        where se.site_id = s.site_id and se.id = s.session_id) x on true
   where q.site_id = conversion_payloads.site_id and q.id = any (conversion_payloads.ids);
$$;
comment on function app_private.conversion_payloads(uuid, uuid[]) is E'Claimed queue rows in the shape the rails send.';


/*
 * Records one outcome per row: {"id", "kind": accepted|sent|retry|failed, "code", "message",
 * "retry_after_seconds"}. Only rows this worker still holds (processing, its lease) change: a
 * worker whose lease ran out must not overwrite what its successor did.
 */
create function app_private.record_upload_outcomes(site_id uuid, worker text, outcomes jsonb, request_id text default null)
  returns integer
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_count integer;
begin
  update app_public.offline_conversion_queue q
     set status = case o.kind when 'accepted' then 'accepted' when 'sent' then 'sent' when 'retry' then 'pending' else 'failed' end,
         retry_at = case when o.kind = 'retry' then pg_catalog.now() + pg_catalog.make_interval(secs => coalesce(o.retry_after_seconds, 300)) else q.retry_at end,
         last_error_code = case when o.kind in ('accepted', 'sent') then o.code else coalesce(o.code, 'UNKNOWN') end,
         last_error_message = case when o.kind in ('accepted', 'sent') then null else pg_catalog.left(o.message, 1000) end,
         request_id = coalesce(record_upload_outcomes.request_id, q.request_id),
         sent_at = case when o.kind in ('accepted', 'sent') then coalesce(q.sent_at, pg_catalog.now()) else q.sent_at end,
         accepted_at = case when o.kind = 'accepted' then pg_catalog.now() else q.accepted_at end,
         locked_by = null, locked_until = null
    from pg_catalog.jsonb_to_recordset(record_upload_outcomes.outcomes)
           as o(id uuid, kind text, code text, message text, retry_after_seconds integer)
   where q.site_id = record_upload_outcomes.site_id and q.id = o.id
     and q.status = 'processing' and q.locked_by = record_upload_outcomes.worker;
  get diagnostics v_count = row_count;
  return v_count;
end;
$$;
comment on function app_private.record_upload_outcomes(uuid, text, jsonb, text) is
  E'Applies the rails'' per-row outcomes to rows the worker still holds; returns how many changed.';

/* Gives claimed rows back untouched (e.g. the destination needs re-authorisation). */
create function app_private.release_claimed_conversions(site_id uuid, worker text, code text, message text, retry_after_seconds integer)
  returns integer
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_count integer;
begin
  update app_public.offline_conversion_queue q
     set status = 'pending', locked_by = null, locked_until = null, attempts = greatest(q.attempts - 1, 0),
         last_error_code = release_claimed_conversions.code, last_error_message = release_claimed_conversions.message,
         retry_at = pg_catalog.now() + pg_catalog.make_interval(secs => release_claimed_conversions.retry_after_seconds)
   where q.site_id = release_claimed_conversions.site_id and q.status = 'processing' and q.locked_by = release_claimed_conversions.worker;
  get diagnostics v_count = row_count;
  return v_count;
end;
$$;
comment on function app_private.release_claimed_conversions(uuid, text, text, text, integer) is E'Returns a worker''s claimed rows to pending.';

create function app_private.mark_destination_needs_reauth(destination_id uuid, code text) returns void
  language sql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
  update app_public.destinations d set status = 'needs_reauth', status_reason = mark_destination_needs_reauth.code
   where d.id = mark_destination_needs_reauth.destination_id and d.status = 'active';
$$;
comment on function app_private.mark_destination_needs_reauth(uuid, text) is E'Google refused the destination''s credentials: a person must set them again.';

/* For the sweep: sites with rows due now (pending past retry_at, or an expired lease) and a live destination. */
create function app_private.sites_with_due_conversions(provider text)
  returns setof uuid
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select distinct q.site_id from app_public.offline_conversion_queue q
   where q.provider = sites_with_due_conversions.provider
     and ((q.status = 'pending' and q.retry_at <= pg_catalog.now()) or (q.status = 'processing' and q.locked_until < pg_catalog.now()))
     and exists (select 1 from app_public.destinations d where d.site_id = q.site_id and d.status = 'active');
$$;
comment on function app_private.sites_with_due_conversions(text) is E'Sites whose conversions are due for upload.';
