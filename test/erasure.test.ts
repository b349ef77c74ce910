/*
 * The right to erasure (issue 6): request_erasure records a request and enqueues its job in one
 * transaction; the carry_out_erasure task deletes or strips everything linked to the subject,
 * directly or through its visitor's sessions, in one transaction. Proven by the residue scan:
 * after erasing a subject seeded into every place personal data can live, no text, json, jsonb
 * or bytea column of any table in the database (partitions included) holds any of its values or
 * their hashes, except the request's salted subject hash; other subjects, on the same site and
 * on another, are untouched. The ledger keeps its rows, so invoices stay exact. The erasure is
 * idempotent and survives a crash mid-way; conversions are cancelled or retracted; the audit log
 * never holds raw personal data.
 */
import { createHash, randomUUID } from "node:crypto";
import { makeWorkerUtils, runOnce } from "graphile-worker";
import pg from "pg";
import carryOutErasure from "../tasks/carry_out_erasure";
import { readConfig } from "../src/config";
import { makePools } from "../src/db/pools";
import { loadTaskList } from "../src/worker/runner";
import { runCli } from "./helpers/cli";
import { addMember, becomeRoot, becomeUser, createApiKey, createUser, getRootPool, sqlState, unique, withRootDb } from "./helpers/db";
import { flushDenials, startTestService, TestService, tokenFor } from "./helpers/http";
import {
  createTrackedSite, Hit, Needle, needlesFor, Queryable, scanDatabase, scannedColumns, seedSubject, SeededSubject, sha256, siteCounts,
  siteDigests, silentLogger, subjectHashNeedles, SubjectValues, subjectValues, TrackedSite, transactionHelpers,
} from "./helpers/privacy";

const KINDS = ["visitor_id", "email", "phone", "click_id"] as const;
type Kind = (typeof KINDS)[number];

/** The value a person would give for each kind, as typed (capitals, dots, spaces). */
const valueOf = (v: SubjectValues, kind: Kind) =>
  ({ visitor_id: v.visitor, email: v.email, phone: v.phone, click_id: v.gclid })[kind];

interface World {
  ownerId: string;
  adminId: string;
  editorId: string;
  viewerId: string;
  adminKey: { id: string; key: string };
  editorKey: { id: string; key: string };
  viewerKey: { id: string; key: string };
  a: TrackedSite;
  b: TrackedSite;
  /** The subject to erase, on site A. */
  z: SeededSubject;
  /** Another subject on site A. */
  y: SeededSubject;
  /** A subject on site B. */
  w: SeededSubject;
}

async function seedWorld(client: pg.ClientBase): Promise<World> {
  const ownerId = await createUser(client);
  const adminId = await createUser(client);
  const editorId = await createUser(client);
  const viewerId = await createUser(client);
  const a = await createTrackedSite(client, ownerId);
  const b = await createTrackedSite(client, await createUser(client));
  await addMember(client, a.id, adminId, "admin");
  await addMember(client, a.id, editorId, "editor");
  await addMember(client, a.id, viewerId, "viewer");
  const adminKey = await createApiKey(client, a.id, "admin");
  const editorKey = await createApiKey(client, a.id, "editor");
  const viewerKey = await createApiKey(client, a.id, "viewer");
  const z = await seedSubject(client, a, subjectValues("zqx"));
  const y = await seedSubject(client, a, subjectValues("yqv"));
  const w = await seedSubject(client, b, subjectValues("wkj"));
  return { ownerId, adminId, editorId, viewerId, adminKey, editorKey, viewerKey, a, b, z, y, w };
}

interface JobRow {
  id: string;
  task_identifier: string;
  attempts: number;
  max_attempts: number;
  last_error: string | null;
  locked_at: Date | null;
  payload: Record<string, unknown>;
}

async function erasureJobs(db: Queryable, requestId: string): Promise<JobRow[]> {
  const { rows } = await db.query(
    `select j.id, j.task_identifier, j.attempts, j.max_attempts, j.last_error, j.locked_at, p.payload
       from graphile_worker.jobs j join graphile_worker._private_jobs p on p.id = j.id
      where j.key = 'carry_out_erasure:' || $1`, [requestId]);
  return rows;
}

interface ErasureRequest {
  site_id: string;
  id: string;
  subject_kind: string;
  subject_hash: string;
  status: string;
  attempts: number;
  completed_at: Date | null;
  receipt: Record<string, number> | null;
  last_error: string | null;
  requested_by_user_id: string | null;
  requested_by_api_key_id: string | null;
}

async function requestErasure(db: Queryable, siteId: string, kind: string, value: string): Promise<ErasureRequest> {
  return (await db.query("select * from app_public.request_erasure($1, $2, $3)", [siteId, kind, value])).rows[0];
}

async function requestRow(db: Queryable, siteId: string, id: string): Promise<ErasureRequest> {
  return (await db.query("select * from app_public.erasure_requests where site_id = $1 and id = $2", [siteId, id])).rows[0];
}

/** The real task, run as the worker would, with the job's own payload, inside the test's transaction. */
async function runTask(client: pg.ClientBase, requestId: string): Promise<void> {
  const [job] = await erasureJobs(client, requestId);
  await carryOutErasure(job.payload, transactionHelpers(client));
}

async function exportOf(db: Queryable, siteId: string, kind: string, value: string): Promise<Record<string, any>> {
  const { rows: [{ doc }] } = await db.query("select app_public.export_subject_data($1, $2, $3) as doc", [siteId, kind, value]);
  delete doc.exported_at;
  return doc;
}

/** What erasing the seeded subject must report (seedSubject's shape). */
const SEEDED_RECEIPT = {
  events_deleted: 3, // two consented events in one session, one under the day's hashed key in another
  sessions_deleted: 2,
  consents_deleted: 2,
  calls_stripped: 1,
  conversations_stripped: 1,
  sale_identifiers_deleted: 2, // the sales with an email or phone; the sealed call's sale has none
  conversions_cancelled: 2, // the CRM sale's and the sealed call's, both pending
  retractions_queued: 1, // the conversion Google accepted
  sales_stripped: 3,
  order_ids_replaced: 0, // no CRM used the subject as its order id here
};

const isSubjectHashAllowed = (hit: Hit) => hit.label.startsWith("subject hash")
  && ((hit.relation === "app_public.erasure_requests" && hit.column === "subject_hash")
      || (hit.relation === "app_public.audit_log" && ["old_values", "new_values"].includes(hit.column)));

/** Whether some hit is in a matching relation and column, for the label (or, ending in "*", a label starting so). */
const found = (hits: Hit[], relation: RegExp, column: string, label: string) =>
  hits.some((h) => relation.test(h.relation) && h.column === column
    && (label.endsWith("*") ? h.label.startsWith(label.slice(0, -1)) : h.label === label));

/* ------------------------------------------------------------------ the residue scan */

