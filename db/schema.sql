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

SET default_table_access_method = heap;

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
    CONSTRAINT sites_allowed_origins_format CHECK ((array_to_string(allowed_origins, ' '::text) ~ '^(https?://[a-z0-9.-]+(:[0-9]{1,5})?( |$))*$'::text)),
    CONSTRAINT sites_consent_mode CHECK ((consent_mode = ANY (ARRAY['required'::text, 'implied'::text]))),
    CONSTRAINT sites_currency_format CHECK ((currency ~ '^[A-Z]{3}$'::text)),
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
-- Name: call_event_secrets call_event_secrets_pkey; Type: CONSTRAINT; Schema: app_private; Owner: -
--

ALTER TABLE ONLY app_private.call_event_secrets
    ADD CONSTRAINT call_event_secrets_pkey PRIMARY KEY (site_id);

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
-- Name: api_keys_created_by_idx; Type: INDEX; Schema: app_public; Owner: -
--

CREATE INDEX api_keys_created_by_idx ON app_public.api_keys USING btree (created_by);

--
-- Name: site_members_site_id_role_idx; Type: INDEX; Schema: app_public; Owner: -
--

CREATE INDEX site_members_site_id_role_idx ON app_public.site_members USING btree (site_id, role);

--
-- Name: site_members_user_id_idx; Type: INDEX; Schema: app_public; Owner: -
--

CREATE INDEX site_members_user_id_idx ON app_public.site_members USING btree (user_id);

--
-- Name: call_event_secrets _500_audit; Type: TRIGGER; Schema: app_private; Owner: -
--

CREATE TRIGGER _500_audit AFTER INSERT OR DELETE OR UPDATE ON app_private.call_event_secrets FOR EACH ROW EXECUTE FUNCTION app_private.tg__audit('site_id', 'site_id', 'current_secret', 'previous_secret');

--
-- Name: audit_log _100_append_only; Type: TRIGGER; Schema: app_public; Owner: -
--

CREATE TRIGGER _100_append_only BEFORE DELETE OR UPDATE ON app_public.audit_log FOR EACH ROW EXECUTE FUNCTION app_private.tg__refuse_change();

--
-- Name: audit_log _100_append_only_truncate; Type: TRIGGER; Schema: app_public; Owner: -
--

CREATE TRIGGER _100_append_only_truncate BEFORE TRUNCATE ON app_public.audit_log FOR EACH STATEMENT EXECUTE FUNCTION app_private.tg__refuse_change();

--
-- Name: sites _100_touch_updated_at; Type: TRIGGER; Schema: app_public; Owner: -
--

CREATE TRIGGER _100_touch_updated_at BEFORE UPDATE ON app_public.sites FOR EACH ROW EXECUTE FUNCTION app_private.tg__touch_updated_at();

--
-- Name: users _100_touch_updated_at; Type: TRIGGER; Schema: app_public; Owner: -
--

CREATE TRIGGER _100_touch_updated_at BEFORE UPDATE ON app_public.users FOR EACH ROW EXECUTE FUNCTION app_private.tg__touch_updated_at();

--
-- Name: sites _200_issue_call_event_secret; Type: TRIGGER; Schema: app_public; Owner: -
--

CREATE TRIGGER _200_issue_call_event_secret AFTER INSERT ON app_public.sites FOR EACH ROW EXECUTE FUNCTION app_private.tg_sites__issue_call_event_secret();

--
-- Name: api_keys _500_audit; Type: TRIGGER; Schema: app_public; Owner: -
--

CREATE TRIGGER _500_audit AFTER INSERT OR DELETE OR UPDATE ON app_public.api_keys FOR EACH ROW EXECUTE FUNCTION app_private.tg__audit('site_id', 'id', '-last_used_at');

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
-- Name: api_key_hashes; Type: ROW SECURITY; Schema: app_private; Owner: -
--

ALTER TABLE app_private.api_key_hashes ENABLE ROW LEVEL SECURITY;

--
-- Name: audit_chain_heads; Type: ROW SECURITY; Schema: app_private; Owner: -
--

ALTER TABLE app_private.audit_chain_heads ENABLE ROW LEVEL SECURITY;

--
-- Name: call_event_secrets; Type: ROW SECURITY; Schema: app_private; Owner: -
--

ALTER TABLE app_private.call_event_secrets ENABLE ROW LEVEL SECURITY;

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
-- Name: site_members delete_admin; Type: POLICY; Schema: app_public; Owner: -
--

CREATE POLICY delete_admin ON app_public.site_members FOR DELETE USING (((site_id IN ( SELECT app_hidden.current_user_site_ids('admin'::app_public.site_role) AS current_user_site_ids)) AND ((role < 'admin'::app_public.site_role) OR (site_id IN ( SELECT app_hidden.current_user_site_ids('owner'::app_public.site_role) AS current_user_site_ids)))));

--
-- Name: sites delete_owner; Type: POLICY; Schema: app_public; Owner: -
--

CREATE POLICY delete_owner ON app_public.sites FOR DELETE USING ((id IN ( SELECT app_hidden.current_user_site_ids('owner'::app_public.site_role) AS current_user_site_ids)));

--
-- Name: site_members insert_admin; Type: POLICY; Schema: app_public; Owner: -
--

CREATE POLICY insert_admin ON app_public.site_members FOR INSERT WITH CHECK (((site_id IN ( SELECT app_hidden.current_user_site_ids('admin'::app_public.site_role) AS current_user_site_ids)) AND ((role < 'admin'::app_public.site_role) OR (site_id IN ( SELECT app_hidden.current_user_site_ids('owner'::app_public.site_role) AS current_user_site_ids)))));

--
-- Name: api_keys select_admin; Type: POLICY; Schema: app_public; Owner: -
--

