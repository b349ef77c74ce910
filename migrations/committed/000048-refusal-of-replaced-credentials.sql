--! Previous: sha1:049126a4c6890490e63e56dad6b2bd4ee8aeb815
--! Hash: sha1:14f2cb6bf9064d663ef0474e36d1e7ab295a83c5
--! Message: refusal-of-replaced-credentials

--! split: 1-current.sql
/*
 * A refusal Google gave to credentials that have since been replaced does not undo the new ones.
 *
 * An upload run reads the destination and its refresh token when it starts. If a person set new
 * credentials (or set the destination active again) while that run was under way, the run could
 * still meet Google's refusal of the old ones and mark the destination needs_reauth: the new
 * credentials looked refused until set a second time. The run now says which version of the
 * destination it worked with (its updated_at as read); a destination changed since is left as
 * it is, and the next run finds out with what is there now.
 */
drop function if exists app_private.mark_destination_needs_reauth(uuid, text);
create or replace function app_private.mark_destination_needs_reauth(destination_id uuid, code text, seen_at timestamptz default null) returns void
  language sql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
  update app_public.destinations d set status = 'needs_reauth', status_reason = mark_destination_needs_reauth.code
   where d.id = mark_destination_needs_reauth.destination_id and d.status = 'active'
     and (mark_destination_needs_reauth.seen_at is null or d.updated_at <= mark_destination_needs_reauth.seen_at);
$$;
comment on function app_private.mark_destination_needs_reauth(uuid, text, timestamptz) is
  E'Google refused the destination (its credentials, or the destination itself): a person must act. With seen_at (the destination''s updated_at as the caller read it), a destination changed since is left alone.';