describe("the residue scan", () => {
  test("the scanner reads every text, varchar, json, jsonb and bytea column of every table, partitions and other schemas included", async () => {
    const columns = await scannedColumns(getRootPool());
    const has = (relation: string, column: string) => columns.some((c) => c.relation === relation && c.column === column);
    const { rows: partitions } = await getRootPool().query(
      `select c.oid::regclass::text as relation from pg_inherits i join pg_class c on c.oid = i.inhrelid
        where i.inhparent in ('app_public.events'::regclass, 'app_public.sessions'::regclass)`);
    expect(partitions.length).toBeGreaterThanOrEqual(6);
    for (const { relation } of partitions) {
      expect({ relation, url: has(relation, relation.includes("events") ? "url" : "landing_url") }).toEqual({ relation, url: true });
    }
    for (const [relation, column] of [
      ["app_public.events_default", "props"], ["app_public.events_default", "device"], ["app_public.consents", "visitor_hash"],
      ["app_private.sale_identifiers", "email_sha256"], ["app_private.erasure_subjects", "normalized_value"],
      ["app_public.audit_log", "new_values"], ["app_public.audit_log", "row_hash"], ["graphile_worker._private_jobs", "payload"],
      ["graphile_worker._private_jobs", "last_error"], ["app_public.users", "email"], ["app_public.sites", "allowed_origins"],
      ["app_public.calls", "caller"], ["app_public.offline_conversion_queue", "click_id"], ["app_private.daily_salts", "salt"],
    ]) {
      expect({ relation, column, scanned: has(relation, column) }).toEqual({ relation, column, scanned: true });
    }
    // Partitioned parents hold no rows of their own: their partitions are read instead.
    expect(columns.some((c) => c.relation === "app_public.events")).toBe(false);
  });

  test.each(KINDS)("erased by %s, the subject leaves no value or hash anywhere in the database; other subjects keep every row", (kind) =>
    withRootDb(async (client) => {
      const world = await seedWorld(client);
      const { a, b, z, y, w } = world;
      const needles = await needlesFor(client, a.id, z.values);
      const hashes = await subjectHashNeedles(client, a.id, z.values);
      const others: Needle[] = [
        ...(await needlesFor(client, a.id, y.values)).map((n) => ({ ...n, label: `y ${n.label}` })),
        ...(await needlesFor(client, b.id, w.values)).map((n) => ({ ...n, label: `w ${n.label}` })),
      ];
      const countsA = await siteCounts(client, a.id);
      const countsB = await siteCounts(client, b.id);
      const digestsB = await siteDigests(client, b.id);
      const othersBefore = await scanDatabase(client, others);
      const exportY = await exportOf(client, a.id, "visitor_id", y.values.visitor);
      const exportW = await exportOf(client, b.id, "email", w.values.email);

      const request = await requestErasure(client, a.id, kind, valueOf(z.values, kind));
      const before = await scanDatabase(client, [...needles, ...hashes]);
      // The scanner is not blind: it finds the subject wherever the fixture put it.
      for (const [relation, column, label] of [
        [/^app_public\.events_p\d{4}_\d{2}$/, "props", "token"], [/^app_public\.events_p\d{4}_\d{2}$/, "url", "email (url-encoded)"],
        [/^app_public\.events_p\d{4}_\d{2}$/, "device", "token"], [/^app_public\.events_p\d{4}_\d{2}$/, "referrer", "token"],
        [/^app_public\.events_p\d{4}_\d{2}$/, "title", "email"], [/^app_public\.events_p\d{4}_\d{2}$/, "props", "phone"],
        [/^app_public\.events_p\d{4}_\d{2}$/, "visitor_key", "daily visitor key*"],
        [/^app_public\.sessions_p\d{4}_\d{2}$/, "landing_url", "gclid"], [/^app_public\.sessions_p\d{4}_\d{2}$/, "visitor_id", "visitor id"],
        [/^app_public\.calls$/, "caller", "phone (E.164)"], [/^app_public\.calls$/, "gclid", "gclid"],
        [/^app_public\.sales$/, "visitor_id", "visitor id"], [/^app_public\.offline_conversion_queue$/, "click_id", "gclid"],
        [/^app_private\.sale_identifiers$/, "email_sha256", "sha256(email (normalised))"],
        [/^app_private\.sale_identifiers$/, "phone_sha256", "sha256(phone (E.164))"],
        [/^app_public\.consents$/, "visitor_hash", "consent key (hmac of the visitor id)"],
        [/^app_private\.erasure_subjects$/, "normalized_value", kind === "phone" ? "phone (E.164)" : "token"],
        [/^app_public\.erasure_requests$/, "subject_hash", `subject hash (${kind})`],
      ] as const) {
        expect({ relation: String(relation), column, label, found: found(before, relation, column, label) })
          .toEqual({ relation: String(relation), column, label, found: true });
      }

      await runTask(client, request.id);

      const done = await requestRow(client, a.id, request.id);
      expect(done).toMatchObject({ status: "completed", attempts: 1, last_error: null, receipt: SEEDED_RECEIPT });
      const after = await scanDatabase(client, [...needles, ...hashes]);
      expect(after.filter((hit) => !isSubjectHashAllowed(hit))).toEqual([]);
      // The salted hash stays with the request (and its audit rows) only.
      expect(after.filter(isSubjectHashAllowed).map((h) => `${h.relation}.${h.column}: ${h.label}`))
        .toContain(`app_public.erasure_requests.subject_hash: subject hash (${kind})`);
      const { rows: hashHolders } = await client.query(
        "select distinct target_table from app_public.audit_log where site_id = $1 and (old_values::text like $2 or new_values::text like $2)",
        [a.id, `%${done.subject_hash}%`]);
      expect(hashHolders.map((r) => r.target_table)).toEqual(["erasure_requests"]);

      // Everyone else keeps everything: the same values found in the same places, the same rows.
      expect(await scanDatabase(client, others)).toEqual(othersBefore);
      expect(othersBefore.filter((h) => h.label === "y token").length).toBeGreaterThan(5);
      expect(othersBefore.filter((h) => h.label === "w token").length).toBeGreaterThan(5);
      expect(await exportOf(client, a.id, "visitor_id", y.values.visitor)).toEqual(exportY);
      expect(await exportOf(client, b.id, "email", w.values.email)).toEqual(exportW);
      expect(exportY.events).toHaveLength(3);
      expect(await siteCounts(client, b.id)).toEqual(countsB);
      expect(await siteDigests(client, b.id)).toEqual(digestsB);
      // On the subject's site, exactly the receipt's rows went; the rest only gained the
      // request, its audit rows and the retraction.
      const countsAfter = await siteCounts(client, a.id);
      const auditAdded = countsAfter["app_public.audit_log"] - countsA["app_public.audit_log"];
      expect(auditAdded).toBeGreaterThan(0);
      expect(countsAfter).toEqual({
        ...countsA,
        "app_public.events": countsA["app_public.events"] - SEEDED_RECEIPT.events_deleted,
        "app_public.sessions": countsA["app_public.sessions"] - SEEDED_RECEIPT.sessions_deleted,
        "app_public.consents": countsA["app_public.consents"] - SEEDED_RECEIPT.consents_deleted,
        "app_private.sale_identifiers": countsA["app_private.sale_identifiers"] - SEEDED_RECEIPT.sale_identifiers_deleted,
        "app_public.offline_conversion_queue": countsA["app_public.offline_conversion_queue"] + SEEDED_RECEIPT.retractions_queued,
        "app_public.erasure_requests": countsA["app_public.erasure_requests"] + 1,
        "app_private.erasure_subjects": countsA["app_private.erasure_subjects"],
        "app_public.audit_log": countsA["app_public.audit_log"] + auditAdded,
        // The erased events are still counted (per month, no personal data) for billing.
        "app_private.event_removals": countsAfter["app_private.event_removals"],
      });
      const { rows: [{ removed }] } = await client.query(
        "select coalesce(sum(events), 0)::int as removed from app_private.event_removals where site_id = $1 and reason = 'erasure'", [a.id]);
      expect(removed).toBe(SEEDED_RECEIPT.events_deleted);
    }));

  test("the same visitor id, email, phone and gclid on another site are that site's own subject and stay untouched", () =>
    withRootDb(async (client) => {
      const world = await seedWorld(client);
      // Site B also knows a subject with exactly Z's values.
      const twin = await seedSubject(client, world.b, world.z.values);
      const countsB = await siteCounts(client, world.b.id);
      const digestsB = await siteDigests(client, world.b.id);
      const exportTwin = await exportOf(client, world.b.id, "visitor_id", twin.values.visitor);
      expect(exportTwin.events).toHaveLength(3);
      const request = await requestErasure(client, world.a.id, "email", world.z.values.email);
      await runTask(client, request.id);
      expect((await requestRow(client, world.a.id, request.id)).receipt).toEqual(SEEDED_RECEIPT);
      expect(await siteCounts(client, world.b.id)).toEqual(countsB);
      expect(await siteDigests(client, world.b.id)).toEqual(digestsB);
      expect(await exportOf(client, world.b.id, "visitor_id", twin.values.visitor)).toEqual(exportTwin);
    }));
});

