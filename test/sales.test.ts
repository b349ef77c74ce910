/*
 * POST /api/sales/confirm (SPEC §5.3) through the real express app over real HTTP: a CRM's sale
 * is 201 with the sale and its queued conversion, attributed from the session (an S1 click id,
 * or an S3 session's assisting one), the call (by the provider's id or ours), the visitor's
 * latest session before the sale, or a gclid alone, and with no click id when nothing is known;
 * email and phone are stored only as SHA-256 of their normalised forms and appear in clear
 * nowhere (sale, conversion, audit log, job payload, response); a repeated external_id is 409
 * sale_exists and changes nothing; every bad request (body, auth, amount, currency, time,
 * session or call of another tenant, identifiers, consent) is refused with its status and
 * stable code, no internals, and nothing written; the conversion's consent signals come from
 * the body, else the visitor's latest banner choice, else the session's events, else the site
 * default; and when the upload job cannot be stored the request fails with nothing stored.
 * Fixtures are committed, because the service reads them on its own connections.
 */
import { createHash, randomUUID } from "node:crypto";
import { getRootPool, unique } from "./helpers/db";
import { flushDenials, readBody, startTestService, TestService, tokenFor } from "./helpers/http";
import {
  createTrackedSite, DAY, HOUR, newUser, ingest, LANDING, MINUTE, pageview, recordCall, recordConsent, revenueCounts, revenueSnapshot,
  SessionRow, sessionOf, TrackedSite, uploadJob, visitorId, CallRow,
} from "./helpers/revenue";

const INTERNALS = /\n\s+at |stack|\bselect\b|\binsert\b|\bsql\b|app_(private|public|hidden)|pg_|Error:|constraint|graphile/i;
const SQLSTATE = /\b(OM[A-Z0-9]{3}|2[23][0-9]{3}|P0001|XX[0-9]{3})\b/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

interface Reply {
  status: number;
  headers: Headers;
  text: string;
  body: any;
}

let service: TestService;
let ownerId: string;
let editorId: string;
let viewerId: string;
let strangerId: string;
/** The workhorse: consent required (denied by default), currency TRY. */
let site: TrackedSite;
/** Consent implied (granted by default). */
let impliedSite: TrackedSite;
let otherTenant: TrackedSite;
let editorKey: string;
let editorKeyId: string;
let adminKey: string;
let viewerKey: string;
let viewerKeyId: string;
let impliedKey: string;
let otherKey: string;

const tag = randomUUID().slice(0, 8);
const GCLID = `G_${tag}`;
const now = Date.now();
// Visitor A: a Google Ads click 3 days ago (S1), then a direct visit 2 days ago (S3 assisted by it).
const va = `va_${tag}`;
const adClick = pageview(va, now - 3 * DAY, `${LANDING}?gclid=${GCLID}`);
const assisted = pageview(va, now - 2 * DAY, LANDING);
// Visitor B, organic only: direct 3 days ago, search 2 days ago, social an hour ago.
const vb = `vb_${tag}`;
const direct = pageview(vb, now - 3 * DAY, LANDING);
const search = pageview(vb, now - 2 * DAY, LANDING, { referrer: "https://www.google.com/" });
const social = pageview(vb, now - HOUR, LANDING, { referrer: "https://www.facebook.com/" });
// A Microsoft Ads click (S2): not Google's, so no click id to upload.
const vm = `vm_${tag}`;
const bing = pageview(vm, now - DAY, `${LANDING}?msclkid=MS_${tag}`);
// Consent: one visitor whose events granted ad signals, one who later chose otherwise on the banner.
const vEvents = `ve_${tag}`;
const byEvents = pageview(vEvents, now - DAY, LANDING, { consent: { analytics_storage: "granted", ad_user_data: "granted", ad_personalization: "granted" } });
const vBanner = `vr_${tag}`;
const byBanner = pageview(vBanner, now - DAY, LANDING, { consent: { analytics_storage: "granted", ad_user_data: "granted", ad_personalization: "granted" } });
// Another tenant's visitor with an ad click.
const vc = `vc_${tag}`;
const theirClick = pageview(vc, now - DAY, `${LANDING}?gclid=THEIRS_${tag}`);

let s: Record<string, SessionRow>;
let linkedCall: CallRow;
let theirCall: CallRow;

/* ------------------------------------------------------------------ helpers */

interface SendOptions {
  auth?: string | null;
  contentType?: string;
}

/** POSTs a sale (an object is sent as JSON) with the editor key unless told otherwise. */
async function post(body: unknown, { auth = editorKey, contentType = "application/json" }: SendOptions = {}): Promise<Reply> {
  const headers: Record<string, string> = { "content-type": contentType };
  if (auth !== null) headers.authorization = auth.startsWith("Basic ") ? auth : `Bearer ${auth}`;
  const response = await fetch(`${service.url}/api/sales/confirm`, {
    method: "POST", headers, body: typeof body === "string" ? body : JSON.stringify(body),
  });
  const { text, body: parsed } = await readBody(response);
  return { status: response.status, headers: response.headers, text, body: parsed };
}

