/*
 * The conversation layer: a lead reaches the business by call, form or chat (a conversation);
 * some conversations end in a sale. A sale keeps how it was attributed, so the conversion we
 * upload can be explained later.
 */
drop table if exists app_public.offline_conversion_queue cascade;
drop table if exists app_public.call_actions cascade;
drop table if exists app_private.sale_identifiers cascade;
drop table if exists app_public.sales cascade;
drop table if exists app_public.conversations cascade;

create table app_public.conversations (
  site_id uuid not null references app_public.sites on delete cascade,
  id uuid not null default gen_random_uuid(),
  channel text not null constraint conversations_channel check (channel in ('call', 'form', 'chat')),
  call_id uuid,
  session_id uuid,
  status text not null default 'open' constraint conversations_status check (status in ('open', 'qualified', 'junk')),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (site_id, id),
  constraint conversations_call_fkey foreign key (site_id, call_id) references app_public.calls (site_id, id) on delete set null (call_id),
  constraint conversations_call_key unique (site_id, call_id)
);
comment on table app_public.conversations is
  E'@behavior +aggregates +aggregates:filterBy +aggregates:orderBy\nA lead''s contact with the business: a call, a form or a chat. Calls get theirs when staff seal or junk them.';
comment on column app_public.conversations.site_id is E'The site.';
comment on column app_public.conversations.id is E'Identifier.';
comment on column app_public.conversations.channel is E'call, form or chat.';
comment on column app_public.conversations.call_id is E'The call, for channel call.';
comment on column app_public.conversations.session_id is E'The website session that led to it, when known.';
comment on column app_public.conversations.status is E'open, qualified (a real lead) or junk (spam, wrong number).';
comment on column app_public.conversations.created_at is E'When it was recorded.';
comment on column app_public.conversations.updated_at is E'When its status last changed.';
create index conversations_session_idx on app_public.conversations (site_id, session_id);
alter table app_public.conversations enable row level security;
create policy select_member on app_public.conversations for select using (site_id in (select app_hidden.current_user_site_ids()));
grant select on app_public.conversations to :DATABASE_VISITOR;
create trigger _100_touch_updated_at before update on app_public.conversations
  for each row execute function app_private.tg__touch_updated_at();

create table app_public.sales (
  site_id uuid not null references app_public.sites on delete cascade,
  id uuid not null default gen_random_uuid(),
  external_id text not null constraint sales_external_id_format check (external_id ~ '^[[:graph:]]([[:graph:] ]{0,126}[[:graph:]])?$'),
  amount numeric not null constraint sales_amount_range check (amount >= 0 and amount < 1e12),
  currency text not null constraint sales_currency_iso check (app_hidden.currency_minor_units(currency) is not null),
  occurred_at timestamptz not null,
  status text not null default 'confirmed' constraint sales_status check (status in ('confirmed', 'cancelled')),
  conversation_id uuid,
  call_id uuid,
  session_id uuid,
  visitor_id text constraint sales_visitor_id_format check (visitor_id ~ '^[A-Za-z0-9_-]{1,64}$'),
  gclid text constraint sales_gclid_format check (gclid ~ '^[A-Za-z0-9_-]{1,255}$'),
  attribution_tier text constraint sales_attribution_tier check (attribution_tier in ('S1', 'S2', 'S3', 'S4', 'S5')),
  attribution_source text,
  click_id text,
  click_id_type text,
  created_at timestamptz not null default now(),
  created_by_user_id uuid,
  created_by_api_key_id uuid,
  primary key (site_id, id),
  constraint sales_external_id_key unique (site_id, external_id),
  constraint sales_conversation_fkey foreign key (site_id, conversation_id) references app_public.conversations (site_id, id) on delete set null (conversation_id),
  constraint sales_call_fkey foreign key (site_id, call_id) references app_public.calls (site_id, id) on delete set null (call_id)
);
comment on table app_public.sales is
  E'@behavior +aggregates +aggregates:filterBy +aggregates:orderBy\nConfirmed sales (from a CRM, the dashboard or a sealed call), with the attribution their conversion is uploaded with.';
comment on column app_public.sales.site_id is E'The site.';
comment on column app_public.sales.id is E'Identifier.';
comment on column app_public.sales.external_id is E'The CRM''s identifier: unique per site, so a repeated confirmation changes nothing. Sent to Google as the order id.';
comment on column app_public.sales.amount is E'Value in currency units (never negative).';
comment on column app_public.sales.currency is E'ISO 4217 code.';
comment on column app_public.sales.occurred_at is E'When the sale happened.';
comment on column app_public.sales.status is E'confirmed, or cancelled when a sealed call was undone.';
comment on column app_public.sales.conversation_id is E'The conversation it came from, if any.';
comment on column app_public.sales.call_id is E'The call it came from, if any.';
comment on column app_public.sales.session_id is E'The session it was attributed to, if any.';
comment on column app_public.sales.visitor_id is E'The website visitor id the CRM sent, if any.';
comment on column app_public.sales.gclid is E'The Google click id the CRM sent, if any.';
comment on column app_public.sales.attribution_tier is E'S1…S5 of the session, call or click it was attributed to; null when nothing was known.';
comment on column app_public.sales.attribution_source is E'The attribution detail (see sessions).';
comment on column app_public.sales.click_id is E'The Google click id its conversion is uploaded with (S1''s own, S3''s assisting one).';
comment on column app_public.sales.click_id_type is E'gclid, gbraid or wbraid.';
comment on column app_public.sales.created_at is E'When it was recorded.';
comment on column app_public.sales.created_by_user_id is E'The dashboard user who confirmed it, if any.';
comment on column app_public.sales.created_by_api_key_id is E'The API key (CRM) that confirmed it, if any.';
create index sales_session_idx on app_public.sales (site_id, session_id);
create index sales_call_idx on app_public.sales (site_id, call_id);
create index sales_conversation_idx on app_public.sales (site_id, conversation_id);
alter table app_public.sales enable row level security;
create policy select_member on app_public.sales for select using (site_id in (select app_hidden.current_user_site_ids()));
grant select on app_public.sales to :DATABASE_VISITOR;
-- Personal identifiers stay out of the audit log: ids and amounts are enough to reconstruct who did what.
create trigger _500_audit after insert or update or delete on app_public.sales
  for each row execute function app_private.tg__audit('site_id', 'id', '-visitor_id', '-gclid', '-click_id');

/*
 * Hashed email and phone of a sale's customer, kept apart from the sale so no GraphQL field
 * or audit row ever carries them; only the uploader reads them.
 */
create table app_private.sale_identifiers (
  site_id uuid not null,
  sale_id uuid not null,
  email_sha256 text constraint sale_identifiers_email_hex check (email_sha256 ~ '^[0-9a-f]{64}$'),
  phone_sha256 text constraint sale_identifiers_phone_hex check (phone_sha256 ~ '^[0-9a-f]{64}$'),
  primary key (site_id, sale_id),
  foreign key (site_id, sale_id) references app_public.sales (site_id, id) on delete cascade
);
comment on table app_private.sale_identifiers is
  E'SHA-256 of the normalised email and phone of a sale''s customer (Google''s rules); never in clear, never exposed.';
create index sale_identifiers_email_idx on app_private.sale_identifiers (site_id, email_sha256) where email_sha256 is not null;
create index sale_identifiers_phone_idx on app_private.sale_identifiers (site_id, phone_sha256) where phone_sha256 is not null;
alter table app_private.sale_identifiers enable row level security;
