--! Previous: sha1:1c2f7a7090881771d7b23aa27839f84b10784c53
--! Hash: sha1:9f3b1ee2ebaa539ad0a301ed2ff9eb839c67e5f3
--! Message: late-clicks-for-due-conversions

--! split: 1-current.sql
--! An upload run looks for late click ids only on the conversions it is about to claim.
--
-- Every run re-resolved the attribution of every pending conversion without a click id, and
-- locked each of them. A site's sales with nothing Google can match (organic visitors, say)
-- stay pending for 7 days, so a site with a steady trickle of them paid for all of them on
-- every run, most runs finding nothing (measured: 5,000 such conversions, 0.94 s per run).
-- The upload run now resolves only those whose retry time has come; a conversion waiting for
-- a click id is due every 6 hours, so a late click still reaches it, at the latest 6 hours on.
-- An editor's explicit refresh (update_offline_conversion_queue_attribution) still looks at
-- every pending conversion at once.
drop function if exists app_private.refresh_conversion_attribution(uuid);
create or replace function app_private.refresh_conversion_attribution(site_id uuid, due_only boolean) returns integer
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_count integer := 0;
  v_item record;
begin
  for v_item in
    select s.*, q.id as queue_id
      from app_public.offline_conversion_queue q
      join app_public.sales s on s.site_id = q.site_id and s.id = q.sale_id
     where q.site_id = refresh_conversion_attribution.site_id and q.stage = 'open' and q.kind = 'conversion' and q.status = 'pending' and q.click_id is null
       and (not refresh_conversion_attribution.due_only or q.retry_at <= pg_catalog.now())
       for update of q
  loop
    declare
      v_attribution record;
    begin
      select * into v_attribution
        from app_private.resolve_sale_attribution(v_item.site_id, v_item.session_id, v_item.visitor_id, v_item.call_id, v_item.gclid,
                                                  v_item.occurred_at, v_item.session_event_id);
      continue when v_attribution.click_id is null;
      update app_public.sales s
         set session_id = coalesce(v_attribution.attributed_session_id, s.session_id),
             session_event_id = coalesce(v_attribution.session_anchor_event_id, s.session_event_id), attribution_tier = v_attribution.attribution_tier,
             attribution_source = v_attribution.attribution_source, click_id = v_attribution.click_id, click_id_type = v_attribution.click_id_type
       where s.site_id = v_item.site_id and s.id = v_item.id;
      update app_public.offline_conversion_queue q
         set click_id = v_attribution.click_id, click_id_type = v_attribution.click_id_type, retry_at = least(q.retry_at, pg_catalog.now())
       where q.site_id = v_item.site_id and q.id = v_item.queue_id;
      v_count := v_count + 1;
    end;
  end loop;
  if v_count > 0 then
    perform app_private.enqueue_upload(refresh_conversion_attribution.site_id, 'google');
  end if;
  return v_count;
end;
$$;
comment on function app_private.refresh_conversion_attribution(uuid, boolean) is
  E'Gives pending conversions without a click id one learned since the sale (a late ad click, a matched call); with due_only, only those whose retry time has come. Returns how many gained one.';
revoke all on function app_private.refresh_conversion_attribution(uuid, boolean) from public;

create or replace function app_public.update_offline_conversion_queue_attribution(site_id uuid) returns integer
  language plpgsql volatile strict security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  perform app_private.assert_caller_role(update_offline_conversion_queue_attribution.site_id, 'editor', 'refresh_attribution',
                                         'offline_conversion_queue', update_offline_conversion_queue_attribution.site_id::text);
  return app_private.refresh_conversion_attribution(update_offline_conversion_queue_attribution.site_id, false);
end;
$$;
comment on function app_public.update_offline_conversion_queue_attribution(uuid) is
  E'Fills Google click ids that became known after the sale into the site''s conversions not yet delivered (editor or above); returns how many changed. The uploader does this itself for the conversions it is about to send.';
