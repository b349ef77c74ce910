--! Previous: sha1:6b655e1212e55946ffdc6a703e8423f2490e7719
--! Hash: sha1:8f0b6abfd95e77402b5a26aa0285e0504716da68
--! Message: ingestion

--! split: 2-ingest-tables.sql
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

--! split: 3-attribution.sql
/*
 * Attribution as pure functions of a landing URL and referrer (SPEC §7), so that the same
 * event always gets the same answer, whatever machine, order or batch it arrives in.
 * Parameter names are matched as written; values are percent-decoded, trimmed, and empty
 * counts as absent; UTM values are lower-cased.
 */
create function app_hidden.percent_decode(value text) returns text
  language plpgsql immutable strict parallel safe
as $$
begin
  if pg_catalog.strpos(value, '%') = 0 then
    return pg_catalog.replace(value, '+', ' ');
  end if;
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
$$;
comment on function app_hidden.percent_decode(text) is E'Decodes %XX escapes and + of a query-string value (as sent when the result is not UTF-8).';

create function app_hidden.url_host(url text) returns text
  language sql immutable strict parallel safe
as $$
  select pg_catalog.lower(pg_catalog.substring(url, '^[A-Za-z][A-Za-z0-9+.-]*://(?:[^/?#@]*@)?([^/?#:]+)'));
$$;
comment on function app_hidden.url_host(text) is E'Lower-cased host of an absolute URL, or null.';

/*
 * A URL's query parameters, parsed once: name (as written) -> first value, percent-decoded and
 * trimmed; a parameter whose first value is empty is absent.
 */
create function app_hidden.url_params(url text) returns jsonb
  language sql immutable strict parallel safe
as $$
  select coalesce(pg_catalog.jsonb_object_agg(p.name, p.value) filter (where p.value is not null), '{}'::jsonb)
    from (select distinct on (q.name) q.name,
                 nullif(pg_catalog.btrim(app_hidden.percent_decode(q.raw)), '') as value
            from (select pg_catalog.split_part(t.pair, '=', 1) as name,
                         pg_catalog.substr(t.pair, pg_catalog.strpos(t.pair, '=') + 1) as raw, t.n
                    from pg_catalog.regexp_split_to_table(pg_catalog.substring(url, '\?([^#]*)'), '&') with ordinality as t(pair, n)
                   where pg_catalog.strpos(t.pair, '=') > 1) q
           order by q.name, q.n) p;
$$;
comment on function app_hidden.url_params(text) is
  E'Query parameters of a URL as {name: first value}, decoded and trimmed; empty values are absent.';

create function app_hidden.host_is_on(host text, domain text) returns boolean
  language sql immutable strict parallel safe
as $$
  select host = domain or pg_catalog.right(host, pg_catalog.length(domain) + 1) = '.' || domain;
$$;
comment on function app_hidden.host_is_on(text, text) is E'True when host is the domain or one of its subdomains.';

create function app_hidden.social_network_of_source(utm_source text) returns text
  language sql immutable strict parallel safe
as $$
  select case pg_catalog.lower(utm_source)
    when 'facebook' then 'facebook' when 'fb' then 'facebook' when 'meta' then 'meta'
    when 'instagram' then 'instagram' when 'ig' then 'instagram'
    when 'tiktok' then 'tiktok' when 'linkedin' then 'linkedin'
    when 'twitter' then 'twitter' when 'x' then 'twitter'
    when 'pinterest' then 'pinterest' when 'snapchat' then 'snapchat' when 'reddit' then 'reddit'
  end;
$$;
comment on function app_hidden.social_network_of_source(text) is E'The social network a utm_source names (canonical name), or null.';

create function app_hidden.social_network_of_host(host text) returns text
  language sql immutable strict parallel safe
as $$
  select n.network from (values
      ('facebook.com', 'facebook'), ('instagram.com', 'instagram'), ('t.co', 'twitter'), ('twitter.com', 'twitter'),
      ('x.com', 'twitter'), ('linkedin.com', 'linkedin'), ('lnkd.in', 'linkedin'), ('tiktok.com', 'tiktok'),
      ('pinterest.com', 'pinterest'), ('reddit.com', 'reddit'), ('snapchat.com', 'snapchat')) as n(domain, network)
   where app_hidden.host_is_on(host, n.domain)
   limit 1;
