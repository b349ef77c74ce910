/*
 * Staff decide what a call was: seal (a qualified lead, optionally with a value: its
 * conversation, sale and conversion follow), junk (spam, wrong number), or undo the latest
 * decision. Actions are appended, never changed: an undo is a row pointing at what it undid.
 */
drop function if exists app_public.seal_call(uuid, uuid, numeric, text) cascade;
drop function if exists app_public.junk_call(uuid, uuid) cascade;
drop function if exists app_public.undo_call_action(uuid, uuid) cascade;
drop function if exists app_private.lock_call_for_action(uuid, uuid, text) cascade;

create table app_public.call_actions (
  site_id uuid not null references app_public.sites on delete cascade,
  id uuid not null default gen_random_uuid(),
  call_id uuid not null,
  action text not null constraint call_actions_action check (action in ('seal', 'junk', 'undo')),
  value numeric,
  currency text,
  sale_id uuid,
  undoes_id uuid,
  actor_user_id uuid,
  actor_api_key_id uuid,
  created_at timestamptz not null default now(),
  primary key (site_id, id),
  constraint call_actions_call_fkey foreign key (site_id, call_id) references app_public.calls (site_id, id) on delete cascade,
  constraint call_actions_sale_fkey foreign key (site_id, sale_id) references app_public.sales (site_id, id) on delete set null (sale_id),
  constraint call_actions_undoes_fkey foreign key (site_id, undoes_id) references app_public.call_actions (site_id, id) on delete cascade,
  -- An action is undone at most once, and only an undo points at another action.
  constraint call_actions_undone_once unique (site_id, undoes_id),
  constraint call_actions_undo_points_back check ((action = 'undo') = (undoes_id is not null))
);
comment on table app_public.call_actions is
  E'@behavior +aggregates +aggregates:filterBy +aggregates:orderBy\nEvery seal, junk and undo staff applied to a call, in order; never changed.';
comment on column app_public.call_actions.site_id is E'The site.';
comment on column app_public.call_actions.id is E'Identifier.';
comment on column app_public.call_actions.call_id is E'The call.';
comment on column app_public.call_actions.action is E'seal, junk or undo.';
comment on column app_public.call_actions.value is E'The value given when sealing, if any.';
comment on column app_public.call_actions.currency is E'Its currency.';
comment on column app_public.call_actions.sale_id is E'The sale a seal created.';
comment on column app_public.call_actions.undoes_id is E'For undo: the action it reverted.';
comment on column app_public.call_actions.actor_user_id is E'Who acted (dashboard user).';
comment on column app_public.call_actions.actor_api_key_id is E'Who acted (API key).';
comment on column app_public.call_actions.created_at is E'When.';
comment on constraint call_actions_undone_once on app_public.call_actions is E'@behavior -single';
comment on constraint call_actions_undoes_fkey on app_public.call_actions is E'@fieldName undoes\n@foreignFieldName undoneBy';
create index call_actions_call_idx on app_public.call_actions (site_id, call_id, created_at);
alter table app_public.call_actions enable row level security;
create policy select_member on app_public.call_actions for select using (site_id in (select app_hidden.current_user_site_ids()));
grant select on app_public.call_actions to :DATABASE_VISITOR;
create trigger _100_append_only before update on app_public.call_actions
  for each row execute function app_private.tg__refuse_change();
create trigger _500_audit after insert on app_public.call_actions
  for each row execute function app_private.tg__audit('site_id', 'id');
create trigger _500_audit after insert or update on app_public.conversations
  for each row execute function app_private.tg__audit('site_id', 'id', '-updated_at');

/*
 * Checks the caller may act on the call (editor or above) and locks it, so two people acting
 * on one call at once take turns. Returns the call and its standing decision, if any.
 */
create function app_private.lock_call_for_action(site_id uuid, call_id uuid, action text,
                                                 out call app_public.calls, out standing app_public.call_actions)
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  perform app_private.assert_caller_role(lock_call_for_action.site_id, 'editor', action || '_call', 'calls', lock_call_for_action.call_id::text);
  select * into call from app_public.calls c
   where c.site_id = lock_call_for_action.site_id and c.id = lock_call_for_action.call_id
     for update;
  if call.id is null then
    raise exception using errcode = 'OMUCL', message = 'No call of this site has this id.';
  end if;
  select * into standing from app_public.call_actions a
   where a.site_id = call.site_id and a.call_id = call.id and a.action <> 'undo'
     and not exists (select 1 from app_public.call_actions u where u.site_id = a.site_id and u.undoes_id = a.id)
   order by a.created_at desc, a.id desc
   limit 1;
end;
$$;
comment on function app_private.lock_call_for_action(uuid, uuid, text) is E'Role check and row lock for a call action; returns the call and its standing seal or junk.';

