--! Previous: sha1:8f1a59c1d938d2223808df8f36c598b5b2df3058
--! Hash: sha1:8d7249786c8acb6717494567c86bd4f35b33256b
--! Message: sales-queue-delivery

--! split: 1-money-and-identifiers.sql
/*
 * Money and personal identifiers, checked and normalised in one place for every writer
 * (GraphQL, the CRM webhook, call actions).
 */

/*
 * ISO 4217 currencies in circulation, with their minor units (2 unless listed). Funds, precious
 * metals and testing codes (XAU, XTS, XXX…) are left out: nobody sells in them.
 */
create function app_hidden.currency_minor_units(code text) returns integer
  language sql immutable strict parallel safe
  set search_path to pg_catalog, public, pg_temp
as $$
  select case
    when code in ('BIF', 'CLP', 'DJF', 'GNF', 'ISK', 'JPY', 'KMF', 'KRW', 'PYG', 'RWF', 'UGX', 'UYI', 'VND', 'VUV', 'XAF', 'XOF', 'XPF') then 0
    when code in ('BHD', 'IQD', 'JOD', 'KWD', 'LYD', 'OMR', 'TND') then 3
    when code in ('CLF', 'UYW') then 4
    when code in ('AED', 'AFN', 'ALL', 'AMD', 'ANG', 'AOA', 'ARS', 'AUD', 'AWG', 'AZN', 'BAM', 'BBD', 'BDT', 'BGN', 'BMD', 'BND',
                  'BOB', 'BOV', 'BRL', 'BSD', 'BTN', 'BWP', 'BYN', 'BZD', 'CAD', 'CDF', 'CHE', 'CHF', 'CHW', 'CNY', 'COP', 'COU',
                  'CRC', 'CUP', 'CVE', 'CZK', 'DKK', 'DOP', 'DZD', 'EGP', 'ERN', 'ETB', 'EUR', 'FJD', 'FKP', 'GBP', 'GEL', 'GHS',
                  'GIP', 'GMD', 'GTQ', 'GYD', 'HKD', 'HNL', 'HTG', 'HUF', 'IDR', 'ILS', 'INR', 'IRR', 'JMD', 'KES', 'KGS', 'KHR',
                  'KPW', 'KYD', 'KZT', 'LAK', 'LBP', 'LKR', 'LRD', 'LSL', 'MAD', 'MDL', 'MGA', 'MKD', 'MMK', 'MNT', 'MOP', 'MRU',
                  'MUR', 'MVR', 'MWK', 'MXN', 'MXV', 'MYR', 'MZN', 'NAD', 'NGN', 'NIO', 'NOK', 'NPR', 'NZD', 'PAB', 'PEN', 'PGK',
                  'PHP', 'PKR', 'PLN', 'QAR', 'RON', 'RSD', 'RUB', 'SAR', 'SBD', 'SCR', 'SDG', 'SEK', 'SGD', 'SHP', 'SLE', 'SOS',
                  'SRD', 'SSP', 'STN', 'SVC', 'SYP', 'SZL', 'THB', 'TJS', 'TMT', 'TOP', 'TRY', 'TTD', 'TWD', 'TZS', 'UAH', 'USD',
                  'USN', 'UYU', 'UZS', 'VED', 'VES', 'WST', 'XCD', 'XCG', 'YER', 'ZAR', 'ZMW', 'ZWG') then 2
  end;
$$;
comment on function app_hidden.currency_minor_units(text) is
  E'Minor units of an ISO 4217 currency in circulation (JPY 0, USD 2, KWD 3), or null for anything else.';

-- Sites now name a real currency, not just three capital letters.
alter table app_public.sites drop constraint if exists sites_currency_format;
alter table app_public.sites add constraint sites_currency_format check (app_hidden.currency_minor_units(currency) is not null);

/*
 * Google's normalisation for hashed identifiers: trim, lower-case; for gmail.com and
 * googlemail.com addresses the dots of the local part go. Null for something that is not an
 * email address at all.
 */
create function app_hidden.normalize_email(email text) returns text
  language sql immutable strict parallel safe
  set search_path to pg_catalog, public, pg_temp
as $$
  select case
    when v.e !~ '^[^@[:space:]]{1,64}@[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$' or pg_catalog.length(v.e) > 254 then null
    when pg_catalog.split_part(v.e, '@', 2) in ('gmail.com', 'googlemail.com')
      then pg_catalog.replace(pg_catalog.split_part(v.e, '@', 1), '.', '') || '@' || pg_catalog.split_part(v.e, '@', 2)
    else v.e
  end
  from (select pg_catalog.lower(pg_catalog.btrim(email, E' \t\r\n')) as e) v;
$$;
comment on function app_hidden.normalize_email(text) is
  E'An email address as Google hashes it (trimmed, lower-case, no dots before @gmail.com), or null if it is not one.';

/*
 * E.164: a plus, the country code and the number, digits only. Spaces, dashes, dots and
 * brackets are dropped and a 00 international prefix becomes +. A number without its country
 * code cannot be normalised (we do not guess the country): null.
 */
create function app_hidden.normalize_phone(phone text) returns text
  language sql immutable strict parallel safe
  set search_path to pg_catalog, public, pg_temp
as $$
  select case when v.p ~ '^\+[1-9][0-9]{6,14}$' then v.p end
    from (select pg_catalog.regexp_replace(pg_catalog.regexp_replace(pg_catalog.btrim(phone), '[[:space:]().-]', '', 'g'), '^00', '+') as p) v;
$$;
comment on function app_hidden.normalize_phone(text) is
  E'A phone number in E.164 (+905551112233), or null when it has no country code or is not a number.';

create function app_hidden.identifier_sha256(normalized text) returns text
  language sql immutable strict parallel safe
  set search_path to pg_catalog, public, pg_temp
as $$
  select pg_catalog.encode(public.digest(pg_catalog.convert_to(normalized, 'UTF8'), 'sha256'), 'hex');
$$;
comment on function app_hidden.identifier_sha256(text) is E'Lower-case hex SHA-256 of a normalised identifier, as Google expects it.';

--! split: 2-conversations-and-sales.sql
/*
 * The conversation layer: a lead reaches the business by call, form or chat (a conversation);
 * some conversations end in a sale. A sale keeps how it was attributed, so the conversion we
 * upload can be explained later.
 */

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