$$;
comment on function app_hidden.social_network_of_host(text) is E'The social network a referrer host belongs to (l.facebook.com → facebook), or null.';

create function app_hidden.is_search_host(host text) returns boolean
  language sql immutable strict parallel safe
as $$
  select host ~ '(^|\.)(google|yandex)\.[a-z]{2,3}(\.[a-z]{2})?$'
      or app_hidden.host_is_on(host, 'bing.com') or app_hidden.host_is_on(host, 'yahoo.com')
      or app_hidden.host_is_on(host, 'duckduckgo.com') or app_hidden.host_is_on(host, 'baidu.com')
      or app_hidden.host_is_on(host, 'ecosia.org') or host = 'search.brave.com';
$$;
comment on function app_hidden.is_search_host(text) is E'True for the search engines of SPEC §7 (google.*, bing.com, yahoo.com, yandex.*, duckduckgo.com, baidu.com, ecosia.org, search.brave.com).';

create type app_hidden.landing_attribution as (
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
comment on type app_hidden.landing_attribution is E'What a landing URL and referrer say on their own (S3 needs the visitor''s history too). landing_click_id is the first ad click id of any kind, which later pageviews are compared with.';

/*
 * SPEC §7 without S3. The first matching rule wins:
 *   S1 gclid > gbraid > wbraid                                   google_ads
 *   S2 paid utm_medium and a non-social utm_source, or msclkid  paid:<utm_source | microsoft_ads | unknown>
 *   S4 ttclid, li_fat_id, twclid; paid-social utm_medium; paid utm_medium with a social source
 *                                                               paid_social:<network | utm_source | unknown>
 *   S5 organic:email (email medium) > organic:social (fbclid, or a social utm_source) >
 *      organic:campaign (other UTM) > organic:social (social referrer) > organic:search > organic:referral > organic:direct
 * A referrer on the site's own domain counts as no referrer.
 */
create function app_hidden.classify_landing(url text, referrer text, site_domain text)
  returns app_hidden.landing_attribution
  language plpgsql immutable parallel safe
as $$
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
comment on function app_hidden.classify_landing(text, text, text) is
  E'Tier (S1, S2, S4 or S5) and source of a landing URL and referrer on a site; S3 is decided by the sessionizer.';

/*
 * Session boundaries besides the 30-minute gap: a pageview that carries an ad click id, a
 * utm_source or a utm_campaign different from the session's own begins a new session.
 */
create function app_hidden.starts_new_session(
  url text, session_click_id text, session_utm_source text, session_utm_campaign text
) returns boolean
  language plpgsql immutable parallel safe
as $$
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
comment on function app_hidden.starts_new_session(text, text, text, text) is
  E'True when a pageview URL carries a click id, utm_source or utm_campaign that differs from the session''s.';

--! split: 4-sessionizer.sql
/*
 * The sessionizer: sessions are a pure function of a visitor's events (SPEC §7), kept current
 * as events arrive in any order.
 *   - Events are ordered by (occurred_at, id); a session ends where the gap to the next event
 *     exceeds 30 minutes or a pageview brings a new click id, utm_source or utm_campaign.
 *   - A session's attribution comes from its first event; S3 when the visitor had an S1 or S2
 *     session that started within the 90 days before (inclusive).
 *   - A session's id is derived from its first event, so equal events give equal ids.
 * An event arriving after all of its visitor's events (the common case) extends or opens the
 * last session. A late event re-derives the visitor's sessions from the one it falls into, to
 * the end: that covers splits, merges and the S3 status of every later session.
 * Callers hold the visitor's advisory lock.
 */
create function app_private.session_id_for(site_id uuid, first_event_id uuid) returns uuid
  language sql immutable strict parallel safe
as $$
  select pg_catalog.md5(site_id::text || '/' || first_event_id::text)::uuid;
$$;
comment on function app_private.session_id_for(uuid, uuid) is E'Deterministic session id from the site and the session''s first event.';

/* A new session row (not yet inserted) opened by this event, with its attribution. */
create function app_private.open_session(
  site_id uuid, visitor_key text, visitor_id text, event_id uuid, occurred_at timestamptz,
  url text, referrer text, site_domain text
) returns app_public.sessions
  language plpgsql stable
as $$
declare
  v_landing app_hidden.landing_attribution := app_hidden.classify_landing(open_session.url, open_session.referrer, open_session.site_domain);
  v_assist record;
  v_session app_public.sessions;
begin
  v_session.site_id := open_session.site_id;
  v_session.id := app_private.session_id_for(open_session.site_id, open_session.event_id);
  v_session.started_at := open_session.occurred_at;
  v_session.ended_at := open_session.occurred_at;
  v_session.first_event_id := open_session.event_id;
  v_session.last_event_id := open_session.event_id;
  v_session.visitor_key := open_session.visitor_key;
  v_session.visitor_id := open_session.visitor_id;
  v_session.event_count := 1;
  v_session.landing_url := open_session.url;
  v_session.referrer := nullif(open_session.referrer, '');
  v_session.attribution_tier := v_landing.tier;
  v_session.attribution_source := v_landing.source;
  v_session.click_id := coalesce(v_landing.click_id, v_landing.landing_click_id);
  v_session.click_id_type := case when v_landing.click_id is not null then v_landing.click_id_type else v_landing.landing_click_id_type end;
  v_session.utm_source := v_landing.utm_source;
  v_session.utm_medium := v_landing.utm_medium;
  v_session.utm_campaign := v_landing.utm_campaign;
  if v_landing.tier not in ('S1', 'S2') then
    select s.id, s.click_id, s.click_id_type into v_assist
      from app_public.sessions s
     where s.site_id = open_session.site_id and s.visitor_key = open_session.visitor_key
       and s.started_at >= open_session.occurred_at - interval '90 days'
       and s.started_at < open_session.occurred_at
       and s.attribution_tier in ('S1', 'S2')
     order by s.started_at desc, s.first_event_id desc  -- ties go to the later event in (ts, id) order
     limit 1;
    if v_assist.id is not null then
      v_session.attribution_tier := 'S3';
      v_session.attribution_source := 'ads_assisted';
      v_session.assisting_session_id := v_assist.id;
      v_session.assisting_click_id := v_assist.click_id;
      v_session.assisting_click_id_type := v_assist.click_id_type;
    end if;
  end if;
  return v_session;
end;
$$;
comment on function app_private.open_session(uuid, text, text, uuid, timestamptz, text, text, text) is
  E'Builds the session an event opens, attributing it (S3 from the visitor''s sessions of the 90 days before).';

/*
 * Re-derives a visitor's sessions from the event (since, since_event_id) to the end, from the
 * stored events. The position is an (occurred_at, id) pair, not a time: an earlier session may
 * end with an event at the very instant the rebuilt one starts.
 */
create function app_private.rebuild_sessions(site_id uuid, visitor_key text, since timestamptz, since_event_id uuid, site_domain text)
  returns void
  language plpgsql volatile
as $$
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
comment on function app_private.rebuild_sessions(uuid, text, timestamptz, uuid, text) is
  E'Deletes a visitor''s sessions from the event (since, since_event_id) on and derives them again from the events.';

/*
 * Decides where a new event goes, before it is stored. When it comes after every event of its
 * visitor (the common case) it extends or opens the last session here and session_id is set;
 * the caller stores the event with it. A late event gets rebuild_since instead: the caller
 * stores the event, then calls rebuild_sessions from (rebuild_since, rebuild_since_event_id).
 * Lookups are bounded in time (30 minutes back for the previous event, 35 days for the start of
 * its session), so they touch one or two partitions.
 */
create function app_private.place_event(
  site_id uuid, visitor_key text, visitor_id text, event_id uuid, occurred_at timestamptz,
  type text, url text, referrer text, site_domain text,
  out session_id uuid, out rebuild_since timestamptz, out rebuild_since_event_id uuid
)
  language plpgsql volatile
as $$
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
comment on function app_private.place_event(uuid, text, text, uuid, timestamptz, text, text, text, text) is
  E'Extends or opens the visitor''s last session for an in-order event (returns session_id), or says from when to re-derive sessions for a late one (rebuild_since).';

--! split: 5-ingest-api.sql
/*
 * The tracker's front door: one call per HTTP request does everything, in one transaction —
 * site and origin check, rate limit, per-event validation, consent-based minimisation,
 * duplicate detection, quota, ledger row, event row and sessions. A request-level failure
 * raises, so nothing of the request is stored; an event-level problem rejects that event only.
 *
 * Lock order, to stay free of deadlocks: rate-limit slot, then visitor advisory locks in sorted
 * order, then quota shards (a transaction that already holds a shard never waits for another).
 */
create function app_private.daily_salt(day date) returns bytea
  language plpgsql volatile
as $$
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
comment on function app_private.daily_salt(date) is E'The salt of a UTC day, created on first use.';

create function app_private.origin_allowed(site app_public.sites, origin text, global_origins text[]) returns boolean
  language sql immutable
as $$
  select origin is not null
     and (pg_catalog.lower(origin) = any(site.allowed_origins) or pg_catalog.lower(origin) = any(global_origins));
$$;
comment on function app_private.origin_allowed(app_public.sites, text, text[]) is
  E'True when a browser Origin is in the site''s allowed_origins or the global list. A missing Origin is refused.';

/* Per site, hashed client IP and minute. Raises OM429 with the seconds to wait in DETAIL. */
create function app_private.check_rate_limit(site app_public.sites, client_ip text) returns void
  language plpgsql volatile
as $$
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
comment on function app_private.check_rate_limit(app_public.sites, text) is
  E'Counts a request against the site''s per-IP limit; raises OM429 (detail: seconds until the next minute) when over.';

/*
 * Creates a site's quota shards for a period on first use, from the quota minus what the ledger
 * already billed (so a quota set mid-month still counts the month's earlier events). Called
 * before the event's own ledger row is written, so that row is not counted twice.
 */
create function app_private.ensure_quota_shards(site app_public.sites, period date) returns void
  language plpgsql volatile
as $$
declare
  v_shards constant integer := 16;
  v_left bigint;
begin
  if site.monthly_event_quota is null
     or exists (select 1 from app_private.quota_shards q where q.site_id = site.id and q.period = ensure_quota_shards.period) then
    return;
  end if;
  select greatest(site.monthly_event_quota - pg_catalog.count(*), 0) into v_left
    from app_public.ingest_idempotency l
   where l.site_id = site.id and l.billable
     and l.occurred_at >= ensure_quota_shards.period and l.occurred_at < ensure_quota_shards.period + interval '1 month';
  insert into app_private.quota_shards (site_id, period, shard, remaining)
  select site.id, ensure_quota_shards.period, s, v_left / v_shards + case when s < v_left % v_shards then 1 else 0 end
    from pg_catalog.generate_series(0, v_shards - 1) as s
  on conflict do nothing;
end;
$$;
comment on function app_private.ensure_quota_shards(app_public.sites, date) is
  E'Creates the 16 quota shards of a site and month on first use, holding the quota left.';

/* Takes one billable event from the site's quota for a period; false when it is used up. */
create function app_private.take_quota(site app_public.sites, period date) returns boolean
  language plpgsql volatile
as $$
declare
  v_own smallint := (pg_catalog.pg_backend_pid() % 16)::smallint;
  v_holding boolean := pg_catalog.current_setting('app.holds_quota_shard', true) = 'on';
  v_shard smallint;
begin
  if site.monthly_event_quota is null then
    return true;
  end if;
  -- Our own shard first, then any shard nobody holds; wait for a busy one only while holding
  -- none, so that waiting transactions never hold what others wait for.
  select q.shard into v_shard from app_private.quota_shards q
   where q.site_id = site.id and q.period = take_quota.period and q.shard = v_own and q.remaining > 0
   for update skip locked;
  if v_shard is null then
    select q.shard into v_shard from app_private.quota_shards q
     where q.site_id = site.id and q.period = take_quota.period and q.remaining > 0
     order by q.shard limit 1 for update skip locked;
  end if;
  if v_shard is null and not v_holding then
    select q.shard into v_shard from app_private.quota_shards q
     where q.site_id = site.id and q.period = take_quota.period and q.remaining > 0
     order by q.shard limit 1 for update;
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
comment on function app_private.take_quota(app_public.sites, date) is
  E'Consumes one event of a site''s monthly quota, exact under concurrency, without one hot counter row.';

/* The visitor's most recent banner choice, or null. */
create function app_private.latest_consent(site_id uuid, visitor_hash bytea) returns jsonb
  language sql stable
as $$
  select pg_catalog.jsonb_build_object('analytics_storage', c.analytics_storage, 'ad_storage', c.ad_storage,
                                       'ad_user_data', c.ad_user_data, 'ad_personalization', c.ad_personalization)
    from app_public.consents c
   where c.site_id = latest_consent.site_id and c.visitor_hash = latest_consent.visitor_hash
   order by c.recorded_at desc, c.id desc
   limit 1;
$$;
comment on function app_private.latest_consent(uuid, bytea) is E'A visitor''s latest recorded consent choice.';

create function app_private.valid_consent(consent jsonb) returns boolean
  language sql immutable
as $$
  select pg_catalog.jsonb_typeof(consent) = 'object'
     and not exists (select 1 from pg_catalog.jsonb_each(consent) c
                      where c.key not in ('analytics_storage', 'ad_storage', 'ad_user_data', 'ad_personalization')
                         or c.value not in ('"granted"', '"denied"'));
$$;
comment on function app_private.valid_consent(jsonb) is E'True for an object of Consent Mode v2 signals, each granted or denied.';

/*
 * SPEC §8: an event's own consent, else the visitor's latest banner choice, else the site
 * default (required: all denied; implied: all granted). Missing signals take the default.
 */
create function app_private.effective_consent(site app_public.sites, own jsonb, recorded jsonb) returns jsonb
  language sql immutable
as $$
  select pg_catalog.jsonb_build_object(
           'analytics_storage', v.d, 'ad_storage', v.d, 'ad_user_data', v.d, 'ad_personalization', v.d)
         || coalesce(own, recorded, '{}'::jsonb)
    from (select case when site.consent_mode = 'implied' then 'granted' else 'denied' end as d) v;
$$;
comment on function app_private.effective_consent(app_public.sites, jsonb, jsonb) is E'The consent signals that apply to an event.';

create function app_private.find_site(public_key text, origin text, global_origins text[], client_ip text)
  returns app_public.sites
  language plpgsql volatile
as $$
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
comment on function app_private.find_site(text, text, text[], text) is
  E'The site of a public key, after the origin check (OMORG) and the rate limit (OM429); OMUSK when unknown.';

create function app_hidden.parse_timestamptz(value text) returns timestamptz
  language plpgsql immutable strict
as $$
begin
  if value !~ '^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}(:?\d{2})?)$' then
    return null;
  end if;
  return value::timestamptz;
exception when others then
  return null;
end;
$$;
comment on function app_hidden.parse_timestamptz(text) is E'An ISO-8601 timestamp with zone, or null when it is not one.';

/* Why an event cannot be accepted (an event-level error code), or null when it is fine. */
create function app_private.event_problem(event jsonb, site app_public.sites, now timestamptz, out code text, out message text)
  language plpgsql stable
as $$
declare
  v_ts timestamptz;
  v_url text;
  v_host text;
begin
  if pg_catalog.jsonb_typeof(event) is distinct from 'object' then
    code := 'invalid_event'; message := 'An event must be a JSON object with valid strings.'; return;
  end if;
  if pg_catalog.jsonb_typeof(event -> 'id') is distinct from 'string'
     or event ->> 'id' !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then
    code := 'invalid_event'; message := 'id must be a UUID.'; return;
  end if;
  if pg_catalog.jsonb_typeof(event -> 'type') is distinct from 'string' or event ->> 'type' !~ '^[a-z][a-z0-9_]{0,39}$' then
    code := 'invalid_event'; message := 'type must match ^[a-z][a-z0-9_]{0,39}$.'; return;
  end if;
  if pg_catalog.jsonb_typeof(event -> 'visitor_id') is distinct from 'string' or event ->> 'visitor_id' !~ '^[A-Za-z0-9_-]{1,64}$' then
    code := 'invalid_event'; message := 'visitor_id must be 1 to 64 letters, digits, _ or -.'; return;
  end if;
  v_ts := case when pg_catalog.jsonb_typeof(event -> 'ts') = 'string' then app_hidden.parse_timestamptz(event ->> 'ts') end;
  if v_ts is null then
    code := 'invalid_ts'; message := 'ts must be an ISO-8601 time with a zone.'; return;
  end if;
  if v_ts < event_problem.now - interval '7 days' or v_ts > event_problem.now + interval '5 minutes' then
    code := 'invalid_ts'; message := 'ts must lie between 7 days ago and 5 minutes from now.'; return;
  end if;
  if event ? 'url' and pg_catalog.jsonb_typeof(event -> 'url') <> 'null' then
    v_url := event ->> 'url';
    if pg_catalog.jsonb_typeof(event -> 'url') <> 'string' or pg_catalog.length(v_url) > 2048
       or v_url !~* '^https?://[^\s/?#]+([/?#][^\s]*)?$' then
      code := 'invalid_event'; message := 'url must be an absolute http(s) URL of at most 2048 characters.'; return;
    end if;
    v_host := app_hidden.url_host(v_url);
    if v_host is null or not app_hidden.host_is_on(v_host, site.domain) then
      code := 'url_not_on_site'; message := 'url is not on the site''s domain.'; return;
    end if;
  elsif event ->> 'type' = 'pageview' then
    code := 'invalid_event'; message := 'A pageview needs a url.'; return;
  end if;
  if event ? 'referrer' and pg_catalog.jsonb_typeof(event -> 'referrer') <> 'null' and event ->> 'referrer' <> ''
     and (pg_catalog.jsonb_typeof(event -> 'referrer') <> 'string' or pg_catalog.length(event ->> 'referrer') > 2048
          or event ->> 'referrer' !~* '^https?://[^\s/?#]+([/?#][^\s]*)?$') then
    code := 'invalid_event'; message := 'referrer must be an absolute http(s) URL or empty.'; return;
  end if;
  if event ? 'title' and pg_catalog.jsonb_typeof(event -> 'title') <> 'null'
     and (pg_catalog.jsonb_typeof(event -> 'title') <> 'string' or pg_catalog.length(event ->> 'title') > 1000) then
    code := 'invalid_event'; message := 'title must be a string of at most 1000 characters.'; return;
  end if;
  if event ? 'props' and pg_catalog.jsonb_typeof(event -> 'props') <> 'null'
     and (pg_catalog.jsonb_typeof(event -> 'props') <> 'object' or pg_catalog.octet_length((event -> 'props')::text) > 4096
          or pg_catalog.jsonb_path_exists(event -> 'props', 'strict $.**{4 to last}')) then
    code := 'invalid_event'; message := 'props must be an object of at most 4 KiB, nested at most 3 levels.'; return;
  end if;
  if event ? 'consent' and pg_catalog.jsonb_typeof(event -> 'consent') <> 'null' and not app_private.valid_consent(event -> 'consent') then
    code := 'invalid_event'; message := 'consent must map Consent Mode signals to granted or denied.'; return;
  end if;
  if event ? 'device' and pg_catalog.jsonb_typeof(event -> 'device') <> 'null'
     and (pg_catalog.jsonb_typeof(event -> 'device') <> 'object' or pg_catalog.octet_length((event -> 'device')::text) > 1024
          or exists (select 1 from pg_catalog.jsonb_each(event -> 'device') d where pg_catalog.jsonb_typeof(d.value) <> 'string')) then
    code := 'invalid_event'; message := 'device must be an object of strings of at most 1 KiB.'; return;
  end if;
end;
$$;
comment on function app_private.event_problem(jsonb, app_public.sites, timestamptz) is
  E'Validates one tracker event (SPEC §5.1); returns an event-level error code and message, or nulls.';

create function app_private.ingest_events(
  public_key text, events jsonb, origin text, client_ip text, user_agent text, global_origins text[] default '{}'
) returns jsonb
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_site app_public.sites;
  v_now timestamptz := pg_catalog.now();
  v_is_bot boolean;
  v_salt bytea;
  v_rejected jsonb := '[]';
  v_valid jsonb := '[]';
  v_visitor_hash bytea;
  v_accepted integer := 0;
  v_duplicates integer := 0;
  v_event record;
  v_problem record;
  v_consent jsonb;
  v_consents jsonb := '{}';
  v_granted boolean;
  v_visitor_key text;
  v_period date;
  v_billable boolean;
  v_session_id uuid;
  v_rebuild_since timestamptz;
  v_rebuild_since_event_id uuid;
  v_inserted boolean;
begin
  v_site := app_private.find_site(ingest_events.public_key, ingest_events.origin, ingest_events.global_origins, ingest_events.client_ip);
  if pg_catalog.jsonb_typeof(ingest_events.events) <> 'array' or pg_catalog.jsonb_array_length(ingest_events.events) not between 1 and 100 then
    raise exception using errcode = 'OMENV', message = 'events must be an array of 1 to 100 events.';
  end if;
  v_is_bot := exists (select 1 from app_private.bot_user_agents b
                       where pg_catalog.strpos(pg_catalog.lower(coalesce(ingest_events.user_agent, '')), b.pattern) > 0);
  select s.salt into v_salt from app_private.site_salts s where s.site_id = v_site.id;

  -- Validate everything first, then lock every visitor of the batch in one sorted pass.
  for v_event in select e.value, e.ordinal - 1 as ordinal from pg_catalog.jsonb_array_elements(ingest_events.events) with ordinality as e(value, ordinal) loop
    select * into v_problem from app_private.event_problem(v_event.value, v_site, v_now);
    if v_problem.code is not null then
      v_rejected := v_rejected || pg_catalog.jsonb_build_object('index', v_event.ordinal, 'error', v_problem.code, 'message', v_problem.message);
    else
      v_valid := v_valid || pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('ordinal', v_event.ordinal, 'event', v_event.value));
    end if;
  end loop;
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended(v_site.id::text || '/' || b.visitor_id, 0))
     from (select distinct v.value -> 'event' ->> 'visitor_id' as visitor_id
             from pg_catalog.jsonb_array_elements(v_valid) v order by 1) b;

  for v_event in
    select (v.value ->> 'ordinal')::integer as ordinal, v.value -> 'event' as event, (v.value -> 'event' ->> 'id')::uuid as id,
           (v.value -> 'event' ->> 'ts')::timestamptz as occurred_at, v.value -> 'event' ->> 'visitor_id' as visitor_id
      from pg_catalog.jsonb_array_elements(v_valid) v
     order by 5, 4, 3
  loop
    if exists (select 1 from app_public.ingest_idempotency l
                where l.site_id = v_site.id and l.idempotency_key = v_event.id
                  and l.occurred_at between v_event.occurred_at - interval '8 days' and v_event.occurred_at + interval '8 days') then
      v_duplicates := v_duplicates + 1;
      continue;
    end if;
    -- The ledger row first: a concurrent copy of this event waits here for ours and then
    -- counts as a duplicate. Only a new event consumes quota; over quota, the row goes again.
    v_period := pg_catalog.date_trunc('month', v_event.occurred_at at time zone 'UTC')::date;
    v_billable := not v_is_bot;
    if v_billable then
      perform app_private.ensure_quota_shards(v_site, v_period);
    end if;
    insert into app_public.ingest_idempotency (site_id, idempotency_key, occurred_at, received_at, billable, reason)
    values (v_site.id, v_event.id, v_event.occurred_at, v_now, v_billable, case when v_is_bot then 'bot' end)
    on conflict do nothing
    returning true into v_inserted;
    if v_inserted is null then
      v_duplicates := v_duplicates + 1;
      continue;
    end if;
    v_inserted := null;
    if v_billable and not app_private.take_quota(v_site, v_period) then
      delete from app_public.ingest_idempotency l
       where l.site_id = v_site.id and l.idempotency_key = v_event.id and l.occurred_at = v_event.occurred_at;
      v_rejected := v_rejected || pg_catalog.jsonb_build_object('index', v_event.ordinal, 'error', 'quota_exceeded',
                                                                'message', 'The site''s monthly event quota is used up.');
      continue;
    end if;

    -- Consent decides what is kept: without analytics consent no raw visitor id, no device
    -- data, and the visitor is known only by a hash whose salt changes every day.
    if v_event.event -> 'consent' is null and not v_consents ? v_event.visitor_id then
      v_visitor_hash := public.hmac(pg_catalog.convert_to(v_event.visitor_id, 'UTF8'), v_salt, 'sha256');
      v_consents := v_consents || pg_catalog.jsonb_build_object(v_event.visitor_id,
                      coalesce(app_private.latest_consent(v_site.id, v_visitor_hash), 'null'::jsonb));
    end if;
    v_consent := app_private.effective_consent(v_site, nullif(v_event.event -> 'consent', 'null'::jsonb),
                                               nullif(v_consents -> v_event.visitor_id, 'null'::jsonb));
    v_granted := v_consent ->> 'analytics_storage' = 'granted';
    v_visitor_key := case when v_granted then v_event.visitor_id
                          else 'h:' || pg_catalog.encode(pg_catalog.substr(public.hmac(pg_catalog.convert_to(v_site.id::text || '/' || v_event.visitor_id, 'UTF8'),
                                 app_private.daily_salt((v_event.occurred_at at time zone 'UTC')::date), 'sha256'), 1, 16), 'hex') end;

    v_session_id := null;
    v_rebuild_since := null;
    v_rebuild_since_event_id := null;
    if not v_is_bot then
      select p.session_id, p.rebuild_since, p.rebuild_since_event_id into v_session_id, v_rebuild_since, v_rebuild_since_event_id
        from app_private.place_event(v_site.id, v_visitor_key, case when v_granted then v_event.visitor_id end,
        v_event.id, v_event.occurred_at, v_event.event ->> 'type', v_event.event ->> 'url',
        nullif(v_event.event ->> 'referrer', ''), v_site.domain) p;
    end if;
    insert into app_public.events (site_id, id, occurred_at, received_at, type, visitor_key, visitor_id, session_id,
                                   url, referrer, title, props, device, consent, is_bot)
    values (v_site.id, v_event.id, v_event.occurred_at, v_now, v_event.event ->> 'type', v_visitor_key,
            case when v_granted then v_event.visitor_id end, v_session_id,
            v_event.event ->> 'url', nullif(v_event.event ->> 'referrer', ''), v_event.event ->> 'title',
            coalesce(nullif(v_event.event -> 'props', 'null'::jsonb), '{}'),
            case when v_granted then nullif(v_event.event -> 'device', 'null'::jsonb) end, v_consent, v_is_bot);
    if v_rebuild_since is not null then
      perform app_private.rebuild_sessions(v_site.id, v_visitor_key, v_rebuild_since, v_rebuild_since_event_id, v_site.domain);
    end if;
    v_accepted := v_accepted + 1;
  end loop;

  return pg_catalog.jsonb_build_object('accepted', v_accepted, 'duplicates', v_duplicates,
    'rejected', (select coalesce(pg_catalog.jsonb_agg(r order by (r ->> 'index')::int), '[]') from pg_catalog.jsonb_array_elements(v_rejected) r));
