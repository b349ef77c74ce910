--
-- PostgreSQL database dump
--

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: app_hidden; Type: SCHEMA; Schema: -; Owner: -
--

CREATE SCHEMA app_hidden;

--
-- Name: SCHEMA app_hidden; Type: COMMENT; Schema: -; Owner: -
--

COMMENT ON SCHEMA app_hidden IS 'Helpers the visitor role may use (row-level-security helpers); never exposed through GraphQL.';

--
-- Name: app_private; Type: SCHEMA; Schema: -; Owner: -
--

CREATE SCHEMA app_private;

--
-- Name: SCHEMA app_private; Type: COMMENT; Schema: -; Owner: -
--

COMMENT ON SCHEMA app_private IS 'Secrets, chain heads and privileged functions. Never granted to any client role.';

--
-- Name: app_public; Type: SCHEMA; Schema: -; Owner: -
--

CREATE SCHEMA app_public;

--
-- Name: SCHEMA app_public; Type: COMMENT; Schema: -; Owner: -
--

COMMENT ON SCHEMA app_public IS 'Tenant-scoped objects exposed through GraphQL. Every table is guarded by row-level security.';

--
-- Name: landing_attribution; Type: TYPE; Schema: app_hidden; Owner: -
--

CREATE TYPE app_hidden.landing_attribution AS (
	tier text,
	source text,
	click_id text,
	click_id_type text,
	utm_source text,
	utm_medium text,
	utm_campaign text,
	landing_click_id text,
	landing_click_id_type text
);

--
-- Name: TYPE landing_attribution; Type: COMMENT; Schema: app_hidden; Owner: -
--

COMMENT ON TYPE app_hidden.landing_attribution IS 'What a landing URL and referrer say on their own (S3 needs the visitor''s history too). landing_click_id is the first ad click id of any kind, which later pageviews are compared with.';

--
-- Name: subject_link_set; Type: TYPE; Schema: app_private; Owner: -
--

CREATE TYPE app_private.subject_link_set AS (
	visitor_ids text[],
	visitor_keys text[],
	session_ids uuid[],
	call_ids uuid[],
	sale_ids uuid[],
	consent_hashes bytea[]
);

--
-- Name: audit_chain_verification; Type: TYPE; Schema: app_public; Owner: -
--

CREATE TYPE app_public.audit_chain_verification AS (
	ok boolean,
	checked_rows bigint,
	first_bad_seq bigint,
	problem text
);

--
-- Name: TYPE audit_chain_verification; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON TYPE app_public.audit_chain_verification IS 'Result of re-hashing a site''s audit chain.';

--
-- Name: billing_reconciliation_result; Type: TYPE; Schema: app_public; Owner: -
--

CREATE TYPE app_public.billing_reconciliation_result AS (
	site_id uuid,
	period date,
	ledger_billable bigint,
	ledger_non_billable bigint,
	events_stored bigint,
	frozen boolean,
	snapshot_billable bigint,
	snapshot_digest text,
	ledger_digest text,
	drift text[],
	events_removed bigint
);

--
-- Name: TYPE billing_reconciliation_result; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON TYPE app_public.billing_reconciliation_result IS 'Ledger vs events (stored, plus removed for privacy) vs frozen snapshot for one site and month; drift names every disagreement (empty when all agree).';

--
-- Name: conversion_totals; Type: TYPE; Schema: app_public; Owner: -
--

CREATE TYPE app_public.conversion_totals AS (
	pending integer,
	processing integer,
	sent integer,
	accepted integer,
	failed integer,
	cancelled integer,
	retractions integer
);

--
-- Name: TYPE conversion_totals; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON TYPE app_public.conversion_totals IS 'Conversions of a destination by status (retractions counted apart).';

--
-- Name: site_role; Type: TYPE; Schema: app_public; Owner: -
--

CREATE TYPE app_public.site_role AS ENUM (
    'viewer',
    'editor',
    'admin',
    'owner'
);

--
-- Name: TYPE site_role; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON TYPE app_public.site_role IS 'A member''s role on a site, weakest first: viewer < editor < admin < owner.';

--
-- Name: created_api_key; Type: TYPE; Schema: app_public; Owner: -
--

CREATE TYPE app_public.created_api_key AS (
	api_key_id uuid,
	site_id uuid,
	role app_public.site_role,
	key text
);

--
-- Name: TYPE created_api_key; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON TYPE app_public.created_api_key IS 'A new API key. `key` is shown this once and can never be read again.';

--
-- Name: assert_site_role(uuid, app_public.site_role, text, text, text); Type: FUNCTION; Schema: app_hidden; Owner: -
--

CREATE FUNCTION app_hidden.assert_site_role(site_id uuid, min_role app_public.site_role, action text, target_table text, target_id text) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
begin
  if assert_site_role.site_id is null or assert_site_role.site_id not in (
    select app_hidden.current_user_site_ids(assert_site_role.min_role)
  ) then
    perform app_hidden.raise_forbidden(assert_site_role.site_id, assert_site_role.action,
      assert_site_role.target_table, assert_site_role.target_id);
  end if;
end;
$$;

--
-- Name: FUNCTION assert_site_role(site_id uuid, min_role app_public.site_role, action text, target_table text, target_id text); Type: COMMENT; Schema: app_hidden; Owner: -
--

COMMENT ON FUNCTION app_hidden.assert_site_role(site_id uuid, min_role app_public.site_role, action text, target_table text, target_id text) IS 'Raises OM403 unless the caller holds at least min_role on the site.';

--
-- Name: classify_landing(text, text, text); Type: FUNCTION; Schema: app_hidden; Owner: -
--

CREATE FUNCTION app_hidden.classify_landing(url text, referrer text, site_domain text) RETURNS app_hidden.landing_attribution
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    AS $$
declare
  r app_hidden.landing_attribution;
  v_params constant jsonb := coalesce(app_hidden.url_params(url), '{}'::jsonb);
  v_paid_media constant text[] := array['cpc', 'ppc', 'paid', 'paidsearch', 'paid_search', 'paid-search', 'sem', 'cpm', 'display', 'retargeting'];
  v_paid_social_media constant text[] := array['paid_social', 'paidsocial', 'paid-social', 'social_paid', 'social-paid'];
  v_source_network text;
  v_referrer_host text := app_hidden.url_host(referrer);
  v_name text;
begin
  r.utm_source := pg_catalog.lower(v_params ->> 'utm_source');
  r.utm_medium := pg_catalog.lower(v_params ->> 'utm_medium');
  r.utm_campaign := pg_catalog.lower(v_params ->> 'utm_campaign');
  v_source_network := app_hidden.social_network_of_source(r.utm_source);
  if v_referrer_host is not null and app_hidden.host_is_on(v_referrer_host, site_domain) then
    v_referrer_host := null;  -- self-referral
  end if;
  foreach v_name in array array['gclid', 'gbraid', 'wbraid', 'msclkid', 'ttclid', 'li_fat_id', 'twclid', 'fbclid'] loop
    if v_params ? v_name then
      r.landing_click_id := v_params ->> v_name; r.landing_click_id_type := v_name;
      exit;
    end if;
  end loop;

  foreach v_name in array array['gclid', 'gbraid', 'wbraid'] loop
    if v_params ? v_name then
      r.tier := 'S1'; r.source := 'google_ads'; r.click_id := v_params ->> v_name; r.click_id_type := v_name;
      return r;
    end if;
  end loop;

  if (r.utm_medium = any(v_paid_media) and v_source_network is null) or v_params ? 'msclkid' then
    r.tier := 'S2';
    r.source := 'paid:' || coalesce(case when v_source_network is null then r.utm_source end,
                                    case when v_params ? 'msclkid' then 'microsoft_ads' end, 'unknown');
    if v_params ? 'msclkid' then r.click_id := v_params ->> 'msclkid'; r.click_id_type := 'msclkid'; end if;
    return r;
  end if;

  foreach v_name in array array['ttclid', 'li_fat_id', 'twclid'] loop
    if v_params ? v_name then
      r.tier := 'S4'; r.click_id := v_params ->> v_name; r.click_id_type := v_name;
      r.source := 'paid_social:' || case v_name when 'ttclid' then 'tiktok' when 'li_fat_id' then 'linkedin' else 'twitter' end;
      return r;
    end if;
  end loop;
  if r.utm_medium = any(v_paid_social_media) or (r.utm_medium = any(v_paid_media) and v_source_network is not null) then
    r.tier := 'S4'; r.source := 'paid_social:' || coalesce(v_source_network, r.utm_source, 'unknown');
    return r;
  end if;

  r.tier := 'S5';
  if r.utm_medium in ('email', 'e-mail', 'newsletter') then
    r.source := 'organic:email';
  elsif v_params ? 'fbclid' or v_source_network is not null then
    r.source := 'organic:social';
  elsif r.utm_source is not null or r.utm_medium is not null or r.utm_campaign is not null
        or v_params ? 'utm_term' or v_params ? 'utm_content' then
    r.source := 'organic:campaign';
  elsif v_referrer_host is null then
    r.source := 'organic:direct';
  elsif app_hidden.social_network_of_host(v_referrer_host) is not null then
    r.source := 'organic:social';
  elsif app_hidden.is_search_host(v_referrer_host) then
    r.source := 'organic:search';
  else
    r.source := 'organic:referral';
  end if;
  return r;
end;
$$;

--
-- Name: FUNCTION classify_landing(url text, referrer text, site_domain text); Type: COMMENT; Schema: app_hidden; Owner: -
--

COMMENT ON FUNCTION app_hidden.classify_landing(url text, referrer text, site_domain text) IS 'Tier (S1, S2, S4 or S5) and source of a landing URL and referrer on a site; S3 is decided by the sessionizer.';

--
-- Name: currency_minor_units(text); Type: FUNCTION; Schema: app_hidden; Owner: -
--

CREATE FUNCTION app_hidden.currency_minor_units(code text) RETURNS integer
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
  select case
    when code in ('BIF', 'CLP', 'DJF', 'GNF', 'ISK', 'JPY', 'KMF', 'KRW', 'PYG', 'RWF', 'UGX', 'UYI', 'VND', 'VUV', 'XAF', 'XOF', 'XPF') then 0
    when code in ('BHD', 'IQD', 'JOD', 'KWD', 'LYD', 'OMR', 'TND') then 3
    when code in ('CLF', 'UYW') then 4
    when code in ('AED', 'AFN', 'ALL', 'AMD', 'ANG', 'AOA', 'ARS', 'AUD', 'AWG', 'AZN', 'BAM', 'BBD', 'BDT', 'BGN', 'BMD', 'BND',
                  'BOB', 'BOV', 'BRL', 'BSD', 'BTN', 'BWP', 'BYN', 'BZD', 'CAD', 'CDF', 'CHE', 'CHF', 'CHW', 'CNY', 'COP', 'COU',
                  'CRC', 'CUP', 'CVE', 'CZK', 'DKK', 'DOP', 'DZD', 'EGP', 'ERN', 'ETB', 'EUR', 'FJD', 'FKP', 'GBP', 'GEL', 'GHS',
                  'GIP', 'GMD', 'GTQ', 'GYD', 'HKD', 'HNL', 'HTG', 'HUF', 'IDR', 'ILS', 'INR', 'IRR', 'JMD', 'KES', 'KGS', 'KHR',
                  'KPW', 'KYD', 'KZT', 'LAK', 'LBP', 'LKR', 'LRD', 'LSL', 'MAD', 'MDL', 'MGA', 'MKD', 'MMK', 'MNT', 'MOP', 'MRU',
                  'MUR', 'MVR', 'MWK', 'MXN', 'MXV', 'MYR', 'MZN', 'NAD', 'NGN', 'NIO', 'NOK', 'NPR', 'NZD', 'PAB', 'PEN', 'PGK',
                  'PHP', 'PKR', 'PLN', 'QAR', 'RON', 'RSD', 'RUB', 'SAR', 'SBD', 'SCR', 'SDG', 'SEK', 'SGD', 'SHP', 'SLE', 'SOS',
                  'SRD', 'SSP', 'STN', 'SVC', 'SYP', 'SZL', 'THB', 'TJS', 'TMT', 'TOP', 'TRY', 'TTD', 'TWD', 'TZS', 'UAH', 'USD',
                  'USN', 'UYU', 'UZS', 'VED', 'VES', 'WST', 'XCD', 'XCG', 'YER', 'ZAR', 'ZMW', 'ZWG') then 2
  end;
$$;

--
-- Name: FUNCTION currency_minor_units(code text); Type: COMMENT; Schema: app_hidden; Owner: -
--

COMMENT ON FUNCTION app_hidden.currency_minor_units(code text) IS 'Minor units of an ISO 4217 currency in circulation (JPY 0, USD 2, KWD 3), or null for anything else.';

--
-- Name: current_api_key_id(); Type: FUNCTION; Schema: app_hidden; Owner: -
--

CREATE FUNCTION app_hidden.current_api_key_id() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
  select nullif(pg_catalog.current_setting('app.api_key_id', true), '')::uuid;
$$;

--
-- Name: FUNCTION current_api_key_id(); Type: COMMENT; Schema: app_hidden; Owner: -
--

COMMENT ON FUNCTION app_hidden.current_api_key_id() IS 'The site API key of this request (already verified by the HTTP layer), or null.';

--
-- Name: current_user_id(); Type: FUNCTION; Schema: app_hidden; Owner: -
--

CREATE FUNCTION app_hidden.current_user_id() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
  select nullif(pg_catalog.current_setting('app.user_id', true), '')::uuid;
$$;

--
-- Name: FUNCTION current_user_id(); Type: COMMENT; Schema: app_hidden; Owner: -
--

COMMENT ON FUNCTION app_hidden.current_user_id() IS 'The dashboard user of this request (from a verified JWT), or null.';

--
-- Name: current_user_is_platform_admin(); Type: FUNCTION; Schema: app_hidden; Owner: -
--

CREATE FUNCTION app_hidden.current_user_is_platform_admin() RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
  select coalesce((select u.is_platform_admin from app_public.users u
                   where u.id = app_hidden.current_user_id()), false);
$$;

--
-- Name: FUNCTION current_user_is_platform_admin(); Type: COMMENT; Schema: app_hidden; Owner: -
--

COMMENT ON FUNCTION app_hidden.current_user_is_platform_admin() IS 'True when the request''s user is a platform operator.';

--
-- Name: current_user_site_ids(app_public.site_role); Type: FUNCTION; Schema: app_hidden; Owner: -
--

CREATE FUNCTION app_hidden.current_user_site_ids(min_role app_public.site_role DEFAULT 'viewer'::app_public.site_role) RETURNS SETOF uuid
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
  select m.site_id from app_public.site_members m
   where m.user_id = app_hidden.current_user_id()
     and m.role >= current_user_site_ids.min_role
  union
  select k.site_id from app_public.api_keys k
   where k.id = app_hidden.current_api_key_id()
     and k.revoked_at is null
     and k.role >= current_user_site_ids.min_role
  union
  select s.id from app_public.sites s
   where app_hidden.current_user_is_platform_admin()
$$;

--
-- Name: FUNCTION current_user_site_ids(min_role app_public.site_role); Type: COMMENT; Schema: app_hidden; Owner: -
--

COMMENT ON FUNCTION app_hidden.current_user_site_ids(min_role app_public.site_role) IS 'Sites on which the request''s user or API key holds at least min_role. Use as `site_id in (select app_hidden.current_user_site_ids())`.';

--
-- Name: google_order_id(uuid, text); Type: FUNCTION; Schema: app_hidden; Owner: -
--

CREATE FUNCTION app_hidden.google_order_id(site_id uuid, external_id text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $_$
  select case when external_id ~ '^[!-~]{1,64}$' then external_id
              else 'om-' || pg_catalog.left(pg_catalog.encode(public.digest(pg_catalog.convert_to(site_id::text || '/' || external_id, 'UTF8'), 'sha256'), 'hex'), 40)
         end;
$_$;

--
-- Name: FUNCTION google_order_id(site_id uuid, external_id text); Type: COMMENT; Schema: app_hidden; Owner: -
--

COMMENT ON FUNCTION app_hidden.google_order_id(site_id uuid, external_id text) IS 'The sale''s external id as Google''s order id, or om-<SHA-256 prefix> when it has spaces, non-ASCII or over 64 characters (the same on every re-send).';

--
-- Name: host_is_on(text, text); Type: FUNCTION; Schema: app_hidden; Owner: -
--

CREATE FUNCTION app_hidden.host_is_on(host text, domain text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
  select host = domain or pg_catalog.right(host, pg_catalog.length(domain) + 1) = '.' || domain;
$$;

--
-- Name: FUNCTION host_is_on(host text, domain text); Type: COMMENT; Schema: app_hidden; Owner: -
--

COMMENT ON FUNCTION app_hidden.host_is_on(host text, domain text) IS 'True when host is the domain or one of its subdomains.';

--
-- Name: identifier_sha256(text); Type: FUNCTION; Schema: app_hidden; Owner: -
--

CREATE FUNCTION app_hidden.identifier_sha256(normalized text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
  select pg_catalog.encode(public.digest(pg_catalog.convert_to(normalized, 'UTF8'), 'sha256'), 'hex');
$$;

--
-- Name: FUNCTION identifier_sha256(normalized text); Type: COMMENT; Schema: app_hidden; Owner: -
--

COMMENT ON FUNCTION app_hidden.identifier_sha256(normalized text) IS 'Lower-case hex SHA-256 of a normalised identifier, as Google expects it.';

--
-- Name: is_search_host(text); Type: FUNCTION; Schema: app_hidden; Owner: -
--

CREATE FUNCTION app_hidden.is_search_host(host text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $_$
  select host ~ '(^|\.)(google|yandex)\.[a-z]{2,3}(\.[a-z]{2})?$'
      or app_hidden.host_is_on(host, 'bing.com') or app_hidden.host_is_on(host, 'yahoo.com')
      or app_hidden.host_is_on(host, 'duckduckgo.com') or app_hidden.host_is_on(host, 'baidu.com')
      or app_hidden.host_is_on(host, 'ecosia.org') or host = 'search.brave.com';
$_$;

--
-- Name: FUNCTION is_search_host(host text); Type: COMMENT; Schema: app_hidden; Owner: -
--

COMMENT ON FUNCTION app_hidden.is_search_host(host text) IS 'True for the search engines of SPEC §7 (google.*, bing.com, yahoo.com, yandex.*, duckduckgo.com, baidu.com, ecosia.org, search.brave.com).';

--
-- Name: is_valid_timezone(text); Type: FUNCTION; Schema: app_hidden; Owner: -
--

CREATE FUNCTION app_hidden.is_valid_timezone(tz text) RETURNS boolean
    LANGUAGE plpgsql STABLE
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
begin
  perform pg_catalog.timezone(tz, pg_catalog.now());
  return true;
exception when invalid_parameter_value then
  return false;
end;
$$;

--
-- Name: FUNCTION is_valid_timezone(tz text); Type: COMMENT; Schema: app_hidden; Owner: -
--

COMMENT ON FUNCTION app_hidden.is_valid_timezone(tz text) IS 'True when PostgreSQL knows the IANA time zone.';

--
-- Name: ledger_line(uuid, timestamp with time zone, boolean); Type: FUNCTION; Schema: app_hidden; Owner: -
--

CREATE FUNCTION app_hidden.ledger_line(idempotency_key uuid, occurred_at timestamp with time zone, billable boolean) RETURNS text
    LANGUAGE sql STABLE STRICT PARALLEL SAFE
    AS $$
  select idempotency_key::text || ',' || app_hidden.ledger_time(occurred_at) || ',' || billable::text;
$$;

--
-- Name: FUNCTION ledger_line(idempotency_key uuid, occurred_at timestamp with time zone, billable boolean); Type: COMMENT; Schema: app_hidden; Owner: -
--

COMMENT ON FUNCTION app_hidden.ledger_line(idempotency_key uuid, occurred_at timestamp with time zone, billable boolean) IS 'One ledger row as the digest and the dispute export write it: key,occurred_at,billable (no newline). In app_hidden because the export runs as the visitor role.';

--
-- Name: ledger_time(timestamp with time zone); Type: FUNCTION; Schema: app_hidden; Owner: -
--

CREATE FUNCTION app_hidden.ledger_time(at timestamp with time zone) RETURNS text
    LANGUAGE sql STABLE STRICT PARALLEL SAFE
    AS $$
  select pg_catalog.to_char(at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"');
$$;

--
-- Name: FUNCTION ledger_time(at timestamp with time zone); Type: COMMENT; Schema: app_hidden; Owner: -
--

COMMENT ON FUNCTION app_hidden.ledger_time(at timestamp with time zone) IS 'A ledger time as the digest and the dispute export write it: UTC, milliseconds (truncated), Z.';

--
-- Name: normalize_email(text); Type: FUNCTION; Schema: app_hidden; Owner: -
--

CREATE FUNCTION app_hidden.normalize_email(email text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $_$
  select case
    when v.e !~ '^[^@[:space:]]{1,64}@[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$' or pg_catalog.length(v.e) > 254 then null
    when pg_catalog.split_part(v.e, '@', 2) in ('gmail.com', 'googlemail.com')
      then pg_catalog.replace(pg_catalog.split_part(v.e, '@', 1), '.', '') || '@' || pg_catalog.split_part(v.e, '@', 2)
    else v.e
  end
  from (select pg_catalog.lower(pg_catalog.btrim(email, E' \t\r\n')) as e) v;
$_$;

--
-- Name: FUNCTION normalize_email(email text); Type: COMMENT; Schema: app_hidden; Owner: -
--

COMMENT ON FUNCTION app_hidden.normalize_email(email text) IS 'An email address as Google hashes it (trimmed, lower-case, no dots before @gmail.com), or null if it is not one.';

--
-- Name: normalize_phone(text); Type: FUNCTION; Schema: app_hidden; Owner: -
--

CREATE FUNCTION app_hidden.normalize_phone(phone text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $_$
  select case when v.p ~ '^\+[1-9][0-9]{6,14}$' then v.p end
    from (select pg_catalog.regexp_replace(pg_catalog.regexp_replace(pg_catalog.regexp_replace(pg_catalog.btrim(phone), '\(0\)', '', 'g'),
                                                                     '[[:space:]().-]', '', 'g'), '^00', '+') as p) v;
$_$;

--
-- Name: FUNCTION normalize_phone(phone text); Type: COMMENT; Schema: app_hidden; Owner: -
--

COMMENT ON FUNCTION app_hidden.normalize_phone(phone text) IS 'A phone number in E.164 (+905551112233), or null when it has no country code or is not a number.';

--
-- Name: parse_timestamptz(text); Type: FUNCTION; Schema: app_hidden; Owner: -
--

CREATE FUNCTION app_hidden.parse_timestamptz(value text) RETURNS timestamp with time zone
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $_$
  select case
    when value !~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)$' then null
    when pg_catalog.substr(value, 1, 4) = '0000'
      or pg_catalog.substr(value, 6, 2) not between '01' and '12'
      or pg_catalog.substr(value, 9, 2) < '01'
      or pg_catalog.substr(value, 9, 2) > case when pg_catalog.substr(value, 6, 2) = '02'
                                                 then case when pg_catalog.substr(value, 1, 4)::integer % 4 = 0
                                                            and (pg_catalog.substr(value, 1, 4)::integer % 100 <> 0 or pg_catalog.substr(value, 1, 4)::integer % 400 = 0)
                                                           then '29' else '28' end
                                               when pg_catalog.substr(value, 6, 2) in ('04', '06', '09', '11') then '30'
                                               else '31' end
      or pg_catalog.substr(value, 12, 2) > '23' or pg_catalog.substr(value, 15, 2) > '59'
      or (pg_catalog.substr(value, 17, 1) = ':' and pg_catalog.substr(value, 18, 2) > '59')
      or pg_catalog.substr(value, 17) ~ '[+-](1[6-9]|[2-9][0-9])|[+-][0-9]{2}:?[6-9][0-9]$' then null
    else value::timestamptz
  end;
$_$;

--
-- Name: FUNCTION parse_timestamptz(value text); Type: COMMENT; Schema: app_hidden; Owner: -
--

COMMENT ON FUNCTION app_hidden.parse_timestamptz(value text) IS 'An ISO-8601 timestamp with zone, or null when it is not one.';

--
-- Name: percent_decode(text); Type: FUNCTION; Schema: app_hidden; Owner: -
--

CREATE FUNCTION app_hidden.percent_decode(value text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
    AS $_$
begin
  if pg_catalog.strpos(value, '%') = 0 then
    return pg_catalog.replace(value, '+', ' ');
  end if;
  begin
    return pg_catalog.convert_from(
      (select pg_catalog.string_agg(
                case when m.token[1] ~ '^%[0-9A-Fa-f]{2}$' then pg_catalog.decode(pg_catalog.substr(m.token[1], 2), 'hex')
                     else pg_catalog.convert_to(m.token[1], 'UTF8') end, ''::bytea order by m.n)
         from pg_catalog.regexp_matches(pg_catalog.replace(value, '+', ' '), '%[0-9A-Fa-f]{2}|[^%]+|%', 'g')
              with ordinality as m(token, n)),
      'UTF8');
  exception when character_not_in_repertoire or untranslatable_character then
    return pg_catalog.replace(value, '+', ' ');  -- not UTF-8 once decoded: keep it as sent
  end;
end;
$_$;

--
-- Name: FUNCTION percent_decode(value text); Type: COMMENT; Schema: app_hidden; Owner: -
--

COMMENT ON FUNCTION app_hidden.percent_decode(value text) IS 'Decodes %XX escapes and + of a query-string value (as sent when the result is not UTF-8).';

--
-- Name: raise_forbidden(uuid, text, text, text); Type: FUNCTION; Schema: app_hidden; Owner: -
--

CREATE FUNCTION app_hidden.raise_forbidden(site_id uuid, action text, target_table text, target_id text) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
begin
  raise exception using
    errcode = 'OM403',
    message = 'You are not allowed to do this.',
    detail = pg_catalog.jsonb_build_object(
      'site_id', raise_forbidden.site_id,
      'action', raise_forbidden.action,
      'target_table', raise_forbidden.target_table,
      'target_id', raise_forbidden.target_id,
      'actor_user_id', app_hidden.current_user_id(),
      'actor_api_key_id', app_hidden.current_api_key_id(),
      'actor_db_role', session_user
    )::text;
end;
$$;

--
-- Name: FUNCTION raise_forbidden(site_id uuid, action text, target_table text, target_id text); Type: COMMENT; Schema: app_hidden; Owner: -
--

COMMENT ON FUNCTION app_hidden.raise_forbidden(site_id uuid, action text, target_table text, target_id text) IS 'Raises OM403 with a JSON detail the HTTP layer records as a denied attempt.';

--
-- Name: social_network_of_host(text); Type: FUNCTION; Schema: app_hidden; Owner: -
--

CREATE FUNCTION app_hidden.social_network_of_host(host text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
  select case
    when app_hidden.host_is_on(host, 'facebook.com') then 'facebook'
    when app_hidden.host_is_on(host, 'instagram.com') then 'instagram'
    when app_hidden.host_is_on(host, 't.co') or app_hidden.host_is_on(host, 'twitter.com')
      or app_hidden.host_is_on(host, 'x.com') then 'twitter'
    when app_hidden.host_is_on(host, 'linkedin.com') or app_hidden.host_is_on(host, 'lnkd.in') then 'linkedin'
    when app_hidden.host_is_on(host, 'tiktok.com') then 'tiktok'
    when app_hidden.host_is_on(host, 'pinterest.com') then 'pinterest'
    when app_hidden.host_is_on(host, 'reddit.com') then 'reddit'
    when app_hidden.host_is_on(host, 'snapchat.com') then 'snapchat'
  end;
$$;

--
-- Name: FUNCTION social_network_of_host(host text); Type: COMMENT; Schema: app_hidden; Owner: -
--

COMMENT ON FUNCTION app_hidden.social_network_of_host(host text) IS 'The social network a referrer host belongs to (l.facebook.com → facebook), or null.';

--
-- Name: social_network_of_source(text); Type: FUNCTION; Schema: app_hidden; Owner: -
--

CREATE FUNCTION app_hidden.social_network_of_source(utm_source text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
  select case pg_catalog.lower(utm_source)
    when 'facebook' then 'facebook' when 'fb' then 'facebook' when 'meta' then 'meta'
    when 'instagram' then 'instagram' when 'ig' then 'instagram'
    when 'tiktok' then 'tiktok' when 'linkedin' then 'linkedin'
    when 'twitter' then 'twitter' when 'x' then 'twitter'
    when 'pinterest' then 'pinterest' when 'snapchat' then 'snapchat' when 'reddit' then 'reddit'
  end;
$$;

--
-- Name: FUNCTION social_network_of_source(utm_source text); Type: COMMENT; Schema: app_hidden; Owner: -
--

COMMENT ON FUNCTION app_hidden.social_network_of_source(utm_source text) IS 'The social network a utm_source names (canonical name), or null.';

--
-- Name: starts_new_session(text, text, text, text); Type: FUNCTION; Schema: app_hidden; Owner: -
--

CREATE FUNCTION app_hidden.starts_new_session(url text, session_click_id text, session_utm_source text, session_utm_campaign text) RETURNS boolean
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    AS $$
declare
  v_params constant jsonb := coalesce(app_hidden.url_params(url), '{}'::jsonb);
  v_name text;
begin
  foreach v_name in array array['gclid', 'gbraid', 'wbraid', 'msclkid', 'ttclid', 'li_fat_id', 'twclid', 'fbclid'] loop
    if v_params ? v_name then
      if (v_params ->> v_name) is distinct from session_click_id then
        return true;
      end if;
      exit;  -- the same click id (a reload): the UTM parameters decide
    end if;
  end loop;
  return (v_params ? 'utm_source' and pg_catalog.lower(v_params ->> 'utm_source') is distinct from session_utm_source)
      or (v_params ? 'utm_campaign' and pg_catalog.lower(v_params ->> 'utm_campaign') is distinct from session_utm_campaign);
end;
$$;

--
-- Name: FUNCTION starts_new_session(url text, session_click_id text, session_utm_source text, session_utm_campaign text); Type: COMMENT; Schema: app_hidden; Owner: -
--

COMMENT ON FUNCTION app_hidden.starts_new_session(url text, session_click_id text, session_utm_source text, session_utm_campaign text) IS 'True when a pageview URL carries a click id, utm_source or utm_campaign that differs from the session''s.';

SET default_table_access_method = heap;

--
-- Name: destinations; Type: TABLE; Schema: app_public; Owner: -
--

CREATE TABLE app_public.destinations (
    site_id uuid NOT NULL,
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    rail text NOT NULL,
    customer_id text NOT NULL,
    login_customer_id text,
    conversion_action text NOT NULL,
    status text DEFAULT 'active'::text NOT NULL,
    status_reason text,
    credentials_last4 text,
    credentials_updated_at timestamp with time zone,
    credentials_updated_by uuid,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT destinations_conversion_action_format CHECK ((conversion_action ~ '^[0-9]{1,20}$'::text)),
    CONSTRAINT destinations_customer_id_format CHECK ((customer_id ~ '^[0-9]{10}$'::text)),
    CONSTRAINT destinations_login_customer_id_format CHECK ((login_customer_id ~ '^[0-9]{10}$'::text)),
    CONSTRAINT destinations_rail CHECK ((rail = ANY (ARRAY['datamanager'::text, 'google_ads'::text]))),
    CONSTRAINT destinations_status CHECK ((status = ANY (ARRAY['active'::text, 'needs_reauth'::text, 'paused'::text])))
);

--
-- Name: TABLE destinations; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON TABLE app_public.destinations IS 'Where a site''s conversions are delivered: the rail (Data Manager API or Google Ads API), the Google Ads account and conversion action. At most one is not paused per site.';

--
-- Name: COLUMN destinations.site_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.destinations.site_id IS 'The site.';

--
-- Name: COLUMN destinations.id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.destinations.id IS 'Identifier.';

--
-- Name: COLUMN destinations.rail; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.destinations.rail IS 'datamanager (Google''s Data Manager API, the default) or google_ads (Google Ads API, grandfathered developer tokens).';

--
-- Name: COLUMN destinations.customer_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.destinations.customer_id IS 'Google Ads customer id (ten digits, no dashes).';

--
-- Name: COLUMN destinations.login_customer_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.destinations.login_customer_id IS 'Manager account id used to log in, if any.';

--
-- Name: COLUMN destinations.conversion_action; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.destinations.conversion_action IS 'Google Ads conversion action id.';

--
-- Name: COLUMN destinations.status; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.destinations.status IS 'active, needs_reauth (Google refused the credentials: set them again) or paused.';

--
-- Name: COLUMN destinations.status_reason; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.destinations.status_reason IS 'Why it is not active (Google''s code).';

--
-- Name: COLUMN destinations.credentials_last4; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.destinations.credentials_last4 IS 'Last four characters of the stored refresh token (the token itself is never readable).';

--
-- Name: COLUMN destinations.credentials_updated_at; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.destinations.credentials_updated_at IS 'When the credentials were last set.';

--
-- Name: COLUMN destinations.credentials_updated_by; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.destinations.credentials_updated_by IS 'Who set them.';

--
-- Name: COLUMN destinations.created_at; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.destinations.created_at IS 'When it was created.';

--
-- Name: COLUMN destinations.updated_at; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.destinations.updated_at IS 'When it last changed.';

--
-- Name: store_provider_credentials(uuid, text, bytea, bytea, bytea, bytea, text); Type: FUNCTION; Schema: app_hidden; Owner: -
--

CREATE FUNCTION app_hidden.store_provider_credentials(destination_id uuid, key_id text, wrapped_key bytea, nonce bytea, ciphertext bytea, auth_tag bytea, last4 text) RETURNS app_public.destinations
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
declare
  v_destination app_public.destinations;
begin
  select * into v_destination from app_public.destinations d where d.id = store_provider_credentials.destination_id;
  perform app_private.assert_caller_role(v_destination.site_id, 'admin', 'set_credentials', 'destinations', store_provider_credentials.destination_id::text);
  insert into app_private.provider_credentials as c (site_id, destination_id, key_id, wrapped_key, nonce, ciphertext, auth_tag)
  values (v_destination.site_id, v_destination.id, store_provider_credentials.key_id, store_provider_credentials.wrapped_key,
          store_provider_credentials.nonce, store_provider_credentials.ciphertext, store_provider_credentials.auth_tag)
  on conflict on constraint provider_credentials_pkey do update set key_id = excluded.key_id, wrapped_key = excluded.wrapped_key, nonce = excluded.nonce,
    ciphertext = excluded.ciphertext, auth_tag = excluded.auth_tag, updated_at = pg_catalog.now();
  update app_public.destinations d
     set credentials_last4 = store_provider_credentials.last4, credentials_updated_at = pg_catalog.now(),
         credentials_updated_by = app_hidden.current_user_id(),
         status = case when d.status = 'needs_reauth' then 'active' else d.status end,
         status_reason = case when d.status = 'needs_reauth' then null else d.status_reason end
   where d.site_id = v_destination.site_id and d.id = v_destination.id
  returning * into v_destination;
  perform app_private.enqueue_upload(v_destination.site_id, 'google');
  return v_destination;
end;
$$;

--
-- Name: FUNCTION store_provider_credentials(destination_id uuid, key_id text, wrapped_key bytea, nonce bytea, ciphertext bytea, auth_tag bytea, last4 text); Type: COMMENT; Schema: app_hidden; Owner: -
--

COMMENT ON FUNCTION app_hidden.store_provider_credentials(destination_id uuid, key_id text, wrapped_key bytea, nonce bytea, ciphertext bytea, auth_tag bytea, last4 text) IS 'Saves a destination''s encrypted refresh token (admin or owner; called by the setDestinationCredentials mutation after encrypting).';

--
-- Name: url_host(text); Type: FUNCTION; Schema: app_hidden; Owner: -
--

CREATE FUNCTION app_hidden.url_host(url text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$
  select pg_catalog.lower(pg_catalog.substring(url, '^[A-Za-z][A-Za-z0-9+.-]*://(?:[^/?#@]*@)?([^/?#:]+)'));
$$;

--
-- Name: FUNCTION url_host(url text); Type: COMMENT; Schema: app_hidden; Owner: -
--

COMMENT ON FUNCTION app_hidden.url_host(url text) IS 'Lower-cased host of an absolute URL, or null.';

--
-- Name: url_params(text); Type: FUNCTION; Schema: app_hidden; Owner: -
--

CREATE FUNCTION app_hidden.url_params(url text) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
    AS $$
begin
  if pg_catalog.strpos(url, '?') = 0 then
    return '{}';
  end if;
  return (select coalesce(pg_catalog.jsonb_object_agg(p.name, p.value) filter (where p.value is not null), '{}'::jsonb)
            from (select distinct on (q.name) q.name,
                         nullif(pg_catalog.btrim(case when pg_catalog.strpos(q.raw, '%') = 0 then pg_catalog.replace(q.raw, '+', ' ')
                                                      else app_hidden.percent_decode(q.raw) end, E' \t\n\r\f\v'), '') as value
                    from (select pg_catalog.split_part(t.pair, '=', 1) as name,
                                 pg_catalog.substr(t.pair, pg_catalog.strpos(t.pair, '=') + 1) as raw, t.n
                            -- The query: from the first '?' before any '#' up to the '#'.
                            from pg_catalog.regexp_split_to_table(pg_catalog.substring(url, '^[^?#]*\?([^#]*)'), '&') with ordinality as t(pair, n)
                           where pg_catalog.strpos(t.pair, '=') > 1) q
                   order by q.name, q.n) p);
end;
$$;

--
-- Name: FUNCTION url_params(url text); Type: COMMENT; Schema: app_hidden; Owner: -
--

COMMENT ON FUNCTION app_hidden.url_params(url text) IS 'Query parameters of a URL as {name: first value}, decoded and trimmed; empty values are absent.';

--
-- Name: sites; Type: TABLE; Schema: app_public; Owner: -
--

CREATE TABLE app_public.sites (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    name text NOT NULL,
    domain text NOT NULL,
    public_key text DEFAULT ('pk_'::text || encode(public.gen_random_bytes(16), 'hex'::text)) NOT NULL,
    allowed_origins text[] DEFAULT '{}'::text[] NOT NULL,
    consent_mode text DEFAULT 'required'::text NOT NULL,
    monthly_event_quota bigint,
    rate_limit_per_minute integer DEFAULT 600 NOT NULL,
    timezone text DEFAULT 'UTC'::text NOT NULL,
    currency text DEFAULT 'USD'::text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    data_retention_months integer DEFAULT 13 NOT NULL,
    CONSTRAINT sites_allowed_origins_format CHECK ((array_to_string(allowed_origins, ' '::text) ~ '^(https?://[a-z0-9.-]+(:[0-9]{1,5})?( |$))*$'::text)),
    CONSTRAINT sites_consent_mode CHECK ((consent_mode = ANY (ARRAY['required'::text, 'implied'::text]))),
    CONSTRAINT sites_currency_format CHECK ((app_hidden.currency_minor_units(currency) IS NOT NULL)),
    CONSTRAINT sites_data_retention_months_range CHECK (((data_retention_months >= 1) AND (data_retention_months <= 13))),
    CONSTRAINT sites_domain_format CHECK ((domain ~ '^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$'::text)),
    CONSTRAINT sites_monthly_event_quota_positive CHECK ((monthly_event_quota >= 0)),
    CONSTRAINT sites_name_length CHECK (((length(name) >= 1) AND (length(name) <= 200))),
    CONSTRAINT sites_public_key_format CHECK ((public_key ~ '^pk_[0-9a-f]{32}$'::text)),
    CONSTRAINT sites_rate_limit_non_negative CHECK ((rate_limit_per_minute >= 0)),
    CONSTRAINT sites_timezone_known CHECK (app_hidden.is_valid_timezone(timezone))
);

--
-- Name: TABLE sites; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON TABLE app_public.sites IS 'A tracked website: the tenant. Everything else belongs to exactly one site.';

--
-- Name: COLUMN sites.id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sites.id IS 'The tenant identifier (site_id everywhere else).';

--
-- Name: COLUMN sites.name; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sites.name IS 'Human name of the site.';

--
-- Name: COLUMN sites.domain; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sites.domain IS 'Registrable domain; tracked URLs must be on it or a subdomain.';

--
-- Name: COLUMN sites.public_key; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sites.public_key IS 'Public key the tracker sends with events. Not a secret: it identifies, it does not authorise.';

--
-- Name: COLUMN sites.allowed_origins; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sites.allowed_origins IS 'Browser origins (scheme://host[:port]) allowed to send tracker events, besides the global list.';

--
-- Name: COLUMN sites.consent_mode; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sites.consent_mode IS '`required`: nothing identifying is kept without analytics consent (EEA/UK/TR default). `implied`: granted unless denied.';

--
-- Name: COLUMN sites.monthly_event_quota; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sites.monthly_event_quota IS 'Billable events allowed per UTC calendar month; null means unlimited.';

--
-- Name: COLUMN sites.rate_limit_per_minute; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sites.rate_limit_per_minute IS 'Tracker requests allowed per client IP per minute; 0 turns the limit off.';

--
-- Name: COLUMN sites.timezone; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sites.timezone IS 'IANA time zone used for reports and conversion times.';

--
-- Name: COLUMN sites.currency; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sites.currency IS 'ISO 4217 currency of the site''s revenue.';

--
-- Name: COLUMN sites.created_at; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sites.created_at IS 'When the site was created.';

--
-- Name: COLUMN sites.updated_at; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sites.updated_at IS 'When the site''s settings last changed.';

--
-- Name: COLUMN sites.data_retention_months; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sites.data_retention_months IS 'How long events, sessions and the personal data of calls are kept, in months (1 to 13; 13 by default).';

--
-- Name: admit_request(text, jsonb, text, text, text, text[]); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.admit_request(public_key text, events jsonb, origin text, client_ip text, user_agent text, global_origins text[], OUT site app_public.sites, OUT is_bot boolean) RETURNS record
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    SET enable_seqscan TO 'off'
    AS $$
begin
  site := app_private.find_site(admit_request.public_key, admit_request.origin, admit_request.global_origins, admit_request.client_ip);
  if pg_catalog.jsonb_typeof(admit_request.events) is distinct from 'array'
     or pg_catalog.jsonb_array_length(admit_request.events) not between 1 and 100 then
    raise exception using errcode = 'OMENV', message = 'events must be an array of 1 to 100 events.';
  end if;
  is_bot := exists (select 1 from app_private.bot_user_agents b
                     where pg_catalog.strpos(pg_catalog.lower(coalesce(admit_request.user_agent, '')), b.pattern) > 0);
end;
$$;

--
-- Name: FUNCTION admit_request(public_key text, events jsonb, origin text, client_ip text, user_agent text, global_origins text[], OUT site app_public.sites, OUT is_bot boolean); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.admit_request(public_key text, events jsonb, origin text, client_ip text, user_agent text, global_origins text[], OUT site app_public.sites, OUT is_bot boolean) IS 'The request-level checks of POST /api/sync: the site of the key, its origin, the rate limit, the envelope, and whether the user agent is a bot. Raises OMUSK, OMORG, OM429 or OMENV.';

--
-- Name: append_audit(uuid, text, text, text, jsonb, jsonb, uuid, uuid, text); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.append_audit(site_id uuid, action text, target_table text, target_id text, old_values jsonb, new_values jsonb, actor_user_id uuid, actor_api_key_id uuid, actor_db_role text) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
declare
  v_site uuid := coalesce(append_audit.site_id, '00000000-0000-0000-0000-000000000000');
  v_head app_private.audit_chain_heads;
  v_entry app_public.audit_log;
begin
  insert into app_private.audit_chain_heads (site_id) values (v_site) on conflict do nothing;
  select * into v_head from app_private.audit_chain_heads h where h.site_id = v_site for update;
  v_entry := row(v_site, v_head.last_seq + 1, pg_catalog.clock_timestamp(),
                 append_audit.actor_user_id, append_audit.actor_api_key_id, append_audit.actor_db_role,
                 append_audit.action, append_audit.target_table, append_audit.target_id,
                 append_audit.old_values, append_audit.new_values, v_head.last_hash, null);
  v_entry.occurred_at := pg_catalog.date_trunc('microseconds', v_entry.occurred_at);
  v_entry.row_hash := app_private.audit_row_hash(v_head.last_hash, v_entry);
  insert into app_public.audit_log select v_entry.*;
  update app_private.audit_chain_heads h set last_seq = v_entry.seq, last_hash = v_entry.row_hash
   where h.site_id = v_site;
  return v_entry.seq;
end;
$$;

--
-- Name: FUNCTION append_audit(site_id uuid, action text, target_table text, target_id text, old_values jsonb, new_values jsonb, actor_user_id uuid, actor_api_key_id uuid, actor_db_role text); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.append_audit(site_id uuid, action text, target_table text, target_id text, old_values jsonb, new_values jsonb, actor_user_id uuid, actor_api_key_id uuid, actor_db_role text) IS 'Appends one row to a site''s audit chain. The only writer of audit_log.';

--
-- Name: assert_billing_access(uuid, text); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.assert_billing_access(site_id uuid, action text) RETURNS void
    LANGUAGE plpgsql STABLE
    AS $$
begin
  if pg_catalog.current_setting('role', true) = 'opsmantik_visitor' then
    perform app_hidden.assert_site_role(assert_billing_access.site_id, 'admin', assert_billing_access.action, 'invoice_snapshots',
                                        assert_billing_access.site_id::text);
  end if;
end;
$$;

--
-- Name: FUNCTION assert_billing_access(site_id uuid, action text); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.assert_billing_access(site_id uuid, action text) IS 'Raises OM403 for a request (visitor role) that is not admin or owner of the site; direct SQL is not limited.';

--
-- Name: assert_caller_role(uuid, app_public.site_role, text, text, text); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.assert_caller_role(site_id uuid, min_role app_public.site_role, action text, target_table text, target_id text) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
begin
  if pg_catalog.current_setting('role', true) is distinct from 'opsmantik_visitor'
     and (session_user = 'opsmantik_owner' or exists (select 1 from pg_catalog.pg_roles r where r.rolname = session_user and r.rolsuper)) then
    return;
  end if;
  perform app_hidden.assert_site_role(assert_caller_role.site_id, assert_caller_role.min_role, assert_caller_role.action,
                                      assert_caller_role.target_table, assert_caller_role.target_id);
end;
$$;

--
-- Name: FUNCTION assert_caller_role(site_id uuid, min_role app_public.site_role, action text, target_table text, target_id text); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.assert_caller_role(site_id uuid, min_role app_public.site_role, action text, target_table text, target_id text) IS 'Raises OM403 unless the caller holds min_role on the site; the owner''s own sessions (worker, DBA) pass.';

--
-- Name: audit_log; Type: TABLE; Schema: app_public; Owner: -
--

CREATE TABLE app_public.audit_log (
    site_id uuid NOT NULL,
    seq bigint NOT NULL,
    occurred_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    actor_user_id uuid,
    actor_api_key_id uuid,
    actor_db_role text NOT NULL,
    action text NOT NULL,
    target_table text NOT NULL,
    target_id text,
    old_values jsonb,
    new_values jsonb,
    prev_hash bytea,
    row_hash bytea NOT NULL
);

--
-- Name: TABLE audit_log; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON TABLE app_public.audit_log IS '@behavior +aggregates +aggregates:filterBy +aggregates:orderBy
Append-only, hash-chained record of every change to sensitive data and of every denied attempt.';

--
-- Name: COLUMN audit_log.site_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.audit_log.site_id IS 'The site whose chain holds the row (the nil UUID for platform-level rows).';

--
-- Name: COLUMN audit_log.seq; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.audit_log.seq IS 'Position in the site''s chain, 1, 2, 3… without gaps.';

--
-- Name: COLUMN audit_log.occurred_at; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.audit_log.occurred_at IS 'When the change was made.';

--
-- Name: COLUMN audit_log.actor_user_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.audit_log.actor_user_id IS 'The dashboard user who acted, if any.';

--
-- Name: COLUMN audit_log.actor_api_key_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.audit_log.actor_api_key_id IS 'The API key that acted, if any.';

--
-- Name: COLUMN audit_log.actor_db_role; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.audit_log.actor_db_role IS 'The database login that acted (a DBA''s own role for direct SQL).';

--
-- Name: COLUMN audit_log.action; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.audit_log.action IS 'insert, update, delete, or denied:<what was attempted>.';

--
-- Name: COLUMN audit_log.target_table; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.audit_log.target_table IS 'The table changed or targeted.';

--
-- Name: COLUMN audit_log.target_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.audit_log.target_id IS 'The primary key of the target row, as text.';

--
-- Name: COLUMN audit_log.old_values; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.audit_log.old_values IS 'The row before the change, secrets redacted.';

--
-- Name: COLUMN audit_log.new_values; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.audit_log.new_values IS 'The row after the change, secrets redacted.';

--
-- Name: COLUMN audit_log.prev_hash; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.audit_log.prev_hash IS 'row_hash of the previous row in this site''s chain (null for the first).';

--
-- Name: COLUMN audit_log.row_hash; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.audit_log.row_hash IS 'SHA-256 of prev_hash and this row''s canonical text.';

--
-- Name: audit_row_hash(bytea, app_public.audit_log); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.audit_row_hash(prev_hash bytea, entry app_public.audit_log) RETURNS bytea
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
  select public.digest(
    coalesce(audit_row_hash.prev_hash, ''::bytea) || pg_catalog.convert_to(pg_catalog.concat_ws(E'\x1f',
      entry.site_id::text, entry.seq::text,
      pg_catalog.to_char(entry.occurred_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
      coalesce(entry.actor_user_id::text, '-'), coalesce(entry.actor_api_key_id::text, '-'),
      entry.actor_db_role, entry.action, entry.target_table, coalesce(entry.target_id, '-'),
      coalesce(entry.old_values::text, '-'), coalesce(entry.new_values::text, '-')), 'UTF8'),
    'sha256');
$$;

--
-- Name: FUNCTION audit_row_hash(prev_hash bytea, entry app_public.audit_log); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.audit_row_hash(prev_hash bytea, entry app_public.audit_log) IS 'SHA-256 over the previous hash and the row''s canonical text (fields joined by U+001F).';

--
-- Name: authenticate_api_key(text); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.authenticate_api_key(key text) RETURNS TABLE(api_key_id uuid, site_id uuid, role app_public.site_role)
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
begin
  return query
  update app_public.api_keys k
     set last_used_at = case when k.last_used_at is null or k.last_used_at < pg_catalog.now() - interval '1 minute'
                             then pg_catalog.now() else k.last_used_at end
    from app_private.api_key_hashes h
   where h.key_hash = public.digest(authenticate_api_key.key, 'sha256')
     and k.site_id = h.site_id and k.id = h.api_key_id
     and k.revoked_at is null
  returning k.id, k.site_id, k.role;
end;
$$;

--
-- Name: FUNCTION authenticate_api_key(key text); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.authenticate_api_key(key text) IS 'Resolves a presented API key to its id, site and role; empty when unknown or revoked.';

--
-- Name: offline_conversion_queue; Type: TABLE; Schema: app_public; Owner: -
--

CREATE TABLE app_public.offline_conversion_queue (
    site_id uuid NOT NULL,
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    sale_id uuid NOT NULL,
    provider text DEFAULT 'google'::text NOT NULL,
    kind text DEFAULT 'conversion'::text NOT NULL,
    status text DEFAULT 'pending'::text NOT NULL,
    order_id text NOT NULL,
    click_id text,
    click_id_type text,
    conversion_at timestamp with time zone NOT NULL,
    value numeric NOT NULL,
    currency text NOT NULL,
    ad_user_data text NOT NULL,
    ad_personalization text NOT NULL,
    attempts integer DEFAULT 0 NOT NULL,
    retry_at timestamp with time zone DEFAULT now() NOT NULL,
    locked_by text,
    locked_until timestamp with time zone,
    last_error_code text,
    last_error_message text,
    request_id text,
    sent_at timestamp with time zone,
    accepted_at timestamp with time zone,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    destination_id uuid,
    stage text GENERATED ALWAYS AS (
CASE
    WHEN (status = ANY (ARRAY['pending'::text, 'processing'::text])) THEN 'open'::text
    WHEN (status = 'sent'::text) THEN 'sent'::text
    ELSE 'closed'::text
END) STORED NOT NULL,
    CONSTRAINT offline_conversion_queue_ad_personalization CHECK ((ad_personalization = ANY (ARRAY['granted'::text, 'denied'::text, 'unspecified'::text]))),
    CONSTRAINT offline_conversion_queue_ad_user_data CHECK ((ad_user_data = ANY (ARRAY['granted'::text, 'denied'::text, 'unspecified'::text]))),
    CONSTRAINT offline_conversion_queue_click_id_type CHECK ((click_id_type = ANY (ARRAY['gclid'::text, 'gbraid'::text, 'wbraid'::text]))),
    CONSTRAINT offline_conversion_queue_kind CHECK ((kind = ANY (ARRAY['conversion'::text, 'retraction'::text]))),
    CONSTRAINT offline_conversion_queue_provider CHECK ((provider = 'google'::text)),
    CONSTRAINT offline_conversion_queue_status CHECK ((status = ANY (ARRAY['pending'::text, 'processing'::text, 'sent'::text, 'accepted'::text, 'failed'::text, 'cancelled'::text])))
)
WITH (fillfactor='50');

--
-- Name: TABLE offline_conversion_queue; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON TABLE app_public.offline_conversion_queue IS '@behavior +aggregates +aggregates:filterBy +aggregates:orderBy +groupedAggregates
Conversions (and retractions of undone ones) on their way to Google, one row each, with their honest status.';

--
-- Name: COLUMN offline_conversion_queue.site_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.offline_conversion_queue.site_id IS 'The site.';

--
-- Name: COLUMN offline_conversion_queue.id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.offline_conversion_queue.id IS 'Identifier.';

--
-- Name: COLUMN offline_conversion_queue.sale_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.offline_conversion_queue.sale_id IS 'The sale it reports.';

--
-- Name: COLUMN offline_conversion_queue.provider; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.offline_conversion_queue.provider IS 'Where it goes (google).';

--
-- Name: COLUMN offline_conversion_queue.kind; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.offline_conversion_queue.kind IS 'conversion, or retraction of one already delivered.';

--
-- Name: COLUMN offline_conversion_queue.status; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.offline_conversion_queue.status IS '@isIndexed
pending (waiting; see retry_at), processing (an uploader holds it), sent (Google has it, result pending), accepted, failed (see last_error_code) or cancelled.';

--
-- Name: COLUMN offline_conversion_queue.order_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.offline_conversion_queue.order_id IS 'Sent as the order / transaction id, the same on every attempt, so Google counts the conversion once.';

--
-- Name: COLUMN offline_conversion_queue.click_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.offline_conversion_queue.click_id IS 'The Google click id it is attributed to; filled in later if it becomes known before delivery.';

--
-- Name: COLUMN offline_conversion_queue.click_id_type; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.offline_conversion_queue.click_id_type IS 'gclid, gbraid or wbraid.';

--
-- Name: COLUMN offline_conversion_queue.conversion_at; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.offline_conversion_queue.conversion_at IS 'When the conversion happened.';

--
-- Name: COLUMN offline_conversion_queue.value; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.offline_conversion_queue.value IS 'Conversion value.';

--
-- Name: COLUMN offline_conversion_queue.currency; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.offline_conversion_queue.currency IS 'ISO 4217 code.';

--
-- Name: COLUMN offline_conversion_queue.ad_user_data; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.offline_conversion_queue.ad_user_data IS 'Consent Mode v2 signal sent with it; hashed email and phone go only when granted.';

--
-- Name: COLUMN offline_conversion_queue.ad_personalization; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.offline_conversion_queue.ad_personalization IS 'Consent Mode v2 signal sent with it.';

--
-- Name: COLUMN offline_conversion_queue.attempts; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.offline_conversion_queue.attempts IS 'How many times it went to Google with its outcome recorded, or an uploader took a lease on it; a batch handed back unsent does not count.';

--
-- Name: COLUMN offline_conversion_queue.retry_at; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.offline_conversion_queue.retry_at IS 'Not claimed before this time (Google asked us to wait, or an error backs off).';

--
-- Name: COLUMN offline_conversion_queue.locked_by; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.offline_conversion_queue.locked_by IS 'The uploader holding it, while processing.';

--
-- Name: COLUMN offline_conversion_queue.locked_until; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.offline_conversion_queue.locked_until IS 'The lease: past it, another uploader may reclaim the row.';

--
-- Name: COLUMN offline_conversion_queue.last_error_code; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.offline_conversion_queue.last_error_code IS 'Google''s (or our) code for the last failure.';

--
-- Name: COLUMN offline_conversion_queue.last_error_message; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.offline_conversion_queue.last_error_message IS 'The last failure in words.';

--
-- Name: COLUMN offline_conversion_queue.request_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.offline_conversion_queue.request_id IS 'Google''s request id of the upload that carried it.';

--
-- Name: COLUMN offline_conversion_queue.sent_at; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.offline_conversion_queue.sent_at IS 'When Google first took the upload.';

--
-- Name: COLUMN offline_conversion_queue.accepted_at; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.offline_conversion_queue.accepted_at IS 'When Google accepted it.';

--
-- Name: COLUMN offline_conversion_queue.created_at; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.offline_conversion_queue.created_at IS 'When it was queued.';

--
-- Name: COLUMN offline_conversion_queue.updated_at; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.offline_conversion_queue.updated_at IS 'When it last changed.';

--
-- Name: COLUMN offline_conversion_queue.destination_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.offline_conversion_queue.destination_id IS '@isIndexed
The destination it was last sent to.';

--
-- Name: COLUMN offline_conversion_queue.stage; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.offline_conversion_queue.stage IS '@behavior -*
Derived from status for the queue''s partial indexes: open (pending or processing), sent, closed. A claim leaves it unchanged.';

--
-- Name: awaits_request_status(app_public.offline_conversion_queue); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.awaits_request_status(q app_public.offline_conversion_queue) RETURNS boolean
    LANGUAGE sql STABLE
    AS $$
  select app_private.lacks_request_verdict(q) and q.sent_at > pg_catalog.now() - interval '2 days';
$$;

--
-- Name: FUNCTION awaits_request_status(q app_public.offline_conversion_queue); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.awaits_request_status(q app_public.offline_conversion_queue) IS 'True for a row a Data Manager request carried whose processing status Google has not yet given (asked for up to two days; never for rows a CSV export took).';

--
-- Name: call_event_secrets_for(text); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.call_event_secrets_for(public_key text) RETURNS TABLE(site_id uuid, current_secret text, previous_secret text)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
  select c.site_id, c.current_secret, c.previous_secret
    from app_public.sites s join app_private.call_event_secrets c on c.site_id = s.id
   where s.public_key = call_event_secrets_for.public_key;
$$;

--
-- Name: FUNCTION call_event_secrets_for(public_key text); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.call_event_secrets_for(public_key text) IS 'The signing secrets of the site with this public key (used only to verify signatures, never returned to clients).';

--
-- Name: carry_out_erasure(uuid, uuid); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.carry_out_erasure(site_id uuid, request_id uuid) RETURNS jsonb
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
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

--
-- Name: FUNCTION carry_out_erasure(site_id uuid, request_id uuid); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.carry_out_erasure(site_id uuid, request_id uuid) IS 'Erases everything linked to a request''s subject, in one transaction; idempotent. Returns the receipt (counts per table).';

--
-- Name: check_rate_limit(app_public.sites, text); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.check_rate_limit(site app_public.sites, client_ip text) RETURNS void
    LANGUAGE plpgsql
    AS $$
declare
  v_window timestamptz := pg_catalog.date_trunc('minute', pg_catalog.now());
  v_ip_hash bytea;
  v_hits bigint;
begin
  if site.rate_limit_per_minute = 0 or client_ip is null then
    return;
  end if;
  v_ip_hash := public.hmac(pg_catalog.convert_to(client_ip, 'UTF8'), app_private.daily_salt(v_window::date), 'sha256');
  insert into app_private.rate_counters as r (site_id, ip_hash, window_start, slot, hits)
  values (site.id, v_ip_hash, v_window, pg_catalog.pg_backend_pid() % 16, 1)
  on conflict (site_id, ip_hash, window_start, slot) do update set hits = r.hits + 1;
  select pg_catalog.sum(r.hits) into v_hits from app_private.rate_counters r
   where r.site_id = site.id and r.ip_hash = v_ip_hash and r.window_start = v_window;
  if v_hits > site.rate_limit_per_minute then
    raise exception using errcode = 'OM429', message = 'Too many requests.',
      detail = pg_catalog.ceil(extract(epoch from v_window + interval '1 minute' - pg_catalog.now()))::text;
  end if;
end;
$$;

--
-- Name: FUNCTION check_rate_limit(site app_public.sites, client_ip text); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.check_rate_limit(site app_public.sites, client_ip text) IS 'Counts a request against the site''s per-IP limit; raises OM429 (detail: seconds until the next minute) when over.';

--
-- Name: claim_offline_conversion_jobs(text, integer, uuid, text, integer, uuid); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.claim_offline_conversion_jobs(provider text, "limit" integer, site_id uuid DEFAULT NULL::uuid, worker text DEFAULT NULL::text, lease_seconds integer DEFAULT 300, destination_id uuid DEFAULT NULL::uuid) RETURNS SETOF app_public.offline_conversion_queue
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    SET jit TO 'off'
    SET enable_bitmapscan TO 'off'
    AS $$
declare
  v_rows tid[];
begin
  if (claim_offline_conversion_jobs."limit" between 1 and 2000 and claim_offline_conversion_jobs.lease_seconds between 10 and 86400) is not true then
    raise exception using errcode = '22023', message = 'limit must be 1 to 2000 and lease_seconds 10 to 86400.';
  end if;
  if claim_offline_conversion_jobs.site_id is not null then
    v_rows := array(select d.row_ctid from app_private.lock_due_conversions(claim_offline_conversion_jobs.site_id,
                                                                            claim_offline_conversion_jobs.provider,
                                                                            claim_offline_conversion_jobs."limit") d);
  else
    -- Every site at once (not the upload loop's way): the same rule, without the per-site index order.
    v_rows := array(
      select q.ctid from app_public.offline_conversion_queue q
       where q.stage = 'open' and q.retry_at <= pg_catalog.now()
         and (q.status = 'pending' or q.locked_until < pg_catalog.now())
         and q.provider = claim_offline_conversion_jobs.provider
         and (q.kind = 'conversion'
              or coalesce((select c.status in ('pending', 'processing') from app_public.offline_conversion_queue c
                            where c.site_id = q.site_id and c.sale_id = q.sale_id and c.provider = q.provider
                              and c.kind = 'conversion'), false) is false)
       order by q.retry_at, q.created_at, q.id
       limit claim_offline_conversion_jobs."limit"
         for update skip locked);
  end if;
  return query
  update app_public.offline_conversion_queue q
     set status = 'processing',
         locked_by = coalesce(claim_offline_conversion_jobs.worker, pg_catalog.pg_backend_pid()::text),
         locked_until = pg_catalog.now() + pg_catalog.make_interval(secs => claim_offline_conversion_jobs.lease_seconds),
         attempts = q.attempts + 1,
         destination_id = coalesce(claim_offline_conversion_jobs.destination_id, q.destination_id),
         updated_at = greatest(pg_catalog.now(), q.updated_at + interval '1 millisecond')
   where q.ctid = any (v_rows)
  returning q.*;
end;
$$;

--
-- Name: FUNCTION claim_offline_conversion_jobs(provider text, "limit" integer, site_id uuid, worker text, lease_seconds integer, destination_id uuid); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.claim_offline_conversion_jobs(provider text, "limit" integer, site_id uuid, worker text, lease_seconds integer, destination_id uuid) IS 'Claims up to limit due conversions (optionally of one site) for an uploader, under a lease of lease_seconds (FOR UPDATE SKIP LOCKED), recording the destination they go to.';

--
-- Name: close_unanswered_requests(uuid); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.close_unanswered_requests(site_id uuid) RETURNS integer
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
declare
  v_count integer;
begin
  update app_public.offline_conversion_queue q
     set last_error_code = 'NO_PROCESSING_STATUS',
         last_error_message = 'Google took the upload but gave no processing status within two days; whether these conversions matched is unknown.'
   where q.site_id = close_unanswered_requests.site_id and q.stage = 'sent' and app_private.lacks_request_verdict(q)
     and q.sent_at <= pg_catalog.now() - interval '2 days';
  get diagnostics v_count = row_count;
  return v_count;
end;
$$;

--
-- Name: FUNCTION close_unanswered_requests(site_id uuid); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.close_unanswered_requests(site_id uuid) IS 'Gives the site''s rows that waited two days for a processing status in vain the code NO_PROCESSING_STATUS; returns how many.';

--
-- Name: compact_json_size(jsonb); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.compact_json_size(value jsonb) RETURNS integer
    LANGUAGE sql IMMUTABLE
    AS $_$
  select pg_catalog.octet_length(value::text) - coalesce((
    select pg_catalog.sum(case pg_catalog.jsonb_typeof(x)
                            when 'object' then greatest(2 * (select pg_catalog.count(*) from pg_catalog.jsonb_object_keys(x)) - 1, 0)
                            when 'array' then greatest(pg_catalog.jsonb_array_length(x) - 1, 0)
                            else 0 end)
      from pg_catalog.jsonb_path_query(value, 'strict $.**') x), 0)::integer;
$_$;

--
-- Name: FUNCTION compact_json_size(value jsonb); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.compact_json_size(value jsonb) IS 'Bytes of a JSON value written compactly (no white space), as a tracker sends it.';

--
-- Name: compute_ledger_digest(uuid, date); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.compute_ledger_digest(site_id uuid, period date) RETURNS text
    LANGUAGE sql STABLE
    AS $$
  select pg_catalog.encode(public.digest(coalesce(pg_catalog.string_agg(
           app_hidden.ledger_line(l.idempotency_key, l.occurred_at, l.billable) || E'\n', ''
           order by l.idempotency_key::text collate "C", l.occurred_at), ''), 'sha256'), 'hex')
    from app_public.ingest_idempotency l
   where l.site_id = compute_ledger_digest.site_id
     and l.occurred_at >= (app_private.period_bounds(compute_ledger_digest.period)).starts_at
     and l.occurred_at < (app_private.period_bounds(compute_ledger_digest.period)).ends_at;
$$;

--
-- Name: FUNCTION compute_ledger_digest(site_id uuid, period date); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.compute_ledger_digest(site_id uuid, period date) IS 'The SPEC §9 digest of a site''s ledger for a period, computed now.';

--
-- Name: conversion_consent(app_public.sites, text, uuid); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.conversion_consent(site app_public.sites, visitor_id text, session_id uuid) RETURNS jsonb
    LANGUAGE plpgsql STABLE
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
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

--
-- Name: FUNCTION conversion_consent(site app_public.sites, visitor_id text, session_id uuid); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.conversion_consent(site app_public.sites, visitor_id text, session_id uuid) IS 'Consent signals for a conversion: the visitor''s latest choice, the session''s, or the site default.';

--
-- Name: conversion_payloads(uuid, uuid[]); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.conversion_payloads(site_id uuid, ids uuid[]) RETURNS TABLE(id uuid, kind text, order_id text, click_id text, click_id_type text, conversion_time text, adjustment_time text, value text, currency text, email_sha256 text, phone_sha256 text, ad_user_data text, ad_personalization text, caller_id text, call_start_time text, unmatchable text)
    LANGUAGE sql STABLE
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
  select p.* from app_private.shape_conversion_payloads(conversion_payloads.site_id, array(
    select q from app_public.offline_conversion_queue q
     where q.site_id = conversion_payloads.site_id and q.id = any (conversion_payloads.ids))) p;
$$;

--
-- Name: FUNCTION conversion_payloads(site_id uuid, ids uuid[]); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.conversion_payloads(site_id uuid, ids uuid[]) IS 'Queue rows in the shape the rails send: time in the site''s zone (never before the click), identifiers and caller only with ad_user_data granted, and whether Google could match the row at all.';

--
-- Name: count_event_removals(uuid, text, timestamp with time zone[]); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.count_event_removals(site_id uuid, reason text, occurred timestamp with time zone[]) RETURNS bigint
    LANGUAGE sql
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
  with groups as (
    select pg_catalog.date_trunc('month', o at time zone 'UTC')::date as period, count(*) as events
      from unnest(count_event_removals.occurred) o
     group by 1
  ), counted as (
    insert into app_private.event_removals as r (site_id, period, reason, events)
    select count_event_removals.site_id, g.period, count_event_removals.reason, g.events from groups g
    on conflict (site_id, period, reason) do update set events = r.events + excluded.events
  )
  select coalesce(sum(g.events), 0)::bigint from groups g;
$$;

--
-- Name: FUNCTION count_event_removals(site_id uuid, reason text, occurred timestamp with time zone[]); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.count_event_removals(site_id uuid, reason text, occurred timestamp with time zone[]) IS 'Adds deleted events to the per-month removal counts; returns how many.';

--
-- Name: create_site(uuid, text, text, text, bigint, integer, text[], text, text); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.create_site(owner_id uuid, name text, domain text, consent_mode text DEFAULT 'required'::text, monthly_event_quota bigint DEFAULT NULL::bigint, rate_limit_per_minute integer DEFAULT 600, allowed_origins text[] DEFAULT '{}'::text[], timezone text DEFAULT 'UTC'::text, currency text DEFAULT 'USD'::text) RETURNS app_public.sites
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
declare
  v_site app_public.sites;
begin
  insert into app_public.sites (name, domain, consent_mode, monthly_event_quota,
                                rate_limit_per_minute, allowed_origins, timezone, currency)
  values (create_site.name, pg_catalog.lower(create_site.domain), create_site.consent_mode,
          create_site.monthly_event_quota, create_site.rate_limit_per_minute,
          create_site.allowed_origins, create_site.timezone, create_site.currency)
  returning * into v_site;
  insert into app_public.site_members (site_id, user_id, role) values (v_site.id, create_site.owner_id, 'owner');
  return v_site;
end;
$$;

--
-- Name: FUNCTION create_site(owner_id uuid, name text, domain text, consent_mode text, monthly_event_quota bigint, rate_limit_per_minute integer, allowed_origins text[], timezone text, currency text); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.create_site(owner_id uuid, name text, domain text, consent_mode text, monthly_event_quota bigint, rate_limit_per_minute integer, allowed_origins text[], timezone text, currency text) IS 'Creates a site with its first owner. Used by the CLI and by app_public.create_site.';

--
-- Name: csv_field(text); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.csv_field(value text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
  select case when value ~ '[",\r\n]' then '"' || pg_catalog.replace(value, '"', '""') || '"' else value end;
$$;

--
-- Name: FUNCTION csv_field(value text); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.csv_field(value text) IS 'A CSV field, quoted when it needs to be (RFC 4180).';

--
-- Name: daily_salt(date); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.daily_salt(day date) RETURNS bytea
    LANGUAGE plpgsql
    AS $$
declare
  v_salt bytea;
begin
  select d.salt into v_salt from app_private.daily_salts d where d.day = daily_salt.day;
  if v_salt is null then
    insert into app_private.daily_salts (day) values (daily_salt.day) on conflict do nothing;
    select d.salt into v_salt from app_private.daily_salts d where d.day = daily_salt.day;
  end if;
  return v_salt;
end;
$$;

--
-- Name: FUNCTION daily_salt(day date); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.daily_salt(day date) IS 'The salt of a UTC day, created on first use.';

--
-- Name: drop_expired_ledger_partitions(integer); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.drop_expired_ledger_partitions(retention_days integer DEFAULT 90) RETURNS text[]
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
declare
  v_partition record;
  v_dropped text[] := '{}';
  v_unfrozen boolean;
begin
  if retention_days is null or retention_days < 90 then
    raise exception using errcode = 'OMRET', message = 'Ledger retention must be at least 90 days.';
  end if;
  for v_partition in
    select c.oid::regclass::text as relation,
           (pg_catalog.regexp_match(pg_catalog.pg_get_expr(c.relpartbound, c.oid), 'FROM \(''([^'']+)''\) TO \(''([^'']+)''\)')) as bounds
      from pg_catalog.pg_inherits i join pg_catalog.pg_class c on c.oid = i.inhrelid
     where i.inhparent = 'app_public.ingest_idempotency'::regclass and not c.relname like '%\_default'
  loop
    continue when v_partition.bounds is null or v_partition.bounds[2]::timestamptz + pg_catalog.make_interval(days => retention_days) > pg_catalog.now();
    execute pg_catalog.format(
      'select exists (select 1 from %s l where not exists (select 1 from app_public.invoice_snapshots s
                       where s.site_id = l.site_id and s.period = pg_catalog.date_trunc(''month'', l.occurred_at at time zone ''UTC'')::date))',
      v_partition.relation) into v_unfrozen;
    continue when v_unfrozen;
    execute pg_catalog.format('drop table %s', v_partition.relation);
    v_dropped := v_dropped || v_partition.relation;
  end loop;
  return v_dropped;
end;
$$;

--
-- Name: FUNCTION drop_expired_ledger_partitions(retention_days integer); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.drop_expired_ledger_partitions(retention_days integer) IS 'Drops ledger partitions past retention (at least 90 days) whose every site-month is frozen; never an unfrozen month.';

--
-- Name: drop_needless_retractions(uuid, uuid[]); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.drop_needless_retractions(site_id uuid, sale_ids uuid[]) RETURNS integer
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
declare
  v_count integer;
begin
  update app_public.offline_conversion_queue r
     set status = 'cancelled', last_error_code = 'NOTHING_TO_RETRACT',
         last_error_message = 'The conversion never reached Google, so there is nothing to retract.'
   where r.site_id = drop_needless_retractions.site_id and r.sale_id = any(drop_needless_retractions.sale_ids)
     and r.kind = 'retraction' and r.status = 'pending'
     and exists (select 1 from app_public.offline_conversion_queue c
                  where c.site_id = r.site_id and c.sale_id = r.sale_id and c.provider = r.provider
                    and c.kind = 'conversion' and c.status in ('failed', 'cancelled'));
  get diagnostics v_count = row_count;
  return v_count;
end;
$$;

--
-- Name: FUNCTION drop_needless_retractions(site_id uuid, sale_ids uuid[]); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.drop_needless_retractions(site_id uuid, sale_ids uuid[]) IS 'Cancels pending retractions of these sales whose conversion ended without reaching Google (failed or cancelled).';

--
-- Name: effective_consent(app_public.sites, jsonb, jsonb); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.effective_consent(site app_public.sites, own jsonb, recorded jsonb) RETURNS jsonb
    LANGUAGE sql IMMUTABLE
    AS $$
  select case when site.consent_mode = 'implied'
              then '{"analytics_storage": "granted", "ad_storage": "granted", "ad_user_data": "granted", "ad_personalization": "granted"}'::jsonb
              else '{"analytics_storage": "denied", "ad_storage": "denied", "ad_user_data": "denied", "ad_personalization": "denied"}'::jsonb
         end || (coalesce(own, recorded, '{}'::jsonb) - array['functionality_storage', 'personalization_storage', 'security_storage']);
$$;

--
-- Name: FUNCTION effective_consent(site app_public.sites, own jsonb, recorded jsonb); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.effective_consent(site app_public.sites, own jsonb, recorded jsonb) IS 'The consent signals that apply to an event.';

--
-- Name: sales; Type: TABLE; Schema: app_public; Owner: -
--

CREATE TABLE app_public.sales (
    site_id uuid NOT NULL,
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    external_id text NOT NULL,
    amount numeric NOT NULL,
    currency text NOT NULL,
    occurred_at timestamp with time zone NOT NULL,
    status text DEFAULT 'confirmed'::text NOT NULL,
    conversation_id uuid,
    call_id uuid,
    session_id uuid,
    visitor_id text,
    gclid text,
    attribution_tier text,
    attribution_source text,
    click_id text,
    click_id_type text,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    created_by_user_id uuid,
    created_by_api_key_id uuid,
    session_event_id uuid,
    CONSTRAINT sales_amount_range CHECK (((amount >= (0)::numeric) AND (amount < '1000000000000'::numeric))),
    CONSTRAINT sales_attribution_tier CHECK ((attribution_tier = ANY (ARRAY['S1'::text, 'S2'::text, 'S3'::text, 'S4'::text, 'S5'::text]))),
    CONSTRAINT sales_currency_iso CHECK ((app_hidden.currency_minor_units(currency) IS NOT NULL)),
    CONSTRAINT sales_external_id_format CHECK ((external_id ~ '^[[:graph:]]([[:graph:] ]{0,126}[[:graph:]])?$'::text)),
    CONSTRAINT sales_gclid_format CHECK ((gclid ~ '^[A-Za-z0-9_-]{1,255}$'::text)),
    CONSTRAINT sales_status CHECK ((status = ANY (ARRAY['confirmed'::text, 'cancelled'::text]))),
    CONSTRAINT sales_visitor_id_format CHECK ((visitor_id ~ '^[A-Za-z0-9_-]{1,64}$'::text))
);

--
-- Name: TABLE sales; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON TABLE app_public.sales IS '@behavior +aggregates +aggregates:filterBy +aggregates:orderBy
Confirmed sales (from a CRM, the dashboard or a sealed call), with the attribution their conversion is uploaded with.';

--
-- Name: COLUMN sales.site_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sales.site_id IS 'The site.';

--
-- Name: COLUMN sales.id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sales.id IS 'Identifier.';

--
-- Name: COLUMN sales.external_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sales.external_id IS 'The CRM''s identifier: unique per site, so a repeated confirmation changes nothing. Sent to Google as the order id.';

--
-- Name: COLUMN sales.amount; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sales.amount IS 'Value in currency units (never negative).';

--
-- Name: COLUMN sales.currency; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sales.currency IS 'ISO 4217 code.';

--
-- Name: COLUMN sales.occurred_at; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sales.occurred_at IS 'When the sale happened.';

--
-- Name: COLUMN sales.status; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sales.status IS 'confirmed, or cancelled when a sealed call was undone.';

--
-- Name: COLUMN sales.conversation_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sales.conversation_id IS 'The conversation it came from, if any.';

--
-- Name: COLUMN sales.call_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sales.call_id IS 'The call it came from, if any.';

--
-- Name: COLUMN sales.session_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sales.session_id IS 'The session it was attributed to, if any.';

--
-- Name: COLUMN sales.visitor_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sales.visitor_id IS 'The website visitor id the CRM sent, if any.';

--
-- Name: COLUMN sales.gclid; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sales.gclid IS 'The Google click id the CRM sent, if any.';

--
-- Name: COLUMN sales.attribution_tier; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sales.attribution_tier IS 'S1…S5 of the session, call or click it was attributed to; null when nothing was known.';

--
-- Name: COLUMN sales.attribution_source; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sales.attribution_source IS 'The attribution detail (see sessions).';

--
-- Name: COLUMN sales.click_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sales.click_id IS 'The Google click id its conversion is uploaded with (S1''s own, S3''s assisting one).';

--
-- Name: COLUMN sales.click_id_type; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sales.click_id_type IS 'gclid, gbraid or wbraid.';

--
-- Name: COLUMN sales.created_at; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sales.created_at IS 'When it was recorded.';

--
-- Name: COLUMN sales.created_by_user_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sales.created_by_user_id IS 'The dashboard user who confirmed it, if any.';

--
-- Name: COLUMN sales.created_by_api_key_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sales.created_by_api_key_id IS 'The API key (CRM) that confirmed it, if any.';

--
-- Name: COLUMN sales.session_event_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sales.session_event_id IS 'The first event of the session the sale was attributed to: finds the visit again if late events re-derive its id.';

--
-- Name: enqueue_conversion(app_public.sales, jsonb); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.enqueue_conversion(sale app_public.sales, consent jsonb) RETURNS app_public.offline_conversion_queue
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
declare
  v_row app_public.offline_conversion_queue;
begin
  insert into app_public.offline_conversion_queue (site_id, sale_id, order_id, click_id, click_id_type, conversion_at, value, currency,
                                                   ad_user_data, ad_personalization)
  values (sale.site_id, sale.id, app_hidden.google_order_id(sale.site_id, sale.external_id), sale.click_id, sale.click_id_type,
          sale.occurred_at, sale.amount, sale.currency,
          coalesce(consent ->> 'ad_user_data', 'unspecified'), coalesce(consent ->> 'ad_personalization', 'unspecified'))
  on conflict on constraint offline_conversion_queue_once do nothing
  returning * into v_row;
  if v_row.id is not null then
    perform app_private.enqueue_upload(sale.site_id, 'google');
  end if;
  return v_row;
end;
$$;

--
-- Name: FUNCTION enqueue_conversion(sale app_public.sales, consent jsonb); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.enqueue_conversion(sale app_public.sales, consent jsonb) IS 'Queues the conversion of a sale, once, with its upload job.';

--
-- Name: enqueue_upload(uuid, text, timestamp with time zone); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.enqueue_upload(site_id uuid, provider text, run_at timestamp with time zone DEFAULT NULL::timestamp with time zone) RETURNS void
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
declare
  v_key text := 'upload_conversions:' || enqueue_upload.provider || ':' || enqueue_upload.site_id::text;
  v_run_at timestamptz := coalesce(enqueue_upload.run_at, pg_catalog.now());
  v_waiting timestamptz;
  v_attempts integer;
begin
  -- Row-locked until this transaction ends: a worker picking jobs skips locked rows, so it
  -- cannot start this job's run before the sale it is left waiting for has committed.
  select j.run_at, j.attempts into v_waiting, v_attempts
    from graphile_worker._private_jobs j where j.key = v_key and j.locked_at is null
     for update;
  if v_attempts = 0 and v_waiting <= v_run_at then
    return;  -- already due in time, and replacing it would change nothing a worker reads
  end if;
  perform graphile_worker.add_job('upload_conversions',
    pg_catalog.json_build_object('site_id', enqueue_upload.site_id, 'provider', enqueue_upload.provider),
    queue_name => v_key, job_key => v_key, job_key_mode => 'replace', run_at => least(v_run_at, v_waiting));
end;
$$;

--
-- Name: FUNCTION enqueue_upload(site_id uuid, provider text, run_at timestamp with time zone); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.enqueue_upload(site_id uuid, provider text, run_at timestamp with time zone) IS 'Schedules the upload_conversions job of a site (one per site; idempotent).';

--
-- Name: ensure_quota_shards(app_public.sites, date); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.ensure_quota_shards(site app_public.sites, period date) RETURNS void
    LANGUAGE plpgsql
    AS $$
declare
  v_site app_public.sites;
begin
  if site.monthly_event_quota is null
     or exists (select 1 from app_private.quota_shards q where q.site_id = site.id and q.period = ensure_quota_shards.period) then
    return;
  end if;
  -- The quota as it stands now, not as the request found it, and held until commit: a change
  -- being made waits for these shards and then recounts them, or these wait for the change.
  select s.* into v_site from app_public.sites s where s.id = site.id for share;
  if v_site.monthly_event_quota is null then
    return;
  end if;
  insert into app_private.quota_shards (site_id, period, shard, remaining)
  select v_site.id, ensure_quota_shards.period, s.shard, s.remaining
    from app_private.quota_shares(app_private.quota_left(v_site, ensure_quota_shards.period)) s
  on conflict do nothing;
end;
$$;

--
-- Name: FUNCTION ensure_quota_shards(site app_public.sites, period date); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.ensure_quota_shards(site app_public.sites, period date) IS 'Creates the 16 quota shards of a site and month on first use, holding the quota left.';

--
-- Name: event_problem(jsonb, app_public.sites, timestamp with time zone); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.event_problem(event jsonb, site app_public.sites, now timestamp with time zone) RETURNS TABLE(code text, message text, occurred_at timestamp with time zone)
    LANGUAGE sql STABLE
    AS $_$
  -- OFFSET 0 keeps each sub-select from being merged into its caller, which would repeat
  -- the time parsing and the CASE for every reference to their results.
  select pg_catalog.split_part(p.problem, '|', 1), pg_catalog.split_part(p.problem, '|', 2),
         case when p.problem is null then p.ts end
    from (select t.ts, case
      when pg_catalog.jsonb_typeof(event) is distinct from 'object'
        then 'invalid_event|An event must be a JSON object with valid strings.'
      when pg_catalog.jsonb_typeof(event -> 'id') is distinct from 'string'
           or event ->> 'id' !~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
        then 'invalid_event|id must be a UUID.'
      when pg_catalog.jsonb_typeof(event -> 'type') is distinct from 'string' or event ->> 'type' !~ '^[a-z][a-z0-9_]{0,39}$'
        then 'invalid_event|type must match ^[a-z][a-z0-9_]{0,39}$.'
      when pg_catalog.jsonb_typeof(event -> 'visitor_id') is distinct from 'string' or event ->> 'visitor_id' !~ '^[A-Za-z0-9_-]{1,64}$'
        then 'invalid_event|visitor_id must be 1 to 64 letters, digits, _ or -.'
      when t.ts is null
        then 'invalid_ts|ts must be an ISO-8601 time with a zone.'
      when t.ts < now - interval '7 days' or t.ts > now + interval '5 minutes'
        then 'invalid_ts|ts must lie between 7 days ago and 5 minutes from now.'
      when t.has_url and (pg_catalog.jsonb_typeof(event -> 'url') <> 'string' or pg_catalog.length(event ->> 'url') > 2048
                          or event ->> 'url' !~* '^https?://[^\s/?#]+([/?#][^\s]*)?$')
        then 'invalid_event|url must be an absolute http(s) URL of at most 2048 characters.'
      when t.has_url and not coalesce(app_hidden.host_is_on(app_hidden.url_host(event ->> 'url'), site.domain), false)
        then 'url_not_on_site|url is not on the site''s domain.'
      when not t.has_url and event ->> 'type' = 'pageview'
        then 'invalid_event|A pageview needs a url.'
      when event ? 'referrer' and pg_catalog.jsonb_typeof(event -> 'referrer') <> 'null' and event ->> 'referrer' <> ''
           and (pg_catalog.jsonb_typeof(event -> 'referrer') <> 'string' or pg_catalog.length(event ->> 'referrer') > 2048
                or event ->> 'referrer' !~* '^https?://[^\s/?#]+([/?#][^\s]*)?$')
        then 'invalid_event|referrer must be an absolute http(s) URL or empty.'
      when event ? 'title' and pg_catalog.jsonb_typeof(event -> 'title') <> 'null'
           and (pg_catalog.jsonb_typeof(event -> 'title') <> 'string' or pg_catalog.length(event ->> 'title') > 1000)
        then 'invalid_event|title must be a string of at most 1000 characters.'
      when event ? 'props' and pg_catalog.jsonb_typeof(event -> 'props') <> 'null'
           and (pg_catalog.jsonb_typeof(event -> 'props') <> 'object'
                or (pg_catalog.octet_length((event -> 'props')::text) > 4096 and app_private.compact_json_size(event -> 'props') > 4096)
                or pg_catalog.jsonb_path_exists(event -> 'props', 'strict $.**{4 to last}'))
        then 'invalid_event|props must be an object of at most 4 KiB, nested at most 3 levels.'
      when event ? 'consent' and pg_catalog.jsonb_typeof(event -> 'consent') <> 'null' and not app_private.valid_consent(event -> 'consent')
        then 'invalid_event|consent must map Consent Mode signals to granted or denied.'
      when event ? 'device' and pg_catalog.jsonb_typeof(event -> 'device') <> 'null'
           and (pg_catalog.jsonb_typeof(event -> 'device') <> 'object'
                or (pg_catalog.octet_length((event -> 'device')::text) > 1024 and app_private.compact_json_size(event -> 'device') > 1024)
                or pg_catalog.jsonb_path_exists(event -> 'device', 'strict $.* ? (@.type() != "string")'))
        then 'invalid_event|device must be an object of strings of at most 1 KiB.'
    end as problem
    from (select case when pg_catalog.jsonb_typeof(event -> 'ts') = 'string' then app_hidden.parse_timestamptz(event ->> 'ts') end as ts,
                 event ? 'url' and pg_catalog.jsonb_typeof(event -> 'url') <> 'null' as has_url
          offset 0) t
    offset 0) p;
$_$;

--
-- Name: FUNCTION event_problem(event jsonb, site app_public.sites, now timestamp with time zone); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.event_problem(event jsonb, site app_public.sites, now timestamp with time zone) IS 'Validates one tracker event (SPEC §5.1): an event-level error code and message, or for a valid event nulls and its parsed time.';

--
-- Name: export_credential_for(text); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.export_credential_for(username text) RETURNS TABLE(site_id uuid, password_sha256 bytea)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
  select c.site_id, c.password_sha256 from app_private.export_credentials c where c.username = export_credential_for.username;
$$;

--
-- Name: FUNCTION export_credential_for(username text); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.export_credential_for(username text) IS 'The site and password hash of an export credential (compared in constant time by the caller).';

--
-- Name: find_site(text, text, text[], text); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.find_site(public_key text, origin text, global_origins text[], client_ip text) RETURNS app_public.sites
    LANGUAGE plpgsql
    AS $$
declare
  v_site app_public.sites;
begin
  select * into v_site from app_public.sites s where s.public_key = find_site.public_key;
  if v_site.id is null then
    raise exception using errcode = 'OMUSK', message = 'Unknown site key.';
  end if;
  if not app_private.origin_allowed(v_site, find_site.origin, find_site.global_origins) then
    raise exception using errcode = 'OMORG', message = 'This origin may not send events for the site.';
  end if;
  perform app_private.check_rate_limit(v_site, find_site.client_ip);
  return v_site;
end;
$$;

--
-- Name: FUNCTION find_site(public_key text, origin text, global_origins text[], client_ip text); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.find_site(public_key text, origin text, global_origins text[], client_ip text) IS 'The site of a public key, after the origin check (OMORG) and the rate limit (OM429); OMUSK when unknown.';

--
-- Name: former_destinations_awaiting_status(uuid); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.former_destinations_awaiting_status(site_id uuid) RETURNS SETOF uuid
    LANGUAGE sql STABLE
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
  select d.id from app_public.destinations d
   where d.site_id = former_destinations_awaiting_status.site_id and d.status = 'paused' and d.rail = 'datamanager'
     and exists (select 1 from app_public.offline_conversion_queue q
                  where q.site_id = d.site_id and q.stage = 'sent' and q.destination_id = d.id and app_private.request_status_due(q));
$$;

--
-- Name: FUNCTION former_destinations_awaiting_status(site_id uuid); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.former_destinations_awaiting_status(site_id uuid) IS 'Paused Data Manager destinations of a site with requests whose processing status is due to be asked.';

--
-- Name: freeze_due_invoices(timestamp with time zone); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.freeze_due_invoices(now timestamp with time zone DEFAULT now()) RETURNS integer
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
declare
  v_due record;
  v_count integer := 0;
begin
  perform pg_catalog.set_config('app.frozen_by', 'schedule', true);
  for v_due in
    select distinct l.site_id, pg_catalog.date_trunc('month', l.occurred_at at time zone 'UTC')::date as period
      from app_public.ingest_idempotency l
     -- Never ahead of the real clock: freeze_invoice would refuse those periods anyway.
     where l.occurred_at < pg_catalog.date_trunc('month', (least(freeze_due_invoices.now, pg_catalog.now()) - interval '8 days') at time zone 'UTC') at time zone 'UTC'
       and not exists (select 1 from app_public.invoice_snapshots s
                        where s.site_id = l.site_id
                          and s.period = pg_catalog.date_trunc('month', l.occurred_at at time zone 'UTC')::date)
  loop
    perform app_public.freeze_invoice(v_due.site_id, v_due.period);
    v_count := v_count + 1;
  end loop;
  return v_count;
end;
$$;

--
-- Name: FUNCTION freeze_due_invoices(now timestamp with time zone); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.freeze_due_invoices(now timestamp with time zone) IS 'Freezes every unfrozen site-month whose grace has passed; returns how many.';

--
-- Name: google_time(timestamp with time zone, text); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.google_time(at timestamp with time zone, zone text) RETURNS text
    LANGUAGE sql STABLE
    AS $$
  select pg_catalog.to_char(at at time zone zone, 'YYYY-MM-DD HH24:MI:SS')
         || case when (at at time zone zone) < (at at time zone 'UTC') then '-' else '+' end
         || pg_catalog.to_char(pg_catalog.abs((extract(epoch from (at at time zone zone) - (at at time zone 'UTC')) / 60)::integer) / 60, 'FM00')
         || ':'
         || pg_catalog.to_char(pg_catalog.abs((extract(epoch from (at at time zone zone) - (at at time zone 'UTC')) / 60)::integer) % 60, 'FM00');
$$;

--
-- Name: FUNCTION google_time(at timestamp with time zone, zone text); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.google_time(at timestamp with time zone, zone text) IS 'A time as Google''s conversion imports want it: yyyy-mm-dd hh:mm:ss+hh:mm in the given zone.';

--
-- Name: hash_subject(uuid, text, text); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.hash_subject(site_id uuid, kind text, normalized text) RETURNS text
    LANGUAGE sql STABLE
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
  select pg_catalog.encode(public.hmac(pg_catalog.convert_to(kind || ':' || normalized, 'UTF8'), s.salt, 'sha256'), 'hex')
    from app_private.site_salts s where s.site_id = hash_subject.site_id;
$$;

--
-- Name: FUNCTION hash_subject(site_id uuid, kind text, normalized text); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.hash_subject(site_id uuid, kind text, normalized text) IS 'HMAC-SHA256 of kind:value with the site''s secret salt.';

--
-- Name: ingest_cleanup(); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.ingest_cleanup() RETURNS jsonb
    LANGUAGE plpgsql
    AS $$
declare
  v_counters bigint;
  v_salts bigint;
begin
  delete from app_private.rate_counters r where r.window_start < pg_catalog.now() - interval '2 minutes';
  get diagnostics v_counters = row_count;
  -- Past 8 days no late event can need the salt; deleting it makes those hashes unlinkable.
  delete from app_private.daily_salts d where d.day < (pg_catalog.now() at time zone 'UTC')::date - 8;
  get diagnostics v_salts = row_count;
  return pg_catalog.jsonb_build_object('rate_counters', v_counters, 'daily_salts', v_salts);
end;
$$;

--
-- Name: FUNCTION ingest_cleanup(); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.ingest_cleanup() IS 'Deletes spent rate-limit counters and daily salts older than 8 days.';

--
-- Name: ingest_events(text, jsonb, text, text, text, text[]); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.ingest_events(public_key text, events jsonb, origin text, client_ip text, user_agent text, global_origins text[] DEFAULT '{}'::text[]) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
declare
  v_admitted record;
begin
  v_admitted := app_private.admit_request(ingest_events.public_key, ingest_events.events, ingest_events.origin,
                                          ingest_events.client_ip, ingest_events.user_agent, ingest_events.global_origins);
  return app_private.store_events(v_admitted.site, pg_catalog.jsonb_build_array(ingest_events.events), array[v_admitted.is_bot]) -> 0;
end;
$$;

--
-- Name: FUNCTION ingest_events(public_key text, events jsonb, origin text, client_ip text, user_agent text, global_origins text[]); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.ingest_events(public_key text, events jsonb, origin text, client_ip text, user_agent text, global_origins text[]) IS 'POST /api/sync in one call: returns {accepted, duplicates, rejected[]}; raises OMUSK, OMORG, OM429 or OMENV for the whole request.';

--
-- Name: ingest_requests(jsonb, text[]); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.ingest_requests(requests jsonb, global_origins text[] DEFAULT '{}'::text[]) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
declare
  v_count integer;
  v_outcomes jsonb[];
  v_request jsonb;
  v_index integer;
  v_admitted record;
  -- Per admitted request, in order: its site, the site's id, its index in the group, bot or not.
  v_sites app_public.sites[] := '{}';
  v_site_ids uuid[] := '{}';
  v_indexes integer[] := '{}';
  v_bots boolean[] := '{}';
  v_site_id uuid;
  v_batches jsonb;
  v_batch_indexes integer[];
  v_batch_bots boolean[];
  v_results jsonb;
  v_state text;
  v_detail text;
  v_message text;
begin
  if pg_catalog.jsonb_typeof(requests) is distinct from 'array' then
    raise exception using errcode = 'OMENV', message = 'requests must be an array.';
  end if;
  v_count := pg_catalog.jsonb_array_length(requests);
  v_outcomes := pg_catalog.array_fill(null::jsonb, array[v_count]);

  begin
    -- Admit each request on its own: a refusal rolls back only that request's checks.
    for v_index in 1 .. v_count loop
      v_request := requests -> (v_index - 1);
      begin
        v_admitted := app_private.admit_request(v_request ->> 'site', v_request -> 'events', v_request ->> 'origin',
                                                v_request ->> 'client_ip', v_request ->> 'user_agent', global_origins);
        v_sites := v_sites || v_admitted.site;
        v_site_ids := v_site_ids || (v_admitted.site).id;
        v_indexes := v_indexes || v_index;
        v_bots := v_bots || v_admitted.is_bot;
      exception when others then
        get stacked diagnostics v_state = returned_sqlstate, v_detail = pg_exception_detail, v_message = message_text;
        v_outcomes[v_index] := pg_catalog.jsonb_build_object('code', v_state, 'detail', v_detail, 'message', v_message);
      end;
    end loop;
    -- Then one pass per site, sites in id order (the same order in every group).
    for v_site_id in select distinct s from pg_catalog.unnest(v_site_ids) s order by 1 loop
      select pg_catalog.jsonb_agg(requests -> (a.i - 1) -> 'events' order by a.i), pg_catalog.array_agg(a.i order by a.i),
             pg_catalog.array_agg(a.bot order by a.i)
        into v_batches, v_batch_indexes, v_batch_bots
        from unnest(v_site_ids, v_indexes, v_bots) a(site_id, i, bot)  -- multi-array unnest: FROM syntax, not a pg_catalog function
       where a.site_id = v_site_id;
      v_results := app_private.store_events(v_sites[pg_catalog.array_position(v_site_ids, v_site_id)], v_batches, v_batch_bots);
      for v_index in 1 .. pg_catalog.cardinality(v_batch_indexes) loop
        v_outcomes[v_batch_indexes[v_index]] := pg_catalog.jsonb_build_object('result', v_results -> (v_index - 1));
      end loop;
    end loop;
    return pg_catalog.to_jsonb(v_outcomes);
  exception when others then
    -- Something in the shared pass failed: it is all rolled back. Below, each request runs
    -- alone, so the failure stays with the request that causes it.
    null;
  end;

  for v_index in 1 .. v_count loop
    v_request := requests -> (v_index - 1);
    begin
      v_outcomes[v_index] := pg_catalog.jsonb_build_object('result',
        app_private.ingest_events(v_request ->> 'site', v_request -> 'events', v_request ->> 'origin',
                                  v_request ->> 'client_ip', v_request ->> 'user_agent', global_origins));
    exception when others then
      get stacked diagnostics v_state = returned_sqlstate, v_detail = pg_exception_detail, v_message = message_text;
      v_outcomes[v_index] := pg_catalog.jsonb_build_object('code', v_state, 'detail', v_detail, 'message', v_message);
    end;
  end loop;
  return pg_catalog.to_jsonb(v_outcomes);
end;
$$;

--
-- Name: FUNCTION ingest_requests(requests jsonb, global_origins text[]); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.ingest_requests(requests jsonb, global_origins text[]) IS 'POST /api/sync under load: several requests ({site, events, origin, client_ip, user_agent}) in one transaction. Each is admitted on its own; each site''s admitted requests are stored in one pass; if that raises, each request runs alone in its own subtransaction. Returns one outcome per request, in order: {result} or {code, detail, message} for a request that was refused and left nothing.';

--
-- Name: issue_api_key(uuid, app_public.site_role, text, uuid); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.issue_api_key(site_id uuid, role app_public.site_role, name text, created_by uuid) RETURNS app_public.created_api_key
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
declare
  v_key text := 'om_' || pg_catalog.translate(pg_catalog.encode(public.gen_random_bytes(24), 'base64'), '+/', '-_');
  v_id uuid;
begin
  insert into app_public.api_keys (site_id, name, role, key_prefix, created_by)
  values (issue_api_key.site_id, coalesce(issue_api_key.name, ''), issue_api_key.role,
          pg_catalog.left(v_key, 10), issue_api_key.created_by)
  returning id into v_id;
  insert into app_private.api_key_hashes (site_id, api_key_id, key_hash)
  values (issue_api_key.site_id, v_id, public.digest(v_key, 'sha256'));
  return row(v_id, issue_api_key.site_id, issue_api_key.role, v_key)::app_public.created_api_key;
end;
$$;

--
-- Name: FUNCTION issue_api_key(site_id uuid, role app_public.site_role, name text, created_by uuid); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.issue_api_key(site_id uuid, role app_public.site_role, name text, created_by uuid) IS 'Creates an API key and returns it once. Callers check authority first.';

--
-- Name: lacks_request_verdict(app_public.offline_conversion_queue); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.lacks_request_verdict(q app_public.offline_conversion_queue) RETURNS boolean
    LANGUAGE sql STABLE
    AS $$
  select q.stage = 'sent' and q.request_id is not null and q.request_id <> 'csv' and q.last_error_code is null;
$$;

--
-- Name: FUNCTION lacks_request_verdict(q app_public.offline_conversion_queue); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.lacks_request_verdict(q app_public.offline_conversion_queue) IS 'True for a row a Data Manager request carried on which Google has given no processing verdict (never for rows a CSV export took).';

--
-- Name: latest_consent(uuid, bytea); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.latest_consent(site_id uuid, visitor_hash bytea) RETURNS jsonb
    LANGUAGE plpgsql STABLE
    AS $$
begin
  return (select pg_catalog.jsonb_build_object('analytics_storage', c.analytics_storage, 'ad_storage', c.ad_storage,
                                               'ad_user_data', c.ad_user_data, 'ad_personalization', c.ad_personalization)
            from app_public.consents c
           where c.site_id = latest_consent.site_id and c.visitor_hash = latest_consent.visitor_hash
           order by c.recorded_at desc, c.id desc
           limit 1);
end;
$$;

--
-- Name: FUNCTION latest_consent(site_id uuid, visitor_hash bytea); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.latest_consent(site_id uuid, visitor_hash bytea) IS 'A visitor''s latest recorded consent choice.';

--
-- Name: call_actions; Type: TABLE; Schema: app_public; Owner: -
--

CREATE TABLE app_public.call_actions (
    site_id uuid NOT NULL,
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    call_id uuid NOT NULL,
    action text NOT NULL,
    value numeric,
    currency text,
    sale_id uuid,
    undoes_id uuid,
    actor_user_id uuid,
    actor_api_key_id uuid,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT call_actions_action CHECK ((action = ANY (ARRAY['seal'::text, 'junk'::text, 'undo'::text]))),
    CONSTRAINT call_actions_undo_points_back CHECK (((action = 'undo'::text) = (undoes_id IS NOT NULL)))
);

--
-- Name: TABLE call_actions; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON TABLE app_public.call_actions IS '@behavior +aggregates +aggregates:filterBy +aggregates:orderBy
Every seal, junk and undo staff applied to a call, in order; never changed.';

--
-- Name: COLUMN call_actions.site_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.call_actions.site_id IS 'The site.';

--
-- Name: COLUMN call_actions.id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.call_actions.id IS 'Identifier.';

--
-- Name: COLUMN call_actions.call_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.call_actions.call_id IS 'The call.';

--
-- Name: COLUMN call_actions.action; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.call_actions.action IS 'seal, junk or undo.';

--
-- Name: COLUMN call_actions.value; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.call_actions.value IS 'The value given when sealing, if any.';

--
-- Name: COLUMN call_actions.currency; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.call_actions.currency IS 'Its currency.';

--
-- Name: COLUMN call_actions.sale_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.call_actions.sale_id IS 'The sale a seal created.';

--
-- Name: COLUMN call_actions.undoes_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.call_actions.undoes_id IS 'For undo: the action it reverted.';

--
-- Name: COLUMN call_actions.actor_user_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.call_actions.actor_user_id IS 'Who acted (dashboard user).';

--
-- Name: COLUMN call_actions.actor_api_key_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.call_actions.actor_api_key_id IS 'Who acted (API key).';

--
-- Name: COLUMN call_actions.created_at; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.call_actions.created_at IS 'When.';

--
-- Name: calls; Type: TABLE; Schema: app_public; Owner: -
--

CREATE TABLE app_public.calls (
    site_id uuid NOT NULL,
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    call_id text NOT NULL,
    status text NOT NULL,
    caller text,
    tracking_number text,
    started_at timestamp with time zone NOT NULL,
    duration_s integer DEFAULT 0 NOT NULL,
    visitor_id text,
    session_id uuid,
    gclid text,
    attribution_tier text,
    attribution_source text,
    click_id text,
    click_id_type text,
    received_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    via_google_forwarding boolean DEFAULT false NOT NULL,
    erased_at timestamp with time zone,
    CONSTRAINT calls_attribution_tier CHECK ((attribution_tier = ANY (ARRAY['S1'::text, 'S2'::text, 'S3'::text, 'S4'::text, 'S5'::text]))),
    CONSTRAINT calls_call_id_format CHECK ((call_id ~ '^[A-Za-z0-9_.:-]{1,200}$'::text)),
    CONSTRAINT calls_caller_e164 CHECK ((caller ~ '^\+[1-9][0-9]{6,14}$'::text)),
    CONSTRAINT calls_duration CHECK (((duration_s >= 0) AND (duration_s <= 86400))),
    CONSTRAINT calls_status CHECK ((status = ANY (ARRAY['ringing'::text, 'answered'::text, 'missed'::text, 'ended'::text]))),
    CONSTRAINT calls_tracking_number_e164 CHECK ((tracking_number ~ '^\+[1-9][0-9]{6,14}$'::text))
);

--
-- Name: TABLE calls; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON TABLE app_public.calls IS '@behavior +aggregates +aggregates:filterBy +aggregates:orderBy
Phone calls reported by the call-tracking provider, tied to the session that caused them.';

--
-- Name: COLUMN calls.site_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.calls.site_id IS 'The site.';

--
-- Name: COLUMN calls.id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.calls.id IS 'Our identifier.';

--
-- Name: COLUMN calls.call_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.calls.call_id IS 'The provider''s identifier; repeated events with it update this call.';

--
-- Name: COLUMN calls.status; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.calls.status IS 'ringing, then missed, or answered and ended; a late event never moves a call back.';

--
-- Name: COLUMN calls.caller; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.calls.caller IS 'Caller number (E.164).';

--
-- Name: COLUMN calls.tracking_number; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.calls.tracking_number IS 'The tracking number dialled (E.164).';

--
-- Name: COLUMN calls.started_at; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.calls.started_at IS 'When the call started.';

--
-- Name: COLUMN calls.duration_s; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.calls.duration_s IS 'Duration in seconds.';

--
-- Name: COLUMN calls.visitor_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.calls.visitor_id IS 'The website visitor the provider linked, if any.';

--
-- Name: COLUMN calls.session_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.calls.session_id IS 'The session the call was matched to.';

--
-- Name: COLUMN calls.gclid; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.calls.gclid IS 'The Google click id the provider reported, if any.';

--
-- Name: COLUMN calls.attribution_tier; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.calls.attribution_tier IS 'The matched session''s tier (S1 when only a gclid is known).';

--
-- Name: COLUMN calls.attribution_source; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.calls.attribution_source IS 'The matched session''s attribution source.';

--
-- Name: COLUMN calls.click_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.calls.click_id IS 'The click id to upload a conversion with: the session''s own (S1) or its assisting one (S3).';

--
-- Name: COLUMN calls.click_id_type; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.calls.click_id_type IS 'gclid, gbraid or wbraid (or msclkid for S2).';

--
-- Name: COLUMN calls.received_at; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.calls.received_at IS 'When we first heard of the call.';

--
-- Name: COLUMN calls.updated_at; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.calls.updated_at IS 'When the call last changed.';

--
-- Name: COLUMN calls.via_google_forwarding; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.calls.via_google_forwarding IS 'The call came through a Google forwarding number (the provider said so): its conversion is uploaded as a call conversion.';

--
-- Name: COLUMN calls.erased_at; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.calls.erased_at IS 'When an erasure stripped this call of its subject''s data; later events about the call add none back.';

--
-- Name: lock_call_for_action(uuid, uuid, text); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.lock_call_for_action(site_id uuid, call_id uuid, action text, OUT call app_public.calls, OUT standing app_public.call_actions) RETURNS record
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
begin
  perform app_private.assert_caller_role(lock_call_for_action.site_id, 'editor', action || '_call', 'calls', lock_call_for_action.call_id::text);
  select * into call from app_public.calls c
   where c.site_id = lock_call_for_action.site_id and c.id = lock_call_for_action.call_id
     for update;
  if call.id is null then
    raise exception using errcode = 'OMUCL', message = 'No call of this site has this id.';
  end if;
  select * into standing from app_public.call_actions a
   where a.site_id = call.site_id and a.call_id = call.id and a.action <> 'undo'
     and not exists (select 1 from app_public.call_actions u where u.site_id = a.site_id and u.undoes_id = a.id)
   order by a.created_at desc, a.id desc
   limit 1;
end;
$$;

--
-- Name: FUNCTION lock_call_for_action(site_id uuid, call_id uuid, action text, OUT call app_public.calls, OUT standing app_public.call_actions); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.lock_call_for_action(site_id uuid, call_id uuid, action text, OUT call app_public.calls, OUT standing app_public.call_actions) IS 'Role check and row lock for a call action; returns the call and its standing seal or junk.';

--
-- Name: lock_conversion_batch(uuid, integer, integer); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.lock_conversion_batch(site_id uuid, "limit" integer, lease_seconds integer, OUT ctids tid[], OUT ids uuid[], OUT payloads json) RETURNS record
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    SET jit TO 'off'
    AS $$
declare
  v_rows app_public.offline_conversion_queue[];
begin
  if (lock_conversion_batch."limit" between 1 and 2000 and lock_conversion_batch.lease_seconds between 10 and 86400) is not true then
    raise exception using errcode = '22023', message = 'limit must be 1 to 2000 and lease_seconds 10 to 86400.';
  end if;
  -- The lease: a session that holds the batch and stops talking is ended, which releases it.
  perform pg_catalog.set_config('idle_in_transaction_session_timeout', (lock_conversion_batch.lease_seconds * 1000)::text, true);
  select coalesce(pg_catalog.array_agg(d.row_ctid), '{}'), coalesce(pg_catalog.array_agg((d.queued).id), '{}'),
         coalesce(pg_catalog.array_agg(d.queued), '{}')
    into ctids, ids, v_rows
    from app_private.lock_due_conversions(lock_conversion_batch.site_id, 'google', lock_conversion_batch."limit") d;
  select coalesce(pg_catalog.json_agg(p), '[]') into payloads
    from app_private.shape_conversion_payloads(lock_conversion_batch.site_id, v_rows) p;
end;
$$;

--
-- Name: FUNCTION lock_conversion_batch(site_id uuid, "limit" integer, lease_seconds integer, OUT ctids tid[], OUT ids uuid[], OUT payloads json); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.lock_conversion_batch(site_id uuid, "limit" integer, lease_seconds integer, OUT ctids tid[], OUT ids uuid[], OUT payloads json) IS 'Locks up to "limit" due rows of the site for the calling transaction (the upload loop''s lease; the session ends after lease_seconds idle) and returns them ready to send: their ctids and ids in one order, for record_batch_outcomes, and their payloads.';

--
-- Name: lock_due_conversions(uuid, text, integer); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.lock_due_conversions(site_id uuid, provider text, "limit" integer) RETURNS TABLE(row_ctid tid, queued app_public.offline_conversion_queue)
    LANGUAGE sql
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    SET jit TO 'off'
    SET enable_bitmapscan TO 'off'
    AS $$
  select q.ctid, q from app_public.offline_conversion_queue q
   where q.site_id = lock_due_conversions.site_id and q.stage = 'open' and q.retry_at <= pg_catalog.now()
     and (q.status = 'pending' or q.locked_until < pg_catalog.now())
     and q.provider = lock_due_conversions.provider
     -- A retraction waits while its conversion is in flight: Google must see them in order.
     and (q.kind = 'conversion'
          or coalesce((select c.status in ('pending', 'processing') from app_public.offline_conversion_queue c
                        where c.site_id = q.site_id and c.sale_id = q.sale_id and c.provider = q.provider
                          and c.kind = 'conversion'), false) is false)
   order by q.retry_at, q.created_at, q.id
   limit lock_due_conversions."limit"
     for update of q skip locked;
$$;

--
-- Name: FUNCTION lock_due_conversions(site_id uuid, provider text, "limit" integer); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.lock_due_conversions(site_id uuid, provider text, "limit" integer) IS 'Locks up to "limit" of the site''s rows an uploader may take next (due, not leased, a retraction only once its conversion is out of flight), oldest first, for the calling transaction; returns their ctids and the rows as locked.';

--
-- Name: maintain_partitions(); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.maintain_partitions() RETURNS integer
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
begin
  perform partman.run_maintenance(p_analyze := false, p_jobmon := false);
  return app_private.secure_partitions();
end;
$$;

--
-- Name: FUNCTION maintain_partitions(); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.maintain_partitions() IS 'pg_partman maintenance (creates partitions 4 months ahead, applies retention), then secures new partitions.';

--
-- Name: mark_destination_needs_reauth(uuid, text, timestamp with time zone); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.mark_destination_needs_reauth(destination_id uuid, code text, seen_at timestamp with time zone DEFAULT NULL::timestamp with time zone) RETURNS void
    LANGUAGE sql
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
  update app_public.destinations d set status = 'needs_reauth', status_reason = mark_destination_needs_reauth.code
   where d.id = mark_destination_needs_reauth.destination_id and d.status = 'active'
     and (mark_destination_needs_reauth.seen_at is null or d.updated_at <= mark_destination_needs_reauth.seen_at);
$$;

--
-- Name: FUNCTION mark_destination_needs_reauth(destination_id uuid, code text, seen_at timestamp with time zone); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.mark_destination_needs_reauth(destination_id uuid, code text, seen_at timestamp with time zone) IS 'Google refused the destination (its credentials, or the destination itself): a person must act. With seen_at (the destination''s updated_at as the caller read it), a destination changed since is left alone.';

--
-- Name: metrics(); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.metrics() RETURNS TABLE(name text, help text, kind text, labels jsonb, value double precision)
    LANGUAGE plpgsql STABLE
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $_$
begin
  -- PL/pgSQL, not SQL: graphile-worker's schema is installed beside the migrations, not by them.
  return query
  select 'opsmantik_worker_heartbeat_age_seconds'::text, 'Seconds since a worker last completed its heartbeat job.'::text, 'gauge'::text, '{}'::jsonb,
         (select extract(epoch from pg_catalog.now() - max(h.beat_at)) from app_private.worker_heartbeats h)::float8
  union all
  select 'opsmantik_jobs', 'Background jobs by state: queued (waiting or due), running, failed (out of attempts).', 'gauge',
         pg_catalog.jsonb_build_object('state', s.state), coalesce(j.n, 0)::float8
    from (values ('queued'), ('running'), ('failed')) s(state)
    left join (select case when j.locked_at is not null then 'running' when j.attempts >= j.max_attempts then 'failed' else 'queued' end as state,
                      count(*) as n
                 from graphile_worker.jobs j group by 1) j on j.state = s.state
  union all
  select 'opsmantik_jobs_oldest_due_seconds', 'Seconds the longest-waiting due job has waited (0 when none).', 'gauge', '{}'::jsonb,
         coalesce((select extract(epoch from pg_catalog.now() - min(j.run_at)) from graphile_worker.jobs j
                    where j.locked_at is null and j.run_at <= pg_catalog.now() and j.attempts < j.max_attempts), 0)::float8
  union all
  select 'opsmantik_offline_conversions', 'Conversions and retractions not yet settled with Google: due (may go now), waiting (retry time not come), sent (Google has them, verdict pending).', 'gauge',
         pg_catalog.jsonb_build_object('state', s.state), coalesce(q.n, 0)::float8
    from (values ('due'), ('waiting'), ('sent')) s(state)
    left join (select case when q.stage = 'sent' then 'sent' when q.retry_at <= pg_catalog.now() then 'due' else 'waiting' end as state, count(*) as n
                 from app_public.offline_conversion_queue q where q.stage in ('open', 'sent') group by 1) q on q.state = s.state
  union all
  select 'opsmantik_offline_conversions_oldest_due_seconds', 'Seconds the longest-due conversion has waited since its retry time (0 when none).', 'gauge', '{}'::jsonb,
         coalesce((select extract(epoch from pg_catalog.now() - min(q.retry_at)) from app_public.offline_conversion_queue q
                    where q.stage = 'open' and q.retry_at <= pg_catalog.now()), 0)::float8
  union all
  select 'opsmantik_destinations', 'Delivery destinations by status.', 'gauge', pg_catalog.jsonb_build_object('status', s.status), coalesce(d.n, 0)::float8
    from (values ('active'), ('needs_reauth'), ('paused')) s(status)
    left join (select d.status, count(*) as n from app_public.destinations d group by 1) d on d.status = s.status
  union all
  select 'opsmantik_erasure_requests', 'Erasure requests not completed, by status.', 'gauge', pg_catalog.jsonb_build_object('status', s.status), coalesce(e.n, 0)::float8
    from (values ('pending'), ('running'), ('failed')) s(status)
    left join (select e.status, count(*) as n from app_public.erasure_requests e where e.status <> 'completed' group by 1) e on e.status = s.status
  union all
  select 'opsmantik_ledger_rows_written_total', 'Idempotency ledger rows written (PostgreSQL statistics; resets with them).', 'counter', '{}'::jsonb,
         coalesce((select sum(t.n_tup_ins) from pg_catalog.pg_stat_user_tables t
                    where t.schemaname = 'app_public' and t.relname ~ '^ingest_idempotency(_|$)'), 0)::float8
  union all
  select 'opsmantik_events_written_total', 'Tracker events written (PostgreSQL statistics; resets with them).', 'counter', '{}'::jsonb,
         coalesce((select sum(t.n_tup_ins) from pg_catalog.pg_stat_user_tables t
                    where t.schemaname = 'app_public' and t.relname ~ '^events(_|$)'), 0)::float8
  union all
  select 'opsmantik_database_connections', 'Connections to this database by state.', 'gauge', pg_catalog.jsonb_build_object('state', a.state), a.n::float8
    from (select coalesce(a.state, 'unknown') as state, count(*) as n from pg_catalog.pg_stat_activity a
           where a.datname = pg_catalog.current_database() group by 1) a;
end;
$_$;

--
-- Name: FUNCTION metrics(); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.metrics() IS 'The samples GET /api/metrics reports: name, help, type (gauge or counter), labels and value, each cheap to read at scale.';

--
-- Name: new_call_event_secret(); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.new_call_event_secret() RETURNS text
    LANGUAGE sql
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
  select 'whsec_' || pg_catalog.encode(public.gen_random_bytes(32), 'hex');
$$;

--
-- Name: FUNCTION new_call_event_secret(); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.new_call_event_secret() IS 'A fresh 256-bit call-event signing secret.';

--
-- Name: normalize_subject(text, text); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.normalize_subject(kind text, value text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $_$
declare
  v_normalized text;
begin
  v_normalized := case normalize_subject.kind
    when 'visitor_id' then case when normalize_subject.value ~ '^[A-Za-z0-9_-]{1,64}$' then normalize_subject.value end
    when 'email' then app_hidden.normalize_email(normalize_subject.value)
    when 'phone' then app_hidden.normalize_phone(normalize_subject.value)
    when 'click_id' then case when normalize_subject.value ~ '^[A-Za-z0-9_-]{1,255}$' then normalize_subject.value end
  end;
  if v_normalized is null then
    raise exception using errcode = 'OMSUB', message =
      'A subject is a visitor_id, email, phone (with its country code) or click_id, with a value of that kind.';
  end if;
  return v_normalized;
end;
$_$;

--
-- Name: FUNCTION normalize_subject(kind text, value text); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.normalize_subject(kind text, value text) IS 'A subject''s value in canonical form; OMSUB for an unknown kind or a malformed value.';

--
-- Name: oci_export_lines(uuid, text); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.oci_export_lines(site_id uuid, conversion_name text) RETURNS SETOF text
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
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

--
-- Name: FUNCTION oci_export_lines(site_id uuid, conversion_name text); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.oci_export_lines(site_id uuid, conversion_name text) IS 'The site''s click conversions as Google''s scheduled-import CSV (lines, without newlines); pending ones become sent.';

--
-- Name: sessions; Type: TABLE; Schema: app_public; Owner: -
--

CREATE TABLE app_public.sessions (
    site_id uuid NOT NULL,
    id uuid NOT NULL,
    started_at timestamp with time zone NOT NULL,
    ended_at timestamp with time zone NOT NULL,
    first_event_id uuid NOT NULL,
    last_event_id uuid NOT NULL,
    visitor_key text NOT NULL,
    visitor_id text,
    event_count integer NOT NULL,
    landing_url text,
    referrer text,
    attribution_tier text NOT NULL,
    attribution_source text NOT NULL,
    click_id text,
    click_id_type text,
    assisting_click_id text,
    assisting_click_id_type text,
    assisting_session_id uuid,
    utm_source text,
    utm_medium text,
    utm_campaign text,
    CONSTRAINT sessions_attribution_tier CHECK ((attribution_tier = ANY (ARRAY['S1'::text, 'S2'::text, 'S3'::text, 'S4'::text, 'S5'::text])))
)
PARTITION BY RANGE (started_at);

--
-- Name: TABLE sessions; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON TABLE app_public.sessions IS '@behavior +aggregates +aggregates:filterBy +aggregates:orderBy +groupedAggregates
Visits, derived from events: a visitor''s events with no gap over 30 minutes and no new campaign. Re-derived when late events arrive, so the same events always give the same sessions.';

--
-- Name: COLUMN sessions.site_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sessions.site_id IS 'The site.';

--
-- Name: COLUMN sessions.id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sessions.id IS 'Derived from the session''s first event, so it is the same whatever order events arrived in.';

--
-- Name: COLUMN sessions.started_at; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sessions.started_at IS 'Time of the first event.';

--
-- Name: COLUMN sessions.ended_at; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sessions.ended_at IS 'Time of the last event.';

--
-- Name: COLUMN sessions.first_event_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sessions.first_event_id IS 'Id of the first event (the session''s id is derived from it).';

--
-- Name: COLUMN sessions.last_event_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sessions.last_event_id IS 'Id of the last event (ties in time are ordered by id).';

--
-- Name: COLUMN sessions.visitor_key; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sessions.visitor_key IS 'The visitor (see events.visitor_key).';

--
-- Name: COLUMN sessions.visitor_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sessions.visitor_id IS 'The tracker''s visitor id, only with analytics consent.';

--
-- Name: COLUMN sessions.event_count; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sessions.event_count IS 'Events in the session.';

--
-- Name: COLUMN sessions.landing_url; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sessions.landing_url IS 'URL of the first event.';

--
-- Name: COLUMN sessions.referrer; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sessions.referrer IS 'Referrer of the first event.';

--
-- Name: COLUMN sessions.attribution_tier; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sessions.attribution_tier IS 'S1 Google Ads click, S2 other paid search, S3 ads-assisted (an S1/S2 session of the visitor in the 90 days before), S4 paid social, S5 organic.';

--
-- Name: COLUMN sessions.attribution_source; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sessions.attribution_source IS 'Detail: google_ads, paid:<source>, ads_assisted, paid_social:<network>, organic:<direct|search|social|email|referral|campaign>.';

--
-- Name: COLUMN sessions.click_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sessions.click_id IS 'The ad click id of the landing URL (gclid, gbraid, wbraid, msclkid, ttclid, li_fat_id or twclid).';

--
-- Name: COLUMN sessions.click_id_type; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sessions.click_id_type IS 'Which parameter click_id came from.';

--
-- Name: COLUMN sessions.assisting_click_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sessions.assisting_click_id IS 'For S3: the click id of the assisting S1/S2 session, used for conversion uploads.';

--
-- Name: COLUMN sessions.assisting_click_id_type; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sessions.assisting_click_id_type IS 'Which parameter assisting_click_id came from.';

--
-- Name: COLUMN sessions.assisting_session_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sessions.assisting_session_id IS 'For S3: the assisting session.';

--
-- Name: COLUMN sessions.utm_source; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sessions.utm_source IS 'utm_source of the landing URL, lower-cased.';

--
-- Name: COLUMN sessions.utm_medium; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sessions.utm_medium IS 'utm_medium of the landing URL, lower-cased.';

--
-- Name: COLUMN sessions.utm_campaign; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.sessions.utm_campaign IS 'utm_campaign of the landing URL, lower-cased.';

--
-- Name: open_session(uuid, text, text, uuid, timestamp with time zone, text, text, text); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.open_session(site_id uuid, visitor_key text, visitor_id text, event_id uuid, occurred_at timestamp with time zone, url text, referrer text, site_domain text) RETURNS app_public.sessions
    LANGUAGE plpgsql STABLE
    AS $$
declare
  v_landing app_hidden.landing_attribution := app_hidden.classify_landing(open_session.url, open_session.referrer, open_session.site_domain);
  v_assist_id uuid;
  v_assist_click_id text;
  v_assist_click_id_type text;
  v_session app_public.sessions;
begin
  if v_landing.tier not in ('S1', 'S2') then
    select s.id, s.click_id, s.click_id_type into v_assist_id, v_assist_click_id, v_assist_click_id_type
      from app_public.sessions s
     where s.site_id = open_session.site_id and s.visitor_key = open_session.visitor_key
       and s.started_at >= open_session.occurred_at - interval '90 days'
       and s.started_at < open_session.occurred_at
       and s.attribution_tier in ('S1', 'S2')
     order by s.started_at desc, s.first_event_id desc  -- ties go to the later event in (ts, id) order
     limit 1;
  end if;
  v_session := row(
    open_session.site_id, app_private.session_id_for(open_session.site_id, open_session.event_id),
    open_session.occurred_at, open_session.occurred_at, open_session.event_id, open_session.event_id,
    open_session.visitor_key, open_session.visitor_id, 1, open_session.url, nullif(open_session.referrer, ''),
    case when v_assist_id is not null then 'S3' else v_landing.tier end,
    case when v_assist_id is not null then 'ads_assisted' else v_landing.source end,
    coalesce(v_landing.click_id, v_landing.landing_click_id),
    case when v_landing.click_id is not null then v_landing.click_id_type else v_landing.landing_click_id_type end,
    v_assist_click_id, v_assist_click_id_type, v_assist_id,
    v_landing.utm_source, v_landing.utm_medium, v_landing.utm_campaign)::app_public.sessions;
  return v_session;
end;
$$;

--
-- Name: FUNCTION open_session(site_id uuid, visitor_key text, visitor_id text, event_id uuid, occurred_at timestamp with time zone, url text, referrer text, site_domain text); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.open_session(site_id uuid, visitor_key text, visitor_id text, event_id uuid, occurred_at timestamp with time zone, url text, referrer text, site_domain text) IS 'Builds the session an event opens, attributing it (S3 from the visitor''s sessions of the 90 days before).';

--
-- Name: origin_allowed(app_public.sites, text, text[]); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.origin_allowed(site app_public.sites, origin text, global_origins text[]) RETURNS boolean
    LANGUAGE sql IMMUTABLE
    AS $$
  select origin is not null
     and (pg_catalog.lower(origin) = any(site.allowed_origins) or pg_catalog.lower(origin) = any(global_origins));
$$;

--
-- Name: FUNCTION origin_allowed(site app_public.sites, origin text, global_origins text[]); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.origin_allowed(site app_public.sites, origin text, global_origins text[]) IS 'True when a browser Origin is in the site''s allowed_origins or the global list. A missing Origin is refused.';

--
-- Name: origin_known(text, text[]); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.origin_known(origin text, global_origins text[] DEFAULT '{}'::text[]) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
  select pg_catalog.lower(origin_known.origin) = any(origin_known.global_origins)
      or exists (select 1 from app_public.sites s where s.allowed_origins @> array[pg_catalog.lower(origin_known.origin)]);
$$;

--
-- Name: FUNCTION origin_known(origin text, global_origins text[]); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.origin_known(origin text, global_origins text[]) IS 'True when some site (or the global list) allows the origin: the CORS preflight check.';

--
-- Name: outcome_unknown(text); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.outcome_unknown(code text) RETURNS boolean
    LANGUAGE sql IMMUTABLE
    AS $$
  select code in ('DEADLINE_EXCEEDED', 'UNAVAILABLE', 'CANCELLED', 'UNKNOWN', 'INTERNAL', 'ABORTED');
$$;

--
-- Name: FUNCTION outcome_unknown(code text); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.outcome_unknown(code text) IS 'True for a code an upload ends with when Google gave no answer (a timeout, a dropped connection): Google may have the conversions.';

--
-- Name: period_bounds(date); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.period_bounds(period date, OUT starts_at timestamp with time zone, OUT ends_at timestamp with time zone) RETURNS record
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$
  select period::timestamp at time zone 'UTC', (period + interval '1 month') at time zone 'UTC';
$$;

--
-- Name: FUNCTION period_bounds(period date, OUT starts_at timestamp with time zone, OUT ends_at timestamp with time zone); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.period_bounds(period date, OUT starts_at timestamp with time zone, OUT ends_at timestamp with time zone) IS 'The first and the first-after-last instants of a billing period, in UTC.';

--
-- Name: period_start(date); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.period_start(period date) RETURNS date
    LANGUAGE plpgsql IMMUTABLE STRICT
    AS $$
begin
  if period <> pg_catalog.date_trunc('month', period)::date then
    raise exception using errcode = 'OMPER', message = 'A billing period is named by the first day of its month (YYYY-MM-01).';
  end if;
  return period;
end;
$$;

--
-- Name: FUNCTION period_start(period date); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.period_start(period date) IS 'Checks that a date names a billing period (the first of a month); raises OMPER otherwise.';

--
-- Name: place_event(uuid, text, text, uuid, timestamp with time zone, text, text, text, text); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.place_event(site_id uuid, visitor_key text, visitor_id text, event_id uuid, occurred_at timestamp with time zone, type text, url text, referrer text, site_domain text, OUT session_id uuid, OUT rebuild_since timestamp with time zone, OUT rebuild_since_event_id uuid) RETURNS record
    LANGUAGE plpgsql
    AS $$
declare
  v_previous record;
  v_session app_public.sessions;
begin
  select e.occurred_at, e.session_id into v_previous
    from app_public.events e
   where e.site_id = place_event.site_id and e.visitor_key = place_event.visitor_key
     and e.occurred_at >= place_event.occurred_at - interval '30 minutes' and not e.is_bot
     and e.occurred_at <= place_event.occurred_at  -- lets the planner skip later partitions
     and (e.occurred_at, e.id) < (place_event.occurred_at, place_event.event_id)
   order by e.occurred_at desc, e.id desc
   limit 1;
  if v_previous.session_id is not null then
    select * into v_session from app_public.sessions s
     where s.site_id = place_event.site_id and s.id = v_previous.session_id
       and s.started_at <= v_previous.occurred_at and s.started_at > v_previous.occurred_at - interval '35 days';
  end if;

  if exists (select 1 from app_public.events e
              where e.site_id = place_event.site_id and e.visitor_key = place_event.visitor_key
                and e.occurred_at >= place_event.occurred_at and not e.is_bot
                and (e.occurred_at, e.id) > (place_event.occurred_at, place_event.event_id)) then
    rebuild_since := coalesce(v_session.started_at, place_event.occurred_at);
    rebuild_since_event_id := coalesce(v_session.first_event_id, place_event.event_id);
    return;
  end if;

  if v_session.id is not null
     and not (place_event.type = 'pageview'
              and app_hidden.starts_new_session(place_event.url, v_session.click_id, v_session.utm_source, v_session.utm_campaign)) then
    update app_public.sessions s
       set ended_at = place_event.occurred_at, last_event_id = place_event.event_id, event_count = s.event_count + 1
     where s.site_id = v_session.site_id and s.id = v_session.id and s.started_at = v_session.started_at;
  else
    v_session := app_private.open_session(place_event.site_id, place_event.visitor_key, place_event.visitor_id,
                                          place_event.event_id, place_event.occurred_at, place_event.url,
                                          place_event.referrer, place_event.site_domain);
    insert into app_public.sessions select v_session.*;
  end if;
  session_id := v_session.id;
end;
$$;

--
-- Name: FUNCTION place_event(site_id uuid, visitor_key text, visitor_id text, event_id uuid, occurred_at timestamp with time zone, type text, url text, referrer text, site_domain text, OUT session_id uuid, OUT rebuild_since timestamp with time zone, OUT rebuild_since_event_id uuid); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.place_event(site_id uuid, visitor_key text, visitor_id text, event_id uuid, occurred_at timestamp with time zone, type text, url text, referrer text, site_domain text, OUT session_id uuid, OUT rebuild_since timestamp with time zone, OUT rebuild_since_event_id uuid) IS 'Extends or opens the visitor''s last session for an in-order event (returns session_id), or says from when to re-derive sessions for a late one (rebuild_since).';

--
-- Name: quota_left(app_public.sites, date); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.quota_left(site app_public.sites, period date) RETURNS bigint
    LANGUAGE sql STABLE
    AS $$
  select greatest(site.monthly_event_quota - app_private.quota_used(site.id, quota_left.period), 0);
$$;

--
-- Name: FUNCTION quota_left(site app_public.sites, period date); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.quota_left(site app_public.sites, period date) IS 'The site''s monthly quota less the billable events of that month in the ledger (never below 0).';

--
-- Name: quota_shares(bigint); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.quota_shares(total bigint) RETURNS TABLE(shard smallint, remaining bigint)
    LANGUAGE sql IMMUTABLE
    AS $$
  select s::smallint, quota_shares.total / 16 + case when s < quota_shares.total % 16 then 1 else 0 end
    from pg_catalog.generate_series(0, 15) as s;
$$;

--
-- Name: FUNCTION quota_shares(total bigint); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.quota_shares(total bigint) IS 'Splits what is left of a month''s quota over its 16 shards.';

--
-- Name: quota_used(uuid, date); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.quota_used(site_id uuid, period date) RETURNS bigint
    LANGUAGE sql STABLE
    AS $$
  select pg_catalog.count(*)
    from app_public.ingest_idempotency l
   where l.site_id = quota_used.site_id and l.billable
     and l.occurred_at >= (app_private.period_bounds(quota_used.period)).starts_at
     and l.occurred_at < (app_private.period_bounds(quota_used.period)).ends_at;
$$;

--
-- Name: FUNCTION quota_used(site_id uuid, period date); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.quota_used(site_id uuid, period date) IS 'The billable events of a site and month in the ledger.';

--
-- Name: rebuild_sessions(uuid, text, timestamp with time zone, uuid, text); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.rebuild_sessions(site_id uuid, visitor_key text, since timestamp with time zone, since_event_id uuid, site_domain text) RETURNS void
    LANGUAGE plpgsql
    AS $$
declare
  v_event record;
  v_current app_public.sessions;
  v_event_ids uuid[] := '{}';
  v_event_times timestamptz[] := '{}';
  v_session_ids uuid[] := '{}';
begin
  delete from app_public.sessions s
   where s.site_id = rebuild_sessions.site_id and s.visitor_key = rebuild_sessions.visitor_key
     and s.started_at >= rebuild_sessions.since
     and (s.started_at, s.first_event_id) >= (rebuild_sessions.since, rebuild_sessions.since_event_id);
  for v_event in
    select e.id, e.occurred_at, e.type, e.url, e.referrer, e.visitor_id
      from app_public.events e
     where e.site_id = rebuild_sessions.site_id and e.visitor_key = rebuild_sessions.visitor_key
       and e.occurred_at >= rebuild_sessions.since and not e.is_bot
       and (e.occurred_at, e.id) >= (rebuild_sessions.since, rebuild_sessions.since_event_id)
     order by e.occurred_at, e.id
  loop
    if v_current.id is null
       or v_event.occurred_at - v_current.ended_at > interval '30 minutes'
       or (v_event.type = 'pageview'
           and app_hidden.starts_new_session(v_event.url, v_current.click_id, v_current.utm_source, v_current.utm_campaign)) then
      if v_current.id is not null then
        insert into app_public.sessions select v_current.*;
      end if;
      v_current := app_private.open_session(rebuild_sessions.site_id, rebuild_sessions.visitor_key, v_event.visitor_id,
                                            v_event.id, v_event.occurred_at, v_event.url, v_event.referrer, rebuild_sessions.site_domain);
    else
      v_current.ended_at := v_event.occurred_at;
      v_current.last_event_id := v_event.id;
      v_current.event_count := v_current.event_count + 1;
    end if;
    v_event_ids := v_event_ids || v_event.id;
    v_event_times := v_event_times || v_event.occurred_at;
    v_session_ids := v_session_ids || v_current.id;
  end loop;
  if v_current.id is not null then
    insert into app_public.sessions select v_current.*;
  end if;
  update app_public.events e set session_id = m.session_id
    from unnest(v_event_ids, v_event_times, v_session_ids) as m(event_id, occurred_at, session_id)
   where e.site_id = rebuild_sessions.site_id and e.id = m.event_id and e.occurred_at = m.occurred_at
     and e.session_id is distinct from m.session_id;
end;
$$;

--
-- Name: FUNCTION rebuild_sessions(site_id uuid, visitor_key text, since timestamp with time zone, since_event_id uuid, site_domain text); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.rebuild_sessions(site_id uuid, visitor_key text, since timestamp with time zone, since_event_id uuid, site_domain text) IS 'Deletes a visitor''s sessions from the event (since, since_event_id) on and derives them again from the events.';

--
-- Name: record_batch_outcomes(uuid, uuid, tid[], uuid[], text[], text[], text[], integer[], text[], text, boolean); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.record_batch_outcomes(site_id uuid, destination_id uuid, ctids tid[], ids uuid[], kinds text[], codes text[], messages text[], retry_after_seconds integer[], request_ids text[], request_id text DEFAULT NULL::text, count_attempt boolean DEFAULT true) RETURNS integer
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    SET jit TO 'off'
    AS $$
declare
  v_count integer;
  v_never_delivered uuid[];
begin
  if pg_catalog.cardinality(record_batch_outcomes.ids) <> pg_catalog.cardinality(record_batch_outcomes.ctids)
     or pg_catalog.cardinality(record_batch_outcomes.kinds) <> pg_catalog.cardinality(record_batch_outcomes.ctids) then
    raise exception using errcode = '22023', message = 'ctids, ids and kinds must be parallel arrays.';
  end if;
  with o as (
    select o.*, held.held_ctid,
           -- A conversion not taken whose sale was undone meanwhile becomes a cancellation
           -- (the sale is looked up only for those rows: AND stops at the kind).
           o.kind in ('retry', 'released') and held.kind = 'conversion'
             and exists (select 1 from app_public.sales s
                          where s.site_id = record_batch_outcomes.site_id and s.id = held.sale_id and s.status = 'cancelled') as undone
      from rows from (pg_catalog.unnest(record_batch_outcomes.ctids), pg_catalog.unnest(record_batch_outcomes.ids),
                      pg_catalog.unnest(record_batch_outcomes.kinds), pg_catalog.unnest(record_batch_outcomes.codes),
                      pg_catalog.unnest(record_batch_outcomes.messages), pg_catalog.unnest(record_batch_outcomes.retry_after_seconds),
                      pg_catalog.unnest(record_batch_outcomes.request_ids))
             as o(row_ctid, id, kind, code, message, retry_after_seconds, request_id)
     -- Each outcome fetches its own row by ctid, checked against the id locked (a lateral probe
     -- that cannot be flattened: outcomes outside, one TID fetch each inside, whatever the
     -- statistics say; migration 000022 has the story).
     cross join lateral (select q.ctid as held_ctid, q.kind, q.sale_id from app_public.offline_conversion_queue q
                          where q.ctid = o.row_ctid and q.site_id = record_batch_outcomes.site_id and q.id = o.id and q.stage = 'open'
                         offset 0) held
  ), applied as (
    update app_public.offline_conversion_queue q
       set status = case when o.undone then 'cancelled'
             when o.kind = 'accepted' then 'accepted' when o.kind = 'sent' then 'sent'
             when o.kind in ('retry', 'released') then 'pending' else 'failed' end,
           retry_at = case when o.kind in ('retry', 'released') then pg_catalog.now() + pg_catalog.make_interval(secs => coalesce(o.retry_after_seconds, 300))
             else q.retry_at end,
           last_error_code = case when o.undone then 'SALE_UNDONE'
             when o.kind in ('accepted', 'sent') then o.code else coalesce(o.code, 'UNKNOWN') end,
           last_error_message = case when o.undone and o.kind = 'retry' and app_private.outcome_unknown(o.code)
                                       then 'The sale was undone after an upload whose outcome is unknown; a retraction follows.'
                                     when o.undone then 'The sale was undone before Google took the conversion.'
             when o.kind in ('accepted', 'sent') then null else pg_catalog.left(o.message, 1000) end,
           request_id = case when o.kind in ('accepted', 'sent') then coalesce(o.request_id, record_batch_outcomes.request_id, q.request_id) else q.request_id end,
           sent_at = case when o.kind in ('accepted', 'sent') then coalesce(q.sent_at, pg_catalog.now()) else q.sent_at end,
           accepted_at = case when o.kind = 'accepted' then pg_catalog.now() else q.accepted_at end,
           -- An upload that was made counts (once: a lease counted it when taken); a batch handed back unsent does not.
           attempts = case when o.kind = 'released' or not record_batch_outcomes.count_attempt then q.attempts else q.attempts + 1 end,
           -- A lease ends here.
           locked_by = null, locked_until = null,
           destination_id = coalesce(record_batch_outcomes.destination_id, q.destination_id),
           updated_at = greatest(pg_catalog.now(), q.updated_at + interval '1 millisecond')
      from o
     -- Only the ctid just fetched: no condition of the queue's own that could make it look like a
     -- handful of rows worth scanning first.
     where q.ctid = o.held_ctid
    returning q.sale_id, q.kind, q.status, o.kind as outcome, o.code as outcome_code
  )
  -- Google never had these, so a retraction queued for them has nothing to do; unless the
  -- upload ended without an answer, when Google may have it after all.
  select count(*), pg_catalog.array_agg(a.sale_id) filter (where a.kind = 'conversion' and a.status in ('failed', 'cancelled')
                                                             and not (a.outcome = 'retry' and app_private.outcome_unknown(a.outcome_code)))
    into v_count, v_never_delivered
    from applied a;
  if v_never_delivered is not null then
    perform app_private.drop_needless_retractions(record_batch_outcomes.site_id, v_never_delivered);
  end if;
  return v_count;
end;
$$;

--
-- Name: FUNCTION record_batch_outcomes(site_id uuid, destination_id uuid, ctids tid[], ids uuid[], kinds text[], codes text[], messages text[], retry_after_seconds integer[], request_ids text[], request_id text, count_attempt boolean); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.record_batch_outcomes(site_id uuid, destination_id uuid, ctids tid[], ids uuid[], kinds text[], codes text[], messages text[], retry_after_seconds integer[], request_ids text[], request_id text, count_attempt boolean) IS 'Writes the outcome of each row the calling transaction has locked (parallel arrays in the order of ctids): sent, accepted, retry, failed or released (handed back unsent). The one place the outcome rules live. Returns how many rows it wrote.';

--
-- Name: record_call_event(uuid, jsonb); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.record_call_event(site_id uuid, body jsonb) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $_$
declare
  v_started_at timestamptz := app_hidden.parse_timestamptz(body ->> 'started_at');
  v_status text := body ->> 'status';
  -- A call only moves forward: ringing -> missed, or ringing -> answered -> ended.
  v_rank constant jsonb := '{"ringing": 1, "missed": 2, "answered": 3, "ended": 4}';
  v_session app_public.sessions;
  v_call app_public.calls;
  v_site app_public.sites;
  v_tier text;
  v_source text;
  v_click_id text;
  v_click_type text;
begin
  select * into v_site from app_public.sites s where s.id = record_call_event.site_id;
  if pg_catalog.jsonb_typeof(body -> 'call_id') is distinct from 'string' or body ->> 'call_id' !~ '^[A-Za-z0-9_.:-]{1,200}$' then
    raise exception using errcode = 'OMCAL', message = 'call_id must be 1 to 200 letters, digits or _.:-';
  end if;
  if v_status is null or not v_rank ? v_status then
    raise exception using errcode = 'OMCAL', message = 'status must be ringing, answered, missed or ended.';
  end if;
  if v_started_at is null or v_started_at > pg_catalog.now() + interval '5 minutes' or v_started_at < pg_catalog.now() - interval '7 days' then
    raise exception using errcode = 'OMCAL', message = 'started_at must be an ISO-8601 time with a zone within the last 7 days.';
  end if;
  if body ? 'duration_s' and (pg_catalog.jsonb_typeof(body -> 'duration_s') <> 'number'
                              or (body ->> 'duration_s') !~ '^[0-9]{1,5}$' or (body ->> 'duration_s')::integer > 86400) then
    raise exception using errcode = 'OMCAL', message = 'duration_s must be a whole number of seconds up to 86400.';
  end if;
  if (body ->> 'caller') !~ '^\+[1-9][0-9]{6,14}$' or (body ->> 'tracking_number') !~ '^\+[1-9][0-9]{6,14}$' then
    raise exception using errcode = 'OMCAL', message = 'caller and tracking_number must be E.164 numbers like +905551112233.';
  end if;
  if body ? 'google_forwarding' and pg_catalog.jsonb_typeof(body -> 'google_forwarding') <> 'boolean' then
    raise exception using errcode = 'OMCAL', message = 'google_forwarding must be true or false.';
  end if;
  if (body ->> 'session_id') !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
     or (body ->> 'visitor_id') !~ '^[A-Za-z0-9_-]{1,64}$' or (body ->> 'gclid') !~ '^[A-Za-z0-9_-]{1,255}$' then
    raise exception using errcode = 'OMCAL', message = 'session_id must be a UUID, visitor_id and gclid plain identifiers.';
  end if;

  -- The session that caused the call: named, else the visitor's latest before the call (by
  -- the raw id, or the hashed key of that day), else the one that carried the gclid.
  if body ? 'session_id' then
    select * into v_session from app_public.sessions s
     where s.site_id = record_call_event.site_id and s.id = (body ->> 'session_id')::uuid;
  end if;
  if v_session.id is null and body ? 'visitor_id' then
    select * into v_session from app_public.sessions s
     where s.site_id = record_call_event.site_id
       and s.visitor_key in (body ->> 'visitor_id',
             'h:' || pg_catalog.encode(pg_catalog.substr(public.hmac(pg_catalog.convert_to(record_call_event.site_id::text || '/' || (body ->> 'visitor_id'), 'UTF8'),
                     app_private.daily_salt((v_started_at at time zone 'UTC')::date), 'sha256'), 1, 16), 'hex'))
       and s.started_at <= v_started_at and s.started_at > v_started_at - interval '90 days'
     order by s.started_at desc, s.first_event_id desc
     limit 1;
  end if;
  if v_session.id is null and body ? 'gclid' then
    select * into v_session from app_public.sessions s
     where s.site_id = record_call_event.site_id and s.click_id = body ->> 'gclid'
       and s.started_at <= v_started_at and s.started_at > v_started_at - interval '90 days'
     order by s.started_at desc, s.first_event_id desc
     limit 1;
  end if;
  if v_session.id is not null then
    v_tier := v_session.attribution_tier;
    v_source := v_session.attribution_source;
    v_click_id := case when v_session.attribution_tier = 'S3' then v_session.assisting_click_id else v_session.click_id end;
    v_click_type := case when v_session.attribution_tier = 'S3' then v_session.assisting_click_id_type else v_session.click_id_type end;
  elsif body ? 'gclid' then
    v_tier := 'S1'; v_source := 'google_ads'; v_click_id := body ->> 'gclid'; v_click_type := 'gclid';
  end if;

  insert into app_public.calls as c (site_id, call_id, status, caller, tracking_number, started_at, duration_s,
                                     visitor_id, session_id, gclid, attribution_tier, attribution_source, click_id, click_id_type,
                                     via_google_forwarding)
  values (record_call_event.site_id, body ->> 'call_id', v_status, body ->> 'caller', body ->> 'tracking_number', v_started_at,
          coalesce((body ->> 'duration_s')::integer, 0), body ->> 'visitor_id', v_session.id, body ->> 'gclid',
          v_tier, v_source, v_click_id, v_click_type, coalesce((body ->> 'google_forwarding')::boolean, false))
  -- A call whose subject was erased takes no personal data from later events about it.
  on conflict on constraint calls_site_call_id_key do update set
    status = case when (v_rank ->> excluded.status)::int > (v_rank ->> c.status)::int then excluded.status else c.status end,
    duration_s = greatest(c.duration_s, excluded.duration_s),
    caller = case when c.erased_at is null then coalesce(c.caller, excluded.caller) end,
    tracking_number = coalesce(c.tracking_number, excluded.tracking_number),
    visitor_id = case when c.erased_at is null then coalesce(c.visitor_id, excluded.visitor_id) end,
    gclid = case when c.erased_at is null then coalesce(c.gclid, excluded.gclid) end,
    session_id = case when c.erased_at is null then coalesce(c.session_id, excluded.session_id) end,
    attribution_tier = coalesce(c.attribution_tier, excluded.attribution_tier),
    attribution_source = coalesce(c.attribution_source, excluded.attribution_source),
    click_id = case when c.erased_at is null then coalesce(c.click_id, excluded.click_id) end,
    click_id_type = case when c.erased_at is null then coalesce(c.click_id_type, excluded.click_id_type) end,
    via_google_forwarding = c.via_google_forwarding or excluded.via_google_forwarding,
    updated_at = pg_catalog.now()
  returning * into v_call;
  return pg_catalog.jsonb_build_object('call_id', v_call.call_id, 'id', v_call.id, 'status', v_call.status,
    'session_id', v_call.session_id, 'attribution_tier', v_call.attribution_tier, 'attribution_source', v_call.attribution_source);
end;
$_$;

--
-- Name: FUNCTION record_call_event(site_id uuid, body jsonb); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.record_call_event(site_id uuid, body jsonb) IS 'Records a signature-verified call event (idempotent by call_id) and matches it to its session; OMCAL for a bad body.';

--
-- Name: record_consent(text, text, jsonb, text, text, text[]); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.record_consent(public_key text, visitor_id text, consent jsonb, origin text, client_ip text, global_origins text[] DEFAULT '{}'::text[]) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    SET enable_seqscan TO 'off'
    AS $_$
declare
  v_site app_public.sites;
  v_full jsonb;
begin
  v_site := app_private.find_site(record_consent.public_key, record_consent.origin, record_consent.global_origins, record_consent.client_ip);
  if record_consent.visitor_id is null or record_consent.visitor_id !~ '^[A-Za-z0-9_-]{1,64}$' then
    raise exception using errcode = 'OMENV', message = 'visitor_id must be 1 to 64 letters, digits, _ or -.';
  end if;
  if not app_private.valid_consent(record_consent.consent) then
    raise exception using errcode = 'OMENV', message = 'consent must map Consent Mode signals to granted or denied.';
  end if;
  -- Signals the banner did not send are recorded as denied: proof must never overstate consent.
  v_full := pg_catalog.jsonb_build_object('analytics_storage', 'denied', 'ad_storage', 'denied',
                                          'ad_user_data', 'denied', 'ad_personalization', 'denied') || record_consent.consent;
  insert into app_public.consents (site_id, visitor_hash, analytics_storage, ad_storage, ad_user_data, ad_personalization)
  select v_site.id, public.hmac(pg_catalog.convert_to(record_consent.visitor_id, 'UTF8'), s.salt, 'sha256'), v_full ->> 'analytics_storage',
         v_full ->> 'ad_storage', v_full ->> 'ad_user_data', v_full ->> 'ad_personalization'
    from app_private.site_salts s where s.site_id = v_site.id;
  return pg_catalog.jsonb_build_object('recorded', true, 'consent', v_full);
end;
$_$;

--
-- Name: FUNCTION record_consent(public_key text, visitor_id text, consent jsonb, origin text, client_ip text, global_origins text[]); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.record_consent(public_key text, visitor_id text, consent jsonb, origin text, client_ip text, global_origins text[]) IS 'POST /api/consent: appends the visitor''s choice to consents (proof of consent).';

--
-- Name: record_denied_attempt(jsonb); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.record_denied_attempt(detail jsonb) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
declare
  v_site uuid;
begin
  select s.id into v_site from app_public.sites s
   where s.id::text = record_denied_attempt.detail ->> 'site_id';
  return app_private.append_audit(v_site, 'denied:' || coalesce(detail ->> 'action', 'unknown'),
    coalesce(detail ->> 'target_table', 'unknown'), detail ->> 'target_id', null,
    pg_catalog.jsonb_build_object('requested_site_id', detail ->> 'site_id'),
    (detail ->> 'actor_user_id')::uuid, (detail ->> 'actor_api_key_id')::uuid,
    coalesce(detail ->> 'actor_db_role', session_user));
end;
$$;

--
-- Name: FUNCTION record_denied_attempt(detail jsonb); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.record_denied_attempt(detail jsonb) IS 'Appends a denied attempt (from an OM403 error''s detail) to the target site''s audit chain.';

--
-- Name: record_sale(app_public.sites, text, numeric, text, timestamp with time zone, uuid, text, text, text, text, text, jsonb, uuid); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.record_sale(site app_public.sites, external_id text, amount numeric, currency text, occurred_at timestamp with time zone, session_id uuid, visitor_id text, call_ref text, gclid text, email text, phone text, consent jsonb, conversation_id uuid) RETURNS app_public.sales
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $_$
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
                                     session_event_id, created_by_user_id, created_by_api_key_id)
  values (site.id, record_sale.external_id, record_sale.amount, record_sale.currency, record_sale.occurred_at,
          record_sale.conversation_id, v_call.id, v_attribution.attributed_session_id, record_sale.visitor_id, record_sale.gclid,
          v_attribution.attribution_tier, v_attribution.attribution_source, v_attribution.click_id, v_attribution.click_id_type,
          v_attribution.session_anchor_event_id, app_hidden.current_user_id(), app_hidden.current_api_key_id())
  on conflict on constraint sales_external_id_key do nothing
  returning * into v_sale;
  if v_sale.id is null then
    raise exception using errcode = 'OMSEX', message = 'A sale with this external_id already exists.';
  end if;

  if v_email is not null or v_phone is not null then
    insert into app_private.sale_identifiers (site_id, sale_id, email_sha256, phone_sha256)
    values (site.id, v_sale.id, app_hidden.identifier_sha256(v_email), app_hidden.identifier_sha256(v_phone));
  end if;

  -- What is known of the visitor's consent, with the CRM's own record (if any) laid over it:
  -- a signal the CRM does not mention keeps its known value.
  perform app_private.enqueue_conversion(v_sale,
    app_private.conversion_consent(site, coalesce(record_sale.visitor_id, v_attribution.session_visitor_id), v_attribution.attributed_session_id)
    || coalesce(record_sale.consent, '{}'));
  return v_sale;
end;
$_$;

--
-- Name: FUNCTION record_sale(site app_public.sites, external_id text, amount numeric, currency text, occurred_at timestamp with time zone, session_id uuid, visitor_id text, call_ref text, gclid text, email text, phone text, consent jsonb, conversation_id uuid); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.record_sale(site app_public.sites, external_id text, amount numeric, currency text, occurred_at timestamp with time zone, session_id uuid, visitor_id text, call_ref text, gclid text, email text, phone text, consent jsonb, conversation_id uuid) IS 'Validates and records a sale, its hashed identifiers and its queued conversion (OMSAL, OMSEX, OMUSS, OMUCL).';

--
-- Name: record_upload_outcomes(uuid, text, jsonb, text); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.record_upload_outcomes(site_id uuid, worker text, outcomes jsonb, request_id text DEFAULT NULL::text) RETURNS integer
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    SET jit TO 'off'
    AS $$
declare
  v_held record;
begin
  -- Each outcome finds its own row by primary key (a lateral probe that cannot be flattened, so
  -- no statistics can turn it into a scan: migration 000022), and only while this worker still
  -- holds its lease; the row is locked, so the lease cannot pass to another claimer before the
  -- outcome is written.
  select pg_catalog.array_agg(held.row_ctid) as ctids, pg_catalog.array_agg(o.id) as ids, pg_catalog.array_agg(o.kind) as kinds,
         pg_catalog.array_agg(o.code) as codes, pg_catalog.array_agg(o.message) as messages,
         pg_catalog.array_agg(o.retry_after_seconds) as retry_after_seconds, pg_catalog.array_agg(o.request_id) as request_ids
    into v_held
    from pg_catalog.jsonb_to_recordset(record_upload_outcomes.outcomes)
           as o(id uuid, kind text, code text, message text, retry_after_seconds integer, request_id text)
   cross join lateral (select q.ctid as row_ctid from app_public.offline_conversion_queue q
                        where q.site_id = record_upload_outcomes.site_id and q.id = o.id
                          and q.status = 'processing' and q.locked_by = record_upload_outcomes.worker
                        offset 0
                          for update) held
   where o.kind in ('accepted', 'sent', 'retry', 'failed');
  if v_held.ctids is null then
    return 0;
  end if;
  return app_private.record_batch_outcomes(record_upload_outcomes.site_id, null, v_held.ctids, v_held.ids, v_held.kinds, v_held.codes,
                                           v_held.messages, v_held.retry_after_seconds, v_held.request_ids,
                                           record_upload_outcomes.request_id, count_attempt => false);
end;
$$;

--
-- Name: FUNCTION record_upload_outcomes(site_id uuid, worker text, outcomes jsonb, request_id text); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.record_upload_outcomes(site_id uuid, worker text, outcomes jsonb, request_id text) IS 'Applies the rails'' per-row outcomes to rows the worker still holds under its lease (claim_offline_conversion_jobs), by record_batch_outcomes'' rules; returns how many changed.';

--
-- Name: record_worker_heartbeat(text); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.record_worker_heartbeat(worker_name text) RETURNS void
    LANGUAGE sql
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
  insert into app_private.worker_heartbeats (worker_name, beat_at) values (record_worker_heartbeat.worker_name, pg_catalog.now())
  on conflict (worker_name) do update set beat_at = excluded.beat_at;
$$;

--
-- Name: FUNCTION record_worker_heartbeat(worker_name text); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.record_worker_heartbeat(worker_name text) IS 'Upserts a worker''s heartbeat.';

--
-- Name: refresh_conversion_attribution(uuid, boolean); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.refresh_conversion_attribution(site_id uuid, due_only boolean) RETURNS integer
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
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

--
-- Name: FUNCTION refresh_conversion_attribution(site_id uuid, due_only boolean); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.refresh_conversion_attribution(site_id uuid, due_only boolean) IS 'Gives pending conversions without a click id one learned since the sale (a late ad click, a matched call); with due_only, only those whose retry time has come. Returns how many gained one.';

--
-- Name: release_claimed_conversions(uuid, text, text, text, integer); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.release_claimed_conversions(site_id uuid, worker text, code text, message text, retry_after_seconds integer) RETURNS integer
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
declare
  v_count integer;
  v_never_delivered uuid[];
begin
  with released as (
    update app_public.offline_conversion_queue q
       set status = case when q.kind = 'conversion' and s.status = 'cancelled' then 'cancelled' else 'pending' end,
           locked_by = null, locked_until = null, attempts = greatest(q.attempts - 1, 0),
           last_error_code = case when q.kind = 'conversion' and s.status = 'cancelled' then 'SALE_UNDONE' else release_claimed_conversions.code end,
           last_error_message = case when q.kind = 'conversion' and s.status = 'cancelled' then 'The sale was undone before Google took the conversion.'
                                     else release_claimed_conversions.message end,
           retry_at = pg_catalog.now() + pg_catalog.make_interval(secs => release_claimed_conversions.retry_after_seconds)
      from app_public.sales s
     where q.site_id = release_claimed_conversions.site_id and q.stage = 'open' and q.status = 'processing' and q.locked_by = release_claimed_conversions.worker
       and s.site_id = q.site_id and s.id = q.sale_id
    returning q.sale_id, q.kind, q.status
  )
  select count(*), pg_catalog.array_agg(r.sale_id) filter (where r.kind = 'conversion' and r.status = 'cancelled')
    into v_count, v_never_delivered
    from released r;
  -- Their retractions are no longer needed either.
  perform app_private.drop_needless_retractions(release_claimed_conversions.site_id, v_never_delivered);
  return v_count;
end;
$$;

--
-- Name: FUNCTION release_claimed_conversions(site_id uuid, worker text, code text, message text, retry_after_seconds integer); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.release_claimed_conversions(site_id uuid, worker text, code text, message text, retry_after_seconds integer) IS 'Returns a worker''s claimed rows to pending.';

--
-- Name: request_status_due(app_public.offline_conversion_queue); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.request_status_due(q app_public.offline_conversion_queue) RETURNS boolean
    LANGUAGE sql STABLE
    AS $$
  select app_private.awaits_request_status(q) and q.sent_at < pg_catalog.now() - interval '5 minutes';
$$;

--
-- Name: FUNCTION request_status_due(q app_public.offline_conversion_queue); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.request_status_due(q app_public.offline_conversion_queue) IS 'True for a row whose request''s processing status is due to be asked: no verdict yet, sent 5 minutes to 2 days ago.';

--
-- Name: resolve_sale_attribution(uuid, uuid, text, uuid, text, timestamp with time zone, uuid); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.resolve_sale_attribution(site_id uuid, session_id uuid, visitor_id text, call_id uuid, gclid text, at timestamp with time zone, anchor_event_id uuid DEFAULT NULL::uuid) RETURNS TABLE(attributed_session_id uuid, session_anchor_event_id uuid, attribution_tier text, attribution_source text, click_id text, click_id_type text, session_visitor_id text)
    LANGUAGE plpgsql STABLE
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
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
  -- The session named may have been re-derived since (a late earlier event gives a visit a new
  -- id): the visit is the one that now holds the event the sale's session started with.
  if v_session.id is null and resolve_sale_attribution.anchor_event_id is not null then
    select s.* into v_session
      from app_public.events e
      join app_public.sessions s on s.site_id = e.site_id and s.id = e.session_id
     where e.site_id = resolve_sale_attribution.site_id and e.id = resolve_sale_attribution.anchor_event_id
     limit 1;
  end if;
  if v_session.id is null and v_call.id is null and resolve_sale_attribution.visitor_id is not null then
    -- By the raw id (analytics consent) or by the daily hash of any day whose salt remains.
    select * into v_session from app_public.sessions s
     where s.site_id = resolve_sale_attribution.site_id
       and s.visitor_key = any (array[resolve_sale_attribution.visitor_id] || array(
             select 'h:' || pg_catalog.encode(pg_catalog.substr(public.hmac(pg_catalog.convert_to(resolve_sale_attribution.site_id::text || '/'
                      || resolve_sale_attribution.visitor_id, 'UTF8'), d.salt, 'sha256'), 1, 16), 'hex')
               from app_private.daily_salts d))
       and s.started_at <= resolve_sale_attribution.at and s.started_at > resolve_sale_attribution.at - interval '90 days'
     order by s.started_at desc, s.first_event_id desc
     limit 1;
  end if;

  if v_session.id is not null then
    attributed_session_id := v_session.id;
    session_anchor_event_id := v_session.first_event_id;
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

--
-- Name: FUNCTION resolve_sale_attribution(site_id uuid, session_id uuid, visitor_id text, call_id uuid, gclid text, at timestamp with time zone, anchor_event_id uuid); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.resolve_sale_attribution(site_id uuid, session_id uuid, visitor_id text, call_id uuid, gclid text, at timestamp with time zone, anchor_event_id uuid) IS 'The session (and its first event), tier and Google click id a sale is attributed to, from its session, call, visitor or gclid.';

--
-- Name: retention_cleanup(); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.retention_cleanup() RETURNS jsonb
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
declare
  v_site record;
  v_count integer;
  v_result jsonb := '{"events_deleted": 0, "sessions_deleted": 0, "calls_stripped": 0}';
begin
  for v_site in select s.id, s.data_retention_months from app_public.sites s loop
    -- (pg_partman drops whole partitions past 13 months; rows in the default partition, and
    -- sites that keep less, are deleted here.)
    begin
      with deleted as (
        delete from app_public.events e
         where e.site_id = v_site.id and e.occurred_at < pg_catalog.now() - pg_catalog.make_interval(months => v_site.data_retention_months)
        returning e.occurred_at
      )
      select app_private.count_event_removals(v_site.id, 'retention', array(select occurred_at from deleted)) into v_count;
      v_result := pg_catalog.jsonb_set(v_result, '{events_deleted}', pg_catalog.to_jsonb((v_result ->> 'events_deleted')::int + v_count));
      delete from app_public.sessions s
       where s.site_id = v_site.id and s.ended_at < pg_catalog.now() - pg_catalog.make_interval(months => v_site.data_retention_months);
      get diagnostics v_count = row_count;
      v_result := pg_catalog.jsonb_set(v_result, '{sessions_deleted}', pg_catalog.to_jsonb((v_result ->> 'sessions_deleted')::int + v_count));
    end;
    update app_public.calls c set caller = null, visitor_id = null, gclid = null, click_id = null, click_id_type = null, session_id = null
     where c.site_id = v_site.id and c.started_at < pg_catalog.now() - pg_catalog.make_interval(months => v_site.data_retention_months)
       and (c.caller is not null or c.visitor_id is not null or c.gclid is not null or c.click_id is not null or c.session_id is not null);
    get diagnostics v_count = row_count;
    v_result := pg_catalog.jsonb_set(v_result, '{calls_stripped}', pg_catalog.to_jsonb((v_result ->> 'calls_stripped')::int + v_count));
  end loop;

  delete from app_public.consents c where c.recorded_at < pg_catalog.now() - interval '36 months';
  get diagnostics v_count = row_count; v_result := v_result || pg_catalog.jsonb_build_object('consents_deleted', v_count);
  -- Hashed identifiers and click ids are needed only until Google has the conversion (and a
  -- retraction could still follow): 90 days after the conversion's final state.
  -- (A row handed to Google's scheduled CSV import stays sent: it counts as final too.)
  delete from app_private.sale_identifiers i
   where not exists (select 1 from app_public.offline_conversion_queue q
                      where q.site_id = i.site_id and q.sale_id = i.sale_id
                        and ((q.status in ('pending', 'processing') or (q.status = 'sent' and q.request_id is distinct from 'csv'))
                             or q.updated_at > pg_catalog.now() - interval '90 days'));
  get diagnostics v_count = row_count; v_result := v_result || pg_catalog.jsonb_build_object('sale_identifiers_deleted', v_count);
  -- On the same schedule, nothing personal stays linked to the sale either.
  update app_public.sales s set visitor_id = null, gclid = null, click_id = null, click_id_type = null
   where (s.visitor_id is not null or s.gclid is not null or s.click_id is not null)
     and not exists (select 1 from app_public.offline_conversion_queue q
                      where q.site_id = s.site_id and q.sale_id = s.id
                        and ((q.status in ('pending', 'processing') or (q.status = 'sent' and q.request_id is distinct from 'csv'))
                             or q.updated_at > pg_catalog.now() - interval '90 days'));
  get diagnostics v_count = row_count; v_result := v_result || pg_catalog.jsonb_build_object('sales_stripped', v_count);
  update app_public.offline_conversion_queue q set click_id = null, click_id_type = null
   where (q.status in ('accepted', 'failed', 'cancelled') or (q.status = 'sent' and q.request_id = 'csv'))
     and q.updated_at < pg_catalog.now() - interval '90 days' and q.click_id is not null;
  get diagnostics v_count = row_count; v_result := v_result || pg_catalog.jsonb_build_object('conversion_click_ids_stripped', v_count);
  return v_result;
end;
$$;

--
-- Name: FUNCTION retention_cleanup(); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.retention_cleanup() IS 'Deletes or strips personal data past its retention (site months for events, sessions and calls; 36 months for consents; 90 days after delivery for hashed identifiers and click ids).';

--
-- Name: retire_call_event_secret(uuid); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.retire_call_event_secret(site_id uuid) RETURNS boolean
    LANGUAGE sql
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
  update app_private.call_event_secrets c set previous_secret = null
   where c.site_id = retire_call_event_secret.site_id
  returning c.previous_secret is null;
$$;

--
-- Name: FUNCTION retire_call_event_secret(site_id uuid); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.retire_call_event_secret(site_id uuid) IS 'Stops accepting the previous call-event secret.';

--
-- Name: rotate_call_event_secret(uuid); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.rotate_call_event_secret(site_id uuid) RETURNS text
    LANGUAGE sql
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
  update app_private.call_event_secrets c
     set previous_secret = c.current_secret, current_secret = app_private.new_call_event_secret(), rotated_at = pg_catalog.now()
   where c.site_id = rotate_call_event_secret.site_id
  returning c.current_secret;
$$;

--
-- Name: FUNCTION rotate_call_event_secret(site_id uuid); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.rotate_call_event_secret(site_id uuid) IS 'Makes a new current call-event secret; the old one stays valid as the previous secret.';

--
-- Name: run_watchtower(); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.run_watchtower() RETURNS integer
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
declare
  v_count integer;
begin
  with verdicts as (
    -- The live destination can upload.
    select d.site_id, 'destination_credentials'::text as check_name,
           case when d.status = 'needs_reauth' then 'fail' else 'ok' end as status,
           pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object('destination_id', d.id, 'rail', d.rail, 'status', d.status,
                                                                      'reason', d.status_reason)) as detail
      from app_public.destinations d
     where d.status <> 'paused'
    union all
    -- The longest-due conversion's wait (the queue's open rows, through its due index).
    select d.site_id, 'delivery_lag',
           case when lag.waited is null or lag.waited < interval '1 hour' then 'ok'
                when lag.waited < interval '6 hours' then 'warn' else 'fail' end,
           pg_catalog.jsonb_build_object('oldest_due_seconds', coalesce(extract(epoch from lag.waited)::bigint, 0), 'due', lag.due)
      from app_public.destinations d
     cross join lateral (select pg_catalog.now() - min(q.retry_at) as waited, count(*) as due
                           from app_public.offline_conversion_queue q
                          where q.site_id = d.site_id and q.stage = 'open' and q.retry_at <= pg_catalog.now()) lag
     where d.status <> 'paused'
    union all
    -- Tracking is not about to go blind: what is left of this month's event quota (its 16 shards).
    select s.id, 'event_quota',
           case when q.left_now = 0 then 'fail' when q.left_now * 10 <= s.monthly_event_quota then 'warn' else 'ok' end,
           pg_catalog.jsonb_build_object('period', q.period, 'quota', s.monthly_event_quota, 'left', q.left_now)
      from app_public.sites s
     cross join lateral (select p.period, coalesce(sum(sh.remaining), s.monthly_event_quota) as left_now
                           from (select pg_catalog.date_trunc('month', pg_catalog.now() at time zone 'UTC')::date as period) p
                           left join app_private.quota_shards sh on sh.site_id = s.id and sh.period = p.period
                          group by p.period) q
     where s.monthly_event_quota is not null
    union all
    -- No erasure request waits more than a day.
    select e.site_id, 'erasure_requests',
           case when count(*) filter (where e.status <> 'completed' and e.requested_at < pg_catalog.now() - interval '24 hours') > 0
                then 'fail' else 'ok' end,
           pg_catalog.jsonb_build_object('open', count(*) filter (where e.status <> 'completed'),
                                         'overdue', count(*) filter (where e.status <> 'completed' and e.requested_at < pg_catalog.now() - interval '24 hours'))
      from app_public.erasure_requests e
     group by e.site_id
  ), written as (
    insert into app_public.watchtower_checks as w (site_id, check_name, status, detail, checked_at, status_since)
    select v.site_id, v.check_name, v.status, v.detail, pg_catalog.now(), pg_catalog.now() from verdicts v
    on conflict (site_id, check_name) do update
       set status = excluded.status, detail = excluded.detail, checked_at = excluded.checked_at,
           status_since = case when w.status = excluded.status then w.status_since else excluded.checked_at end
    returning 1
  )
  select count(*) into v_count from written;
  -- A check that no longer applies (the destination was paused or removed) is not left standing.
  delete from app_public.watchtower_checks w
   where w.checked_at < pg_catalog.now();
  return v_count;
end;
$$;

--
-- Name: FUNCTION run_watchtower(); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.run_watchtower() IS 'Runs every Watchtower check for every site and stores each verdict in watchtower_checks (status_since kept while the verdict holds); returns how many it wrote.';

--
-- Name: schedule_next_upload(uuid); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.schedule_next_upload(site_id uuid) RETURNS void
    LANGUAGE sql
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
  select app_private.enqueue_upload(schedule_next_upload.site_id, 'google', n.next_at)
    from (select min(case when q.status = 'pending' then q.retry_at
                          when q.sent_at > pg_catalog.now() - interval '5 minutes' then q.sent_at + interval '5 minutes'
                          else pg_catalog.now() + least(pg_catalog.now() - q.sent_at, interval '1 hour') end) as next_at
            from app_public.offline_conversion_queue q
           where q.site_id = schedule_next_upload.site_id
             and ((q.stage = 'open' and q.status = 'pending') or (q.stage = 'sent' and app_private.awaits_request_status(q)))) n
   where n.next_at is not null;
$$;

--
-- Name: FUNCTION schedule_next_upload(site_id uuid); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.schedule_next_upload(site_id uuid) IS 'Schedules the site''s upload job for its earliest due row or unsettled request.';

--
-- Name: secure_partitions(); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.secure_partitions() RETURNS integer
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
declare
  v_child regclass;
  v_count integer := 0;
begin
  for v_child in
    select c.oid::regclass from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
     where n.nspname in ('app_public', 'app_private') and c.relkind in ('r', 'p') and c.relispartition
       and not c.relrowsecurity
  loop
    execute pg_catalog.format('alter table %s enable row level security', v_child);
    v_count := v_count + 1;
  end loop;
  return v_count;
end;
$$;

--
-- Name: FUNCTION secure_partitions(); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.secure_partitions() IS 'Enables row-level security on partitions that lack it; returns how many it fixed.';

--
-- Name: session_id_for(uuid, uuid); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.session_id_for(site_id uuid, first_event_id uuid) RETURNS uuid
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$
  select pg_catalog.md5(site_id::text || '/' || first_event_id::text)::uuid;
$$;

--
-- Name: FUNCTION session_id_for(site_id uuid, first_event_id uuid); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.session_id_for(site_id uuid, first_event_id uuid) IS 'Deterministic session id from the site and the session''s first event.';

--
-- Name: settle_request(uuid, text, text, jsonb); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.settle_request(site_id uuid, request_id text, status text, errors jsonb) RETURNS integer
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
declare
  v_reasons text := (select pg_catalog.string_agg((e ->> 'reason') || '×' || (e ->> 'count'), ', ' order by o)
                       from pg_catalog.jsonb_array_elements(settle_request.errors) with ordinality as x(e, o));
  v_first_reason text := settle_request.errors -> 0 ->> 'reason';
  v_count integer;
begin
  if settle_request.status not in ('SUCCESS', 'FAILED', 'PARTIAL_SUCCESS', 'REQUEST_REFUSED') then
    return 0;  -- PROCESSING or unknown: ask again later
  end if;
  update app_public.offline_conversion_queue q
     set status = case settle_request.status when 'SUCCESS' then 'accepted' when 'FAILED' then 'failed' else q.status end,
         accepted_at = case when settle_request.status = 'SUCCESS' then pg_catalog.now() else q.accepted_at end,
         last_error_code = case settle_request.status
           when 'FAILED' then coalesce(v_first_reason, 'PROCESSING_FAILED')
           when 'PARTIAL_SUCCESS' then 'PARTIAL_SUCCESS'
           when 'REQUEST_REFUSED' then coalesce(v_first_reason, 'REQUEST_REFUSED')
           else q.last_error_code end,
         last_error_message = case settle_request.status
           when 'FAILED' then 'Google could not process the upload: ' || coalesce(nullif(v_reasons, ''), 'no reason given') || '.'
           when 'PARTIAL_SUCCESS' then 'Google processed the upload with some rows rejected (' || coalesce(v_reasons, '') || '); it does not say which.'
           when 'REQUEST_REFUSED' then 'Google took the upload but will not report how it was processed ('
                                       || coalesce(v_first_reason, 'no reason given') || '); whether these conversions matched is unknown.'
           else q.last_error_message end
   where q.site_id = settle_request.site_id and q.request_id = settle_request.request_id and q.stage = 'sent';
  get diagnostics v_count = row_count;
  return v_count;
end;
$$;

--
-- Name: FUNCTION settle_request(site_id uuid, request_id text, status text, errors jsonb); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.settle_request(site_id uuid, request_id text, status text, errors jsonb) IS 'Applies Google''s processing status of a Data Manager request to the rows it carried.';

--
-- Name: shape_conversion_payloads(uuid, app_public.offline_conversion_queue[]); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.shape_conversion_payloads(site_id uuid, queued app_public.offline_conversion_queue[]) RETURNS TABLE(id uuid, kind text, order_id text, click_id text, click_id_type text, conversion_time text, adjustment_time text, value text, currency text, email_sha256 text, phone_sha256 text, ad_user_data text, ad_personalization text, caller_id text, call_start_time text, unmatchable text)
    LANGUAGE sql STABLE
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    SET jit TO 'off'
    AS $$
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

--
-- Name: FUNCTION shape_conversion_payloads(site_id uuid, queued app_public.offline_conversion_queue[]); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.shape_conversion_payloads(site_id uuid, queued app_public.offline_conversion_queue[]) IS 'Queue rows in the shape the rails send: time in the site''s zone (never before the click), identifiers and caller only with ad_user_data granted, and whether Google could match the row at all.';

--
-- Name: sites_with_due_conversions(text); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.sites_with_due_conversions(provider text) RETURNS SETOF uuid
    LANGUAGE sql STABLE
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
  select distinct q.site_id from app_public.offline_conversion_queue q
   where q.provider = sites_with_due_conversions.provider
     and q.stage = 'open' and q.retry_at <= pg_catalog.now()
     and (q.status = 'pending' or q.locked_until < pg_catalog.now())
     and exists (select 1 from app_public.destinations d where d.site_id = q.site_id and d.status = 'active');
$$;

--
-- Name: FUNCTION sites_with_due_conversions(provider text); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.sites_with_due_conversions(provider text) IS 'Sites whose conversions are due for upload.';

--
-- Name: store_events(app_public.sites, jsonb, boolean[]); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.store_events(site app_public.sites, batches jsonb, bots boolean[]) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    SET enable_seqscan TO 'off'
    AS $$
declare
  v_site app_public.sites := store_events.site;
  v_now timestamptz := pg_catalog.now();
  v_batches integer := pg_catalog.jsonb_array_length(store_events.batches);
  v_is_bot boolean;
  v_salt bytea;
  -- Per batch (1-based): what its answer will say.
  v_accepted integer[] := pg_catalog.array_fill(0, array[v_batches]);
  v_duplicates integer[] := pg_catalog.array_fill(0, array[v_batches]);
  v_rejected jsonb[] := pg_catalog.array_fill('[]'::jsonb, array[v_batches]);
  v_answers jsonb[] := '{}';
  v_batch integer;
  v_locked_visitor text;  -- the visitor whose lock was taken last
  v_event record;
  v_consent jsonb;
  v_consents jsonb := '{}';
  v_granted boolean;
  v_visitor_key text;
  v_period date;
  v_open_period date;  -- the last period found open (and share-locked) in this call
  v_billable boolean;
  v_inserted boolean;
  v_session_id uuid;
  v_rebuild_since timestamptz;
  v_rebuild_since_event_id uuid;
  -- The session being extended or opened, held while the loop stays on its visitor key, and
  -- its state for store_session: 'stored', 'changed' or 'new'.
  v_session app_public.sessions;
  v_session_state text;
  -- Accepted events not yet written: one INSERT writes them all.
  v_pending app_public.events[] := '{}';
begin
  -- One query validates every event of every batch and sorts the valid ones by visitor and
  -- time; each visitor is locked when the loop reaches its first event, so every call locks in
  -- the same order.
  for v_event in
    select e.ordinal - 1 as ordinal, e.value as event, p.code, p.message,
           case when p.code is null then (e.value ->> 'id')::uuid end as id, p.occurred_at,
           e.value ->> 'visitor_id' as visitor_id, e.value ->> 'type' as type, e.value ->> 'url' as url,
           nullif(e.value ->> 'referrer', '') as referrer, b.ordinal::integer as batch
      from pg_catalog.jsonb_array_elements(store_events.batches) with ordinality as b(events, ordinal)
           cross join lateral pg_catalog.jsonb_array_elements(b.events) with ordinality as e(value, ordinal)
           cross join lateral app_private.event_problem(e.value, v_site, v_now) p
     order by p.code is not null, 7, 6, 5
  loop
    if v_event.code is not null then
      v_rejected[v_event.batch] := v_rejected[v_event.batch]
        || pg_catalog.jsonb_build_object('index', v_event.ordinal, 'error', v_event.code, 'message', v_event.message);
      continue;
    end if;
    v_is_bot := store_events.bots[v_event.batch];
    if v_event.visitor_id is distinct from v_locked_visitor then
      perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended(v_site.id::text || '/' || v_event.visitor_id, 0));
      v_locked_visitor := v_event.visitor_id;
    end if;

    -- A frozen period takes no more events: its invoice is final. The shared lock lets
    -- freeze_invoice (exclusive) wait for requests already writing into the period.
    v_period := pg_catalog.date_trunc('month', v_event.occurred_at at time zone 'UTC')::date;
    if v_period is distinct from v_open_period then
      perform pg_catalog.pg_advisory_xact_lock_shared(
        pg_catalog.hashtextextended('invoice/' || v_site.id::text || '/' || v_period::text, 0));
      if exists (select 1 from app_public.invoice_snapshots s where s.site_id = v_site.id and s.period = v_period) then
        if exists (select 1 from app_public.ingest_idempotency l  -- the same 8-day rule as below
                    where l.site_id = v_site.id and l.idempotency_key = v_event.id
                      and l.occurred_at between v_event.occurred_at - interval '8 days' and v_event.occurred_at + interval '8 days') then
          v_duplicates[v_event.batch] := v_duplicates[v_event.batch] + 1;  -- a retry of an event the invoice already counts
        else
          v_rejected[v_event.batch] := v_rejected[v_event.batch]
            || pg_catalog.jsonb_build_object('index', v_event.ordinal, 'error', 'period_closed', 'message', 'The invoice for this month is frozen.');
        end if;
        continue;
      end if;
      v_open_period := v_period;
    end if;

    -- The ledger row first: a copy of this event id within 8 days is a duplicate, and a
    -- concurrent copy waits here on the primary key for ours and then counts as one too.
    -- Only a new event consumes quota; over quota, the row goes again.
    v_billable := not v_is_bot;
    if v_billable and v_site.monthly_event_quota is not null then
      perform app_private.ensure_quota_shards(v_site, v_period);
    end if;
    insert into app_public.ingest_idempotency (site_id, idempotency_key, occurred_at, received_at, billable, reason)
    select v_site.id, v_event.id, v_event.occurred_at, v_now, v_billable, case when v_is_bot then 'bot' end
     where not exists (select 1 from app_public.ingest_idempotency l
                        where l.site_id = v_site.id and l.idempotency_key = v_event.id
                          and l.occurred_at between v_event.occurred_at - interval '8 days' and v_event.occurred_at + interval '8 days')
    on conflict do nothing
    returning true into v_inserted;
    if v_inserted is null then
      v_duplicates[v_event.batch] := v_duplicates[v_event.batch] + 1;
      continue;
    end if;
    if v_billable and v_site.monthly_event_quota is not null and not app_private.take_quota(v_site, v_period) then
      delete from app_public.ingest_idempotency l
       where l.site_id = v_site.id and l.idempotency_key = v_event.id and l.occurred_at = v_event.occurred_at;
      v_rejected[v_event.batch] := v_rejected[v_event.batch]
        || pg_catalog.jsonb_build_object('index', v_event.ordinal, 'error', 'quota_exceeded', 'message', 'The site''s monthly event quota is used up.');
      continue;
    end if;

    -- Consent decides what is kept: without analytics consent no raw visitor id, no device
    -- data, and the visitor is known only by a hash whose salt changes every day.
    -- "consent": null is no consent given, as validation reads it: the visitor's recorded choice applies.
    if nullif(v_event.event -> 'consent', 'null'::jsonb) is null and not v_consents ? v_event.visitor_id then
      if v_salt is null then
        select s.salt into v_salt from app_private.site_salts s where s.site_id = v_site.id;
      end if;
      v_consents := v_consents || pg_catalog.jsonb_build_object(v_event.visitor_id,
                      coalesce(app_private.latest_consent(v_site.id, public.hmac(pg_catalog.convert_to(v_event.visitor_id, 'UTF8'), v_salt, 'sha256')),
                               'null'::jsonb));
    end if;
    v_consent := app_private.effective_consent(v_site, nullif(v_event.event -> 'consent', 'null'::jsonb),
                                               nullif(v_consents -> v_event.visitor_id, 'null'::jsonb));
    v_granted := v_consent ->> 'analytics_storage' = 'granted';
    v_visitor_key := case when v_granted then v_event.visitor_id
                          else 'h:' || pg_catalog.encode(pg_catalog.substr(public.hmac(pg_catalog.convert_to(v_site.id::text || '/' || v_event.visitor_id, 'UTF8'),
                                 app_private.daily_salt((v_event.occurred_at at time zone 'UTC')::date), 'sha256'), 1, 16), 'hex') end;

    v_session_id := null;
    v_rebuild_since := null;
    if not v_is_bot then
      if v_session.visitor_key is distinct from v_visitor_key then
        -- Another visitor key: write the held session, then read this key's latest one. No
        -- session starts after now + 5 minutes (no event may), which bounds the partitions read.
        if v_session_state <> 'stored' then
          perform app_private.store_session(v_session, v_session_state);
        end if;
        v_session := null;
        select * into v_session from app_public.sessions s
         where s.site_id = v_site.id and s.visitor_key = v_visitor_key
           and s.started_at > v_event.occurred_at - interval '35 days' and s.started_at <= v_now + interval '5 minutes'
         order by s.started_at desc, s.first_event_id desc
         limit 1;
        v_session_state := 'stored';
      end if;

      if v_session.id is null or (v_session.ended_at, v_session.last_event_id) < (v_event.occurred_at, v_event.id) then
        -- In order: extend the latest session if it ended within 30 minutes and this is not a
        -- landing from a new click or campaign, else open a new one.
        if v_session.id is not null and v_session.ended_at >= v_event.occurred_at - interval '30 minutes'
           and not (v_event.type = 'pageview'
                    and app_hidden.starts_new_session(v_event.url, v_session.click_id, v_session.utm_source, v_session.utm_campaign)) then
          v_session.ended_at := v_event.occurred_at;
          v_session.last_event_id := v_event.id;
          v_session.event_count := v_session.event_count + 1;
          if v_session_state = 'stored' then
            v_session_state := 'changed';
          end if;
        else
          if v_session_state <> 'stored' then
            perform app_private.store_session(v_session, v_session_state);
          end if;
          v_session := app_private.open_session(v_site.id, v_visitor_key, case when v_granted then v_event.visitor_id end,
                                                v_event.id, v_event.occurred_at, v_event.url, v_event.referrer, v_site.domain);
          v_session_state := 'new';
        end if;
        v_session_id := v_session.id;
      else
        -- Late: write everything held, then place the event as place_event always has (it
        -- reads the tables), which may re-derive the visitor's sessions once it is stored.
        if v_session_state <> 'stored' then
          perform app_private.store_session(v_session, v_session_state);
        end if;
        v_session := null;
        v_session_state := null;
        insert into app_public.events select * from pg_catalog.unnest(v_pending);
        v_pending := '{}';
        select p.session_id, p.rebuild_since, p.rebuild_since_event_id into v_session_id, v_rebuild_since, v_rebuild_since_event_id
          from app_private.place_event(v_site.id, v_visitor_key, case when v_granted then v_event.visitor_id end,
                                       v_event.id, v_event.occurred_at, v_event.type, v_event.url, v_event.referrer, v_site.domain) p;
      end if;
    end if;

    v_pending := v_pending || row(v_site.id, v_event.id, v_event.occurred_at, v_now, v_event.type, v_visitor_key,
                                  case when v_granted then v_event.visitor_id end, v_session_id, v_event.url, v_event.referrer,
                                  v_event.event ->> 'title', coalesce(nullif(v_event.event -> 'props', 'null'::jsonb), '{}'),
                                  case when v_granted then nullif(v_event.event -> 'device', 'null'::jsonb) end, v_consent, v_is_bot
                                 )::app_public.events;
    v_accepted[v_event.batch] := v_accepted[v_event.batch] + 1;
    if v_rebuild_since is not null then
      insert into app_public.events select * from pg_catalog.unnest(v_pending);
      v_pending := '{}';
      perform app_private.rebuild_sessions(v_site.id, v_visitor_key, v_rebuild_since, v_rebuild_since_event_id, v_site.domain);
    end if;
  end loop;

  if v_session_state <> 'stored' then
    perform app_private.store_session(v_session, v_session_state);
  end if;
  if pg_catalog.cardinality(v_pending) > 0 then
    insert into app_public.events select * from pg_catalog.unnest(v_pending);
  end if;

  -- The answers, built without a query: a batch's rejections are sorted by index only when it
  -- has more than one (see the top of this migration).
  for v_batch in 1 .. v_batches loop
    if pg_catalog.jsonb_array_length(v_rejected[v_batch]) > 1 then
      v_rejected[v_batch] := (select pg_catalog.jsonb_agg(r order by (r ->> 'index')::int)
                                from pg_catalog.jsonb_array_elements(v_rejected[v_batch]) r);
    end if;
    v_answers[v_batch] := pg_catalog.jsonb_build_object('accepted', v_accepted[v_batch], 'duplicates', v_duplicates[v_batch],
                                                        'rejected', v_rejected[v_batch]);
  end loop;
  return pg_catalog.to_jsonb(v_answers);
end;
$$;

--
-- Name: FUNCTION store_events(site app_public.sites, batches jsonb, bots boolean[]); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.store_events(site app_public.sites, batches jsonb, bots boolean[]) IS 'Stores admitted tracker events of one site: batches is an array of event arrays (one per request), bots says per batch whether its user agent is a bot. Validation, ledger, quota, consent, sessions and events in one pass sorted by visitor; returns one {accepted, duplicates, rejected[]} per batch, in order.';

--
-- Name: store_session(app_public.sessions, text); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.store_session(session app_public.sessions, state text) RETURNS void
    LANGUAGE plpgsql
    SET plan_cache_mode TO 'force_generic_plan'
    AS $$
begin
  if state = 'new' then
    insert into app_public.sessions select session.*;
  elsif state = 'changed' then
    update app_public.sessions s
       set ended_at = session.ended_at, last_event_id = session.last_event_id, event_count = session.event_count
     where s.site_id = session.site_id and s.id = session.id and s.started_at = session.started_at
       and s.visitor_key = session.visitor_key;
  end if;
end;
$$;

--
-- Name: FUNCTION store_session(session app_public.sessions, state text); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.store_session(session app_public.sessions, state text) IS 'Writes a session that ingest_events held in memory: new is inserted, changed has its end updated.';

--
-- Name: subject_links(uuid, text, text); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.subject_links(site_id uuid, kind text, normalized text) RETURNS app_private.subject_link_set
    LANGUAGE plpgsql STABLE
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
declare
  v app_private.subject_link_set := row('{}', '{}', '{}', '{}', '{}', '{}');
  v_hash text;
begin
  if kind = 'visitor_id' then
    v.visitor_ids := array[normalized];
  elsif kind in ('email', 'phone') then
    v_hash := app_hidden.identifier_sha256(normalized);
    select coalesce(array_agg(i.sale_id), '{}') into v.sale_ids from app_private.sale_identifiers i
     where i.site_id = subject_links.site_id
       and (case when kind = 'email' then i.email_sha256 else i.phone_sha256 end) = v_hash;
    if kind = 'phone' then
      select coalesce(array_agg(c.id), '{}') into v.call_ids from app_public.calls c
       where c.site_id = subject_links.site_id and c.caller = normalized;
    end if;
  else
    select coalesce(array_agg(distinct s.id), '{}'), coalesce(array_agg(distinct s.visitor_key), '{}')
      into v.session_ids, v.visitor_keys
      from app_public.sessions s
     where s.site_id = subject_links.site_id and (s.click_id = normalized or s.assisting_click_id = normalized);
    select coalesce(array_agg(c.id), '{}') into v.call_ids from app_public.calls c
     where c.site_id = subject_links.site_id and (c.gclid = normalized or c.click_id = normalized);
    select coalesce(array_agg(s.id), '{}') into v.sale_ids from app_public.sales s
     where s.site_id = subject_links.site_id and (s.gclid = normalized or s.click_id = normalized);
  end if;

  -- Sales lead to their calls, visitors and sessions; calls to theirs.
  select v.call_ids || coalesce(array_agg(s.call_id) filter (where s.call_id is not null), '{}'),
         v.visitor_ids || coalesce(array_agg(s.visitor_id) filter (where s.visitor_id is not null), '{}'),
         v.session_ids || coalesce(array_agg(s.session_id) filter (where s.session_id is not null), '{}')
    into v.call_ids, v.visitor_ids, v.session_ids
    from app_public.sales s where s.site_id = subject_links.site_id and s.id = any(v.sale_ids);
  select v.visitor_ids || coalesce(array_agg(c.visitor_id) filter (where c.visitor_id is not null), '{}'),
         v.session_ids || coalesce(array_agg(c.session_id) filter (where c.session_id is not null), '{}')
    into v.visitor_ids, v.session_ids
    from app_public.calls c where c.site_id = subject_links.site_id and c.id = any(v.call_ids);
  -- Sessions lead to their visitors.
  select v.visitor_keys || coalesce(array_agg(distinct s.visitor_key), '{}'),
         v.visitor_ids || coalesce(array_agg(distinct s.visitor_id) filter (where s.visitor_id is not null), '{}')
    into v.visitor_keys, v.visitor_ids
    from app_public.sessions s where s.site_id = subject_links.site_id and s.id = any(v.session_ids);
  -- A visitor is known by its raw id and by the daily hashes of the days whose salts remain.
  select array(select distinct unnest(v.visitor_ids)) into v.visitor_ids;
  select array(select distinct k from (
           select unnest(v.visitor_keys) as k
           union all select unnest(v.visitor_ids)
           union all select 'h:' || pg_catalog.encode(pg_catalog.substr(public.hmac(pg_catalog.convert_to(subject_links.site_id::text || '/' || i.id, 'UTF8'),
                                                                  d.salt, 'sha256'), 1, 16), 'hex')
             from unnest(v.visitor_ids) as i(id) cross join app_private.daily_salts d) keys)
    into v.visitor_keys;
  -- Every session of those visitors, and every call and sale of those sessions and visitors.
  select array(select distinct id from (
           select unnest(v.session_ids) as id
           union all select s.id from app_public.sessions s
            where s.site_id = subject_links.site_id and s.visitor_key = any(v.visitor_keys)) ids)
    into v.session_ids;
  select array(select distinct id from (
           select unnest(v.call_ids) as id
           union all select c.id from app_public.calls c
            where c.site_id = subject_links.site_id and (c.session_id = any(v.session_ids) or c.visitor_id = any(v.visitor_ids))) ids)
    into v.call_ids;
  select array(select distinct id from (
           select unnest(v.sale_ids) as id
           union all select s.id from app_public.sales s
            where s.site_id = subject_links.site_id
              and (s.session_id = any(v.session_ids) or s.visitor_id = any(v.visitor_ids) or s.call_id = any(v.call_ids))) ids)
    into v.sale_ids;
  select array(select public.hmac(pg_catalog.convert_to(i.id, 'UTF8'), s.salt, 'sha256')
                 from unnest(v.visitor_ids) as i(id), app_private.site_salts s where s.site_id = subject_links.site_id)
    into v.consent_hashes;
  return v;
end;
$$;

--
-- Name: FUNCTION subject_links(site_id uuid, kind text, normalized text); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.subject_links(site_id uuid, kind text, normalized text) IS 'Every visitor, session, call, sale and consent record linked to a subject on a site.';

--
-- Name: take_quota(app_public.sites, date); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.take_quota(site app_public.sites, period date) RETURNS boolean
    LANGUAGE plpgsql
    AS $$
declare
  v_own smallint := (pg_catalog.pg_backend_pid() % 16)::smallint;
  v_holding boolean := pg_catalog.current_setting('app.holds_quota_shard', true) = 'on';
  v_shard smallint;
  v_lock_timeout text;
begin
  if site.monthly_event_quota is null then
    return true;
  end if;
  -- Our own shard first, then any shard nobody holds.
  select q.shard into v_shard from app_private.quota_shards q
   where q.site_id = site.id and q.period = take_quota.period and q.shard = v_own and q.remaining > 0
   for update skip locked;
  if v_shard is null then
    select q.shard into v_shard from app_private.quota_shards q
     where q.site_id = site.id and q.period = take_quota.period and q.remaining > 0
     order by q.shard limit 1 for update skip locked;
  end if;
  if v_shard is null and not v_holding then
    -- One waiter per site and month: a waiting FOR UPDATE keeps its lock on a row it then
    -- finds used up, so two waiters could otherwise each hold a row the other waits for.
    perform pg_catalog.pg_advisory_xact_lock(
      pg_catalog.hashtextextended('quota/' || site.id::text || '/' || take_quota.period::text, 0));
    select q.shard into v_shard from app_private.quota_shards q
     where q.site_id = site.id and q.period = take_quota.period and q.remaining > 0
     order by q.shard limit 1 for update;
  elsif v_shard is null then
    -- Holding a shard: wait for a busy one, but briefly (see above). The subtransaction is only
    -- on this path, which is near the end of a quota and under contention.
    v_lock_timeout := pg_catalog.current_setting('lock_timeout');
    begin
      perform pg_catalog.set_config('lock_timeout', '200ms', true);
      select q.shard into v_shard from app_private.quota_shards q
       where q.site_id = site.id and q.period = take_quota.period and q.remaining > 0
       order by q.shard limit 1 for update;
    exception when lock_not_available then
      v_shard := null;
    end;
    perform pg_catalog.set_config('lock_timeout', v_lock_timeout, true);
  end if;
  if v_shard is null then
    return false;
  end if;
  update app_private.quota_shards q set remaining = q.remaining - 1
   where q.site_id = site.id and q.period = take_quota.period and q.shard = v_shard;
  perform pg_catalog.set_config('app.holds_quota_shard', 'on', true);
  return true;
end;
$$;

--
-- Name: FUNCTION take_quota(site app_public.sites, period date); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.take_quota(site app_public.sites, period date) IS 'Consumes one event of a site''s monthly quota, exact under concurrency, without one hot counter row.';

--
-- Name: tg__audit(); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.tg__audit() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
declare
  v_raw_old jsonb := case when tg_op <> 'INSERT' then pg_catalog.to_jsonb(old) end;
  v_raw_new jsonb := case when tg_op <> 'DELETE' then pg_catalog.to_jsonb(new) end;
  v_old jsonb := v_raw_old;
  v_new jsonb := v_raw_new;
  v_row jsonb := coalesce(v_raw_new, v_raw_old);
  v_column text;
begin
  for i in 2 .. tg_nargs - 1 loop
    if pg_catalog.left(tg_argv[i], 1) = '-' then
      v_old := v_old - pg_catalog.substr(tg_argv[i], 2);
      v_new := v_new - pg_catalog.substr(tg_argv[i], 2);
      continue;
    end if;
    v_column := tg_argv[i];
    if v_old ? v_column then v_old := v_old || pg_catalog.jsonb_build_object(v_column, '[redacted]'); end if;
    if v_new ? v_column then
      v_new := v_new || pg_catalog.jsonb_build_object(v_column,
        case when tg_op = 'UPDATE' and (v_raw_old -> v_column) is distinct from (v_raw_new -> v_column)
             then '[redacted, changed]' else '[redacted]' end);
    end if;
  end loop;
  if tg_op = 'UPDATE' and v_old = v_new then
    return null;  -- nothing an auditor would see changed
  end if;
  perform app_private.append_audit(
    (v_row ->> tg_argv[0])::uuid, pg_catalog.lower(tg_op), tg_table_name, v_row ->> tg_argv[1],
    v_old, v_new,
    app_hidden.current_user_id(), app_hidden.current_api_key_id(), session_user);
  return null;
end;
$$;

--
-- Name: FUNCTION tg__audit(); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.tg__audit() IS 'Records a row change in the audit chain. Trigger args: site id column, row id column, secret columns (redacted), -noise columns (omitted).';

--
-- Name: tg__forget_site_tracking(); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.tg__forget_site_tracking() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
begin
  delete from app_public.events e where e.site_id = old.id;
  delete from app_public.sessions s where s.site_id = old.id;
  delete from app_public.ingest_idempotency l where l.site_id = old.id;
  delete from app_private.event_removals r where r.site_id = old.id;
  return null;
end;
$$;

--
-- Name: FUNCTION tg__forget_site_tracking(); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.tg__forget_site_tracking() IS 'Deletes a deleted site''s events, sessions and ledger rows (partitioned tables carry no foreign key).';

--
-- Name: tg__refuse_change(); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.tg__refuse_change() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
begin
  raise exception using errcode = 'OMIMM', message = pg_catalog.format('%I is append-only: %s refused.', tg_table_name, pg_catalog.lower(tg_op));
end;
$$;

--
-- Name: FUNCTION tg__refuse_change(); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.tg__refuse_change() IS 'Refuses updates, deletes and truncates (OMIMM) on append-only tables.';

--
-- Name: tg__touch_updated_at(); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.tg__touch_updated_at() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
begin
  new.updated_at := greatest(pg_catalog.now(), old.updated_at + interval '1 millisecond');
  return new;
end;
$$;

--
-- Name: FUNCTION tg__touch_updated_at(); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.tg__touch_updated_at() IS 'Keeps updated_at moving forward on every update.';

--
-- Name: tg_offline_conversion_queue__destination(); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.tg_offline_conversion_queue__destination() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
begin
  new.destination_id := (select d.id from app_public.destinations d where d.site_id = new.site_id and d.status <> 'paused');
  return new;
end;
$$;

--
-- Name: FUNCTION tg_offline_conversion_queue__destination(); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.tg_offline_conversion_queue__destination() IS 'Queues a conversion for its site''s live destination (one per site), so claiming it changes no indexed column.';

--
-- Name: tg_offline_conversion_queue__forget_erased_order_id(); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.tg_offline_conversion_queue__forget_erased_order_id() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
begin
  if exists (select 1 from app_public.sales s
              where s.site_id = new.site_id and s.id = new.sale_id and s.external_id = 'erased:' || s.id::text) then
    new.order_id := 'erased:' || new.sale_id::text;
  end if;
  return new;
end;
$$;

--
-- Name: FUNCTION tg_offline_conversion_queue__forget_erased_order_id(); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.tg_offline_conversion_queue__forget_erased_order_id() IS 'Replaces a finished retraction''s order id when erasure replaced its sale''s (the id was the subject''s own data).';

--
-- Name: tg_site_members__keep_an_owner(); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.tg_site_members__keep_an_owner() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
begin
  if old.role = 'owner'
     and exists (select 1 from app_public.sites s where s.id = old.site_id)
     and not exists (select 1 from app_public.site_members m
                     where m.site_id = old.site_id and m.role = 'owner') then
    raise exception using errcode = 'OMOWN', message = 'A site must keep at least one owner.';
  end if;
  return null;
end;
$$;

--
-- Name: FUNCTION tg_site_members__keep_an_owner(); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.tg_site_members__keep_an_owner() IS 'Refuses to remove or demote a site''s last owner (OMOWN). Security definer: it must see the site and every owner, whatever the caller may see.';

--
-- Name: tg_sites__apply_quota_change(); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.tg_sites__apply_quota_change() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
declare
  v_period date;
  v_counted bigint;
  v_held_then bigint;
  v_held_now bigint;
begin
  for v_period in
    select distinct q.period from app_private.quota_shards q
     where q.site_id = new.id
       and q.period >= pg_catalog.date_trunc('month', (pg_catalog.now() - interval '7 days') at time zone 'UTC')::date
     order by 1
  loop
    -- One statement, one snapshot: the ledger's count and what the shards held beside it.
    select app_private.quota_used(new.id, v_period),
           (select pg_catalog.sum(q.remaining) from app_private.quota_shards q where q.site_id = new.id and q.period = v_period)
      into v_counted, v_held_then;
    perform 1 from app_private.quota_shards q where q.site_id = new.id and q.period = v_period order by q.shard for update;
    select pg_catalog.sum(q.remaining) into v_held_now from app_private.quota_shards q where q.site_id = new.id and q.period = v_period;
    update app_private.quota_shards q set remaining = s.remaining
      from app_private.quota_shares(greatest(new.monthly_event_quota - (v_counted + v_held_then - v_held_now), 0)) s
     where q.site_id = new.id and q.period = v_period and q.shard = s.shard;
  end loop;
  return null;
end;
$$;

--
-- Name: FUNCTION tg_sites__apply_quota_change(); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.tg_sites__apply_quota_change() IS 'Recounts what is left of a site''s quota for the months still taking events when the quota changes.';

--
-- Name: tg_sites__issue_call_event_secret(); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.tg_sites__issue_call_event_secret() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
begin
  insert into app_private.call_event_secrets (site_id, current_secret)
  values (new.id, app_private.new_call_event_secret());
  return null;
end;
$$;

--
-- Name: FUNCTION tg_sites__issue_call_event_secret(); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.tg_sites__issue_call_event_secret() IS 'Every new site gets a call-event signing secret.';

--
-- Name: tg_sites__issue_salt(); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.tg_sites__issue_salt() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
begin
  insert into app_private.site_salts (site_id) values (new.id);
  return null;
end;
$$;

--
-- Name: FUNCTION tg_sites__issue_salt(); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.tg_sites__issue_salt() IS 'Gives a new site its consent-proof salt.';

--
-- Name: unsettled_requests(uuid, uuid); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.unsettled_requests(site_id uuid, destination_id uuid DEFAULT NULL::uuid) RETURNS SETOF text
    LANGUAGE sql STABLE
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
  select distinct q.request_id from app_public.offline_conversion_queue q
   where q.site_id = unsettled_requests.site_id and q.stage = 'sent' and app_private.request_status_due(q)
     and (unsettled_requests.destination_id is null or q.destination_id = unsettled_requests.destination_id)
   limit 50;
$$;

--
-- Name: FUNCTION unsettled_requests(site_id uuid, destination_id uuid); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.unsettled_requests(site_id uuid, destination_id uuid) IS 'Request ids whose processing status is due to be asked (sent 5 minutes to 2 days ago, no verdict yet), of one destination or (null) any.';

--
-- Name: upload_outcome_unknown(app_public.offline_conversion_queue); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.upload_outcome_unknown(q app_public.offline_conversion_queue) RETURNS boolean
    LANGUAGE sql IMMUTABLE
    AS $$
  select q.status = 'pending' and q.attempts > 0 and app_private.outcome_unknown(q.last_error_code);
$$;

--
-- Name: FUNCTION upload_outcome_unknown(q app_public.offline_conversion_queue); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.upload_outcome_unknown(q app_public.offline_conversion_queue) IS 'True for a pending conversion whose last upload ended without an answer (timeout, dropped connection): Google may have it.';

--
-- Name: valid_consent(jsonb); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.valid_consent(consent jsonb) RETURNS boolean
    LANGUAGE plpgsql IMMUTABLE
    AS $$
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

--
-- Name: FUNCTION valid_consent(consent jsonb); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.valid_consent(consent jsonb) IS 'True for an object of Consent Mode signals, each granted or denied: the four we act on, and functionality, personalization and security storage, which we ignore.';

--
-- Name: withdraw_conversion(uuid, uuid); Type: FUNCTION; Schema: app_private; Owner: -
--

CREATE FUNCTION app_private.withdraw_conversion(site_id uuid, sale_id uuid) RETURNS void
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
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

--
-- Name: FUNCTION withdraw_conversion(site_id uuid, sale_id uuid); Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON FUNCTION app_private.withdraw_conversion(site_id uuid, sale_id uuid) IS 'Cancels a sale''s undelivered conversion, or queues a retraction of one Google may have (delivered, in flight, or sent without an answer).';

--
-- Name: site_members; Type: TABLE; Schema: app_public; Owner: -
--

CREATE TABLE app_public.site_members (
    site_id uuid NOT NULL,
    user_id uuid NOT NULL,
    role app_public.site_role NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL
);

--
-- Name: TABLE site_members; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON TABLE app_public.site_members IS 'Who may work on a site, and with which role.';

--
-- Name: COLUMN site_members.site_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.site_members.site_id IS 'The site.';

--
-- Name: COLUMN site_members.user_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.site_members.user_id IS 'The member.';

--
-- Name: COLUMN site_members.role; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.site_members.role IS 'owner > admin > editor > viewer.';

--
-- Name: COLUMN site_members.created_at; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.site_members.created_at IS 'When the membership was granted.';

--
-- Name: add_site_member(uuid, text, app_public.site_role); Type: FUNCTION; Schema: app_public; Owner: -
--

CREATE FUNCTION app_public.add_site_member(site_id uuid, email text, role app_public.site_role) RETURNS app_public.site_members
    LANGUAGE plpgsql STRICT SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
declare
  v_user_id uuid;
  v_current app_public.site_role;
  v_member app_public.site_members;
begin
  -- Authority first (a denial must not reveal whether the email exists), with the role asked
  -- for; then again with the member's current role, so an admin cannot demote an admin.
  perform app_hidden.assert_site_role(add_site_member.site_id,
    case when add_site_member.role >= 'admin' then 'owner' else 'admin' end::app_public.site_role,
    'insert', 'site_members', null);
  select u.id into v_user_id from app_public.users u where u.email = add_site_member.email::citext;
  if v_user_id is null then
    raise exception using errcode = 'OMNOU', message = 'No user has this email address.';
  end if;
  select m.role into v_current from app_public.site_members m
   where m.site_id = add_site_member.site_id and m.user_id = v_user_id;
  if v_current >= 'admin' then
    perform app_hidden.assert_site_role(add_site_member.site_id, 'owner', 'update', 'site_members', v_user_id::text);
  end if;
  insert into app_public.site_members (site_id, user_id, role)
  values (add_site_member.site_id, v_user_id, add_site_member.role)
  on conflict on constraint site_members_pkey do update set role = excluded.role
  returning * into v_member;
  return v_member;
end;
$$;

--
-- Name: FUNCTION add_site_member(site_id uuid, email text, role app_public.site_role); Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON FUNCTION app_public.add_site_member(site_id uuid, email text, role app_public.site_role) IS 'Gives an existing user a role on a site, or changes it. Admins manage editors and viewers; owners manage anyone.';

--
-- Name: billing_reconciliation(uuid, date); Type: FUNCTION; Schema: app_public; Owner: -
--

CREATE FUNCTION app_public.billing_reconciliation(site_id uuid, period date) RETURNS app_public.billing_reconciliation_result
    LANGUAGE plpgsql STABLE STRICT SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
declare
  r app_public.billing_reconciliation_result;
  v_snapshot app_public.invoice_snapshots;
  v_bounds record;
begin
  perform app_private.assert_billing_access(billing_reconciliation.site_id, 'reconcile');
  r.site_id := billing_reconciliation.site_id;
  r.period := app_private.period_start(billing_reconciliation.period);
  v_bounds := app_private.period_bounds(r.period);
  r.drift := '{}';
  select pg_catalog.count(*) filter (where l.billable), pg_catalog.count(*) filter (where not l.billable)
    into r.ledger_billable, r.ledger_non_billable
    from app_public.ingest_idempotency l
   where l.site_id = r.site_id and l.occurred_at >= v_bounds.starts_at and l.occurred_at < v_bounds.ends_at;
  select pg_catalog.count(*) into r.events_stored
    from app_public.events e
   where e.site_id = r.site_id and e.occurred_at >= v_bounds.starts_at and e.occurred_at < v_bounds.ends_at;
  -- Events erased or past their retention are gone from events but still in the ledger (it holds
  -- no personal data): they are counted, so they are not drift.
  select coalesce(sum(x.events), 0) into r.events_removed
    from app_private.event_removals x where x.site_id = r.site_id and x.period = r.period;
  if r.events_stored + r.events_removed <> r.ledger_billable + r.ledger_non_billable then
    r.drift := r.drift || pg_catalog.format('events: %s stored and %s removed for privacy, but the ledger has %s rows',
                                            r.events_stored, r.events_removed, r.ledger_billable + r.ledger_non_billable);
  end if;
  select * into v_snapshot from app_public.invoice_snapshots s where s.site_id = r.site_id and s.period = r.period;
  r.frozen := v_snapshot.site_id is not null;
  if r.frozen then
    r.snapshot_billable := v_snapshot.billable_events;
    r.snapshot_digest := v_snapshot.ledger_digest;
    r.ledger_digest := app_private.compute_ledger_digest(r.site_id, r.period);
    if v_snapshot.billable_events <> r.ledger_billable then
      r.drift := r.drift || pg_catalog.format('snapshot: %s billable events invoiced, the ledger now has %s',
                                              v_snapshot.billable_events, r.ledger_billable);
    end if;
    if v_snapshot.ledger_digest <> r.ledger_digest then
      r.drift := r.drift || 'snapshot: the ledger no longer hashes to the frozen digest'::text;
    end if;
  end if;
  return r;
end;
$$;

--
-- Name: FUNCTION billing_reconciliation(site_id uuid, period date); Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON FUNCTION app_public.billing_reconciliation(site_id uuid, period date) IS 'Compares a site''s ledger (billable, non-billable), stored events and frozen snapshot for a month (admins, owners, DBAs) and names any drift.';

--
-- Name: confirm_sale_and_enqueue(uuid, text, numeric, text, timestamp with time zone, uuid, text, text, text, text, text, jsonb); Type: FUNCTION; Schema: app_public; Owner: -
--

CREATE FUNCTION app_public.confirm_sale_and_enqueue(site_id uuid, external_id text, amount numeric, currency text, occurred_at timestamp with time zone, session_id uuid DEFAULT NULL::uuid, visitor_id text DEFAULT NULL::text, call_id text DEFAULT NULL::text, gclid text DEFAULT NULL::text, email text DEFAULT NULL::text, phone text DEFAULT NULL::text, consent jsonb DEFAULT NULL::jsonb) RETURNS app_public.sales
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
declare
  v_site app_public.sites;
begin
  -- The target is the site: a CRM's order id may be an email, which a denial's audit row must not keep.
  perform app_private.assert_caller_role(confirm_sale_and_enqueue.site_id, 'editor', 'confirm_sale', 'sales', confirm_sale_and_enqueue.site_id::text);
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

--
-- Name: FUNCTION confirm_sale_and_enqueue(site_id uuid, external_id text, amount numeric, currency text, occurred_at timestamp with time zone, session_id uuid, visitor_id text, call_id text, gclid text, email text, phone text, consent jsonb); Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON FUNCTION app_public.confirm_sale_and_enqueue(site_id uuid, external_id text, amount numeric, currency text, occurred_at timestamp with time zone, session_id uuid, visitor_id text, call_id text, gclid text, email text, phone text, consent jsonb) IS 'Confirms a sale (editor or above) and, in the same transaction, queues its conversion for Google and the upload job. A repeated external_id is sale_exists and changes nothing. callId is our call id or the provider''s; email and phone are kept only as normalised SHA-256; consent (ad_user_data, ad_personalization) is the CRM''s own record, if it has one.';

--
-- Name: create_api_key(uuid, app_public.site_role, text); Type: FUNCTION; Schema: app_public; Owner: -
--

CREATE FUNCTION app_public.create_api_key(site_id uuid, role app_public.site_role, name text DEFAULT ''::text) RETURNS app_public.created_api_key
    LANGUAGE plpgsql STRICT SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
begin
  -- A key never outranks its creator: admins issue up to admin, and no key is an owner.
  perform app_hidden.assert_site_role(create_api_key.site_id, 'admin', 'insert', 'api_keys', null);
  if create_api_key.role >= 'owner' then
    raise exception using errcode = 'OMKRL', message = 'An API key can be viewer, editor or admin.';
  end if;
  return app_private.issue_api_key(create_api_key.site_id, create_api_key.role, create_api_key.name,
                                   app_hidden.current_user_id());
end;
$$;

--
-- Name: FUNCTION create_api_key(site_id uuid, role app_public.site_role, name text); Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON FUNCTION app_public.create_api_key(site_id uuid, role app_public.site_role, name text) IS 'Creates an API key for a site (admin or owner). The returned key is shown once.';

--
-- Name: create_destination(uuid, text, text, text, text); Type: FUNCTION; Schema: app_public; Owner: -
--

CREATE FUNCTION app_public.create_destination(site_id uuid, rail text, customer_id text, conversion_action text, login_customer_id text DEFAULT NULL::text) RETURNS app_public.destinations
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
declare
  v_destination app_public.destinations;
begin
  perform app_private.assert_caller_role(create_destination.site_id, 'admin', 'create', 'destinations', create_destination.customer_id);
  insert into app_public.destinations (site_id, rail, customer_id, login_customer_id, conversion_action)
  values (create_destination.site_id, create_destination.rail, pg_catalog.replace(create_destination.customer_id, '-', ''),
          pg_catalog.replace(create_destination.login_customer_id, '-', ''), create_destination.conversion_action)
  returning * into v_destination;
  return v_destination;
end;
$$;

--
-- Name: FUNCTION create_destination(site_id uuid, rail text, customer_id text, conversion_action text, login_customer_id text); Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON FUNCTION app_public.create_destination(site_id uuid, rail text, customer_id text, conversion_action text, login_customer_id text) IS 'Adds a delivery destination (admin or owner): rail datamanager or google_ads, Google Ads customer id, conversion action id. Set its credentials with setDestinationCredentials.';

--
-- Name: create_site(text, text); Type: FUNCTION; Schema: app_public; Owner: -
--

CREATE FUNCTION app_public.create_site(name text, domain text) RETURNS app_public.sites
    LANGUAGE plpgsql STRICT SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
begin
  if app_hidden.current_user_id() is null then
    perform app_hidden.raise_forbidden(null, 'create_site', 'sites', null);
  end if;
  return app_private.create_site(app_hidden.current_user_id(), create_site.name, create_site.domain);
end;
$$;

--
-- Name: FUNCTION create_site(name text, domain text); Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON FUNCTION app_public.create_site(name text, domain text) IS 'Creates a site owned by the signed-in user. Settings start at safe defaults (consent required).';

--
-- Name: users; Type: TABLE; Schema: app_public; Owner: -
--

CREATE TABLE app_public.users (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    email public.citext NOT NULL,
    display_name text,
    is_platform_admin boolean DEFAULT false NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT users_display_name_length CHECK ((length(display_name) <= 200)),
    CONSTRAINT users_email_format CHECK ((email OPERATOR(public.~) '^[^@[:space:]]+@[^@[:space:]]+\.[^@[:space:]]+$'::public.citext))
);

--
-- Name: TABLE users; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON TABLE app_public.users IS 'A person who signs in to dashboards. Users belong to sites through site members.';

--
-- Name: COLUMN users.id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.users.id IS 'Stable identifier; the `sub` claim of dashboard tokens.';

--
-- Name: COLUMN users.email; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.users.email IS 'Sign-in address, unique, case-insensitive. Visible to the user and to co-members of their sites.';

--
-- Name: COLUMN users.display_name; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.users.display_name IS 'Name shown to co-members.';

--
-- Name: COLUMN users.is_platform_admin; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.users.is_platform_admin IS 'Platform operators see and manage every site. Granted only from the CLI.';

--
-- Name: COLUMN users.created_at; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.users.created_at IS 'When the user was created.';

--
-- Name: COLUMN users.updated_at; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.users.updated_at IS 'When the user last changed.';

--
-- Name: current_user(); Type: FUNCTION; Schema: app_public; Owner: -
--

CREATE FUNCTION app_public."current_user"() RETURNS app_public.users
    LANGUAGE sql STABLE
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
  select u.* from app_public.users u where u.id = app_hidden.current_user_id();
$$;

--
-- Name: FUNCTION "current_user"(); Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON FUNCTION app_public."current_user"() IS 'The signed-in user, or null.';

--
-- Name: delete_site(uuid); Type: FUNCTION; Schema: app_public; Owner: -
--

CREATE FUNCTION app_public.delete_site(site_id uuid) RETURNS boolean
    LANGUAGE plpgsql STRICT
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
begin
  perform app_hidden.assert_site_role(delete_site.site_id, 'owner', 'delete', 'sites', delete_site.site_id::text);
  delete from app_public.sites s where s.id = delete_site.site_id;
  return found;
end;
$$;

--
-- Name: FUNCTION delete_site(site_id uuid); Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON FUNCTION app_public.delete_site(site_id uuid) IS 'Deletes a site and everything it holds (owner only).';

--
-- Name: destinations_conversion_totals(app_public.destinations); Type: FUNCTION; Schema: app_public; Owner: -
--

CREATE FUNCTION app_public.destinations_conversion_totals(d app_public.destinations) RETURNS app_public.conversion_totals
    LANGUAGE sql STABLE
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
  select (count(*) filter (where q.kind = 'conversion' and q.status = 'pending'),
          count(*) filter (where q.kind = 'conversion' and q.status = 'processing'),
          count(*) filter (where q.kind = 'conversion' and q.status = 'sent'),
          count(*) filter (where q.kind = 'conversion' and q.status = 'accepted'),
          count(*) filter (where q.kind = 'conversion' and q.status = 'failed'),
          count(*) filter (where q.kind = 'conversion' and q.status = 'cancelled'),
          count(*) filter (where q.kind = 'retraction'))::app_public.conversion_totals
    from app_public.offline_conversion_queue q
   where q.site_id = d.site_id and q.destination_id = d.id;
$$;

--
-- Name: FUNCTION destinations_conversion_totals(d app_public.destinations); Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON FUNCTION app_public.destinations_conversion_totals(d app_public.destinations) IS 'How many of this destination''s conversions are pending (waiting for their first upload or a retry), in flight, sent (awaiting Google''s processing), accepted, failed or cancelled.';

--
-- Name: export_subject_data(uuid, text, text); Type: FUNCTION; Schema: app_public; Owner: -
--

CREATE FUNCTION app_public.export_subject_data(site_id uuid, kind text, value text) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
declare
  v_normalized text;
  v app_private.subject_link_set;
begin
  perform app_private.assert_caller_role(export_subject_data.site_id, 'admin', 'export_subject_data', 'sites', export_subject_data.site_id::text);
  v_normalized := app_private.normalize_subject(export_subject_data.kind, export_subject_data.value);
  v := app_private.subject_links(export_subject_data.site_id, export_subject_data.kind, v_normalized);
  -- Who looked at whose data is itself recorded (the subject only as the site's salted hash).
  perform app_private.append_audit(export_subject_data.site_id, 'access:export_subject_data', 'subjects', export_subject_data.kind,
    null, pg_catalog.jsonb_build_object('subject_hash', app_private.hash_subject(export_subject_data.site_id, export_subject_data.kind, v_normalized)),
    app_hidden.current_user_id(), app_hidden.current_api_key_id(), session_user);
  return pg_catalog.jsonb_build_object(
    'site_id', export_subject_data.site_id,
    'subject', pg_catalog.jsonb_build_object('kind', export_subject_data.kind, 'value', v_normalized),
    'exported_at', pg_catalog.now(),
    'sessions', coalesce((select pg_catalog.jsonb_agg(pg_catalog.to_jsonb(s) order by s.started_at) from app_public.sessions s
                            where s.site_id = export_subject_data.site_id and s.id = any(v.session_ids)), '[]'),
    'events', coalesce((select pg_catalog.jsonb_agg(pg_catalog.to_jsonb(e) order by e.occurred_at, e.id) from app_public.events e
                          where e.site_id = export_subject_data.site_id
                            and (e.visitor_key = any(v.visitor_keys) or e.session_id = any(v.session_ids))), '[]'),
    'consents', coalesce((select pg_catalog.jsonb_agg(pg_catalog.to_jsonb(c) - 'visitor_hash' order by c.recorded_at) from app_public.consents c
                            where c.site_id = export_subject_data.site_id and c.visitor_hash = any(v.consent_hashes)), '[]'),
    'calls', coalesce((select pg_catalog.jsonb_agg(pg_catalog.to_jsonb(c) order by c.started_at) from app_public.calls c
                         where c.site_id = export_subject_data.site_id and c.id = any(v.call_ids)), '[]'),
    'conversations', coalesce((select pg_catalog.jsonb_agg(pg_catalog.to_jsonb(c) order by c.created_at) from app_public.conversations c
                                 where c.site_id = export_subject_data.site_id
                                   and (c.call_id = any(v.call_ids) or c.session_id = any(v.session_ids)
                                        or c.id in (select s.conversation_id from app_public.sales s
                                                     where s.site_id = export_subject_data.site_id and s.id = any(v.sale_ids)))), '[]'),
    'sales', coalesce((select pg_catalog.jsonb_agg(pg_catalog.to_jsonb(s) || pg_catalog.jsonb_build_object(
                                 'email_sha256', i.email_sha256, 'phone_sha256', i.phone_sha256) order by s.occurred_at)
                         from app_public.sales s left join app_private.sale_identifiers i on i.site_id = s.site_id and i.sale_id = s.id
                        where s.site_id = export_subject_data.site_id and s.id = any(v.sale_ids)), '[]'),
    'conversions', coalesce((select pg_catalog.jsonb_agg(pg_catalog.to_jsonb(q) - 'locked_by' - 'locked_until' - 'stage' order by q.created_at)
                               from app_public.offline_conversion_queue q
                              where q.site_id = export_subject_data.site_id and q.sale_id = any(v.sale_ids)), '[]'));
end;
$$;

--
-- Name: FUNCTION export_subject_data(site_id uuid, kind text, value text); Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON FUNCTION app_public.export_subject_data(site_id uuid, kind text, value text) IS 'Right of access (admin or owner): everything held about a subject on the site as one JSON document, and an audit row saying who exported it. kind is visitor_id, email, phone (also matches callers) or click_id; email and phone are matched by their normalised SHA-256.';

--
-- Name: invoice_snapshots; Type: TABLE; Schema: app_public; Owner: -
--

CREATE TABLE app_public.invoice_snapshots (
    site_id uuid NOT NULL,
    period date NOT NULL,
    frozen_at timestamp with time zone DEFAULT now() NOT NULL,
    billable_events bigint NOT NULL,
    non_billable_events bigint NOT NULL,
    ledger_digest text NOT NULL,
    frozen_by text NOT NULL,
    CONSTRAINT invoice_snapshots_digest_format CHECK ((ledger_digest ~ '^[0-9a-f]{64}$'::text)),
    CONSTRAINT invoice_snapshots_period_is_month CHECK ((period = (date_trunc('month'::text, (period)::timestamp with time zone))::date))
);

--
-- Name: TABLE invoice_snapshots; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON TABLE app_public.invoice_snapshots IS 'Frozen monthly invoices: immutable once written (updates, deletes and truncates are refused for every role).';

--
-- Name: COLUMN invoice_snapshots.site_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.invoice_snapshots.site_id IS 'The site invoiced.';

--
-- Name: COLUMN invoice_snapshots.period; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.invoice_snapshots.period IS 'The UTC calendar month, as its first day.';

--
-- Name: COLUMN invoice_snapshots.frozen_at; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.invoice_snapshots.frozen_at IS 'When the invoice was frozen.';

--
-- Name: COLUMN invoice_snapshots.billable_events; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.invoice_snapshots.billable_events IS 'Billable ledger rows of the period: the amount invoiced.';

--
-- Name: COLUMN invoice_snapshots.non_billable_events; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.invoice_snapshots.non_billable_events IS 'Ledger rows stored but not billed (bots).';

--
-- Name: COLUMN invoice_snapshots.ledger_digest; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.invoice_snapshots.ledger_digest IS 'Lower-case hex SHA-256 of the lines "<idempotency key>,<occurred_at as YYYY-MM-DDTHH:MM:SS.mmmZ>,<true|false>\n" of every ledger row of the period, ordered by key (bytewise). Recompute it from the dispute export.';

--
-- Name: COLUMN invoice_snapshots.frozen_by; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.invoice_snapshots.frozen_by IS 'Who froze it: the worker''s schedule, a user, or a database role.';

--
-- Name: freeze_invoice(uuid, date); Type: FUNCTION; Schema: app_public; Owner: -
--

CREATE FUNCTION app_public.freeze_invoice(site_id uuid, period date) RETURNS app_public.invoice_snapshots
    LANGUAGE plpgsql STRICT SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
declare
  v_period date := app_private.period_start(freeze_invoice.period);
  v_snapshot app_public.invoice_snapshots;
begin
  perform app_private.assert_billing_access(freeze_invoice.site_id, 'freeze');
  if not exists (select 1 from app_public.sites s where s.id = freeze_invoice.site_id) then
    raise exception using errcode = 'OMNSS', message = 'No such site.';
  end if;
  if pg_catalog.now() < (app_private.period_bounds(v_period)).ends_at + interval '8 days' then
    raise exception using errcode = 'OMGRC', message = 'The period cannot be frozen before 8 days after its end.';
  end if;
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('invoice/' || freeze_invoice.site_id::text || '/' || v_period::text, 0));
  select * into v_snapshot from app_public.invoice_snapshots s where s.site_id = freeze_invoice.site_id and s.period = v_period;
  if v_snapshot.site_id is not null then
    return v_snapshot;
  end if;
  insert into app_public.invoice_snapshots (site_id, period, billable_events, non_billable_events, ledger_digest, frozen_by)
  select freeze_invoice.site_id, v_period,
         pg_catalog.count(*) filter (where l.billable), pg_catalog.count(*) filter (where not l.billable),
         app_private.compute_ledger_digest(freeze_invoice.site_id, v_period),
         coalesce('user:' || app_hidden.current_user_id()::text, 'api_key:' || app_hidden.current_api_key_id()::text,
                  nullif(pg_catalog.current_setting('app.frozen_by', true), ''), 'db:' || session_user)
    from app_public.ingest_idempotency l
   where l.site_id = freeze_invoice.site_id
     and l.occurred_at >= (app_private.period_bounds(v_period)).starts_at and l.occurred_at < (app_private.period_bounds(v_period)).ends_at
  returning * into v_snapshot;
  return v_snapshot;
end;
$$;

--
-- Name: FUNCTION freeze_invoice(site_id uuid, period date); Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON FUNCTION app_public.freeze_invoice(site_id uuid, period date) IS 'Freezes a site''s invoice for a month into an immutable snapshot with its ledger digest; returns the existing snapshot when already frozen.';

--
-- Name: junk_call(uuid, uuid); Type: FUNCTION; Schema: app_public; Owner: -
--

CREATE FUNCTION app_public.junk_call(site_id uuid, call_id uuid) RETURNS app_public.call_actions
    LANGUAGE plpgsql STRICT SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
declare
  v_locked record;
  v_action app_public.call_actions;
begin
  select * into v_locked from app_private.lock_call_for_action(junk_call.site_id, junk_call.call_id, 'junk');
  if (v_locked.standing).id is not null then
    raise exception using errcode = 'OMCAD', message = pg_catalog.format('The call is already %s; undo that first.',
      case (v_locked.standing).action when 'seal' then 'sealed' else 'junked' end);
  end if;
  insert into app_public.conversations as c (site_id, channel, call_id, session_id, status)
  values (junk_call.site_id, 'call', junk_call.call_id, (v_locked.call).session_id, 'junk')
  on conflict on constraint conversations_call_key do update set status = 'junk';
  insert into app_public.call_actions (site_id, call_id, action, actor_user_id, actor_api_key_id)
  values (junk_call.site_id, junk_call.call_id, 'junk', app_hidden.current_user_id(), app_hidden.current_api_key_id())
  returning * into v_action;
  return v_action;
end;
$$;

--
-- Name: FUNCTION junk_call(site_id uuid, call_id uuid); Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON FUNCTION app_public.junk_call(site_id uuid, call_id uuid) IS 'Marks a call as spam or a wrong number (editor or above).';

--
-- Name: remove_site_member(uuid, uuid); Type: FUNCTION; Schema: app_public; Owner: -
--

CREATE FUNCTION app_public.remove_site_member(site_id uuid, user_id uuid) RETURNS boolean
    LANGUAGE plpgsql STRICT
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
declare
  v_role app_public.site_role;
begin
  select m.role into v_role from app_public.site_members m
   where m.site_id = remove_site_member.site_id and m.user_id = remove_site_member.user_id;
  perform app_hidden.assert_site_role(remove_site_member.site_id,
    case when v_role >= 'admin' then 'owner' else 'admin' end::app_public.site_role,
    'delete', 'site_members', remove_site_member.user_id::text);
  delete from app_public.site_members m
   where m.site_id = remove_site_member.site_id and m.user_id = remove_site_member.user_id;
  return found;
end;
$$;

--
-- Name: FUNCTION remove_site_member(site_id uuid, user_id uuid); Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON FUNCTION app_public.remove_site_member(site_id uuid, user_id uuid) IS 'Removes a member. Admins remove editors and viewers; owners remove anyone but the last owner.';

--
-- Name: erasure_requests; Type: TABLE; Schema: app_public; Owner: -
--

CREATE TABLE app_public.erasure_requests (
    site_id uuid NOT NULL,
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    subject_kind text NOT NULL,
    subject_hash text NOT NULL,
    status text DEFAULT 'pending'::text NOT NULL,
    requested_by_user_id uuid,
    requested_by_api_key_id uuid,
    requested_by_db_role text DEFAULT SESSION_USER NOT NULL,
    requested_at timestamp with time zone DEFAULT now() NOT NULL,
    started_at timestamp with time zone,
    completed_at timestamp with time zone,
    attempts integer DEFAULT 0 NOT NULL,
    receipt jsonb,
    last_error text,
    CONSTRAINT erasure_requests_status CHECK ((status = ANY (ARRAY['pending'::text, 'running'::text, 'completed'::text, 'failed'::text]))),
    CONSTRAINT erasure_requests_subject_kind CHECK ((subject_kind = ANY (ARRAY['visitor_id'::text, 'email'::text, 'phone'::text, 'click_id'::text])))
);

--
-- Name: TABLE erasure_requests; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON TABLE app_public.erasure_requests IS 'Right-to-erasure requests and their receipts: what was erased (counts per table), when, by whom. The subject is kept only as a salted hash.';

--
-- Name: COLUMN erasure_requests.site_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.erasure_requests.site_id IS 'The site.';

--
-- Name: COLUMN erasure_requests.id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.erasure_requests.id IS 'Identifier.';

--
-- Name: COLUMN erasure_requests.subject_kind; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.erasure_requests.subject_kind IS 'visitor_id, email, phone or click_id.';

--
-- Name: COLUMN erasure_requests.subject_hash; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.erasure_requests.subject_hash IS 'HMAC-SHA256 of the subject with the site''s secret salt: identifies the request without holding the subject.';

--
-- Name: COLUMN erasure_requests.status; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.erasure_requests.status IS 'pending, running, completed or failed (then retried).';

--
-- Name: COLUMN erasure_requests.requested_by_user_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.erasure_requests.requested_by_user_id IS 'Who asked (dashboard user).';

--
-- Name: COLUMN erasure_requests.requested_by_api_key_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.erasure_requests.requested_by_api_key_id IS 'Who asked (API key).';

--
-- Name: COLUMN erasure_requests.requested_by_db_role; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.erasure_requests.requested_by_db_role IS 'The database login that asked (a DBA''s own role for the CLI).';

--
-- Name: COLUMN erasure_requests.requested_at; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.erasure_requests.requested_at IS 'When it was asked for.';

--
-- Name: COLUMN erasure_requests.started_at; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.erasure_requests.started_at IS 'When the worker last started on it.';

--
-- Name: COLUMN erasure_requests.completed_at; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.erasure_requests.completed_at IS 'When everything was erased.';

--
-- Name: COLUMN erasure_requests.attempts; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.erasure_requests.attempts IS 'How many times the worker started on it.';

--
-- Name: COLUMN erasure_requests.receipt; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.erasure_requests.receipt IS 'Rows erased or stripped, per table.';

--
-- Name: COLUMN erasure_requests.last_error; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.erasure_requests.last_error IS 'Why the last attempt failed, if it did.';

--
-- Name: request_erasure(uuid, text, text); Type: FUNCTION; Schema: app_public; Owner: -
--

CREATE FUNCTION app_public.request_erasure(site_id uuid, kind text, value text) RETURNS app_public.erasure_requests
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
declare
  v_normalized text;
  v_hash text;
  v_request app_public.erasure_requests;
begin
  perform app_private.assert_caller_role(request_erasure.site_id, 'admin', 'request_erasure', 'erasure_requests', request_erasure.kind);
  v_normalized := app_private.normalize_subject(request_erasure.kind, request_erasure.value);
  if not exists (select 1 from app_public.sites s where s.id = request_erasure.site_id) then
    raise exception using errcode = 'OMNSS', message = 'No such site.';
  end if;
  v_hash := app_private.hash_subject(request_erasure.site_id, request_erasure.kind, v_normalized);
  -- Asking again while one is under way is the same request.
  select * into v_request from app_public.erasure_requests r
   where r.site_id = request_erasure.site_id and r.subject_hash = v_hash and r.status in ('pending', 'running', 'failed');
  if v_request.id is not null then
    if v_request.status = 'failed' then
      -- Its job may have used up its attempts: asking again starts it afresh.
      perform graphile_worker.add_job('carry_out_erasure',
        pg_catalog.json_build_object('site_id', v_request.site_id, 'request_id', v_request.id),
        job_key => 'carry_out_erasure:' || v_request.id::text, max_attempts => 25);
    end if;
    return v_request;
  end if;
  insert into app_public.erasure_requests (site_id, subject_kind, subject_hash, requested_by_user_id, requested_by_api_key_id)
  values (request_erasure.site_id, request_erasure.kind, v_hash, app_hidden.current_user_id(), app_hidden.current_api_key_id())
  returning * into v_request;
  insert into app_private.erasure_subjects (site_id, request_id, normalized_value) values (v_request.site_id, v_request.id, v_normalized);
  perform graphile_worker.add_job('carry_out_erasure',
    pg_catalog.json_build_object('site_id', v_request.site_id, 'request_id', v_request.id),
    job_key => 'carry_out_erasure:' || v_request.id::text, max_attempts => 25);
  return v_request;
end;
$$;

--
-- Name: FUNCTION request_erasure(site_id uuid, kind text, value text); Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON FUNCTION app_public.request_erasure(site_id uuid, kind text, value text) IS 'Right to erasure (admin or owner): records the request and schedules its erasure, in one transaction. kind is visitor_id, email, phone or click_id. Asking again while it is under way returns the same request.';

--
-- Name: api_keys; Type: TABLE; Schema: app_public; Owner: -
--

CREATE TABLE app_public.api_keys (
    site_id uuid NOT NULL,
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    name text DEFAULT ''::text NOT NULL,
    role app_public.site_role NOT NULL,
    key_prefix text NOT NULL,
    created_by uuid,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    last_used_at timestamp with time zone,
    revoked_at timestamp with time zone,
    CONSTRAINT api_keys_name_length CHECK ((length(name) <= 200)),
    CONSTRAINT api_keys_role_not_owner CHECK ((role < 'owner'::app_public.site_role))
);

--
-- Name: TABLE api_keys; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON TABLE app_public.api_keys IS 'Site API keys for integrations. The key itself is never stored, only its SHA-256 (in app_private).';

--
-- Name: COLUMN api_keys.site_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.api_keys.site_id IS 'The site the key acts on.';

--
-- Name: COLUMN api_keys.id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.api_keys.id IS 'Identifier used to revoke the key.';

--
-- Name: COLUMN api_keys.name; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.api_keys.name IS 'What the key is for.';

--
-- Name: COLUMN api_keys.role; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.api_keys.role IS 'The role the key acts with (viewer, editor or admin; never owner).';

--
-- Name: COLUMN api_keys.key_prefix; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.api_keys.key_prefix IS 'The first characters of the key, to recognise it in lists.';

--
-- Name: COLUMN api_keys.created_by; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.api_keys.created_by IS 'The user who created the key, if any.';

--
-- Name: COLUMN api_keys.created_at; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.api_keys.created_at IS 'When the key was created.';

--
-- Name: COLUMN api_keys.last_used_at; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.api_keys.last_used_at IS 'When the key last authenticated a request (updated at most once a minute).';

--
-- Name: COLUMN api_keys.revoked_at; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.api_keys.revoked_at IS 'When the key was revoked; a revoked key authenticates nothing.';

--
-- Name: revoke_api_key(uuid); Type: FUNCTION; Schema: app_public; Owner: -
--

CREATE FUNCTION app_public.revoke_api_key(api_key_id uuid) RETURNS app_public.api_keys
    LANGUAGE plpgsql STRICT SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
declare
  v_key app_public.api_keys;
begin
  select * into v_key from app_public.api_keys k where k.id = revoke_api_key.api_key_id;
  perform app_hidden.assert_site_role(v_key.site_id, 'admin', 'revoke', 'api_keys', revoke_api_key.api_key_id::text);
  update app_public.api_keys k set revoked_at = coalesce(k.revoked_at, pg_catalog.now())
   where k.site_id = v_key.site_id and k.id = v_key.id
  returning * into v_key;
  return v_key;
end;
$$;

--
-- Name: FUNCTION revoke_api_key(api_key_id uuid); Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON FUNCTION app_public.revoke_api_key(api_key_id uuid) IS 'Revokes an API key at once (admin or owner). Revoking twice keeps the first time.';

--
-- Name: seal_call(uuid, uuid, numeric, text); Type: FUNCTION; Schema: app_public; Owner: -
--

CREATE FUNCTION app_public.seal_call(site_id uuid, call_id uuid, value numeric DEFAULT NULL::numeric, currency text DEFAULT NULL::text) RETURNS app_public.call_actions
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
declare
  v_locked record;
  v_site app_public.sites;
  v_conversation app_public.conversations;
  v_sale app_public.sales;
  v_action app_public.call_actions;
  v_action_id uuid := gen_random_uuid();
begin
  select * into v_locked from app_private.lock_call_for_action(seal_call.site_id, seal_call.call_id, 'seal');
  if (v_locked.standing).id is not null then
    raise exception using errcode = 'OMCAD', message = pg_catalog.format('The call is already %s; undo that first.',
      case (v_locked.standing).action when 'seal' then 'sealed' else 'junked' end);
  end if;
  select * into v_site from app_public.sites s where s.id = seal_call.site_id;
  insert into app_public.conversations as c (site_id, channel, call_id, session_id, status)
  values (seal_call.site_id, 'call', seal_call.call_id, (v_locked.call).session_id, 'qualified')
  on conflict on constraint conversations_call_key do update set status = 'qualified'
  returning * into v_conversation;
  -- The sale's external id is the action's: a call sealed again after an undo is a new sale.
  v_sale := app_private.record_sale(v_site, 'call:' || v_action_id::text, coalesce(seal_call.value, 0),
    pg_catalog.upper(coalesce(seal_call.currency, v_site.currency)), (v_locked.call).started_at,
    null, null, seal_call.call_id::text, null, null, null, null, v_conversation.id);
  insert into app_public.call_actions (site_id, id, call_id, action, value, currency, sale_id, actor_user_id, actor_api_key_id)
  values (seal_call.site_id, v_action_id, seal_call.call_id, 'seal', seal_call.value, v_sale.currency, v_sale.id,
          app_hidden.current_user_id(), app_hidden.current_api_key_id())
  returning * into v_action;
  return v_action;
end;
$$;

--
-- Name: FUNCTION seal_call(site_id uuid, call_id uuid, value numeric, currency text); Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON FUNCTION app_public.seal_call(site_id uuid, call_id uuid, value numeric, currency text) IS 'Marks a call a qualified lead (editor or above): its conversation and sale (value, default 0, in the site''s currency unless given) are recorded and the conversion queued for Google.';

--
-- Name: set_data_retention(uuid, integer); Type: FUNCTION; Schema: app_public; Owner: -
--

CREATE FUNCTION app_public.set_data_retention(site_id uuid, months integer) RETURNS app_public.sites
    LANGUAGE plpgsql STRICT SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
declare
  v_site app_public.sites;
begin
  perform app_private.assert_caller_role(set_data_retention.site_id, 'admin', 'set_data_retention', 'sites', set_data_retention.site_id::text);
  update app_public.sites s set data_retention_months = set_data_retention.months where s.id = set_data_retention.site_id
  returning * into v_site;
  if v_site.id is null then
    raise exception using errcode = 'OMNSS', message = 'No such site.';
  end if;
  return v_site;
end;
$$;

--
-- Name: FUNCTION set_data_retention(site_id uuid, months integer); Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON FUNCTION app_public.set_data_retention(site_id uuid, months integer) IS 'Shortens (or restores, up to 13) how many months the site''s events, sessions and call personal data are kept (admin or owner).';

--
-- Name: set_destination_status(uuid, text); Type: FUNCTION; Schema: app_public; Owner: -
--

CREATE FUNCTION app_public.set_destination_status(destination_id uuid, status text) RETURNS app_public.destinations
    LANGUAGE plpgsql STRICT SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
declare
  v_destination app_public.destinations;
begin
  select * into v_destination from app_public.destinations d where d.id = set_destination_status.destination_id;
  perform app_private.assert_caller_role(v_destination.site_id, 'admin', 'set_status', 'destinations', set_destination_status.destination_id::text);
  if set_destination_status.status not in ('active', 'paused') then
    raise exception using errcode = 'OMDST', message = 'A destination can be set active or paused.';
  end if;
  update app_public.destinations d set status = set_destination_status.status, status_reason = null
   where d.site_id = v_destination.site_id and d.id = v_destination.id
  returning * into v_destination;
  if v_destination.status = 'active' then
    perform app_private.enqueue_upload(v_destination.site_id, 'google');
  end if;
  return v_destination;
end;
$$;

--
-- Name: FUNCTION set_destination_status(destination_id uuid, status text); Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON FUNCTION app_public.set_destination_status(destination_id uuid, status text) IS 'Pauses or resumes a destination (admin or owner).';

--
-- Name: undo_call_action(uuid, uuid); Type: FUNCTION; Schema: app_public; Owner: -
--

CREATE FUNCTION app_public.undo_call_action(site_id uuid, call_id uuid) RETURNS app_public.call_actions
    LANGUAGE plpgsql STRICT SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
declare
  v_locked record;
  v_action app_public.call_actions;
begin
  select * into v_locked from app_private.lock_call_for_action(undo_call_action.site_id, undo_call_action.call_id, 'undo');
  if (v_locked.standing).id is null then
    raise exception using errcode = 'OMNUN', message = 'The call has no seal or junk to undo.';
  end if;
  if (v_locked.standing).action = 'seal' and (v_locked.standing).sale_id is not null then
    update app_public.sales s set status = 'cancelled'
     where s.site_id = undo_call_action.site_id and s.id = (v_locked.standing).sale_id;
    perform app_private.withdraw_conversion(undo_call_action.site_id, (v_locked.standing).sale_id);
  end if;
  update app_public.conversations c set status = 'open'
   where c.site_id = undo_call_action.site_id and c.call_id = undo_call_action.call_id;
  insert into app_public.call_actions (site_id, call_id, action, undoes_id, actor_user_id, actor_api_key_id)
  values (undo_call_action.site_id, undo_call_action.call_id, 'undo', (v_locked.standing).id,
          app_hidden.current_user_id(), app_hidden.current_api_key_id())
  returning * into v_action;
  return v_action;
end;
$$;

--
-- Name: FUNCTION undo_call_action(site_id uuid, call_id uuid); Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON FUNCTION app_public.undo_call_action(site_id uuid, call_id uuid) IS 'Reverts the call''s standing seal or junk (editor or above): an undelivered conversion is cancelled, a delivered one gets a retraction queued. nothing_to_undo when there is none.';

--
-- Name: update_current_user(text); Type: FUNCTION; Schema: app_public; Owner: -
--

CREATE FUNCTION app_public.update_current_user(display_name text) RETURNS app_public.users
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
declare
  v_user app_public.users;
begin
  update app_public.users u set display_name = update_current_user.display_name
   where u.id = app_hidden.current_user_id()
  returning * into v_user;
  return v_user;
end;
$$;

--
-- Name: FUNCTION update_current_user(display_name text); Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON FUNCTION app_public.update_current_user(display_name text) IS 'Changes the signed-in user''s display name.';

--
-- Name: update_offline_conversion_queue_attribution(uuid); Type: FUNCTION; Schema: app_public; Owner: -
--

CREATE FUNCTION app_public.update_offline_conversion_queue_attribution(site_id uuid) RETURNS integer
    LANGUAGE plpgsql STRICT SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
begin
  perform app_private.assert_caller_role(update_offline_conversion_queue_attribution.site_id, 'editor', 'refresh_attribution',
                                         'offline_conversion_queue', update_offline_conversion_queue_attribution.site_id::text);
  return app_private.refresh_conversion_attribution(update_offline_conversion_queue_attribution.site_id, false);
end;
$$;

--
-- Name: FUNCTION update_offline_conversion_queue_attribution(site_id uuid); Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON FUNCTION app_public.update_offline_conversion_queue_attribution(site_id uuid) IS 'Fills Google click ids that became known after the sale into the site''s conversions not yet delivered (editor or above); returns how many changed. The uploader does this itself for the conversions it is about to send.';

--
-- Name: update_site_settings(uuid, text, text, text[], text, bigint, integer, text, text); Type: FUNCTION; Schema: app_public; Owner: -
--

CREATE FUNCTION app_public.update_site_settings(site_id uuid, name text DEFAULT NULL::text, domain text DEFAULT NULL::text, allowed_origins text[] DEFAULT NULL::text[], consent_mode text DEFAULT NULL::text, monthly_event_quota bigint DEFAULT NULL::bigint, rate_limit_per_minute integer DEFAULT NULL::integer, timezone text DEFAULT NULL::text, currency text DEFAULT NULL::text) RETURNS app_public.sites
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
declare
  v_site app_public.sites;
begin
  perform app_hidden.assert_site_role(update_site_settings.site_id, 'admin', 'update', 'sites',
                                      update_site_settings.site_id::text);
  update app_public.sites s set
    name = coalesce(update_site_settings.name, s.name),
    domain = coalesce(pg_catalog.lower(update_site_settings.domain), s.domain),
    allowed_origins = coalesce(update_site_settings.allowed_origins, s.allowed_origins),
    consent_mode = coalesce(update_site_settings.consent_mode, s.consent_mode),
    monthly_event_quota = coalesce(update_site_settings.monthly_event_quota, s.monthly_event_quota),
    rate_limit_per_minute = coalesce(update_site_settings.rate_limit_per_minute, s.rate_limit_per_minute),
    timezone = coalesce(update_site_settings.timezone, s.timezone),
    currency = coalesce(update_site_settings.currency, s.currency)
  where s.id = update_site_settings.site_id
  returning * into v_site;
  return v_site;
end;
$$;

--
-- Name: FUNCTION update_site_settings(site_id uuid, name text, domain text, allowed_origins text[], consent_mode text, monthly_event_quota bigint, rate_limit_per_minute integer, timezone text, currency text); Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON FUNCTION app_public.update_site_settings(site_id uuid, name text, domain text, allowed_origins text[], consent_mode text, monthly_event_quota bigint, rate_limit_per_minute integer, timezone text, currency text) IS 'Changes a site''s settings (admin or owner). Arguments left null keep their value.';

--
-- Name: verify_audit_chain(uuid); Type: FUNCTION; Schema: app_public; Owner: -
--

CREATE FUNCTION app_public.verify_audit_chain(site_id uuid) RETURNS app_public.audit_chain_verification
    LANGUAGE plpgsql STABLE STRICT SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public', 'pg_temp'
    AS $$
declare
  v_entry app_public.audit_log;
  v_prev bytea;
  v_expected_seq bigint := 1;
  v_head app_private.audit_chain_heads;
begin
  -- Requests (running as the visitor role) verify only chains they administer; a DBA or a
  -- worker connecting as itself may verify any chain.
  if pg_catalog.current_setting('role', true) = 'opsmantik_visitor'
     and not (verify_audit_chain.site_id in (select app_hidden.current_user_site_ids('admin'))
              or app_hidden.current_user_is_platform_admin()) then
    perform app_hidden.raise_forbidden(verify_audit_chain.site_id, 'verify', 'audit_log', null);
  end if;
  for v_entry in select * from app_public.audit_log a where a.site_id = verify_audit_chain.site_id order by a.seq loop
    if v_entry.seq <> v_expected_seq then
      return row(false, v_expected_seq - 1, v_expected_seq, 'row missing from the chain')::app_public.audit_chain_verification;
    end if;
    if v_entry.prev_hash is distinct from v_prev then
      return row(false, v_expected_seq - 1, v_entry.seq, 'prev_hash does not match the previous row')::app_public.audit_chain_verification;
    end if;
    if v_entry.row_hash <> app_private.audit_row_hash(v_prev, v_entry) then
      return row(false, v_expected_seq - 1, v_entry.seq, 'row content does not match its hash')::app_public.audit_chain_verification;
    end if;
    v_prev := v_entry.row_hash;
    v_expected_seq := v_expected_seq + 1;
  end loop;
  -- The head records the last row written: rows beyond it were forged, rows short of it removed.
  select * into v_head from app_private.audit_chain_heads h where h.site_id = verify_audit_chain.site_id;
  if v_expected_seq - 1 > coalesce(v_head.last_seq, 0) then
    return row(false, coalesce(v_head.last_seq, 0), coalesce(v_head.last_seq, 0) + 1, 'rows beyond the recorded head of the chain')::app_public.audit_chain_verification;
  end if;
  if coalesce(v_head.last_seq, 0) <> v_expected_seq - 1 or v_head.last_hash is distinct from v_prev then
    return row(false, v_expected_seq - 1, v_expected_seq, 'rows missing from the end of the chain')::app_public.audit_chain_verification;
  end if;
  return row(true, v_expected_seq - 1, null::bigint, null::text)::app_public.audit_chain_verification;
end;
$$;

--
-- Name: FUNCTION verify_audit_chain(site_id uuid); Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON FUNCTION app_public.verify_audit_chain(site_id uuid) IS 'Re-hashes a site''s audit chain (admins of the site, or a DBA) and names the first row that was altered, removed or reordered.';

--
-- Name: api_key_hashes; Type: TABLE; Schema: app_private; Owner: -
--

CREATE TABLE app_private.api_key_hashes (
    site_id uuid NOT NULL,
    api_key_id uuid NOT NULL,
    key_hash bytea NOT NULL
);

--
-- Name: TABLE api_key_hashes; Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON TABLE app_private.api_key_hashes IS 'SHA-256 of each API key, kept apart from everything a client can read.';

--
-- Name: audit_chain_heads; Type: TABLE; Schema: app_private; Owner: -
--

CREATE TABLE app_private.audit_chain_heads (
    site_id uuid NOT NULL,
    last_seq bigint DEFAULT 0 NOT NULL,
    last_hash bytea
);

--
-- Name: TABLE audit_chain_heads; Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON TABLE app_private.audit_chain_heads IS 'The latest row of each site''s audit chain. Its row lock orders concurrent writers of one site, and it lets verification notice a removed tail.';

--
-- Name: bot_user_agents; Type: TABLE; Schema: app_private; Owner: -
--

CREATE TABLE app_private.bot_user_agents (
    pattern text NOT NULL
);

--
-- Name: TABLE bot_user_agents; Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON TABLE app_private.bot_user_agents IS 'Case-insensitive substrings that mark a user agent as a bot; their events are stored, not billed.';

--
-- Name: call_event_secrets; Type: TABLE; Schema: app_private; Owner: -
--

CREATE TABLE app_private.call_event_secrets (
    site_id uuid NOT NULL,
    current_secret text NOT NULL,
    previous_secret text,
    rotated_at timestamp with time zone DEFAULT now() NOT NULL
);

--
-- Name: TABLE call_event_secrets; Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON TABLE app_private.call_event_secrets IS 'HMAC secrets for signed call events. The previous secret stays valid until retired, so providers can switch without downtime.';

--
-- Name: daily_salts; Type: TABLE; Schema: app_private; Owner: -
--

CREATE TABLE app_private.daily_salts (
    day date NOT NULL,
    salt bytea DEFAULT public.gen_random_bytes(32) NOT NULL
);

--
-- Name: TABLE daily_salts; Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON TABLE app_private.daily_salts IS 'Daily salts for visitors without analytics consent and for client IPs. Deleted after 8 days, which makes old hashes unlinkable.';

--
-- Name: erasure_subjects; Type: TABLE; Schema: app_private; Owner: -
--

CREATE TABLE app_private.erasure_subjects (
    site_id uuid NOT NULL,
    request_id uuid NOT NULL,
    normalized_value text NOT NULL
);

--
-- Name: TABLE erasure_subjects; Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON TABLE app_private.erasure_subjects IS 'The subject of a pending erasure, deleted when it completes.';

--
-- Name: event_removals; Type: TABLE; Schema: app_private; Owner: -
--

CREATE TABLE app_private.event_removals (
    site_id uuid NOT NULL,
    period date NOT NULL,
    reason text NOT NULL,
    events bigint DEFAULT 0 NOT NULL,
    CONSTRAINT event_removals_reason CHECK ((reason = ANY (ARRAY['erasure'::text, 'retention'::text])))
);

--
-- Name: TABLE event_removals; Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON TABLE app_private.event_removals IS 'How many events of a site and month were deleted for privacy, and why (no personal data).';

--
-- Name: export_credentials; Type: TABLE; Schema: app_private; Owner: -
--

CREATE TABLE app_private.export_credentials (
    site_id uuid NOT NULL,
    username text NOT NULL,
    password_sha256 bytea NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL
);

--
-- Name: TABLE export_credentials; Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON TABLE app_private.export_credentials IS 'Who may fetch a site''s conversion CSV (Google scheduled imports): username and hashed password.';

--
-- Name: provider_credentials; Type: TABLE; Schema: app_private; Owner: -
--

CREATE TABLE app_private.provider_credentials (
    site_id uuid NOT NULL,
    destination_id uuid NOT NULL,
    key_id text NOT NULL,
    wrapped_key bytea NOT NULL,
    nonce bytea NOT NULL,
    ciphertext bytea NOT NULL,
    auth_tag bytea NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL
);

--
-- Name: TABLE provider_credentials; Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON TABLE app_private.provider_credentials IS 'Destinations'' OAuth refresh tokens, AES-256-GCM encrypted under a per-row data key that the VAULT_KEYS key key_id wraps. Ciphertext only.';

--
-- Name: quota_shards; Type: TABLE; Schema: app_private; Owner: -
--

CREATE TABLE app_private.quota_shards (
    site_id uuid NOT NULL,
    period date NOT NULL,
    shard smallint NOT NULL,
    remaining bigint NOT NULL,
    CONSTRAINT quota_shards_remaining CHECK ((remaining >= 0))
);

--
-- Name: TABLE quota_shards; Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON TABLE app_private.quota_shards IS 'Remaining billable events per site, month and shard; their sum is the quota left.';

--
-- Name: rate_counters; Type: TABLE; Schema: app_private; Owner: -
--

CREATE UNLOGGED TABLE app_private.rate_counters (
    site_id uuid NOT NULL,
    ip_hash bytea NOT NULL,
    window_start timestamp with time zone NOT NULL,
    slot smallint NOT NULL,
    hits integer NOT NULL
);

--
-- Name: TABLE rate_counters; Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON TABLE app_private.rate_counters IS 'Requests per site, hashed client IP and minute, spread over slots so one busy client does not serialise the site. Unlogged: losing it in a crash only resets limits.';

--
-- Name: sale_identifiers; Type: TABLE; Schema: app_private; Owner: -
--

CREATE TABLE app_private.sale_identifiers (
    site_id uuid NOT NULL,
    sale_id uuid NOT NULL,
    email_sha256 text,
    phone_sha256 text,
    CONSTRAINT sale_identifiers_email_hex CHECK ((email_sha256 ~ '^[0-9a-f]{64}$'::text)),
    CONSTRAINT sale_identifiers_phone_hex CHECK ((phone_sha256 ~ '^[0-9a-f]{64}$'::text))
);

--
-- Name: TABLE sale_identifiers; Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON TABLE app_private.sale_identifiers IS 'SHA-256 of the normalised email and phone of a sale''s customer (Google''s rules); never in clear, never exposed.';

--
-- Name: site_salts; Type: TABLE; Schema: app_private; Owner: -
--

CREATE TABLE app_private.site_salts (
    site_id uuid NOT NULL,
    salt bytea DEFAULT public.gen_random_bytes(32) NOT NULL
);

--
-- Name: TABLE site_salts; Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON TABLE app_private.site_salts IS 'Per-site secret salt for consent proofs (visitor ids are never stored with them).';

--
-- Name: worker_heartbeats; Type: TABLE; Schema: app_private; Owner: -
--

CREATE TABLE app_private.worker_heartbeats (
    worker_name text NOT NULL,
    beat_at timestamp with time zone DEFAULT now() NOT NULL
);

--
-- Name: TABLE worker_heartbeats; Type: COMMENT; Schema: app_private; Owner: -
--

COMMENT ON TABLE app_private.worker_heartbeats IS 'Last time each worker process completed a heartbeat job.';

--
-- Name: consents; Type: TABLE; Schema: app_public; Owner: -
--

CREATE TABLE app_public.consents (
    site_id uuid NOT NULL,
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    visitor_hash bytea NOT NULL,
    recorded_at timestamp with time zone DEFAULT now() NOT NULL,
    analytics_storage text NOT NULL,
    ad_storage text NOT NULL,
    ad_user_data text NOT NULL,
    ad_personalization text NOT NULL,
    CONSTRAINT consents_ad_personalization CHECK ((ad_personalization = ANY (ARRAY['granted'::text, 'denied'::text]))),
    CONSTRAINT consents_ad_storage CHECK ((ad_storage = ANY (ARRAY['granted'::text, 'denied'::text]))),
    CONSTRAINT consents_ad_user_data CHECK ((ad_user_data = ANY (ARRAY['granted'::text, 'denied'::text]))),
    CONSTRAINT consents_analytics_storage CHECK ((analytics_storage = ANY (ARRAY['granted'::text, 'denied'::text])))
);

--
-- Name: TABLE consents; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON TABLE app_public.consents IS 'Proof of consent: every choice a visitor made on the site''s banner, appended, never changed.';

--
-- Name: COLUMN consents.site_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.consents.site_id IS 'The site.';

--
-- Name: COLUMN consents.id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.consents.id IS 'Identifier.';

--
-- Name: COLUMN consents.visitor_hash; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.consents.visitor_hash IS 'HMAC of the visitor id with the site''s secret salt: proves whose choice it was without storing the id.';

--
-- Name: COLUMN consents.recorded_at; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.consents.recorded_at IS 'When the choice was made.';

--
-- Name: COLUMN consents.analytics_storage; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.consents.analytics_storage IS 'granted or denied.';

--
-- Name: COLUMN consents.ad_storage; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.consents.ad_storage IS 'granted or denied.';

--
-- Name: COLUMN consents.ad_user_data; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.consents.ad_user_data IS 'granted or denied.';

--
-- Name: COLUMN consents.ad_personalization; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.consents.ad_personalization IS 'granted or denied.';

--
-- Name: conversations; Type: TABLE; Schema: app_public; Owner: -
--

CREATE TABLE app_public.conversations (
    site_id uuid NOT NULL,
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    channel text NOT NULL,
    call_id uuid,
    session_id uuid,
    status text DEFAULT 'open'::text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT conversations_channel CHECK ((channel = ANY (ARRAY['call'::text, 'form'::text, 'chat'::text]))),
    CONSTRAINT conversations_status CHECK ((status = ANY (ARRAY['open'::text, 'qualified'::text, 'junk'::text])))
);

--
-- Name: TABLE conversations; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON TABLE app_public.conversations IS '@behavior +aggregates +aggregates:filterBy +aggregates:orderBy
A lead''s contact with the business: a call, a form or a chat. Calls get theirs when staff seal or junk them.';

--
-- Name: COLUMN conversations.site_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.conversations.site_id IS 'The site.';

--
-- Name: COLUMN conversations.id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.conversations.id IS 'Identifier.';

--
-- Name: COLUMN conversations.channel; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.conversations.channel IS 'call, form or chat.';

--
-- Name: COLUMN conversations.call_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.conversations.call_id IS 'The call, for channel call.';

--
-- Name: COLUMN conversations.session_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.conversations.session_id IS 'The website session that led to it, when known.';

--
-- Name: COLUMN conversations.status; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.conversations.status IS 'open, qualified (a real lead) or junk (spam, wrong number).';

--
-- Name: COLUMN conversations.created_at; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.conversations.created_at IS 'When it was recorded.';

--
-- Name: COLUMN conversations.updated_at; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.conversations.updated_at IS 'When its status last changed.';

--
-- Name: events; Type: TABLE; Schema: app_public; Owner: -
--

CREATE TABLE app_public.events (
    site_id uuid NOT NULL,
    id uuid NOT NULL,
    occurred_at timestamp with time zone NOT NULL,
    received_at timestamp with time zone DEFAULT now() NOT NULL,
    type text NOT NULL,
    visitor_key text NOT NULL,
    visitor_id text,
    session_id uuid,
    url text,
    referrer text,
    title text,
    props jsonb DEFAULT '{}'::jsonb NOT NULL,
    device jsonb,
    consent jsonb NOT NULL,
    is_bot boolean DEFAULT false NOT NULL
)
PARTITION BY RANGE (occurred_at);

--
-- Name: TABLE events; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON TABLE app_public.events IS '@behavior +aggregates +aggregates:filterBy +aggregates:orderBy
Tracker events as stored after consent-based minimisation.';

--
-- Name: COLUMN events.site_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.events.site_id IS 'The site.';

--
-- Name: COLUMN events.id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.events.id IS 'The event id the tracker sent (also the idempotency key).';

--
-- Name: COLUMN events.occurred_at; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.events.occurred_at IS 'When the event happened, as the tracker reported (within 7 days before receipt).';

--
-- Name: COLUMN events.received_at; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.events.received_at IS 'When we accepted it.';

--
-- Name: COLUMN events.type; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.events.type IS 'pageview, or the site''s own event name.';

--
-- Name: COLUMN events.visitor_key; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.events.visitor_key IS 'The visitor as sessions know it: the tracker''s id with analytics consent, otherwise a salted hash that changes daily.';

--
-- Name: COLUMN events.visitor_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.events.visitor_id IS 'The tracker''s visitor id, kept only with analytics consent.';

--
-- Name: COLUMN events.session_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.events.session_id IS 'The session the sessionizer placed the event in (null for bots).';

--
-- Name: COLUMN events.url; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.events.url IS 'Page URL.';

--
-- Name: COLUMN events.referrer; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.events.referrer IS 'Referrer URL, if any.';

--
-- Name: COLUMN events.title; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.events.title IS 'Page title.';

--
-- Name: COLUMN events.props; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.events.props IS 'The site''s own properties (an object, at most 4 KiB).';

--
-- Name: COLUMN events.device; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.events.device IS 'Screen, language, time zone, fingerprint: kept only with analytics consent.';

--
-- Name: COLUMN events.consent; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.events.consent IS 'The effective Consent Mode v2 signals for this event.';

--
-- Name: COLUMN events.is_bot; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.events.is_bot IS 'Sent by a known bot: stored, not billed, not sessionized.';

--
-- Name: ingest_idempotency; Type: TABLE; Schema: app_public; Owner: -
--

CREATE TABLE app_public.ingest_idempotency (
    site_id uuid NOT NULL,
    idempotency_key uuid NOT NULL,
    occurred_at timestamp with time zone NOT NULL,
    received_at timestamp with time zone DEFAULT now() NOT NULL,
    billable boolean NOT NULL,
    reason text,
    CONSTRAINT ingest_idempotency_reason CHECK (((billable AND (reason IS NULL)) OR ((NOT billable) AND (reason IS NOT NULL))))
)
PARTITION BY RANGE (occurred_at);

--
-- Name: TABLE ingest_idempotency; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON TABLE app_public.ingest_idempotency IS '@behavior +aggregates +aggregates:filterBy +aggregates:orderBy
The idempotency ledger: one row per accepted tracker event, written in the same transaction as the event. Invoices count its billable rows.';

--
-- Name: COLUMN ingest_idempotency.site_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.ingest_idempotency.site_id IS 'The site billed.';

--
-- Name: COLUMN ingest_idempotency.idempotency_key; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.ingest_idempotency.idempotency_key IS 'The event id the tracker sent; a second copy is a duplicate, not billed.';

--
-- Name: COLUMN ingest_idempotency.occurred_at; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.ingest_idempotency.occurred_at IS 'When the event happened (its ts); decides the billing period.';

--
-- Name: COLUMN ingest_idempotency.received_at; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.ingest_idempotency.received_at IS 'When we accepted it.';

--
-- Name: COLUMN ingest_idempotency.billable; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.ingest_idempotency.billable IS 'False for events we store but do not bill (see reason).';

--
-- Name: COLUMN ingest_idempotency.reason; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.ingest_idempotency.reason IS 'Why a row is not billable: bot.';

--
-- Name: watchtower_checks; Type: TABLE; Schema: app_public; Owner: -
--

CREATE TABLE app_public.watchtower_checks (
    site_id uuid NOT NULL,
    check_name text NOT NULL,
    status text NOT NULL,
    detail jsonb DEFAULT '{}'::jsonb NOT NULL,
    checked_at timestamp with time zone DEFAULT now() NOT NULL,
    status_since timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT watchtower_checks_status CHECK ((status = ANY (ARRAY['ok'::text, 'warn'::text, 'fail'::text])))
);

--
-- Name: TABLE watchtower_checks; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON TABLE app_public.watchtower_checks IS '@behavior -insert -update -delete
Watchtower: the latest verdict of each check on a site (ok, warn, fail), refreshed every 5 minutes.';

--
-- Name: COLUMN watchtower_checks.site_id; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.watchtower_checks.site_id IS 'The site.';

--
-- Name: COLUMN watchtower_checks.check_name; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.watchtower_checks.check_name IS 'destination_credentials, delivery_lag, event_quota or erasure_requests.';

--
-- Name: COLUMN watchtower_checks.status; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.watchtower_checks.status IS 'ok, warn or fail.';

--
-- Name: COLUMN watchtower_checks.detail; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.watchtower_checks.detail IS 'What the check saw (figures and codes; never personal data).';

--
-- Name: COLUMN watchtower_checks.checked_at; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.watchtower_checks.checked_at IS 'When the check last ran.';

--
-- Name: COLUMN watchtower_checks.status_since; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON COLUMN app_public.watchtower_checks.status_since IS 'Since when the status has been what it is.';

--
-- Name: api_key_hashes api_key_hashes_key_hash_key; Type: CONSTRAINT; Schema: app_private; Owner: -
--

ALTER TABLE ONLY app_private.api_key_hashes
    ADD CONSTRAINT api_key_hashes_key_hash_key UNIQUE (key_hash);

--
-- Name: api_key_hashes api_key_hashes_pkey; Type: CONSTRAINT; Schema: app_private; Owner: -
--

ALTER TABLE ONLY app_private.api_key_hashes
    ADD CONSTRAINT api_key_hashes_pkey PRIMARY KEY (site_id, api_key_id);

--
-- Name: audit_chain_heads audit_chain_heads_pkey; Type: CONSTRAINT; Schema: app_private; Owner: -
--

ALTER TABLE ONLY app_private.audit_chain_heads
    ADD CONSTRAINT audit_chain_heads_pkey PRIMARY KEY (site_id);

--
-- Name: bot_user_agents bot_user_agents_pkey; Type: CONSTRAINT; Schema: app_private; Owner: -
--

ALTER TABLE ONLY app_private.bot_user_agents
    ADD CONSTRAINT bot_user_agents_pkey PRIMARY KEY (pattern);

--
-- Name: call_event_secrets call_event_secrets_pkey; Type: CONSTRAINT; Schema: app_private; Owner: -
--

ALTER TABLE ONLY app_private.call_event_secrets
    ADD CONSTRAINT call_event_secrets_pkey PRIMARY KEY (site_id);

--
-- Name: daily_salts daily_salts_pkey; Type: CONSTRAINT; Schema: app_private; Owner: -
--

ALTER TABLE ONLY app_private.daily_salts
    ADD CONSTRAINT daily_salts_pkey PRIMARY KEY (day);

--
-- Name: erasure_subjects erasure_subjects_pkey; Type: CONSTRAINT; Schema: app_private; Owner: -
--

ALTER TABLE ONLY app_private.erasure_subjects
    ADD CONSTRAINT erasure_subjects_pkey PRIMARY KEY (site_id, request_id);

--
-- Name: event_removals event_removals_pkey; Type: CONSTRAINT; Schema: app_private; Owner: -
--

ALTER TABLE ONLY app_private.event_removals
    ADD CONSTRAINT event_removals_pkey PRIMARY KEY (site_id, period, reason);

--
-- Name: export_credentials export_credentials_pkey; Type: CONSTRAINT; Schema: app_private; Owner: -
--

ALTER TABLE ONLY app_private.export_credentials
    ADD CONSTRAINT export_credentials_pkey PRIMARY KEY (site_id, username);

--
-- Name: export_credentials export_credentials_username_key; Type: CONSTRAINT; Schema: app_private; Owner: -
--

ALTER TABLE ONLY app_private.export_credentials
    ADD CONSTRAINT export_credentials_username_key UNIQUE (username);

--
-- Name: provider_credentials provider_credentials_pkey; Type: CONSTRAINT; Schema: app_private; Owner: -
--

ALTER TABLE ONLY app_private.provider_credentials
    ADD CONSTRAINT provider_credentials_pkey PRIMARY KEY (site_id, destination_id);

--
-- Name: quota_shards quota_shards_pkey; Type: CONSTRAINT; Schema: app_private; Owner: -
--

ALTER TABLE ONLY app_private.quota_shards
    ADD CONSTRAINT quota_shards_pkey PRIMARY KEY (site_id, period, shard);

--
-- Name: rate_counters rate_counters_pkey; Type: CONSTRAINT; Schema: app_private; Owner: -
--

ALTER TABLE ONLY app_private.rate_counters
    ADD CONSTRAINT rate_counters_pkey PRIMARY KEY (site_id, ip_hash, window_start, slot);

--
-- Name: sale_identifiers sale_identifiers_pkey; Type: CONSTRAINT; Schema: app_private; Owner: -
--

ALTER TABLE ONLY app_private.sale_identifiers
    ADD CONSTRAINT sale_identifiers_pkey PRIMARY KEY (site_id, sale_id);

--
-- Name: site_salts site_salts_pkey; Type: CONSTRAINT; Schema: app_private; Owner: -
--

ALTER TABLE ONLY app_private.site_salts
    ADD CONSTRAINT site_salts_pkey PRIMARY KEY (site_id);

--
-- Name: worker_heartbeats worker_heartbeats_pkey; Type: CONSTRAINT; Schema: app_private; Owner: -
--

ALTER TABLE ONLY app_private.worker_heartbeats
    ADD CONSTRAINT worker_heartbeats_pkey PRIMARY KEY (worker_name);

--
-- Name: api_keys api_keys_id_key; Type: CONSTRAINT; Schema: app_public; Owner: -
--

ALTER TABLE ONLY app_public.api_keys
    ADD CONSTRAINT api_keys_id_key UNIQUE (id);

--
-- Name: api_keys api_keys_pkey; Type: CONSTRAINT; Schema: app_public; Owner: -
--

ALTER TABLE ONLY app_public.api_keys
    ADD CONSTRAINT api_keys_pkey PRIMARY KEY (site_id, id);

--
-- Name: audit_log audit_log_pkey; Type: CONSTRAINT; Schema: app_public; Owner: -
--

ALTER TABLE ONLY app_public.audit_log
    ADD CONSTRAINT audit_log_pkey PRIMARY KEY (site_id, seq);

--
-- Name: call_actions call_actions_pkey; Type: CONSTRAINT; Schema: app_public; Owner: -
--

ALTER TABLE ONLY app_public.call_actions
    ADD CONSTRAINT call_actions_pkey PRIMARY KEY (site_id, id);

--
-- Name: call_actions call_actions_undone_once; Type: CONSTRAINT; Schema: app_public; Owner: -
--

ALTER TABLE ONLY app_public.call_actions
    ADD CONSTRAINT call_actions_undone_once UNIQUE (site_id, undoes_id);

--
-- Name: CONSTRAINT call_actions_undone_once ON call_actions; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON CONSTRAINT call_actions_undone_once ON app_public.call_actions IS '@behavior -single';

--
-- Name: calls calls_pkey; Type: CONSTRAINT; Schema: app_public; Owner: -
--

ALTER TABLE ONLY app_public.calls
    ADD CONSTRAINT calls_pkey PRIMARY KEY (site_id, id);

--
-- Name: calls calls_site_call_id_key; Type: CONSTRAINT; Schema: app_public; Owner: -
--

ALTER TABLE ONLY app_public.calls
    ADD CONSTRAINT calls_site_call_id_key UNIQUE (site_id, call_id);

--
-- Name: consents consents_pkey; Type: CONSTRAINT; Schema: app_public; Owner: -
--

ALTER TABLE ONLY app_public.consents
    ADD CONSTRAINT consents_pkey PRIMARY KEY (site_id, id);

--
-- Name: conversations conversations_call_key; Type: CONSTRAINT; Schema: app_public; Owner: -
--

ALTER TABLE ONLY app_public.conversations
    ADD CONSTRAINT conversations_call_key UNIQUE (site_id, call_id);

--
-- Name: conversations conversations_pkey; Type: CONSTRAINT; Schema: app_public; Owner: -
--

ALTER TABLE ONLY app_public.conversations
    ADD CONSTRAINT conversations_pkey PRIMARY KEY (site_id, id);

--
-- Name: destinations destinations_id_key; Type: CONSTRAINT; Schema: app_public; Owner: -
--

ALTER TABLE ONLY app_public.destinations
    ADD CONSTRAINT destinations_id_key UNIQUE (id);

--
-- Name: destinations destinations_pkey; Type: CONSTRAINT; Schema: app_public; Owner: -
--

ALTER TABLE ONLY app_public.destinations
    ADD CONSTRAINT destinations_pkey PRIMARY KEY (site_id, id);

--
-- Name: erasure_requests erasure_requests_pkey; Type: CONSTRAINT; Schema: app_public; Owner: -
--

ALTER TABLE ONLY app_public.erasure_requests
    ADD CONSTRAINT erasure_requests_pkey PRIMARY KEY (site_id, id);

--
-- Name: events events_pkey; Type: CONSTRAINT; Schema: app_public; Owner: -
--

ALTER TABLE ONLY app_public.events
    ADD CONSTRAINT events_pkey PRIMARY KEY (site_id, id, occurred_at);

--
-- Name: ingest_idempotency ingest_idempotency_pkey; Type: CONSTRAINT; Schema: app_public; Owner: -
--

ALTER TABLE ONLY app_public.ingest_idempotency
    ADD CONSTRAINT ingest_idempotency_pkey PRIMARY KEY (site_id, idempotency_key, occurred_at);

--
-- Name: invoice_snapshots invoice_snapshots_pkey; Type: CONSTRAINT; Schema: app_public; Owner: -
--

ALTER TABLE ONLY app_public.invoice_snapshots
    ADD CONSTRAINT invoice_snapshots_pkey PRIMARY KEY (site_id, period);

--
-- Name: offline_conversion_queue offline_conversion_queue_once; Type: CONSTRAINT; Schema: app_public; Owner: -
--

ALTER TABLE ONLY app_public.offline_conversion_queue
    ADD CONSTRAINT offline_conversion_queue_once UNIQUE (site_id, sale_id, provider, kind);

--
-- Name: offline_conversion_queue offline_conversion_queue_pkey; Type: CONSTRAINT; Schema: app_public; Owner: -
--

ALTER TABLE ONLY app_public.offline_conversion_queue
    ADD CONSTRAINT offline_conversion_queue_pkey PRIMARY KEY (site_id, id);

--
-- Name: sales sales_external_id_key; Type: CONSTRAINT; Schema: app_public; Owner: -
--

ALTER TABLE ONLY app_public.sales
    ADD CONSTRAINT sales_external_id_key UNIQUE (site_id, external_id);

--
-- Name: sales sales_pkey; Type: CONSTRAINT; Schema: app_public; Owner: -
--

ALTER TABLE ONLY app_public.sales
    ADD CONSTRAINT sales_pkey PRIMARY KEY (site_id, id);

--
-- Name: sessions sessions_pkey; Type: CONSTRAINT; Schema: app_public; Owner: -
--

ALTER TABLE ONLY app_public.sessions
    ADD CONSTRAINT sessions_pkey PRIMARY KEY (site_id, id, started_at);

--
-- Name: site_members site_members_pkey; Type: CONSTRAINT; Schema: app_public; Owner: -
--

ALTER TABLE ONLY app_public.site_members
    ADD CONSTRAINT site_members_pkey PRIMARY KEY (site_id, user_id);

--
-- Name: sites sites_pkey; Type: CONSTRAINT; Schema: app_public; Owner: -
--

ALTER TABLE ONLY app_public.sites
    ADD CONSTRAINT sites_pkey PRIMARY KEY (id);

--
-- Name: sites sites_public_key_key; Type: CONSTRAINT; Schema: app_public; Owner: -
--

ALTER TABLE ONLY app_public.sites
    ADD CONSTRAINT sites_public_key_key UNIQUE (public_key);

--
-- Name: users users_email_key; Type: CONSTRAINT; Schema: app_public; Owner: -
--

ALTER TABLE ONLY app_public.users
    ADD CONSTRAINT users_email_key UNIQUE (email);

--
-- Name: users users_pkey; Type: CONSTRAINT; Schema: app_public; Owner: -
--

ALTER TABLE ONLY app_public.users
    ADD CONSTRAINT users_pkey PRIMARY KEY (id);

--
-- Name: watchtower_checks watchtower_checks_pkey; Type: CONSTRAINT; Schema: app_public; Owner: -
--

ALTER TABLE ONLY app_public.watchtower_checks
    ADD CONSTRAINT watchtower_checks_pkey PRIMARY KEY (site_id, check_name);

--
-- Name: provider_credentials_key_idx; Type: INDEX; Schema: app_private; Owner: -
--

CREATE INDEX provider_credentials_key_idx ON app_private.provider_credentials USING btree (key_id);

--
-- Name: sale_identifiers_email_idx; Type: INDEX; Schema: app_private; Owner: -
--

CREATE INDEX sale_identifiers_email_idx ON app_private.sale_identifiers USING btree (site_id, email_sha256) WHERE (email_sha256 IS NOT NULL);

--
-- Name: sale_identifiers_phone_idx; Type: INDEX; Schema: app_private; Owner: -
--

CREATE INDEX sale_identifiers_phone_idx ON app_private.sale_identifiers USING btree (site_id, phone_sha256) WHERE (phone_sha256 IS NOT NULL);

--
-- Name: api_keys_created_by_idx; Type: INDEX; Schema: app_public; Owner: -
--

CREATE INDEX api_keys_created_by_idx ON app_public.api_keys USING btree (created_by);

--
-- Name: call_actions_call_idx; Type: INDEX; Schema: app_public; Owner: -
--

CREATE INDEX call_actions_call_idx ON app_public.call_actions USING btree (site_id, call_id, created_at);

--
-- Name: consents_visitor_idx; Type: INDEX; Schema: app_public; Owner: -
--

CREATE INDEX consents_visitor_idx ON app_public.consents USING btree (site_id, visitor_hash, recorded_at DESC);

--
-- Name: conversations_session_idx; Type: INDEX; Schema: app_public; Owner: -
--

CREATE INDEX conversations_session_idx ON app_public.conversations USING btree (site_id, session_id);

--
-- Name: destinations_one_live_per_site; Type: INDEX; Schema: app_public; Owner: -
--

CREATE UNIQUE INDEX destinations_one_live_per_site ON app_public.destinations USING btree (site_id) WHERE (status <> 'paused'::text);

--
-- Name: events_session_idx; Type: INDEX; Schema: app_public; Owner: -
--

CREATE INDEX events_session_idx ON ONLY app_public.events USING btree (site_id, session_id);

--
-- Name: events_visitor_idx; Type: INDEX; Schema: app_public; Owner: -
--

CREATE INDEX events_visitor_idx ON ONLY app_public.events USING btree (site_id, visitor_key, occurred_at, id);

--
-- Name: offline_conversion_queue_sent_idx; Type: INDEX; Schema: app_public; Owner: -
--

CREATE INDEX offline_conversion_queue_sent_idx ON app_public.offline_conversion_queue USING btree (site_id, request_id) INCLUDE (sent_at) WHERE (stage = 'sent'::text);

--
-- Name: offline_conversion_queue_site_due_idx; Type: INDEX; Schema: app_public; Owner: -
--

CREATE INDEX offline_conversion_queue_site_due_idx ON app_public.offline_conversion_queue USING btree (site_id, retry_at, created_at, id) WHERE (stage = 'open'::text);

--
-- Name: sales_call_idx; Type: INDEX; Schema: app_public; Owner: -
--

CREATE INDEX sales_call_idx ON app_public.sales USING btree (site_id, call_id);

--
-- Name: sales_conversation_idx; Type: INDEX; Schema: app_public; Owner: -
--

CREATE INDEX sales_conversation_idx ON app_public.sales USING btree (site_id, conversation_id);

--
-- Name: sales_session_idx; Type: INDEX; Schema: app_public; Owner: -
--

CREATE INDEX sales_session_idx ON app_public.sales USING btree (site_id, session_id);

--
-- Name: sessions_click_id_idx; Type: INDEX; Schema: app_public; Owner: -
--

CREATE INDEX sessions_click_id_idx ON ONLY app_public.sessions USING btree (site_id, click_id) WHERE (click_id IS NOT NULL);

--
-- Name: sessions_visitor_idx; Type: INDEX; Schema: app_public; Owner: -
--

CREATE INDEX sessions_visitor_idx ON ONLY app_public.sessions USING btree (site_id, visitor_key, started_at);

--
-- Name: site_members_site_id_role_idx; Type: INDEX; Schema: app_public; Owner: -
--

CREATE INDEX site_members_site_id_role_idx ON app_public.site_members USING btree (site_id, role);

--
-- Name: site_members_user_id_idx; Type: INDEX; Schema: app_public; Owner: -
--

CREATE INDEX site_members_user_id_idx ON app_public.site_members USING btree (user_id);

--
-- Name: sites_allowed_origins_idx; Type: INDEX; Schema: app_public; Owner: -
--

CREATE INDEX sites_allowed_origins_idx ON app_public.sites USING gin (allowed_origins);

--
-- Name: call_event_secrets _500_audit; Type: TRIGGER; Schema: app_private; Owner: -
--

CREATE TRIGGER _500_audit AFTER INSERT OR DELETE OR UPDATE ON app_private.call_event_secrets FOR EACH ROW EXECUTE FUNCTION app_private.tg__audit('site_id', 'site_id', 'current_secret', 'previous_secret');

--
-- Name: export_credentials _500_audit; Type: TRIGGER; Schema: app_private; Owner: -
--

CREATE TRIGGER _500_audit AFTER INSERT OR DELETE OR UPDATE ON app_private.export_credentials FOR EACH ROW EXECUTE FUNCTION app_private.tg__audit('site_id', 'username', 'password_sha256');

--
-- Name: provider_credentials _500_audit; Type: TRIGGER; Schema: app_private; Owner: -
--

CREATE TRIGGER _500_audit AFTER INSERT OR DELETE OR UPDATE ON app_private.provider_credentials FOR EACH ROW EXECUTE FUNCTION app_private.tg__audit('site_id', 'destination_id', 'wrapped_key', 'nonce', 'ciphertext', 'auth_tag');

--
-- Name: offline_conversion_queue _050_queue_destination; Type: TRIGGER; Schema: app_public; Owner: -
--

CREATE TRIGGER _050_queue_destination BEFORE INSERT ON app_public.offline_conversion_queue FOR EACH ROW WHEN ((new.destination_id IS NULL)) EXECUTE FUNCTION app_private.tg_offline_conversion_queue__destination();

--
-- Name: audit_log _100_append_only; Type: TRIGGER; Schema: app_public; Owner: -
--

CREATE TRIGGER _100_append_only BEFORE DELETE OR UPDATE ON app_public.audit_log FOR EACH ROW EXECUTE FUNCTION app_private.tg__refuse_change();

--
-- Name: call_actions _100_append_only; Type: TRIGGER; Schema: app_public; Owner: -
--

CREATE TRIGGER _100_append_only BEFORE UPDATE ON app_public.call_actions FOR EACH ROW EXECUTE FUNCTION app_private.tg__refuse_change();

--
-- Name: audit_log _100_append_only_truncate; Type: TRIGGER; Schema: app_public; Owner: -
--

CREATE TRIGGER _100_append_only_truncate BEFORE TRUNCATE ON app_public.audit_log FOR EACH STATEMENT EXECUTE FUNCTION app_private.tg__refuse_change();

--
-- Name: invoice_snapshots _100_immutable; Type: TRIGGER; Schema: app_public; Owner: -
--

CREATE TRIGGER _100_immutable BEFORE DELETE OR UPDATE ON app_public.invoice_snapshots FOR EACH ROW EXECUTE FUNCTION app_private.tg__refuse_change();

--
-- Name: invoice_snapshots _100_immutable_truncate; Type: TRIGGER; Schema: app_public; Owner: -
--

CREATE TRIGGER _100_immutable_truncate BEFORE TRUNCATE ON app_public.invoice_snapshots FOR EACH STATEMENT EXECUTE FUNCTION app_private.tg__refuse_change();

--
-- Name: conversations _100_touch_updated_at; Type: TRIGGER; Schema: app_public; Owner: -
--

CREATE TRIGGER _100_touch_updated_at BEFORE UPDATE ON app_public.conversations FOR EACH ROW EXECUTE FUNCTION app_private.tg__touch_updated_at();

--
-- Name: destinations _100_touch_updated_at; Type: TRIGGER; Schema: app_public; Owner: -
--

CREATE TRIGGER _100_touch_updated_at BEFORE UPDATE ON app_public.destinations FOR EACH ROW EXECUTE FUNCTION app_private.tg__touch_updated_at();

--
-- Name: offline_conversion_queue _100_touch_updated_at; Type: TRIGGER; Schema: app_public; Owner: -
--

CREATE TRIGGER _100_touch_updated_at BEFORE UPDATE ON app_public.offline_conversion_queue FOR EACH ROW WHEN ((NOT (new.updated_at IS DISTINCT FROM old.updated_at))) EXECUTE FUNCTION app_private.tg__touch_updated_at();

--
-- Name: sites _100_touch_updated_at; Type: TRIGGER; Schema: app_public; Owner: -
--

CREATE TRIGGER _100_touch_updated_at BEFORE UPDATE ON app_public.sites FOR EACH ROW EXECUTE FUNCTION app_private.tg__touch_updated_at();

--
-- Name: users _100_touch_updated_at; Type: TRIGGER; Schema: app_public; Owner: -
--

CREATE TRIGGER _100_touch_updated_at BEFORE UPDATE ON app_public.users FOR EACH ROW EXECUTE FUNCTION app_private.tg__touch_updated_at();

--
-- Name: offline_conversion_queue _200_forget_erased_order_id; Type: TRIGGER; Schema: app_public; Owner: -
--

CREATE TRIGGER _200_forget_erased_order_id BEFORE UPDATE OF status ON app_public.offline_conversion_queue FOR EACH ROW WHEN (((new.kind = 'retraction'::text) AND (new.status = ANY (ARRAY['accepted'::text, 'failed'::text, 'cancelled'::text])) AND (new.order_id IS DISTINCT FROM ('erased:'::text || (new.sale_id)::text)))) EXECUTE FUNCTION app_private.tg_offline_conversion_queue__forget_erased_order_id();

--
-- Name: sites _200_issue_call_event_secret; Type: TRIGGER; Schema: app_public; Owner: -
--

CREATE TRIGGER _200_issue_call_event_secret AFTER INSERT ON app_public.sites FOR EACH ROW EXECUTE FUNCTION app_private.tg_sites__issue_call_event_secret();

--
-- Name: sites _210_issue_salt; Type: TRIGGER; Schema: app_public; Owner: -
--

CREATE TRIGGER _210_issue_salt AFTER INSERT ON app_public.sites FOR EACH ROW EXECUTE FUNCTION app_private.tg_sites__issue_salt();

--
-- Name: sites _300_apply_quota_change; Type: TRIGGER; Schema: app_public; Owner: -
--

CREATE TRIGGER _300_apply_quota_change AFTER UPDATE OF monthly_event_quota ON app_public.sites FOR EACH ROW WHEN (((new.monthly_event_quota IS NOT NULL) AND (new.monthly_event_quota IS DISTINCT FROM old.monthly_event_quota))) EXECUTE FUNCTION app_private.tg_sites__apply_quota_change();

--
-- Name: api_keys _500_audit; Type: TRIGGER; Schema: app_public; Owner: -
--

CREATE TRIGGER _500_audit AFTER INSERT OR DELETE OR UPDATE ON app_public.api_keys FOR EACH ROW EXECUTE FUNCTION app_private.tg__audit('site_id', 'id', '-last_used_at');

--
-- Name: call_actions _500_audit; Type: TRIGGER; Schema: app_public; Owner: -
--

CREATE TRIGGER _500_audit AFTER INSERT ON app_public.call_actions FOR EACH ROW EXECUTE FUNCTION app_private.tg__audit('site_id', 'id');

--
-- Name: conversations _500_audit; Type: TRIGGER; Schema: app_public; Owner: -
--

CREATE TRIGGER _500_audit AFTER INSERT OR UPDATE ON app_public.conversations FOR EACH ROW EXECUTE FUNCTION app_private.tg__audit('site_id', 'id', '-updated_at');

--
-- Name: destinations _500_audit; Type: TRIGGER; Schema: app_public; Owner: -
--

CREATE TRIGGER _500_audit AFTER INSERT OR DELETE OR UPDATE ON app_public.destinations FOR EACH ROW EXECUTE FUNCTION app_private.tg__audit('site_id', 'id', '-updated_at');

--
-- Name: erasure_requests _500_audit; Type: TRIGGER; Schema: app_public; Owner: -
--

CREATE TRIGGER _500_audit AFTER INSERT OR UPDATE ON app_public.erasure_requests FOR EACH ROW EXECUTE FUNCTION app_private.tg__audit('site_id', 'id');

--
-- Name: invoice_snapshots _500_audit; Type: TRIGGER; Schema: app_public; Owner: -
--

CREATE TRIGGER _500_audit AFTER INSERT ON app_public.invoice_snapshots FOR EACH ROW EXECUTE FUNCTION app_private.tg__audit('site_id', 'period');

--
-- Name: sales _500_audit; Type: TRIGGER; Schema: app_public; Owner: -
--

CREATE TRIGGER _500_audit AFTER INSERT OR DELETE OR UPDATE ON app_public.sales FOR EACH ROW EXECUTE FUNCTION app_private.tg__audit('site_id', 'id', '-external_id', '-visitor_id', '-gclid', '-click_id');

--
-- Name: site_members _500_audit; Type: TRIGGER; Schema: app_public; Owner: -
--

CREATE TRIGGER _500_audit AFTER INSERT OR DELETE OR UPDATE ON app_public.site_members FOR EACH ROW EXECUTE FUNCTION app_private.tg__audit('site_id', 'user_id');

--
-- Name: sites _500_audit; Type: TRIGGER; Schema: app_public; Owner: -
--

CREATE TRIGGER _500_audit AFTER INSERT OR DELETE OR UPDATE ON app_public.sites FOR EACH ROW EXECUTE FUNCTION app_private.tg__audit('id', 'id', '-updated_at');

--
-- Name: users _500_audit; Type: TRIGGER; Schema: app_public; Owner: -
--

CREATE TRIGGER _500_audit AFTER UPDATE OF is_platform_admin ON app_public.users FOR EACH ROW EXECUTE FUNCTION app_private.tg__audit('no_site', 'id', 'email', 'display_name', '-created_at', '-updated_at');

--
-- Name: sites _900_forget_tracking; Type: TRIGGER; Schema: app_public; Owner: -
--

CREATE TRIGGER _900_forget_tracking AFTER DELETE ON app_public.sites FOR EACH ROW EXECUTE FUNCTION app_private.tg__forget_site_tracking();

--
-- Name: site_members _900_keep_an_owner; Type: TRIGGER; Schema: app_public; Owner: -
--

CREATE TRIGGER _900_keep_an_owner AFTER DELETE OR UPDATE ON app_public.site_members FOR EACH ROW EXECUTE FUNCTION app_private.tg_site_members__keep_an_owner();

--
-- Name: api_key_hashes api_key_hashes_site_id_api_key_id_fkey; Type: FK CONSTRAINT; Schema: app_private; Owner: -
--

ALTER TABLE ONLY app_private.api_key_hashes
    ADD CONSTRAINT api_key_hashes_site_id_api_key_id_fkey FOREIGN KEY (site_id, api_key_id) REFERENCES app_public.api_keys(site_id, id) ON DELETE CASCADE;

--
-- Name: call_event_secrets call_event_secrets_site_id_fkey; Type: FK CONSTRAINT; Schema: app_private; Owner: -
--

ALTER TABLE ONLY app_private.call_event_secrets
    ADD CONSTRAINT call_event_secrets_site_id_fkey FOREIGN KEY (site_id) REFERENCES app_public.sites(id) ON DELETE CASCADE;

--
-- Name: erasure_subjects erasure_subjects_site_id_request_id_fkey; Type: FK CONSTRAINT; Schema: app_private; Owner: -
--

ALTER TABLE ONLY app_private.erasure_subjects
    ADD CONSTRAINT erasure_subjects_site_id_request_id_fkey FOREIGN KEY (site_id, request_id) REFERENCES app_public.erasure_requests(site_id, id) ON DELETE CASCADE;

--
-- Name: export_credentials export_credentials_site_id_fkey; Type: FK CONSTRAINT; Schema: app_private; Owner: -
--

ALTER TABLE ONLY app_private.export_credentials
    ADD CONSTRAINT export_credentials_site_id_fkey FOREIGN KEY (site_id) REFERENCES app_public.sites(id) ON DELETE CASCADE;

--
-- Name: provider_credentials provider_credentials_site_id_destination_id_fkey; Type: FK CONSTRAINT; Schema: app_private; Owner: -
--

ALTER TABLE ONLY app_private.provider_credentials
    ADD CONSTRAINT provider_credentials_site_id_destination_id_fkey FOREIGN KEY (site_id, destination_id) REFERENCES app_public.destinations(site_id, id) ON DELETE CASCADE;

--
-- Name: quota_shards quota_shards_site_id_fkey; Type: FK CONSTRAINT; Schema: app_private; Owner: -
--

ALTER TABLE ONLY app_private.quota_shards
    ADD CONSTRAINT quota_shards_site_id_fkey FOREIGN KEY (site_id) REFERENCES app_public.sites(id) ON DELETE CASCADE;

--
-- Name: sale_identifiers sale_identifiers_site_id_sale_id_fkey; Type: FK CONSTRAINT; Schema: app_private; Owner: -
--

ALTER TABLE ONLY app_private.sale_identifiers
    ADD CONSTRAINT sale_identifiers_site_id_sale_id_fkey FOREIGN KEY (site_id, sale_id) REFERENCES app_public.sales(site_id, id) ON DELETE CASCADE;

--
-- Name: site_salts site_salts_site_id_fkey; Type: FK CONSTRAINT; Schema: app_private; Owner: -
--

ALTER TABLE ONLY app_private.site_salts
    ADD CONSTRAINT site_salts_site_id_fkey FOREIGN KEY (site_id) REFERENCES app_public.sites(id) ON DELETE CASCADE;

--
-- Name: api_keys api_keys_created_by_fkey; Type: FK CONSTRAINT; Schema: app_public; Owner: -
--

ALTER TABLE ONLY app_public.api_keys
    ADD CONSTRAINT api_keys_created_by_fkey FOREIGN KEY (created_by) REFERENCES app_public.users(id) ON DELETE SET NULL;

--
-- Name: api_keys api_keys_site_id_fkey; Type: FK CONSTRAINT; Schema: app_public; Owner: -
--

ALTER TABLE ONLY app_public.api_keys
    ADD CONSTRAINT api_keys_site_id_fkey FOREIGN KEY (site_id) REFERENCES app_public.sites(id) ON DELETE CASCADE;

--
-- Name: call_actions call_actions_call_fkey; Type: FK CONSTRAINT; Schema: app_public; Owner: -
--

ALTER TABLE ONLY app_public.call_actions
    ADD CONSTRAINT call_actions_call_fkey FOREIGN KEY (site_id, call_id) REFERENCES app_public.calls(site_id, id) ON DELETE CASCADE;

--
-- Name: call_actions call_actions_sale_fkey; Type: FK CONSTRAINT; Schema: app_public; Owner: -
--

ALTER TABLE ONLY app_public.call_actions
    ADD CONSTRAINT call_actions_sale_fkey FOREIGN KEY (site_id, sale_id) REFERENCES app_public.sales(site_id, id) ON DELETE SET NULL (sale_id);

--
-- Name: call_actions call_actions_site_id_fkey; Type: FK CONSTRAINT; Schema: app_public; Owner: -
--

ALTER TABLE ONLY app_public.call_actions
    ADD CONSTRAINT call_actions_site_id_fkey FOREIGN KEY (site_id) REFERENCES app_public.sites(id) ON DELETE CASCADE;

--
-- Name: call_actions call_actions_undoes_fkey; Type: FK CONSTRAINT; Schema: app_public; Owner: -
--

ALTER TABLE ONLY app_public.call_actions
    ADD CONSTRAINT call_actions_undoes_fkey FOREIGN KEY (site_id, undoes_id) REFERENCES app_public.call_actions(site_id, id) ON DELETE CASCADE;

--
-- Name: CONSTRAINT call_actions_undoes_fkey ON call_actions; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON CONSTRAINT call_actions_undoes_fkey ON app_public.call_actions IS '@fieldName undoes
@foreignFieldName undoneBy';

--
-- Name: calls calls_site_id_fkey; Type: FK CONSTRAINT; Schema: app_public; Owner: -
--

ALTER TABLE ONLY app_public.calls
    ADD CONSTRAINT calls_site_id_fkey FOREIGN KEY (site_id) REFERENCES app_public.sites(id) ON DELETE CASCADE;

--
-- Name: consents consents_site_id_fkey; Type: FK CONSTRAINT; Schema: app_public; Owner: -
--

ALTER TABLE ONLY app_public.consents
    ADD CONSTRAINT consents_site_id_fkey FOREIGN KEY (site_id) REFERENCES app_public.sites(id) ON DELETE CASCADE;

--
-- Name: conversations conversations_call_fkey; Type: FK CONSTRAINT; Schema: app_public; Owner: -
--

ALTER TABLE ONLY app_public.conversations
    ADD CONSTRAINT conversations_call_fkey FOREIGN KEY (site_id, call_id) REFERENCES app_public.calls(site_id, id) ON DELETE SET NULL (call_id);

--
-- Name: conversations conversations_site_id_fkey; Type: FK CONSTRAINT; Schema: app_public; Owner: -
--

ALTER TABLE ONLY app_public.conversations
    ADD CONSTRAINT conversations_site_id_fkey FOREIGN KEY (site_id) REFERENCES app_public.sites(id) ON DELETE CASCADE;

--
-- Name: destinations destinations_site_id_fkey; Type: FK CONSTRAINT; Schema: app_public; Owner: -
--

ALTER TABLE ONLY app_public.destinations
    ADD CONSTRAINT destinations_site_id_fkey FOREIGN KEY (site_id) REFERENCES app_public.sites(id) ON DELETE CASCADE;

--
-- Name: erasure_requests erasure_requests_site_id_fkey; Type: FK CONSTRAINT; Schema: app_public; Owner: -
--

ALTER TABLE ONLY app_public.erasure_requests
    ADD CONSTRAINT erasure_requests_site_id_fkey FOREIGN KEY (site_id) REFERENCES app_public.sites(id) ON DELETE CASCADE;

--
-- Name: invoice_snapshots invoice_snapshots_site_id_fkey; Type: FK CONSTRAINT; Schema: app_public; Owner: -
--

ALTER TABLE ONLY app_public.invoice_snapshots
    ADD CONSTRAINT invoice_snapshots_site_id_fkey FOREIGN KEY (site_id) REFERENCES app_public.sites(id) ON DELETE RESTRICT;

--
-- Name: offline_conversion_queue offline_conversion_queue_destination_fkey; Type: FK CONSTRAINT; Schema: app_public; Owner: -
--

ALTER TABLE ONLY app_public.offline_conversion_queue
    ADD CONSTRAINT offline_conversion_queue_destination_fkey FOREIGN KEY (site_id, destination_id) REFERENCES app_public.destinations(site_id, id) ON DELETE SET NULL (destination_id);

--
-- Name: CONSTRAINT offline_conversion_queue_destination_fkey ON offline_conversion_queue; Type: COMMENT; Schema: app_public; Owner: -
--

COMMENT ON CONSTRAINT offline_conversion_queue_destination_fkey ON app_public.offline_conversion_queue IS '@isIndexed';

--
-- Name: offline_conversion_queue offline_conversion_queue_sale_fkey; Type: FK CONSTRAINT; Schema: app_public; Owner: -
--

ALTER TABLE ONLY app_public.offline_conversion_queue
    ADD CONSTRAINT offline_conversion_queue_sale_fkey FOREIGN KEY (site_id, sale_id) REFERENCES app_public.sales(site_id, id) ON DELETE CASCADE;

--
-- Name: offline_conversion_queue offline_conversion_queue_site_id_fkey; Type: FK CONSTRAINT; Schema: app_public; Owner: -
--

ALTER TABLE ONLY app_public.offline_conversion_queue
    ADD CONSTRAINT offline_conversion_queue_site_id_fkey FOREIGN KEY (site_id) REFERENCES app_public.sites(id) ON DELETE CASCADE;

--
-- Name: sales sales_call_fkey; Type: FK CONSTRAINT; Schema: app_public; Owner: -
--

ALTER TABLE ONLY app_public.sales
    ADD CONSTRAINT sales_call_fkey FOREIGN KEY (site_id, call_id) REFERENCES app_public.calls(site_id, id) ON DELETE SET NULL (call_id);

--
-- Name: sales sales_conversation_fkey; Type: FK CONSTRAINT; Schema: app_public; Owner: -
--

ALTER TABLE ONLY app_public.sales
    ADD CONSTRAINT sales_conversation_fkey FOREIGN KEY (site_id, conversation_id) REFERENCES app_public.conversations(site_id, id) ON DELETE SET NULL (conversation_id);

--
-- Name: sales sales_site_id_fkey; Type: FK CONSTRAINT; Schema: app_public; Owner: -
--

ALTER TABLE ONLY app_public.sales
    ADD CONSTRAINT sales_site_id_fkey FOREIGN KEY (site_id) REFERENCES app_public.sites(id) ON DELETE CASCADE;

--
-- Name: site_members site_members_site_id_fkey; Type: FK CONSTRAINT; Schema: app_public; Owner: -
--

ALTER TABLE ONLY app_public.site_members
    ADD CONSTRAINT site_members_site_id_fkey FOREIGN KEY (site_id) REFERENCES app_public.sites(id) ON DELETE CASCADE;

--
-- Name: site_members site_members_user_id_fkey; Type: FK CONSTRAINT; Schema: app_public; Owner: -
--

ALTER TABLE ONLY app_public.site_members
    ADD CONSTRAINT site_members_user_id_fkey FOREIGN KEY (user_id) REFERENCES app_public.users(id) ON DELETE CASCADE;

--
-- Name: watchtower_checks watchtower_checks_site_id_fkey; Type: FK CONSTRAINT; Schema: app_public; Owner: -
--

ALTER TABLE ONLY app_public.watchtower_checks
    ADD CONSTRAINT watchtower_checks_site_id_fkey FOREIGN KEY (site_id) REFERENCES app_public.sites(id) ON DELETE CASCADE;

--
-- Name: api_key_hashes; Type: ROW SECURITY; Schema: app_private; Owner: -
--

ALTER TABLE app_private.api_key_hashes ENABLE ROW LEVEL SECURITY;

--
-- Name: audit_chain_heads; Type: ROW SECURITY; Schema: app_private; Owner: -
--

ALTER TABLE app_private.audit_chain_heads ENABLE ROW LEVEL SECURITY;

--
-- Name: bot_user_agents; Type: ROW SECURITY; Schema: app_private; Owner: -
--

ALTER TABLE app_private.bot_user_agents ENABLE ROW LEVEL SECURITY;

--
-- Name: call_event_secrets; Type: ROW SECURITY; Schema: app_private; Owner: -
--

ALTER TABLE app_private.call_event_secrets ENABLE ROW LEVEL SECURITY;

--
-- Name: daily_salts; Type: ROW SECURITY; Schema: app_private; Owner: -
--

ALTER TABLE app_private.daily_salts ENABLE ROW LEVEL SECURITY;

--
-- Name: erasure_subjects; Type: ROW SECURITY; Schema: app_private; Owner: -
--

ALTER TABLE app_private.erasure_subjects ENABLE ROW LEVEL SECURITY;

--
-- Name: event_removals; Type: ROW SECURITY; Schema: app_private; Owner: -
--

ALTER TABLE app_private.event_removals ENABLE ROW LEVEL SECURITY;

--
-- Name: export_credentials; Type: ROW SECURITY; Schema: app_private; Owner: -
--

ALTER TABLE app_private.export_credentials ENABLE ROW LEVEL SECURITY;

--
-- Name: provider_credentials; Type: ROW SECURITY; Schema: app_private; Owner: -
--

ALTER TABLE app_private.provider_credentials ENABLE ROW LEVEL SECURITY;

--
-- Name: quota_shards; Type: ROW SECURITY; Schema: app_private; Owner: -
--

ALTER TABLE app_private.quota_shards ENABLE ROW LEVEL SECURITY;

--
-- Name: rate_counters; Type: ROW SECURITY; Schema: app_private; Owner: -
--

ALTER TABLE app_private.rate_counters ENABLE ROW LEVEL SECURITY;

--
-- Name: sale_identifiers; Type: ROW SECURITY; Schema: app_private; Owner: -
--

ALTER TABLE app_private.sale_identifiers ENABLE ROW LEVEL SECURITY;

--
-- Name: site_salts; Type: ROW SECURITY; Schema: app_private; Owner: -
--

ALTER TABLE app_private.site_salts ENABLE ROW LEVEL SECURITY;

--
-- Name: worker_heartbeats; Type: ROW SECURITY; Schema: app_private; Owner: -
--

ALTER TABLE app_private.worker_heartbeats ENABLE ROW LEVEL SECURITY;

--
-- Name: api_keys; Type: ROW SECURITY; Schema: app_public; Owner: -
--

ALTER TABLE app_public.api_keys ENABLE ROW LEVEL SECURITY;

--
-- Name: audit_log; Type: ROW SECURITY; Schema: app_public; Owner: -
--

ALTER TABLE app_public.audit_log ENABLE ROW LEVEL SECURITY;

--
-- Name: call_actions; Type: ROW SECURITY; Schema: app_public; Owner: -
--

ALTER TABLE app_public.call_actions ENABLE ROW LEVEL SECURITY;

--
-- Name: calls; Type: ROW SECURITY; Schema: app_public; Owner: -
--

ALTER TABLE app_public.calls ENABLE ROW LEVEL SECURITY;

--
-- Name: consents; Type: ROW SECURITY; Schema: app_public; Owner: -
--

ALTER TABLE app_public.consents ENABLE ROW LEVEL SECURITY;

--
-- Name: conversations; Type: ROW SECURITY; Schema: app_public; Owner: -
--

ALTER TABLE app_public.conversations ENABLE ROW LEVEL SECURITY;

--
-- Name: site_members delete_admin; Type: POLICY; Schema: app_public; Owner: -
--

CREATE POLICY delete_admin ON app_public.site_members FOR DELETE USING (((site_id IN ( SELECT app_hidden.current_user_site_ids('admin'::app_public.site_role) AS current_user_site_ids)) AND ((role < 'admin'::app_public.site_role) OR (site_id IN ( SELECT app_hidden.current_user_site_ids('owner'::app_public.site_role) AS current_user_site_ids)))));

--
-- Name: sites delete_owner; Type: POLICY; Schema: app_public; Owner: -
--

CREATE POLICY delete_owner ON app_public.sites FOR DELETE USING ((id IN ( SELECT app_hidden.current_user_site_ids('owner'::app_public.site_role) AS current_user_site_ids)));

--
-- Name: destinations; Type: ROW SECURITY; Schema: app_public; Owner: -
--

ALTER TABLE app_public.destinations ENABLE ROW LEVEL SECURITY;

--
-- Name: erasure_requests; Type: ROW SECURITY; Schema: app_public; Owner: -
--

ALTER TABLE app_public.erasure_requests ENABLE ROW LEVEL SECURITY;

--
-- Name: events; Type: ROW SECURITY; Schema: app_public; Owner: -
--

ALTER TABLE app_public.events ENABLE ROW LEVEL SECURITY;

--
-- Name: ingest_idempotency; Type: ROW SECURITY; Schema: app_public; Owner: -
--

ALTER TABLE app_public.ingest_idempotency ENABLE ROW LEVEL SECURITY;

--
-- Name: site_members insert_admin; Type: POLICY; Schema: app_public; Owner: -
--

CREATE POLICY insert_admin ON app_public.site_members FOR INSERT WITH CHECK (((site_id IN ( SELECT app_hidden.current_user_site_ids('admin'::app_public.site_role) AS current_user_site_ids)) AND ((role < 'admin'::app_public.site_role) OR (site_id IN ( SELECT app_hidden.current_user_site_ids('owner'::app_public.site_role) AS current_user_site_ids)))));

--
-- Name: invoice_snapshots; Type: ROW SECURITY; Schema: app_public; Owner: -
--

ALTER TABLE app_public.invoice_snapshots ENABLE ROW LEVEL SECURITY;

--
-- Name: offline_conversion_queue; Type: ROW SECURITY; Schema: app_public; Owner: -
--

ALTER TABLE app_public.offline_conversion_queue ENABLE ROW LEVEL SECURITY;

--
-- Name: sales; Type: ROW SECURITY; Schema: app_public; Owner: -
--

ALTER TABLE app_public.sales ENABLE ROW LEVEL SECURITY;

--
-- Name: api_keys select_admin; Type: POLICY; Schema: app_public; Owner: -
--

CREATE POLICY select_admin ON app_public.api_keys FOR SELECT USING ((site_id IN ( SELECT app_hidden.current_user_site_ids('admin'::app_public.site_role) AS current_user_site_ids)));

--
-- Name: audit_log select_admin; Type: POLICY; Schema: app_public; Owner: -
--

CREATE POLICY select_admin ON app_public.audit_log FOR SELECT USING ((site_id IN ( SELECT app_hidden.current_user_site_ids('admin'::app_public.site_role) AS current_user_site_ids)));

--
-- Name: erasure_requests select_admin; Type: POLICY; Schema: app_public; Owner: -
--

CREATE POLICY select_admin ON app_public.erasure_requests FOR SELECT USING ((site_id IN ( SELECT app_hidden.current_user_site_ids('admin'::app_public.site_role) AS current_user_site_ids)));

--
-- Name: invoice_snapshots select_admin; Type: POLICY; Schema: app_public; Owner: -
--

CREATE POLICY select_admin ON app_public.invoice_snapshots FOR SELECT USING ((site_id IN ( SELECT app_hidden.current_user_site_ids('admin'::app_public.site_role) AS current_user_site_ids)));

--
-- Name: call_actions select_member; Type: POLICY; Schema: app_public; Owner: -
--

CREATE POLICY select_member ON app_public.call_actions FOR SELECT USING ((site_id IN ( SELECT app_hidden.current_user_site_ids() AS current_user_site_ids)));

--
-- Name: calls select_member; Type: POLICY; Schema: app_public; Owner: -
--

CREATE POLICY select_member ON app_public.calls FOR SELECT USING ((site_id IN ( SELECT app_hidden.current_user_site_ids() AS current_user_site_ids)));

--
-- Name: consents select_member; Type: POLICY; Schema: app_public; Owner: -
--

CREATE POLICY select_member ON app_public.consents FOR SELECT USING ((site_id IN ( SELECT app_hidden.current_user_site_ids() AS current_user_site_ids)));

--
-- Name: conversations select_member; Type: POLICY; Schema: app_public; Owner: -
--

CREATE POLICY select_member ON app_public.conversations FOR SELECT USING ((site_id IN ( SELECT app_hidden.current_user_site_ids() AS current_user_site_ids)));

--
-- Name: destinations select_member; Type: POLICY; Schema: app_public; Owner: -
--

CREATE POLICY select_member ON app_public.destinations FOR SELECT USING ((site_id IN ( SELECT app_hidden.current_user_site_ids() AS current_user_site_ids)));

--
-- Name: events select_member; Type: POLICY; Schema: app_public; Owner: -
--

CREATE POLICY select_member ON app_public.events FOR SELECT USING ((site_id IN ( SELECT app_hidden.current_user_site_ids() AS current_user_site_ids)));

--
-- Name: ingest_idempotency select_member; Type: POLICY; Schema: app_public; Owner: -
--

CREATE POLICY select_member ON app_public.ingest_idempotency FOR SELECT USING ((site_id IN ( SELECT app_hidden.current_user_site_ids() AS current_user_site_ids)));

--
-- Name: offline_conversion_queue select_member; Type: POLICY; Schema: app_public; Owner: -
--

CREATE POLICY select_member ON app_public.offline_conversion_queue FOR SELECT USING ((site_id IN ( SELECT app_hidden.current_user_site_ids() AS current_user_site_ids)));

--
-- Name: sales select_member; Type: POLICY; Schema: app_public; Owner: -
--

CREATE POLICY select_member ON app_public.sales FOR SELECT USING ((site_id IN ( SELECT app_hidden.current_user_site_ids() AS current_user_site_ids)));

--
-- Name: sessions select_member; Type: POLICY; Schema: app_public; Owner: -
--

CREATE POLICY select_member ON app_public.sessions FOR SELECT USING ((site_id IN ( SELECT app_hidden.current_user_site_ids() AS current_user_site_ids)));

--
-- Name: site_members select_member; Type: POLICY; Schema: app_public; Owner: -
--

CREATE POLICY select_member ON app_public.site_members FOR SELECT USING ((site_id IN ( SELECT app_hidden.current_user_site_ids() AS current_user_site_ids)));

--
-- Name: sites select_member; Type: POLICY; Schema: app_public; Owner: -
--

CREATE POLICY select_member ON app_public.sites FOR SELECT USING ((id IN ( SELECT app_hidden.current_user_site_ids() AS current_user_site_ids)));

--
-- Name: watchtower_checks select_member; Type: POLICY; Schema: app_public; Owner: -
--

CREATE POLICY select_member ON app_public.watchtower_checks FOR SELECT USING ((site_id IN ( SELECT app_hidden.current_user_site_ids() AS current_user_site_ids)));

--
-- Name: users select_visible; Type: POLICY; Schema: app_public; Owner: -
--

CREATE POLICY select_visible ON app_public.users FOR SELECT USING (((id = app_hidden.current_user_id()) OR (id IN ( SELECT m.user_id
   FROM app_public.site_members m
  WHERE (m.site_id IN ( SELECT app_hidden.current_user_site_ids() AS current_user_site_ids)))) OR ( SELECT app_hidden.current_user_is_platform_admin() AS current_user_is_platform_admin)));

--
-- Name: sessions; Type: ROW SECURITY; Schema: app_public; Owner: -
--

ALTER TABLE app_public.sessions ENABLE ROW LEVEL SECURITY;

--
-- Name: site_members; Type: ROW SECURITY; Schema: app_public; Owner: -
--

ALTER TABLE app_public.site_members ENABLE ROW LEVEL SECURITY;

--
-- Name: sites; Type: ROW SECURITY; Schema: app_public; Owner: -
--

ALTER TABLE app_public.sites ENABLE ROW LEVEL SECURITY;

--
-- Name: site_members update_admin; Type: POLICY; Schema: app_public; Owner: -
--

CREATE POLICY update_admin ON app_public.site_members FOR UPDATE USING (((site_id IN ( SELECT app_hidden.current_user_site_ids('admin'::app_public.site_role) AS current_user_site_ids)) AND ((role < 'admin'::app_public.site_role) OR (site_id IN ( SELECT app_hidden.current_user_site_ids('owner'::app_public.site_role) AS current_user_site_ids))))) WITH CHECK (((site_id IN ( SELECT app_hidden.current_user_site_ids('admin'::app_public.site_role) AS current_user_site_ids)) AND ((role < 'admin'::app_public.site_role) OR (site_id IN ( SELECT app_hidden.current_user_site_ids('owner'::app_public.site_role) AS current_user_site_ids)))));

--
-- Name: sites update_admin; Type: POLICY; Schema: app_public; Owner: -
--

CREATE POLICY update_admin ON app_public.sites FOR UPDATE USING ((id IN ( SELECT app_hidden.current_user_site_ids('admin'::app_public.site_role) AS current_user_site_ids)));

--
-- Name: users update_self; Type: POLICY; Schema: app_public; Owner: -
--

CREATE POLICY update_self ON app_public.users FOR UPDATE USING ((id = app_hidden.current_user_id()));

--
-- Name: users; Type: ROW SECURITY; Schema: app_public; Owner: -
--

ALTER TABLE app_public.users ENABLE ROW LEVEL SECURITY;

--
-- Name: watchtower_checks; Type: ROW SECURITY; Schema: app_public; Owner: -
--

ALTER TABLE app_public.watchtower_checks ENABLE ROW LEVEL SECURITY;

--
-- Name: SCHEMA app_hidden; Type: ACL; Schema: -; Owner: -
--

GRANT USAGE ON SCHEMA app_hidden TO opsmantik_visitor;

--
-- Name: SCHEMA app_private; Type: ACL; Schema: -; Owner: -
--

GRANT USAGE ON SCHEMA app_private TO opsmantik_authenticator;

--
-- Name: SCHEMA app_public; Type: ACL; Schema: -; Owner: -
--

GRANT USAGE ON SCHEMA app_public TO opsmantik_visitor;

--
-- Name: FUNCTION assert_site_role(site_id uuid, min_role app_public.site_role, action text, target_table text, target_id text); Type: ACL; Schema: app_hidden; Owner: -
--

REVOKE ALL ON FUNCTION app_hidden.assert_site_role(site_id uuid, min_role app_public.site_role, action text, target_table text, target_id text) FROM PUBLIC;
GRANT ALL ON FUNCTION app_hidden.assert_site_role(site_id uuid, min_role app_public.site_role, action text, target_table text, target_id text) TO opsmantik_visitor;

--
-- Name: FUNCTION classify_landing(url text, referrer text, site_domain text); Type: ACL; Schema: app_hidden; Owner: -
--

REVOKE ALL ON FUNCTION app_hidden.classify_landing(url text, referrer text, site_domain text) FROM PUBLIC;
GRANT ALL ON FUNCTION app_hidden.classify_landing(url text, referrer text, site_domain text) TO opsmantik_visitor;

--
-- Name: FUNCTION currency_minor_units(code text); Type: ACL; Schema: app_hidden; Owner: -
--

REVOKE ALL ON FUNCTION app_hidden.currency_minor_units(code text) FROM PUBLIC;
GRANT ALL ON FUNCTION app_hidden.currency_minor_units(code text) TO opsmantik_visitor;

--
-- Name: FUNCTION current_api_key_id(); Type: ACL; Schema: app_hidden; Owner: -
--

REVOKE ALL ON FUNCTION app_hidden.current_api_key_id() FROM PUBLIC;
GRANT ALL ON FUNCTION app_hidden.current_api_key_id() TO opsmantik_visitor;

--
-- Name: FUNCTION current_user_id(); Type: ACL; Schema: app_hidden; Owner: -
--

REVOKE ALL ON FUNCTION app_hidden.current_user_id() FROM PUBLIC;
GRANT ALL ON FUNCTION app_hidden.current_user_id() TO opsmantik_visitor;

--
-- Name: FUNCTION current_user_is_platform_admin(); Type: ACL; Schema: app_hidden; Owner: -
--

REVOKE ALL ON FUNCTION app_hidden.current_user_is_platform_admin() FROM PUBLIC;
GRANT ALL ON FUNCTION app_hidden.current_user_is_platform_admin() TO opsmantik_visitor;

--
-- Name: FUNCTION current_user_site_ids(min_role app_public.site_role); Type: ACL; Schema: app_hidden; Owner: -
--

REVOKE ALL ON FUNCTION app_hidden.current_user_site_ids(min_role app_public.site_role) FROM PUBLIC;
GRANT ALL ON FUNCTION app_hidden.current_user_site_ids(min_role app_public.site_role) TO opsmantik_visitor;

--
-- Name: FUNCTION google_order_id(site_id uuid, external_id text); Type: ACL; Schema: app_hidden; Owner: -
--

REVOKE ALL ON FUNCTION app_hidden.google_order_id(site_id uuid, external_id text) FROM PUBLIC;
GRANT ALL ON FUNCTION app_hidden.google_order_id(site_id uuid, external_id text) TO opsmantik_visitor;

--
-- Name: FUNCTION host_is_on(host text, domain text); Type: ACL; Schema: app_hidden; Owner: -
--

REVOKE ALL ON FUNCTION app_hidden.host_is_on(host text, domain text) FROM PUBLIC;
GRANT ALL ON FUNCTION app_hidden.host_is_on(host text, domain text) TO opsmantik_visitor;

--
-- Name: FUNCTION identifier_sha256(normalized text); Type: ACL; Schema: app_hidden; Owner: -
--

REVOKE ALL ON FUNCTION app_hidden.identifier_sha256(normalized text) FROM PUBLIC;
GRANT ALL ON FUNCTION app_hidden.identifier_sha256(normalized text) TO opsmantik_visitor;

--
-- Name: FUNCTION is_search_host(host text); Type: ACL; Schema: app_hidden; Owner: -
--

REVOKE ALL ON FUNCTION app_hidden.is_search_host(host text) FROM PUBLIC;
GRANT ALL ON FUNCTION app_hidden.is_search_host(host text) TO opsmantik_visitor;

--
-- Name: FUNCTION is_valid_timezone(tz text); Type: ACL; Schema: app_hidden; Owner: -
--

REVOKE ALL ON FUNCTION app_hidden.is_valid_timezone(tz text) FROM PUBLIC;
GRANT ALL ON FUNCTION app_hidden.is_valid_timezone(tz text) TO opsmantik_visitor;

--
-- Name: FUNCTION ledger_line(idempotency_key uuid, occurred_at timestamp with time zone, billable boolean); Type: ACL; Schema: app_hidden; Owner: -
--

REVOKE ALL ON FUNCTION app_hidden.ledger_line(idempotency_key uuid, occurred_at timestamp with time zone, billable boolean) FROM PUBLIC;
GRANT ALL ON FUNCTION app_hidden.ledger_line(idempotency_key uuid, occurred_at timestamp with time zone, billable boolean) TO opsmantik_visitor;

--
-- Name: FUNCTION ledger_time(at timestamp with time zone); Type: ACL; Schema: app_hidden; Owner: -
--

REVOKE ALL ON FUNCTION app_hidden.ledger_time(at timestamp with time zone) FROM PUBLIC;
GRANT ALL ON FUNCTION app_hidden.ledger_time(at timestamp with time zone) TO opsmantik_visitor;

--
-- Name: FUNCTION normalize_email(email text); Type: ACL; Schema: app_hidden; Owner: -
--

REVOKE ALL ON FUNCTION app_hidden.normalize_email(email text) FROM PUBLIC;
GRANT ALL ON FUNCTION app_hidden.normalize_email(email text) TO opsmantik_visitor;

--
-- Name: FUNCTION normalize_phone(phone text); Type: ACL; Schema: app_hidden; Owner: -
--

REVOKE ALL ON FUNCTION app_hidden.normalize_phone(phone text) FROM PUBLIC;
GRANT ALL ON FUNCTION app_hidden.normalize_phone(phone text) TO opsmantik_visitor;

--
-- Name: FUNCTION parse_timestamptz(value text); Type: ACL; Schema: app_hidden; Owner: -
--

REVOKE ALL ON FUNCTION app_hidden.parse_timestamptz(value text) FROM PUBLIC;
GRANT ALL ON FUNCTION app_hidden.parse_timestamptz(value text) TO opsmantik_visitor;

--
-- Name: FUNCTION percent_decode(value text); Type: ACL; Schema: app_hidden; Owner: -
--

REVOKE ALL ON FUNCTION app_hidden.percent_decode(value text) FROM PUBLIC;
GRANT ALL ON FUNCTION app_hidden.percent_decode(value text) TO opsmantik_visitor;

--
-- Name: FUNCTION raise_forbidden(site_id uuid, action text, target_table text, target_id text); Type: ACL; Schema: app_hidden; Owner: -
--

REVOKE ALL ON FUNCTION app_hidden.raise_forbidden(site_id uuid, action text, target_table text, target_id text) FROM PUBLIC;
GRANT ALL ON FUNCTION app_hidden.raise_forbidden(site_id uuid, action text, target_table text, target_id text) TO opsmantik_visitor;

--
-- Name: FUNCTION social_network_of_host(host text); Type: ACL; Schema: app_hidden; Owner: -
--

REVOKE ALL ON FUNCTION app_hidden.social_network_of_host(host text) FROM PUBLIC;
GRANT ALL ON FUNCTION app_hidden.social_network_of_host(host text) TO opsmantik_visitor;

--
-- Name: FUNCTION social_network_of_source(utm_source text); Type: ACL; Schema: app_hidden; Owner: -
--

REVOKE ALL ON FUNCTION app_hidden.social_network_of_source(utm_source text) FROM PUBLIC;
GRANT ALL ON FUNCTION app_hidden.social_network_of_source(utm_source text) TO opsmantik_visitor;

--
-- Name: FUNCTION starts_new_session(url text, session_click_id text, session_utm_source text, session_utm_campaign text); Type: ACL; Schema: app_hidden; Owner: -
--

REVOKE ALL ON FUNCTION app_hidden.starts_new_session(url text, session_click_id text, session_utm_source text, session_utm_campaign text) FROM PUBLIC;
GRANT ALL ON FUNCTION app_hidden.starts_new_session(url text, session_click_id text, session_utm_source text, session_utm_campaign text) TO opsmantik_visitor;

--
-- Name: TABLE destinations; Type: ACL; Schema: app_public; Owner: -
--

GRANT SELECT ON TABLE app_public.destinations TO opsmantik_visitor;

--
-- Name: FUNCTION store_provider_credentials(destination_id uuid, key_id text, wrapped_key bytea, nonce bytea, ciphertext bytea, auth_tag bytea, last4 text); Type: ACL; Schema: app_hidden; Owner: -
--

REVOKE ALL ON FUNCTION app_hidden.store_provider_credentials(destination_id uuid, key_id text, wrapped_key bytea, nonce bytea, ciphertext bytea, auth_tag bytea, last4 text) FROM PUBLIC;
GRANT ALL ON FUNCTION app_hidden.store_provider_credentials(destination_id uuid, key_id text, wrapped_key bytea, nonce bytea, ciphertext bytea, auth_tag bytea, last4 text) TO opsmantik_visitor;

--
-- Name: FUNCTION url_host(url text); Type: ACL; Schema: app_hidden; Owner: -
--

REVOKE ALL ON FUNCTION app_hidden.url_host(url text) FROM PUBLIC;
GRANT ALL ON FUNCTION app_hidden.url_host(url text) TO opsmantik_visitor;

--
-- Name: FUNCTION url_params(url text); Type: ACL; Schema: app_hidden; Owner: -
--

REVOKE ALL ON FUNCTION app_hidden.url_params(url text) FROM PUBLIC;
GRANT ALL ON FUNCTION app_hidden.url_params(url text) TO opsmantik_visitor;

--
-- Name: TABLE sites; Type: ACL; Schema: app_public; Owner: -
--

GRANT SELECT,DELETE ON TABLE app_public.sites TO opsmantik_visitor;

--
-- Name: COLUMN sites.name; Type: ACL; Schema: app_public; Owner: -
--

GRANT UPDATE(name) ON TABLE app_public.sites TO opsmantik_visitor;

--
-- Name: COLUMN sites.domain; Type: ACL; Schema: app_public; Owner: -
--

GRANT UPDATE(domain) ON TABLE app_public.sites TO opsmantik_visitor;

--
-- Name: COLUMN sites.allowed_origins; Type: ACL; Schema: app_public; Owner: -
--

GRANT UPDATE(allowed_origins) ON TABLE app_public.sites TO opsmantik_visitor;

--
-- Name: COLUMN sites.consent_mode; Type: ACL; Schema: app_public; Owner: -
--

GRANT UPDATE(consent_mode) ON TABLE app_public.sites TO opsmantik_visitor;

--
-- Name: COLUMN sites.monthly_event_quota; Type: ACL; Schema: app_public; Owner: -
--

GRANT UPDATE(monthly_event_quota) ON TABLE app_public.sites TO opsmantik_visitor;

--
-- Name: COLUMN sites.rate_limit_per_minute; Type: ACL; Schema: app_public; Owner: -
--

GRANT UPDATE(rate_limit_per_minute) ON TABLE app_public.sites TO opsmantik_visitor;

--
-- Name: COLUMN sites.timezone; Type: ACL; Schema: app_public; Owner: -
--

GRANT UPDATE(timezone) ON TABLE app_public.sites TO opsmantik_visitor;

--
-- Name: COLUMN sites.currency; Type: ACL; Schema: app_public; Owner: -
--

GRANT UPDATE(currency) ON TABLE app_public.sites TO opsmantik_visitor;

--
-- Name: COLUMN sites.data_retention_months; Type: ACL; Schema: app_public; Owner: -
--

GRANT SELECT(data_retention_months) ON TABLE app_public.sites TO opsmantik_visitor;

--
-- Name: FUNCTION admit_request(public_key text, events jsonb, origin text, client_ip text, user_agent text, global_origins text[], OUT site app_public.sites, OUT is_bot boolean); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.admit_request(public_key text, events jsonb, origin text, client_ip text, user_agent text, global_origins text[], OUT site app_public.sites, OUT is_bot boolean) FROM PUBLIC;

--
-- Name: FUNCTION append_audit(site_id uuid, action text, target_table text, target_id text, old_values jsonb, new_values jsonb, actor_user_id uuid, actor_api_key_id uuid, actor_db_role text); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.append_audit(site_id uuid, action text, target_table text, target_id text, old_values jsonb, new_values jsonb, actor_user_id uuid, actor_api_key_id uuid, actor_db_role text) FROM PUBLIC;

--
-- Name: FUNCTION assert_billing_access(site_id uuid, action text); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.assert_billing_access(site_id uuid, action text) FROM PUBLIC;

--
-- Name: FUNCTION assert_caller_role(site_id uuid, min_role app_public.site_role, action text, target_table text, target_id text); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.assert_caller_role(site_id uuid, min_role app_public.site_role, action text, target_table text, target_id text) FROM PUBLIC;

--
-- Name: TABLE audit_log; Type: ACL; Schema: app_public; Owner: -
--

GRANT SELECT ON TABLE app_public.audit_log TO opsmantik_visitor;

--
-- Name: FUNCTION audit_row_hash(prev_hash bytea, entry app_public.audit_log); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.audit_row_hash(prev_hash bytea, entry app_public.audit_log) FROM PUBLIC;

--
-- Name: FUNCTION authenticate_api_key(key text); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.authenticate_api_key(key text) FROM PUBLIC;
GRANT ALL ON FUNCTION app_private.authenticate_api_key(key text) TO opsmantik_authenticator;

--
-- Name: TABLE offline_conversion_queue; Type: ACL; Schema: app_public; Owner: -
--

GRANT SELECT ON TABLE app_public.offline_conversion_queue TO opsmantik_visitor;

--
-- Name: FUNCTION awaits_request_status(q app_public.offline_conversion_queue); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.awaits_request_status(q app_public.offline_conversion_queue) FROM PUBLIC;

--
-- Name: FUNCTION call_event_secrets_for(public_key text); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.call_event_secrets_for(public_key text) FROM PUBLIC;
GRANT ALL ON FUNCTION app_private.call_event_secrets_for(public_key text) TO opsmantik_authenticator;

--
-- Name: FUNCTION carry_out_erasure(site_id uuid, request_id uuid); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.carry_out_erasure(site_id uuid, request_id uuid) FROM PUBLIC;

--
-- Name: FUNCTION check_rate_limit(site app_public.sites, client_ip text); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.check_rate_limit(site app_public.sites, client_ip text) FROM PUBLIC;

--
-- Name: FUNCTION claim_offline_conversion_jobs(provider text, "limit" integer, site_id uuid, worker text, lease_seconds integer, destination_id uuid); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.claim_offline_conversion_jobs(provider text, "limit" integer, site_id uuid, worker text, lease_seconds integer, destination_id uuid) FROM PUBLIC;

--
-- Name: FUNCTION close_unanswered_requests(site_id uuid); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.close_unanswered_requests(site_id uuid) FROM PUBLIC;

--
-- Name: FUNCTION compact_json_size(value jsonb); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.compact_json_size(value jsonb) FROM PUBLIC;

--
-- Name: FUNCTION compute_ledger_digest(site_id uuid, period date); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.compute_ledger_digest(site_id uuid, period date) FROM PUBLIC;

--
-- Name: FUNCTION conversion_consent(site app_public.sites, visitor_id text, session_id uuid); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.conversion_consent(site app_public.sites, visitor_id text, session_id uuid) FROM PUBLIC;

--
-- Name: FUNCTION conversion_payloads(site_id uuid, ids uuid[]); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.conversion_payloads(site_id uuid, ids uuid[]) FROM PUBLIC;

--
-- Name: FUNCTION count_event_removals(site_id uuid, reason text, occurred timestamp with time zone[]); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.count_event_removals(site_id uuid, reason text, occurred timestamp with time zone[]) FROM PUBLIC;

--
-- Name: FUNCTION create_site(owner_id uuid, name text, domain text, consent_mode text, monthly_event_quota bigint, rate_limit_per_minute integer, allowed_origins text[], timezone text, currency text); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.create_site(owner_id uuid, name text, domain text, consent_mode text, monthly_event_quota bigint, rate_limit_per_minute integer, allowed_origins text[], timezone text, currency text) FROM PUBLIC;

--
-- Name: FUNCTION csv_field(value text); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.csv_field(value text) FROM PUBLIC;

--
-- Name: FUNCTION daily_salt(day date); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.daily_salt(day date) FROM PUBLIC;

--
-- Name: FUNCTION drop_expired_ledger_partitions(retention_days integer); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.drop_expired_ledger_partitions(retention_days integer) FROM PUBLIC;

--
-- Name: FUNCTION drop_needless_retractions(site_id uuid, sale_ids uuid[]); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.drop_needless_retractions(site_id uuid, sale_ids uuid[]) FROM PUBLIC;

--
-- Name: FUNCTION effective_consent(site app_public.sites, own jsonb, recorded jsonb); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.effective_consent(site app_public.sites, own jsonb, recorded jsonb) FROM PUBLIC;

--
-- Name: TABLE sales; Type: ACL; Schema: app_public; Owner: -
--

GRANT SELECT ON TABLE app_public.sales TO opsmantik_visitor;

--
-- Name: FUNCTION enqueue_conversion(sale app_public.sales, consent jsonb); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.enqueue_conversion(sale app_public.sales, consent jsonb) FROM PUBLIC;

--
-- Name: FUNCTION enqueue_upload(site_id uuid, provider text, run_at timestamp with time zone); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.enqueue_upload(site_id uuid, provider text, run_at timestamp with time zone) FROM PUBLIC;

--
-- Name: FUNCTION ensure_quota_shards(site app_public.sites, period date); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.ensure_quota_shards(site app_public.sites, period date) FROM PUBLIC;

--
-- Name: FUNCTION event_problem(event jsonb, site app_public.sites, now timestamp with time zone); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.event_problem(event jsonb, site app_public.sites, now timestamp with time zone) FROM PUBLIC;

--
-- Name: FUNCTION export_credential_for(username text); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.export_credential_for(username text) FROM PUBLIC;
GRANT ALL ON FUNCTION app_private.export_credential_for(username text) TO opsmantik_authenticator;

--
-- Name: FUNCTION find_site(public_key text, origin text, global_origins text[], client_ip text); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.find_site(public_key text, origin text, global_origins text[], client_ip text) FROM PUBLIC;

--
-- Name: FUNCTION former_destinations_awaiting_status(site_id uuid); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.former_destinations_awaiting_status(site_id uuid) FROM PUBLIC;

--
-- Name: FUNCTION freeze_due_invoices(now timestamp with time zone); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.freeze_due_invoices(now timestamp with time zone) FROM PUBLIC;

--
-- Name: FUNCTION google_time(at timestamp with time zone, zone text); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.google_time(at timestamp with time zone, zone text) FROM PUBLIC;

--
-- Name: FUNCTION hash_subject(site_id uuid, kind text, normalized text); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.hash_subject(site_id uuid, kind text, normalized text) FROM PUBLIC;

--
-- Name: FUNCTION ingest_cleanup(); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.ingest_cleanup() FROM PUBLIC;

--
-- Name: FUNCTION ingest_events(public_key text, events jsonb, origin text, client_ip text, user_agent text, global_origins text[]); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.ingest_events(public_key text, events jsonb, origin text, client_ip text, user_agent text, global_origins text[]) FROM PUBLIC;
GRANT ALL ON FUNCTION app_private.ingest_events(public_key text, events jsonb, origin text, client_ip text, user_agent text, global_origins text[]) TO opsmantik_authenticator;

--
-- Name: FUNCTION ingest_requests(requests jsonb, global_origins text[]); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.ingest_requests(requests jsonb, global_origins text[]) FROM PUBLIC;
GRANT ALL ON FUNCTION app_private.ingest_requests(requests jsonb, global_origins text[]) TO opsmantik_authenticator;

--
-- Name: FUNCTION issue_api_key(site_id uuid, role app_public.site_role, name text, created_by uuid); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.issue_api_key(site_id uuid, role app_public.site_role, name text, created_by uuid) FROM PUBLIC;

--
-- Name: FUNCTION lacks_request_verdict(q app_public.offline_conversion_queue); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.lacks_request_verdict(q app_public.offline_conversion_queue) FROM PUBLIC;

--
-- Name: FUNCTION latest_consent(site_id uuid, visitor_hash bytea); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.latest_consent(site_id uuid, visitor_hash bytea) FROM PUBLIC;

--
-- Name: TABLE call_actions; Type: ACL; Schema: app_public; Owner: -
--

GRANT SELECT ON TABLE app_public.call_actions TO opsmantik_visitor;

--
-- Name: TABLE calls; Type: ACL; Schema: app_public; Owner: -
--

GRANT SELECT ON TABLE app_public.calls TO opsmantik_visitor;

--
-- Name: FUNCTION lock_call_for_action(site_id uuid, call_id uuid, action text, OUT call app_public.calls, OUT standing app_public.call_actions); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.lock_call_for_action(site_id uuid, call_id uuid, action text, OUT call app_public.calls, OUT standing app_public.call_actions) FROM PUBLIC;

--
-- Name: FUNCTION lock_conversion_batch(site_id uuid, "limit" integer, lease_seconds integer, OUT ctids tid[], OUT ids uuid[], OUT payloads json); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.lock_conversion_batch(site_id uuid, "limit" integer, lease_seconds integer, OUT ctids tid[], OUT ids uuid[], OUT payloads json) FROM PUBLIC;

--
-- Name: FUNCTION lock_due_conversions(site_id uuid, provider text, "limit" integer); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.lock_due_conversions(site_id uuid, provider text, "limit" integer) FROM PUBLIC;

--
-- Name: FUNCTION maintain_partitions(); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.maintain_partitions() FROM PUBLIC;

--
-- Name: FUNCTION mark_destination_needs_reauth(destination_id uuid, code text, seen_at timestamp with time zone); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.mark_destination_needs_reauth(destination_id uuid, code text, seen_at timestamp with time zone) FROM PUBLIC;

--
-- Name: FUNCTION metrics(); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.metrics() FROM PUBLIC;

--
-- Name: FUNCTION new_call_event_secret(); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.new_call_event_secret() FROM PUBLIC;

--
-- Name: FUNCTION normalize_subject(kind text, value text); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.normalize_subject(kind text, value text) FROM PUBLIC;

--
-- Name: FUNCTION oci_export_lines(site_id uuid, conversion_name text); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.oci_export_lines(site_id uuid, conversion_name text) FROM PUBLIC;
GRANT ALL ON FUNCTION app_private.oci_export_lines(site_id uuid, conversion_name text) TO opsmantik_authenticator;

--
-- Name: TABLE sessions; Type: ACL; Schema: app_public; Owner: -
--

GRANT SELECT ON TABLE app_public.sessions TO opsmantik_visitor;

--
-- Name: FUNCTION open_session(site_id uuid, visitor_key text, visitor_id text, event_id uuid, occurred_at timestamp with time zone, url text, referrer text, site_domain text); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.open_session(site_id uuid, visitor_key text, visitor_id text, event_id uuid, occurred_at timestamp with time zone, url text, referrer text, site_domain text) FROM PUBLIC;

--
-- Name: FUNCTION origin_allowed(site app_public.sites, origin text, global_origins text[]); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.origin_allowed(site app_public.sites, origin text, global_origins text[]) FROM PUBLIC;

--
-- Name: FUNCTION origin_known(origin text, global_origins text[]); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.origin_known(origin text, global_origins text[]) FROM PUBLIC;
GRANT ALL ON FUNCTION app_private.origin_known(origin text, global_origins text[]) TO opsmantik_authenticator;

--
-- Name: FUNCTION outcome_unknown(code text); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.outcome_unknown(code text) FROM PUBLIC;

--
-- Name: FUNCTION period_bounds(period date, OUT starts_at timestamp with time zone, OUT ends_at timestamp with time zone); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.period_bounds(period date, OUT starts_at timestamp with time zone, OUT ends_at timestamp with time zone) FROM PUBLIC;

--
-- Name: FUNCTION period_start(period date); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.period_start(period date) FROM PUBLIC;

--
-- Name: FUNCTION place_event(site_id uuid, visitor_key text, visitor_id text, event_id uuid, occurred_at timestamp with time zone, type text, url text, referrer text, site_domain text, OUT session_id uuid, OUT rebuild_since timestamp with time zone, OUT rebuild_since_event_id uuid); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.place_event(site_id uuid, visitor_key text, visitor_id text, event_id uuid, occurred_at timestamp with time zone, type text, url text, referrer text, site_domain text, OUT session_id uuid, OUT rebuild_since timestamp with time zone, OUT rebuild_since_event_id uuid) FROM PUBLIC;

--
-- Name: FUNCTION quota_left(site app_public.sites, period date); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.quota_left(site app_public.sites, period date) FROM PUBLIC;

--
-- Name: FUNCTION quota_shares(total bigint); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.quota_shares(total bigint) FROM PUBLIC;

--
-- Name: FUNCTION quota_used(site_id uuid, period date); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.quota_used(site_id uuid, period date) FROM PUBLIC;

--
-- Name: FUNCTION rebuild_sessions(site_id uuid, visitor_key text, since timestamp with time zone, since_event_id uuid, site_domain text); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.rebuild_sessions(site_id uuid, visitor_key text, since timestamp with time zone, since_event_id uuid, site_domain text) FROM PUBLIC;

--
-- Name: FUNCTION record_batch_outcomes(site_id uuid, destination_id uuid, ctids tid[], ids uuid[], kinds text[], codes text[], messages text[], retry_after_seconds integer[], request_ids text[], request_id text, count_attempt boolean); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.record_batch_outcomes(site_id uuid, destination_id uuid, ctids tid[], ids uuid[], kinds text[], codes text[], messages text[], retry_after_seconds integer[], request_ids text[], request_id text, count_attempt boolean) FROM PUBLIC;

--
-- Name: FUNCTION record_call_event(site_id uuid, body jsonb); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.record_call_event(site_id uuid, body jsonb) FROM PUBLIC;
GRANT ALL ON FUNCTION app_private.record_call_event(site_id uuid, body jsonb) TO opsmantik_authenticator;

--
-- Name: FUNCTION record_consent(public_key text, visitor_id text, consent jsonb, origin text, client_ip text, global_origins text[]); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.record_consent(public_key text, visitor_id text, consent jsonb, origin text, client_ip text, global_origins text[]) FROM PUBLIC;
GRANT ALL ON FUNCTION app_private.record_consent(public_key text, visitor_id text, consent jsonb, origin text, client_ip text, global_origins text[]) TO opsmantik_authenticator;

--
-- Name: FUNCTION record_denied_attempt(detail jsonb); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.record_denied_attempt(detail jsonb) FROM PUBLIC;

--
-- Name: FUNCTION record_sale(site app_public.sites, external_id text, amount numeric, currency text, occurred_at timestamp with time zone, session_id uuid, visitor_id text, call_ref text, gclid text, email text, phone text, consent jsonb, conversation_id uuid); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.record_sale(site app_public.sites, external_id text, amount numeric, currency text, occurred_at timestamp with time zone, session_id uuid, visitor_id text, call_ref text, gclid text, email text, phone text, consent jsonb, conversation_id uuid) FROM PUBLIC;

--
-- Name: FUNCTION record_upload_outcomes(site_id uuid, worker text, outcomes jsonb, request_id text); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.record_upload_outcomes(site_id uuid, worker text, outcomes jsonb, request_id text) FROM PUBLIC;

--
-- Name: FUNCTION record_worker_heartbeat(worker_name text); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.record_worker_heartbeat(worker_name text) FROM PUBLIC;

--
-- Name: FUNCTION refresh_conversion_attribution(site_id uuid, due_only boolean); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.refresh_conversion_attribution(site_id uuid, due_only boolean) FROM PUBLIC;

--
-- Name: FUNCTION release_claimed_conversions(site_id uuid, worker text, code text, message text, retry_after_seconds integer); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.release_claimed_conversions(site_id uuid, worker text, code text, message text, retry_after_seconds integer) FROM PUBLIC;

--
-- Name: FUNCTION request_status_due(q app_public.offline_conversion_queue); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.request_status_due(q app_public.offline_conversion_queue) FROM PUBLIC;

--
-- Name: FUNCTION resolve_sale_attribution(site_id uuid, session_id uuid, visitor_id text, call_id uuid, gclid text, at timestamp with time zone, anchor_event_id uuid); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.resolve_sale_attribution(site_id uuid, session_id uuid, visitor_id text, call_id uuid, gclid text, at timestamp with time zone, anchor_event_id uuid) FROM PUBLIC;

--
-- Name: FUNCTION retention_cleanup(); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.retention_cleanup() FROM PUBLIC;

--
-- Name: FUNCTION retire_call_event_secret(site_id uuid); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.retire_call_event_secret(site_id uuid) FROM PUBLIC;

--
-- Name: FUNCTION rotate_call_event_secret(site_id uuid); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.rotate_call_event_secret(site_id uuid) FROM PUBLIC;

--
-- Name: FUNCTION run_watchtower(); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.run_watchtower() FROM PUBLIC;

--
-- Name: FUNCTION schedule_next_upload(site_id uuid); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.schedule_next_upload(site_id uuid) FROM PUBLIC;

--
-- Name: FUNCTION secure_partitions(); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.secure_partitions() FROM PUBLIC;

--
-- Name: FUNCTION session_id_for(site_id uuid, first_event_id uuid); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.session_id_for(site_id uuid, first_event_id uuid) FROM PUBLIC;

--
-- Name: FUNCTION settle_request(site_id uuid, request_id text, status text, errors jsonb); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.settle_request(site_id uuid, request_id text, status text, errors jsonb) FROM PUBLIC;

--
-- Name: FUNCTION shape_conversion_payloads(site_id uuid, queued app_public.offline_conversion_queue[]); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.shape_conversion_payloads(site_id uuid, queued app_public.offline_conversion_queue[]) FROM PUBLIC;

--
-- Name: FUNCTION sites_with_due_conversions(provider text); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.sites_with_due_conversions(provider text) FROM PUBLIC;

--
-- Name: FUNCTION store_events(site app_public.sites, batches jsonb, bots boolean[]); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.store_events(site app_public.sites, batches jsonb, bots boolean[]) FROM PUBLIC;

--
-- Name: FUNCTION store_session(session app_public.sessions, state text); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.store_session(session app_public.sessions, state text) FROM PUBLIC;

--
-- Name: FUNCTION subject_links(site_id uuid, kind text, normalized text); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.subject_links(site_id uuid, kind text, normalized text) FROM PUBLIC;

--
-- Name: FUNCTION take_quota(site app_public.sites, period date); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.take_quota(site app_public.sites, period date) FROM PUBLIC;

--
-- Name: FUNCTION tg__audit(); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.tg__audit() FROM PUBLIC;

--
-- Name: FUNCTION tg__forget_site_tracking(); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.tg__forget_site_tracking() FROM PUBLIC;

--
-- Name: FUNCTION tg__refuse_change(); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.tg__refuse_change() FROM PUBLIC;

--
-- Name: FUNCTION tg__touch_updated_at(); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.tg__touch_updated_at() FROM PUBLIC;

--
-- Name: FUNCTION tg_offline_conversion_queue__destination(); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.tg_offline_conversion_queue__destination() FROM PUBLIC;

--
-- Name: FUNCTION tg_offline_conversion_queue__forget_erased_order_id(); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.tg_offline_conversion_queue__forget_erased_order_id() FROM PUBLIC;

--
-- Name: FUNCTION tg_site_members__keep_an_owner(); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.tg_site_members__keep_an_owner() FROM PUBLIC;

--
-- Name: FUNCTION tg_sites__apply_quota_change(); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.tg_sites__apply_quota_change() FROM PUBLIC;

--
-- Name: FUNCTION tg_sites__issue_call_event_secret(); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.tg_sites__issue_call_event_secret() FROM PUBLIC;

--
-- Name: FUNCTION tg_sites__issue_salt(); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.tg_sites__issue_salt() FROM PUBLIC;

--
-- Name: FUNCTION unsettled_requests(site_id uuid, destination_id uuid); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.unsettled_requests(site_id uuid, destination_id uuid) FROM PUBLIC;

--
-- Name: FUNCTION upload_outcome_unknown(q app_public.offline_conversion_queue); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.upload_outcome_unknown(q app_public.offline_conversion_queue) FROM PUBLIC;

--
-- Name: FUNCTION valid_consent(consent jsonb); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.valid_consent(consent jsonb) FROM PUBLIC;

--
-- Name: FUNCTION withdraw_conversion(site_id uuid, sale_id uuid); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.withdraw_conversion(site_id uuid, sale_id uuid) FROM PUBLIC;

--
-- Name: TABLE site_members; Type: ACL; Schema: app_public; Owner: -
--

GRANT SELECT,DELETE ON TABLE app_public.site_members TO opsmantik_visitor;

--
-- Name: COLUMN site_members.site_id; Type: ACL; Schema: app_public; Owner: -
--

GRANT INSERT(site_id) ON TABLE app_public.site_members TO opsmantik_visitor;

--
-- Name: COLUMN site_members.user_id; Type: ACL; Schema: app_public; Owner: -
--

GRANT INSERT(user_id) ON TABLE app_public.site_members TO opsmantik_visitor;

--
-- Name: COLUMN site_members.role; Type: ACL; Schema: app_public; Owner: -
--

GRANT INSERT(role),UPDATE(role) ON TABLE app_public.site_members TO opsmantik_visitor;

--
-- Name: FUNCTION add_site_member(site_id uuid, email text, role app_public.site_role); Type: ACL; Schema: app_public; Owner: -
--

REVOKE ALL ON FUNCTION app_public.add_site_member(site_id uuid, email text, role app_public.site_role) FROM PUBLIC;
GRANT ALL ON FUNCTION app_public.add_site_member(site_id uuid, email text, role app_public.site_role) TO opsmantik_visitor;

--
-- Name: FUNCTION billing_reconciliation(site_id uuid, period date); Type: ACL; Schema: app_public; Owner: -
--

REVOKE ALL ON FUNCTION app_public.billing_reconciliation(site_id uuid, period date) FROM PUBLIC;
GRANT ALL ON FUNCTION app_public.billing_reconciliation(site_id uuid, period date) TO opsmantik_visitor;

--
-- Name: FUNCTION confirm_sale_and_enqueue(site_id uuid, external_id text, amount numeric, currency text, occurred_at timestamp with time zone, session_id uuid, visitor_id text, call_id text, gclid text, email text, phone text, consent jsonb); Type: ACL; Schema: app_public; Owner: -
--

REVOKE ALL ON FUNCTION app_public.confirm_sale_and_enqueue(site_id uuid, external_id text, amount numeric, currency text, occurred_at timestamp with time zone, session_id uuid, visitor_id text, call_id text, gclid text, email text, phone text, consent jsonb) FROM PUBLIC;
GRANT ALL ON FUNCTION app_public.confirm_sale_and_enqueue(site_id uuid, external_id text, amount numeric, currency text, occurred_at timestamp with time zone, session_id uuid, visitor_id text, call_id text, gclid text, email text, phone text, consent jsonb) TO opsmantik_visitor;

--
-- Name: FUNCTION create_api_key(site_id uuid, role app_public.site_role, name text); Type: ACL; Schema: app_public; Owner: -
--

REVOKE ALL ON FUNCTION app_public.create_api_key(site_id uuid, role app_public.site_role, name text) FROM PUBLIC;
GRANT ALL ON FUNCTION app_public.create_api_key(site_id uuid, role app_public.site_role, name text) TO opsmantik_visitor;

--
-- Name: FUNCTION create_destination(site_id uuid, rail text, customer_id text, conversion_action text, login_customer_id text); Type: ACL; Schema: app_public; Owner: -
--

REVOKE ALL ON FUNCTION app_public.create_destination(site_id uuid, rail text, customer_id text, conversion_action text, login_customer_id text) FROM PUBLIC;
GRANT ALL ON FUNCTION app_public.create_destination(site_id uuid, rail text, customer_id text, conversion_action text, login_customer_id text) TO opsmantik_visitor;

--
-- Name: FUNCTION create_site(name text, domain text); Type: ACL; Schema: app_public; Owner: -
--

REVOKE ALL ON FUNCTION app_public.create_site(name text, domain text) FROM PUBLIC;
GRANT ALL ON FUNCTION app_public.create_site(name text, domain text) TO opsmantik_visitor;

--
-- Name: TABLE users; Type: ACL; Schema: app_public; Owner: -
--

GRANT SELECT ON TABLE app_public.users TO opsmantik_visitor;

--
-- Name: COLUMN users.display_name; Type: ACL; Schema: app_public; Owner: -
--

GRANT UPDATE(display_name) ON TABLE app_public.users TO opsmantik_visitor;

--
-- Name: FUNCTION "current_user"(); Type: ACL; Schema: app_public; Owner: -
--

REVOKE ALL ON FUNCTION app_public."current_user"() FROM PUBLIC;
GRANT ALL ON FUNCTION app_public."current_user"() TO opsmantik_visitor;

--
-- Name: FUNCTION delete_site(site_id uuid); Type: ACL; Schema: app_public; Owner: -
--

REVOKE ALL ON FUNCTION app_public.delete_site(site_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION app_public.delete_site(site_id uuid) TO opsmantik_visitor;

--
-- Name: FUNCTION destinations_conversion_totals(d app_public.destinations); Type: ACL; Schema: app_public; Owner: -
--

REVOKE ALL ON FUNCTION app_public.destinations_conversion_totals(d app_public.destinations) FROM PUBLIC;
GRANT ALL ON FUNCTION app_public.destinations_conversion_totals(d app_public.destinations) TO opsmantik_visitor;

--
-- Name: FUNCTION export_subject_data(site_id uuid, kind text, value text); Type: ACL; Schema: app_public; Owner: -
--

REVOKE ALL ON FUNCTION app_public.export_subject_data(site_id uuid, kind text, value text) FROM PUBLIC;
GRANT ALL ON FUNCTION app_public.export_subject_data(site_id uuid, kind text, value text) TO opsmantik_visitor;

--
-- Name: TABLE invoice_snapshots; Type: ACL; Schema: app_public; Owner: -
--

GRANT SELECT ON TABLE app_public.invoice_snapshots TO opsmantik_visitor;

--
-- Name: FUNCTION freeze_invoice(site_id uuid, period date); Type: ACL; Schema: app_public; Owner: -
--

REVOKE ALL ON FUNCTION app_public.freeze_invoice(site_id uuid, period date) FROM PUBLIC;
GRANT ALL ON FUNCTION app_public.freeze_invoice(site_id uuid, period date) TO opsmantik_visitor;

--
-- Name: FUNCTION junk_call(site_id uuid, call_id uuid); Type: ACL; Schema: app_public; Owner: -
--

REVOKE ALL ON FUNCTION app_public.junk_call(site_id uuid, call_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION app_public.junk_call(site_id uuid, call_id uuid) TO opsmantik_visitor;

--
-- Name: FUNCTION remove_site_member(site_id uuid, user_id uuid); Type: ACL; Schema: app_public; Owner: -
--

REVOKE ALL ON FUNCTION app_public.remove_site_member(site_id uuid, user_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION app_public.remove_site_member(site_id uuid, user_id uuid) TO opsmantik_visitor;

--
-- Name: TABLE erasure_requests; Type: ACL; Schema: app_public; Owner: -
--

GRANT SELECT ON TABLE app_public.erasure_requests TO opsmantik_visitor;

--
-- Name: FUNCTION request_erasure(site_id uuid, kind text, value text); Type: ACL; Schema: app_public; Owner: -
--

REVOKE ALL ON FUNCTION app_public.request_erasure(site_id uuid, kind text, value text) FROM PUBLIC;
GRANT ALL ON FUNCTION app_public.request_erasure(site_id uuid, kind text, value text) TO opsmantik_visitor;

--
-- Name: TABLE api_keys; Type: ACL; Schema: app_public; Owner: -
--

GRANT SELECT ON TABLE app_public.api_keys TO opsmantik_visitor;

--
-- Name: FUNCTION revoke_api_key(api_key_id uuid); Type: ACL; Schema: app_public; Owner: -
--

REVOKE ALL ON FUNCTION app_public.revoke_api_key(api_key_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION app_public.revoke_api_key(api_key_id uuid) TO opsmantik_visitor;

--
-- Name: FUNCTION seal_call(site_id uuid, call_id uuid, value numeric, currency text); Type: ACL; Schema: app_public; Owner: -
--

REVOKE ALL ON FUNCTION app_public.seal_call(site_id uuid, call_id uuid, value numeric, currency text) FROM PUBLIC;
GRANT ALL ON FUNCTION app_public.seal_call(site_id uuid, call_id uuid, value numeric, currency text) TO opsmantik_visitor;

--
-- Name: FUNCTION set_data_retention(site_id uuid, months integer); Type: ACL; Schema: app_public; Owner: -
--

REVOKE ALL ON FUNCTION app_public.set_data_retention(site_id uuid, months integer) FROM PUBLIC;
GRANT ALL ON FUNCTION app_public.set_data_retention(site_id uuid, months integer) TO opsmantik_visitor;

--
-- Name: FUNCTION set_destination_status(destination_id uuid, status text); Type: ACL; Schema: app_public; Owner: -
--

REVOKE ALL ON FUNCTION app_public.set_destination_status(destination_id uuid, status text) FROM PUBLIC;
GRANT ALL ON FUNCTION app_public.set_destination_status(destination_id uuid, status text) TO opsmantik_visitor;

--
-- Name: FUNCTION undo_call_action(site_id uuid, call_id uuid); Type: ACL; Schema: app_public; Owner: -
--

REVOKE ALL ON FUNCTION app_public.undo_call_action(site_id uuid, call_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION app_public.undo_call_action(site_id uuid, call_id uuid) TO opsmantik_visitor;

--
-- Name: FUNCTION update_current_user(display_name text); Type: ACL; Schema: app_public; Owner: -
--

REVOKE ALL ON FUNCTION app_public.update_current_user(display_name text) FROM PUBLIC;
GRANT ALL ON FUNCTION app_public.update_current_user(display_name text) TO opsmantik_visitor;

--
-- Name: FUNCTION update_offline_conversion_queue_attribution(site_id uuid); Type: ACL; Schema: app_public; Owner: -
--

REVOKE ALL ON FUNCTION app_public.update_offline_conversion_queue_attribution(site_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION app_public.update_offline_conversion_queue_attribution(site_id uuid) TO opsmantik_visitor;

--
-- Name: FUNCTION update_site_settings(site_id uuid, name text, domain text, allowed_origins text[], consent_mode text, monthly_event_quota bigint, rate_limit_per_minute integer, timezone text, currency text); Type: ACL; Schema: app_public; Owner: -
--

REVOKE ALL ON FUNCTION app_public.update_site_settings(site_id uuid, name text, domain text, allowed_origins text[], consent_mode text, monthly_event_quota bigint, rate_limit_per_minute integer, timezone text, currency text) FROM PUBLIC;
GRANT ALL ON FUNCTION app_public.update_site_settings(site_id uuid, name text, domain text, allowed_origins text[], consent_mode text, monthly_event_quota bigint, rate_limit_per_minute integer, timezone text, currency text) TO opsmantik_visitor;

--
-- Name: FUNCTION verify_audit_chain(site_id uuid); Type: ACL; Schema: app_public; Owner: -
--

REVOKE ALL ON FUNCTION app_public.verify_audit_chain(site_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION app_public.verify_audit_chain(site_id uuid) TO opsmantik_visitor;

--
-- Name: TABLE consents; Type: ACL; Schema: app_public; Owner: -
--

GRANT SELECT ON TABLE app_public.consents TO opsmantik_visitor;

--
-- Name: TABLE conversations; Type: ACL; Schema: app_public; Owner: -
--

GRANT SELECT ON TABLE app_public.conversations TO opsmantik_visitor;

--
-- Name: TABLE events; Type: ACL; Schema: app_public; Owner: -
--

GRANT SELECT ON TABLE app_public.events TO opsmantik_visitor;

--
-- Name: TABLE ingest_idempotency; Type: ACL; Schema: app_public; Owner: -
--

GRANT SELECT ON TABLE app_public.ingest_idempotency TO opsmantik_visitor;

--
-- Name: TABLE watchtower_checks; Type: ACL; Schema: app_public; Owner: -
--

GRANT SELECT ON TABLE app_public.watchtower_checks TO opsmantik_visitor;

--
-- Name: DEFAULT PRIVILEGES FOR SEQUENCES; Type: DEFAULT ACL; Schema: app_hidden; Owner: -
--

ALTER DEFAULT PRIVILEGES FOR ROLE opsmantik_owner IN SCHEMA app_hidden GRANT SELECT,USAGE ON SEQUENCES  TO opsmantik_visitor;

--
-- Name: DEFAULT PRIVILEGES FOR FUNCTIONS; Type: DEFAULT ACL; Schema: app_hidden; Owner: -
--

ALTER DEFAULT PRIVILEGES FOR ROLE opsmantik_owner IN SCHEMA app_hidden GRANT ALL ON FUNCTIONS  TO opsmantik_visitor;

--
-- Name: DEFAULT PRIVILEGES FOR SEQUENCES; Type: DEFAULT ACL; Schema: app_public; Owner: -
--

ALTER DEFAULT PRIVILEGES FOR ROLE opsmantik_owner IN SCHEMA app_public GRANT SELECT,USAGE ON SEQUENCES  TO opsmantik_visitor;

--
-- Name: DEFAULT PRIVILEGES FOR FUNCTIONS; Type: DEFAULT ACL; Schema: app_public; Owner: -
--

ALTER DEFAULT PRIVILEGES FOR ROLE opsmantik_owner IN SCHEMA app_public GRANT ALL ON FUNCTIONS  TO opsmantik_visitor;

--
-- PostgreSQL database dump complete
--

