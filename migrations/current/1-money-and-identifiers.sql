/*
 * Money and personal identifiers, checked and normalised in one place for every writer
 * (GraphQL, the CRM webhook, call actions).
 */
drop function if exists app_hidden.currency_minor_units(text) cascade;
drop function if exists app_hidden.normalize_email(text) cascade;
drop function if exists app_hidden.normalize_phone(text) cascade;
drop function if exists app_hidden.identifier_sha256(text) cascade;

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