end;
$$;
comment on function app_private.ingest_events(text, jsonb, text, text, text, text[]) is
  E'POST /api/sync in one call: returns {accepted, duplicates, rejected[]}; raises OMUSK, OMORG, OM429 or OMENV for the whole request.';

create function app_private.record_consent(
  public_key text, visitor_id text, consent jsonb, origin text, client_ip text, global_origins text[] default '{}'
) returns jsonb
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
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
$$;
comment on function app_private.record_consent(text, text, jsonb, text, text, text[]) is
  E'POST /api/consent: appends the visitor''s choice to consents (proof of consent).';

grant execute on function app_private.ingest_events(text, jsonb, text, text, text, text[]) to :DATABASE_AUTHENTICATOR;
grant execute on function app_private.record_consent(text, text, jsonb, text, text, text[]) to :DATABASE_AUTHENTICATOR;

/* Preflight requests carry no site key: answer them for origins that some site allows. */
create index sites_allowed_origins_idx on app_public.sites using gin (allowed_origins);
create function app_private.origin_known(origin text, global_origins text[] default '{}') returns boolean
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select pg_catalog.lower(origin_known.origin) = any(origin_known.global_origins)
      or exists (select 1 from app_public.sites s where s.allowed_origins @> array[pg_catalog.lower(origin_known.origin)]);
$$;
comment on function app_private.origin_known(text, text[]) is E'True when some site (or the global list) allows the origin: the CORS preflight check.';
grant execute on function app_private.origin_known(text, text[]) to :DATABASE_AUTHENTICATOR;

/* Housekeeping for the worker: spent rate-limit windows, and salts past the late-event window. */
create function app_private.ingest_cleanup() returns jsonb
  language plpgsql volatile
as $$
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
comment on function app_private.ingest_cleanup() is E'Deletes spent rate-limit counters and daily salts older than 8 days.';