/** A valid sale: an hour ago, 1250.00 TRY, a fresh external id; overrides replace or add fields (undefined removes). */
function sale(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  const body: Record<string, unknown> = {
    external_id: unique("CRM"), amount: "1250.00", currency: "TRY", occurred_at: new Date(Date.now() - HOUR).toISOString(), ...overrides,
  };
  for (const [key, value] of Object.entries(body)) if (value === undefined) delete body[key];
  return body;
}

/** The order id Google gets: the external id when every rail takes it (printable ASCII, no spaces, ≤ 64), else a stable digest. */
function googleOrderId(siteId: string, externalId: string): string {
  if (/^[!-~]{1,64}$/.test(externalId)) return externalId;
  return `om-${createHash("sha256").update(`${siteId}/${externalId}`, "utf8").digest("hex").slice(0, 40)}`;
}

/** A refusal: status, exactly {error, message}, nothing internal in it. */
function expectRefused(response: Reply, status: number, code: string): void {
  expect({ status: response.status, error: response.body?.error }).toEqual({ status, error: code });
  expect(response.headers.get("content-type")).toMatch(/^application\/json/);
  expect(Object.keys(response.body).sort()).toEqual(["error", "message"]);
  expect(response.body.message.length).toBeGreaterThan(0);
  expect(response.text).not.toMatch(INTERNALS);
  expect(response.text).not.toMatch(SQLSTATE);
}

async function salesWithExternalId(externalId: unknown): Promise<number> {
  // PostgreSQL text cannot hold U+0000; a sale's id could only have been stored without it.
  const { rows } = await getRootPool().query("select count(*)::int as n from app_public.sales where external_id = $1",
    [String(externalId).replace(/\u0000/g, "")]);
  return rows[0].n;
}

/** Sends a request that must be refused and checks that nothing of the site changed, and no sale with its external id exists. */
async function expectNothingWritten(target: TrackedSite, body: unknown, send: () => Promise<Reply>): Promise<Reply> {
  const before = await revenueSnapshot(getRootPool(), target.id);
  const response = await send();
  expect(await revenueSnapshot(getRootPool(), target.id)).toEqual(before);
  if (body && typeof body === "object" && "external_id" in body) expect(await salesWithExternalId((body as any).external_id)).toBe(0);
  return response;
}

/** Sends a valid sale and expects 201 with the documented shape, matching what is stored. */
async function expectCreated(body: Record<string, unknown>, options: SendOptions = {}, target: TrackedSite = site): Promise<{ sale: any; conversion: any }> {
  const before = await revenueCounts(getRootPool(), target.id);
  const response = await post(body, options);
  expect({ status: response.status, body: response.status === 201 ? "…" : response.body }).toEqual({ status: 201, body: "…" });
  expect(Object.keys(response.body).sort()).toEqual(["conversion", "sale"]);
  const { sale: created, conversion } = response.body;
  expect(created).toMatchObject({ site_id: target.id, external_id: body.external_id, status: "confirmed", id: expect.stringMatching(UUID) });
  expect(conversion).toMatchObject({
    sale_id: created.id, kind: "conversion", status: "pending", order_id: googleOrderId(target.id, body.external_id as string), provider: "google", attempts: 0,
  });
  expect(conversion).not.toHaveProperty("locked_by");
  expect(conversion).not.toHaveProperty("locked_until");
  const after = await revenueCounts(getRootPool(), target.id);
  expect({ sales: after.sales - before.sales, queue: after.queue - before.queue, jobs: after.jobs }).toEqual({ sales: 1, queue: 1, jobs: 1 });
  const { rows: [stored] } = await getRootPool().query("select to_jsonb(s) as s from app_public.sales s where s.id = $1", [created.id]);
  expect(created).toEqual(stored.s);
  return response.body;
}

/* ------------------------------------------------------------------ fixtures */

beforeAll(async () => {
  const pool = getRootPool();
  ownerId = await newUser(pool);
  editorId = await newUser(pool);
  viewerId = await newUser(pool);
  strangerId = await newUser(pool);
  const otherOwner = await newUser(pool);
  site = await createTrackedSite(pool, ownerId, { consentMode: "required", currency: "TRY" });
  impliedSite = await createTrackedSite(pool, ownerId, { consentMode: "implied", currency: "EUR" });
  otherTenant = await createTrackedSite(pool, otherOwner);
  await pool.query("insert into app_public.site_members (site_id, user_id, role) values ($1, $2, 'editor'), ($1, $3, 'viewer')", [site.id, editorId, viewerId]);
  const key = async (siteId: string, role: string) =>
    (await pool.query("select api_key_id, key from app_private.issue_api_key($1, $2, 'test', null)", [siteId, role])).rows[0];
  ({ key: editorKey, api_key_id: editorKeyId } = await key(site.id, "editor"));
  ({ key: adminKey } = await key(site.id, "admin"));
  ({ key: viewerKey, api_key_id: viewerKeyId } = await key(site.id, "viewer"));
  ({ key: impliedKey } = await key(impliedSite.id, "editor"));
  ({ key: otherKey } = await key(otherTenant.id, "editor"));

  await ingest(pool, site, [adClick, assisted, direct, search, social, bing, byEvents, byBanner]);
  await recordConsent(pool, site, vBanner, { analytics_storage: "granted", ad_user_data: "denied", ad_personalization: "granted" });
  await ingest(pool, otherTenant, [theirClick]);
  s = {
    adClick: await sessionOf(pool, site, adClick), assisted: await sessionOf(pool, site, assisted), direct: await sessionOf(pool, site, direct),
    search: await sessionOf(pool, site, search), social: await sessionOf(pool, site, social), bing: await sessionOf(pool, site, bing),
    byEvents: await sessionOf(pool, site, byEvents), byBanner: await sessionOf(pool, site, byBanner), theirs: await sessionOf(pool, otherTenant, theirClick),
  };
  // The fixtures are what the tests assume, or the tests below would prove nothing.
  expect(s.adClick).toMatchObject({ visitor_key: va, attribution_tier: "S1", click_id: GCLID, click_id_type: "gclid" });
  expect(s.assisted).toMatchObject({ attribution_tier: "S3", click_id: null, assisting_click_id: GCLID, assisting_click_id_type: "gclid" });
  expect(s.search).toMatchObject({ visitor_key: vb, attribution_source: "organic:search" });
  expect(s.social).toMatchObject({ attribution_source: "organic:social" });
  expect(s.bing).toMatchObject({ attribution_tier: "S2", click_id: `MS_${tag}`, click_id_type: "msclkid" });
  expect(s.theirs).toMatchObject({ attribution_tier: "S1", click_id: `THEIRS_${tag}` });
  linkedCall = await recordCall(pool, site.id, { session_id: s.adClick.id });
  expect(linkedCall).toMatchObject({ session_id: s.adClick.id, attribution_tier: "S1", click_id: GCLID });
  theirCall = await recordCall(pool, otherTenant.id);
  service = await startTestService();
});