CREATE POLICY select_admin ON app_public.api_keys FOR SELECT USING ((site_id IN ( SELECT app_hidden.current_user_site_ids('admin'::app_public.site_role) AS current_user_site_ids)));

--
-- Name: audit_log select_admin; Type: POLICY; Schema: app_public; Owner: -
--

CREATE POLICY select_admin ON app_public.audit_log FOR SELECT USING ((site_id IN ( SELECT app_hidden.current_user_site_ids('admin'::app_public.site_role) AS current_user_site_ids)));

--
-- Name: site_members select_member; Type: POLICY; Schema: app_public; Owner: -
--

CREATE POLICY select_member ON app_public.site_members FOR SELECT USING ((site_id IN ( SELECT app_hidden.current_user_site_ids() AS current_user_site_ids)));

--
-- Name: sites select_member; Type: POLICY; Schema: app_public; Owner: -
--

CREATE POLICY select_member ON app_public.sites FOR SELECT USING ((id IN ( SELECT app_hidden.current_user_site_ids() AS current_user_site_ids)));

--
-- Name: users select_visible; Type: POLICY; Schema: app_public; Owner: -
--

CREATE POLICY select_visible ON app_public.users FOR SELECT USING (((id = app_hidden.current_user_id()) OR (id IN ( SELECT m.user_id
   FROM app_public.site_members m
  WHERE (m.site_id IN ( SELECT app_hidden.current_user_site_ids() AS current_user_site_ids)))) OR ( SELECT app_hidden.current_user_is_platform_admin() AS current_user_is_platform_admin)));

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
-- Name: FUNCTION is_valid_timezone(tz text); Type: ACL; Schema: app_hidden; Owner: -
--

REVOKE ALL ON FUNCTION app_hidden.is_valid_timezone(tz text) FROM PUBLIC;
GRANT ALL ON FUNCTION app_hidden.is_valid_timezone(tz text) TO opsmantik_visitor;

--
-- Name: FUNCTION raise_forbidden(site_id uuid, action text, target_table text, target_id text); Type: ACL; Schema: app_hidden; Owner: -
--

REVOKE ALL ON FUNCTION app_hidden.raise_forbidden(site_id uuid, action text, target_table text, target_id text) FROM PUBLIC;
GRANT ALL ON FUNCTION app_hidden.raise_forbidden(site_id uuid, action text, target_table text, target_id text) TO opsmantik_visitor;

--
-- Name: FUNCTION append_audit(site_id uuid, action text, target_table text, target_id text, old_values jsonb, new_values jsonb, actor_user_id uuid, actor_api_key_id uuid, actor_db_role text); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.append_audit(site_id uuid, action text, target_table text, target_id text, old_values jsonb, new_values jsonb, actor_user_id uuid, actor_api_key_id uuid, actor_db_role text) FROM PUBLIC;

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
-- Name: FUNCTION create_site(owner_id uuid, name text, domain text, consent_mode text, monthly_event_quota bigint, rate_limit_per_minute integer, allowed_origins text[], timezone text, currency text); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.create_site(owner_id uuid, name text, domain text, consent_mode text, monthly_event_quota bigint, rate_limit_per_minute integer, allowed_origins text[], timezone text, currency text) FROM PUBLIC;

--
-- Name: FUNCTION issue_api_key(site_id uuid, role app_public.site_role, name text, created_by uuid); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.issue_api_key(site_id uuid, role app_public.site_role, name text, created_by uuid) FROM PUBLIC;

--
-- Name: FUNCTION new_call_event_secret(); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.new_call_event_secret() FROM PUBLIC;

--
-- Name: FUNCTION record_denied_attempt(detail jsonb); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.record_denied_attempt(detail jsonb) FROM PUBLIC;

--
-- Name: FUNCTION record_worker_heartbeat(worker_name text); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.record_worker_heartbeat(worker_name text) FROM PUBLIC;

--
-- Name: FUNCTION tg__audit(); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.tg__audit() FROM PUBLIC;

--
-- Name: FUNCTION tg__refuse_change(); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.tg__refuse_change() FROM PUBLIC;

--
-- Name: FUNCTION tg__touch_updated_at(); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.tg__touch_updated_at() FROM PUBLIC;

--
-- Name: FUNCTION tg_site_members__keep_an_owner(); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.tg_site_members__keep_an_owner() FROM PUBLIC;

--
-- Name: FUNCTION tg_sites__issue_call_event_secret(); Type: ACL; Schema: app_private; Owner: -
--

REVOKE ALL ON FUNCTION app_private.tg_sites__issue_call_event_secret() FROM PUBLIC;

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
-- Name: FUNCTION create_api_key(site_id uuid, role app_public.site_role, name text); Type: ACL; Schema: app_public; Owner: -
--

REVOKE ALL ON FUNCTION app_public.create_api_key(site_id uuid, role app_public.site_role, name text) FROM PUBLIC;
GRANT ALL ON FUNCTION app_public.create_api_key(site_id uuid, role app_public.site_role, name text) TO opsmantik_visitor;

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
-- Name: FUNCTION remove_site_member(site_id uuid, user_id uuid); Type: ACL; Schema: app_public; Owner: -
--

REVOKE ALL ON FUNCTION app_public.remove_site_member(site_id uuid, user_id uuid) FROM PUBLIC;
GRANT ALL ON FUNCTION app_public.remove_site_member(site_id uuid, user_id uuid) TO opsmantik_visitor;

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
-- Name: FUNCTION update_current_user(display_name text); Type: ACL; Schema: app_public; Owner: -
--

REVOKE ALL ON FUNCTION app_public.update_current_user(display_name text) FROM PUBLIC;
GRANT ALL ON FUNCTION app_public.update_current_user(display_name text) TO opsmantik_visitor;

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

