/*
 * Attribution as pure functions of a landing URL and referrer (SPEC §7), so that the same
 * event always gets the same answer, whatever machine, order or batch it arrives in.
 * Parameter names are matched as written; values are percent-decoded, trimmed, and empty
 * counts as absent; UTM values are lower-cased.
 */
create function app_hidden.percent_decode(value text) returns text
  language plpgsql immutable strict parallel safe
  set search_path to pg_catalog, public, pg_temp
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
  set search_path to pg_catalog, public, pg_temp
as $$
  select pg_catalog.lower(pg_catalog.substring(url, '^[A-Za-z][A-Za-z0-9+.-]*://(?:[^/?#@]*@)?([^/?#:]+)'));
$$;
comment on function app_hidden.url_host(text) is E'Lower-cased host of an absolute URL, or null.';

create function app_hidden.url_param(url text, name text) returns text
  language sql immutable strict parallel safe
  set search_path to pg_catalog, public, pg_temp
as $$
  select nullif(pg_catalog.btrim(app_hidden.percent_decode(pg_catalog.substr(p.pair, pg_catalog.length(url_param.name) + 2))), '')
    from pg_catalog.regexp_split_to_table(pg_catalog.substring(url, '\?([^#]*)'), '&') with ordinality as p(pair, n)
   where pg_catalog.starts_with(p.pair, url_param.name || '=')
   order by p.n
   limit 1;
$$;
comment on function app_hidden.url_param(text, text) is
  E'First value of a query parameter (name matched as written), decoded and trimmed; null when absent or empty.';

create function app_hidden.host_is_on(host text, domain text) returns boolean
  language sql immutable strict parallel safe
  set search_path to pg_catalog, public, pg_temp
as $$
  select host = domain or pg_catalog.right(host, pg_catalog.length(domain) + 1) = '.' || domain;
$$;
comment on function app_hidden.host_is_on(text, text) is E'True when host is the domain or one of its subdomains.';

create function app_hidden.social_network_of_source(utm_source text) returns text
  language sql immutable strict parallel safe
  set search_path to pg_catalog, public, pg_temp
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
  set search_path to pg_catalog, public, pg_temp
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
  set search_path to pg_catalog, public, pg_temp
as $$
  select host ~ '(^|\.)(google|yandex)\.[a-z]{2,3}(\.[a-z]{2})?$'
      or app_hidden.host_is_on(host, 'bing.com') or app_hidden.host_is_on(host, 'yahoo.com')
      or app_hidden.host_is_on(host, 'duckduckgo.com') or app_hidden.host_is_on(host, 'baidu.com')
      or app_hidden.host_is_on(host, 'ecosia.org') or host = 'search.brave.com';
$$;
comment on function app_hidden.is_search_host(text) is E'True for the search engines of SPEC §7 (google.*, bing.com, yahoo.com, yandex.*, duckduckgo.com, baidu.com, ecosia.org, search.brave.com).';

create function app_hidden.url_click_id(url text, out click_id text, out click_id_type text)
  language sql immutable strict parallel safe
  set search_path to pg_catalog, public, pg_temp
as $$
  select v.value, v.name
    from (values (1, 'gclid'), (2, 'gbraid'), (3, 'wbraid'), (4, 'msclkid'), (5, 'ttclid'),
                 (6, 'li_fat_id'), (7, 'twclid'), (8, 'fbclid')) as c(rank, name)
         cross join lateral (select c.name, app_hidden.url_param(url, c.name) as value) v
   where v.value is not null
   order by c.rank
   limit 1;
$$;
comment on function app_hidden.url_click_id(text) is
  E'The first ad click id a URL carries (gclid > gbraid > wbraid > msclkid > ttclid > li_fat_id > twclid > fbclid).';

