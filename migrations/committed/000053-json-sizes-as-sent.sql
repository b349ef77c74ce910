--! Previous: sha1:671731d6a8007a570f9e3ef99605a693114de095
--! Hash: sha1:590b00170d33f03a5a326a0dcf478103de276c74
--! Message: json-sizes-as-sent

--! split: 1-current.sql
/*
 * props and device are measured as compact JSON, not as PostgreSQL prints them.
 *
 * SPEC section 5.1 allows props of at most 4 KiB (and this service device of at most 1 KiB).
 * The check measured the jsonb's text, which PostgreSQL prints with a space after every ':' and
 * ',': props of 400 short keys, 3,601 bytes as the tracker sends them, measured 4,400 and were
 * refused. Now a value that looks too large is measured again as compact JSON (the printed text
 * less those spaces); the common small value still costs one octet_length.
 */

/* The size of a JSON value written without white space: jsonb's text less the space after each ':' and ','. */
create or replace function app_private.compact_json_size(value jsonb) returns integer
  language sql immutable
as $$
  select pg_catalog.octet_length(value::text) - coalesce((
    select pg_catalog.sum(case pg_catalog.jsonb_typeof(x)
                            when 'object' then greatest(2 * (select pg_catalog.count(*) from pg_catalog.jsonb_object_keys(x)) - 1, 0)
                            when 'array' then greatest(pg_catalog.jsonb_array_length(x) - 1, 0)
                            else 0 end)
      from pg_catalog.jsonb_path_query(value, 'strict $.**') x), 0)::integer;
$$;
comment on function app_private.compact_json_size(jsonb) is
  E'Bytes of a JSON value written compactly (no white space), as a tracker sends it.';

create or replace function app_private.event_problem(event jsonb, site app_public.sites, now timestamptz)
  returns table (code text, message text, occurred_at timestamptz)
  language sql stable
as $$
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
$$;