--! split: 3-offline-conversion-queue.sql
/*
 * The outbox to Google. A row is written in the same transaction as the sale that causes it,
 * together with the graphile-worker job that will upload it; uploaders claim rows with
 * FOR UPDATE SKIP LOCKED under a lease, so a crashed uploader's rows return to the pool.
 *
 *   pending ──claim──▶ processing ──▶ sent (awaiting Google's processing) ──▶ accepted
 *      ▲                   │  └──────────────────────────────────────────────▶ accepted
 *      └── retry_at ◀──────┤ (TOO_RECENT_*, transient, quota, lease expired)
 *                          └──▶ failed (Google's final code)
 *   pending ──undo──▶ cancelled;  delivered ──undo──▶ a retraction row of its own
 */

create table app_public.offline_conversion_queue (
  site_id uuid not null references app_public.sites on delete cascade,
  id uuid not null default gen_random_uuid(),
  sale_id uuid not null,
  provider text not null default 'google' constraint offline_conversion_queue_provider check (provider in ('google')),
  kind text not null default 'conversion' constraint offline_conversion_queue_kind check (kind in ('conversion', 'retraction')),
  status text not null default 'pending'
    constraint offline_conversion_queue_status check (status in ('pending', 'processing', 'sent', 'accepted', 'failed', 'cancelled')),
  order_id text not null,
  click_id text,
  click_id_type text constraint offline_conversion_queue_click_id_type check (click_id_type in ('gclid', 'gbraid', 'wbraid')),
  conversion_at timestamptz not null,
  value numeric not null,
  currency text not null,
  ad_user_data text not null constraint offline_conversion_queue_ad_user_data check (ad_user_data in ('granted', 'denied', 'unspecified')),
  ad_personalization text not null constraint offline_conversion_queue_ad_personalization check (ad_personalization in ('granted', 'denied', 'unspecified')),
  attempts integer not null default 0,
  retry_at timestamptz not null default now(),
  locked_by text,
  locked_until timestamptz,
  last_error_code text,
  last_error_message text,
  request_id text,
  sent_at timestamptz,
  accepted_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (site_id, id),
  constraint offline_conversion_queue_sale_fkey foreign key (site_id, sale_id) references app_public.sales (site_id, id) on delete cascade,
  constraint offline_conversion_queue_once unique (site_id, sale_id, provider, kind)
);
comment on table app_public.offline_conversion_queue is
  E'@behavior +aggregates +aggregates:filterBy +aggregates:orderBy +groupedAggregates\nConversions (and retractions of undone ones) on their way to Google, one row each, with their honest status.';
comment on column app_public.offline_conversion_queue.site_id is E'The site.';
comment on column app_public.offline_conversion_queue.id is E'Identifier.';
comment on column app_public.offline_conversion_queue.sale_id is E'The sale it reports.';
comment on column app_public.offline_conversion_queue.provider is E'Where it goes (google).';
comment on column app_public.offline_conversion_queue.kind is E'conversion, or retraction of one already delivered.';
comment on column app_public.offline_conversion_queue.status is
  E'pending (waiting; see retry_at), processing (an uploader holds it), sent (Google has it, result pending), accepted, failed (see last_error_code) or cancelled.';
comment on column app_public.offline_conversion_queue.order_id is E'Sent as the order / transaction id, the same on every attempt, so Google counts the conversion once.';
comment on column app_public.offline_conversion_queue.click_id is E'The Google click id it is attributed to; filled in later if it becomes known before delivery.';
comment on column app_public.offline_conversion_queue.click_id_type is E'gclid, gbraid or wbraid.';
comment on column app_public.offline_conversion_queue.conversion_at is E'When the conversion happened.';
comment on column app_public.offline_conversion_queue.value is E'Conversion value.';
comment on column app_public.offline_conversion_queue.currency is E'ISO 4217 code.';
comment on column app_public.offline_conversion_queue.ad_user_data is E'Consent Mode v2 signal sent with it; hashed email and phone go only when granted.';
comment on column app_public.offline_conversion_queue.ad_personalization is E'Consent Mode v2 signal sent with it.';
comment on column app_public.offline_conversion_queue.attempts is E'How many times an uploader claimed it.';
comment on column app_public.offline_conversion_queue.retry_at is E'Not claimed before this time (Google asked us to wait, or an error backs off).';
comment on column app_public.offline_conversion_queue.locked_by is E'The uploader holding it, while processing.';
comment on column app_public.offline_conversion_queue.locked_until is E'The lease: past it, another uploader may reclaim the row.';
comment on column app_public.offline_conversion_queue.last_error_code is E'Google''s (or our) code for the last failure.';
comment on column app_public.offline_conversion_queue.last_error_message is E'The last failure in words.';
comment on column app_public.offline_conversion_queue.request_id is E'Google''s request id of the upload that carried it.';
comment on column app_public.offline_conversion_queue.sent_at is E'When Google first took the upload.';
comment on column app_public.offline_conversion_queue.accepted_at is E'When Google accepted it.';
comment on column app_public.offline_conversion_queue.created_at is E'When it was queued.';
comment on column app_public.offline_conversion_queue.updated_at is E'When it last changed.';
-- What claimers look for: due pending rows, and processing rows whose lease has run out.
create index offline_conversion_queue_due_idx on app_public.offline_conversion_queue (provider, retry_at) where status = 'pending';
create index offline_conversion_queue_lease_idx on app_public.offline_conversion_queue (provider, locked_until) where status = 'processing';
create index offline_conversion_queue_sale_idx on app_public.offline_conversion_queue (site_id, sale_id);
alter table app_public.offline_conversion_queue enable row level security;
create policy select_member on app_public.offline_conversion_queue for select using (site_id in (select app_hidden.current_user_site_ids()));
grant select on app_public.offline_conversion_queue to :DATABASE_VISITOR;
create trigger _100_touch_updated_at before update on app_public.offline_conversion_queue
  for each row execute function app_private.tg__touch_updated_at();

/*
 * Requests (the visitor role, i.e. GraphQL and the HTTP API) must hold min_role on the site.
 * The owner's own sessions (the worker, migrations, a DBA connected as the owner or a
 * superuser) are not limited. Anything else fails closed.
 */
create function app_private.assert_caller_role(site_id uuid, min_role app_public.site_role, action text, target_table text, target_id text)
  returns void
  language plpgsql stable
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  if pg_catalog.current_setting('role', true) is distinct from ':DATABASE_VISITOR'
     and (session_user = ':DATABASE_OWNER' or exists (select 1 from pg_catalog.pg_roles r where r.rolname = session_user and r.rolsuper)) then
    return;
  end if;
  perform app_hidden.assert_site_role(assert_caller_role.site_id, assert_caller_role.min_role, assert_caller_role.action,
                                      assert_caller_role.target_table, assert_caller_role.target_id);
end;
$$;
comment on function app_private.assert_caller_role(uuid, app_public.site_role, text, text, text) is
  E'Raises OM403 unless the caller holds min_role on the site; the owner''s own sessions (worker, DBA) pass.';