create type app_hidden.landing_attribution as (
  tier text,
  source text,
  click_id text,
  click_id_type text,
  utm_source text,
  utm_medium text,
  utm_campaign text
);
comment on type app_hidden.landing_attribution is E'What a landing URL and referrer say on their own (S3 needs the visitor''s history too).';

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
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  r app_hidden.landing_attribution;
  v_paid_media constant text[] := array['cpc', 'ppc', 'paid', 'paidsearch', 'paid_search', 'paid-search', 'sem', 'cpm', 'display', 'retargeting'];
  v_paid_social_media constant text[] := array['paid_social', 'paidsocial', 'paid-social', 'social_paid', 'social-paid'];
  v_source_network text;
  v_referrer_host text := app_hidden.url_host(referrer);
  v_msclkid text := app_hidden.url_param(url, 'msclkid');
  v_click record;
begin
  r.utm_source := pg_catalog.lower(app_hidden.url_param(url, 'utm_source'));
  r.utm_medium := pg_catalog.lower(app_hidden.url_param(url, 'utm_medium'));
  r.utm_campaign := pg_catalog.lower(app_hidden.url_param(url, 'utm_campaign'));
  v_source_network := app_hidden.social_network_of_source(r.utm_source);
  if v_referrer_host is not null and app_hidden.host_is_on(v_referrer_host, site_domain) then
    v_referrer_host := null;  -- self-referral
  end if;

  foreach r.click_id_type in array array['gclid', 'gbraid', 'wbraid'] loop
    r.click_id := app_hidden.url_param(url, r.click_id_type);
    if r.click_id is not null then
      r.tier := 'S1'; r.source := 'google_ads';
      return r;
    end if;
  end loop;
  r.click_id_type := null;

  if (r.utm_medium = any(v_paid_media) and v_source_network is null) or v_msclkid is not null then
    r.tier := 'S2';
    r.source := 'paid:' || coalesce(case when v_source_network is null then r.utm_source end,
                                    case when v_msclkid is not null then 'microsoft_ads' end, 'unknown');
    if v_msclkid is not null then r.click_id := v_msclkid; r.click_id_type := 'msclkid'; end if;
    return r;
  end if;

  select c.name, c.network, app_hidden.url_param(url, c.name) as value into v_click
    from (values (1, 'ttclid', 'tiktok'), (2, 'li_fat_id', 'linkedin'), (3, 'twclid', 'twitter')) as c(rank, name, network)
   where app_hidden.url_param(url, c.name) is not null
   order by c.rank limit 1;
  if v_click.value is not null then
    r.tier := 'S4'; r.source := 'paid_social:' || v_click.network;
    r.click_id := v_click.value; r.click_id_type := v_click.name;
    return r;
  end if;
  if r.utm_medium = any(v_paid_social_media) or (r.utm_medium = any(v_paid_media) and v_source_network is not null) then
    r.tier := 'S4'; r.source := 'paid_social:' || coalesce(v_source_network, r.utm_source, 'unknown');
    return r;
  end if;

  r.tier := 'S5';
  if r.utm_medium in ('email', 'e-mail', 'newsletter') then
    r.source := 'organic:email';
  elsif app_hidden.url_param(url, 'fbclid') is not null or v_source_network is not null then
    r.source := 'organic:social';
  elsif r.utm_source is not null or r.utm_medium is not null or r.utm_campaign is not null
        or app_hidden.url_param(url, 'utm_term') is not null or app_hidden.url_param(url, 'utm_content') is not null then
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
  language sql immutable parallel safe
  set search_path to pg_catalog, public, pg_temp
as $$
  select coalesce((app_hidden.url_click_id(url)).click_id is distinct from session_click_id
                  and (app_hidden.url_click_id(url)).click_id is not null, false)
      or coalesce(pg_catalog.lower(app_hidden.url_param(url, 'utm_source')) <> session_utm_source
                  or (session_utm_source is null and app_hidden.url_param(url, 'utm_source') is not null), false)
      or coalesce(pg_catalog.lower(app_hidden.url_param(url, 'utm_campaign')) <> session_utm_campaign
                  or (session_utm_campaign is null and app_hidden.url_param(url, 'utm_campaign') is not null), false);
$$;
comment on function app_hidden.starts_new_session(text, text, text, text) is
  E'True when a pageview URL carries a click id, utm_source or utm_campaign that differs from the session''s.';
