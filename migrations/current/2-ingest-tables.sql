/*
 * The tracker's data. Three monthly pg_partman sets, partitioned by when things happened
 * (not when they arrived), so a retry of an event always meets its first copy in the same
 * partition, even when the retry arrives in the next month:
 *   ingest_idempotency  one row per accepted event: the billing truth;
 *   events              what happened, minimised by consent;
 *   sessions            derived from events by the sessionizer, with S1–S5 attribution.
 * Keys lead with site_id; partitions are created 4 months ahead by the maintenance task.
 */
create table app_public.ingest_idempotency (
  site_id uuid not null,
  idempotency_key uuid not null,
  occurred_at timestamptz not null,
  received_at timestamptz not null default now(),
  billable boolean not null,
  reason text constraint ingest_idempotency_reason check ((billable and reason is null) or (not billable and reason is not null)),
  primary key (site_id, idempotency_key, occurred_at)
) partition by range (occurred_at);
comment on table app_public.ingest_idempotency is
  E'@behavior +aggregates +aggregates:filterBy +aggregates:orderBy\nThe idempotency ledger: one row per accepted tracker event, written in the same transaction as the event. Invoices count its billable rows.';
comment on column app_public.ingest_idempotency.site_id is E'The site billed.';
comment on column app_public.ingest_idempotency.idempotency_key is E'The event id the tracker sent; a second copy is a duplicate, not billed.';
comment on column app_public.ingest_idempotency.occurred_at is E'When the event happened (its ts); decides the billing period.';
comment on column app_public.ingest_idempotency.received_at is E'When we accepted it.';
comment on column app_public.ingest_idempotency.billable is E'False for events we store but do not bill (see reason).';
comment on column app_public.ingest_idempotency.reason is E'Why a row is not billable: bot.';

create table app_public.events (
  site_id uuid not null,
  id uuid not null,
  occurred_at timestamptz not null,
  received_at timestamptz not null default now(),
  type text not null,
  visitor_key text not null,
  visitor_id text,
  session_id uuid,
  url text,
  referrer text,
  title text,
  props jsonb not null default '{}',
  device jsonb,
  consent jsonb not null,
  is_bot boolean not null default false,
  primary key (site_id, id, occurred_at)
) partition by range (occurred_at);
create index events_visitor_idx on app_public.events (site_id, visitor_key, occurred_at, id);
create index events_session_idx on app_public.events (site_id, session_id);
comment on table app_public.events is
  E'@behavior +aggregates +aggregates:filterBy +aggregates:orderBy\nTracker events as stored after consent-based minimisation.';
comment on column app_public.events.site_id is E'The site.';
comment on column app_public.events.id is E'The event id the tracker sent (also the idempotency key).';
comment on column app_public.events.occurred_at is E'When the event happened, as the tracker reported (within 7 days before receipt).';
comment on column app_public.events.received_at is E'When we accepted it.';
comment on column app_public.events.type is E'pageview, or the site''s own event name.';
comment on column app_public.events.visitor_key is E'The visitor as sessions know it: the tracker''s id with analytics consent, otherwise a salted hash that changes daily.';
comment on column app_public.events.visitor_id is E'The tracker''s visitor id, kept only with analytics consent.';
comment on column app_public.events.session_id is E'The session the sessionizer placed the event in (null for bots).';
comment on column app_public.events.url is E'Page URL.';
comment on column app_public.events.referrer is E'Referrer URL, if any.';
comment on column app_public.events.title is E'Page title.';
comment on column app_public.events.props is E'The site''s own properties (an object, at most 4 KiB).';
comment on column app_public.events.device is E'Screen, language, time zone, fingerprint: kept only with analytics consent.';
comment on column app_public.events.consent is E'The effective Consent Mode v2 signals for this event.';
comment on column app_public.events.is_bot is E'Sent by a known bot: stored, not billed, not sessionized.';

create table app_public.sessions (
  site_id uuid not null,
  id uuid not null,
  started_at timestamptz not null,
  ended_at timestamptz not null,
  first_event_id uuid not null,
  last_event_id uuid not null,
  visitor_key text not null,
  visitor_id text,
  event_count integer not null,
  landing_url text,
  referrer text,
  attribution_tier text not null constraint sessions_attribution_tier check (attribution_tier in ('S1', 'S2', 'S3', 'S4', 'S5')),
  attribution_source text not null,
  click_id text,
  click_id_type text,
  assisting_click_id text,
  assisting_click_id_type text,
  assisting_session_id uuid,
  utm_source text,
  utm_medium text,
  utm_campaign text,
  primary key (site_id, id, started_at)
) partition by range (started_at);
create index sessions_visitor_idx on app_public.sessions (site_id, visitor_key, started_at);
comment on table app_public.sessions is
  E'@behavior +aggregates +aggregates:filterBy +aggregates:orderBy +groupedAggregates\nVisits, derived from events: a visitor''s events with no gap over 30 minutes and no new campaign. Re-derived when late events arrive, so the same events always give the same sessions.';