afterAll(async () => {
  await service?.stop();
  // Leave no pending conversions or upload jobs behind for suites that run later on this database.
  for (const target of [site, impliedSite, otherTenant]) {
    if (!target) continue;
    await getRootPool().query("select graphile_worker.remove_job('upload_conversions:google:' || $1)", [target.id]);
    await getRootPool().query("delete from app_public.sites where id = $1", [target.id]);
  }
});

/* ------------------------------------------------------------------ created */

describe("a confirmed sale", () => {
  test("is 201 with the sale and its pending conversion, exactly as stored, and the site's upload job", async () => {
    // An hour ago, written as the CRM in Istanbul would (+03:00).
    const at = new Date(Date.now() - HOUR);
    const istanbul = new Date(at.getTime() + 3 * HOUR).toISOString().replace("Z", "+03:00");
    const body = sale({ amount: "1250.00", currency: "TRY", occurred_at: istanbul });
    const { sale: created, conversion } = await expectCreated(body);
    expect(created).toMatchObject({
      amount: 1250, currency: "TRY", session_id: null, call_id: null, visitor_id: null, gclid: null, attribution_tier: null,
      attribution_source: null, click_id: null, click_id_type: null, created_by_api_key_id: editorKeyId, created_by_user_id: null,
      conversation_id: null,
    });
    expect(new Date(created.occurred_at).getTime()).toBe(at.getTime());
    expect(conversion).toMatchObject({ value: 1250, currency: "TRY", click_id: null, click_id_type: null });
    expect(new Date(conversion.conversion_at).getTime()).toBe(at.getTime());
    expect(await uploadJob(getRootPool(), site.id)).toMatchObject({ task_identifier: "upload_conversions", payload: { site_id: site.id, provider: "google" } });
  });

  test("an external_id Google would not take (spaces, over 64 characters) is sent as a stable om-<SHA-256> order id", async () => {
    for (const externalId of [`CRM ${tag} with spaces`, `CRM-${"9".repeat(70)}-${tag}`]) {
      const { sale: created, conversion } = await expectCreated(sale({ external_id: externalId }));
      expect(created.external_id).toBe(externalId);
      expect(conversion.order_id).toMatch(/^om-[0-9a-f]{40}$/);
      expect(conversion.order_id).toBe(googleOrderId(site.id, externalId));
    }
    // A plain one goes as it is.
    const plain = await expectCreated(sale({ external_id: `CRM-${tag}-plain` }));
    expect(plain.conversion.order_id).toBe(`CRM-${tag}-plain`);
  });

  test("with a dashboard token of an editor and the site_id in the body; and with an admin key", async () => {
    const token = await tokenFor(editorId);
    const byUser = await expectCreated(sale({ site_id: site.id }), { auth: token });
    expect(byUser.sale).toMatchObject({ created_by_user_id: editorId, created_by_api_key_id: null });
    await expectCreated(sale(), { auth: adminKey });
    const byOwner = await expectCreated(sale({ site_id: site.id }), { auth: await tokenFor(ownerId) });
    expect(byOwner.sale.created_by_user_id).toBe(ownerId);
    // A key may repeat its own site's id.
    await expectCreated(sale({ site_id: site.id.toUpperCase() }));
  });

  test.each([
    ["a lower-case currency (usd)", { currency: "usd" }, { currency: "USD", amount: 1250 }],
    ["the amount as a JSON number", { amount: 1250.5 }, { amount: 1250.5 }],
    ["a zero amount", { amount: "0" }, { amount: 0 }],
    ["a whole JPY amount", { amount: "1000", currency: "JPY" }, { amount: 1000, currency: "JPY" }],
    ["three decimals of KWD", { amount: "1.250", currency: "KWD" }, { amount: 1.25, currency: "KWD" }],
    ["four decimals in a two-decimal currency when they are zeros", { amount: "10.5000" }, { amount: 10.5 }],
    ["an external_id of 128 characters with inner spaces", { external_id: `CRM ${"x".repeat(124)}` }, { external_id: `CRM ${"x".repeat(124)}` }],
  ])("accepts %s", async (_what, overrides, expected) => {
    const { sale: created } = await expectCreated(sale(overrides));
    expect(created).toMatchObject(expected);
  });
});