describe("the residue scan: CRM order ids", () => {
  // The sales trigger keeps external_id out of the audit log because "a CRM may use an email
  // or phone number as its order id": then it is the subject's personal data like any other.
  test("a sale whose CRM order id is the subject's email keeps no trace of it after erasure by email", () =>
    withRootDb(async (client) => {
      const { a, z } = await seedWorld(client);
      await client.query(
        "select app_public.confirm_sale_and_enqueue($1, $2, 10, 'TRY', now(), visitor_id => $3, email => $2)", [a.id, z.values.email, z.values.visitor]);
      const needles = await needlesFor(client, a.id, z.values);
      const request = await requestErasure(client, a.id, "email", z.values.email);
      await runTask(client, request.id);
      expect((await scanDatabase(client, needles)).map((h) => `${h.relation}.${h.column}: ${h.label}`)).toEqual([]);
    }));
});

describe("the residue scan: a retraction's order id", () => {
  test("a delivered sale whose order id is the subject's email: its retraction keeps the id only until Google has it", () =>
    withRootDb(async (client) => {
      const { a, z } = await seedWorld(client);
      const { rows: [sale] } = await client.query(
        "select (app_public.confirm_sale_and_enqueue($1, $2, 10, 'TRY', now(), visitor_id => $3)).id", [a.id, z.values.email, z.values.visitor]);
      // Google took the conversion, under the CRM's order id: the subject's email.
      await client.query("update app_public.offline_conversion_queue set status = 'accepted' where site_id = $1 and sale_id = $2", [a.id, sale.id]);
      const needles = await needlesFor(client, a.id, z.values);
      const request = await requestErasure(client, a.id, "email", z.values.email);
      await runTask(client, request.id);
      const hits = async () => (await scanDatabase(client, needles)).map((h) => `${h.relation}.${h.column}: ${h.label}`);
      // Waiting to go, the retraction must still name the order Google should withdraw.
      const retraction = "select status, order_id from app_public.offline_conversion_queue where site_id = $1 and sale_id = $2 and kind = 'retraction'";
      expect((await client.query(retraction, [a.id, sale.id])).rows).toEqual([{ status: "pending", order_id: z.values.email }]);
      const waiting = await hits();
      expect(waiting.length).toBeGreaterThan(0);
      for (const hit of waiting) expect(hit).toMatch(/^app_public\.offline_conversion_queue\.order_id: /);
      // Google takes it (the upload loop's outcome write): the id goes with that write.
      await client.query("update app_public.offline_conversion_queue set status = 'accepted' where site_id = $1 and sale_id = $2 and kind = 'retraction'",
        [a.id, sale.id]);
      expect((await client.query(retraction, [a.id, sale.id])).rows).toEqual([{ status: "accepted", order_id: `erased:${sale.id}` }]);
      expect(await hits()).toEqual([]);
    }));

  test("a conversion whose last upload timed out is retracted as well as cancelled: Google may have it", () =>
    withRootDb(async (client) => {
      const { a, z } = await seedWorld(client);
      const { rows: [sale] } = await client.query(
        "select (app_public.confirm_sale_and_enqueue($1, 'CRM-78', 10, 'TRY', now(), visitor_id => $2)).id", [a.id, z.values.visitor]);
      await client.query("update app_public.offline_conversion_queue set attempts = 1, last_error_code = 'DEADLINE_EXCEEDED' where site_id = $1 and sale_id = $2",
        [a.id, sale.id]);
      const request = await requestErasure(client, a.id, "visitor_id", z.values.visitor);
      await runTask(client, request.id);
      const { rows } = await client.query(
        "select kind, status, last_error_code from app_public.offline_conversion_queue where site_id = $1 and sale_id = $2 order by kind", [a.id, sale.id]);
      expect(rows).toEqual([
        { kind: "conversion", status: "cancelled", last_error_code: "ERASED" },
        { kind: "retraction", status: "pending", last_error_code: null },
      ]);
    }));

  test("a retraction whose order id was never personal keeps it", () =>
    withRootDb(async (client) => {
      const { a, z } = await seedWorld(client);
      const { rows: [sale] } = await client.query(
        "select (app_public.confirm_sale_and_enqueue($1, 'CRM-77', 10, 'TRY', now(), visitor_id => $2)).id", [a.id, z.values.visitor]);
      await client.query("update app_public.offline_conversion_queue set status = 'accepted' where site_id = $1 and sale_id = $2", [a.id, sale.id]);
      const request = await requestErasure(client, a.id, "visitor_id", z.values.visitor);
      await runTask(client, request.id);
      await client.query("update app_public.offline_conversion_queue set status = 'accepted' where site_id = $1 and sale_id = $2 and kind = 'retraction'",
        [a.id, sale.id]);
      const { rows } = await client.query("select order_id from app_public.offline_conversion_queue where site_id = $1 and sale_id = $2 order by kind", [a.id, sale.id]);
      expect(rows).toEqual([{ order_id: "CRM-77" }, { order_id: "CRM-77" }]);
    }));
});

describe("a call erased while its provider still writes about it", () => {
  test("a later event for the erased call puts none of the subject's data back; status and duration still follow", () =>
    withRootDb(async (client) => {
      const { a, z } = await seedWorld(client);
      const callId = `call_${unique("erased").replace(/[^A-Za-z0-9_]/g, "_")}`;
      const event = (status: string, duration: number) => client.query("select app_private.record_call_event($1, $2::jsonb)", [a.id, JSON.stringify({
        call_id: callId, status, caller: z.values.phoneE164, tracking_number: "+902125550000",
        started_at: new Date(Date.now() - 5 * 60_000).toISOString(), duration_s: duration, visitor_id: z.values.visitor, gclid: z.values.gclid,
      })]);
      await event("ringing", 0);
      const needles = await needlesFor(client, a.id, z.values);
      const request = await requestErasure(client, a.id, "phone", z.values.phone);
      await runTask(client, request.id);
      const call = "select status, duration_s, caller, visitor_id, gclid, session_id, click_id, erased_at is not null as erased from app_public.calls where site_id = $1 and call_id = $2";
      expect((await client.query(call, [a.id, callId])).rows[0]).toMatchObject({ status: "ringing", caller: null, visitor_id: null, gclid: null, erased: true });

      // The provider carries on with the call it knows, number and all.
      await event("ended", 95);
      expect((await client.query(call, [a.id, callId])).rows[0]).toEqual({
        status: "ended", duration_s: 95, caller: null, visitor_id: null, gclid: null, session_id: null, click_id: null, erased: true,
      });
      expect((await scanDatabase(client, needles)).map((h) => `${h.relation}.${h.column}: ${h.label}`)).toEqual([]);
    }));
});

/* ------------------------------------------------------------------ billing */

