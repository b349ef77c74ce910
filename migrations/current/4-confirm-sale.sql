/*
 * Sale → queue → job, in one transaction: confirm_sale_and_enqueue records the sale, resolves
 * its attribution, stores the customer's hashed identifiers, queues the conversion and the
 * upload job. Any failure leaves none of them.
 */
drop function if exists app_private.resolve_sale_attribution(uuid, uuid, text, uuid, text, timestamptz) cascade;
drop function if exists app_private.conversion_consent(app_public.sites, text, uuid) cascade;
drop function if exists app_private.enqueue_conversion(app_public.sales, jsonb) cascade;
drop function if exists app_private.withdraw_conversion(uuid, uuid) cascade;
drop function if exists app_private.record_sale(app_public.sites, text, numeric, text, timestamptz, uuid, text, text, text, text, text, jsonb, uuid) cascade;
drop function if exists app_public.confirm_sale_and_enqueue(uuid, text, numeric, text, timestamptz, uuid, text, text, text, text, text, jsonb) cascade;
drop function if exists app_private.refresh_conversion_attribution(uuid) cascade;
drop function if exists app_public.update_offline_conversion_queue_attribution(uuid) cascade;

/*
 * Where a sale came from, strongest link first: the session named, the call named (which
 * carries its session's attribution), the visitor's latest session in the 90 days before the
 * sale, a gclid alone (S1). The click id to upload is S1's own or S3's assisting one, and only
 * Google's kinds (gclid, gbraid, wbraid).
 */
create function app_private.resolve_sale_attribution(site_id uuid, session_id uuid, visitor_id text, call_id uuid, gclid text, at timestamptz)
  returns table (attributed_session_id uuid, attribution_tier text, attribution_source text, click_id text, click_id_type text, session_visitor_id text)
  language plpgsql stable
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_session app_public.sessions;
  v_call app_public.calls;
begin
  if resolve_sale_attribution.session_id is not null then
    select * into v_session from app_public.sessions s
     where s.site_id = resolve_sale_attribution.site_id and s.id = resolve_sale_attribution.session_id
     limit 1;
  end if;
  if v_session.id is null and resolve_sale_attribution.call_id is not null then
    select * into v_call from app_public.calls c
     where c.site_id = resolve_sale_attribution.site_id and c.id = resolve_sale_attribution.call_id;
    if v_call.session_id is not null then
      select * into v_session from app_public.sessions s
       where s.site_id = resolve_sale_attribution.site_id and s.id = v_call.session_id
       limit 1;
    end if;
  end if;
  if v_session.id is null and v_call.id is null and resolve_sale_attribution.visitor_id is not null then
    select * into v_session from app_public.sessions s
     where s.site_id = resolve_sale_attribution.site_id and s.visitor_key = resolve_sale_attribution.visitor_id
       and s.started_at <= resolve_sale_attribution.at and s.started_at > resolve_sale_attribution.at - interval '90 days'
     order by s.started_at desc, s.first_event_id desc
     limit 1;
  end if;

  if v_session.id is not null then
    attributed_session_id := v_session.id;
    attribution_tier := v_session.attribution_tier;
    attribution_source := v_session.attribution_source;
    session_visitor_id := v_session.visitor_id;
    if v_session.attribution_tier = 'S1' then
      click_id := v_session.click_id; click_id_type := v_session.click_id_type;
    elsif v_session.attribution_tier = 'S3' then
      click_id := v_session.assisting_click_id; click_id_type := v_session.assisting_click_id_type;
    end if;
  elsif v_call.id is not null and v_call.attribution_tier is not null then
    attribution_tier := v_call.attribution_tier;
    attribution_source := v_call.attribution_source;
    click_id := v_call.click_id; click_id_type := v_call.click_id_type;
  end if;
  if click_id is null and resolve_sale_attribution.gclid is not null then
    click_id := resolve_sale_attribution.gclid; click_id_type := 'gclid';
    if attribution_tier is null then
      attribution_tier := 'S1'; attribution_source := 'google_ads';
    end if;
  end if;
  if click_id_type not in ('gclid', 'gbraid', 'wbraid') then
    click_id := null; click_id_type := null;  -- msclkid and friends are not Google's
  end if;
  return next;