comment on column app_public.sessions.site_id is E'The site.';
comment on column app_public.sessions.id is E'Derived from the session''s first event, so it is the same whatever order events arrived in.';
comment on column app_public.sessions.started_at is E'Time of the first event.';
comment on column app_public.sessions.ended_at is E'Time of the last event.';
comment on column app_public.sessions.first_event_id is E'Id of the first event (the session''s id is derived from it).';
comment on column app_public.sessions.last_event_id is E'Id of the last event (ties in time are ordered by id).';
comment on column app_public.sessions.visitor_key is E'The visitor (see events.visitor_key).';
comment on column app_public.sessions.visitor_id is E'The tracker''s visitor id, only with analytics consent.';
comment on column app_public.sessions.event_count is E'Events in the session.';
comment on column app_public.sessions.landing_url is E'URL of the first event.';
comment on column app_public.sessions.referrer is E'Referrer of the first event.';
comment on column app_public.sessions.attribution_tier is E'S1 Google Ads click, S2 other paid search, S3 ads-assisted (an S1/S2 session of the visitor in the 90 days before), S4 paid social, S5 organic.';
comment on column app_public.sessions.attribution_source is E'Detail: google_ads, paid:<source>, ads_assisted, paid_social:<network>, organic:<direct|search|social|email|referral|campaign>.';
comment on column app_public.sessions.click_id is E'The ad click id of the landing URL (gclid, gbraid, wbraid, msclkid, ttclid, li_fat_id or twclid).';
comment on column app_public.sessions.click_id_type is E'Which parameter click_id came from.';
comment on column app_public.sessions.assisting_click_id is E'For S3: the click id of the assisting S1/S2 session, used for conversion uploads.';
comment on column app_public.sessions.assisting_click_id_type is E'Which parameter assisting_click_id came from.';
comment on column app_public.sessions.assisting_session_id is E'For S3: the assisting session.';
comment on column app_public.sessions.utm_source is E'utm_source of the landing URL, lower-cased.';
comment on column app_public.sessions.utm_medium is E'utm_medium of the landing URL, lower-cased.';
comment on column app_public.sessions.utm_campaign is E'utm_campaign of the landing URL, lower-cased.';

create table app_public.consents (
  site_id uuid not null references app_public.sites on delete cascade,
  id uuid not null default gen_random_uuid(),
  visitor_hash bytea not null,
  recorded_at timestamptz not null default now(),
  analytics_storage text not null constraint consents_analytics_storage check (analytics_storage in ('granted', 'denied')),
  ad_storage text not null constraint consents_ad_storage check (ad_storage in ('granted', 'denied')),
  ad_user_data text not null constraint consents_ad_user_data check (ad_user_data in ('granted', 'denied')),
  ad_personalization text not null constraint consents_ad_personalization check (ad_personalization in ('granted', 'denied')),
  primary key (site_id, id)
);
create index consents_visitor_idx on app_public.consents (site_id, visitor_hash, recorded_at desc);
comment on table app_public.consents is E'Proof of consent: every choice a visitor made on the site''s banner, appended, never changed.';
comment on column app_public.consents.site_id is E'The site.';
comment on column app_public.consents.id is E'Identifier.';
comment on column app_public.consents.visitor_hash is E'HMAC of the visitor id with the site''s secret salt: proves whose choice it was without storing the id.';
comment on column app_public.consents.recorded_at is E'When the choice was made.';
comment on column app_public.consents.analytics_storage is E'granted or denied.';
comment on column app_public.consents.ad_storage is E'granted or denied.';
comment on column app_public.consents.ad_user_data is E'granted or denied.';
comment on column app_public.consents.ad_personalization is E'granted or denied.';

/* Private machinery: salts, quota shards, rate counters, the bot list. */
create table app_private.site_salts (
  site_id uuid primary key references app_public.sites on delete cascade,
  salt bytea not null default gen_random_bytes(32)
);
comment on table app_private.site_salts is E'Per-site secret salt for consent proofs (visitor ids are never stored with them).';

create table app_private.daily_salts (
  day date primary key,
  salt bytea not null default gen_random_bytes(32)
);
comment on table app_private.daily_salts is
  E'Daily salts for visitors without analytics consent and for client IPs. Deleted after 8 days, which makes old hashes unlinkable.';

/*
 * A site's monthly quota is split into shards, and each connection decrements "its" shard
 * (backend pid modulo the shard count), so concurrent requests of one busy site do not queue
 * behind a single counter row, while the sum of the shards never lets one billable event over.
 */