describe("billing after erasure", () => {
  /** The latest month whose invoice may be frozen now (ended at least 8 days ago). */
  async function freezableMonth(db: Queryable): Promise<{ period: string; day: string }> {
    const { rows: [row] } = await db.query(`
      select to_char(p, 'YYYY-MM-DD') as period, to_char(p + interval '14 days', 'YYYY-MM-DD') as day
        from (select case when now() >= date_trunc('month', now() at time zone 'UTC') at time zone 'UTC' + interval '8 days'
                          then date_trunc('month', now() at time zone 'UTC') - interval '1 month'
                          else date_trunc('month', now() at time zone 'UTC') - interval '2 months' end as p) m`);
    return row;
  }

  /** The subject's visits in a past month, as ingestion stored them then: ledger rows, a session and its events. */
  async function seedPastMonth(db: Queryable, site: TrackedSite, v: SubjectValues, day: string): Promise<string[]> {
    const keys = [randomUUID(), randomUUID(), randomUUID()];
    const times = [`${day}T10:00:00.123Z`, `${day}T10:05:00.456Z`, `${day}T10:09:59.999Z`];
    const sessionId = keys[0];
    await db.query(
      `insert into app_public.sessions (site_id, id, started_at, ended_at, first_event_id, last_event_id, visitor_key, visitor_id, event_count,
                                        landing_url, attribution_tier, attribution_source, click_id, click_id_type)
       values ($1, $2, $3, $4, $5, $6, $7, $7, 3, $8, 'S1', 'google_ads', $9, 'gclid')`,
      [site.id, sessionId, times[0], times[2], keys[0], keys[2], v.visitor, `https://shop.example/?gclid=${v.gclid}`, v.gclid]);
    for (const [i, key] of keys.entries()) {
      await db.query(
        "insert into app_public.ingest_idempotency (site_id, idempotency_key, occurred_at, billable, reason) values ($1, $2, $3, $4, case when $4 then null else 'bot' end)",
        [site.id, key, times[i], i !== 1]);
      await db.query(
        `insert into app_public.events (site_id, id, occurred_at, type, visitor_key, visitor_id, session_id, url, props, consent)
         values ($1, $2, $3, 'pageview', $4, $4, $5, $6, $7, '{"analytics_storage": "granted"}')`,
        [site.id, key, times[i], v.visitor, sessionId, `https://shop.example/p${i}?email=${encodeURIComponent(v.email)}`, JSON.stringify({ email: v.email })]);
    }
    return keys;
  }

  async function reconcile(db: Queryable, siteId: string, period: string) {
    const { rows: [row] } = await db.query(
      `select ledger_billable::int, ledger_non_billable::int, events_stored::int, events_removed::int, frozen, snapshot_billable::int,
              snapshot_digest, ledger_digest, drift
         from app_public.billing_reconciliation($1, $2::date)`, [siteId, period]);
    return row;
  }

  /** SPEC §9's digest, recomputed here from the ledger rows alone. */
  async function recomputedDigest(db: Queryable, siteId: string, period: string): Promise<string> {
    const { rows } = await db.query(
      `select idempotency_key::text as key, occurred_at, billable from app_public.ingest_idempotency
        where site_id = $1 and occurred_at >= $2::date::timestamp at time zone 'UTC'
          and occurred_at < ($2::date + interval '1 month')::timestamp at time zone 'UTC'`, [siteId, period]);
    const lines = rows.map((r) => `${r.key.toLowerCase()},${(r.occurred_at as Date).toISOString()},${r.billable}`)
      .sort((x, y) => (x < y ? -1 : x > y ? 1 : 0));
    return createHash("sha256").update(lines.map((l) => `${l}\n`).join(""), "utf8").digest("hex");
  }

  async function ledgerOf(db: Queryable, siteId: string): Promise<string[]> {
    const { rows } = await db.query(
      "select idempotency_key::text || '/' || occurred_at::text || '/' || billable as row from app_public.ingest_idempotency where site_id = $1 order by 1", [siteId]);
    return rows.map((r) => r.row);
  }

  async function setUp(client: pg.ClientBase) {
    const world = await seedWorld(client);
    const { period, day } = await freezableMonth(client);
    const zKeys = await seedPastMonth(client, world.a, world.z.values, day);
    await seedPastMonth(client, world.a, world.y.values, day);
    const { rows: [snapshot] } = await client.query(
      "select period::text, billable_events::int, non_billable_events::int, ledger_digest, frozen_at::text from app_public.freeze_invoice($1, $2::date)",
      [world.a.id, period]);
    expect(snapshot).toMatchObject({ billable_events: 4, non_billable_events: 2 });
    const current = (await client.query("select to_char(date_trunc('month', now() at time zone 'UTC'), 'YYYY-MM-DD') as p")).rows[0].p;
    return { world, period, current, zKeys, snapshot };
  }

  test("the ledger keeps every row, and the frozen invoice's digest is unchanged and still recomputes from the ledger", () =>
    withRootDb(async (client) => {
      const { world, period, zKeys, snapshot } = await setUp(client);
      const ledger = await ledgerOf(client, world.a.id);
      expect(await recomputedDigest(client, world.a.id, period)).toBe(snapshot.ledger_digest);

      const request = await requestErasure(client, world.a.id, "visitor_id", world.z.values.visitor);
      await runTask(client, request.id);
      const { receipt } = await requestRow(client, world.a.id, request.id);
      expect(receipt!.events_deleted).toBe(SEEDED_RECEIPT.events_deleted + 3);

      // The subject's past events are gone; its ledger rows (ids, times, billable: no personal data) stay.
      const { rows: [{ events }] } = await client.query(
        "select count(*)::int as events from app_public.events where site_id = $1 and id = any($2::uuid[])", [world.a.id, zKeys]);
      expect(events).toBe(0);
      expect(await ledgerOf(client, world.a.id)).toEqual(ledger);
      const { rows: [after] } = await client.query(
        "select period::text, billable_events::int, non_billable_events::int, ledger_digest, frozen_at::text from app_public.invoice_snapshots where site_id = $1 and period = $2",
        [world.a.id, period]);
      expect(after).toEqual(snapshot);
      expect(await recomputedDigest(client, world.a.id, period)).toBe(snapshot.ledger_digest);
      const { rows: [{ digest }] } = await client.query("select app_private.compute_ledger_digest($1, $2::date) as digest", [world.a.id, period]);
      expect(digest).toBe(snapshot.ledger_digest);
    }));

  test("billing_reconciliation of the frozen month and of the current month is the same before and after: erased events are accounted, no drift", () =>
    withRootDb(async (client) => {
      const { world, period, current } = await setUp(client);
      const before = { frozen: await reconcile(client, world.a.id, period), current: await reconcile(client, world.a.id, current) };
      expect(before.frozen).toMatchObject({ frozen: true, drift: [], events_stored: 6, events_removed: 0, ledger_billable: 4, ledger_non_billable: 2 });
      expect(before.current).toMatchObject({ frozen: false, drift: [], events_stored: 6, events_removed: 0 });

      const request = await requestErasure(client, world.a.id, "visitor_id", world.z.values.visitor);
      await runTask(client, request.id);

      const after = { frozen: await reconcile(client, world.a.id, period), current: await reconcile(client, world.a.id, current) };
      // Only the split between stored and removed events moves; everything billing rests on stays.
      const { events_stored: _s1, events_removed: _r1, ...frozenRest } = before.frozen;
      const { events_stored: _s2, events_removed: _r2, ...currentRest } = before.current;
      expect(after).toEqual({
        frozen: { ...frozenRest, events_stored: 3, events_removed: 3 },
        current: { ...currentRest, events_stored: 3, events_removed: SEEDED_RECEIPT.events_deleted },
      });
      // Carrying it out again counts nothing twice.
      await client.query("select app_private.carry_out_erasure($1, $2)", [world.a.id, request.id]);
      expect({ frozen: await reconcile(client, world.a.id, period), current: await reconcile(client, world.a.id, current) }).toEqual(after);
    }));
});

/* ------------------------------------------------------------------ idempotence and crashes */