/*
 * The upload job, in the caller's transaction. One job per site is enough however many rows
 * are waiting (job_key); if that job is already running, graphile-worker queues a fresh one,
 * so a row added during an upload is never left behind.
 */
create function app_private.enqueue_upload(site_id uuid, provider text, run_at timestamptz default null) returns void
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  perform graphile_worker.add_job('upload_conversions',
    pg_catalog.json_build_object('site_id', enqueue_upload.site_id, 'provider', enqueue_upload.provider),
    job_key => 'upload_conversions:' || enqueue_upload.provider || ':' || enqueue_upload.site_id::text,
    job_key_mode => 'preserve_run_at',
    run_at => coalesce(enqueue_upload.run_at, pg_catalog.now()));
end;
$$;
comment on function app_private.enqueue_upload(uuid, text, timestamptz) is E'Schedules the upload_conversions job of a site (one per site; idempotent).';

/*
 * Hands an uploader up to "limit" rows that are due (pending past retry_at, or processing with
 * an expired lease), marking them processing under a lease. SKIP LOCKED: two uploaders never
 * get the same row and never wait for each other.
 */
create function app_private.claim_offline_conversion_jobs(
  provider text, "limit" integer, site_id uuid default null, worker text default null, lease_seconds integer default 300
) returns setof app_public.offline_conversion_queue
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  if claim_offline_conversion_jobs."limit" not between 1 and 2000 or claim_offline_conversion_jobs.lease_seconds not between 10 and 86400 then
    raise exception using errcode = '22023', message = 'limit must be 1 to 2000 and lease_seconds 10 to 86400.';
  end if;
  return query
  with due as (
    select q.site_id, q.id
      from app_public.offline_conversion_queue q
     where q.provider = claim_offline_conversion_jobs.provider
       and (claim_offline_conversion_jobs.site_id is null or q.site_id = claim_offline_conversion_jobs.site_id)
       and ((q.status = 'pending' and q.retry_at <= pg_catalog.now())
            or (q.status = 'processing' and q.locked_until < pg_catalog.now()))
     order by q.retry_at, q.created_at, q.id
     limit claim_offline_conversion_jobs."limit"
       for update skip locked
  )
  update app_public.offline_conversion_queue q
     set status = 'processing',
         locked_by = coalesce(claim_offline_conversion_jobs.worker, pg_catalog.pg_backend_pid()::text),
         locked_until = pg_catalog.now() + pg_catalog.make_interval(secs => claim_offline_conversion_jobs.lease_seconds),
         attempts = q.attempts + 1
    from due
   where q.site_id = due.site_id and q.id = due.id
  returning q.*;
end;
$$;
comment on function app_private.claim_offline_conversion_jobs(text, integer, uuid, text, integer) is
  E'Claims up to limit due conversions (optionally of one site) for an uploader, under a lease of lease_seconds (FOR UPDATE SKIP LOCKED).';

--! split: 4-confirm-sale.sql
/*
 * Sale → queue → job, in one transaction: confirm_sale_and_enqueue records the sale, resolves
 * its attribution, stores the customer's hashed identifiers, queues the conversion and the
 * upload job. Any failure leaves none of them.
 */

/*
 * Where a sale came from, strongest link first: the session named, the call named (which
 * carries its session's attribution), the visitor's latest session in the 90 days before the
 * sale, a gclid alone (S1). The click id to upload is S1's own or S3's assisting one, and only
 * Google's kinds (gclid, gbraid, wbraid).
 */
create function app_private.resolve_sale_attribution(site_id uuid, session_id uuid, visitor_id text, call_id uuid, gclid text, at timestamptz)
  returns table (attributed_session_id uuid, attribution_tier text, attribution_source text, click_id text, click_id_type text, session_visitor_id text)
  language plpgsql stable
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_session app_public.sessions;
  v_call app_public.calls;
begin
  if resolve_sale_attribution.session_id is not null then
    select * into v_session from app_public.sessions s
     where s.site_id = resolve_sale_attribution.site_id and s.id = resolve_sale_attribution.session_id
     limit 1;
  end if;
  if v_session.id is null and resolve_sale_attribution.call_id is not null then
    select * into v_call from app_public.calls c
     where c.site_id = resolve_sale_attribution.site_id and c.id = resolve_sale_attribution.call_id;
    if v_call.session_id is not null then
      select * into v_session from app_public.sessions s
       where s.site_id = resolve_sale_attribution.site_id and s.id = v_call.session_id
       limit 1;
    end if;
  end if;
  if v_session.id is null and v_call.id is null and resolve_sale_attribution.visitor_id is not null then
    select * into v_session from app_public.sessions s
     where s.site_id = resolve_sale_attribution.site_id and s.visitor_key = resolve_sale_attribution.visitor_id
       and s.started_at <= resolve_sale_attribution.at and s.started_at > resolve_sale_attribution.at - interval '90 days'
     order by s.started_at desc, s.first_event_id desc
     limit 1;
  end if;

  if v_session.id is not null then
    attributed_session_id := v_session.id;
    attribution_tier := v_session.attribution_tier;
    attribution_source := v_session.attribution_source;
    session_visitor_id := v_session.visitor_id;
    if v_session.attribution_tier = 'S1' then
      click_id := v_session.click_id; click_id_type := v_session.click_id_type;
    elsif v_session.attribution_tier = 'S3' then
      click_id := v_session.assisting_click_id; click_id_type := v_session.assisting_click_id_type;
    end if;
  elsif v_call.id is not null and v_call.attribution_tier is not null then
    attribution_tier := v_call.attribution_tier;
    attribution_source := v_call.attribution_source;
    click_id := v_call.click_id; click_id_type := v_call.click_id_type;
  end if;
  if click_id is null and resolve_sale_attribution.gclid is not null then
    click_id := resolve_sale_attribution.gclid; click_id_type := 'gclid';
    if attribution_tier is null then
      attribution_tier := 'S1'; attribution_source := 'google_ads';
    end if;
  end if;
  if click_id_type not in ('gclid', 'gbraid', 'wbraid') then
    click_id := null; click_id_type := null;  -- msclkid and friends are not Google's
  end if;
  return next;
end;
$$;
comment on function app_private.resolve_sale_attribution(uuid, uuid, text, uuid, text, timestamptz) is
  E'The session, tier and Google click id a sale is attributed to, from its session, call, visitor or gclid.';

/*
 * The Consent Mode v2 signals a conversion carries: the visitor's latest banner choice, else
 * the consent recorded on the session's latest event, else the site's default. A CRM's own
 * record of consent (given with the sale) wins over all of them.
 */
