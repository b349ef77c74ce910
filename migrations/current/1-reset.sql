/*
 * migrations/current must be re-runnable while it is being written: drop what the files
 * below create, in reverse order of dependency, then they build it again.
 */
drop function if exists app_private.ingest_cleanup();
drop function if exists app_private.origin_known(text, text[]);
drop index if exists app_public.sites_allowed_origins_idx;
drop function if exists app_private.record_consent(text, text, jsonb, text, text, text[]);
drop function if exists app_private.ingest_events(text, jsonb, text, text, text, text[]);
drop function if exists app_private.event_problem(jsonb, app_public.sites, timestamptz);
drop function if exists app_hidden.parse_timestamptz(text);
drop function if exists app_private.find_site(text, text, text[], text);
drop function if exists app_private.effective_consent(app_public.sites, jsonb, jsonb);
drop function if exists app_private.valid_consent(jsonb);
drop function if exists app_private.latest_consent(uuid, bytea);
drop function if exists app_private.give_back_quota(app_public.sites, date);
drop function if exists app_private.take_quota(app_public.sites, date);
drop function if exists app_private.ensure_quota_shards(app_public.sites, date);
drop function if exists app_private.check_rate_limit(app_public.sites, text);
drop function if exists app_private.origin_allowed(app_public.sites, text, text[]);
drop function if exists app_private.daily_salt(date);
drop function if exists app_private.place_event(uuid, text, text, uuid, timestamptz, text, text, text, text);
drop function if exists app_private.rebuild_sessions(uuid, text, timestamptz, text);
drop function if exists app_private.rebuild_sessions(uuid, text, timestamptz, uuid, text);
drop function if exists app_private.open_session(uuid, text, text, uuid, timestamptz, text, text, text);
drop function if exists app_private.session_id_for(uuid, uuid);
drop function if exists app_hidden.starts_new_session(text, text, text, text);
drop function if exists app_hidden.classify_landing(text, text, text);
drop type if exists app_hidden.landing_attribution;
drop function if exists app_hidden.url_click_id(text);
drop function if exists app_hidden.is_search_host(text);
drop function if exists app_hidden.social_network_of_host(text);
drop function if exists app_hidden.social_network_of_source(text);
drop function if exists app_hidden.host_is_on(text, text);
drop function if exists app_hidden.url_param(text, text);
drop function if exists app_hidden.url_host(text);
drop function if exists app_hidden.percent_decode(text);
drop function if exists app_private.maintain_partitions();
drop function if exists app_private.secure_partitions();
drop trigger if exists _210_issue_salt on app_public.sites;
drop function if exists app_private.tg_sites__issue_salt();
drop table if exists app_private.bot_user_agents, app_private.rate_counters, app_private.quota_shards,
  app_private.daily_salts, app_private.site_salts, app_public.consents;
delete from partman.part_config
 where parent_table in ('app_public.ingest_idempotency', 'app_public.events', 'app_public.sessions');
drop table if exists partman.template_app_public_ingest_idempotency, partman.template_app_public_events,
  partman.template_app_public_sessions;
drop table if exists app_public.sessions, app_public.events, app_public.ingest_idempotency cascade;