/* ------------------------------------------------------------------ attribution */

describe("attribution", () => {
  test("from an S1 session: its click id", async () => {
    const { sale: created, conversion } = await expectCreated(sale({ session_id: s.adClick.id }));
    expect(created).toMatchObject({ session_id: s.adClick.id, attribution_tier: "S1", attribution_source: "google_ads", click_id: GCLID, click_id_type: "gclid" });
    expect(conversion).toMatchObject({ click_id: GCLID, click_id_type: "gclid" });
  });

  test("from an S3 session: the assisting click id", async () => {
    const { sale: created, conversion } = await expectCreated(sale({ session_id: s.assisted.id }));
    expect(created).toMatchObject({ session_id: s.assisted.id, attribution_tier: "S3", attribution_source: "ads_assisted", click_id: GCLID, click_id_type: "gclid" });
    expect(conversion).toMatchObject({ click_id: GCLID, click_id_type: "gclid" });
  });

  test("from a call, named by the provider's call id or by ours: the call, its session and click id", async () => {
    for (const ref of [linkedCall.call_id, linkedCall.id, linkedCall.id.toUpperCase()]) {
      const { sale: created, conversion } = await expectCreated(sale({ call_id: ref }));
      expect(created).toMatchObject({ call_id: linkedCall.id, session_id: s.adClick.id, attribution_tier: "S1", click_id: GCLID });
      expect(conversion.click_id).toBe(GCLID);
    }
  });

  test("from a visitor id: the visitor's latest session that started before the sale", async () => {
    const latest = await expectCreated(sale({ visitor_id: vb, occurred_at: new Date(Date.now() - MINUTE).toISOString() }));
    expect(latest.sale).toMatchObject({ visitor_id: vb, session_id: s.social.id, attribution_tier: "S5", attribution_source: "organic:social", click_id: null });
    const dayAgo = await expectCreated(sale({ visitor_id: vb, occurred_at: new Date(now - DAY).toISOString() }));
    expect(dayAgo.sale).toMatchObject({ session_id: s.search.id, attribution_source: "organic:search" });
    // Before the visitor's first session there is nothing to attribute to.
    const early = await expectCreated(sale({ visitor_id: vb, occurred_at: new Date(now - 4 * DAY).toISOString() }));
    expect(early.sale).toMatchObject({ visitor_id: vb, session_id: null, attribution_tier: null, click_id: null });
    // Visitor A's latest is the assisted session: its assisting click id is uploaded.
    const assistedSale = await expectCreated(sale({ visitor_id: va }));
    expect(assistedSale.sale).toMatchObject({ session_id: s.assisted.id, attribution_tier: "S3", click_id: GCLID });
    expect(assistedSale.conversion.click_id).toBe(GCLID);
  });

  test("from a call that only carried a gclid: the call's S1 click id, no session", async () => {
    const gclid = `GC_${tag}`;
    const call = await recordCall(getRootPool(), site.id, { gclid });
    expect(call).toMatchObject({ session_id: null, attribution_tier: "S1", click_id: gclid });
    const { sale: created, conversion } = await expectCreated(sale({ call_id: call.call_id }));
    expect(created).toMatchObject({ call_id: call.id, session_id: null, attribution_tier: "S1", attribution_source: "google_ads", click_id: gclid });
    expect(conversion).toMatchObject({ click_id: gclid, click_id_type: "gclid" });
  });

  test("a visitor's session counts for 90 days before the sale, not longer", async () => {
    // Two visitors whose only sessions (ad clicks) are moved 89 and 91 days back.
    const pool = getRootPool();
    const moved: Record<number, string> = {};
    for (const days of [89, 91]) {
      const visitor = `vd${days}_${tag}`;
      const event = pageview(visitor, Date.now() - DAY, `${LANDING}?gclid=GD${days}_${tag}`);
      await ingest(pool, site, [event]);
      const session = await sessionOf(pool, site, event);
      await pool.query(
        `update app_public.sessions set started_at = now() - make_interval(days => $3), ended_at = now() - make_interval(days => $3)
          where site_id = $1 and id = $2`, [site.id, session.id, days]);
      moved[days] = session.id;
    }
    const within = await expectCreated(sale({ visitor_id: `vd89_${tag}`, occurred_at: new Date(Date.now() - MINUTE).toISOString() }));
    expect(within.sale).toMatchObject({ session_id: moved[89], attribution_tier: "S1", click_id: `GD89_${tag}` });
    const beyond = await expectCreated(sale({ visitor_id: `vd91_${tag}`, occurred_at: new Date(Date.now() - MINUTE).toISOString() }));
    expect(beyond.sale).toMatchObject({ session_id: null, attribution_tier: null, click_id: null });
    expect(beyond.conversion.click_id).toBeNull();
  });

  test("from a gclid alone: S1 google_ads with that click id and no session", async () => {
    const gclid = `GX_${tag}`;
    const { sale: created, conversion } = await expectCreated(sale({ gclid }));
    expect(created).toMatchObject({ gclid, session_id: null, attribution_tier: "S1", attribution_source: "google_ads", click_id: gclid, click_id_type: "gclid" });
    expect(conversion).toMatchObject({ click_id: gclid, click_id_type: "gclid" });
  });

  test("a Microsoft Ads session keeps its tier, but no click id goes to Google", async () => {
    const { sale: created, conversion } = await expectCreated(sale({ session_id: s.bing.id }));
    expect(created).toMatchObject({ session_id: s.bing.id, attribution_tier: "S2", click_id: null, click_id_type: null });
    expect(conversion).toMatchObject({ click_id: null, click_id_type: null });
  });

  test("with nothing known: no tier, no click id, and the conversion is still queued", async () => {
    const { sale: created, conversion } = await expectCreated(sale({ visitor_id: `nobody_${tag}` }));
    expect(created).toMatchObject({ session_id: null, attribution_tier: null, attribution_source: null, click_id: null });
    expect(conversion).toMatchObject({ click_id: null, status: "pending" });
  });

  test("another tenant's visitor or click does not attribute this site's sale", async () => {
    const { sale: created } = await expectCreated(sale({ visitor_id: vc }));
    expect(created).toMatchObject({ session_id: null, attribution_tier: null, click_id: null });
  });
});

