--! Previous: sha1:79cffb40ae62380e8c5da2f05e1d86884de9850f
--! Hash: sha1:27c02aead57ba6380c6681d46bb541c3c5ffcb21
--! Message: subject-export-without-queue-stage

--! split: 1-current.sql
--! A subject's access export shows conversions without the queue's own machinery.
--
-- Migration 000015 gave the queue a derived `stage` column for its indexes. It says nothing
-- about the subject that `status` does not, so the export leaves it out, like the lease.
create or replace function app_public.export_subject_data(site_id uuid, kind text, value text) returns jsonb
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_normalized text;
  v app_private.subject_link_set;
begin
  perform app_private.assert_caller_role(export_subject_data.site_id, 'admin', 'export_subject_data', 'sites', export_subject_data.site_id::text);
  v_normalized := app_private.normalize_subject(export_subject_data.kind, export_subject_data.value);
  v := app_private.subject_links(export_subject_data.site_id, export_subject_data.kind, v_normalized);
  -- Who looked at whose data is itself recorded (the subject only as the site's salted hash).
  perform app_private.append_audit(export_subject_data.site_id, 'access:export_subject_data', 'subjects', export_subject_data.kind,
    null, pg_catalog.jsonb_build_object('subject_hash', app_private.hash_subject(export_subject_data.site_id, export_subject_data.kind, v_normalized)),
    app_hidden.current_user_id(), app_hidden.current_api_key_id(), session_user);
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
    'conversions', coalesce((select pg_catalog.jsonb_agg(pg_catalog.to_jsonb(q) - 'locked_by' - 'locked_until' - 'stage' order by q.created_at)
                               from app_public.offline_conversion_queue q
                              where q.site_id = export_subject_data.site_id and q.sale_id = any(v.sale_ids)), '[]'));
end;
$$;
