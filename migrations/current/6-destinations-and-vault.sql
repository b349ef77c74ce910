/*
 * Where a site's conversions go, and the credentials to get them there. Credentials are
 * encrypted in Node (AES-256-GCM envelope: a data key per row, wrapped by the active
 * VAULT_KEYS key); the database only ever holds ciphertext, and nothing a client can read
 * carries it. Destinations show metadata only: customer, last four characters, status, who/when.
 */
drop table if exists app_private.export_credentials cascade;
drop table if exists app_private.provider_credentials cascade;
drop table if exists app_public.destinations cascade;
drop function if exists app_hidden.store_provider_credentials(uuid, text, bytea, bytea, bytea, bytea, text) cascade;
drop function if exists app_public.create_destination(uuid, text, text, text, text) cascade;
drop function if exists app_public.set_destination_status(uuid, text) cascade;

create table app_public.destinations (
  site_id uuid not null references app_public.sites on delete cascade,
  id uuid not null default gen_random_uuid(),
  rail text not null constraint destinations_rail check (rail in ('datamanager', 'google_ads')),
  customer_id text not null constraint destinations_customer_id_format check (customer_id ~ '^[0-9]{10}$'),
  login_customer_id text constraint destinations_login_customer_id_format check (login_customer_id ~ '^[0-9]{10}$'),
  conversion_action text not null constraint destinations_conversion_action_format check (conversion_action ~ '^[0-9]{1,20}$'),
  status text not null default 'active' constraint destinations_status check (status in ('active', 'needs_reauth', 'paused')),
  status_reason text,
  credentials_last4 text,
  credentials_updated_at timestamptz,
  credentials_updated_by uuid,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (site_id, id),
  constraint destinations_id_key unique (id)
);
comment on table app_public.destinations is
  E'Where a site''s conversions are delivered: the rail (Data Manager API or Google Ads API), the Google Ads account and conversion action. At most one is not paused per site.';
comment on column app_public.destinations.site_id is E'The site.';
comment on column app_public.destinations.id is E'Identifier.';
comment on column app_public.destinations.rail is E'datamanager (Google''s Data Manager API, the default) or google_ads (Google Ads API, grandfathered developer tokens).';
comment on column app_public.destinations.customer_id is E'Google Ads customer id (ten digits, no dashes).';
comment on column app_public.destinations.login_customer_id is E'Manager account id used to log in, if any.';
comment on column app_public.destinations.conversion_action is E'Google Ads conversion action id.';
comment on column app_public.destinations.status is E'active, needs_reauth (Google refused the credentials: set them again) or paused.';
comment on column app_public.destinations.status_reason is E'Why it is not active (Google''s code).';
comment on column app_public.destinations.credentials_last4 is E'Last four characters of the stored refresh token (the token itself is never readable).';
comment on column app_public.destinations.credentials_updated_at is E'When the credentials were last set.';
comment on column app_public.destinations.credentials_updated_by is E'Who set them.';
comment on column app_public.destinations.created_at is E'When it was created.';
comment on column app_public.destinations.updated_at is E'When it last changed.';
create unique index destinations_one_live_per_site on app_public.destinations (site_id) where status <> 'paused';
alter table app_public.destinations enable row level security;
create policy select_member on app_public.destinations for select using (site_id in (select app_hidden.current_user_site_ids()));
grant select on app_public.destinations to :DATABASE_VISITOR;
create trigger _100_touch_updated_at before update on app_public.destinations
  for each row execute function app_private.tg__touch_updated_at();
create trigger _500_audit after insert or update or delete on app_public.destinations
  for each row execute function app_private.tg__audit('site_id', 'id', '-updated_at');

create table app_private.provider_credentials (
  site_id uuid not null,
  destination_id uuid not null,
  key_id text not null,
  wrapped_key bytea not null,
  nonce bytea not null,
  ciphertext bytea not null,
  auth_tag bytea not null,
  updated_at timestamptz not null default now(),
  primary key (site_id, destination_id),
  foreign key (site_id, destination_id) references app_public.destinations (site_id, id) on delete cascade
);
comment on table app_private.provider_credentials is
  E'Destinations'' OAuth refresh tokens, AES-256-GCM encrypted under a per-row data key that the VAULT_KEYS key key_id wraps. Ciphertext only.';
create index provider_credentials_key_idx on app_private.provider_credentials (key_id);
alter table app_private.provider_credentials enable row level security;
-- Rotations are audited (which key, when), never the material.
create trigger _500_audit after insert or update or delete on app_private.provider_credentials
  for each row execute function app_private.tg__audit('site_id', 'destination_id', 'wrapped_key', 'nonce', 'ciphertext', 'auth_tag');

/* Basic-auth credentials for Google's scheduled import of the CSV; the password is kept as SHA-256 (it is random, 256 bits). */
create table app_private.export_credentials (
  site_id uuid not null references app_public.sites on delete cascade,
  username text not null constraint export_credentials_username_key unique,
  password_sha256 bytea not null,
  created_at timestamptz not null default now(),
  primary key (site_id, username)
);
comment on table app_private.export_credentials is E'Who may fetch a site''s conversion CSV (Google scheduled imports): username and hashed password.';
alter table app_private.export_credentials enable row level security;
create trigger _500_audit after insert or update or delete on app_private.export_credentials
  for each row execute function app_private.tg__audit('site_id', 'username', 'password_sha256');

/*
 * Destinations are created by admins. The OAuth refresh token is set separately (write-only),
 * because it is encrypted in Node before it reaches the database.
 */
create function app_public.create_destination(site_id uuid, rail text, customer_id text, conversion_action text, login_customer_id text default null)
  returns app_public.destinations
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
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
comment on function app_public.create_destination(uuid, text, text, text, text) is
  E'Adds a delivery destination (admin or owner): rail datamanager or google_ads, Google Ads customer id, conversion action id. Set its credentials with setDestinationCredentials.';

create function app_public.set_destination_status(destination_id uuid, status text)
  returns app_public.destinations
  language plpgsql volatile strict security definer
  set search_path to pg_catalog, public, pg_temp
as $$
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
comment on function app_public.set_destination_status(uuid, text) is E'Pauses or resumes a destination (admin or owner).';

/* Stores freshly encrypted credentials (admin or owner); the destination becomes active again. */
create function app_hidden.store_provider_credentials(destination_id uuid, key_id text, wrapped_key bytea, nonce bytea,
                                                       ciphertext bytea, auth_tag bytea, last4 text)
  returns app_public.destinations
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
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
comment on function app_hidden.store_provider_credentials(uuid, text, bytea, bytea, bytea, bytea, text) is
  E'Saves a destination''s encrypted refresh token (admin or owner; called by the setDestinationCredentials mutation after encrypting).';
grant execute on function app_hidden.store_provider_credentials(uuid, text, bytea, bytea, bytea, bytea, text) to :DATABASE_VISITOR;
