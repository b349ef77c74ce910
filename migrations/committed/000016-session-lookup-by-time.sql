--! Previous: sha1:ad2c3b94c438784dcb1a45dfc0eb46e5b122f78e
--! Hash: sha1:38364b413bb5855ccfea53d4cdaa8beeb33c78bf
--! Message: session-lookup-by-time

--! split: 1-current.sql
--! A conversion's time reads only the sessions partitions that can change it.
--
-- The payload's time is the sale's, or a second after the start of the session that brought
-- the sale when that is later. The session was looked up by id in every partition of
-- `sessions` (13 months kept, 3 made ahead), one index probe each per conversion shaped, though
-- a session that began before the sale's time less a second never changes the result. Bounding
-- the look-up by that time gives the same answer and lets PostgreSQL skip the earlier months.
create or replace function app_private.shape_conversion_payloads(site_id uuid, queued app_public.offline_conversion_queue[])
  returns table (id uuid, kind text, order_id text, click_id text, click_id_type text, conversion_time text, adjustment_time text,
                 value text, currency text, email_sha256 text, phone_sha256 text, ad_user_data text, ad_personalization text,
                 conversion_at timestamptz, caller_id text, call_start_time text)
  language sql stable
  set search_path to pg_catalog, public, pg_temp
  set jit to off
as $$
  select q.id, q.kind, q.order_id, q.click_id, q.click_id_type,
         app_private.google_time(t.conversion_at, st.timezone),
         case when q.kind = 'retraction' then app_private.google_time(pg_catalog.now(), st.timezone) end,
         q.value::text, q.currency,
         case when q.ad_user_data = 'granted' then i.email_sha256 end,
         case when q.ad_user_data = 'granted' then i.phone_sha256 end,
         q.ad_user_data, q.ad_personalization, q.conversion_at,
         -- A call through a Google forwarding number is reported as a call conversion (caller
         -- number and call start; the number is user data, so only with ad_user_data granted).
         case when q.ad_user_data = 'granted' then c.caller end,
         case when q.ad_user_data = 'granted' then app_private.google_time(c.started_at, st.timezone) end
    from pg_catalog.unnest(shape_conversion_payloads.queued) q
    cross join (select st.timezone from app_public.sites st where st.id = shape_conversion_payloads.site_id) st
    cross join lateral (select s.session_id, s.call_id from app_public.sales s where s.site_id = q.site_id and s.id = q.sale_id offset 0) s
    left join lateral (select i.email_sha256, i.phone_sha256 from app_private.sale_identifiers i
                        where i.site_id = q.site_id and i.sale_id = q.sale_id offset 0) i on true
    left join lateral (select c.caller, c.started_at from app_public.calls c
                        where c.site_id = q.site_id and c.id = s.call_id and c.via_google_forwarding and c.caller is not null) c on true
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