describe("idempotent and crash-safe", () => {
  test("carrying out a completed erasure again (function and task) returns the same receipt and changes nothing", () =>
    withRootDb(async (client) => {
      const { a, z } = await seedWorld(client);
      const request = await requestErasure(client, a.id, "phone", z.values.phone);
      await runTask(client, request.id);
      const first = await requestRow(client, a.id, request.id);
      expect(first.receipt).toEqual(SEEDED_RECEIPT);
      const digests = await siteDigests(client, a.id);
      const { rows: [{ receipt }] } = await client.query("select app_private.carry_out_erasure($1, $2) as receipt", [a.id, request.id]);
      expect(receipt).toEqual(first.receipt);
      await runTask(client, request.id);
      expect(await siteDigests(client, a.id)).toEqual(digests);
      expect(await requestRow(client, a.id, request.id)).toEqual(first);
    }));

  test("an unknown request is OMNER", () =>
    withRootDb(async (client) => {
      const { a } = await seedWorld(client);
      expect(await sqlState(client, () => client.query("select app_private.carry_out_erasure($1, $2)", [a.id, randomUUID()]))).toBe("OMNER");
    }));

  test("a failure mid-way (a delete that fails once) leaves nothing half-erased and the request failed; the retry completes", () =>
    withRootDb(async (client) => {
      const world = await seedWorld(client);
      const { a, z } = world;
      const needles = await needlesFor(client, a.id, z.values);
      const request = await requestErasure(client, a.id, "click_id", z.values.gclid);
      const digests = await siteDigests(client, a.id);
      const before = await scanDatabase(client, needles);
      // Fails the first time the sales are updated: after events, sessions, consents, calls,
      // identifiers and conversions were already done within the erasure's transaction.
      // A sequence is not transactional, so the failed attempt cannot undo its "once".
      await client.query("create sequence public.erasure_fails_once");
      await client.query(`create function public.erasure_fails_once() returns trigger language plpgsql as $$
        begin
          if nextval('public.erasure_fails_once') = 1 then raise exception 'simulated crash in the middle of an erasure'; end if;
          return null;
        end $$`);
      await client.query("create trigger erasure_fails_once before update on app_public.sales for each statement execute function public.erasure_fails_once()");

      await expect(runTask(client, request.id)).rejects.toThrow("simulated crash");
      const failed = await requestRow(client, a.id, request.id);
      expect(failed).toMatchObject({ status: "failed", attempts: 1, completed_at: null, receipt: null });
      expect(failed.last_error).toEqual(expect.any(String));
      expect(JSON.stringify(failed)).not.toContain(z.values.token);
      // Nothing was erased: every row of the site is as it was but the request's own (and its audit row).
      const after = await siteDigests(client, a.id);
      for (const relation of Object.keys(digests)) {
        if (["app_public.erasure_requests", "app_public.audit_log", "app_private.audit_chain_heads"].includes(relation)) continue;
        expect({ relation, digest: after[relation] }).toEqual({ relation, digest: digests[relation] });
      }
      expect(await scanDatabase(client, needles)).toEqual(before);
      // Asking again meanwhile is the same request.
      expect((await requestErasure(client, a.id, "click_id", z.values.gclid)).id).toBe(request.id);

      await runTask(client, request.id);
      expect(await requestRow(client, a.id, request.id)).toMatchObject({ status: "completed", attempts: 2, last_error: null, receipt: SEEDED_RECEIPT });
      expect((await scanDatabase(client, needles)).map((h) => `${h.relation}.${h.column}: ${h.label}`)).toEqual([]);
    }));

  test("a failed request whose job has used up its attempts starts afresh when asked again", () =>
    withRootDb(async (client) => {
      const { a, z } = await seedWorld(client);
      const request = await requestErasure(client, a.id, "visitor_id", z.values.visitor);
      await client.query(`create function public.erasure_always_fails() returns trigger language plpgsql as $$
        begin raise exception 'simulated outage'; end $$`);
      await client.query("create trigger erasure_always_fails before delete on app_public.consents for each statement execute function public.erasure_always_fails()");
      await expect(runTask(client, request.id)).rejects.toThrow("simulated outage");
      const [job] = await erasureJobs(client, request.id);
      await client.query("select graphile_worker.permanently_fail_jobs(array[$1::bigint], 'gave up')", [job.id]);
      const [spent] = await erasureJobs(client, request.id);
      expect(spent.attempts).toBe(spent.max_attempts);
      expect(await requestRow(client, a.id, request.id)).toMatchObject({ status: "failed", attempts: 1 });

      await client.query("drop trigger erasure_always_fails on app_public.consents");
      expect((await requestErasure(client, a.id, "visitor_id", z.values.visitor)).id).toBe(request.id);
      const [renewed] = await erasureJobs(client, request.id);
      expect(renewed.attempts).toBeLessThan(renewed.max_attempts);
      expect(renewed.payload).toEqual({ site_id: a.id, request_id: request.id });
      await runTask(client, request.id);
      expect(await requestRow(client, a.id, request.id)).toMatchObject({ status: "completed", attempts: 2, receipt: SEEDED_RECEIPT });
    }));

  describe("through graphile-worker, with the worker's connection killed while a lock holds the erasure back", () => {
    let pools: ReturnType<typeof makePools>;
    let site: TrackedSite;
    let subject: SeededSubject;

    beforeAll(async () => {
      pools = makePools(readConfig(), { max: 4 });
      const client = await getRootPool().connect();
      try {
        site = await createTrackedSite(client, await createUser(client));
        subject = await seedSubject(client, site, subjectValues("zqk"));
      } finally {
        client.release();
      }
    });

    afterAll(async () => {
      await pools.end();
    });

    async function subjectState(db: Queryable) {
      const { rows: [row] } = await db.query(
        `select (select count(*)::int from app_public.events where site_id = $1 and id = any($2::uuid[])) as events,
                (select count(*)::int from app_public.sessions where site_id = $1 and (visitor_id = $3 or id in (
                   select session_id from app_public.events where site_id = $1 and id = any($2::uuid[])))) as sessions,
                (select count(*)::int from app_public.consents where site_id = $1) as consents,
                (select caller from app_public.calls where site_id = $1 and id = $4) as caller,
                (select count(*)::int from app_private.sale_identifiers where site_id = $1) as identifiers,
                (select count(*)::int from app_public.sales where site_id = $1 and visitor_id = $3) as sales_with_visitor,
                (select jsonb_object_agg(sale_id::text || '/' || kind, status) from app_public.offline_conversion_queue where site_id = $1) as queue`,
        [site.id, subject.eventIds, subject.values.visitor, subject.callId]);
      return row;
    }

    test("the killed attempt leaves everything as it was; the job runs again and completes", async () => {
      const root = getRootPool();
      const taskList = { carry_out_erasure: loadTaskList().carry_out_erasure };
      const untouched = await subjectState(root);
      expect(untouched).toMatchObject({ events: 3, sessions: 2, consents: 2, caller: subject.values.phoneE164, identifiers: 2, sales_with_visitor: 2 });
      const request = await requestErasure(root, site.id, "visitor_id", subject.values.visitor);

      // A transaction holding the subject's sale: the erasure waits for it half-way through.
      const blocker = await root.connect();
      try {
        await blocker.query("begin");
        await blocker.query("select 1 from app_public.sales where site_id = $1 and id = $2 for update", [site.id, subject.saleId]);
        const run = runOnce({ pgPool: pools.owner, taskList, logger: silentLogger });
        let pid: number | undefined;
        for (let waited = 0; waited < 15_000 && pid === undefined; waited += 50) {
          const { rows } = await root.query(
            `select pid from pg_stat_activity
              where datname = current_database() and wait_event_type = 'Lock' and query like '%carry_out_erasure%' and pid <> pg_backend_pid()`);
          pid = rows[0]?.pid;
          if (pid === undefined) await new Promise((resolve) => setTimeout(resolve, 50));
        }
        expect(pid).toEqual(expect.any(Number));
        // Events, sessions, consents and calls are already erased inside its transaction: kill it now.
        await root.query("select pg_terminate_backend($1)", [pid]);
        await run;
        await blocker.query("rollback");
      } finally {
        blocker.release();
      }

      expect(await subjectState(root)).toEqual(untouched);
      const failed = await requestRow(root, site.id, request.id);
      expect(["failed", "pending"]).toContain(failed.status);
      expect(failed).toMatchObject({ completed_at: null, receipt: null });
      const { rows: [{ held }] } = await root.query(
        "select count(*)::int as held from app_private.erasure_subjects where site_id = $1 and request_id = $2", [site.id, request.id]);
      expect(held).toBe(1);
      // runOnce may resolve just before graphile-worker writes the failure down.
      let [job] = await erasureJobs(root, request.id);
      for (let waited = 0; waited < 10_000 && (job.locked_at !== null || job.last_error === null); waited += 100) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        [job] = await erasureJobs(root, request.id);
      }
      expect(job).toMatchObject({ task_identifier: "carry_out_erasure", attempts: 1, last_error: expect.any(String), locked_at: null });

      // The retry (brought forward rather than waiting for graphile-worker's backoff) completes.
      const utils = await makeWorkerUtils({ pgPool: pools.owner, logger: silentLogger });
      try {
        await utils.rescheduleJobs([job.id], { runAt: new Date() });
      } finally {
        await utils.release();
      }
      await runOnce({ pgPool: pools.owner, taskList, logger: silentLogger });
      let jobs: JobRow[] = [job];
      for (let waited = 0; waited < 10_000 && jobs.length > 0; waited += 100) {
        jobs = await erasureJobs(root, request.id);
        if (jobs.length > 0) await new Promise((resolve) => setTimeout(resolve, 100));
      }
      expect(jobs).toEqual([]);
      expect(await requestRow(root, site.id, request.id)).toMatchObject({ status: "completed", receipt: SEEDED_RECEIPT });
      expect(await subjectState(root)).toMatchObject({ events: 0, sessions: 0, consents: 0, caller: null, identifiers: 0, sales_with_visitor: 0 });
    });
  });
});

