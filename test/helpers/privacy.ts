/*
 * Fixtures for the privacy tests (erasure, subject access, retention): data subjects with
 * distinctive values seeded through the real front doors into every place personal data can
 * live, the needles to look for them with (the values, their encodings and their hashes), and a
 * scanner that reads every text, json, jsonb and bytea column of every table in the database,
 * partitions included.
 */
import { createHash, randomInt, randomUUID } from "node:crypto";
import { JobHelpers, Logger } from "graphile-worker";
import type pg from "pg";
import { unique } from "./db";

export type Queryable = Pick<pg.ClientBase, "query">;

export const ORIGIN = "https://shop.example";
export const MINUTE = 60_000;

export interface TrackedSite {
  id: string;
  publicKey: string;
}

/** A site on shop.example that takes tracker events from its origin, without a rate limit. */
export async function createTrackedSite(db: Queryable, ownerId: string, consentMode: "required" | "implied" = "required"): Promise<TrackedSite> {
  const { rows } = await db.query(
    `select id, public_key from app_private.create_site($1, $2, 'shop.example', consent_mode => $3, rate_limit_per_minute => 0,
       allowed_origins => array['https://shop.example'], currency => 'TRY')`,
    [ownerId, unique("Privacy"), consentMode]);
  return { id: rows[0].id, publicKey: rows[0].public_key };
}

/* ------------------------------------------------------------------ subjects */

export interface SubjectValues {
  /** Letters that are not hex digits, so no hash or uuid can contain them by chance. */
  token: string;
  visitor: string;
  /** As a person types it: capitals and dots on gmail.com. */
  email: string;
  /** As Google hashes it: lower-case, no dots before @gmail.com. */
  emailNormalized: string;
  /** As a person types it: spaces. */
  phone: string;
  phoneE164: string;
  gclid: string;
}

const NOT_HEX = "ghijkmnpqrstuvwxyz";

/** Distinctive values for one data subject; `prefix` is three letters that are not hex digits. */
export function subjectValues(prefix: string): SubjectValues {
  const token = prefix + Array.from({ length: 7 }, () => NOT_HEX[randomInt(NOT_HEX.length)]).join("");
  const capital = token[0].toUpperCase() + token.slice(1);
  const digits = Array.from({ length: 9 }, () => String(randomInt(10))).join("");
  const phoneE164 = `+905${digits}`;
  return {
    token,
    visitor: `v_${capital}_Visitor`,
    email: `${capital}.Resi.due@GMail.com`,
    emailNormalized: `${token}residue@gmail.com`,
    phone: `+90 5${digits.slice(0, 2)} ${digits.slice(2, 5)} ${digits.slice(5, 7)} ${digits.slice(7)}`,
    phoneE164,
    gclid: `${token.toUpperCase()}_Cj0KCQiA-gclid`,
  };
}

export const FULL_CONSENT = { analytics_storage: "granted", ad_storage: "granted", ad_user_data: "granted", ad_personalization: "granted" };

export interface SeededSubject {
  values: SubjectValues;
  site: TrackedSite;
  eventIds: string[];
  /** The call the visitor made (caller, visitor id, gclid), sealed by staff. */
  callId: string;
  /** The CRM's sale (visitor, gclid, email, phone; pending conversion). */
  saleId: string;
  /** A second CRM sale whose conversion Google has accepted. */
  deliveredSaleId: string;
  /** The sale sealing the call made. */
  sealSaleId: string;
  conversationId: string;
}

/**
 * A subject's data everywhere it can live: consented events (URLs with query strings carrying
 * the email, phone and gclid, referrer, title, props, device data), an unconsented event (kept
 * under the day's hashed visitor key), consents, a call (caller, visitor id, gclid), sales with
 * email and phone (sale identifiers, queued conversions, upload jobs), one conversion already
 * accepted by Google, and the call sealed by staff (conversation, call action, sale). Everything
 * goes through the real functions, so audit rows are written as in production.
 */
