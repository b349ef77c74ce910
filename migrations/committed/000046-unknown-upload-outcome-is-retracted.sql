--! Previous: sha1:729fa83e68b0d82fdb52ed7a5bf2774e8fae6940
--! Hash: sha1:70717c4991668665c17ac5b0978ac48251eb3d2e
--! Message: unknown-upload-outcome-is-retracted

--! split: 1-current.sql
/*
 * An upload whose outcome is unknown counts as one Google may have.
 *
 * When an upload times out or its connection drops (DEADLINE_EXCEEDED, UNAVAILABLE, CANCELLED,
 * UNKNOWN, INTERNAL, ABORTED), the rows go back to `pending` to be sent again, the same order
 * ids and all, but Google may already have processed them. Undoing the sale, or erasing its
 * subject, before the re-send cancelled such a conversion as never delivered and queued no
 * retraction, so a conversion Google did take stayed counted. Now a pending conversion whose last
 * upload ended that way is cancelled and retracted (where the rail can; Google answers a
 * retraction of an order it never had with a code of its own, which the row then shows).
 */
create or replace function app_private.upload_outcome_unknown(q app_public.offline_conversion_queue) returns boolean
  language sql immutable
as $$
  select q.status = 'pending' and q.attempts > 0
     and q.last_error_code in ('DEADLINE_EXCEEDED', 'UNAVAILABLE', 'CANCELLED', 'UNKNOWN', 'INTERNAL', 'ABORTED');
$$;
comment on function app_private.upload_outcome_unknown(app_public.offline_conversion_queue) is
  E'True for a pending conversion whose last upload ended without an answer (timeout, dropped connection): Google may have it.';

create or replace function app_private.withdraw_conversion(site_id uuid, sale_id uuid) returns void
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_row app_public.offline_conversion_queue;
begin
  select * into v_row from app_public.offline_conversion_queue q
   where q.site_id = withdraw_conversion.site_id and q.sale_id = withdraw_conversion.sale_id and q.kind = 'conversion'
     for update;
  if v_row.status = 'pending' then
    update app_public.offline_conversion_queue q set status = 'cancelled', last_error_code = 'SALE_UNDONE',
           last_error_message = case when app_private.upload_outcome_unknown(v_row)
                                     then 'The sale was undone after an upload whose outcome is unknown; a retraction follows.'
                                     else 'The sale was undone before delivery.' end
     where q.site_id = v_row.site_id and q.id = v_row.id;
  end if;
  if v_row.status in ('processing', 'sent', 'accepted') or app_private.upload_outcome_unknown(v_row) then
    insert into app_public.offline_conversion_queue (site_id, sale_id, kind, order_id, click_id, click_id_type, conversion_at, value, currency,
                                                     ad_user_data, ad_personalization)
    values (v_row.site_id, v_row.sale_id, 'retraction', v_row.order_id, v_row.click_id, v_row.click_id_type, v_row.conversion_at,
            v_row.value, v_row.currency, v_row.ad_user_data, v_row.ad_personalization)
    on conflict on constraint offline_conversion_queue_once do update set status = 'pending', retry_at = pg_catalog.now()
      where offline_conversion_queue.status = 'cancelled';
    perform app_private.enqueue_upload(v_row.site_id, v_row.provider);
  end if;
end;
$$;
comment on function app_private.withdraw_conversion(uuid, uuid) is
  E'Cancels a sale''s undelivered conversion, or queues a retraction of one Google may have (delivered, in flight, or sent without an answer).';

create or replace function app_private.carry_out_erasure(site_id uuid, request_id uuid) returns jsonb
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_request app_public.erasure_requests;
  v_subject text;
  v app_private.subject_link_set;
  v_receipt jsonb := '{}';
  v_count integer;
  v_conversion app_public.offline_conversion_queue;
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
     set caller = null, visitor_id = null, gclid = null, session_id = null, click_id = null, click_id_type = null,
         erased_at = coalesce(c.erased_at, pg_catalog.now())
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
    end if;
    if v_conversion.status in ('processing', 'sent', 'accepted') or app_private.upload_outcome_unknown(v_conversion) then
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
