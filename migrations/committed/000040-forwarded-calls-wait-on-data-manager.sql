--! Previous: sha1:bff076a5eca0a3fa6af4f1653f536a55d951f7e2
--! Hash: sha1:178fe6b3bcb31c926d31c9819b1f00cbdf55f95a
--! Message: forwarded-calls-wait-on-data-manager

--! split: 1-current.sql
/*
 * A sale from a call through a Google forwarding number waits for a click id on Data Manager.
 *
 * Payload shaping counted the caller's number as something Google can match a conversion by, so
 * such a sale with no click id, email or phone went to the rail at once. Only the Google Ads rail
 * sends call conversions; Data Manager refused the row locally (INVALID_NO_IDENTIFIERS) and it
 * failed for good, where the same sale from any other call waits (AWAITING_CLICK_ID) for a click
 * id to turn up. The caller now counts only when the site's live destination is on Google Ads.
 */
create or replace function app_private.shape_conversion_payloads(site_id uuid, queued app_public.offline_conversion_queue[])
  returns table (id uuid, kind text, order_id text, click_id text, click_id_type text, conversion_time text, adjustment_time text,
                 value text, currency text, email_sha256 text, phone_sha256 text, ad_user_data text, ad_personalization text,
                 caller_id text, call_start_time text, unmatchable text)
  language sql stable
  set search_path to pg_catalog, public, pg_temp
  set jit to off
as $$
  -- The site's time zone, and whether its live destination can send a call conversion (only the
  -- Google Ads rail can: Data Manager takes a click id, an email or a phone).
  with site as materialized (select st.timezone,
                                    exists (select 1 from app_public.destinations d
                                             where d.site_id = st.id and d.status <> 'paused' and d.rail = 'google_ads') as sends_calls
                               from app_public.sites st where st.id = shape_conversion_payloads.site_id)
  select q.id, q.kind, q.order_id, q.click_id, q.click_id_type,
         app_private.google_time(t.conversion_at, st.timezone),
         case when q.kind = 'retraction' then app_private.google_time(pg_catalog.now(), st.timezone) end,
         q.value::text, q.currency,
         case when q.ad_user_data = 'granted' then i.email_sha256 end,
         case when q.ad_user_data = 'granted' then i.phone_sha256 end,
         q.ad_user_data, q.ad_personalization,
         -- A call through a Google forwarding number is reported as a call conversion (caller
         -- number and call start; the number is user data, so only with ad_user_data granted).
         case when q.ad_user_data = 'granted' then c.caller end,
         case when q.ad_user_data = 'granted' then app_private.google_time(c.started_at, st.timezone) end,
         -- A conversion Google cannot match (no click id, and no caller, email or phone it may
         -- use; a caller only where the rail sends calls) is not sent: it waits for a click id to
         -- turn up, for 7 days after the sale.
         case when q.kind = 'conversion' and q.click_id is null
                   and (q.ad_user_data <> 'granted' or ((c.caller is null or not st.sends_calls) and i.email_sha256 is null and i.phone_sha256 is null))
              then case when q.conversion_at < pg_catalog.now() - interval '7 days' then 'NO_IDENTIFIER' else 'AWAITING_CLICK_ID' end
         end
    from site st
    cross join pg_catalog.unnest(shape_conversion_payloads.queued) q
    cross join lateral (select s.session_id, s.call_id from app_public.sales s where s.site_id = q.site_id and s.id = q.sale_id offset 0) s
    left join lateral (select i.email_sha256, i.phone_sha256 from app_private.sale_identifiers i
                        where i.site_id = q.site_id and i.sale_id = q.sale_id offset 0) i on true
    left join lateral (select c.caller, c.started_at from app_public.calls c
                        where c.site_id = q.site_id and c.id = s.call_id and c.via_google_forwarding and c.caller is not null offset 0) c on true
    -- Never before the click: a second after the session that brought the sale began. Only a
    -- session that began after the sale's time less a second can move it, so only the sessions
    -- partitions from the sale's month on are read (run-time pruning), not every month kept.
    cross join lateral (select case when s.session_id is null then q.conversion_at
                                    else greatest(q.conversion_at, (select min(se.started_at) + interval '1 second' from app_public.sessions se
                                                                     where se.site_id = q.site_id and se.id = s.session_id
                                                                       and se.started_at > q.conversion_at - interval '1 second')) end as conversion_at
                         offset 0) t
   where q.site_id = shape_conversion_payloads.site_id;
$$;
