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
