/*
 * POST /api/call-event/v2 (SPEC §5.2) through the real express app over real HTTP: the HMAC
 * signature over the exact bytes sent (current and previous secret, 300 s window), every
 * refusal with its status and {error, message} code and nothing stored, idempotency by call_id
 * with statuses that only move forward, secret rotation through the real CLI, and the matching
 * of a call to its session (by session id, visitor id or gclid) within one tenant only.
 * Fixtures are committed, because the service reads them on its own connections.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { signCallEvent } from "../src/http/call-events";
import { createUser, getRootPool, unique } from "./helpers/db";
import { readBody, startTestService, TestService } from "./helpers/http";
import { runCli } from "./helpers/cli";

const ORIGIN = "https://shop.example";
const LANDING = "https://shop.example/landing";
const MAX_BODY_BYTES = 64 * 1024;
const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const INTERNALS = /\n\s+at |stack|\bselect\b|\binsert\b|\bsql\b|app_(private|public|hidden)|pg_|OMCAL|Error:/i;

interface Site {
  id: string;
  publicKey: string;
}

interface Reply {
  status: number;
  headers: Headers;
  text: string;
  body: any;
}

let service: TestService;
let ownerId: string;
let site: Site; // the workhorse
let otherTenant: Site; // another owner's site

/* ------------------------------------------------------------------ helpers */

async function createTrackedSite(owner: string): Promise<Site> {
  const { rows } = await getRootPool().query(
    `select id, public_key from app_private.create_site($1, $2, 'shop.example', consent_mode => 'required',
       rate_limit_per_minute => 0, allowed_origins => array['https://shop.example'])`,
    [owner, unique("Calls")],
  );
  return { id: rows[0].id, publicKey: rows[0].public_key };
}

async function secretsOf(siteId: string): Promise<{ current: string; previous: string | null }> {
  const { rows } = await getRootPool().query(
    "select current_secret as current, previous_secret as previous from app_private.call_event_secrets where site_id = $1", [siteId]);
  expect(rows).toHaveLength(1);
  return rows[0];
}

const nowS = () => Math.floor(Date.now() / 1000);
const callId = () => `call_${randomUUID().slice(0, 8)}`;

/** A valid call event for the site, started a minute ago; overrides replace or add fields (undefined removes). */
function callEvent(target: Site, overrides: Record<string, unknown> = {}): Record<string, unknown> {
  const body: Record<string, unknown> = {
    site: target.publicKey,
    call_id: callId(),
    status: "ringing",
    caller: "+905551112233",
    tracking_number: "+902125550000",
    started_at: new Date(Date.now() - MINUTE).toISOString(),
    duration_s: 0,
    ...overrides,
  };
  for (const [key, value] of Object.entries(body)) if (value === undefined) delete body[key];
  return body;
}

interface SendOptions {
  /** The secret to sign with; by default the site's current one (looked up by the caller). */
  secret: string;
  t?: number;
  /** Sign these bytes instead of the ones sent. */
  signed?: string | Buffer;
  /** Send exactly this header (null: none at all) instead of a computed one. */
  header?: string | null;
}

/** POSTs raw bytes (an object is sent as compact JSON) with a signature header. */
async function send(body: unknown, options: SendOptions): Promise<Reply> {
  const raw = typeof body === "string" || Buffer.isBuffer(body) ? body : JSON.stringify(body);
  const headers: Record<string, string> = { "content-type": "application/json" };
  const header = options.header !== undefined ? options.header : signCallEvent(options.secret, options.signed ?? raw, options.t ?? nowS());
  if (header !== null) headers["x-opsmantik-signature"] = header;
  const response = await fetch(`${service.url}/api/call-event/v2`, { method: "POST", headers, body: raw });
  const { text, body: parsed } = await readBody(response);
  return { status: response.status, headers: response.headers, text, body: parsed };
}

async function callCount(siteId: string): Promise<number> {
  const { rows } = await getRootPool().query("select count(*)::int as n from app_public.calls where site_id = $1", [siteId]);
  return rows[0].n;
}

async function callsWithId(id: string): Promise<number> {
  const { rows } = await getRootPool().query("select count(*)::int as n from app_public.calls where call_id = $1", [id]);
  return rows[0].n;
}

