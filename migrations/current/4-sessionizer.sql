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
  set search_path to pg_catalog, public, pg_temp
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
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_landing app_hidden.landing_attribution := app_hidden.classify_landing(open_session.url, open_session.referrer, open_session.site_domain);
  v_assist record;
  v_session app_public.sessions;
  v_any_click record;
begin
  select * into v_any_click from app_hidden.url_click_id(open_session.url);
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
  v_session.click_id := coalesce(v_landing.click_id, v_any_click.click_id);
  v_session.click_id_type := case when v_landing.click_id is not null then v_landing.click_id_type else v_any_click.click_id_type end;
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
  set search_path to pg_catalog, public, pg_temp
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
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_previous record;
  v_session app_public.sessions;
begin
  select e.occurred_at, e.session_id into v_previous
    from app_public.events e
   where e.site_id = place_event.site_id and e.visitor_key = place_event.visitor_key
     and e.occurred_at >= place_event.occurred_at - interval '30 minutes' and not e.is_bot
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