/* ------------------------------------------------------------------ personal identifiers */

describe("email and phone", () => {
  const sha256 = (text: string) => createHash("sha256").update(text, "utf8").digest("hex");

  test.each([
    ["a Gmail address and a number with a 00 prefix and punctuation", " Jane.Doe+CRM@GoogleMail.com ", "janedoe+crm@googlemail.com", "0090 (532) 111-22.33", "+905321112233"],
    ["another domain keeps its dots", "First.Last@Example.COM", "first.last@example.com", "+90 532 444 55 66", "+905324445566"],
  ])("%s: stored only as SHA-256 of the normalised forms, and in clear nowhere", async (_what, email, normalisedEmail, phone, normalisedPhone) => {
    const body = sale({ email, phone, gclid: `GP_${tag}` });
    const { sale: created, conversion } = await expectCreated(body);
    const { rows } = await getRootPool().query("select * from app_private.sale_identifiers where site_id = $1 and sale_id = $2", [site.id, created.id]);
    expect(rows).toEqual([{ site_id: site.id, sale_id: created.id, email_sha256: sha256(normalisedEmail), phone_sha256: sha256(normalisedPhone) }]);

    const db = getRootPool();
    const places = {
      response: JSON.stringify({ created, conversion }),
      sale: JSON.stringify((await db.query("select to_jsonb(s) as r from app_public.sales s where id = $1", [created.id])).rows),
      queue: JSON.stringify((await db.query("select to_jsonb(q) as r from app_public.offline_conversion_queue q where sale_id = $1", [created.id])).rows),
      audit: JSON.stringify((await db.query("select to_jsonb(a) as r from app_public.audit_log a where site_id = $1", [site.id])).rows),
      job: JSON.stringify(await uploadJob(db, site.id)),
    };
    const secrets = [email.trim(), email.trim().toLowerCase(), normalisedEmail, email.trim().split("@")[0], phone, normalisedPhone, normalisedPhone.slice(3)];
    const found = Object.entries(places).flatMap(([where, text]) =>
      secrets.filter((secret) => text.toLowerCase().includes(secret.toLowerCase())).map((secret) => `${secret} in ${where}`));
    expect(found).toEqual([]);
  });

  test("only an email, or only a phone: the other hash is null; neither: no identifier row", async () => {
    const onlyEmail = await expectCreated(sale({ email: "solo@example.com" }));
    const onlyPhone = await expectCreated(sale({ phone: "+4915112345678" }));
    const neither = await expectCreated(sale());
    const { rows } = await getRootPool().query(
      "select sale_id, email_sha256, phone_sha256 from app_private.sale_identifiers where sale_id = any($1)",
      [[onlyEmail.sale.id, onlyPhone.sale.id, neither.sale.id]]);
    expect(rows.sort((a, b) => (a.email_sha256 ? -1 : 1) - (b.email_sha256 ? -1 : 1))).toEqual([
      { sale_id: onlyEmail.sale.id, email_sha256: sha256("solo@example.com"), phone_sha256: null },
      { sale_id: onlyPhone.sale.id, email_sha256: null, phone_sha256: sha256("+4915112345678") },
    ]);
  });
});

/* ------------------------------------------------------------------ repeated */