/* ------------------------------------------------------------------ conversions */

describe("conversions of the erased subject", () => {
  test("pending ones are cancelled as ERASED, ones Google may have get a retraction, finished ones stay; other subjects' are untouched", () =>
    withRootDb(async (client) => {
      const { a, z, y } = await seedWorld(client);
      // More of the subject's sales, one per queue status.
      const statuses = ["processing", "sent", "failed", "cancelled"];
      const bySale: Record<string, string> = { [z.saleId]: "pending", [z.deliveredSaleId]: "accepted", [z.sealSaleId]: "pending" };
      for (const status of statuses) {
        const { rows: [sale] } = await client.query(
          "select id from app_public.confirm_sale_and_enqueue($1, $2, 100, 'TRY', now(), visitor_id => $3)", [a.id, unique("CRM"), z.values.visitor]);
        await client.query("update app_public.offline_conversion_queue set status = $3 where site_id = $1 and sale_id = $2", [a.id, sale.id, status]);
        bySale[sale.id] = status;
      }
      const ySnapshot = async () => (await client.query(
        `select jsonb_agg(to_jsonb(q) order by q.id) as rows from app_public.offline_conversion_queue q
          where q.site_id = $1 and q.sale_id in (select s.id from app_public.sales s where s.site_id = $1 and (s.visitor_id = $2 or s.call_id = $3))`,
        [a.id, y.values.visitor, y.callId])).rows[0].rows;
      const yBefore = await ySnapshot();
      expect(yBefore).toHaveLength(3);
      const { rows: conversionsBefore } = await client.query(
        "select sale_id, order_id, value, currency, conversion_at, ad_user_data, ad_personalization from app_public.offline_conversion_queue where site_id = $1 and kind = 'conversion'",
        [a.id]);

      const request = await requestErasure(client, a.id, "visitor_id", z.values.visitor);
      await runTask(client, request.id);
      const { receipt } = await requestRow(client, a.id, request.id);
      expect(receipt).toMatchObject({ conversions_cancelled: 2, retractions_queued: 3, sales_stripped: 7 });

      const { rows } = await client.query(
        `select sale_id, kind, status, click_id, click_id_type, last_error_code, order_id, value, currency, conversion_at, ad_user_data, ad_personalization
           from app_public.offline_conversion_queue where site_id = $1 and sale_id = any($2::uuid[]) order by sale_id, kind`,
        [a.id, Object.keys(bySale)]);
      for (const [saleId, status] of Object.entries(bySale)) {
        const conversion = rows.find((r) => r.sale_id === saleId && r.kind === "conversion");
        const retraction = rows.find((r) => r.sale_id === saleId && r.kind === "retraction");
        expect({ status, click_id: conversion.click_id }).toEqual({ status, click_id: null });
        if (status === "pending") {
          expect({ status, now: conversion.status, code: conversion.last_error_code, retraction }).toEqual({ status, now: "cancelled", code: "ERASED", retraction: undefined });
        } else if (["processing", "sent", "accepted"].includes(status)) {
          const original = conversionsBefore.find((c) => c.sale_id === saleId);
          expect({ status, now: conversion.status, retraction }).toEqual({
            status, now: status,
            retraction: {
              sale_id: saleId, kind: "retraction", status: "pending", click_id: null, click_id_type: null, last_error_code: null,
              order_id: original.order_id, value: original.value, currency: original.currency, conversion_at: original.conversion_at,
              ad_user_data: original.ad_user_data, ad_personalization: original.ad_personalization,
            },
          });
        } else {
          expect({ status, now: conversion.status, retraction }).toEqual({ status, now: status, retraction: undefined });
        }
      }
      // The retractions are on their way: the site's upload job exists, with nothing but ids in it.
      const { rows: [job] } = await client.query(
        `select j.task_identifier, p.payload from graphile_worker.jobs j join graphile_worker._private_jobs p on p.id = j.id
          where j.key = 'upload_conversions:google:' || $1`, [a.id]);
      expect(job).toEqual({ task_identifier: "upload_conversions", payload: { site_id: a.id, provider: "google" } });
      expect(await ySnapshot()).toEqual(yBefore);
    }));
});

/* ------------------------------------------------------------------ request_erasure */

