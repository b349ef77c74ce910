--! Previous: sha1:26106426d9eca35b75aa8fa7f51e04d1366a051b
--! Hash: sha1:729fa83e68b0d82fdb52ed7a5bf2774e8fae6940
--! Message: landing-query-only-and-trimmed

--! split: 1-current.sql
/*
 * A landing URL's parameters: only its query, trimmed of any white space.
 *
 * url_params read the parameters after the first '?' anywhere in the URL, so a '?' inside the
 * fragment (hash-routed pages: https://shop.example/#/offer?gclid=…) was read as the query and
 * the session attributed by it; a fragment is not part of the landing URL's query and never
 * reaches the server. And values were trimmed of spaces only, so a tab or line break left by a
 * template (utm_source=%09google) split one source into two. SPEC section 7: values are trimmed.
 */
create or replace function app_hidden.url_params(url text) returns jsonb
  language plpgsql immutable strict parallel safe
as $$
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