describe("a repeated external_id", () => {
  test("is 409 sale_exists, and the first sale, its identifiers, conversion and job are unchanged", async () => {
    const externalId = unique("CRM-again");
    const first = await expectCreated(sale({ external_id: externalId, amount: "100.00", email: "first@example.com" }));
    const before = await revenueSnapshot(getRootPool(), site.id);
    const repeat = sale({ external_id: externalId, amount: "999.99", currency: "EUR", email: "second@example.com", gclid: `GR_${tag}`, session_id: s.adClick.id });
    const response = await post(repeat);
    expectRefused(response, 409, "sale_exists");
    expect(await revenueSnapshot(getRootPool(), site.id)).toEqual(before);
    const { rows } = await getRootPool().query("select id, amount, currency, click_id from app_public.sales where site_id = $1 and external_id = $2", [site.id, externalId]);
    expect(rows).toEqual([{ id: first.sale.id, amount: "100.00", currency: "TRY", click_id: null }]);
  });

  test("the same sale sent five times at once: one 201, four 409 sale_exists, one sale, one conversion", async () => {
    const body = sale({ email: "race@example.com" });
    const before = await revenueCounts(getRootPool(), site.id);
    const responses = await Promise.all([1, 2, 3, 4, 5].map(() => post(body)));
    expect(responses.map((r) => r.status).sort()).toEqual([201, 409, 409, 409, 409]);
    for (const response of responses.filter((r) => r.status === 409)) expectRefused(response, 409, "sale_exists");
    const after = await revenueCounts(getRootPool(), site.id);
    expect({ sales: after.sales - before.sales, identifiers: after.identifiers - before.identifiers, queue: after.queue - before.queue })
      .toEqual({ sales: 1, identifiers: 1, queue: 1 });
    expect(await salesWithExternalId(body.external_id)).toBe(1);
  });

  test("the same external_id at another site is another sale", async () => {
    const externalId = unique("CRM-shared");
    await expectCreated(sale({ external_id: externalId }));
    await expectCreated(sale({ external_id: externalId, currency: "EUR" }), { auth: impliedKey }, impliedSite);
    expect(await salesWithExternalId(externalId)).toBe(2);
  });
});

/* ------------------------------------------------------------------ refused */