describe("request_erasure", () => {
  test.each([
    ["a viewer", "viewerId", "user"], ["an editor", "editorId", "user"], ["a viewer API key", "viewerKey", "key"], ["an editor API key", "editorKey", "key"],
  ] as const)("%s is refused with OM403 and nothing is recorded or enqueued", (_label, who, type) =>
    withRootDb(async (client) => {
      const world = await seedWorld(client);
      const identity = type === "user" ? { userId: world[who as "viewerId"] } : { apiKeyId: world[who as "viewerKey"].id };
      const count = async () => (await client.query(
        `select (select count(*)::int from app_public.erasure_requests) as requests,
                (select count(*)::int from graphile_worker.jobs where task_identifier = 'carry_out_erasure') as jobs`)).rows[0];
      const before = await count();
      await becomeUser(client, identity);
      for (const kind of KINDS) {
        expect(await sqlState(client, () => requestErasure(client, world.a.id, kind, valueOf(world.z.values, kind)))).toBe("OM403");
      }
      await becomeRoot(client);
      expect(await count()).toEqual(before);
    }));

  test.each([
    ["an admin", "adminId", "user"], ["the owner", "ownerId", "user"], ["an admin API key", "adminKey", "key"],
  ] as const)("%s may ask; who asked is recorded", (_label, who, type) =>
    withRootDb(async (client) => {
      const world = await seedWorld(client);
      const identity = type === "user" ? { userId: world[who as "adminId"] } : { apiKeyId: world[who as "adminKey"].id };
      await becomeUser(client, identity);
      const request = await requestErasure(client, world.a.id, "email", world.z.values.email);
      expect(request).toMatchObject({
        status: "pending", subject_kind: "email",
        requested_by_user_id: identity.userId ?? null, requested_by_api_key_id: identity.apiKeyId ?? null,
      });
      // Admins see their site's requests; nobody sees another site's.
      expect((await client.query("select id from app_public.erasure_requests")).rows).toEqual([{ id: request.id }]);
      await becomeRoot(client);
    }));

  test("an editor or viewer sees no erasure request", () =>
    withRootDb(async (client) => {
      const world = await seedWorld(client);
      await requestErasure(client, world.a.id, "visitor_id", world.z.values.visitor);
      for (const userId of [world.editorId, world.viewerId]) {
        await becomeUser(client, { userId });
        expect((await client.query("select count(*)::int as n from app_public.erasure_requests")).rows[0].n).toBe(0);
        await becomeRoot(client);
      }
    }));

  test.each([
    ["an unknown kind", "ssn", "12345678901"], ["a kind in capitals", "EMAIL", "a@b.example"], ["an email without @", "email", "zqx.example.com"],
    ["an empty email", "email", ""], ["a phone without its country code", "phone", "0532 123 45 67"], ["a phone with letters", "phone", "+90 532 ABC"],
    ["a visitor id with spaces", "visitor_id", "v 1"], ["a visitor id over 64 characters", "visitor_id", "v".repeat(65)],
    ["a click id with a percent sign", "click_id", "abc%20def"], ["a null value", "click_id", null],
  ])("%s is OMSUB (400 invalid_subject) and records nothing", (_label, kind, value) =>
    withRootDb(async (client) => {
      const world = await seedWorld(client);
      await becomeUser(client, { userId: world.adminId });
      expect(await sqlState(client, () => requestErasure(client, world.a.id, kind as string, value as string))).toBe("OMSUB");
      await becomeRoot(client);
      const { rows: [row] } = await client.query(
        `select (select count(*)::int from app_public.erasure_requests where site_id = $1) as requests,
                (select count(*)::int from app_private.erasure_subjects where site_id = $1) as subjects,
                (select count(*)::int from graphile_worker.jobs where task_identifier = 'carry_out_erasure' and key like '%' || $1) as jobs`, [world.a.id]);
      expect(row).toEqual({ requests: 0, subjects: 0, jobs: 0 });
    }));

  test("the job is enqueued in the same transaction, with only ids in its payload; the subject is kept apart and only as a salted hash", () =>
    withRootDb(async (client) => {
      const world = await seedWorld(client);
      const request = await requestErasure(client, world.a.id, "email", world.z.values.email);
      const jobs = await erasureJobs(client, request.id);
      expect(jobs).toEqual([expect.objectContaining({ task_identifier: "carry_out_erasure", attempts: 0, max_attempts: 25, last_error: null, locked_at: null })]);
      expect(jobs[0].payload).toEqual({ site_id: world.a.id, request_id: request.id });
      const hashes = await subjectHashNeedles(client, world.a.id, world.z.values);
      expect(request.subject_hash).toBe(hashes.find((h) => h.label === "subject hash (email)")!.needle);
      expect(request.subject_hash).not.toBe(sha256(world.z.values.emailNormalized));
      expect(JSON.stringify(request).toLowerCase()).not.toContain(world.z.values.token);
      const { rows } = await client.query("select normalized_value from app_private.erasure_subjects where site_id = $1 and request_id = $2", [world.a.id, request.id]);
      expect(rows).toEqual([{ normalized_value: world.z.values.emailNormalized }]);
      // Rolled back with the transaction that asked: a savepoint stands in for it.
      await client.query("savepoint ask");
      const rolledBack = await requestErasure(client, world.a.id, "visitor_id", world.y.values.visitor);
      await client.query("rollback to savepoint ask");
      expect(await erasureJobs(client, rolledBack.id)).toEqual([]);
    }));

  test("asking twice while under way (the same subject written differently) is the same request; after completion a new one", () =>
    withRootDb(async (client) => {
      const world = await seedWorld(client);
      const first = await requestErasure(client, world.a.id, "email", world.z.values.email);
      const again = await requestErasure(client, world.a.id, "email", `  ${world.z.values.emailNormalized.toUpperCase()} `);
      expect(again.id).toBe(first.id);
      const phoneFirst = await requestErasure(client, world.a.id, "phone", world.z.values.phone);
      expect((await requestErasure(client, world.a.id, "phone", `00${world.z.values.phoneE164.slice(1)}`)).id).toBe(phoneFirst.id);
      expect(phoneFirst.id).not.toBe(first.id);
      const { rows: [counts] } = await client.query(
        `select (select count(*)::int from app_public.erasure_requests where site_id = $1) as requests,
                (select count(*)::int from app_private.erasure_subjects where site_id = $1) as subjects`, [world.a.id]);
      expect(counts).toEqual({ requests: 2, subjects: 2 });
      expect(await erasureJobs(client, first.id)).toHaveLength(1);

      await runTask(client, first.id);
      const later = await requestErasure(client, world.a.id, "email", world.z.values.email);
      expect(later.id).not.toBe(first.id);
      expect(later.status).toBe("pending");
      expect(await erasureJobs(client, later.id)).toHaveLength(1);
    }));

  test("the receipt holds counts per table, when and by whom, and nothing of the subject; the raw subject is gone", () =>
    withRootDb(async (client) => {
      const world = await seedWorld(client);
      await becomeUser(client, { userId: world.adminId });
      const request = await requestErasure(client, world.a.id, "visitor_id", world.z.values.visitor);
      await becomeRoot(client);
      await runTask(client, request.id);
      const done = await requestRow(client, world.a.id, request.id);
      expect(done).toMatchObject({ status: "completed", requested_by_user_id: world.adminId, completed_at: expect.any(Date), receipt: SEEDED_RECEIPT });
      for (const count of Object.values(done.receipt!)) expect(Number.isInteger(count) && count >= 0).toBe(true);
      const text = JSON.stringify(done).toLowerCase();
      expect((await needlesFor(client, world.a.id, world.z.values)).filter((n) => text.includes(n.needle)).map((n) => n.label)).toEqual([]);
      const { rows } = await client.query("select 1 from app_private.erasure_subjects where site_id = $1 and request_id = $2", [world.a.id, request.id]);
      expect(rows).toEqual([]);
    }));
});

/* ------------------------------------------------------------------ the audit log */

describe("the audit log never holds raw personal data", () => {
  test("after sites, members, API keys, sales, call actions, conversations, destinations and an erasure, no audit row holds a value of the subject or its hash", () =>
    withRootDb(async (client) => {
      const world = await seedWorld(client);
      const { a, z } = world;
      // A staff member whose own email and name are distinctive too: a user's personal data.
      const staff = subjectValues("qzs");
      const staffId = await createUser(client, staff.email);
      // Writes by people, as GraphQL would make them.
      await becomeUser(client, { userId: world.ownerId });
      const { rows: [site] } = await client.query("select id from app_public.create_site($1, 'shop.example')", [unique("Audited")]);
      await client.query("select app_public.add_site_member($1, $2, 'admin')", [a.id, staff.email]);
      await client.query("select app_public.add_site_member($1, $2, 'editor')", [site.id, staff.email]);
      await client.query("select app_public.update_site_settings($1, consent_mode => 'implied', allowed_origins => array['https://shop.example'])", [a.id]);
      await client.query("select app_public.set_data_retention($1, 6)", [a.id]);
      const { rows: [key] } = await client.query("select api_key_id from app_public.create_api_key($1, 'editor', 'crm')", [a.id]);
      await client.query("select app_public.revoke_api_key($1)", [key.api_key_id]);
      const { rows: [destination] } = await client.query("select id from app_public.create_destination($1, 'datamanager', '123-456-7890', '987654')", [a.id]);
      await client.query("select app_public.set_destination_status($1, 'paused')", [destination.id]);
      await becomeUser(client, { userId: staffId });
      await client.query("select app_public.update_current_user($1)", [`${staff.token} Staff`]);
      await becomeUser(client, { userId: world.editorId });
      await client.query(
        `select app_public.confirm_sale_and_enqueue($1, $2, 42, 'TRY', now(), visitor_id => $3, gclid => $4, email => $5, phone => $6)`,
        [a.id, unique("CRM"), z.values.visitor, z.values.gclid, z.values.email, z.values.phone]);
      await client.query("select app_public.undo_call_action($1, $2)", [a.id, z.callId]);
      await client.query("select app_public.junk_call($1, $2)", [a.id, z.callId]);
      await client.query("select app_public.undo_call_action($1, $2)", [a.id, z.callId]);
      await client.query("select app_public.seal_call($1, $2, 100)", [a.id, z.callId]);
      await becomeUser(client, { apiKeyId: world.adminKey.id });
      const request = await requestErasure(client, a.id, "email", z.values.email);
      await becomeRoot(client);
      await client.query("update app_public.users set is_platform_admin = true where id = $1", [staffId]);
      await runTask(client, request.id);

      const { rows: tables } = await client.query(
        "select distinct target_table from app_public.audit_log where site_id = any($1::uuid[]) or site_id = '00000000-0000-0000-0000-000000000000'",
        [[a.id, site.id]]);
      expect(tables.map((r) => r.target_table).sort()).toEqual(expect.arrayContaining(
        ["api_keys", "call_actions", "conversations", "destinations", "erasure_requests", "sales", "site_members", "sites", "users"]));

      const needles = [
        ...(await needlesFor(client, a.id, z.values)),
        ...(await subjectHashNeedles(client, a.id, z.values)),
        ...(await needlesFor(client, a.id, staff)).map((n) => ({ ...n, label: `staff ${n.label}` })),
      ];
      const hits = (await scanDatabase(client, needles)).filter((h) => h.relation === "app_public.audit_log");
      expect(hits.filter((h) => !isSubjectHashAllowed(h))).toEqual([]);
      // The scan can see the audit log: the request's salted hash is there, on erasure_requests rows only.
      expect(hits.filter(isSubjectHashAllowed).length).toBeGreaterThan(0);
    }));
});

