/*
 * The third rail: Google Ads' scheduled import fetches a CSV of click conversions over HTTPS.
 * Used for sites without a live API destination. Rows handed to Google this way become sent
 * (request_id 'csv'); they stay in the file for 90 days, as Google de-duplicates repeats and a
 * fetch that failed half-way must not lose them.
 */
drop function if exists app_private.export_credential_for(text) cascade;
drop function if exists app_private.oci_export_lines(uuid, text) cascade;
drop function if exists app_private.csv_field(text) cascade;

create function app_private.export_credential_for(username text)
  returns table (site_id uuid, password_sha256 bytea)
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select c.site_id, c.password_sha256 from app_private.export_credentials c where c.username = export_credential_for.username;
$$;
comment on function app_private.export_credential_for(text) is E'The site and password hash of an export credential (compared in constant time by the caller).';
grant execute on function app_private.export_credential_for(text) to :DATABASE_AUTHENTICATOR;

create function app_private.oci_export_lines(site_id uuid, conversion_name text)
  returns setof text
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_site app_public.sites;
begin
  select * into v_site from app_public.sites s where s.id = oci_export_lines.site_id;
  if v_site.id is null then
    raise exception using errcode = 'OMNSS', message = 'No such site.';
  end if;
  if exists (select 1 from app_public.destinations d where d.site_id = v_site.id and d.status <> 'paused') then
    return;  -- an API rail delivers this site's conversions; a CSV as well would count them twice
  end if;
  update app_public.offline_conversion_queue q
     set status = 'sent', request_id = 'csv', sent_at = pg_catalog.now(), last_error_code = null, last_error_message = null
   where q.site_id = v_site.id and q.kind = 'conversion' and q.status = 'pending' and q.click_id_type = 'gclid'
     and q.conversion_at > pg_catalog.now() - interval '90 days';
  return next 'Parameters:TimeZone=' || v_site.timezone;
  return next 'Google Click ID,Conversion Name,Conversion Time,Conversion Value,Conversion Currency,Ad User Data,Ad Personalization';
  return query
  select pg_catalog.concat_ws(',', q.click_id, app_private.csv_field(oci_export_lines.conversion_name),
           pg_catalog.to_char(q.conversion_at at time zone v_site.timezone, 'YYYY-MM-DD HH24:MI:SS'), q.value::text, q.currency,
           case q.ad_user_data when 'granted' then 'GRANTED' when 'denied' then 'DENIED' else '' end,
           case q.ad_personalization when 'granted' then 'GRANTED' when 'denied' then 'DENIED' else '' end)
    from app_public.offline_conversion_queue q
   where q.site_id = v_site.id and q.kind = 'conversion' and q.status = 'sent' and q.request_id = 'csv'
     and q.conversion_at > pg_catalog.now() - interval '90 days'
   order by q.conversion_at, q.id;
end;
$$;
comment on function app_private.oci_export_lines(uuid, text) is
  E'The site''s click conversions as Google''s scheduled-import CSV (lines, without newlines); pending ones become sent.';
grant execute on function app_private.oci_export_lines(uuid, text) to :DATABASE_AUTHENTICATOR;

create function app_private.csv_field(value text) returns text
  language sql immutable strict
  set search_path to pg_catalog, public, pg_temp
as $$
  select case when value ~ '[",\r\n]' then '"' || pg_catalog.replace(value, '"', '""') || '"' else value end;
$$;
comment on function app_private.csv_field(text) is E'A CSV field, quoted when it needs to be (RFC 4180).';