describe("refused requests write nothing", () => {
  test("malformed JSON is 400 invalid_json", async () => {
    const body = sale();
    const response = await expectNothingWritten(site, body, () => post(JSON.stringify(body).slice(0, -1)));
    expectRefused(response, 400, "invalid_json");
  });

  test("another content type is 415 unsupported_media_type", async () => {
    const body = sale();
    for (const contentType of ["text/plain", "application/x-www-form-urlencoded"]) {
      const response = await expectNothingWritten(site, body, () => post(JSON.stringify(body), { contentType }));
      expectRefused(response, 415, "unsupported_media_type");
    }
  });

  test("a body over 16 KiB is 413 payload_too_large", async () => {
    const body = sale({ external_id: "x".repeat(17 * 1024) });
    const response = await expectNothingWritten(site, null, () => post(body));
    expectRefused(response, 413, "payload_too_large");
  });

  test.each([
    ["no Authorization header", "unauthenticated", () => null],
    ["a malformed API key", "invalid_api_key", () => "om_short"],
    ["an unknown API key", "invalid_api_key", () => `om_${"A".repeat(32)}`],
    ["a garbage token", "invalid_token", () => "not.a.token"],
    ["Basic credentials", "invalid_authorization", () => `Basic ${Buffer.from("crm:secret").toString("base64")}`],
  ])("%s is 401 %s", async (_what, code, auth) => {
    const body = sale();
    const response = await expectNothingWritten(site, body, () => post(body, { auth: auth() }));
    expectRefused(response, 401, code);
  });

  test("a revoked key is 401 invalid_api_key", async () => {
    const { rows: [revoked] } = await getRootPool().query("select api_key_id, key from app_private.issue_api_key($1, 'editor', 'revoked', null)", [site.id]);
    await expectCreated(sale(), { auth: revoked.key }); // control: it worked before
    await getRootPool().query("update app_public.api_keys set revoked_at = now() where id = $1", [revoked.api_key_id]);
    const body = sale();
    expectRefused(await expectNothingWritten(site, body, () => post(body, { auth: revoked.key })), 401, "invalid_api_key");
  });

  test("a viewer key is 403 forbidden, and the denial is audited", async () => {
    const body = sale();
    const response = await expectNothingWritten(site, body, () => post(body, { auth: viewerKey }));
    expectRefused(response, 403, "forbidden");
    await flushDenials();
    const { rows } = await getRootPool().query(
      `select action, target_table, target_id, actor_api_key_id from app_public.audit_log
        where site_id = $1 and action like 'denied:%' and target_id = $2`, [site.id, site.id]);
    expect(rows).toEqual([{ action: "denied:confirm_sale", target_table: "sales", target_id: site.id, actor_api_key_id: viewerKeyId }]);
  });

  test("a dashboard token of a viewer or of a stranger is 403 forbidden", async () => {
    for (const user of [viewerId, strangerId]) {
      const body = sale({ site_id: site.id });
      expectRefused(await expectNothingWritten(site, body, async () => post(body, { auth: await tokenFor(user) })), 403, "forbidden");
    }
  });

  test("another tenant's key cannot write to this site, and its own site stays untouched too", async () => {
    const body = sale({ site_id: site.id });
    const response = await expectNothingWritten(site, body, () => expectNothingWritten(otherTenant, body, () => post(body, { auth: otherKey })));
    expectRefused(response, 400, "invalid_sale");
  });

  const FUTURE = () => new Date(Date.now() + HOUR).toISOString();
  const OVER_A_YEAR = () => new Date(Date.now() - 400 * DAY).toISOString();
  const invalid: [string, Record<string, unknown> | (() => Record<string, unknown>), RegExp][] = [
    ["a JWT without site_id", {}, /site_id/],
    ["an unknown field", { note: "hello" }, /note/],
    ["external_id missing", { external_id: undefined }, /external_id/],
    ["external_id with a line break", { external_id: "CRM\n1" }, /external_id/],
    ["external_id over 128 characters", { external_id: "C".repeat(129) }, /external_id/],
    ["a negative amount", { amount: "-1.00" }, /amount/],
    ["a negative amount as a number", { amount: -5 }, /amount/],
    ["a non-numeric amount", { amount: "abc" }, /amount/],
    ["an amount in exponent form", { amount: "1e3" }, /amount/],
    ["an amount with a comma", { amount: "1.250,00" }, /amount/],
    ["an amount of a trillion", { amount: "1000000000000" }, /amount/],
    ["an amount missing", { amount: undefined }, /amount/],
    ["decimals JPY does not have (10.5 JPY)", { amount: "10.5", currency: "JPY" }, /JPY/],
    ["three decimals of TRY", { amount: "10.005" }, /TRY/],
    ["currency XYZ (not ISO 4217)", { currency: "XYZ" }, /currency/],
    ["currency EURO", { currency: "EURO" }, /currency/],
    ["currency a testing code (XTS)", { currency: "XTS" }, /currency/],
    ["currency missing", { currency: undefined }, /currency/],
    ["currency as a number", { currency: 949 }, /currency/],
    ["occurred_at in the future", () => ({ occurred_at: FUTURE() }), /occurred_at/],
    ["occurred_at over a year ago", () => ({ occurred_at: OVER_A_YEAR() }), /occurred_at/],
    ["occurred_at not ISO-8601", { occurred_at: "23/11/2026 10:00" }, /occurred_at/],
    ["occurred_at month 13 day 40", { occurred_at: "2026-13-40T10:00:00Z" }, /occurred_at/],
    ["occurred_at 30 February", { occurred_at: "2026-02-30T10:00:00Z" }, /occurred_at/],
    ["occurred_at without a zone", () => ({ occurred_at: new Date(Date.now() - HOUR).toISOString().replace("Z", "") }), /occurred_at/],
    ["session_id not a UUID", { session_id: "session-1" }, /session_id/],
    ["visitor_id with spaces", { visitor_id: "visitor one" }, /visitor_id/],
    ["gclid with punctuation", { gclid: "abc!def" }, /gclid/],
    ["an email that is not one", { email: "not-an-email" }, /email/],
    ["an email without a domain dot", { email: "jane@localhost" }, /email/],
    ["a phone without country code", { phone: "0532 111 22 33" }, /phone/],
    ["a phone with letters", { phone: "+90 532 CALL ME" }, /phone/],
    ["consent with a value other than granted or denied", { consent: { ad_user_data: "yes" } }, /consent/],
    ["consent with a signal that is not an ad signal", { consent: { analytics_storage: "granted" } }, /consent/],
    ["consent as a string", { consent: "granted" }, /consent/],
    ["consent as an array", { consent: ["granted"] }, /consent/],
    // Unique, so the id without its NUL cannot match another file's sale (e.g. a committed "CRM-1").
    ["a NUL character in a string", () => ({ external_id: `CRM\u0000-${unique("nul")}` }), /U\+0000/],
    ["a NUL character inside consent", { consent: { ad_user_data: "granted\u0000" } }, /U\+0000/],
    // A lone surrogate (an emoji cut in half): the driver would have stored it as U+FFFD.
    ["a lone surrogate in a string", () => ({ external_id: `CRM-\ud83d-${unique("surrogate")}` }), /well-formed/],
  ];

  test.each(invalid)("%s is 400 invalid_sale naming the field", async (what, overrides, mentions) => {
    const body = sale(typeof overrides === "function" ? overrides() : overrides);
    const auth = what === "a JWT without site_id" ? await tokenFor(editorId) : editorKey;
    const response = await expectNothingWritten(site, body, () => post(body, { auth }));
    expectRefused(response, 400, "invalid_sale");
    expect(response.body.message).toMatch(mentions);
  });

  test("the body an array, null or a string is 400 invalid_sale", async () => {
    for (const raw of ["[]", "null", "\"sale\"", "42"]) {
      expectRefused(await expectNothingWritten(site, null, () => post(raw)), 400, "invalid_sale");
    }
  });

  test.each([
    ["a session of another tenant", 422, "unknown_session", () => ({ session_id: s.theirs.id })],
    ["a session nobody has", 422, "unknown_session", () => ({ session_id: randomUUID() })],
    ["a call of another tenant (their call id)", 422, "unknown_call", () => ({ call_id: theirCall.call_id })],
    ["a call of another tenant (our id of it)", 422, "unknown_call", () => ({ call_id: theirCall.id })],
    ["a call nobody has", 422, "unknown_call", () => ({ call_id: `call_${tag}_none` })],
  ])("%s is %d %s", async (_what, status, code, overrides) => {
    const body = sale(overrides());
    const response = await expectNothingWritten(site, body, () => expectNothingWritten(otherTenant, body, () => post(body)));
    expectRefused(response, status, code);
  });
});

/* ------------------------------------------------------------------ consent */