async function storedCall(siteId: string, id: string): Promise<Record<string, any> | undefined> {
  const { rows } = await getRootPool().query(
    `select id, call_id, status, caller, tracking_number, started_at, duration_s, visitor_id, session_id, gclid,
            attribution_tier, attribution_source, click_id, click_id_type, received_at
       from app_public.calls where site_id = $1 and call_id = $2`, [siteId, id]);
  expect(rows.length).toBeLessThanOrEqual(1);
  return rows[0];
}

/** A refusal: status, exactly {error, message}, nothing internal in it. */
function expectRefused(response: Reply, status: number, code: string): void {
  expect({ status: response.status, error: response.body?.error }).toEqual({ status, error: code });
  expect(response.headers.get("content-type")).toMatch(/^application\/json/);
  expect(Object.keys(response.body).sort()).toEqual(["error", "message"]);
  expect(typeof response.body.message).toBe("string");
  expect(response.body.message.length).toBeGreaterThan(0);
  expect(response.text).not.toMatch(INTERNALS);
}

/** Sends a request that must be refused; the site's calls are exactly as many as before, and none has the body's call_id. */
async function expectNothingStored(target: Site, body: Record<string, unknown> | null, sendIt: () => Promise<Reply>): Promise<Reply> {
  const before = await callCount(target.id);
  const response = await sendIt();
  expect(await callCount(target.id)).toBe(before);
  if (body && typeof body.call_id === "string") expect(await callsWithId(body.call_id)).toBe(0);
  return response;
}

/** Sends a valid, correctly signed event and expects it stored: 200, the documented shape, one row. */
async function expectAccepted(target: Site, body: Record<string, unknown>, secret: string): Promise<Record<string, any>> {
  const response = await send(body, { secret });
  expect(response.status).toBe(200);
  expect(Object.keys(response.body).sort()).toEqual(["attribution_source", "attribution_tier", "call_id", "id", "session_id", "status"]);
  expect(response.body.call_id).toBe(body.call_id);
  const row = await storedCall(target.id, body.call_id as string);
  expect(row).toBeDefined();
  expect(response.body.id).toBe(row!.id);
  return response.body;
}


function onlyJson(stdout: string): Record<string, any> {
  const lines = stdout.trim().split("\n");
  expect(lines).toHaveLength(1);
  return JSON.parse(lines[0]);
}

/* Sessions, through the real front door, as the superuser. */

interface TrackerEvent {
  id: string;
  type: string;
  ts: string;
  visitor_id: string;
  url: string;
  referrer?: string;
  consent: Record<string, string>;
}

function pageview(visitor: string, at: number, url: string, referrer?: string): TrackerEvent {
  return {
    id: randomUUID(), type: "pageview", ts: new Date(at).toISOString(), visitor_id: visitor, url,
    ...(referrer ? { referrer } : {}), consent: { analytics_storage: "granted" },
  };
}

async function ingest(target: Site, events: TrackerEvent[]): Promise<void> {
  const { rows } = await getRootPool().query(
    "select app_private.ingest_events($1, $2::jsonb, 'https://shop.example', '10.0.0.1', 'Mozilla/5.0', '{}') as r",
    [target.publicKey, JSON.stringify(events)]);
  expect(rows[0].r).toEqual({ accepted: events.length, duplicates: 0, rejected: [] });
}

interface SessionRow {
  id: string;
  visitor_key: string;
  attribution_tier: string;
  attribution_source: string;
  click_id: string | null;
  click_id_type: string | null;
  assisting_click_id: string | null;
  assisting_click_id_type: string | null;
}

/** The session an event ended up in. */
async function sessionOf(target: Site, event: TrackerEvent): Promise<SessionRow> {
  const { rows } = await getRootPool().query<SessionRow>(
    `select s.id, s.visitor_key, s.attribution_tier, s.attribution_source, s.click_id, s.click_id_type,
            s.assisting_click_id, s.assisting_click_id_type
       from app_public.events e join app_public.sessions s on s.site_id = e.site_id and s.id = e.session_id
      where e.site_id = $1 and e.id = $2`, [target.id, event.id]);
  expect(rows).toHaveLength(1);
  return rows[0];
}

/* ------------------------------------------------------------------ fixtures */