create function app_private.conversion_consent(site app_public.sites, visitor_id text, session_id uuid)
  returns jsonb
  language plpgsql stable
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_consent jsonb;
begin
  if visitor_id is not null then
    select app_private.latest_consent(site.id, public.hmac(pg_catalog.convert_to(visitor_id, 'UTF8'), s.salt, 'sha256'))
      into v_consent from app_private.site_salts s where s.site_id = site.id;
  end if;
  if v_consent is null and session_id is not null then
    select e.consent into v_consent from app_public.events e
     where e.site_id = site.id and e.session_id = conversion_consent.session_id
     order by e.occurred_at desc, e.id desc
     limit 1;
  end if;
  return app_private.effective_consent(site, null, v_consent);
end;
$$;
comment on function app_private.conversion_consent(app_public.sites, text, uuid) is
  E'Consent signals for a conversion: the visitor''s latest choice, the session''s, or the site default.';

/* Queues a sale's conversion (once: ON CONFLICT DO NOTHING) and its upload job. */
create function app_private.enqueue_conversion(sale app_public.sales, consent jsonb)
  returns app_public.offline_conversion_queue
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_row app_public.offline_conversion_queue;
begin
  insert into app_public.offline_conversion_queue (site_id, sale_id, order_id, click_id, click_id_type, conversion_at, value, currency,
                                                   ad_user_data, ad_personalization)
  values (sale.site_id, sale.id, sale.external_id, sale.click_id, sale.click_id_type, sale.occurred_at, sale.amount, sale.currency,
          coalesce(consent ->> 'ad_user_data', 'unspecified'), coalesce(consent ->> 'ad_personalization', 'unspecified'))
  on conflict on constraint offline_conversion_queue_once do nothing
  returning * into v_row;
  if v_row.id is not null then
    perform app_private.enqueue_upload(sale.site_id, 'google');
  end if;
  return v_row;
end;
$$;
comment on function app_private.enqueue_conversion(app_public.sales, jsonb) is E'Queues the conversion of a sale, once, with its upload job.';

/*
 * A sale was undone: a conversion not yet handed to Google is cancelled; one Google may
 * already have (processing, sent, accepted) gets a retraction of its own.
 */
create function app_private.withdraw_conversion(site_id uuid, sale_id uuid) returns void
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_row app_public.offline_conversion_queue;
begin
  select * into v_row from app_public.offline_conversion_queue q
   where q.site_id = withdraw_conversion.site_id and q.sale_id = withdraw_conversion.sale_id and q.kind = 'conversion'
     for update;
  if v_row.status = 'pending' then
    update app_public.offline_conversion_queue q set status = 'cancelled', last_error_code = 'SALE_UNDONE', last_error_message = 'The sale was undone before delivery.'
     where q.site_id = v_row.site_id and q.id = v_row.id;
  elsif v_row.status in ('processing', 'sent', 'accepted') then
    insert into app_public.offline_conversion_queue (site_id, sale_id, kind, order_id, click_id, click_id_type, conversion_at, value, currency,
                                                     ad_user_data, ad_personalization)
    values (v_row.site_id, v_row.sale_id, 'retraction', v_row.order_id, v_row.click_id, v_row.click_id_type, v_row.conversion_at,
            v_row.value, v_row.currency, v_row.ad_user_data, v_row.ad_personalization)
    on conflict on constraint offline_conversion_queue_once do update set status = 'pending', retry_at = pg_catalog.now()
      where offline_conversion_queue.status = 'cancelled';
    perform app_private.enqueue_upload(v_row.site_id, v_row.provider);
  end if;
end;
$$;
comment on function app_private.withdraw_conversion(uuid, uuid) is
  E'Cancels a sale''s undelivered conversion, or queues a retraction of a delivered one.';

/*
 * The one writer of sales. Checks every field (OMSAL naming it), resolves attribution,
 * refuses a repeated external_id (OMSEX) and queues the conversion.
 */
create function app_private.record_sale(
  site app_public.sites, external_id text, amount numeric, currency text, occurred_at timestamptz,
  session_id uuid, visitor_id text, call_ref text, gclid text, email text, phone text, consent jsonb,
  conversation_id uuid
) returns app_public.sales
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_minor integer := app_hidden.currency_minor_units(record_sale.currency);
  v_email text := app_hidden.normalize_email(record_sale.email);
  v_phone text := app_hidden.normalize_phone(record_sale.phone);
  v_call app_public.calls;
  v_attribution record;
  v_sale app_public.sales;
