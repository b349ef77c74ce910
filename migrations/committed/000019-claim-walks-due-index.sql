--! Previous: sha1:27c02aead57ba6380c6681d46bb541c3c5ffcb21
--! Hash: sha1:1c2f7a7090881771d7b23aa27839f84b10784c53
--! Message: claim-walks-due-index

--! split: 1-current.sql
--! The claim walks the due index in order; payload shaping reads the site's time zone once.
--
-- A site's due rows are found through offline_conversion_queue_site_due_idx, whose order is the
-- claim's order, so an index scan stops after `limit` rows. With a few thousand rows due the
-- planner preferred a bitmap scan instead: it reads every due row of the site and sorts them
-- for the first 2,000 (measured: 12 ms against 1.7 ms for 10,000 due rows). Bitmap scans are
-- off for the claim.
alter function app_private.claim_offline_conversion_jobs(text, integer, uuid, text, integer, uuid)
  set enable_bitmapscan to off;

-- Shaping looked the site's time zone up once per row (the planner put the one-row join on the
-- inner side of the loop over the batch); a materialized CTE reads it once per call. The
-- call look-up keeps its own index condition on the call's id (offset 0), whatever the
-- statistics say about how many calls a site has.
create or replace function app_private.shape_conversion_payloads(site_id uuid, queued app_public.offline_conversion_queue[])
  returns table (id uuid, kind text, order_id text, click_id text, click_id_type text, conversion_time text, adjustment_time text,
                 value text, currency text, email_sha256 text, phone_sha256 text, ad_user_data text, ad_personalization text,
                 caller_id text, call_start_time text, unmatchable text)
  language sql stable
  set search_path to pg_catalog, public, pg_temp
  set jit to off
as $$
  with site as materialized (select st.timezone from app_public.sites st where st.id = shape_conversion_payloads.site_id)
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
         -- use) is not sent: it waits for a click id to turn up, for 7 days after the sale.
         case when q.kind = 'conversion' and q.click_id is null
                   and (q.ad_user_data <> 'granted' or (c.caller is null and i.email_sha256 is null and i.phone_sha256 is null))
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