beforeAll(async () => {
  const client = await getRootPool().connect();
  let otherOwner: string;
  try {
    ownerId = await createUser(client);
    otherOwner = await createUser(client);
  } finally {
    client.release();
  }
  site = await createTrackedSite(ownerId);
  otherTenant = await createTrackedSite(otherOwner);
  service = await startTestService();
});

afterAll(async () => {
  await service?.stop();
});

/* ------------------------------------------------------------------ signature */

describe("signature", () => {
  let secret: string;
  beforeAll(async () => {
    secret = (await secretsOf(site.id)).current;
  });

  test("a valid signature with the current secret is 200 with the call, and the call is stored as sent", async () => {
    const before = await callCount(site.id);
    const body = callEvent(site, { status: "answered", duration_s: 17 });
    const response = await send(body, { secret });
    expect(response.status).toBe(200);
    expect(response.body).toEqual({
      call_id: body.call_id, id: expect.stringMatching(UUID), status: "answered",
      session_id: null, attribution_tier: null, attribution_source: null,
    });
    expect(await callCount(site.id)).toBe(before + 1);
    expect(await storedCall(site.id, body.call_id as string)).toMatchObject({
      id: response.body.id, status: "answered", caller: "+905551112233", tracking_number: "+902125550000",
      started_at: new Date(body.started_at as string), duration_s: 17, session_id: null, attribution_tier: null,
    });
  });

  test("a missing header is 401 invalid_signature and stores nothing", async () => {
    const body = callEvent(site);
    const response = await expectNothingStored(site, body, () => send(body, { secret, header: null }));
    expectRefused(response, 401, "invalid_signature");
  });

  // Every garbled header is built around the correct MAC for this body and time, so only its form is wrong.
  test.each([
    ["no t", (t: number, mac: string) => `v1=${mac}`],
    ["no v1", (t: number) => `t=${t}`],
    ["t not a number", (_t: number, mac: string) => `t=soon,v1=${mac}`],
    ["v1 not hex", (t: number, mac: string) => `t=${t},v1=${"zz"}${mac.slice(2)}`],
    ["v1 too short", (t: number, mac: string) => `t=${t},v1=${mac.slice(0, 62)}`],
    ["v1 too long", (t: number, mac: string) => `t=${t},v1=${mac}00`],
    ["v1 empty", (t: number) => `t=${t},v1=`],
    ["plain garbage", () => "garbage"],
  ])("a garbled header (%s) is 401 invalid_signature and stores nothing", async (_what, build) => {
    const body = callEvent(site);
    const t = nowS();
    const mac = signCallEvent(secret, JSON.stringify(body), t).split("v1=")[1];
    expect(mac).toMatch(/^[0-9a-f]{64}$/);
    const response = await expectNothingStored(site, body, () => send(body, { secret, header: build(t, mac) }));
    expectRefused(response, 401, "invalid_signature");
  });

  test("a wrong secret (a random one, or another tenant's) is 401 invalid_signature and stores nothing", async () => {
    const body = callEvent(site);
    const random = `whsec_${randomBytes(32).toString("hex")}`;
    expectRefused(await expectNothingStored(site, body, () => send(body, { secret: random })), 401, "invalid_signature");
    const theirs = (await secretsOf(otherTenant.id)).current;
    expect(theirs).not.toBe(secret);
    expectRefused(await expectNothingStored(site, body, () => send(body, { secret: theirs })), 401, "invalid_signature");
    expect(await callCount(otherTenant.id)).toBe(0);
  });

  test.each([
    ["301 s old", -301],
    ["310 s ahead", 310],
    ["a day old", -86_400],
  ])("a correctly signed request with t %s is 401 stale_signature and stores nothing", async (_what, offset) => {
    const body = callEvent(site);
    // A t ahead of now shrinks towards the window while the request is in flight, so "ahead" keeps
    // a 10 s margin for a loaded machine (301 s flaked twice in CI); "old" can only grow older.
    const response = await expectNothingStored(site, body, () => send(body, { secret, t: nowS() + offset }));
    expectRefused(response, 401, "stale_signature");
  });

  test("t 290 s old or ahead is still inside the window (the control for the stale cases)", async () => {
    for (const offset of [-290, 290]) {
      const body = callEvent(site);
      const response = await send(body, { secret, t: nowS() + offset });
      expect(response.status).toBe(200);
      expect(await callsWithId(body.call_id as string)).toBe(1);
    }
  });

  test("a body changed by one byte after signing is 401 invalid_signature and stores nothing", async () => {
    const body = callEvent(site, { status: "answered", duration_s: 15 });
    const signed = JSON.stringify(body);
    const sent = signed.replace('"duration_s":15', '"duration_s":16');
    expect(Buffer.byteLength(sent)).toBe(Buffer.byteLength(signed));
    const differing = [...Buffer.from(sent)].filter((byte, i) => byte !== Buffer.from(signed)[i]);
    expect(differing).toHaveLength(1);
    const response = await expectNothingStored(site, body, () => send(sent, { secret, signed }));
    expectRefused(response, 401, "invalid_signature");
  });

  test("a signature over re-serialised JSON (other whitespace) is 401: the MAC covers the raw bytes", async () => {
    const body = callEvent(site);
    const sent = JSON.stringify(body, null, 2);
    const response = await expectNothingStored(site, body, () => send(sent, { secret, signed: JSON.stringify(body) }));
    expectRefused(response, 401, "invalid_signature");
    // Control: the same pretty-printed bytes, signed as sent, are accepted.
    const before = await callCount(site.id);
    const accepted = await send(sent, { secret });
    expect(accepted.status).toBe(200);
    expect(await callCount(site.id)).toBe(before + 1);
  });

  test("a replay of the same valid request is 200 again with the same call, and changes nothing", async () => {
    const body = callEvent(site, { status: "answered", duration_s: 40 });
    const raw = JSON.stringify(body);
    const header = signCallEvent(secret, raw, nowS());
    const before = await callCount(site.id);
    const first = await send(raw, { secret, header });
    expect(first.status).toBe(200);
    const stored = await storedCall(site.id, body.call_id as string);
    const replay = await send(raw, { secret, header });
    expect(replay.status).toBe(200);
    expect(replay.body).toEqual(first.body);
    expect(await callCount(site.id)).toBe(before + 1);
    expect(await storedCall(site.id, body.call_id as string)).toEqual(stored);
  });
});