create table app_private.quota_shards (
  site_id uuid not null references app_public.sites on delete cascade,
  period date not null,
  shard smallint not null,
  remaining bigint not null constraint quota_shards_remaining check (remaining >= 0),
  primary key (site_id, period, shard)
);
comment on table app_private.quota_shards is E'Remaining billable events per site, month and shard; their sum is the quota left.';

create unlogged table app_private.rate_counters (
  site_id uuid not null,
  ip_hash bytea not null,
  window_start timestamptz not null,
  slot smallint not null,
  hits integer not null,
  primary key (site_id, ip_hash, window_start, slot)
);
comment on table app_private.rate_counters is
  E'Requests per site, hashed client IP and minute, spread over slots so one busy client does not serialise the site. Unlogged: losing it in a crash only resets limits.';

create table app_private.bot_user_agents (
  pattern text primary key
);
comment on table app_private.bot_user_agents is E'Case-insensitive substrings that mark a user agent as a bot; their events are stored, not billed.';
insert into app_private.bot_user_agents (pattern) values
  ('bot'), ('crawler'), ('spider'), ('slurp'), ('headlesschrome'), ('phantomjs'), ('lighthouse'),
  ('pingdom'), ('uptimerobot'), ('python-requests'), ('curl/'), ('wget/'), ('facebookexternalhit'),
  ('bingpreview'), ('google-inspectiontool'), ('ahrefs'), ('semrush'), ('mj12');

alter table app_public.ingest_idempotency enable row level security;
alter table app_public.events enable row level security;
alter table app_public.sessions enable row level security;
alter table app_public.consents enable row level security;
alter table app_private.site_salts enable row level security;
alter table app_private.daily_salts enable row level security;
alter table app_private.quota_shards enable row level security;
alter table app_private.rate_counters enable row level security;
alter table app_private.bot_user_agents enable row level security;

create policy select_member on app_public.ingest_idempotency for select using (site_id in (select app_hidden.current_user_site_ids()));
create policy select_member on app_public.events for select using (site_id in (select app_hidden.current_user_site_ids()));
create policy select_member on app_public.sessions for select using (site_id in (select app_hidden.current_user_site_ids()));
create policy select_member on app_public.consents for select using (site_id in (select app_hidden.current_user_site_ids()));
grant select on app_public.ingest_idempotency, app_public.events, app_public.sessions, app_public.consents to :DATABASE_VISITOR;

/* Every site gets its consent salt when it is created. */
create function app_private.tg_sites__issue_salt() returns trigger
  language plpgsql
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  insert into app_private.site_salts (site_id) values (new.id);
  return null;
end;
$$;
comment on function app_private.tg_sites__issue_salt() is E'Gives a new site its consent-proof salt.';
create trigger _210_issue_salt after insert on app_public.sites
  for each row execute function app_private.tg_sites__issue_salt();
insert into app_private.site_salts (site_id) select s.id from app_public.sites s;  -- sites created before this migration

/*
 * Partitions. pg_partman creates the children; RLS must be on for them too (a child is a
 * table of its own: the parent's policies guard only queries through the parent), and our
 * catalog test checks it. secure_partitions() enables it wherever missing and runs after every
 * maintenance.
 */
create function app_private.secure_partitions() returns integer
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
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
comment on function app_private.secure_partitions() is E'Enables row-level security on partitions that lack it; returns how many it fixed.';

create function app_private.maintain_partitions() returns integer
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  perform partman.run_maintenance(p_analyze := false, p_jobmon := false);
  return app_private.secure_partitions();
end;
$$;
comment on function app_private.maintain_partitions() is
  E'pg_partman maintenance (creates partitions 4 months ahead, applies retention), then secures new partitions.';

select partman.create_parent(p_parent_table := 'app_public.ingest_idempotency', p_control := 'occurred_at',
  p_type := 'native', p_interval := 'monthly', p_premake := 4, p_jobmon := false);
select partman.create_parent(p_parent_table := 'app_public.events', p_control := 'occurred_at',
  p_type := 'native', p_interval := 'monthly', p_premake := 4, p_jobmon := false);
select partman.create_parent(p_parent_table := 'app_public.sessions', p_control := 'started_at',
  p_type := 'native', p_interval := 'monthly', p_premake := 4, p_jobmon := false);
-- Keep making partitions ahead of today even through a quiet spell (pg_partman otherwise
-- counts ahead from the newest row, and a fresh installation has none).
update partman.part_config set infinite_time_partitions = true
 where parent_table in ('app_public.ingest_idempotency', 'app_public.events', 'app_public.sessions');
select app_private.secure_partitions();