create function app_public.seal_call(site_id uuid, call_id uuid, value numeric default null, currency text default null)
  returns app_public.call_actions
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_locked record;
  v_site app_public.sites;
  v_conversation app_public.conversations;
  v_sale app_public.sales;
  v_action app_public.call_actions;
  v_action_id uuid := gen_random_uuid();
begin
  select * into v_locked from app_private.lock_call_for_action(seal_call.site_id, seal_call.call_id, 'seal');
  if (v_locked.standing).id is not null then
    raise exception using errcode = 'OMCAD', message = pg_catalog.format('The call is already %s; undo that first.',
      case (v_locked.standing).action when 'seal' then 'sealed' else 'junked' end);
  end if;
  select * into v_site from app_public.sites s where s.id = seal_call.site_id;
  insert into app_public.conversations as c (site_id, channel, call_id, session_id, status)
  values (seal_call.site_id, 'call', seal_call.call_id, (v_locked.call).session_id, 'qualified')
  on conflict on constraint conversations_call_key do update set status = 'qualified'
  returning * into v_conversation;
  -- The sale's external id is the action's: a call sealed again after an undo is a new sale.
  v_sale := app_private.record_sale(v_site, 'call:' || v_action_id::text, coalesce(seal_call.value, 0),
    pg_catalog.upper(coalesce(seal_call.currency, v_site.currency)), (v_locked.call).started_at,
    null, null, seal_call.call_id::text, null, null, null, null, v_conversation.id);
  insert into app_public.call_actions (site_id, id, call_id, action, value, currency, sale_id, actor_user_id, actor_api_key_id)
  values (seal_call.site_id, v_action_id, seal_call.call_id, 'seal', seal_call.value, v_sale.currency, v_sale.id,
          app_hidden.current_user_id(), app_hidden.current_api_key_id())
  returning * into v_action;
  return v_action;
end;
$$;
comment on function app_public.seal_call(uuid, uuid, numeric, text) is
  E'Marks a call a qualified lead (editor or above): its conversation and sale (value, default 0, in the site''s currency unless given) are recorded and the conversion queued for Google.';

create function app_public.junk_call(site_id uuid, call_id uuid)
  returns app_public.call_actions
  language plpgsql volatile strict security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_locked record;
  v_action app_public.call_actions;
begin
  select * into v_locked from app_private.lock_call_for_action(junk_call.site_id, junk_call.call_id, 'junk');
  if (v_locked.standing).id is not null then
    raise exception using errcode = 'OMCAD', message = pg_catalog.format('The call is already %s; undo that first.',
      case (v_locked.standing).action when 'seal' then 'sealed' else 'junked' end);
  end if;
  insert into app_public.conversations as c (site_id, channel, call_id, session_id, status)
  values (junk_call.site_id, 'call', junk_call.call_id, (v_locked.call).session_id, 'junk')
  on conflict on constraint conversations_call_key do update set status = 'junk';
  insert into app_public.call_actions (site_id, call_id, action, actor_user_id, actor_api_key_id)
  values (junk_call.site_id, junk_call.call_id, 'junk', app_hidden.current_user_id(), app_hidden.current_api_key_id())
  returning * into v_action;
  return v_action;
end;
$$;
comment on function app_public.junk_call(uuid, uuid) is E'Marks a call as spam or a wrong number (editor or above).';

create function app_public.undo_call_action(site_id uuid, call_id uuid)
  returns app_public.call_actions
  language plpgsql volatile strict security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_locked record;
  v_action app_public.call_actions;
begin
  select * into v_locked from app_private.lock_call_for_action(undo_call_action.site_id, undo_call_action.call_id, 'undo');
  if (v_locked.standing).id is null then
    raise exception using errcode = 'OMNUN', message = 'The call has no seal or junk to undo.';
  end if;
  if (v_locked.standing).action = 'seal' and (v_locked.standing).sale_id is not null then
    update app_public.sales s set status = 'cancelled'
     where s.site_id = undo_call_action.site_id and s.id = (v_locked.standing).sale_id;
    perform app_private.withdraw_conversion(undo_call_action.site_id, (v_locked.standing).sale_id);
  end if;
  update app_public.conversations c set status = 'open'
   where c.site_id = undo_call_action.site_id and c.call_id = undo_call_action.call_id;
  insert into app_public.call_actions (site_id, call_id, action, undoes_id, actor_user_id, actor_api_key_id)
  values (undo_call_action.site_id, undo_call_action.call_id, 'undo', (v_locked.standing).id,
          app_hidden.current_user_id(), app_hidden.current_api_key_id())
  returning * into v_action;
  return v_action;
end;
$$;
comment on function app_public.undo_call_action(uuid, uuid) is
  E'Reverts the call''s standing seal or junk (editor or above): an undelivered conversion is cancelled, a delivered one gets a retraction queued. nothing_to_undo when there is none.';