/* ------------------------------------------------------------------ idempotency by call_id */

describe("later statuses update the same call", () => {
  test("ringing → missed; an answered call never becomes missed", async () => {
    const secret = (await secretsOf(site.id)).current;
    const startedAt = new Date(Date.now() - 3 * MINUTE).toISOString();
    const unanswered = callId();
    for (const status of ["ringing", "missed"]) {
      await send(callEvent(site, { call_id: unanswered, status, duration_s: 0, started_at: startedAt }), { secret });
    }
    expect(await storedCall(site.id, unanswered)).toMatchObject({ status: "missed" });
    const answered = callId();
    for (const status of ["ringing", "answered", "missed"]) {
      await send(callEvent(site, { call_id: answered, status, duration_s: 10, started_at: startedAt }), { secret });
    }
    expect(await storedCall(site.id, answered)).toMatchObject({ status: "answered" });
  });

  test("ringing → answered (with duration) → ended; a late ringing does not move it back", async () => {
    const secret = (await secretsOf(site.id)).current;
    const id = callId();
    const startedAt = new Date(Date.now() - 3 * MINUTE).toISOString();
    const before = await callCount(site.id);
    const steps: [string, number, string, number][] = [
      // sent status, sent duration → stored status, stored duration
      ["ringing", 0, "ringing", 0],
      ["answered", 30, "answered", 30],
      ["ended", 95, "ended", 95],
      ["ringing", 0, "ended", 95],
      ["answered", 30, "ended", 95],
      // An answered call that ended is never reported as missed afterwards.
      ["missed", 0, "ended", 95],
    ];
    let firstId: string | undefined;
    for (const [status, duration, storedStatus, storedDuration] of steps) {
      const response = await send(callEvent(site, { call_id: id, status, duration_s: duration, started_at: startedAt }), { secret });
      expect(response.status).toBe(200);
      expect(response.body).toMatchObject({ call_id: id, status: storedStatus });
      firstId ??= response.body.id;
      expect(response.body.id).toBe(firstId);
      expect(await callCount(site.id)).toBe(before + 1);
      expect(await storedCall(site.id, id)).toMatchObject({ id: firstId, status: storedStatus, duration_s: storedDuration });
    }
  });
});