/* ------------------------------------------------------------------ GraphQL and CLI */

describe("through GraphQL and the CLI", () => {
  let service: TestService;
  let fixture: { siteId: string; adminId: string; editorId: string; viewerId: string; values: SubjectValues };

  beforeAll(async () => {
    const client = await getRootPool().connect();
    try {
      const ownerId = await createUser(client);
      const adminId = await createUser(client);
      const editorId = await createUser(client);
      const viewerId = await createUser(client);
      const site = await createTrackedSite(client, ownerId);
      await addMember(client, site.id, adminId, "admin");
      await addMember(client, site.id, editorId, "editor");
      await addMember(client, site.id, viewerId, "viewer");
      const subject = await seedSubject(client, site, subjectValues("zqg"));
      fixture = { siteId: site.id, adminId, editorId, viewerId, values: subject.values };
    } finally {
      client.release();
    }
    service = await startTestService();
  });

  afterAll(async () => {
    await service?.stop();
  });

  const REQUEST = `mutation($s: UUID!, $k: String!, $v: String!) {
    requestErasure(input: {siteId: $s, kind: $k, value: $v}) { result { rowId status subjectKind subjectHash } }
  }`;

  test("an admin asks and follows the status; an editor is forbidden, sees no request, and the denial is audited without the subject", async () => {
    const admin = await tokenFor(fixture.adminId);
    const editor = await tokenFor(fixture.editorId);
    const auditBefore = (await getRootPool().query("select count(*)::int as n from app_public.audit_log where site_id = $1", [fixture.siteId])).rows[0].n;

    const denied = await service.graphql(REQUEST, { s: fixture.siteId, k: "phone", v: fixture.values.phone }, editor);
    expect(denied.body.errors).toEqual([expect.objectContaining({ extensions: { code: "forbidden" } })]);
    expect(denied.body.data?.requestErasure ?? null).toBeNull();
    const invalid = await service.graphql(REQUEST, { s: fixture.siteId, k: "phone", v: "0532" }, admin);
    expect(invalid.body.errors).toEqual([expect.objectContaining({ extensions: { code: "invalid_subject" } })]);

    const asked = await service.graphql(REQUEST, { s: fixture.siteId, k: "phone", v: fixture.values.phone }, admin);
    expect(asked.body.errors).toBeUndefined();
    const result = asked.body.data.requestErasure.result;
    expect(result).toMatchObject({ status: "pending", subjectKind: "phone", subjectHash: expect.stringMatching(/^[0-9a-f]{64}$/) });
    const status = await service.graphql(`query($s: UUID!) { allErasureRequests(condition: {siteId: $s}) { nodes { rowId status receipt } } }`,
      { s: fixture.siteId }, admin);
    expect(status.body.data.allErasureRequests.nodes).toEqual([{ rowId: result.rowId, status: "pending", receipt: null }]);
    const hidden = await service.graphql(`query($s: UUID!) { allErasureRequests(condition: {siteId: $s}) { nodes { rowId } } }`,
      { s: fixture.siteId }, editor);
    expect(hidden.body.data.allErasureRequests.nodes).toEqual([]);

    await flushDenials();
    const { rows } = await getRootPool().query(
      "select action, target_table, target_id, old_values, new_values from app_public.audit_log where site_id = $1 order by seq offset $2",
      [fixture.siteId, auditBefore]);
    expect(rows).toEqual(expect.arrayContaining([
      expect.objectContaining({ action: "denied:request_erasure", target_table: "erasure_requests", target_id: "phone" }),
      expect.objectContaining({ action: "insert", target_table: "erasure_requests", target_id: result.rowId }),
    ]));
    const text = JSON.stringify(rows).toLowerCase();
    const leaked = (await needlesFor(getRootPool(), fixture.siteId, fixture.values)).filter((n) => text.includes(n.needle)).map((n) => n.label);
    expect({ rows, leaked }).toEqual({ rows, leaked: [] });
  });

  test("a denied sale confirmation whose CRM order id is the subject's email is audited without it", async () => {
    const auditBefore = (await getRootPool().query("select count(*)::int as n from app_public.audit_log where site_id = $1", [fixture.siteId])).rows[0].n;
    const denied = await service.graphql(`mutation($s: UUID!, $e: String!, $t: Datetime!) {
        confirmSaleAndEnqueue(input: {siteId: $s, externalId: $e, amount: "10", currency: "TRY", occurredAt: $t, email: $e}) { result { rowId } }
      }`, { s: fixture.siteId, e: fixture.values.email, t: new Date().toISOString() }, await tokenFor(fixture.viewerId));
    expect(denied.body.errors).toEqual([expect.objectContaining({ extensions: { code: "forbidden" } })]);
    await flushDenials();
    const { rows } = await getRootPool().query(
      "select action, target_table, target_id, old_values, new_values from app_public.audit_log where site_id = $1 order by seq offset $2",
      [fixture.siteId, auditBefore]);
    expect(rows).toEqual([expect.objectContaining({ action: "denied:confirm_sale", target_table: "sales" })]);
    const text = JSON.stringify(rows).toLowerCase();
    const leaked = (await needlesFor(getRootPool(), fixture.siteId, fixture.values)).filter((n) => text.includes(n.needle)).map((n) => n.label);
    expect({ rows, leaked }).toEqual({ rows, leaked: [] });
  });

  test("`erasure request` prints {\"id\"} of a pending request with its job; zero or two subject options are usage errors (exit 2)", async () => {
    const ok = await runCli(["erasure", "request", "--site", fixture.siteId, "--gclid", fixture.values.gclid, "--json"]);
    expect({ code: ok.code, stderr: ok.stderr }).toEqual({ code: 0, stderr: "" });
    const lines = ok.stdout.trim().split("\n");
    expect(lines).toHaveLength(1);
    const printed = JSON.parse(lines[0]);
    expect(Object.keys(printed)).toEqual(["id"]);
    const row = await requestRow(getRootPool(), fixture.siteId, printed.id);
    expect(row).toMatchObject({ subject_kind: "click_id", status: "pending" });
    expect(await erasureJobs(getRootPool(), printed.id)).toHaveLength(1);

    for (const args of [[], ["--email", fixture.values.email, "--phone", fixture.values.phone]]) {
      const result = await runCli(["erasure", "request", "--site", fixture.siteId, ...args, "--json"]);
      expect({ args, code: result.code }).toEqual({ args, code: 2 });
    }
    const bad = await runCli(["erasure", "request", "--site", fixture.siteId, "--email", "not-an-email", "--json"]);
    expect(bad.code).toBe(1);
    expect(JSON.parse(bad.stdout.trim())).toMatchObject({ error: "invalid_subject" });
    const { rows: [{ n }] } = await getRootPool().query("select count(*)::int as n from app_public.erasure_requests where site_id = $1", [fixture.siteId]);
    expect(n).toBe(2); // the GraphQL request and the CLI's
  });
});
