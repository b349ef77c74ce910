--! Previous: -
--! Hash: sha1:6b655e1212e55946ffdc6a703e8423f2490e7719
--! Message: foundation

--! split: 1-schemas.sql
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

--! split: 2-tenancy.sql
/*
 * Tenancy. A site is the tenant: every tenant row carries site_id and leads its primary key
 * with it (so a later move to Citus, distributed by site_id, is configuration, not a rewrite).
 * People are users; site_members gives them one role per site. The roles are an ordered enum,
 * so "editor or better" is simply role >= 'editor'.
 */
create type app_public.site_role as enum ('viewer', 'editor', 'admin', 'owner');
comment on type app_public.site_role is
  E'A member''s role on a site, weakest first: viewer < editor < admin < owner.';

create function app_hidden.is_valid_timezone(tz text) returns boolean
  language plpgsql stable
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  perform pg_catalog.timezone(tz, pg_catalog.now());
  return true;
exception when invalid_parameter_value then
  return false;
end;
$$;
comment on function app_hidden.is_valid_timezone(text) is E'True when PostgreSQL knows the IANA time zone.';

/* ---------------------------------------------------------------- users */
create table app_public.users (
  id uuid primary key default gen_random_uuid(),
  email citext not null unique
    constraint users_email_format check (email ~ '^[^@[:space:]]+@[^@[:space:]]+\.[^@[:space:]]+$'),
  display_name text constraint users_display_name_length check (length(display_name) <= 200),
  is_platform_admin boolean not null default false,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on table app_public.users is E'A person who signs in to dashboards. Users belong to sites through site members.';
comment on column app_public.users.id is E'Stable identifier; the `sub` claim of dashboard tokens.';
comment on column app_public.users.email is E'Sign-in address, unique, case-insensitive. Visible to the user and to co-members of their sites.';
comment on column app_public.users.display_name is E'Name shown to co-members.';
comment on column app_public.users.is_platform_admin is E'Platform operators see and manage every site. Granted only from the CLI.';
comment on column app_public.users.created_at is E'When the user was created.';
comment on column app_public.users.updated_at is E'When the user last changed.';
alter table app_public.users enable row level security;

/* ---------------------------------------------------------------- sites */
create table app_public.sites (
  id uuid primary key default gen_random_uuid(),
  name text not null constraint sites_name_length check (length(name) between 1 and 200),
  domain text not null constraint sites_domain_format
    check (domain ~ '^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$'),
  public_key text not null unique
    default 'pk_' || encode(gen_random_bytes(16), 'hex')
    constraint sites_public_key_format check (public_key ~ '^pk_[0-9a-f]{32}$'),
  allowed_origins text[] not null default '{}'
    constraint sites_allowed_origins_format
    check (array_to_string(allowed_origins, ' ') ~ '^(https?://[a-z0-9.-]+(:[0-9]{1,5})?( |$))*$'),
  consent_mode text not null default 'required'
    constraint sites_consent_mode check (consent_mode in ('required', 'implied')),
  monthly_event_quota bigint
    constraint sites_monthly_event_quota_positive check (monthly_event_quota >= 0),
  rate_limit_per_minute integer not null default 600
    constraint sites_rate_limit_non_negative check (rate_limit_per_minute >= 0),
  timezone text not null default 'UTC'
    constraint sites_timezone_known check (app_hidden.is_valid_timezone(timezone)),
  currency text not null default 'USD' constraint sites_currency_format check (currency ~ '^[A-Z]{3}$'),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on table app_public.sites is E'A tracked website: the tenant. Everything else belongs to exactly one site.';
comment on column app_public.sites.id is E'The tenant identifier (site_id everywhere else).';
comment on column app_public.sites.name is E'Human name of the site.';
comment on column app_public.sites.domain is E'Registrable domain; tracked URLs must be on it or a subdomain.';
comment on column app_public.sites.public_key is E'Public key the tracker sends with events. Not a secret: it identifies, it does not authorise.';
comment on column app_public.sites.allowed_origins is E'Browser origins (scheme://host[:port]) allowed to send tracker events, besides the global list.';
comment on column app_public.sites.consent_mode is E'`required`: nothing identifying is kept without analytics consent (EEA/UK/TR default). `implied`: granted unless denied.';
comment on column app_public.sites.monthly_event_quota is E'Billable events allowed per UTC calendar month; null means unlimited.';
comment on column app_public.sites.rate_limit_per_minute is E'Tracker requests allowed per client IP per minute; 0 turns the limit off.';
comment on column app_public.sites.timezone is E'IANA time zone used for reports and conversion times.';
comment on column app_public.sites.currency is E'ISO 4217 currency of the site''s revenue.';
comment on column app_public.sites.created_at is E'When the site was created.';
comment on column app_public.sites.updated_at is E'When the site''s settings last changed.';
alter table app_public.sites enable row level security;

/* --------------------------------------------------------- site members */
create table app_public.site_members (
  site_id uuid not null references app_public.sites on delete cascade,
  user_id uuid not null references app_public.users on delete cascade,
  role app_public.site_role not null,
  created_at timestamptz not null default now(),
  primary key (site_id, user_id)
);
create index site_members_user_id_idx on app_public.site_members (user_id);
-- Policies filter on site_id and then role (admins manage only non-admin rows).
create index site_members_site_id_role_idx on app_public.site_members (site_id, role);
comment on table app_public.site_members is E'Who may work on a site, and with which role.';
comment on column app_public.site_members.site_id is E'The site.';
comment on column app_public.site_members.user_id is E'The member.';
comment on column app_public.site_members.role is E'owner > admin > editor > viewer.';
comment on column app_public.site_members.created_at is E'When the membership was granted.';
alter table app_public.site_members enable row level security;

/* ------------------------------------------------------------- api keys */
/*
 * Integrations (CRMs, scripts) act on one site with an API key. Only a SHA-256 of the key is
 * kept: the key is shown once, at creation, and can never be read back. Keys are looked up by
 * their hash (a 192-bit random key makes guessing through timing meaningless).
 */
create table app_public.api_keys (
  site_id uuid not null references app_public.sites on delete cascade,
  id uuid not null default gen_random_uuid(),
  name text not null default '' constraint api_keys_name_length check (length(name) <= 200),
  role app_public.site_role not null constraint api_keys_role_not_owner check (role < 'owner'),
  key_prefix text not null,
  created_by uuid references app_public.users on delete set null,
  created_at timestamptz not null default now(),
  last_used_at timestamptz,
  revoked_at timestamptz,
  primary key (site_id, id),
  unique (id)
);
create index api_keys_created_by_idx on app_public.api_keys (created_by);
comment on table app_public.api_keys is E'Site API keys for integrations. The key itself is never stored, only its SHA-256 (in app_private).';
comment on column app_public.api_keys.site_id is E'The site the key acts on.';
comment on column app_public.api_keys.id is E'Identifier used to revoke the key.';
comment on column app_public.api_keys.name is E'What the key is for.';
comment on column app_public.api_keys.role is E'The role the key acts with (viewer, editor or admin; never owner).';
comment on column app_public.api_keys.key_prefix is E'The first characters of the key, to recognise it in lists.';
comment on column app_public.api_keys.created_by is E'The user who created the key, if any.';
comment on column app_public.api_keys.created_at is E'When the key was created.';
comment on column app_public.api_keys.last_used_at is E'When the key last authenticated a request (updated at most once a minute).';
comment on column app_public.api_keys.revoked_at is E'When the key was revoked; a revoked key authenticates nothing.';
alter table app_public.api_keys enable row level security;

create table app_private.api_key_hashes (
  site_id uuid not null,
  api_key_id uuid not null,
  key_hash bytea not null unique,
  primary key (site_id, api_key_id),
  foreign key (site_id, api_key_id) references app_public.api_keys (site_id, id) on delete cascade
);
comment on table app_private.api_key_hashes is E'SHA-256 of each API key, kept apart from everything a client can read.';
alter table app_private.api_key_hashes enable row level security;

/*
 * The one helper every policy calls, in the initPlan form `site_id in (select ...)` so that
 * PostgreSQL evaluates it once per statement instead of once per row. Security definer: it
 * reads site_members and api_keys without recursing into their own policies.
 */
create function app_hidden.current_user_is_platform_admin() returns boolean
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select coalesce((select u.is_platform_admin from app_public.users u
                   where u.id = app_hidden.current_user_id()), false);
$$;
comment on function app_hidden.current_user_is_platform_admin() is
  E'True when the request''s user is a platform operator.';

create function app_hidden.current_user_site_ids(min_role app_public.site_role default 'viewer')
  returns setof uuid
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
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
comment on function app_hidden.current_user_site_ids(app_public.site_role) is
  E'Sites on which the request''s user or API key holds at least min_role. Use as `site_id in (select app_hidden.current_user_site_ids())`.';

/*
 * The guard for every write function: raise OM403 (recorded as a denied attempt) unless the
 * caller holds min_role on the site.
 */
create function app_hidden.assert_site_role(
  site_id uuid, min_role app_public.site_role, action text, target_table text, target_id text
) returns void
  language plpgsql stable
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  if assert_site_role.site_id is null or assert_site_role.site_id not in (
    select app_hidden.current_user_site_ids(assert_site_role.min_role)
  ) then
    perform app_hidden.raise_forbidden(assert_site_role.site_id, assert_site_role.action,
      assert_site_role.target_table, assert_site_role.target_id);
  end if;
end;
$$;
comment on function app_hidden.assert_site_role(uuid, app_public.site_role, text, text, text) is
  E'Raises OM403 unless the caller holds at least min_role on the site.';

/* ------------------------------------------------------------- policies */
create policy select_visible on app_public.users for select using (
  id = app_hidden.current_user_id()
  or id in (select m.user_id from app_public.site_members m
            where m.site_id in (select app_hidden.current_user_site_ids()))
  or (select app_hidden.current_user_is_platform_admin())
);
create policy update_self on app_public.users for update using (id = app_hidden.current_user_id());
grant select on app_public.users to :DATABASE_VISITOR;
grant update (display_name) on app_public.users to :DATABASE_VISITOR;

create policy select_member on app_public.sites for select
  using (id in (select app_hidden.current_user_site_ids()));
create policy update_admin on app_public.sites for update
  using (id in (select app_hidden.current_user_site_ids('admin')));
create policy delete_owner on app_public.sites for delete
  using (id in (select app_hidden.current_user_site_ids('owner')));
grant select on app_public.sites to :DATABASE_VISITOR;
grant update (name, domain, allowed_origins, consent_mode, monthly_event_quota,
              rate_limit_per_minute, timezone, currency) on app_public.sites to :DATABASE_VISITOR;
grant delete on app_public.sites to :DATABASE_VISITOR;

create policy select_member on app_public.site_members for select
  using (site_id in (select app_hidden.current_user_site_ids()));
-- Admins manage editors and viewers; only owners grant, change or remove owners and admins.
create policy insert_admin on app_public.site_members for insert with check (
  site_id in (select app_hidden.current_user_site_ids('admin'))
  and (role < 'admin' or site_id in (select app_hidden.current_user_site_ids('owner'))));
create policy update_admin on app_public.site_members for update using (
  site_id in (select app_hidden.current_user_site_ids('admin'))
  and (role < 'admin' or site_id in (select app_hidden.current_user_site_ids('owner'))))
  with check (
  site_id in (select app_hidden.current_user_site_ids('admin'))
  and (role < 'admin' or site_id in (select app_hidden.current_user_site_ids('owner'))));
create policy delete_admin on app_public.site_members for delete using (
  site_id in (select app_hidden.current_user_site_ids('admin'))
  and (role < 'admin' or site_id in (select app_hidden.current_user_site_ids('owner'))));
grant select on app_public.site_members to :DATABASE_VISITOR;
grant insert (site_id, user_id, role), update (role), delete on app_public.site_members to :DATABASE_VISITOR;

/* ------------------------------------------------------------- triggers */
create function app_private.tg__touch_updated_at() returns trigger
  language plpgsql
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  new.updated_at := greatest(pg_catalog.now(), old.updated_at + interval '1 millisecond');
  return new;
end;
$$;
comment on function app_private.tg__touch_updated_at() is E'Keeps updated_at moving forward on every update.';
create trigger _100_touch_updated_at before update on app_public.users
  for each row execute function app_private.tg__touch_updated_at();
create trigger _100_touch_updated_at before update on app_public.sites
  for each row execute function app_private.tg__touch_updated_at();

/* A site never loses its last owner (unless the site itself is being deleted). */
create function app_private.tg_site_members__keep_an_owner() returns trigger
  language plpgsql security definer
  set search_path to pg_catalog, public, pg_temp
as $$
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
comment on function app_private.tg_site_members__keep_an_owner() is E'Refuses to remove or demote a site''s last owner (OMOWN). Security definer: it must see the site and every owner, whatever the caller may see.';
create trigger _900_keep_an_owner after update or delete on app_public.site_members
  for each row execute function app_private.tg_site_members__keep_an_owner();

/* --------------------------------------------------------- write API */
/*
 * Every client write is a function: the GraphQL schema offers no generic create/update/delete.
 * Each function checks the caller's role first (a denial is recorded) and then writes under
 * RLS as the caller, so policies remain a second, independent wall.
 */
create function app_private.create_site(
  owner_id uuid, name text, domain text,
  consent_mode text default 'required', monthly_event_quota bigint default null,
  rate_limit_per_minute integer default 600, allowed_origins text[] default '{}',
  timezone text default 'UTC', currency text default 'USD'
) returns app_public.sites
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
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
comment on function app_private.create_site(uuid, text, text, text, bigint, integer, text[], text, text) is
  E'Creates a site with its first owner. Used by the CLI and by app_public.create_site.';

create function app_public.create_site(name text, domain text) returns app_public.sites
  language plpgsql strict volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  if app_hidden.current_user_id() is null then
    perform app_hidden.raise_forbidden(null, 'create_site', 'sites', null);
  end if;
  return app_private.create_site(app_hidden.current_user_id(), create_site.name, create_site.domain);
end;
$$;
comment on function app_public.create_site(text, text) is
  E'Creates a site owned by the signed-in user. Settings start at safe defaults (consent required).';

create function app_public.update_site_settings(
  site_id uuid, name text default null, domain text default null, allowed_origins text[] default null,
  consent_mode text default null, monthly_event_quota bigint default null,
  rate_limit_per_minute integer default null, timezone text default null, currency text default null
) returns app_public.sites
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
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
comment on function app_public.update_site_settings(uuid, text, text, text[], text, bigint, integer, text, text) is
  E'Changes a site''s settings (admin or owner). Arguments left null keep their value.';

create function app_public.delete_site(site_id uuid) returns boolean
  language plpgsql strict volatile
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  perform app_hidden.assert_site_role(delete_site.site_id, 'owner', 'delete', 'sites', delete_site.site_id::text);
  delete from app_public.sites s where s.id = delete_site.site_id;
  return found;
end;
$$;
comment on function app_public.delete_site(uuid) is E'Deletes a site and everything it holds (owner only).';

create function app_public.add_site_member(site_id uuid, email text, role app_public.site_role)
  returns app_public.site_members
  language plpgsql strict volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
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
comment on function app_public.add_site_member(uuid, text, app_public.site_role) is
  E'Gives an existing user a role on a site, or changes it. Admins manage editors and viewers; owners manage anyone.';

create function app_public.remove_site_member(site_id uuid, user_id uuid) returns boolean
  language plpgsql strict volatile
  set search_path to pg_catalog, public, pg_temp
as $$
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
comment on function app_public.remove_site_member(uuid, uuid) is
  E'Removes a member. Admins remove editors and viewers; owners remove anyone but the last owner.';

create function app_public.update_current_user(display_name text) returns app_public.users
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_user app_public.users;
begin
  update app_public.users u set display_name = update_current_user.display_name
   where u.id = app_hidden.current_user_id()
  returning * into v_user;
  return v_user;
end;
$$;
comment on function app_public.update_current_user(text) is E'Changes the signed-in user''s display name.';

create function app_public.current_user() returns app_public.users
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select u.* from app_public.users u where u.id = app_hidden.current_user_id();
$$;
comment on function app_public.current_user() is E'The signed-in user, or null.';

--! split: 3-credentials.sql
/*
 * Site credentials: API keys for integrations and the call-event signing secret.
 * Secrets are generated by the database (pgcrypto's CSPRNG), returned exactly once, and from
 * then on only their hash (API keys) or the private table (signing secrets, which the server
 * must be able to use) holds them.
 */
create policy select_admin on app_public.api_keys for select
  using (site_id in (select app_hidden.current_user_site_ids('admin')));
-- Keys are created and revoked only through the functions below (which check authority and
-- keep the hash apart); clients can read key metadata, never write it directly.
grant select on app_public.api_keys to :DATABASE_VISITOR;

create type app_public.created_api_key as (
  api_key_id uuid,
  site_id uuid,
  role app_public.site_role,
  key text
);
comment on type app_public.created_api_key is E'A new API key. `key` is shown this once and can never be read again.';

create function app_private.issue_api_key(site_id uuid, role app_public.site_role, name text, created_by uuid)
  returns app_public.created_api_key
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
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
comment on function app_private.issue_api_key(uuid, app_public.site_role, text, uuid) is
  E'Creates an API key and returns it once. Callers check authority first.';

create function app_public.create_api_key(site_id uuid, role app_public.site_role, name text default '')
  returns app_public.created_api_key
  language plpgsql strict volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
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
comment on function app_public.create_api_key(uuid, app_public.site_role, text) is
  E'Creates an API key for a site (admin or owner). The returned key is shown once.';

create function app_public.revoke_api_key(api_key_id uuid) returns app_public.api_keys
  language plpgsql strict volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
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
comment on function app_public.revoke_api_key(uuid) is
  E'Revokes an API key at once (admin or owner). Revoking twice keeps the first time.';

/*
 * Called by the HTTP layer, as the authenticator role, before a request runs. Returns nothing
 * for an unknown or revoked key. last_used_at is written at most once a minute per key so a
 * busy integration does not turn every read into a write.
 */
create function app_private.authenticate_api_key(key text)
  returns table (api_key_id uuid, site_id uuid, role app_public.site_role)
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
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
comment on function app_private.authenticate_api_key(text) is
  E'Resolves a presented API key to its id, site and role; empty when unknown or revoked.';
grant usage on schema app_private to :DATABASE_AUTHENTICATOR;
grant execute on function app_private.authenticate_api_key(text) to :DATABASE_AUTHENTICATOR;

/* ----------------------------------------------------- call-event secret */
create table app_private.call_event_secrets (
  site_id uuid primary key references app_public.sites on delete cascade,
  current_secret text not null,
  previous_secret text,
  rotated_at timestamptz not null default now()
);
comment on table app_private.call_event_secrets is
  E'HMAC secrets for signed call events. The previous secret stays valid until retired, so providers can switch without downtime.';
alter table app_private.call_event_secrets enable row level security;

create function app_private.new_call_event_secret() returns text
  language sql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
  select 'whsec_' || pg_catalog.encode(public.gen_random_bytes(32), 'hex');
$$;
comment on function app_private.new_call_event_secret() is E'A fresh 256-bit call-event signing secret.';

create function app_private.tg_sites__issue_call_event_secret() returns trigger
  language plpgsql
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  insert into app_private.call_event_secrets (site_id, current_secret)
  values (new.id, app_private.new_call_event_secret());
  return null;
end;
$$;
comment on function app_private.tg_sites__issue_call_event_secret() is E'Every new site gets a call-event signing secret.';
create trigger _200_issue_call_event_secret after insert on app_public.sites
  for each row execute function app_private.tg_sites__issue_call_event_secret();

--! split: 4-audit-log.sql
/*
 * The audit log lives in the database, so a change made through GraphQL, a CRM's API key, a
 * worker or a DBA's psql session is recorded by the same triggers. It is append-only for
 * every role, and each row carries SHA-256(previous row's hash || this row's canonical text),
 * chained per site: deleting, editing or reordering any row breaks verify_audit_chain().
 *
 * It never holds secrets or raw personal data: triggers store ids, and the columns a table
 * names as sensitive are replaced by "[redacted]".
 *
 * Rows that belong to no site (platform-level changes) use the nil UUID as their chain.
 */
create table app_public.audit_log (
  site_id uuid not null,
  seq bigint not null,
  occurred_at timestamptz not null default clock_timestamp(),
  actor_user_id uuid,
  actor_api_key_id uuid,
  actor_db_role text not null,
  action text not null,
  target_table text not null,
  target_id text,
  old_values jsonb,
  new_values jsonb,
  prev_hash bytea,
  row_hash bytea not null,
  primary key (site_id, seq)
);
-- Aggregates on: a security dashboard asks "denied attempts per day" in one query.
comment on table app_public.audit_log is
  E'@behavior +aggregates +aggregates:filterBy +aggregates:orderBy\nAppend-only, hash-chained record of every change to sensitive data and of every denied attempt.';
comment on column app_public.audit_log.site_id is E'The site whose chain holds the row (the nil UUID for platform-level rows).';
comment on column app_public.audit_log.seq is E'Position in the site''s chain, 1, 2, 3… without gaps.';
comment on column app_public.audit_log.occurred_at is E'When the change was made.';
comment on column app_public.audit_log.actor_user_id is E'The dashboard user who acted, if any.';
comment on column app_public.audit_log.actor_api_key_id is E'The API key that acted, if any.';
comment on column app_public.audit_log.actor_db_role is E'The database login that acted (a DBA''s own role for direct SQL).';
comment on column app_public.audit_log.action is E'insert, update, delete, or denied:<what was attempted>.';
comment on column app_public.audit_log.target_table is E'The table changed or targeted.';
comment on column app_public.audit_log.target_id is E'The primary key of the target row, as text.';
comment on column app_public.audit_log.old_values is E'The row before the change, secrets redacted.';
comment on column app_public.audit_log.new_values is E'The row after the change, secrets redacted.';
comment on column app_public.audit_log.prev_hash is E'row_hash of the previous row in this site''s chain (null for the first).';
comment on column app_public.audit_log.row_hash is E'SHA-256 of prev_hash and this row''s canonical text.';
alter table app_public.audit_log enable row level security;
create policy select_admin on app_public.audit_log for select
  using (site_id in (select app_hidden.current_user_site_ids('admin')));
grant select on app_public.audit_log to :DATABASE_VISITOR;

create table app_private.audit_chain_heads (
  site_id uuid primary key,
  last_seq bigint not null default 0,
  last_hash bytea
);
comment on table app_private.audit_chain_heads is
  E'The latest row of each site''s audit chain. Its row lock orders concurrent writers of one site, and it lets verification notice a removed tail.';
alter table app_private.audit_chain_heads enable row level security;

/* The canonical text of a row, hashed by the writer and re-hashed by the verifier. */
create function app_private.audit_row_hash(prev_hash bytea, entry app_public.audit_log) returns bytea
  language sql immutable parallel safe
  set search_path to pg_catalog, public, pg_temp
as $$
  select public.digest(
    coalesce(audit_row_hash.prev_hash, ''::bytea) || pg_catalog.convert_to(pg_catalog.concat_ws(E'\x1f',
      entry.site_id::text, entry.seq::text,
      pg_catalog.to_char(entry.occurred_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
      coalesce(entry.actor_user_id::text, '-'), coalesce(entry.actor_api_key_id::text, '-'),
      entry.actor_db_role, entry.action, entry.target_table, coalesce(entry.target_id, '-'),
      coalesce(entry.old_values::text, '-'), coalesce(entry.new_values::text, '-')), 'UTF8'),
    'sha256');
$$;
comment on function app_private.audit_row_hash(bytea, app_public.audit_log) is
  E'SHA-256 over the previous hash and the row''s canonical text (fields joined by U+001F).';

create function app_private.append_audit(
  site_id uuid, action text, target_table text, target_id text,
  old_values jsonb, new_values jsonb,
  actor_user_id uuid, actor_api_key_id uuid, actor_db_role text
) returns bigint
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
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
comment on function app_private.append_audit(uuid, text, text, text, jsonb, jsonb, uuid, uuid, text) is
  E'Appends one row to a site''s audit chain. The only writer of audit_log.';

/*
 * Generic audit trigger. Arguments: the column holding the site id, the column holding the row
 * id, then the columns to keep out of the log: a plain name is a secret (logged as
 * "[redacted]", or "[redacted, changed]" on the new side when it changed, so a rotation is
 * still visible); a name prefixed with "-" is noise (left out entirely, e.g. last_used_at).
 */
create function app_private.tg__audit() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
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
comment on function app_private.tg__audit() is
  E'Records a row change in the audit chain. Trigger args: site id column, row id column, secret columns (redacted), -noise columns (omitted).';

/* Append-only for every role, the owner included. */
create function app_private.tg__refuse_change() returns trigger
  language plpgsql
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  raise exception using errcode = 'OMIMM', message = pg_catalog.format('%I is append-only: %s refused.', tg_table_name, pg_catalog.lower(tg_op));
end;
$$;
comment on function app_private.tg__refuse_change() is E'Refuses updates, deletes and truncates (OMIMM) on append-only tables.';
create trigger _100_append_only before update or delete on app_public.audit_log
  for each row execute function app_private.tg__refuse_change();
create trigger _100_append_only_truncate before truncate on app_public.audit_log
  for each statement execute function app_private.tg__refuse_change();

create trigger _500_audit after insert or update or delete on app_public.site_members
  for each row execute function app_private.tg__audit('site_id', 'user_id');
create trigger _500_audit after insert or update or delete on app_public.api_keys
  for each row execute function app_private.tg__audit('site_id', 'id', '-last_used_at');
create trigger _500_audit after insert or update or delete on app_public.sites
  for each row execute function app_private.tg__audit('id', 'id', '-updated_at');
create trigger _500_audit after update of is_platform_admin on app_public.users
  for each row execute function app_private.tg__audit('no_site', 'id', 'email', 'display_name', '-created_at', '-updated_at');
create trigger _500_audit after insert or update or delete on app_private.call_event_secrets
  for each row execute function app_private.tg__audit('site_id', 'site_id', 'current_secret', 'previous_secret');

/*
 * A denied attempt, recorded by the HTTP layer on its own connection after the failed request
 * rolled back. The detail is the JSON that app_hidden.raise_forbidden put into the error.
 * A target in no existing site goes to the platform chain, so probing leaves a trace too.
 */
create function app_private.record_denied_attempt(detail jsonb) returns bigint
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
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
comment on function app_private.record_denied_attempt(jsonb) is
  E'Appends a denied attempt (from an OM403 error''s detail) to the target site''s audit chain.';

create type app_public.audit_chain_verification as (
  ok boolean,
  checked_rows bigint,
  first_bad_seq bigint,
  problem text
);
comment on type app_public.audit_chain_verification is E'Result of re-hashing a site''s audit chain.';

create function app_public.verify_audit_chain(site_id uuid) returns app_public.audit_chain_verification
  language plpgsql strict stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_entry app_public.audit_log;
  v_prev bytea;
  v_expected_seq bigint := 1;
  v_head app_private.audit_chain_heads;
begin
  -- Requests (running as the visitor role) verify only chains they administer; a DBA or a
  -- worker connecting as itself may verify any chain.
  if pg_catalog.current_setting('role', true) = ':DATABASE_VISITOR'
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
comment on function app_public.verify_audit_chain(uuid) is
  E'Re-hashes a site''s audit chain (admins of the site, or a DBA) and names the first row that was altered, removed or reordered.';

--! split: 5-worker-health.sql
/*
 * The worker proves it is alive by running a job, not by existing: a cron task writes a
 * heartbeat here and GET /api/health reads it. Platform-level, so no site_id.
 */
create table app_private.worker_heartbeats (
  worker_name text primary key,
  beat_at timestamptz not null default now()
);
comment on table app_private.worker_heartbeats is E'Last time each worker process completed a heartbeat job.';
alter table app_private.worker_heartbeats enable row level security;

create function app_private.record_worker_heartbeat(worker_name text) returns void
  language sql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
  insert into app_private.worker_heartbeats (worker_name, beat_at) values (record_worker_heartbeat.worker_name, pg_catalog.now())
  on conflict (worker_name) do update set beat_at = excluded.beat_at;
$$;
comment on function app_private.record_worker_heartbeat(text) is E'Upserts a worker''s heartbeat.';