/* ------------------------------------------------------------------ rotation */

describe("secret rotation through the CLI", () => {
  test("after rotate both the new and the previous secret are accepted; after retire only the new one", async () => {
    const rotating = await createTrackedSite(ownerId);
    const old = (await secretsOf(rotating.id)).current;
    await expectAccepted(rotating, callEvent(rotating), old); // control: the original secret works

    const rotated = await runCli(["call-secret", "rotate", "--site", rotating.id, "--json"]);
    expect(rotated.code).toBe(0);
    const json = onlyJson(rotated.stdout);
    expect(Object.keys(json).sort()).toEqual(["call_event_secret", "site_id"]);
    expect(json.site_id).toBe(rotating.id);
    const fresh: string = json.call_event_secret;
    expect(fresh).toMatch(/^whsec_[0-9a-f]{64}$/);
    expect(fresh).not.toBe(old);
    expect(await secretsOf(rotating.id)).toEqual({ current: fresh, previous: old });

    const before = await callCount(rotating.id);
    await expectAccepted(rotating, callEvent(rotating), fresh);
    await expectAccepted(rotating, callEvent(rotating), old);
    expect(await callCount(rotating.id)).toBe(before + 2);

    const retired = await runCli(["call-secret", "retire", "--site", rotating.id, "--json"]);
    expect(retired.code).toBe(0);
    expect(onlyJson(retired.stdout)).toMatchObject({ site_id: rotating.id });
    expect(await secretsOf(rotating.id)).toEqual({ current: fresh, previous: null });

    const stale = callEvent(rotating);
    expectRefused(await expectNothingStored(rotating, stale, () => send(stale, { secret: old })), 401, "invalid_signature");
    await expectAccepted(rotating, callEvent(rotating), fresh);
    expect(await callCount(rotating.id)).toBe(before + 3);
  }, 30_000);
});

/* ------------------------------------------------------------------ request and field refusals */

describe("refusals", () => {
  let secret: string;
  beforeAll(async () => {
    secret = (await secretsOf(site.id)).current;
  });

  test("an unknown site key is 403 unknown_site and stores nothing anywhere", async () => {
    const body = callEvent(site, { site: `pk_${"0".repeat(32)}` });
    const response = await expectNothingStored(site, body, () => send(body, { secret }));
    expectRefused(response, 403, "unknown_site");
  });

  test("malformed JSON, correctly signed, is 400 invalid_json and stores nothing", async () => {
    const body = callEvent(site);
    const broken = JSON.stringify(body).slice(0, -1);
    const response = await expectNothingStored(site, body, () => send(broken, { secret }));
    expectRefused(response, 400, "invalid_json");
  });

  const FUTURE = () => new Date(Date.now() + HOUR).toISOString();
  const TOO_OLD = () => new Date(Date.now() - 7 * DAY - HOUR).toISOString();

  test.each([
    ["status not in the list", { status: "busy" }],
    ["status in another case", { status: "Ended" }],
    ["status missing", { status: undefined }],
    ["started_at missing", { started_at: undefined }],
    ["started_at an hour in the future", { started_at: FUTURE }],
    ["started_at older than 7 days", { started_at: TOO_OLD }],
    ["started_at without a zone", { started_at: () => new Date(Date.now() - MINUTE).toISOString().replace("Z", "") }],
    ["caller not E.164 (national)", { caller: "05551112233" }],
    ["caller not E.164 (spaces)", { caller: "+90 555 111 2233" }],
    ["tracking_number not E.164", { tracking_number: "2125550000" }],
    ["negative duration_s", { duration_s: -1 }],
    ["non-integer duration_s", { duration_s: 1.5 }],
    ["duration_s as a string", { duration_s: "30" }],
    ["session_id not a UUID", { session_id: "not-a-uuid" }],
    ["call_id with spaces", { call_id: "call 123" }],
    ["call_id empty", { call_id: "" }],
    ["call_id not a string", { call_id: 12345 }],
  ])("%s is 400 invalid_call_event and stores nothing", async (_what, overrides) => {
    const resolved = Object.fromEntries(Object.entries(overrides).map(([k, v]) => [k, typeof v === "function" ? v() : v]));
    const body = callEvent(site, resolved);
    const response = await expectNothingStored(site, body, () => send(body, { secret }));
    expectRefused(response, 400, "invalid_call_event");
  });

  test.each([
    ["a string field", { gclid: "Cj0KCQ\ud83d" }],
    ["a field's name", { "note\ude00": "x" }],
    ["a nested string", { extra: { label: ["ok", "Sale \ud83d"] } }],
  ])("a lone surrogate in %s, correctly signed, is 400 invalid_call_event and stores nothing", async (_where, overrides) => {
    const body = callEvent(site, overrides);
    // What is sent and signed is JSON.stringify's text: the surrogate as its escape, which the server parses back.
    expect(JSON.stringify(body)).toMatch(/\\ud83d|\\ude00/);
    const response = await expectNothingStored(site, body, () => send(body, { secret }));
    expectRefused(response, 400, "invalid_call_event");
    // The control: the same event without the surrogate is stored.
    const control = JSON.parse(JSON.stringify(body).replace(/\\ud83d|\\ude00/g, ""));
    await expectAccepted(site, control, secret);
  });

  test("a site key with a lone surrogate, correctly signed, is 400 invalid_envelope and stores nothing", async () => {
    const body = callEvent(site, { site: `${site.publicKey}\ud83d` });
    const response = await expectNothingStored(site, body, () => send(body, { secret }));
    expectRefused(response, 400, "invalid_envelope");
  });

  test("started_at 6 days ago is accepted (the control for the 7-day limit)", async () => {
    const body = callEvent(site, { started_at: new Date(Date.now() - 6 * DAY).toISOString() });
    await expectAccepted(site, body, secret);
  });

  test("a body over 64 KiB, correctly signed, is 413 and stores nothing", async () => {
    const body = callEvent(site, { note: "x".repeat(MAX_BODY_BYTES) });
    expect(Buffer.byteLength(JSON.stringify(body))).toBeGreaterThan(MAX_BODY_BYTES);
    const response = await expectNothingStored(site, body, () => send(body, { secret }));
    expectRefused(response, 413, "payload_too_large");
  });
});

