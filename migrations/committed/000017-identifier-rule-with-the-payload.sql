--! Previous: sha1:38364b413bb5855ccfea53d4cdaa8beeb33c78bf
--! Hash: sha1:79cffb40ae62380e8c5da2f05e1d86884de9850f
--! Message: identifier-rule-with-the-payload

--! split: 1-current.sql
--! Whether a conversion can be matched at all is decided with its payload.
--
-- The rule (a click id, or a caller, email or phone that ad_user_data lets us send; otherwise
-- wait up to 7 days after the sale for a click id) lived in the upload loop's TypeScript, apart
-- from the rule of which identifiers may be sent, which is here. Payload shaping now says which
-- rows cannot be matched (`unmatchable`: AWAITING_CLICK_ID or NO_IDENTIFIER); the upload loop
-- only turns that into an outcome. The payload no longer carries the raw conversion_at, which
-- only that rule read. The return type changes, so the three functions are made anew.
drop function if exists app_private.claim_conversion_payloads(uuid, integer, text, integer, uuid);
drop function if exists app_private.conversion_payloads(uuid, uuid[]);
drop function if exists app_private.shape_conversion_payloads(uuid, app_public.offline_conversion_queue[]);

create function app_private.shape_conversion_payloads(site_id uuid, queued app_public.offline_conversion_queue[])
  returns table (id uuid, kind text, order_id text, click_id text, click_id_type text, conversion_time text, adjustment_time text,
                 value text, currency text, email_sha256 text, phone_sha256 text, ad_user_data text, ad_personalization text,
                 caller_id text, call_start_time text, unmatchable text)
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

create function app_private.conversion_payloads(site_id uuid, ids uuid[])
  returns table (id uuid, kind text, order_id text, click_id text, click_id_type text, conversion_time text, adjustment_time text,
                 value text, currency text, email_sha256 text, phone_sha256 text, ad_user_data text, ad_personalization text,
                 caller_id text, call_start_time text, unmatchable text)
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select p.* from app_private.shape_conversion_payloads(conversion_payloads.site_id, array(
    select q from app_public.offline_conversion_queue q
     where q.site_id = conversion_payloads.site_id and q.id = any (conversion_payloads.ids))) p;
$$;

create function app_private.claim_conversion_payloads(site_id uuid, "limit" integer, worker text, lease_seconds integer, destination_id uuid)
  returns table (id uuid, kind text, order_id text, click_id text, click_id_type text, conversion_time text, adjustment_time text,
                 value text, currency text, email_sha256 text, phone_sha256 text, ad_user_data text, ad_personalization text,
                 caller_id text, call_start_time text, unmatchable text)
  language sql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
  select p.* from app_private.shape_conversion_payloads(claim_conversion_payloads.site_id, array(
    select j from app_private.claim_offline_conversion_jobs('google', claim_conversion_payloads."limit", claim_conversion_payloads.site_id,
                                                            claim_conversion_payloads.worker, claim_conversion_payloads.lease_seconds,
                                                            claim_conversion_payloads.destination_id) j)) p;
$$;

comment on function app_private.shape_conversion_payloads(uuid, app_public.offline_conversion_queue[]) is
  E'Queue rows in the shape the rails send: time in the site''s zone (never before the click), identifiers and caller only with ad_user_data granted, and whether Google could match the row at all.';
comment on function app_private.conversion_payloads(uuid, uuid[]) is
  E'Queue rows in the shape the rails send: time in the site''s zone (never before the click), identifiers and caller only with ad_user_data granted, and whether Google could match the row at all.';
comment on function app_private.claim_conversion_payloads(uuid, integer, text, integer, uuid) is
  E'Claims up to limit due rows of a site for a destination (lease, destination recorded) and returns them as conversion_payloads shapes them.';
revoke all on function app_private.shape_conversion_payloads(uuid, app_public.offline_conversion_queue[]) from public;
revoke all on function app_private.conversion_payloads(uuid, uuid[]) from public;
revoke all on function app_private.claim_conversion_payloads(uuid, integer, text, integer, uuid) from public;
