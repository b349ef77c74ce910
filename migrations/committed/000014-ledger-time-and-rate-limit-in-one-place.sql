--! Previous: sha1:63b3f9eb755f41a987fcd833a3f648d12d6143b2
--! Hash: sha1:f75df92c850c8458cfcf6d2b69308619257270fc
--! Message: ledger-time-and-rate-limit-in-one-place

--! split: 1-current.sql
--! One text form for ledger times.
--
-- The digest's time format was spelled in ledger_line and again, twice, in the dispute
-- export's query. ledger_time is the one place; it inlines (STABLE like to_char, strict like
-- its body), so neither the digest nor the export pays a call per row, and every line is byte
-- for byte what it was.
create or replace function app_hidden.ledger_time(at timestamptz) returns text
  language sql stable strict parallel safe
as $$
  select pg_catalog.to_char(at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"');
$$;
comment on function app_hidden.ledger_time(timestamptz) is
  'A ledger time as the digest and the dispute export write it: UTC, milliseconds (truncated), Z.';

create or replace function app_hidden.ledger_line(idempotency_key uuid, occurred_at timestamptz, billable boolean) returns text
  language sql stable strict parallel safe
as $$
  select idempotency_key::text || ',' || app_hidden.ledger_time(occurred_at) || ',' || billable::text;
$$;

--! The rate limit is decided in one place.
--
-- 000011 had find_site skip check_rate_limit when the site has no limit or the request no IP,
-- which check_rate_limit already decides for itself; the call costs microseconds.
create or replace function app_private.find_site(public_key text, origin text, global_origins text[], client_ip text) returns app_public.sites
  language plpgsql
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