/* ------------------------------------------------------------------ matching to sessions */

describe("matching a call to its session", () => {
  let secret: string;
  const now = Date.now();
  const tag = randomUUID().slice(0, 8);
  const GCLID = `G_${tag}`;
  // Visitor A: a Google Ads click 3 days ago (S1), then a direct visit 2 days ago (S3 assisted by that click).
  const adClick = pageview(`va_${tag}`, now - 3 * DAY, `${LANDING}?gclid=${GCLID}`);
  const assisted = pageview(`va_${tag}`, now - 2 * DAY, LANDING);
  // Visitor B, organic only: three sessions with different sources.
  const direct = pageview(`vb_${tag}`, now - 3 * DAY, LANDING);
  const search = pageview(`vb_${tag}`, now - 2 * DAY, LANDING, "https://www.google.com/");
  const social = pageview(`vb_${tag}`, now - HOUR, LANDING, "https://www.facebook.com/");
  // Another tenant's visitor with an ad click.
  const theirs = pageview(`vc_${tag}`, now - DAY, `${LANDING}?gclid=THEIRS_${tag}`);
  let s: Record<string, SessionRow>;

  beforeAll(async () => {
    secret = (await secretsOf(site.id)).current;
    await ingest(site, [adClick, assisted, direct, search, social]);
    await ingest(otherTenant, [theirs]);
    s = {
      adClick: await sessionOf(site, adClick), assisted: await sessionOf(site, assisted),
      direct: await sessionOf(site, direct), search: await sessionOf(site, search), social: await sessionOf(site, social),
      theirs: await sessionOf(otherTenant, theirs),
    };
    // The fixtures are what the tests assume, or the tests below would prove nothing.
    expect(s.adClick).toMatchObject({ visitor_key: `va_${tag}`, attribution_tier: "S1", attribution_source: "google_ads", click_id: GCLID, click_id_type: "gclid" });
    expect(s.assisted).toMatchObject({ attribution_tier: "S3", attribution_source: "ads_assisted", click_id: null, assisting_click_id: GCLID, assisting_click_id_type: "gclid" });
    expect(s.direct).toMatchObject({ visitor_key: `vb_${tag}`, attribution_source: "organic:direct" });
    expect(s.search).toMatchObject({ attribution_source: "organic:search" });
    expect(s.social).toMatchObject({ attribution_source: "organic:social" });
    expect(s.theirs).toMatchObject({ attribution_tier: "S1", click_id: `THEIRS_${tag}` });
    expect(new Set(Object.values(s).map((x) => x.id)).size).toBe(6);
  });

  async function matched(overrides: Record<string, unknown>): Promise<{ response: Record<string, any>; row: Record<string, any> }> {
    const body = callEvent(site, overrides);
    const before = await callCount(site.id);
    const response = await expectAccepted(site, body, secret);
    expect(await callCount(site.id)).toBe(before + 1);
    return { response, row: (await storedCall(site.id, body.call_id as string))! };
  }

  test("by session_id: that session's tier, source and click id", async () => {
    const { response, row } = await matched({ session_id: s.adClick.id });
    expect(response).toMatchObject({ session_id: s.adClick.id, attribution_tier: "S1", attribution_source: "google_ads" });
    expect(row).toMatchObject({ session_id: s.adClick.id, attribution_tier: "S1", attribution_source: "google_ads", click_id: GCLID, click_id_type: "gclid" });
  });

  test("an S3 session's call carries the assisting click id", async () => {
    const { response, row } = await matched({ session_id: s.assisted.id });
    expect(response).toMatchObject({ session_id: s.assisted.id, attribution_tier: "S3", attribution_source: "ads_assisted" });
    expect(row).toMatchObject({ session_id: s.assisted.id, attribution_tier: "S3", click_id: GCLID, click_id_type: "gclid" });
  });

  test("by visitor_id: the visitor's latest session that started before the call", async () => {
    const dayAgo = await matched({ visitor_id: `vb_${tag}`, started_at: new Date(now - DAY).toISOString() });
    expect(dayAgo.row).toMatchObject({ session_id: s.search.id, attribution_tier: "S5", attribution_source: "organic:search", visitor_id: `vb_${tag}` });
    const justNow = await matched({ visitor_id: `vb_${tag}`, started_at: new Date(Date.now() - 10_000).toISOString() });
    expect(justNow.row).toMatchObject({ session_id: s.social.id, attribution_source: "organic:social" });
    expect(justNow.response.session_id).toBe(s.social.id);
    // Before the visitor's first session there is nothing to match.
    const tooEarly = await matched({ visitor_id: `vb_${tag}`, started_at: new Date(now - 4 * DAY).toISOString() });
    expect(tooEarly.row).toMatchObject({ session_id: null, attribution_tier: null, attribution_source: null, click_id: null });
  });

  test("by gclid alone: the session whose landing URL had it", async () => {
    const { response, row } = await matched({ gclid: GCLID });
    expect(response).toMatchObject({ session_id: s.adClick.id, attribution_tier: "S1", attribution_source: "google_ads" });
    expect(row).toMatchObject({ session_id: s.adClick.id, gclid: GCLID, click_id: GCLID, click_id_type: "gclid" });
  });

  test("by a gclid no session has: S1 google_ads with that gclid as the click id, no session", async () => {
    const unknown = `GX_${tag}`;
    const { response, row } = await matched({ gclid: unknown });
    expect(response).toMatchObject({ session_id: null, attribution_tier: "S1", attribution_source: "google_ads" });
    expect(row).toMatchObject({ session_id: null, attribution_tier: "S1", click_id: unknown, click_id_type: "gclid", gclid: unknown });
  });

  test("another tenant's session id or visitor id does not match: the call stays unmatched", async () => {
    const bySession = await matched({ session_id: s.theirs.id });
    expect(bySession.response).toMatchObject({ session_id: null, attribution_tier: null, attribution_source: null });
    expect(bySession.row).toMatchObject({ session_id: null, attribution_tier: null, attribution_source: null, click_id: null });
    const byVisitor = await matched({ visitor_id: `vc_${tag}` });
    expect(byVisitor.row).toMatchObject({ session_id: null, attribution_tier: null, click_id: null });
    expect(await callCount(otherTenant.id)).toBe(0);
  });
});