describe("the conversion's consent signals", () => {
  const signals = (conversion: any) => ({ ad_user_data: conversion.ad_user_data, ad_personalization: conversion.ad_personalization });

  test("with nothing known, the site default: required → denied, implied → granted", async () => {
    expect(signals((await expectCreated(sale())).conversion)).toEqual({ ad_user_data: "denied", ad_personalization: "denied" });
    const implied = await expectCreated(sale({ currency: "EUR" }), { auth: impliedKey }, impliedSite);
    expect(signals(implied.conversion)).toEqual({ ad_user_data: "granted", ad_personalization: "granted" });
  });

  test("from the session's events when the visitor never used the banner", async () => {
    const bySession = await expectCreated(sale({ session_id: s.byEvents.id }));
    expect(signals(bySession.conversion)).toEqual({ ad_user_data: "granted", ad_personalization: "granted" });
    const byVisitor = await expectCreated(sale({ visitor_id: vEvents }));
    expect(byVisitor.sale.session_id).toBe(s.byEvents.id);
    expect(signals(byVisitor.conversion)).toEqual({ ad_user_data: "granted", ad_personalization: "granted" });
  });

  test("the visitor's latest banner choice wins over the session's events", async () => {
    const byVisitor = await expectCreated(sale({ visitor_id: vBanner }));
    expect(signals(byVisitor.conversion)).toEqual({ ad_user_data: "denied", ad_personalization: "granted" });
    // Named by session only, the session's visitor id still finds the banner choice.
    const bySession = await expectCreated(sale({ session_id: s.byBanner.id }));
    expect(signals(bySession.conversion)).toEqual({ ad_user_data: "denied", ad_personalization: "granted" });
  });

  test("the CRM's own record of consent in the body wins over everything", async () => {
    const overBanner = await expectCreated(sale({ visitor_id: vBanner, consent: { ad_user_data: "granted", ad_personalization: "denied" } }));
    expect(signals(overBanner.conversion)).toEqual({ ad_user_data: "granted", ad_personalization: "denied" });
    const overDefault = await expectCreated(sale({ consent: { ad_user_data: "granted", ad_personalization: "granted" } }));
    expect(signals(overDefault.conversion)).toEqual({ ad_user_data: "granted", ad_personalization: "granted" });
    const overImplied = await expectCreated(sale({ currency: "EUR", consent: { ad_user_data: "denied", ad_personalization: "denied" } }), { auth: impliedKey }, impliedSite);
    expect(signals(overImplied.conversion)).toEqual({ ad_user_data: "denied", ad_personalization: "denied" });
  });
});

/*
 * A CRM that records only one of the two signals (or none: {}) must not erase what is known
 * about the other: the missing signal follows the same chain as without a body consent (banner
 * choice, session, site default), never "unspecified", which would overstate consent where the
 * visitor had denied it or the site requires it.
 */
describe("consent given in part by the CRM", () => {
  const signals = (conversion: any) => ({ ad_user_data: conversion.ad_user_data, ad_personalization: conversion.ad_personalization });

  test("the signal the CRM did not send comes from the visitor's banner choice", async () => {
    const { conversion } = await expectCreated(sale({ visitor_id: vBanner, consent: { ad_personalization: "denied" } }));
    expect(signals(conversion)).toEqual({ ad_user_data: "denied", ad_personalization: "denied" });
  });

  test("the signal the CRM did not send takes the site default (required: denied)", async () => {
    const { conversion } = await expectCreated(sale({ consent: { ad_personalization: "granted" } }));
    expect(signals(conversion)).toEqual({ ad_user_data: "denied", ad_personalization: "granted" });
  });

  test("an empty consent object changes nothing", async () => {
    const { conversion } = await expectCreated(sale({ visitor_id: vBanner, consent: {} }));
    expect(signals(conversion)).toEqual({ ad_user_data: "denied", ad_personalization: "granted" });
  });
});

/* ------------------------------------------------------------------ atomicity over HTTP */

describe("when the upload job cannot be stored", () => {
  test("the request is 500 internal and neither sale, identifiers nor conversion are stored", async () => {
    const pool = getRootPool();
    const fn = `test_refuse_upload_job_${tag.replace(/-/g, "_")}`;
    await pool.query(`
      create function public.${fn}() returns trigger language plpgsql as $$
      begin
        if new.payload ->> 'site_id' = '${site.id}' then
          raise exception using errcode = 'XX999', message = 'refused by the test';
        end if;
        return new;
      end $$`);
    try {
      // Without a waiting job the sale has to write one (a waiting, due job is left as it is).
      await pool.query("delete from graphile_worker._private_jobs where key = 'upload_conversions:google:' || $1", [site.id]);
      await pool.query(`create trigger zz_${fn} before insert or update on graphile_worker._private_jobs for each row execute function public.${fn}()`);
      const body = sale({ email: "atomic@example.com", phone: "+905321110000", gclid: `GA_${tag}` });
      const response = await expectNothingWritten(site, body, () => post(body));
      expectRefused(response, 500, "internal");
      expect(response.body.message).toMatch(/nothing was stored/i);
    } finally {
      await pool.query(`drop trigger if exists zz_${fn} on graphile_worker._private_jobs`);
      await pool.query(`drop function if exists public.${fn}()`);
    }
    // Control: the same kind of sale goes through once the job can be stored.
    await expectCreated(sale({ email: "atomic@example.com" }));
  });
});
