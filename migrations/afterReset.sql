/*
 * Run as a superuser whenever a database is created or reset (by graphile-migrate's reset and
 * by `npx opsmantik setup`). Extensions need superuser rights; everything after this runs as
 * the owner role through migrations.
 *
 * pg_partman lives in its own schema, as its documentation asks, so that its many helper
 * functions never clutter ours and our search_path never resolves to them by accident.
 */
create extension if not exists pgcrypto with schema public;
create extension if not exists citext with schema public;
create schema if not exists partman;
create extension if not exists pg_partman with schema partman;

-- Nobody but the owner creates objects in public; clients reach only what migrations grant.
revoke all on database :DATABASE_NAME from public;
grant connect, temporary on database :DATABASE_NAME to :DATABASE_AUTHENTICATOR;
grant all on database :DATABASE_NAME to :DATABASE_OWNER;
revoke create on schema public from public;
grant all on schema partman to :DATABASE_OWNER;
grant all on all tables in schema partman to :DATABASE_OWNER;
grant execute on all functions in schema partman to :DATABASE_OWNER;
grant execute on all procedures in schema partman to :DATABASE_OWNER;