export async function seedSubject(db: Queryable, site: TrackedSite, values: SubjectValues): Promise<SeededSubject> {
  const { token, visitor, email, phone, phoneE164, gclid } = values;
  const now = Date.now();
  const enc = encodeURIComponent;
  const events = [
    {
      id: randomUUID(), type: "pageview", ts: new Date(now - 20 * MINUTE).toISOString(), visitor_id: visitor,
      url: `${ORIGIN}/landing?gclid=${gclid}&utm_source=google&email=${enc(email)}&tel=${enc(phoneE164)}`,
      referrer: `https://mail.example/inbox?to=${enc(email)}&ref=${token}`,
      title: `Welcome back, ${email}`,
      props: { email, phone, form: { name: `${token} Person`, notes: [`call me on ${phone}`] } },
      device: { ua: `Mozilla/5.0 (${token})`, model: `${token}-phone`, screen: "390x844" },
      consent: FULL_CONSENT,
    },
    {
      id: randomUUID(), type: "form_submit", ts: new Date(now - 19 * MINUTE).toISOString(), visitor_id: visitor,
      url: `${ORIGIN}/contact?email=${enc(email)}&phone=${enc(phone)}`,
      title: `Contact ${token}`, props: { field_email: email, field_phone: phone }, device: { ua: `Mozilla/5.0 (${token})` },
      consent: FULL_CONSENT,
    },
    {
      // Without analytics consent: no raw visitor id, no device data, the day's hashed key.
      id: randomUUID(), type: "pageview", ts: new Date(now - 15 * MINUTE).toISOString(), visitor_id: visitor,
      url: `${ORIGIN}/pricing?gclid=${gclid}&email=${enc(email)}`, title: `Prices for ${token}`,
      props: { phone }, device: { ua: `Mozilla/5.0 (${token})` }, consent: { analytics_storage: "denied" },
    },
  ];
  const { rows: [{ result }] } = await db.query(
    "select app_private.ingest_events($1, $2::jsonb, $3, '10.0.0.1', 'Mozilla/5.0', '{}') as result",
    [site.publicKey, JSON.stringify(events), ORIGIN]);
  if (result.accepted !== events.length) throw new Error(`ingest refused events: ${JSON.stringify(result)}`);
  for (const consent of [FULL_CONSENT, { analytics_storage: "granted", ad_user_data: "denied" }]) {
    await db.query("select app_private.record_consent($1, $2, $3::jsonb, $4, '10.0.0.1')", [site.publicKey, visitor, JSON.stringify(consent), ORIGIN]);
  }
  const { rows: [{ call }] } = await db.query("select app_private.record_call_event($1, $2::jsonb) as call", [site.id, JSON.stringify({
    call_id: `call_${randomUUID().slice(0, 12)}`, status: "answered", caller: phoneE164, tracking_number: "+902125550000",
    started_at: new Date(now - 10 * MINUTE).toISOString(), duration_s: 61, visitor_id: visitor, gclid,
  })]);
  const sale = async (amount: string, minutesAgo: number, fields: { gclid?: string; phone?: string }) => (await db.query(
    `select id from app_public.confirm_sale_and_enqueue($1, $2, $3, 'TRY', now() - make_interval(mins => $4), visitor_id => $5,
       gclid => $6, email => $7, phone => $8, consent => '{"ad_user_data": "granted", "ad_personalization": "granted"}')`,
    [site.id, `CRM-${randomUUID().slice(0, 8)}`, amount, minutesAgo, visitor, fields.gclid ?? null, email, fields.phone ?? null])).rows[0].id as string;
  const saleId = await sale("1250.00", 5, { gclid, phone });
  const deliveredSaleId = await sale("990.00", 4, {});
  await db.query(
    `update app_public.offline_conversion_queue set status = 'accepted', attempts = 1, sent_at = now(), accepted_at = now(), request_id = 'req-1'
      where site_id = $1 and sale_id = $2 and kind = 'conversion'`, [site.id, deliveredSaleId]);
  const { rows: [action] } = await db.query("select sale_id from app_public.seal_call($1, $2, 300)", [site.id, call.id]);
  const { rows: [conversation] } = await db.query("select id from app_public.conversations where site_id = $1 and call_id = $2", [site.id, call.id]);
  return {
    values, site, eventIds: events.map((e) => e.id), callId: call.id, saleId, deliveredSaleId, sealSaleId: action.sale_id,
    conversationId: conversation.id,
  };
}

/* ------------------------------------------------------------------ needles */

export interface Needle {
  label: string;
  /** Lower-case; matched as a substring of a column's text (bytea: of its escaped text and of its hex). */
  needle: string;
}

export const sha256 = (text: string) => createHash("sha256").update(text, "utf8").digest("hex");