end;
$$;
comment on function app_private.resolve_sale_attribution(uuid, uuid, text, uuid, text, timestamptz) is
  E'The session, tier and Google click id a sale is attributed to, from its session, call, visitor or gclid.';

/*
 * The Consent Mode v2 signals a conversion carries: the visitor's latest banner choice, else
 * the consent recorded on the session's latest event, else the site's default. A CRM's own
 * record of consent (given with the sale) wins over all of them.
 */
create function app_private.conversion_consent(site app_public.sites, visitor_id text, session_id uuid)
  returns jsonb
  language plpgsql stable
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_consent jsonb;
begin
  if visitor_id is not null then
    select app_private.latest_consent(site.id, public.hmac(pg_catalog.convert_to(visitor_id, 'UTF8'), s.salt, 'sha256'))
      into v_consent from app_private.site_salts s where s.site_id = site.id;
  end if;
  if v_consent is null and session_id is not null then
    select e.consent into v_consent from app_public.events e
     where e.site_id = site.id and e.session_id = conversion_consent.session_id
     order by e.occurred_at desc, e.id desc
     limit 1;
  end if;
  return app_private.effective_consent(site, null, v_consent);
end;
$$;
comment on function app_private.conversion_consent(app_public.sites, text, uuid) is
  E'Consent signals for a conversion: the visitor''s latest choice, the session''s, or the site default.';

/* Queues a sale's conversion (once: ON CONFLICT DO NOTHING) and its upload job. */
create function app_private.enqueue_conversion(sale app_public.sales, consent jsonb)
  returns app_public.offline_conversion_queue
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_row app_public.offline_conversion_queue;
begin
  insert into app_public.offline_conversion_queue (site_id, sale_id, order_id, click_id, click_id_type, conversion_at, value, currency,
                                                   ad_user_data, ad_personalization)
  values (sale.site_id, sale.id, sale.external_id, sale.click_id, sale.click_id_type, sale.occurred_at, sale.amount, sale.currency,
          coalesce(consent ->> 'ad_user_data', 'unspecified'), coalesce(consent ->> 'ad_personalization', 'unspecified'))
  on conflict on constraint offline_conversion_queue_once do nothing
  returning * into v_row;
  if v_row.id is not null then
    perform app_private.enqueue_upload(sale.site_id, 'google');
  end if;
  return v_row;
end;
$$;
comment on function app_private.enqueue_conversion(app_public.sales, jsonb) is E'Queues the conversion of a sale, once, with its upload job.';

/*
 * A sale was undone: a conversion not yet handed to Google is cancelled; one Google may
 * already have (processing, sent, accepted) gets a retraction of its own.
 */
create function app_private.withdraw_conversion(site_id uuid, sale_id uuid) returns void
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
    update app_public.offline_conversion_queue q set status = 'cancelled', last_error_code = 'SALE_UNDONE', last_error_message = 'The sale was undone before delivery.'
     where q.site_id = v_row.site_id and q.id = v_row.id;
  elsif v_row.status in ('processing', 'sent', 'accepted') then
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
  E'Cancels a sale''s undelivered conversion, or queues a retraction of a delivered one.';

/*
 * The one writer of sales. Checks every field (OMSAL naming it), resolves attribution,
 * refuses a repeated external_id (OMSEX) and queues the conversion.
 */
create function app_private.record_sale(
  site app_public.sites, external_id text, amount numeric, currency text, occurred_at timestamptz,
  session_id uuid, visitor_id text, call_ref text, gclid text, email text, phone text, consent jsonb,
  conversation_id uuid
) returns app_public.sales
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_minor integer := app_hidden.currency_minor_units(record_sale.currency);
  v_email text := app_hidden.normalize_email(record_sale.email);
  v_phone text := app_hidden.normalize_phone(record_sale.phone);
  v_call app_public.calls;
  v_attribution record;
  v_sale app_public.sales;
