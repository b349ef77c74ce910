--! Previous: sha1:2721776f92f7df74bce8a434b9ae88862e124ce8
--! Hash: sha1:44bef9d525a984352da3d54dca5ceb601b9e91da
--! Message: ingest-requests-group-commit

--! split: 1-current.sql
/*
 * Group commit for tracker requests. Under load the HTTP layer hands the requests that queued
 * while every connection was busy to one call of ingest_requests instead of one transaction
 * each. The per-request work is unchanged (app_private.ingest_events); what a group shares is
 * the transaction around it: one commit flush, one set of relation locks, one round trip.
 *
 * Each request still stands alone. It runs in its own subtransaction (the BEGIN … EXCEPTION
 * block), so a request that raises (unknown site, origin, rate limit, a failed ledger write)
 * leaves nothing behind and is reported in its slot, while the rest of the group commits.
 */
drop function if exists app_private.ingest_requests(jsonb, text[]);
create function app_private.ingest_requests(requests jsonb, global_origins text[] default '{}')
returns jsonb
language plpgsql
security definer
set search_path = pg_catalog, public, pg_temp
as $$
declare
  v_request jsonb;
  v_outcomes jsonb[] := '{}';
  v_state text;
  v_detail text;
  v_message text;
begin
  if pg_catalog.jsonb_typeof(requests) is distinct from 'array' then
    raise exception using errcode = 'OMENV', message = 'requests must be an array.';
  end if;
  for v_request in select value from pg_catalog.jsonb_array_elements(requests) loop
    begin
      v_outcomes := v_outcomes || pg_catalog.jsonb_build_object('result',
        app_private.ingest_events(v_request ->> 'site', v_request -> 'events', v_request ->> 'origin',
                                  v_request ->> 'client_ip', v_request ->> 'user_agent', global_origins));
    exception when others then
      get stacked diagnostics v_state = returned_sqlstate, v_detail = pg_exception_detail, v_message = message_text;
      v_outcomes := v_outcomes || pg_catalog.jsonb_build_object('code', v_state, 'detail', v_detail, 'message', v_message);
    end;
  end loop;
  return pg_catalog.to_jsonb(v_outcomes);
end;
$$;
comment on function app_private.ingest_requests(jsonb, text[]) is
  E'POST /api/sync under load: several requests ({site, events, origin, client_ip, user_agent}) in one transaction, each in its own subtransaction through ingest_events. Returns one outcome per request, in order: {result} or {code, detail, message} for a request that raised and left nothing.';
revoke all on function app_private.ingest_requests(jsonb, text[]) from public;
grant execute on function app_private.ingest_requests(jsonb, text[]) to :DATABASE_AUTHENTICATOR;