/** Everything that would betray the subject: its values, their encodings, their SHA-256, its keyed hashes on the site. */
export async function needlesFor(db: Queryable, siteId: string, v: SubjectValues): Promise<Needle[]> {
  const plain: [string, string][] = [
    ["token", v.token], ["visitor id", v.visitor], ["email", v.email], ["email (normalised)", v.emailNormalized],
    ["email (url-encoded)", encodeURIComponent(v.email)], ["phone", v.phone], ["phone (E.164)", v.phoneE164],
    ["phone (digits)", v.phoneE164.slice(1)], ["phone (national)", v.phoneE164.slice(3)], ["phone (url-encoded)", encodeURIComponent(v.phone)],
    ["gclid", v.gclid],
  ];
  const hashed: [string, string][] = [
    ["visitor id", v.visitor], ["email", v.email], ["email (lower-case)", v.email.toLowerCase()], ["email (normalised)", v.emailNormalized],
    ["phone", v.phone], ["phone (E.164)", v.phoneE164], ["phone (digits)", v.phoneE164.slice(1)], ["gclid", v.gclid], ["token", v.token],
  ];
  const { rows: [keyed] } = await db.query(
    `select encode(public.hmac(convert_to($2, 'UTF8'), s.salt, 'sha256'), 'hex') as consent_key,
            array(select encode(substr(public.hmac(convert_to($1::uuid::text || '/' || $2, 'UTF8'), d.salt, 'sha256'), 1, 16), 'hex')
                    from app_private.daily_salts d order by d.day) as daily_keys
       from app_private.site_salts s where s.site_id = $1::uuid`, [siteId, v.visitor]);
  return [
    ...plain.map(([label, value]) => ({ label, needle: value.toLowerCase() })),
    ...hashed.map(([label, value]) => ({ label: `sha256(${label})`, needle: sha256(value) })),
    { label: "consent key (hmac of the visitor id)", needle: keyed.consent_key },
    ...(keyed.daily_keys as string[]).map((key, i) => ({ label: `daily visitor key #${i}`, needle: key })),
  ];
}

/** The salted hashes an erasure request keeps of the subject, one per kind (allowed to remain). */
export async function subjectHashNeedles(db: Queryable, siteId: string, v: SubjectValues): Promise<Needle[]> {
  const { rows } = await db.query(
    `select k.kind, encode(public.hmac(convert_to(k.kind || ':' || k.normalized, 'UTF8'), s.salt, 'sha256'), 'hex') as hash
       from app_private.site_salts s, (values ('visitor_id', $2), ('email', $3), ('phone', $4), ('click_id', $5)) k(kind, normalized)
      where s.site_id = $1`, [siteId, v.visitor, v.emailNormalized, v.phoneE164, v.gclid]);
  return rows.map((r) => ({ label: `subject hash (${r.kind})`, needle: r.hash }));
}

/* ------------------------------------------------------------------ the scanner */

export interface ScannedColumn {
  relation: string;
  column: string;
  type: string;
  bytea: boolean;
}

/**
 * Every column of a text-like, json, jsonb or bytea type (or an array or domain of one) of
 * every table, partition and materialised view in every schema but the system's own.
 */
export async function scannedColumns(db: Queryable): Promise<ScannedColumn[]> {
  const { rows } = await db.query(`
    select c.oid::regclass::text as relation, a.attname as column, format_type(a.atttypid, a.atttypmod) as type,
           coalesce(nullif(et.typbasetype, 0), et.oid, nullif(t.typbasetype, 0), t.oid) = 'bytea'::regtype as bytea
      from pg_attribute a
      join pg_class c on c.oid = a.attrelid
      join pg_namespace n on n.oid = c.relnamespace
      join pg_type t on t.oid = a.atttypid
      left join pg_type et on et.oid = t.typelem and t.typcategory = 'A'
      join pg_type b on b.oid = coalesce(nullif(et.typbasetype, 0), et.oid, nullif(t.typbasetype, 0), t.oid)
     where c.relkind in ('r', 'm')
       and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname !~ '^pg_(toast|temp)'
       and a.attnum > 0 and not a.attisdropped
       and (b.typcategory = 'S' or b.oid in ('json'::regtype, 'jsonb'::regtype, 'bytea'::regtype))
     order by 1, a.attnum`);
  return rows;
}

export interface Hit {
  relation: string;
  column: string;
  label: string;
  rows: number;
}

