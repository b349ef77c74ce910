--! Previous: sha1:a927f81cff52fca9ec81b5d77e73ef3babf5a07f
--! Hash: sha1:4561a636b7c905f0e0a7ddf852b04b1ef09a1541
--! Message: whole-gtag-consent-state-taken

--! split: 1-current.sql
/*
 * The rest of Google's consent state is taken, and ignored.
 *
 * Consent Mode has seven consent types; trackers commonly send the whole gtag state, with
 * functionality_storage, personalization_storage and security_storage beside the four signals
 * we act on. valid_consent refused any key but those four, so such an event was rejected whole
 * (invalid_event) and a consent record refused (400): the visit was lost for a field we do not
 * use. Now those three are accepted (granted or denied, like the others) and left out of what is
 * stored. Any other key is still refused: a consent record is proof, and a misspelt signal must
 * not pass for a choice.
 */
create or replace function app_private.valid_consent(consent jsonb) returns boolean
  language plpgsql immutable
as $$
begin
  return case when pg_catalog.jsonb_typeof(consent) is distinct from 'object' then false
              else consent - array['analytics_storage', 'ad_storage', 'ad_user_data', 'ad_personalization',
                                   'functionality_storage', 'personalization_storage', 'security_storage'] = '{}'::jsonb
                   and coalesce(consent -> 'analytics_storage', '"denied"') in ('"granted"', '"denied"')
                   and coalesce(consent -> 'ad_storage', '"denied"') in ('"granted"', '"denied"')
                   and coalesce(consent -> 'ad_user_data', '"denied"') in ('"granted"', '"denied"')
                   and coalesce(consent -> 'ad_personalization', '"denied"') in ('"granted"', '"denied"')
                   and coalesce(consent -> 'functionality_storage', '"denied"') in ('"granted"', '"denied"')
                   and coalesce(consent -> 'personalization_storage', '"denied"') in ('"granted"', '"denied"')
                   and coalesce(consent -> 'security_storage', '"denied"') in ('"granted"', '"denied"') end;
end;
$$;
comment on function app_private.valid_consent(jsonb) is
  E'True for an object of Consent Mode signals, each granted or denied: the four we act on, and functionality, personalization and security storage, which we ignore.';

create or replace function app_private.effective_consent(site app_public.sites, own jsonb, recorded jsonb) returns jsonb
  language sql immutable
as $$
  select case when site.consent_mode = 'implied'
              then '{"analytics_storage": "granted", "ad_storage": "granted", "ad_user_data": "granted", "ad_personalization": "granted"}'::jsonb
              else '{"analytics_storage": "denied", "ad_storage": "denied", "ad_user_data": "denied", "ad_personalization": "denied"}'::jsonb
         end || (coalesce(own, recorded, '{}'::jsonb) - array['functionality_storage', 'personalization_storage', 'security_storage']);
$$;