begin
  if record_sale.external_id is null or record_sale.external_id !~ '^[[:graph:]]([[:graph:] ]{0,126}[[:graph:]])?$' then
    raise exception using errcode = 'OMSAL', message = 'external_id must be 1 to 128 printable characters.';
  end if;
  if record_sale.amount is null or record_sale.amount < 0 or record_sale.amount >= 1e12 then
    raise exception using errcode = 'OMSAL', message = 'amount must be a number from 0 up to 999999999999.';
  end if;
  if v_minor is null then
    raise exception using errcode = 'OMSAL', message = 'currency must be an ISO 4217 code in circulation, like TRY, EUR or USD.';
  end if;
  if pg_catalog.round(record_sale.amount, v_minor) <> record_sale.amount then
    raise exception using errcode = 'OMSAL', message = pg_catalog.format('amount has more decimals than %s allows (%s).', record_sale.currency, v_minor);
  end if;
  if record_sale.occurred_at is null or record_sale.occurred_at > pg_catalog.now() + interval '5 minutes'
     or record_sale.occurred_at < pg_catalog.now() - interval '1 year' then
    raise exception using errcode = 'OMSAL', message = 'occurred_at must be a time with a zone, not in the future and within the last year.';
  end if;
  if record_sale.visitor_id !~ '^[A-Za-z0-9_-]{1,64}$' or record_sale.gclid !~ '^[A-Za-z0-9_-]{1,255}$' then
    raise exception using errcode = 'OMSAL', message = 'visitor_id and gclid must be plain identifiers (letters, digits, _ and -).';
  end if;
  if record_sale.email is not null and v_email is null then
    raise exception using errcode = 'OMSAL', message = 'email is not a valid email address.';
  end if;
  if record_sale.phone is not null and v_phone is null then
    raise exception using errcode = 'OMSAL', message = 'phone must be an international number with its country code, like +90 555 111 22 33.';
  end if;
  if record_sale.consent is not null and (not app_private.valid_consent(record_sale.consent)
      or exists (select 1 from pg_catalog.jsonb_object_keys(record_sale.consent) k where k not in ('ad_user_data', 'ad_personalization'))) then
    raise exception using errcode = 'OMSAL', message = 'consent may hold ad_user_data and ad_personalization, each granted or denied.';
  end if;

  if record_sale.session_id is not null and not exists (
       select 1 from app_public.sessions s where s.site_id = site.id and s.id = record_sale.session_id) then
    raise exception using errcode = 'OMUSS', message = 'No session of this site has this id.';
  end if;
  if record_sale.call_ref is not null then
    select * into v_call from app_public.calls c
     where c.site_id = site.id
       and (c.call_id = record_sale.call_ref
            or (record_sale.call_ref ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' and c.id = record_sale.call_ref::uuid))
     order by c.call_id = record_sale.call_ref desc
     limit 1;
    if v_call.id is null then
      raise exception using errcode = 'OMUCL', message = 'No call of this site has this id.';
    end if;
  end if;

  select * into v_attribution
    from app_private.resolve_sale_attribution(site.id, record_sale.session_id, record_sale.visitor_id, v_call.id, record_sale.gclid, record_sale.occurred_at);

  insert into app_public.sales as s (site_id, external_id, amount, currency, occurred_at, conversation_id, call_id, session_id,
                                     visitor_id, gclid, attribution_tier, attribution_source, click_id, click_id_type,
                                     created_by_user_id, created_by_api_key_id)
  values (site.id, record_sale.external_id, record_sale.amount, record_sale.currency, record_sale.occurred_at,
          record_sale.conversation_id, v_call.id, v_attribution.attributed_session_id, record_sale.visitor_id, record_sale.gclid,
          v_attribution.attribution_tier, v_attribution.attribution_source, v_attribution.click_id, v_attribution.click_id_type,
          app_hidden.current_user_id(), app_hidden.current_api_key_id())
  on conflict on constraint sales_external_id_key do nothing
  returning * into v_sale;
  if v_sale.id is null then
    raise exception using errcode = 'OMSEX', message = 'A sale with this external_id already exists.';
  end if;

  if v_email is not null or v_phone is not null then
    insert into app_private.sale_identifiers (site_id, sale_id, email_sha256, phone_sha256)
    values (site.id, v_sale.id, app_hidden.identifier_sha256(v_email), app_hidden.identifier_sha256(v_phone));
  end if;

  perform app_private.enqueue_conversion(v_sale,
    coalesce(record_sale.consent, app_private.conversion_consent(site, coalesce(record_sale.visitor_id, v_attribution.session_visitor_id),
                                                                 v_attribution.attributed_session_id)));
  return v_sale;
end;
$$;
comment on function app_private.record_sale(app_public.sites, text, numeric, text, timestamptz, uuid, text, text, text, text, text, jsonb, uuid) is
  E'Validates and records a sale, its hashed identifiers and its queued conversion (OMSAL, OMSEX, OMUSS, OMUCL).';

create function app_public.confirm_sale_and_enqueue(
  site_id uuid, external_id text, amount numeric, currency text, occurred_at timestamptz,
  session_id uuid default null, visitor_id text default null, call_id text default null, gclid text default null,
  email text default null, phone text default null, consent jsonb default null
) returns app_public.sales
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_site app_public.sites;
begin
  perform app_private.assert_caller_role(confirm_sale_and_enqueue.site_id, 'editor', 'confirm_sale', 'sales', confirm_sale_and_enqueue.external_id);
  select * into v_site from app_public.sites s where s.id = confirm_sale_and_enqueue.site_id;
  if v_site.id is null then
    raise exception using errcode = 'OMNSS', message = 'No such site.';
  end if;
  return app_private.record_sale(v_site, confirm_sale_and_enqueue.external_id, confirm_sale_and_enqueue.amount,
    pg_catalog.upper(confirm_sale_and_enqueue.currency), confirm_sale_and_enqueue.occurred_at, confirm_sale_and_enqueue.session_id,
    confirm_sale_and_enqueue.visitor_id, confirm_sale_and_enqueue.call_id, confirm_sale_and_enqueue.gclid,
    confirm_sale_and_enqueue.email, confirm_sale_and_enqueue.phone, confirm_sale_and_enqueue.consent, null);
end;
$$;
comment on function app_public.confirm_sale_and_enqueue(uuid, text, numeric, text, timestamptz, uuid, text, text, text, text, text, jsonb) is
  E'Confirms a sale (editor or above) and, in the same transaction, queues its conversion for Google and the upload job. A repeated external_id is sale_exists and changes nothing. callId is our call id or the provider''s; email and phone are kept only as normalised SHA-256; consent (ad_user_data, ad_personalization) is the CRM''s own record, if it has one.';

/*
 * A click id that becomes known after the sale (a late event re-attributed the session, a
 * call was matched) reaches conversions Google does not have yet: re-resolve every pending
 * conversion of the site that has none. Returns how many gained one.
 */
create function app_private.refresh_conversion_attribution(site_id uuid) returns integer
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
     where q.site_id = refresh_conversion_attribution.site_id and q.kind = 'conversion' and q.status = 'pending' and q.click_id is null
       for update of q
  loop
    declare
      v_attribution record;
    begin
      select * into v_attribution
        from app_private.resolve_sale_attribution(v_item.site_id, v_item.session_id, v_item.visitor_id, v_item.call_id, v_item.gclid, v_item.occurred_at);
      continue when v_attribution.click_id is null;
      update app_public.sales s
         set session_id = coalesce(s.session_id, v_attribution.attributed_session_id), attribution_tier = v_attribution.attribution_tier,
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
comment on function app_private.refresh_conversion_attribution(uuid) is
  E'Fills click ids that became known later into a site''s pending conversions; returns how many changed.';

create function app_public.update_offline_conversion_queue_attribution(site_id uuid) returns integer
  language plpgsql volatile strict security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  perform app_private.assert_caller_role(update_offline_conversion_queue_attribution.site_id, 'editor', 'refresh_attribution',
                                         'offline_conversion_queue', update_offline_conversion_queue_attribution.site_id::text);
  return app_private.refresh_conversion_attribution(update_offline_conversion_queue_attribution.site_id);
end;
$$;
comment on function app_public.update_offline_conversion_queue_attribution(uuid) is
  E'Fills Google click ids that became known after the sale into the site''s conversions not yet delivered (editor or above); returns how many changed. The uploader also does this before every upload.';
