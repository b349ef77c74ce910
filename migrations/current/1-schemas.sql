/*
 * Three schemas, one meaning each:
 *   app_public  - what GraphQL exposes to dashboards; every row guarded by RLS;
 *   app_hidden  - helpers the visitor role may call (RLS helpers) but GraphQL never shows;
 *   app_private - secrets, chain heads and privileged functions, never granted to clients.
 * The whole file is idempotent while it lives in migrations/current: it drops our schemas
 * first and builds everything again.
 */
drop schema if exists app_public cascade;
drop schema if exists app_hidden cascade;
drop schema if exists app_private cascade;

alter default privileges revoke execute on functions from public;
revoke all on schema public from public;
grant usage on schema public to :DATABASE_VISITOR;
grant all on schema public to :DATABASE_OWNER;

create schema app_public;
create schema app_hidden;
create schema app_private;
comment on schema app_public is E'Tenant-scoped objects exposed through GraphQL. Every table is guarded by row-level security.';
comment on schema app_hidden is E'Helpers the visitor role may use (row-level-security helpers); never exposed through GraphQL.';
comment on schema app_private is E'Secrets, chain heads and privileged functions. Never granted to any client role.';

grant usage on schema app_public, app_hidden to :DATABASE_VISITOR;
alter default privileges in schema app_public, app_hidden
  grant usage, select on sequences to :DATABASE_VISITOR;
alter default privileges in schema app_public, app_hidden
  grant execute on functions to :DATABASE_VISITOR;

/*
 * Who is asking. The HTTP layer verifies the credential (JWT or API key) and passes the
 * result as transaction-local settings; these helpers read them. An absent or empty setting
 * means "nobody", so a request without credentials sees an empty world rather than an error.
 */
create function app_hidden.current_user_id() returns uuid
  language sql stable parallel safe
  set search_path to pg_catalog, public, pg_temp
as $$
  select nullif(pg_catalog.current_setting('app.user_id', true), '')::uuid;
$$;
comment on function app_hidden.current_user_id() is
  E'The dashboard user of this request (from a verified JWT), or null.';

create function app_hidden.current_api_key_id() returns uuid
  language sql stable parallel safe
  set search_path to pg_catalog, public, pg_temp
as $$
  select nullif(pg_catalog.current_setting('app.api_key_id', true), '')::uuid;
$$;
comment on function app_hidden.current_api_key_id() is
  E'The site API key of this request (already verified by the HTTP layer), or null.';

/*
 * Denials are raised with SQLSTATE OM403 and a JSON detail naming actor and target. The HTTP
 * layer turns them into a plain "forbidden" for the client and records the detail in the audit
 * log on a separate connection, so the record survives the rollback of the failed request.
 * The same error is raised whether the target exists or not: a denial reveals nothing.
 */
create function app_hidden.raise_forbidden(
  site_id uuid, action text, target_table text, target_id text
) returns void
  language plpgsql stable
  set search_path to pg_catalog, public, pg_temp
as $$
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
comment on function app_hidden.raise_forbidden(uuid, text, text, text) is
  E'Raises OM403 with a JSON detail the HTTP layer records as a denied attempt.';