begin
  if record_sale.external_id is null or record_sale.external_id !~ '^[[:graph:]]([[:graph:] ]{0,126}[[:graph:]])?$' then
    raise exception using errcode = 'OMSAL', message = 'external_id must be 1 to 128 printable characters.';
  end if;
  if record_sale.amount is null or record_sale.amount < 0 or record_sale.amount >= 1e12 then
    raise exception using errcode = 'OMSAL', message = 'amount must be a number from 0 up to 999999999999.';
  end if;
  if v_minor is null then
    raise exception using errcode = 'OMSAL', message = 'currency must be an ISO 4217 code in circulation, like TRY, EUR or USD.';
  end if;
  if pg_catalog.round(record_sale.amount, v_minor) <> record_sale.amount then
    raise exception using errcode = 'OMSAL', message = pg_catalog.format('amount has more decimals than %s allows (%s).', record_sale.currency, v_minor);
  end if;
  if record_sale.occurred_at is null or record_sale.occurred_at > pg_catalog.now() + interval '5 minutes'
     or record_sale.occurred_at < pg_catalog.now() - interval '1 year' then
    raise exception using errcode = 'OMSAL', message = 'occurred_at must be a time with a zone, not in the future and within the last year.';
  end if;
  if record_sale.visitor_id !~ '^[A-Za-z0-9_-]{1,64}$' or record_sale.gclid !~ '^[A-Za-z0-9_-]{1,255}$' then
    raise exception using errcode = 'OMSAL', message = 'visitor_id and gclid must be plain identifiers (letters, digits, _ and -).';
  end if;
  if record_sale.email is not null and v_email is null then
    raise exception using errcode = 'OMSAL', message = 'email is not a valid email address.';
  end if;
  if record_sale.phone is not null and v_phone is null then
    raise exception using errcode = 'OMSAL', message = 'phone must be an international number with its country code, like +90 555 111 22 33.';
  end if;
  if record_sale.consent is not null and (not app_private.valid_consent(record_sale.consent)
      or exists (select 1 from pg_catalog.jsonb_object_keys(record_sale.consent) k where k not in ('ad_user_data', 'ad_personalization'))) then
    raise exception using errcode = 'OMSAL', message = 'consent may hold ad_user_data and ad_personalization, each granted or denied.';
  end if;

  if record_sale.session_id is not null and not exists (
       select 1 from app_public.sessions s where s.site_id = site.id and s.id = record_sale.session_id) then
    raise exception using errcode = 'OMUSS', message = 'No session of this site has this id.';
  end if;
  if record_sale.call_ref is not null then
    select * into v_call from app_public.calls c
     where c.site_id = site.id
       and (c.call_id = record_sale.call_ref
            or (record_sale.call_ref ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' and c.id = record_sale.call_ref::uuid))
     order by c.call_id = record_sale.call_ref desc
     limit 1;
    if v_call.id is null then
      raise exception using errcode = 'OMUCL', message = 'No call of this site has this id.';
    end if;
  end if;

  select * into v_attribution
    from app_private.resolve_sale_attribution(site.id, record_sale.session_id, record_sale.visitor_id, v_call.id, record_sale.gclid, record_sale.occurred_at);

  insert into app_public.sales as s (site_id, external_id, amount, currency, occurred_at, conversation_id, call_id, session_id,
                                     visitor_id, gclid, attribution_tier, attribution_source, click_id, click_id_type,
                                     created_by_user_id, created_by_api_key_id)
  values (site.id, record_sale.external_id, record_sale.amount, record_sale.currency, record_sale.occurred_at,
          record_sale.conversation_id, v_call.id, v_attribution.attributed_session_id, record_sale.visitor_id, record_sale.gclid,
          v_attribution.attribution_tier, v_attribution.attribution_source, v_attribution.click_id, v_attribution.click_id_type,
          app_hidden.current_user_id(), app_hidden.current_api_key_id())
  on conflict on constraint sales_external_id_key do nothing
  returning * into v_sale;
  if v_sale.id is null then
    raise exception using errcode = 'OMSEX', message = 'A sale with this external_id already exists.';
  end if;

  if v_email is not null or v_phone is not null then
    insert into app_private.sale_identifiers (site_id, sale_id, email_sha256, phone_sha256)
    values (site.id, v_sale.id, app_hidden.identifier_sha256(v_email), app_hidden.identifier_sha256(v_phone));
  end if;

  perform app_private.enqueue_conversion(v_sale,
    coalesce(record_sale.consent, app_private.conversion_consent(site, coalesce(record_sale.visitor_id, v_attribution.session_visitor_id),
                                                                 v_attribution.attributed_session_id)));
  return v_sale;
end;
$$;
comment on function app_private.record_sale(app_public.sites, text, numeric, text, timestamptz, uuid, text, text, text, text, text, jsonb, uuid) is
  E'Validates and records a sale, its hashed identifiers and its queued conversion (OMSAL, OMSEX, OMUSS, OMUCL).';

create function app_public.confirm_sale_and_enqueue(
  site_id uuid, external_id text, amount numeric, currency text, occurred_at timestamptz,
  session_id uuid default null, visitor_id text default null, call_id text default null, gclid text default null,
  email text default null, phone text default null, consent jsonb default null
) returns app_public.sales
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_site app_public.sites;
begin
  perform app_private.assert_caller_role(confirm_sale_and_enqueue.site_id, 'editor', 'confirm_sale', 'sales', confirm_sale_and_enqueue.external_id);
  select * into v_site from app_public.sites s where s.id = confirm_sale_and_enqueue.site_id;
  if v_site.id is null then
    raise exception using errcode = 'OMNSS', message = 'No such site.';
  end if;
  return app_private.record_sale(v_site, confirm_sale_and_enqueue.external_id, confirm_sale_and_enqueue.amount,
    pg_catalog.upper(confirm_sale_and_enqueue.currency), confirm_sale_and_enqueue.occurred_at, confirm_sale_and_enqueue.session_id,
    confirm_sale_and_enqueue.visitor_id, confirm_sale_and_enqueue.call_id, confirm_sale_and_enqueue.gclid,
    confirm_sale_and_enqueue.email, confirm_sale_and_enqueue.phone, confirm_sale_and_enqueue.consent, null);
end;
$$;
comment on function app_public.confirm_sale_and_enqueue(uuid, text, numeric, text, timestamptz, uuid, text, text, text, text, text, jsonb) is
  E'Confirms a sale (editor or above) and, in the same transaction, queues its conversion for Google and the upload job. A repeated external_id is sale_exists and changes nothing. callId is our call id or the provider''s; email and phone are kept only as normalised SHA-256; consent (ad_user_data, ad_personalization) is the CRM''s own record, if it has one.';

/*
 * A click id that becomes known after the sale (a late event re-attributed the session, a
 * call was matched) reaches conversions Google does not have yet: re-resolve every pending
 * conversion of the site that has none. Returns how many gained one.
 */
create function app_private.refresh_conversion_attribution(site_id uuid) returns integer
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_count integer := 0;
  v_item record;
begin
  for v_item in
    select s.*, q.id as queue_id
      from app_public.offline_conversion_queue q
      join app_public.sales s on s.site_id = q.site_id and s.id = q.sale_id
     where q.site_id = refresh_conversion_attribution.site_id and q.kind = 'conversion' and q.status = 'pending' and q.click_id is null
       for update of q
  loop
    declare
      v_attribution record;
    begin
      select * into v_attribution
        from app_private.resolve_sale_attribution(v_item.site_id, v_item.session_id, v_item.visitor_id, v_item.call_id, v_item.gclid, v_item.occurred_at);
      continue when v_attribution.click_id is null;
      update app_public.sales s
         set session_id = coalesce(s.session_id, v_attribution.attributed_session_id), attribution_tier = v_attribution.attribution_tier,
             attribution_source = v_attribution.attribution_source, click_id = v_attribution.click_id, click_id_type = v_attribution.click_id_type
       where s.site_id = v_item.site_id and s.id = v_item.id;
      update app_public.offline_conversion_queue q
         set click_id = v_attribution.click_id, click_id_type = v_attribution.click_id_type, retry_at = least(q.retry_at, pg_catalog.now())
       where q.site_id = v_item.site_id and q.id = v_item.queue_id;
      v_count := v_count + 1;
    end;
  end loop;
  if v_count > 0 then
    perform app_private.enqueue_upload(refresh_conversion_attribution.site_id, 'google');
  end if;
  return v_count;
end;
$$;
comment on function app_private.refresh_conversion_attribution(uuid) is
  E'Fills click ids that became known later into a site''s pending conversions; returns how many changed.';

create function app_public.update_offline_conversion_queue_attribution(site_id uuid) returns integer
  language plpgsql volatile strict security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  perform app_private.assert_caller_role(update_offline_conversion_queue_attribution.site_id, 'editor', 'refresh_attribution',
                                         'offline_conversion_queue', update_offline_conversion_queue_attribution.site_id::text);
  return app_private.refresh_conversion_attribution(update_offline_conversion_queue_attribution.site_id);
end;
$$;
comment on function app_public.update_offline_conversion_queue_attribution(uuid) is
  E'Fills Google click ids that became known after the sale into the site''s conversions not yet delivered (editor or above); returns how many changed. The uploader also does this before every upload.';

--! split: 5-call-actions.sql
/*
 * Staff decide what a call was: seal (a qualified lead, optionally with a value: its
 * conversation, sale and conversion follow), junk (spam, wrong number), or undo the latest
 * decision. Actions are appended, never changed: an undo is a row pointing at what it undid.
 */

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

--! split: 6-destinations-and-vault.sql
/*
 * Where a site's conversions go, and the credentials to get them there. Credentials are
 * encrypted in Node (AES-256-GCM envelope: a data key per row, wrapped by the active
 * VAULT_KEYS key); the database only ever holds ciphertext, and nothing a client can read
 * carries it. Destinations show metadata only: customer, last four characters, status, who/when.
 */

create table app_public.destinations (
  site_id uuid not null references app_public.sites on delete cascade,
  id uuid not null default gen_random_uuid(),
  rail text not null constraint destinations_rail check (rail in ('datamanager', 'google_ads')),
  customer_id text not null constraint destinations_customer_id_format check (customer_id ~ '^[0-9]{10}$'),
  login_customer_id text constraint destinations_login_customer_id_format check (login_customer_id ~ '^[0-9]{10}$'),
  conversion_action text not null constraint destinations_conversion_action_format check (conversion_action ~ '^[0-9]{1,20}$'),
  status text not null default 'active' constraint destinations_status check (status in ('active', 'needs_reauth', 'paused')),
  status_reason text,
  credentials_last4 text,
  credentials_updated_at timestamptz,
  credentials_updated_by uuid,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (site_id, id),
  constraint destinations_id_key unique (id)
);
comment on table app_public.destinations is
  E'Where a site''s conversions are delivered: the rail (Data Manager API or Google Ads API), the Google Ads account and conversion action. At most one is not paused per site.';
comment on column app_public.destinations.site_id is E'The site.';
comment on column app_public.destinations.id is E'Identifier.';
comment on column app_public.destinations.rail is E'datamanager (Google''s Data Manager API, the default) or google_ads (Google Ads API, grandfathered developer tokens).';
comment on column app_public.destinations.customer_id is E'Google Ads customer id (ten digits, no dashes).';
comment on column app_public.destinations.login_customer_id is E'Manager account id used to log in, if any.';
comment on column app_public.destinations.conversion_action is E'Google Ads conversion action id.';
comment on column app_public.destinations.status is E'active, needs_reauth (Google refused the credentials: set them again) or paused.';
comment on column app_public.destinations.status_reason is E'Why it is not active (Google''s code).';
comment on column app_public.destinations.credentials_last4 is E'Last four characters of the stored refresh token (the token itself is never readable).';
comment on column app_public.destinations.credentials_updated_at is E'When the credentials were last set.';
comment on column app_public.destinations.credentials_updated_by is E'Who set them.';
comment on column app_public.destinations.created_at is E'When it was created.';
comment on column app_public.destinations.updated_at is E'When it last changed.';
create unique index destinations_one_live_per_site on app_public.destinations (site_id) where status <> 'paused';
alter table app_public.destinations enable row level security;
create policy select_member on app_public.destinations for select using (site_id in (select app_hidden.current_user_site_ids()));
grant select on app_public.destinations to :DATABASE_VISITOR;
create trigger _100_touch_updated_at before update on app_public.destinations
  for each row execute function app_private.tg__touch_updated_at();
create trigger _500_audit after insert or update or delete on app_public.destinations
  for each row execute function app_private.tg__audit('site_id', 'id', '-updated_at');

create table app_private.provider_credentials (
  site_id uuid not null,
  destination_id uuid not null,
  key_id text not null,
  wrapped_key bytea not null,
  nonce bytea not null,
  ciphertext bytea not null,
  auth_tag bytea not null,
  updated_at timestamptz not null default now(),
  primary key (site_id, destination_id),
  foreign key (site_id, destination_id) references app_public.destinations (site_id, id) on delete cascade
);
comment on table app_private.provider_credentials is
  E'Destinations'' OAuth refresh tokens, AES-256-GCM encrypted under a per-row data key that the VAULT_KEYS key key_id wraps. Ciphertext only.';
create index provider_credentials_key_idx on app_private.provider_credentials (key_id);
alter table app_private.provider_credentials enable row level security;
-- Rotations are audited (which key, when), never the material.
create trigger _500_audit after insert or update or delete on app_private.provider_credentials
  for each row execute function app_private.tg__audit('site_id', 'destination_id', 'wrapped_key', 'nonce', 'ciphertext', 'auth_tag');

/* Basic-auth credentials for Google's scheduled import of the CSV; the password is kept as SHA-256 (it is random, 256 bits). */
create table app_private.export_credentials (
  site_id uuid not null references app_public.sites on delete cascade,
  username text not null constraint export_credentials_username_key unique,
  password_sha256 bytea not null,
  created_at timestamptz not null default now(),
  primary key (site_id, username)
);
comment on table app_private.export_credentials is E'Who may fetch a site''s conversion CSV (Google scheduled imports): username and hashed password.';
alter table app_private.export_credentials enable row level security;
create trigger _500_audit after insert or update or delete on app_private.export_credentials
  for each row execute function app_private.tg__audit('site_id', 'username', 'password_sha256');

/*
 * Destinations are created by admins. The OAuth refresh token is set separately (write-only),
 * because it is encrypted in Node before it reaches the database.
 */
create function app_public.create_destination(site_id uuid, rail text, customer_id text, conversion_action text, login_customer_id text default null)
  returns app_public.destinations
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_destination app_public.destinations;
begin
  perform app_private.assert_caller_role(create_destination.site_id, 'admin', 'create', 'destinations', create_destination.customer_id);
  insert into app_public.destinations (site_id, rail, customer_id, login_customer_id, conversion_action)
  values (create_destination.site_id, create_destination.rail, pg_catalog.replace(create_destination.customer_id, '-', ''),
          pg_catalog.replace(create_destination.login_customer_id, '-', ''), create_destination.conversion_action)
  returning * into v_destination;
  return v_destination;
end;
$$;
comment on function app_public.create_destination(uuid, text, text, text, text) is
  E'Adds a delivery destination (admin or owner): rail datamanager or google_ads, Google Ads customer id, conversion action id. Set its credentials with setDestinationCredentials.';

create function app_public.set_destination_status(destination_id uuid, status text)
  returns app_public.destinations
  language plpgsql volatile strict security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_destination app_public.destinations;
begin
  select * into v_destination from app_public.destinations d where d.id = set_destination_status.destination_id;
  perform app_private.assert_caller_role(v_destination.site_id, 'admin', 'set_status', 'destinations', set_destination_status.destination_id::text);
  if set_destination_status.status not in ('active', 'paused') then
    raise exception using errcode = 'OMDST', message = 'A destination can be set active or paused.';
  end if;
  update app_public.destinations d set status = set_destination_status.status, status_reason = null
   where d.site_id = v_destination.site_id and d.id = v_destination.id
  returning * into v_destination;
  if v_destination.status = 'active' then
    perform app_private.enqueue_upload(v_destination.site_id, 'google');
  end if;
  return v_destination;
end;
$$;
comment on function app_public.set_destination_status(uuid, text) is E'Pauses or resumes a destination (admin or owner).';

/* Stores freshly encrypted credentials (admin or owner); the destination becomes active again. */
create function app_hidden.store_provider_credentials(destination_id uuid, key_id text, wrapped_key bytea, nonce bytea,
                                                       ciphertext bytea, auth_tag bytea, last4 text)
  returns app_public.destinations
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_destination app_public.destinations;
begin
  select * into v_destination from app_public.destinations d where d.id = store_provider_credentials.destination_id;
  perform app_private.assert_caller_role(v_destination.site_id, 'admin', 'set_credentials', 'destinations', store_provider_credentials.destination_id::text);
  insert into app_private.provider_credentials as c (site_id, destination_id, key_id, wrapped_key, nonce, ciphertext, auth_tag)
  values (v_destination.site_id, v_destination.id, store_provider_credentials.key_id, store_provider_credentials.wrapped_key,
          store_provider_credentials.nonce, store_provider_credentials.ciphertext, store_provider_credentials.auth_tag)
  on conflict on constraint provider_credentials_pkey do update set key_id = excluded.key_id, wrapped_key = excluded.wrapped_key, nonce = excluded.nonce,
    ciphertext = excluded.ciphertext, auth_tag = excluded.auth_tag, updated_at = pg_catalog.now();
  update app_public.destinations d
     set credentials_last4 = store_provider_credentials.last4, credentials_updated_at = pg_catalog.now(),
         credentials_updated_by = app_hidden.current_user_id(),
         status = case when d.status = 'needs_reauth' then 'active' else d.status end,
         status_reason = case when d.status = 'needs_reauth' then null else d.status_reason end
   where d.site_id = v_destination.site_id and d.id = v_destination.id
  returning * into v_destination;
  perform app_private.enqueue_upload(v_destination.site_id, 'google');
  return v_destination;
end;
$$;
comment on function app_hidden.store_provider_credentials(uuid, text, bytea, bytea, bytea, bytea, text) is
  E'Saves a destination''s encrypted refresh token (admin or owner; called by the setDestinationCredentials mutation after encrypting).';
grant execute on function app_hidden.store_provider_credentials(uuid, text, bytea, bytea, bytea, bytea, text) to :DATABASE_VISITOR;

--! split: 7-upload-outcomes.sql
/*
 * What the upload task reads and writes around a call to Google. The task owns no state of
 * its own: what to send comes from conversion_payloads, what happened goes back through
 * record_upload_outcomes, and both are keyed by the lease the task holds.
 */

create function app_private.google_time(at timestamptz, zone text) returns text
  language sql stable strict
  set search_path to pg_catalog, public, pg_temp
as $$
  select pg_catalog.to_char(at at time zone zone, 'YYYY-MM-DD HH24:MI:SS')
         || case when o.minutes < 0 then '-' else '+' end
         || pg_catalog.to_char(pg_catalog.abs(o.minutes) / 60, 'FM00') || ':' || pg_catalog.to_char(pg_catalog.abs(o.minutes) % 60, 'FM00')
    from (select (extract(epoch from ((at at time zone zone) - (at at time zone 'UTC'))) / 60)::integer as minutes) o;
$$;
comment on function app_private.google_time(timestamptz, text) is E'A time as Google''s conversion imports want it: yyyy-mm-dd hh:mm:ss+hh:mm in the given zone.';

/*
 * The claimed rows as Google wants them: time in the site's zone as yyyy-mm-dd hh:mm:ss+hh:mm
 * (never before the click it reports), hashed identifiers only with ad_user_data granted.
 */
create function app_private.conversion_payloads(site_id uuid, ids uuid[])
  returns table (id uuid, kind text, order_id text, click_id text, click_id_type text, conversion_time text, adjustment_time text,
                 value text, currency text, email_sha256 text, phone_sha256 text, ad_user_data text, ad_personalization text,
                 conversion_at timestamptz)
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select q.id, q.kind, q.order_id, q.click_id, q.click_id_type,
         app_private.google_time(greatest(q.conversion_at, x.started_at + interval '1 second'), st.timezone),
         app_private.google_time(pg_catalog.now(), st.timezone),
         q.value::text, q.currency,
         case when q.ad_user_data = 'granted' then i.email_sha256 end,
         case when q.ad_user_data = 'granted' then i.phone_sha256 end,
         q.ad_user_data, q.ad_personalization, q.conversion_at
    from app_public.offline_conversion_queue q
    join app_public.sites st on st.id = q.site_id
    join app_public.sales s on s.site_id = q.site_id and s.id = q.sale_id
    left join app_private.sale_identifiers i on i.site_id = q.site_id and i.sale_id = q.sale_id
    left join lateral (select min(se.started_at) as started_at from app_public.sessions se
                        where se.site_id = s.site_id and se.id = s.session_id) x on true
   where q.site_id = conversion_payloads.site_id and q.id = any (conversion_payloads.ids);
$$;
comment on function app_private.conversion_payloads(uuid, uuid[]) is E'Claimed queue rows in the shape the rails send.';


/*
 * Records one outcome per row: {"id", "kind": accepted|sent|retry|failed, "code", "message",
 * "retry_after_seconds"}. Only rows this worker still holds (processing, its lease) change: a
 * worker whose lease ran out must not overwrite what its successor did.
 */
create function app_private.record_upload_outcomes(site_id uuid, worker text, outcomes jsonb, request_id text default null)
  returns integer
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_count integer;
begin
  update app_public.offline_conversion_queue q
     set status = case o.kind when 'accepted' then 'accepted' when 'sent' then 'sent' when 'retry' then 'pending' else 'failed' end,
         retry_at = case when o.kind = 'retry' then pg_catalog.now() + pg_catalog.make_interval(secs => coalesce(o.retry_after_seconds, 300)) else q.retry_at end,
         last_error_code = case when o.kind in ('accepted', 'sent') then o.code else coalesce(o.code, 'UNKNOWN') end,
         last_error_message = case when o.kind in ('accepted', 'sent') then null else pg_catalog.left(o.message, 1000) end,
         request_id = coalesce(record_upload_outcomes.request_id, q.request_id),
         sent_at = case when o.kind in ('accepted', 'sent') then coalesce(q.sent_at, pg_catalog.now()) else q.sent_at end,
         accepted_at = case when o.kind = 'accepted' then pg_catalog.now() else q.accepted_at end,
         locked_by = null, locked_until = null
    from pg_catalog.jsonb_to_recordset(record_upload_outcomes.outcomes)
           as o(id uuid, kind text, code text, message text, retry_after_seconds integer)
   where q.site_id = record_upload_outcomes.site_id and q.id = o.id
     and q.status = 'processing' and q.locked_by = record_upload_outcomes.worker;
  get diagnostics v_count = row_count;
  return v_count;
end;
$$;
comment on function app_private.record_upload_outcomes(uuid, text, jsonb, text) is
  E'Applies the rails'' per-row outcomes to rows the worker still holds; returns how many changed.';

/* Gives claimed rows back untouched (e.g. the destination needs re-authorisation). */
create function app_private.release_claimed_conversions(site_id uuid, worker text, code text, message text, retry_after_seconds integer)
  returns integer
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_count integer;
begin
  update app_public.offline_conversion_queue q
     set status = 'pending', locked_by = null, locked_until = null, attempts = greatest(q.attempts - 1, 0),
         last_error_code = release_claimed_conversions.code, last_error_message = release_claimed_conversions.message,
         retry_at = pg_catalog.now() + pg_catalog.make_interval(secs => release_claimed_conversions.retry_after_seconds)
   where q.site_id = release_claimed_conversions.site_id and q.status = 'processing' and q.locked_by = release_claimed_conversions.worker;
  get diagnostics v_count = row_count;
  return v_count;
end;
$$;
comment on function app_private.release_claimed_conversions(uuid, text, text, text, integer) is E'Returns a worker''s claimed rows to pending.';

create function app_private.mark_destination_needs_reauth(destination_id uuid, code text) returns void
  language sql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
  update app_public.destinations d set status = 'needs_reauth', status_reason = mark_destination_needs_reauth.code
   where d.id = mark_destination_needs_reauth.destination_id and d.status = 'active';
$$;
comment on function app_private.mark_destination_needs_reauth(uuid, text) is E'Google refused the destination''s credentials: a person must set them again.';

/* For the sweep: sites with rows due now (pending past retry_at, or an expired lease) and a live destination. */
create function app_private.sites_with_due_conversions(provider text)
  returns setof uuid
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select distinct q.site_id from app_public.offline_conversion_queue q
   where q.provider = sites_with_due_conversions.provider
     and ((q.status = 'pending' and q.retry_at <= pg_catalog.now()) or (q.status = 'processing' and q.locked_until < pg_catalog.now()))
     and exists (select 1 from app_public.destinations d where d.site_id = q.site_id and d.status = 'active');
$$;
comment on function app_private.sites_with_due_conversions(text) is E'Sites whose conversions are due for upload.';

--! split: 8-oci-csv-export.sql
/*
 * The third rail: Google Ads' scheduled import fetches a CSV of click conversions over HTTPS.
 * Used for sites without a live API destination. Rows handed to Google this way become sent
 * (request_id 'csv'); they stay in the file for 90 days, as Google de-duplicates repeats and a
 * fetch that failed half-way must not lose them.
 */

create function app_private.export_credential_for(username text)
  returns table (site_id uuid, password_sha256 bytea)
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select c.site_id, c.password_sha256 from app_private.export_credentials c where c.username = export_credential_for.username;
$$;
comment on function app_private.export_credential_for(text) is E'The site and password hash of an export credential (compared in constant time by the caller).';
grant execute on function app_private.export_credential_for(text) to :DATABASE_AUTHENTICATOR;

create function app_private.oci_export_lines(site_id uuid, conversion_name text)
  returns setof text
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_site app_public.sites;
begin
  select * into v_site from app_public.sites s where s.id = oci_export_lines.site_id;
  if v_site.id is null then
    raise exception using errcode = 'OMNSS', message = 'No such site.';
  end if;
  if exists (select 1 from app_public.destinations d where d.site_id = v_site.id and d.status <> 'paused') then
    return;  -- an API rail delivers this site's conversions; a CSV as well would count them twice
  end if;
  update app_public.offline_conversion_queue q
     set status = 'sent', request_id = 'csv', sent_at = pg_catalog.now(), last_error_code = null, last_error_message = null
   where q.site_id = v_site.id and q.kind = 'conversion' and q.status = 'pending' and q.click_id_type = 'gclid'
     and q.conversion_at > pg_catalog.now() - interval '90 days';
  return next 'Parameters:TimeZone=' || v_site.timezone;
  return next 'Google Click ID,Conversion Name,Conversion Time,Conversion Value,Conversion Currency,Ad User Data,Ad Personalization';
  return query
  select pg_catalog.concat_ws(',', q.click_id, app_private.csv_field(oci_export_lines.conversion_name),
           pg_catalog.to_char(q.conversion_at at time zone v_site.timezone, 'YYYY-MM-DD HH24:MI:SS'), q.value::text, q.currency,
           case q.ad_user_data when 'granted' then 'GRANTED' when 'denied' then 'DENIED' else '' end,
           case q.ad_personalization when 'granted' then 'GRANTED' when 'denied' then 'DENIED' else '' end)
    from app_public.offline_conversion_queue q
   where q.site_id = v_site.id and q.kind = 'conversion' and q.status = 'sent' and q.request_id = 'csv'
     and q.conversion_at > pg_catalog.now() - interval '90 days'
   order by q.conversion_at, q.id;
end;
$$;
comment on function app_private.oci_export_lines(uuid, text) is
  E'The site''s click conversions as Google''s scheduled-import CSV (lines, without newlines); pending ones become sent.';
grant execute on function app_private.oci_export_lines(uuid, text) to :DATABASE_AUTHENTICATOR;

create function app_private.csv_field(value text) returns text
  language sql immutable strict
  set search_path to pg_catalog, public, pg_temp
as $$
  select case when value ~ '[",\r\n]' then '"' || pg_catalog.replace(value, '"', '""') || '"' else value end;
$$;
comment on function app_private.csv_field(text) is E'A CSV field, quoted when it needs to be (RFC 4180).';
