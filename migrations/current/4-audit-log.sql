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