/** Every (relation, column, needle) with the number of rows whose column contains the needle. */
export async function scanDatabase(db: Queryable, needles: Needle[]): Promise<Hit[]> {
  const columns = await scannedColumns(db);
  const byRelation = new Map<string, ScannedColumn[]>();
  for (const column of columns) byRelation.set(column.relation, [...(byRelation.get(column.relation) ?? []), column]);
  const hits: Hit[] = [];
  const labels = needles.map((n) => n.label);
  const values = needles.map((n) => n.needle.toLowerCase());
  for (const [relation, cols] of byRelation) {
    const quoted = (name: string) => `t."${name.replace(/"/g, '""')}"`;
    const tests = cols.map((c, i) => {
      const test = c.bytea && !c.type.endsWith("[]")
        ? `strpos(lower(encode(${quoted(c.column)}, 'escape')), n.needle) > 0 or strpos(encode(${quoted(c.column)}, 'hex'), n.needle) > 0`
        : `strpos(lower(${quoted(c.column)}::text), n.needle) > 0`;
      return `count(*) filter (where ${test})::int as c${i}`;
    });
    const { rows } = await db.query(
      `select n.label, ${tests.join(", ")} from ${relation} t cross join unnest($1::text[], $2::text[]) as n(label, needle) group by n.label`,
      [labels, values]);
    for (const row of rows) {
      cols.forEach((c, i) => {
        if (row[`c${i}`] > 0) hits.push({ relation, column: c.column, label: row.label, rows: row[`c${i}`] });
      });
    }
  }
  return hits.sort((a, b) => `${a.relation}.${a.column}.${a.label}`.localeCompare(`${b.relation}.${b.column}.${b.label}`));
}

/* ------------------------------------------------------------------ counts */

/** Tables (partitioned parents, not their partitions) with a site_id column, in every schema. */
export async function siteTables(db: Queryable): Promise<string[]> {
  const { rows } = await db.query(`
    select c.oid::regclass::text as relation
      from pg_class c join pg_namespace n on n.oid = c.relnamespace join pg_attribute a on a.attrelid = c.oid
     where c.relkind in ('r', 'p') and not c.relispartition and a.attname = 'site_id' and a.atttypid = 'uuid'::regtype
       and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname !~ '^pg_' and n.nspname <> 'partman'
     order by 1`);
  return rows.map((r) => r.relation);
}

/** Rows per table of one site. */
/**
 * Rows of a site that an erasure elsewhere must leave alone. Exports are audited (an access
 * row, and the chain head moving on), so reading a subject's data is not counted as a change.
 */
function untouchedRows(relation: string): string {
  if (relation === "app_public.audit_log") return "site_id = $1 and action not like 'access:%'";
  if (relation === "app_private.audit_chain_heads") return "site_id = $1 and false";
  return "site_id = $1";
}

export async function siteCounts(db: Queryable, siteId: string): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  for (const relation of await siteTables(db)) {
    counts[relation] = (await db.query(`select count(*)::int as n from ${relation} where ${untouchedRows(relation)}`, [siteId])).rows[0].n;
  }
  return counts;
}

/** A digest of every row of one site per table (anything changed shows). */
export async function siteDigests(db: Queryable, siteId: string): Promise<Record<string, string>> {
  const digests: Record<string, string> = {};
  for (const relation of await siteTables(db)) {
    digests[relation] = (await db.query(
      `select md5(coalesce(string_agg(t::text, '|' order by t::text), '')) as d from ${relation} t where ${untouchedRows(relation)}`, [siteId])).rows[0].d;
  }
  return digests;
}

/* ------------------------------------------------------------------ running tasks */

const silent = new Logger(() => () => undefined);
export const silentLogger = silent;

/**
 * Job helpers for running a task file inside a test's transaction: every query runs in a
 * savepoint of its own, as the worker's statements each commit or fail on their own.
 */
export function transactionHelpers(client: pg.ClientBase): JobHelpers {
  let n = 0;
  const query = async (text: string, values?: unknown[]) => {
    const savepoint = `task_query_${++n}`;
    await client.query(`savepoint ${savepoint}`);
    try {
      const result = await client.query(text, values);
      await client.query(`release savepoint ${savepoint}`);
      return result;
    } catch (error) {
      await client.query(`rollback to savepoint ${savepoint}`);
      throw error;
    }
  };
  return {
    query, logger: silent,
    withPgClient: (fn: (c: pg.ClientBase) => unknown) => fn(client),
    job: { id: "0", attempts: 1, max_attempts: 25 },
  } as unknown as JobHelpers;
}
