--! Previous: sha1:70717c4991668665c17ac5b0978ac48251eb3d2e
--! Hash: sha1:049126a4c6890490e63e56dad6b2bd4ee8aeb815
--! Message: csv-time-never-before-click

--! split: 1-current.sql
/*
 * The scheduled CSV export sends the same conversion time as the API rails: never before the click.
 *
 * Payload shaping moves a conversion's time to a second after the session that brought the sale
 * began, when the sale's own time is earlier (Google refuses a conversion that precedes its
 * click). The CSV export wrote the sale's own time instead, so such a row was refused by Google's
 * scheduled import while the same conversion on an API rail went through. The export now takes
 * its rows from shape_conversion_payloads, the one place that rule lives, and writes the local
 * part of the time it gives (the file names its time zone in its first line).
 */
create or replace function app_private.oci_export_lines(site_id uuid, conversion_name text)
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
   where q.site_id = v_site.id and q.stage = 'open' and q.kind = 'conversion' and q.status = 'pending' and q.click_id_type = 'gclid'
     and q.conversion_at > pg_catalog.now() - interval '90 days';
  -- A scheduled import cannot retract: such a retraction says so instead of waiting for ever.
  update app_public.offline_conversion_queue q
     set status = 'failed', last_error_code = 'RETRACTION_UNSUPPORTED',
         last_error_message = 'Google''s scheduled CSV import cannot retract a conversion; remove it in Google Ads.'
   where q.site_id = v_site.id and q.stage = 'open' and q.kind = 'retraction' and q.status = 'pending';
  return next 'Parameters:TimeZone=' || v_site.timezone;
  return next 'Google Click ID,Conversion Name,Conversion Time,Conversion Value,Conversion Currency,Ad User Data,Ad Personalization';
  return query
  select pg_catalog.concat_ws(',', p.click_id, app_private.csv_field(oci_export_lines.conversion_name),
           -- 'yyyy-mm-dd hh:mm:ss' of Google's 'yyyy-mm-dd hh:mm:ss+hh:mm' in the site's zone.
           pg_catalog.left(p.conversion_time, 19), p.value, p.currency,
           case p.ad_user_data when 'granted' then 'GRANTED' when 'denied' then 'DENIED' else '' end,
           case p.ad_personalization when 'granted' then 'GRANTED' when 'denied' then 'DENIED' else '' end)
    from app_private.shape_conversion_payloads(v_site.id, array(
           select q from app_public.offline_conversion_queue q
            where q.site_id = v_site.id and q.stage = 'sent' and q.kind = 'conversion' and q.request_id = 'csv'
              and q.conversion_at > pg_catalog.now() - interval '90 days'
              and q.click_id is not null and q.click_id_type = 'gclid')) p
   order by p.conversion_time, p.id;
end;
$$;
