/*
 * The tracker's endpoints (SPEC §5.1, §8, §9) through the real express app over real HTTP:
 * every request-level refusal has its status and {error, message} code and writes nothing at
 * all; every event-level problem rejects that event only, by its index, while the rest of the
 * batch is stored; hostile strings are stored as data; consent decides what is kept; the raw
 * client IP is kept nowhere; the rate limit and a failing database both fail closed.
 * Fixtures are committed, because the service reads them on its own connections.
 */
import { randomUUID } from "node:crypto";
import { createUser, getRootPool, unique, waitForLockWaiters } from "./helpers/db";
import { readBody, startTestService, TestService } from "./helpers/http";

const ORIGIN = "https://shop.example";
const MAX_BODY_BYTES = 64 * 1024;

// Anything that would tell a caller how the server is built: stack frames, SQL, schema and
// library names.
const INTERNALS = /\n\s+at |stack|\bselect\b|\binsert\b|\bsql\b|app_(private|public|hidden)|pg_|ingest_idempotency|trigger|Error:/i;

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

interface PostOptions {
  origin?: string | null;
  contentType?: string;
  userAgent?: string;
  base?: string;
}

let service: TestService;
let ownerId: string;
let site: Site; // consent required, no rate limit, no quota: the workhorse
let impliedSite: Site;

async function createTrackedSite(options: { consentMode?: string; rateLimit?: number; quota?: number | null } = {}): Promise<Site> {
  const { rows } = await getRootPool().query(
    `select id, public_key from app_private.create_site($1, $2, 'shop.example', consent_mode => $3,
       monthly_event_quota => $4, rate_limit_per_minute => $5, allowed_origins => array['https://shop.example'])`,
    [ownerId, unique("Shop"), options.consentMode ?? "required", options.quota ?? null, options.rateLimit ?? 0],
  );
  return { id: rows[0].id, publicKey: rows[0].public_key };
}

/** POST a body (an object is sent as JSON) with the tracker's headers; Origin defaults to the allowed one. */
async function post(path: string, body: unknown, options: PostOptions = {}): Promise<Reply> {
  const headers: Record<string, string> = { "content-type": options.contentType ?? "application/json" };
  const origin = options.origin === undefined ? ORIGIN : options.origin;
  if (origin !== null) headers.origin = origin;
  if (options.userAgent) headers["user-agent"] = options.userAgent;
  const payload = typeof body === "string" || Buffer.isBuffer(body) ? body : JSON.stringify(body);
  const response = await fetch(`${options.base ?? service.url}${path}`, { method: "POST", headers, body: payload });
  return reply(response);
}

async function reply(response: Response): Promise<Reply> {
  const { text, body } = await readBody(response);
  return { status: response.status, headers: response.headers, text, body };
}

const sync = (body: unknown, options?: PostOptions) => post("/api/sync", body, options);

/** A valid pageview, a second in the past; overrides replace or add fields. */
function event(overrides: Record<string, unknown> = {}): Record<string, any> {
  return {
    id: randomUUID(),
    type: "pageview",
    ts: new Date(Date.now() - 1000).toISOString(),
    visitor_id: `v_${randomUUID().slice(0, 8)}`,
    url: "https://shop.example/landing",
    ...overrides,
  };
}

interface Counts {
  ledger: number;
  events: number;
  sessions: number;
  consents: number;
}

async function counts(siteId: string): Promise<Counts> {
  const { rows } = await getRootPool().query(
    `select (select count(*)::int from app_public.ingest_idempotency where site_id = $1) as ledger,
            (select count(*)::int from app_public.events where site_id = $1) as events,
            (select count(*)::int from app_public.sessions where site_id = $1) as sessions,
            (select count(*)::int from app_public.consents where site_id = $1) as consents`,
    [siteId],
  );
  return rows[0];
}

async function storedIds(siteId: string, ids: string[]): Promise<{ ledger: string[]; events: string[] }> {
  const { rows } = await getRootPool().query(
    `select array(select idempotency_key::text from app_public.ingest_idempotency where site_id = $1 and idempotency_key = any($2::uuid[]) order by 1) as ledger,
            array(select id::text from app_public.events where site_id = $1 and id = any($2::uuid[]) order by 1) as events`,
    [siteId, ids],
  );
  return rows[0];
}

async function storedEvent(siteId: string, id: string): Promise<Record<string, any> | undefined> {
  const { rows } = await getRootPool().query("select e.*, e::text as row_text from app_public.events e where site_id = $1 and id = $2", [siteId, id]);
  return rows[0];
}

/** A request-level refusal: status, exactly {error, message}, nothing internal in it. */
function expectRefused(response: Reply, status: number, code: string): void {
  expect({ status: response.status, error: response.body?.error }).toEqual({ status, error: code });
  expect(response.headers.get("content-type")).toMatch(/^application\/json/);
  expect(Object.keys(response.body).sort()).toEqual(["error", "message"]);
  expect(typeof response.body.message).toBe("string");
  expect(response.body.message.length).toBeGreaterThan(0);
  expect(response.text).not.toMatch(INTERNALS);
}

/**
 * Runs a request that must be refused and checks that the site's ledger, events, sessions and
 * consents are exactly as before. The requests carry valid events for the site, so anything
 * written would show.
 */
async function expectNothingWritten(siteId: string, send: () => Promise<Reply>): Promise<Reply> {
  const before = await counts(siteId);
  const response = await send();
  expect(await counts(siteId)).toEqual(before);
  return response;
}

/** A batch of one good event and one bad one: the good one is stored, the bad one rejected by index. */
async function expectEventRejected(bad: Record<string, unknown>, code: string): Promise<void> {
  const good = event();
  const response = await sync({ site: site.publicKey, events: [good, bad] });
  expect(response.status).toBe(200);
  expect(response.body).toEqual({
    accepted: 1,
    duplicates: 0,
    rejected: [{ index: 1, error: code, message: expect.any(String) }],
  });
  const ids = [good.id, ...(typeof bad.id === "string" && /^[0-9a-f-]{36}$/i.test(bad.id) ? [bad.id] : [])];
  expect(await storedIds(site.id, ids)).toEqual({ ledger: [good.id], events: [good.id] });
}

beforeAll(async () => {
  const client = await getRootPool().connect();
  try {
    ownerId = await createUser(client);
  } finally {
    client.release();
  }
  site = await createTrackedSite();
  impliedSite = await createTrackedSite({ consentMode: "implied" });
  service = await startTestService();
});

afterAll(async () => {
  await service?.stop();
});

describe("POST /api/sync: request-level refusals write nothing", () => {
  test("accepts a valid request (the control for every refusal below)", async () => {
    const before = await counts(site.id);
    const good = event();
    const response = await sync({ site: site.publicKey, events: [good] });
    expect(response.status).toBe(200);
    expect(response.body).toEqual({ accepted: 1, duplicates: 0, rejected: [] });
    const after = await counts(site.id);
    expect(after.ledger).toBe(before.ledger + 1);
    expect(after.events).toBe(before.events + 1);
    expect(after.sessions).toBe(before.sessions + 1);
  });

  test("malformed JSON is 400 invalid_json", async () => {
    const response = await expectNothingWritten(site.id, () =>
      sync(`{"site":"${site.publicKey}","events":[${JSON.stringify(event())}`));
    expectRefused(response, 400, "invalid_json");
  });

  test("bytes that are not UTF-8 are 400 invalid_json", async () => {
    // A valid request except for one 0xFF byte inside the title string.
    const [head, tail] = JSON.stringify({ site: site.publicKey, events: [event({ title: "@@" })] }).split("@@");
    const body = Buffer.concat([Buffer.from(head), Buffer.from([0xff, 0xfe]), Buffer.from(tail)]);
    const response = await expectNothingWritten(site.id, () => sync(body));
    expectRefused(response, 400, "invalid_json");
  });

  test.each([
    ["application/xml", "application/xml"],
    ["a form", "application/x-www-form-urlencoded"],
    ["multipart", "multipart/form-data; boundary=x"],
  ])("%s is 415 unsupported_media_type", async (_name, contentType) => {
    // The body itself is a valid request: only the media type can be the reason.
    const response = await expectNothingWritten(site.id, () =>
      sync({ site: site.publicKey, events: [event()] }, { contentType }));
    expectRefused(response, 415, "unsupported_media_type");
  });

  test("text/plain holding JSON (navigator.sendBeacon) is accepted", async () => {
    const good = event();
    const response = await sync({ site: site.publicKey, events: [good] }, { contentType: "text/plain;charset=UTF-8" });
    expect(response.status).toBe(200);
    expect(response.body).toEqual({ accepted: 1, duplicates: 0, rejected: [] });
    expect(await storedIds(site.id, [good.id])).toEqual({ ledger: [good.id], events: [good.id] });
  });

  test("a body over 64 KiB is 413 payload_too_large", async () => {
    // Valid JSON for the site, only too big (the title alone is over the limit).
    const body = JSON.stringify({ site: site.publicKey, events: [event({ title: "x".repeat(MAX_BODY_BYTES) })] });
    expect(Buffer.byteLength(body)).toBeGreaterThan(MAX_BODY_BYTES);
    const response = await expectNothingWritten(site.id, () => sync(body));
    expectRefused(response, 413, "payload_too_large");
  });

  test("a body over 64 KiB sent chunked, without Content-Length, is 413 payload_too_large too", async () => {
    // The declared length cannot be trusted (or may be absent): the limit must hold while reading.
    const body = Buffer.from(JSON.stringify({ site: site.publicKey, events: [event({ title: "x".repeat(MAX_BODY_BYTES) })] }));
    const response = await expectNothingWritten(site.id, async () => {
      const stream = new ReadableStream<Uint8Array>({
        start(controller) {
          for (let offset = 0; offset < body.length; offset += 8192) controller.enqueue(body.subarray(offset, offset + 8192));
          controller.close();
        },
      });
      const raw = await fetch(`${service.url}/api/sync`, {
        method: "POST",
        headers: { "content-type": "application/json", origin: ORIGIN },
        body: stream,
        duplex: "half",
      } as RequestInit);
      return reply(raw);
    });
    expectRefused(response, 413, "payload_too_large");
  });

  test("101 events are 413 payload_too_large, 100 are accepted", async () => {
    const small = () => event({ url: undefined, type: "click", visitor_id: "v_many" });
    const tooMany = { site: site.publicKey, events: Array.from({ length: 101 }, small) };
    expect(Buffer.byteLength(JSON.stringify(tooMany))).toBeLessThan(MAX_BODY_BYTES); // the count is the reason, not the size
    expectRefused(await expectNothingWritten(site.id, () => sync(tooMany)), 413, "payload_too_large");
    const response = await sync({ site: site.publicKey, events: Array.from({ length: 100 }, small) });
    expect(response.status).toBe(200);
    expect(response.body.accepted).toBe(100);
  });

  test.each([
    ["empty events", () => ({ site: site.publicKey, events: [] })],
    ["missing site", () => ({ events: [event()] })],
    ["site not a string", () => ({ site: 42, events: [event()] })],
    ["events not an array", () => ({ site: site.publicKey, events: event() })],
    ["missing events", () => ({ site: site.publicKey })],
    ["a JSON array instead of an object", () => [{ site: site.publicKey, events: [event()] }]],
    ["JSON null", () => null],
    // JSON.stringify writes the lone surrogate as the escape \udc00, so the server parses one back.
    ["a site key ending in a lone surrogate", () => ({ site: `${site.publicKey}\udc00`, events: [event()] })],
  ])("%s is 400 invalid_envelope", async (_name, build) => {
    const response = await expectNothingWritten(site.id, () => sync(JSON.stringify(build())));
    expectRefused(response, 400, "invalid_envelope");
  });

  test("an unknown site key is 403 unknown_site", async () => {
    const response = await expectNothingWritten(site.id, () => sync({ site: `${site.publicKey}x`, events: [event()] }));
    expectRefused(response, 403, "unknown_site");
    expect(response.headers.get("access-control-allow-origin")).toBeNull();
  });

  test.each([
    ["another site", "https://other.example"],
    ["a look-alike domain", "https://evilshop.example"],
    ["the site's domain under another domain", "https://shop.example.evil.com"],
    ["the allowed host over plain http", "http://shop.example"],
    ["the allowed host on another port", "https://shop.example:8443"],
    ["the literal null origin", "null"],
  ])("an Origin of %s is 403 origin_not_allowed", async (_name, origin) => {
    const response = await expectNothingWritten(site.id, () => sync({ site: site.publicKey, events: [event()] }, { origin }));
    expectRefused(response, 403, "origin_not_allowed");
    expect(response.headers.get("access-control-allow-origin")).not.toBe(origin);
  });

  test("a request without Origin is 403 origin_not_allowed", async () => {
    const response = await expectNothingWritten(site.id, () => sync({ site: site.publicKey, events: [event()] }, { origin: null }));
    expectRefused(response, 403, "origin_not_allowed");
  });
});

describe("POST /api/sync: event-level rejections", () => {
  test("a non-UUID id is invalid_event", async () => {
    await expectEventRejected(event({ id: "not-a-uuid" }), "invalid_event");
    await expectEventRejected(event({ id: `${randomUUID()}0` }), "invalid_event");
    await expectEventRejected(event({ id: 12345 }), "invalid_event");
  });

  test("ts too old, too far ahead, or without a zone is invalid_ts; a 6-day-old event with an offset is accepted", async () => {
    const now = Date.now();
    const good = event({ ts: new Date(now - 6 * 86_400_000).toISOString().replace("Z", "+00:00") });
    const tooOld = event({ ts: new Date(now - 7 * 86_400_000 - 3_600_000).toISOString() });
    const tooNew = event({ ts: new Date(now + 10 * 60_000).toISOString() });
    const noZone = event({ ts: new Date(now - 1000).toISOString().replace("Z", "") });
    const notATime = event({ ts: "yesterday" });
    const response = await sync({ site: site.publicKey, events: [good, tooOld, tooNew, noZone, notATime] });
    expect(response.status).toBe(200);
    expect(response.body.accepted).toBe(1);
    expect(response.body.rejected.map((r: any) => [r.index, r.error])).toEqual([
      [1, "invalid_ts"], [2, "invalid_ts"], [3, "invalid_ts"], [4, "invalid_ts"],
    ]);
    expect((await storedIds(site.id, [good.id, tooOld.id, tooNew.id, noZone.id, notATime.id])).events).toEqual([good.id]);
  });

  test("impossible calendar times are invalid_ts for that event, never a failed request", async () => {
    const today = new Date().toISOString().slice(0, 10);
    const year = today.slice(0, 4);
    const impossible = [`${year}-02-30T10:00:00Z`, `${year}-13-01T10:00:00Z`, `${today}T24:00:00Z`, `${today}T23:59:60Z`,
      `${today}T10:60:00Z`, `${today}T10:00:00+16:00`, `${today}T10:00:00+05:60`, `${today}T10:00:00.5Z-`];
    const good = event();
    const response = await sync({ site: site.publicKey, events: [good, ...impossible.map((ts) => event({ ts }))] });
    expect(response.status).toBe(200);
    expect(response.body.accepted).toBe(1);
    expect(response.body.rejected.map((r: any) => r.error)).toEqual(impossible.map(() => "invalid_ts"));
  });

  test("the time parser agrees with PostgreSQL's own cast on every time it accepts", async () => {
    const cases: Array<[string, string | null]> = [
      ["2024-02-29T10:00:00Z", "2024-02-29T10:00:00.000Z"], ["2023-02-29T10:00:00Z", null], ["2100-02-29T00:00Z", null],
      ["2000-02-29T00:00Z", "2000-02-29T00:00:00.000Z"], ["2024-04-31T00:00Z", null], ["2024-04-30T23:59:59.999Z", "2024-04-30T23:59:59.999Z"],
      ["0000-01-01T00:00Z", null], ["2024-00-10T00:00Z", null], ["2024-01-00T00:00Z", null],
      ["2024-01-01T00:00+15:59", "2023-12-31T08:01:00.000Z"], ["2024-01-01T00:00-1559", "2024-01-01T15:59:00.000Z"],
      ["2024-01-01T00:00+16:00", null], ["2024-01-01T00:00-05", "2024-01-01T05:00:00.000Z"], ["2024-01-01T00:00+05:60", null],
      ["2024-01-01T12:34:56.123456789+05:30", "2024-01-01T07:04:56.123Z"], ["2024-01-01T24:00Z", null], ["2024-01-01T00:00:60Z", null],
      ["2024-01-01T00:00", null], ["2024-01-01", null], ["2024-01-01 00:00Z", null], ["２０２４-01-01T00:00Z", null],
    ];
    const { rows } = await getRootPool().query(
      "select c.value, app_hidden.parse_timestamptz(c.value) as parsed from unnest($1::text[]) as c(value)", [cases.map(([value]) => value)]);
    expect(rows.map((r) => [r.value, r.parsed && r.parsed.toISOString()])).toEqual(cases);
  });

  test("a visitor id with bad characters or over 64 characters is invalid_event; 64 is fine", async () => {
    await expectEventRejected(event({ visitor_id: "v id" }), "invalid_event");
    await expectEventRejected(event({ visitor_id: "v<1>" }), "invalid_event");
    await expectEventRejected(event({ visitor_id: "ç" }), "invalid_event");
    await expectEventRejected(event({ visitor_id: "a".repeat(65) }), "invalid_event");
    await expectEventRejected(event({ visitor_id: "" }), "invalid_event");
    const longest = event({ visitor_id: "a".repeat(64) });
    expect((await sync({ site: site.publicKey, events: [longest] })).body.accepted).toBe(1);
  });

  test("a URL on another domain, a look-alike domain or behind userinfo is url_not_on_site; a subdomain is fine", async () => {
    await expectEventRejected(event({ url: "https://other.example/landing" }), "url_not_on_site");
    await expectEventRejected(event({ url: "https://evilshop.example/landing" }), "url_not_on_site");
    await expectEventRejected(event({ url: "https://shop.example.evil.com/landing" }), "url_not_on_site");
    await expectEventRejected(event({ url: "https://shop.example@evil.example/landing" }), "url_not_on_site");
    const sub = event({ url: "https://www.shop.example/landing" });
    expect((await sync({ site: site.publicKey, events: [sub] })).body.accepted).toBe(1);
  });

  test("a javascript: or relative URL is invalid_event, and a pageview needs a URL", async () => {
    await expectEventRejected(event({ url: "javascript:alert(1)//https://shop.example/" }), "invalid_event");
    await expectEventRejected(event({ url: "/landing" }), "invalid_event");
    await expectEventRejected(event({ url: undefined }), "invalid_event");
    await expectEventRejected(event({ url: null }), "invalid_event");
  });

  test("props are measured as the tracker sends them (compact JSON): 4 KiB of many short keys is taken, one byte more is not", async () => {
    // 400 keys "k000".."k399" with the value 1: PostgreSQL prints them 800 bytes longer than sent.
    const props = (extra: number) => ({ ...Object.fromEntries(Array.from({ length: 400 }, (_, i) => [`k${String(i).padStart(3, "0")}`, 1])),
      pad: "x".repeat(extra) });
    const compact = (value: unknown) => Buffer.byteLength(JSON.stringify(value));
    const room = 4096 - compact(props(0));
    expect(compact(props(room))).toBe(4096);
    const fits = event({ props: props(room) });
    const over = event({ props: props(room + 1) });
    const response = await sync({ site: site.publicKey, events: [fits, over] });
    expect(response.body).toMatchObject({ accepted: 1, rejected: [{ index: 1, error: "invalid_event" }] });
    expect(Object.keys((await storedEvent(site.id, fits.id))!.props)).toHaveLength(401);
  });

  test("props over 4 KiB, nested 5 deep, or not an object are invalid_event", async () => {
    await expectEventRejected(event({ props: { pad: "x".repeat(5000) } }), "invalid_event");
    await expectEventRejected(event({ props: { a: { b: { c: { d: { e: 1 } } } } } }), "invalid_event");
    await expectEventRejected(event({ props: ["plan", "pro"] }), "invalid_event");
    await expectEventRejected(event({ props: "plan=pro" }), "invalid_event");
    // The control: small, flat props are stored as sent.
    const good = event({ props: { plan: "pro", n: 3 } });
    expect((await sync({ site: site.publicKey, events: [good] })).body.accepted).toBe(1);
    expect((await storedEvent(site.id, good.id))!.props).toEqual({ plan: "pro", n: 3 });
  });

  test("a NUL character in any string field rejects that event only", async () => {
    const bad = [
      event({ title: "a\u0000b" }),
      event({ url: "https://shop.example/a\u0000b" }),
      event({ referrer: "https://www.google.com/\u0000" }),
      event({ visitor_id: "v\u0000" }),
      event({ type: "click\u0000" }),
      event({ props: { plan: "p\u0000ro" } }),
      event({ props: { "k\u0000": "v" } }),
      event({ device: { language: "tr\u0000TR" }, consent: { analytics_storage: "granted" } }),
      event({ ts: `${new Date().toISOString()}\u0000` }),
    ];
    const good = event();
    const response = await sync({ site: site.publicKey, events: [good, ...bad] });
    expect(response.status).toBe(200);
    expect(response.body.accepted).toBe(1);
    expect(response.body.rejected).toEqual(bad.map((_, i) => ({ index: i + 1, error: "invalid_event", message: expect.any(String) })));
    expect(await storedIds(site.id, [good.id, ...bad.map((e) => e.id)])).toEqual({ ledger: [good.id], events: [good.id] });
  });

  test("a title holding a lone surrogate (an emoji cut in half) rejects that event only", async () => {
    const good = event();
    const cut = event({ title: "@@" });
    // Spliced in as the JSON escape a tracker sends. (The surrogate itself in the text would
    // reach the server as U+FFFD: fetch encodes a string body as UTF-8.)
    const body = JSON.stringify({ site: site.publicKey, events: [good, cut] }).replace('"@@"', '"Sale \\ud83d"');
    expect(body).toContain('"title":"Sale \\ud83d"');
    expect(JSON.parse(body).events[1].title.isWellFormed()).toBe(false); // what the server parses
    const response = await sync(body);
    expect(response.status).toBe(200);
    expect(response.body).toEqual({ accepted: 1, duplicates: 0, rejected: [{ index: 1, error: "invalid_event", message: expect.any(String) }] });
    expect(await storedIds(site.id, [good.id, cut.id])).toEqual({ ledger: [good.id], events: [good.id] });
  });

  test("a lone surrogate in a props key, or anywhere else, rejects that event only; a whole emoji is stored as sent", async () => {
    const good = event({ title: "Sale \ud83d\ude00", props: { "\ud83d\ude00": "\ud83c\udf89" } });
    // Each string below is sent as the escape JSON.stringify writes for a lone surrogate (\ud83d, \ude00).
    const bad = [
      event({ props: { "plan\ud83d": "pro" } }),
      event({ props: { plan: "\ude00pro" } }),
      event({ title: "\ude00\ud83d" }), // both halves, in the wrong order
      event({ referrer: "https://www.google.com/\ud83d" }),
      event({ device: { language: "tr\ud83d" }, consent: { analytics_storage: "granted" } }),
    ];
    const body = JSON.stringify({ site: site.publicKey, events: [good, ...bad] });
    expect(body).toContain('{"plan\\ud83d":"pro"}');
    expect(body).toContain('"title":"Sale \ud83d\ude00"'); // the pair is sent as UTF-8, not escaped
    const response = await sync(body);
    expect(response.status).toBe(200);
    expect(response.body.accepted).toBe(1);
    expect(response.body.rejected).toEqual(bad.map((_, i) => ({ index: i + 1, error: "invalid_event", message: expect.any(String) })));
    expect(await storedIds(site.id, [good.id, ...bad.map((e) => e.id)])).toEqual({ ledger: [good.id], events: [good.id] });
    const stored = await storedEvent(site.id, good.id);
    expect({ title: stored!.title, props: stored!.props }).toEqual({ title: "Sale \u{1F600}", props: { "\u{1F600}": "\u{1F389}" } });
  });

  test("a number too large for a double (1e400) in props rejects that event only", async () => {
    const good = event();
    const huge = event({ props: { n: "@@" } });
    // JSON.stringify cannot write 1e400: splice it into the text by hand.
    const body = JSON.stringify({ site: site.publicKey, events: [good, huge] }).replace('"@@"', "1e400");
    expect(body).toContain('{"n":1e400}');
    const response = await sync(body);
    expect(response.status).toBe(200);
    expect(response.body).toEqual({ accepted: 1, duplicates: 0, rejected: [{ index: 1, error: "invalid_event", message: expect.any(String) }] });
    expect(await storedIds(site.id, [good.id, huge.id])).toEqual({ ledger: [good.id], events: [good.id] });
  });

  test("a mixed batch stores the good events and reports each bad one by its index", async () => {
    const batch = [
      event(),
      event({ id: "nope" }),
      event(),
      event({ url: "https://other.example/" }),
      event({ ts: "2020-01-01T00:00:00Z" }),
      event({ type: "click", url: undefined }),
      "not an event",
      event({ type: "Bad Type" }),
      event(),
    ];
    const response = await sync({ site: site.publicKey, events: batch });
    expect(response.status).toBe(200);
    expect(response.body.accepted).toBe(4);
    expect(response.body.duplicates).toBe(0);
    expect(response.body.rejected.map((r: any) => [r.index, r.error])).toEqual([
      [1, "invalid_event"], [3, "url_not_on_site"], [4, "invalid_ts"], [6, "invalid_event"], [7, "invalid_event"],
    ]);
    const goodIds = [0, 2, 5, 8].map((i) => (batch[i] as any).id).sort();
    const allIds = batch.filter((e): e is Record<string, any> => typeof e === "object").map((e) => e.id)
      .filter((id) => /^[0-9a-f-]{36}$/.test(id));
    expect(await storedIds(site.id, allIds)).toEqual({ ledger: goodIds, events: goodIds });
  });
});

describe("POST /api/sync: hostile strings are data", () => {
  const SQL = "'; drop table app_public.events; --";
  const SCRIPT = "<script>alert(1)</script>";

  test("SQL and script payloads in every free-text field are stored verbatim and the tables stay intact", async () => {
    const before = await counts(site.id);
    const hostile = (payload: string) => event({
      url: `https://shop.example/${encodeURI(payload).replace(/%20/g, "/**/")}?q=${payload.replace(/ /g, "/**/")}#${payload.replace(/ /g, "")}`,
      referrer: `https://ref.example/?q=${payload.replace(/ /g, "/**/")}`,
      title: payload,
      props: { [payload]: payload, nested: { list: [payload] } },
      device: { fingerprint: payload, language: payload },
      consent: { analytics_storage: "granted" },
    });
    const events = [hostile(SQL), hostile(SCRIPT)];
    // Fields with a strict format: the payload can only be refused, never executed.
    const refused = [event({ visitor_id: SQL }), event({ type: SQL }), event({ id: SQL }), event({ ts: SQL }), event({ visitor_id: SCRIPT })];
    const response = await sync({ site: site.publicKey, events: [...events, ...refused] });
    expect(response.status).toBe(200);
    expect(response.body.accepted).toBe(2);
    expect(response.body.rejected.map((r: any) => r.index)).toEqual([2, 3, 4, 5, 6]);
    for (const sent of events) {
      const stored = await storedEvent(site.id, sent.id);
      expect(stored).toBeDefined();
      expect({ url: stored!.url, referrer: stored!.referrer, title: stored!.title, props: stored!.props, device: stored!.device })
        .toEqual({ url: sent.url, referrer: sent.referrer, title: sent.title, props: sent.props, device: sent.device });
    }
    const { rows } = await getRootPool().query(
      "select to_regclass('app_public.events') is not null as events, to_regclass('app_public.ingest_idempotency') is not null as ledger");
    expect(rows[0]).toEqual({ events: true, ledger: true });
    const after = await counts(site.id);
    expect(after.events).toBe(before.events + 2);
    expect(after.ledger).toBe(before.ledger + 2);
  });
});

describe("POST /api/sync is routed as express would route it", () => {
  test.each(["/api/sync?v=3", "/api/sync/", "/API/Sync"])("%s is the sync endpoint", async (path) => {
    const before = await counts(site.id);
    const response = await post(path, { site: site.publicKey, events: [event()] });
    expect(response.status).toBe(200);
    expect(response.body).toEqual({ accepted: 1, duplicates: 0, rejected: [] });
    expect((await counts(site.id)).ledger).toBe(before.ledger + 1);
  });

  test("its answers carry the headers every answer does, in our JSON shape", async () => {
    const accepted = await sync({ site: site.publicKey, events: [event()] });
    const refused = await sync("{", {});
    for (const response of [accepted, refused]) {
      expect(response.headers.get("x-content-type-options")).toBe("nosniff");
      expect(response.headers.get("content-type")).toBe("application/json; charset=utf-8");
      expect(Number(response.headers.get("content-length"))).toBe(Buffer.byteLength(response.text));
    }
    expectRefused(refused, 400, "invalid_json");
  });

  test.each(["GET", "PUT", "DELETE"])("%s /api/sync is 404 not_found", async (method) => {
    const response = await reply(await fetch(`${service.url}/api/sync`, { method }));
    expectRefused(response, 404, "not_found");
    expect(response.headers.get("x-content-type-options")).toBe("nosniff");
  });

  test.each(["/api/syncs", "/api/sync/more", "/x/api/sync"])("POST %s is not the sync endpoint (404)", async (path) => {
    expectRefused(await post(path, { site: site.publicKey, events: [event()] }), 404, "not_found");
  });
});

describe("CORS", () => {
  async function preflight(path: string, origin: string): Promise<Reply> {
    return reply(await fetch(`${service.url}${path}`, {
      method: "OPTIONS",
      headers: { origin, "access-control-request-method": "POST", "access-control-request-headers": "content-type" },
    }));
  }

  test.each(["/api/sync", "/api/consent"])("a preflight to %s from an allowed origin is 204 with the origin and POST allowed", async (path) => {
    const response = await preflight(path, ORIGIN);
    expect(response.status).toBe(204);
    expect(response.headers.get("access-control-allow-origin")).toBe(ORIGIN);
    expect(response.headers.get("access-control-allow-methods")).toMatch(/\bPOST\b/);
    expect((response.headers.get("access-control-allow-headers") ?? "").toLowerCase()).toContain("content-type");
  });

  test.each(["https://unknown.example", "https://evilshop.example", "null"])("a preflight from %s is 403 origin_not_allowed without CORS headers", async (origin) => {
    const response = await preflight("/api/sync", origin);
    expectRefused(response, 403, "origin_not_allowed");
    expect(response.headers.get("access-control-allow-origin")).toBeNull();
  });

  test("a POST from the allowed origin carries Access-Control-Allow-Origin for it", async () => {
    const response = await sync({ site: site.publicKey, events: [event()] });
    expect(response.status).toBe(200);
    expect(response.headers.get("access-control-allow-origin")).toBe(ORIGIN);
    expect(response.headers.get("vary") ?? "").toMatch(/origin/i);
  });
});

describe("duplicates and bots (SPEC §9)", () => {
  test("an event id sent again is a duplicate: one ledger row, one event", async () => {
    const once = event();
    expect((await sync({ site: site.publicKey, events: [once] })).body).toEqual({ accepted: 1, duplicates: 0, rejected: [] });
    const before = await counts(site.id);
    expect((await sync({ site: site.publicKey, events: [once] })).body).toEqual({ accepted: 0, duplicates: 1, rejected: [] });
    // Within one batch, too.
    expect((await sync({ site: site.publicKey, events: [once, once] })).body).toEqual({ accepted: 0, duplicates: 2, rejected: [] });
    expect(await counts(site.id)).toEqual(before);
    const { rows } = await getRootPool().query(
      "select count(*)::int as n from app_public.ingest_idempotency where site_id = $1 and idempotency_key = $2", [site.id, once.id]);
    expect(rows[0].n).toBe(1);
  });

  test("two copies of a new event in one batch are stored once", async () => {
    const twice = event();
    expect((await sync({ site: site.publicKey, events: [twice, twice] })).body).toEqual({ accepted: 1, duplicates: 1, rejected: [] });
    expect(await storedIds(site.id, [twice.id])).toEqual({ ledger: [twice.id], events: [twice.id] });
  });

  test("an event from a bot user agent is stored, not billable (reason bot), and not sessionized", async () => {
    const fromBot = event();
    const before = await counts(site.id);
    const response = await sync({ site: site.publicKey, events: [fromBot] },
      { userAgent: "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)" });
    expect(response.status).toBe(200);
    expect(response.body).toEqual({ accepted: 1, duplicates: 0, rejected: [] });
    const { rows } = await getRootPool().query(
      "select billable, reason from app_public.ingest_idempotency where site_id = $1 and idempotency_key = $2", [site.id, fromBot.id]);
    expect(rows).toEqual([{ billable: false, reason: "bot" }]);
    const stored = await storedEvent(site.id, fromBot.id);
    expect({ isBot: stored!.is_bot, sessionId: stored!.session_id }).toEqual({ isBot: true, sessionId: null });
    const after = await counts(site.id);
    expect(after).toEqual({ ...before, ledger: before.ledger + 1, events: before.events + 1 });
    // The control: the same kind of event from a browser is billable and opens a session.
    const human = event();
    await sync({ site: site.publicKey, events: [human] });
    const { rows: humanRows } = await getRootPool().query(
      "select billable, reason from app_public.ingest_idempotency where site_id = $1 and idempotency_key = $2", [site.id, human.id]);
    expect(humanRows).toEqual([{ billable: true, reason: null }]);
    expect((await storedEvent(site.id, human.id))!.session_id).not.toBeNull();
  });
});

describe("consent and minimisation (SPEC §8)", () => {
  const DEVICE = { fingerprint: "fp-123", screen: "1920x1080", language: "tr-TR", timezone: "Europe/Istanbul" };

  async function sessionVisitorIds(siteId: string, visitorKey: string): Promise<Array<string | null>> {
    const { rows } = await getRootPool().query(
      "select visitor_id from app_public.sessions where site_id = $1 and visitor_key = $2", [siteId, visitorKey]);
    return rows.map((r) => r.visitor_id);
  }

  test("required: without consent no raw visitor id or device is stored, the visitor is a daily hash", async () => {
    const visitorId = `v_${randomUUID().slice(0, 12)}`;
    const sent = event({ visitor_id: visitorId, device: DEVICE });
    expect((await sync({ site: site.publicKey, events: [sent] })).body.accepted).toBe(1);
    const stored = await storedEvent(site.id, sent.id);
    expect(stored!.visitor_id).toBeNull();
    expect(stored!.device).toBeNull();
    expect(stored!.visitor_key).toMatch(/^h:[0-9a-f]+$/);
    expect(stored!.row_text).not.toContain(visitorId);
    expect(stored!.row_text).not.toContain("fp-123");
    expect(stored!.consent.analytics_storage).toBe("denied");
    expect(await sessionVisitorIds(site.id, stored!.visitor_key)).toEqual([null]);
  });

  test("required: with analytics_storage granted the visitor id and device are stored", async () => {
    const visitorId = `v_${randomUUID().slice(0, 12)}`;
    const sent = event({ visitor_id: visitorId, device: DEVICE, consent: { analytics_storage: "granted", ad_storage: "denied" } });
    expect((await sync({ site: site.publicKey, events: [sent] })).body.accepted).toBe(1);
    const stored = await storedEvent(site.id, sent.id);
    expect({ visitorId: stored!.visitor_id, visitorKey: stored!.visitor_key, device: stored!.device })
      .toEqual({ visitorId, visitorKey: visitorId, device: DEVICE });
    expect(stored!.consent).toEqual({ analytics_storage: "granted", ad_storage: "denied", ad_user_data: "denied", ad_personalization: "denied" });
    expect(await sessionVisitorIds(site.id, visitorId)).toEqual([visitorId]);
  });

  test("POST /api/consent is recorded without the raw visitor id, and the visitor's later events follow it", async () => {
    const visitorId = `v_${randomUUID().slice(0, 12)}`;
    // Before any choice: the site default (denied) applies.
    const first = event({ visitor_id: visitorId });
    await sync({ site: site.publicKey, events: [first] });
    expect((await storedEvent(site.id, first.id))!.visitor_id).toBeNull();

    const before = await counts(site.id);
    const granted = await post("/api/consent", {
      site: site.publicKey, visitor_id: visitorId,
      consent: { analytics_storage: "granted", ad_storage: "granted", ad_user_data: "denied", ad_personalization: "denied" },
    });
    expect(granted.status).toBe(200);
    expect(granted.headers.get("access-control-allow-origin")).toBe(ORIGIN);
    const after = await counts(site.id);
    expect(after).toEqual({ ...before, consents: before.consents + 1 });

    const { rows } = await getRootPool().query(
      "select c::text as row_text, c.visitor_hash, c.analytics_storage, c.ad_storage from app_public.consents c where c.site_id = $1 order by c.recorded_at desc limit 1",
      [site.id]);
    expect({ analytics: rows[0].analytics_storage, ad: rows[0].ad_storage }).toEqual({ analytics: "granted", ad: "granted" });
    expect(rows[0].row_text).not.toContain(visitorId);
    expect((rows[0].visitor_hash as Buffer).includes(Buffer.from(visitorId))).toBe(false);
    expect(rows[0].row_text).not.toContain(Buffer.from(visitorId).toString("hex"));

    const later = event({ visitor_id: visitorId, device: DEVICE });
    await sync({ site: site.publicKey, events: [later] });
    const stored = await storedEvent(site.id, later.id);
    expect({ visitorId: stored!.visitor_id, device: stored!.device }).toEqual({ visitorId, device: DEVICE });
    expect(stored!.consent.analytics_storage).toBe("granted");

    // Withdrawal is followed too.
    const denied = await post("/api/consent", { site: site.publicKey, visitor_id: visitorId, consent: { analytics_storage: "denied" } });
    expect(denied.status).toBe(200);
    const afterWithdrawal = event({ visitor_id: visitorId, device: DEVICE });
    await sync({ site: site.publicKey, events: [afterWithdrawal] });
    const minimised = await storedEvent(site.id, afterWithdrawal.id);
    expect({ visitorId: minimised!.visitor_id, device: minimised!.device }).toEqual({ visitorId: null, device: null });
    expect(minimised!.visitor_key).toMatch(/^h:/);
    expect((await counts(site.id)).consents).toBe(before.consents + 2); // appended, never changed
  });

  test("POST /api/consent refuses bad input, other origins and unknown sites, and records nothing", async () => {
    const visitorId = `v_${randomUUID().slice(0, 12)}`;
    const good = { site: site.publicKey, visitor_id: visitorId, consent: { analytics_storage: "granted" } };
    const cases: Array<[unknown, PostOptions, number, string]> = [
      [{ ...good, consent: { analytics_storage: "yes" } }, {}, 400, "invalid_envelope"],
      [{ ...good, consent: { tracking: "granted" } }, {}, 400, "invalid_envelope"],
      [{ ...good, visitor_id: "bad id" }, {}, 400, "invalid_envelope"],
      [{ ...good, consent: "granted" }, {}, 400, "invalid_envelope"],
      [`{"site":"${site.publicKey}"`, {}, 400, "invalid_json"],
      [good, { contentType: "application/xml" }, 415, "unsupported_media_type"],
      [good, { origin: "https://evilshop.example" }, 403, "origin_not_allowed"],
      [good, { origin: null }, 403, "origin_not_allowed"],
      [{ ...good, site: "pk_nobody" }, {}, 403, "unknown_site"],
    ];
    for (const [body, options, status, code] of cases) {
      const response = await expectNothingWritten(site.id, () => post("/api/consent", body, options));
      expectRefused(response, status, code);
    }
  });

  test("POST /api/consent with a lone surrogate in any string is 400 invalid_envelope and records nothing", async () => {
    const good = { site: site.publicKey, visitor_id: `v_${randomUUID().slice(0, 12)}`, consent: { analytics_storage: "granted" } };
    // JSON.stringify sends each lone surrogate as its escape (\ud83d), which the server parses back.
    const bodies = [
      { ...good, consent: { analytics_storage: "granted\ud83d" } },
      { ...good, consent: { analytics_storage: "granted", "ad_storage\ude00": "denied" } },
      { ...good, visitor_id: `${good.visitor_id}\ud83d` },
      { ...good, site: `${site.publicKey}\ud83d` },
    ];
    for (const body of bodies) {
      expect(JSON.stringify(body)).toMatch(/\\ud83d|\\ude00/);
      const response = await expectNothingWritten(site.id, () => post("/api/consent", body));
      expectRefused(response, 400, "invalid_envelope");
    }
    // The control: the same body without the surrogates is recorded.
    expect((await post("/api/consent", good)).status).toBe(200);
  });

  test("implied: the visitor id is stored unless the event denies analytics storage", async () => {
    const visitorId = `v_${randomUUID().slice(0, 12)}`;
    const implied = event({ visitor_id: visitorId, device: DEVICE });
    const denied = event({ visitor_id: `${visitorId}_d`, device: DEVICE, consent: { analytics_storage: "denied" } });
    const response = await sync({ site: impliedSite.publicKey, events: [implied, denied] });
    expect(response.body.accepted).toBe(2);
    const kept = await storedEvent(impliedSite.id, implied.id);
    expect({ visitorId: kept!.visitor_id, device: kept!.device, key: kept!.visitor_key }).toEqual({ visitorId, device: DEVICE, key: visitorId });
    const minimised = await storedEvent(impliedSite.id, denied.id);
    expect({ visitorId: minimised!.visitor_id, device: minimised!.device }).toEqual({ visitorId: null, device: null });
    expect(minimised!.visitor_key).toMatch(/^h:/);
    expect(minimised!.row_text).not.toContain(`${visitorId}_d`);
  });

  test("implied: a recorded denial is followed by the visitor's later events", async () => {
    const visitorId = `v_${randomUUID().slice(0, 12)}`;
    expect((await post("/api/consent", { site: impliedSite.publicKey, visitor_id: visitorId, consent: { analytics_storage: "denied" } })).status).toBe(200);
    const later = event({ visitor_id: visitorId, device: DEVICE });
    await sync({ site: impliedSite.publicKey, events: [later] });
    const stored = await storedEvent(impliedSite.id, later.id);
    expect({ visitorId: stored!.visitor_id, device: stored!.device }).toEqual({ visitorId: null, device: null });
  });

  test("Google's whole consent state (functionality, personalization, security storage too) is taken; only the four signals are kept", async () => {
    const gtag = { analytics_storage: "granted", ad_storage: "denied", ad_user_data: "denied", ad_personalization: "denied",
      functionality_storage: "granted", personalization_storage: "denied", security_storage: "granted" };
    const visitorId = `v_${randomUUID().slice(0, 12)}`;
    const sent = event({ visitor_id: visitorId, consent: gtag });
    const misspelt = event({ visitor_id: visitorId, consent: { ...gtag, analytics_storag: "granted" } });
    const response = await sync({ site: site.publicKey, events: [sent, misspelt] });
    expect(response.body).toMatchObject({ accepted: 1, rejected: [{ index: 1, error: "invalid_event" }] });
    expect((await storedEvent(site.id, sent.id))!.consent)
      .toEqual({ analytics_storage: "granted", ad_storage: "denied", ad_user_data: "denied", ad_personalization: "denied" });
    expect((await storedEvent(site.id, sent.id))!.visitor_id).toBe(visitorId);

    const recorded = await post("/api/consent", { site: site.publicKey, visitor_id: visitorId, consent: { ...gtag, analytics_storage: "denied" } });
    expect(recorded.status).toBe(200);
    const later = event({ visitor_id: visitorId });
    await sync({ site: site.publicKey, events: [later] });
    expect((await storedEvent(site.id, later.id))!.consent.analytics_storage).toBe("denied");
  });

  test("implied: an event sent with \"consent\": null follows the recorded denial too, wherever it falls in the request", async () => {
    const visitorId = `v_${randomUUID().slice(0, 12)}`;
    expect((await post("/api/consent", { site: impliedSite.publicKey, visitor_id: visitorId, consent: { analytics_storage: "denied" } })).status).toBe(200);
    // First in its request, then after an event with no consent field (which looks the record up).
    const alone = event({ visitor_id: visitorId, device: DEVICE, consent: null });
    const afterAbsent = [event({ visitor_id: visitorId }), event({ visitor_id: visitorId, device: DEVICE, consent: null })];
    for (const events of [[alone], afterAbsent]) {
      expect((await sync({ site: impliedSite.publicKey, events })).body.accepted).toBe(events.length);
    }
    for (const sent of [alone, afterAbsent[1]]) {
      const stored = await storedEvent(impliedSite.id, sent.id as string);
      expect({ visitorId: stored!.visitor_id, device: stored!.device, analytics: stored!.consent.analytics_storage })
        .toEqual({ visitorId: null, device: null, analytics: "denied" });
      expect(stored!.row_text).not.toContain(visitorId);
    }
  });
});

describe("rate limit", () => {
  /** Keeps a burst inside one clock minute: waits out the last 10 seconds of the current one. */
  async function awayFromMinuteEnd(): Promise<void> {
    const { rows } = await getRootPool().query("select extract(second from clock_timestamp())::float8 as s");
    if (rows[0].s > 50) await new Promise((resolve) => setTimeout(resolve, (61 - rows[0].s) * 1000));
  }

  test("the request over rate_limit_per_minute is 429 rate_limited with Retry-After and writes nothing; 0 turns it off", async () => {
    const limited = await createTrackedSite({ rateLimit: 3 });
    await awayFromMinuteEnd();
    for (let i = 0; i < 3; i += 1) {
      const response = await sync({ site: limited.publicKey, events: [event()] });
      expect(response.status).toBe(200);
    }
    const fourth = event();
    const response = await expectNothingWritten(limited.id, () => sync({ site: limited.publicKey, events: [fourth] }));
    expectRefused(response, 429, "rate_limited");
    const retryAfter = Number(response.headers.get("retry-after"));
    expect(Number.isInteger(retryAfter)).toBe(true);
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(60);
    expect(await storedIds(limited.id, [fourth.id])).toEqual({ ledger: [], events: [] });
    // Consent records count against the same limit.
    expectRefused(await post("/api/consent", { site: limited.publicKey, visitor_id: "v_1", consent: { analytics_storage: "granted" } }), 429, "rate_limited");
    // Another site is not affected by this one's limit.
    expect((await sync({ site: site.publicKey, events: [event()] })).status).toBe(200);

    // Within the same minute, with the three hits still counted: 0 means no limit at all.
    await getRootPool().query("update app_public.sites set rate_limit_per_minute = 0 where id = $1", [limited.id]);
    for (let i = 0; i < 5; i += 1) {
      expect((await sync({ site: limited.publicKey, events: [event()] })).status).toBe(200);
    }
  });
});

describe("fail-secure", () => {
  test("a database failure mid-batch is 500 ingest_unavailable, stores none of the batch and reveals nothing", async () => {
    const poisoned = randomUUID();
    const pool = getRootPool();
    await pool.query(`
      create function app_private.test_ingest_fail_once() returns trigger language plpgsql as $$
      begin
        if new.idempotency_key = '${poisoned}' then
          raise exception 'test-only failure in trigger on app_public.ingest_idempotency for %', new.idempotency_key;
        end if;
        return new;
      end $$`);
    try {
      await pool.query(`create trigger _999_test_ingest_fail before insert on app_public.ingest_idempotency
                          for each row execute function app_private.test_ingest_fail_once()`);
      // Visitors sort before and after the poisoned one, so good rows are written before the
      // failure and must be rolled back with it.
      const batch = [
        event({ visitor_id: "a_first" }),
        event({ visitor_id: "a_second" }),
        event({ id: poisoned, visitor_id: "m_poisoned" }),
        event({ visitor_id: "z_after" }),
      ];
      const before = await counts(site.id);
      const response = await sync({ site: site.publicKey, events: batch });
      expectRefused(response, 500, "ingest_unavailable");
      expect(response.text).not.toContain(poisoned);
      expect(response.text).not.toMatch(/test-only|raise|exception/i);
      expect(await counts(site.id)).toEqual(before);
      expect(await storedIds(site.id, batch.map((e) => e.id))).toEqual({ ledger: [], events: [] });
      // The control: without the poisoned event the same kind of batch is stored.
      expect((await sync({ site: site.publicKey, events: [event(), event()] })).body.accepted).toBe(2);
    } finally {
      await pool.query("drop trigger if exists _999_test_ingest_fail on app_public.ingest_idempotency");
      await pool.query("drop function if exists app_private.test_ingest_fail_once()");
    }
  });
});

describe("group commit and lone surrogates", () => {
  test("a request with a lone surrogate in an event, or in its site key, no longer fails the other requests of its group", async () => {
    // As in ingest-concurrency.test.ts: one call in flight, the lead request held in the
    // database by the test's lock on its visitor; everything sent meanwhile leaves as one group.
    // Before, a lone surrogate reached that group's jsonb parameter and failed every request in it.
    const grouped = await startTestService({ env: { INGEST_CONCURRENCY: "1" } });
    const target = await createTrackedSite();
    const holder = await getRootPool().connect();
    const send = (body: string) => post("/api/sync", body, { base: grouped.url });
    try {
      await holder.query("begin");
      await holder.query("select pg_advisory_xact_lock(hashtextextended($1 || '/v_lead', 0))", [target.id]);
      const lead = send(JSON.stringify({ site: target.publicKey, events: [event({ visitor_id: "v_lead" })] }));
      await waitForLockWaiters(1);
      const members = Array.from({ length: 3 }, (_, i) => event({ visitor_id: `v_member_${i}` }));
      const besideCut = event({ visitor_id: "v_beside_cut" });
      const cut = event({ visitor_id: "v_cut", title: "@@" });
      const replies = Promise.all([
        ...members.map((e) => send(JSON.stringify({ site: target.publicKey, events: [e] }))),
        send(JSON.stringify({ site: target.publicKey, events: [besideCut, cut] }).replace('"@@"', '"Sale \\ud83d"')),
        send(JSON.stringify({ site: target.publicKey, events: [event()] }).replace(`"${target.publicKey}"`, `"${target.publicKey}\\ud83d"`)),
      ]);
      await new Promise((resolve) => setTimeout(resolve, 500)); // let them all arrive and queue
      await holder.query("commit");
      expect((await lead).body).toEqual({ accepted: 1, duplicates: 0, rejected: [] });
      const answered = await replies;
      expect(answered.map((r) => r.status)).toEqual([200, 200, 200, 200, 400]);
      expect(answered.slice(0, 3).map((r) => r.body)).toEqual(members.map(() => ({ accepted: 1, duplicates: 0, rejected: [] })));
      expect(answered[3].body).toEqual({ accepted: 1, duplicates: 0, rejected: [{ index: 1, error: "invalid_event", message: expect.any(String) }] });
      expectRefused(answered[4], 400, "invalid_envelope");
      const storedKeys = [...members, besideCut].map((e) => e.id).sort();
      expect(await storedIds(target.id, [...storedKeys, cut.id])).toEqual({ ledger: storedKeys, events: storedKeys });
      // They really went as one group: one transaction, one received_at.
      const { rows } = await getRootPool().query(
        "select count(distinct received_at)::int as transactions from app_public.ingest_idempotency where idempotency_key = any($1::uuid[])",
        [storedKeys]);
      expect(rows[0].transactions).toBe(1);
    } finally {
      await holder.query("rollback").catch(() => {});
      holder.release();
      await grouped.stop();
    }
  });
});

describe("raw client IP is never stored", () => {
  const LOOPBACK = ["127.0.0.1", "::1", "::ffff:127.0.0.1"];

  test("after requests over IPv4 and IPv6, no text, json, bytea or inet column anywhere holds the client IP", async () => {
    // Make sure both address families have just been through every writing path.
    const port = new URL(service.url).port;
    for (const base of [`http://127.0.0.1:${port}`, `http://[::1]:${port}`]) {
      const visitorId = `v_${randomUUID().slice(0, 8)}`;
      for (const target of [site, impliedSite]) {
        expect((await sync({ site: target.publicKey, events: [event({ visitor_id: visitorId })] }, { base })).status).toBe(200);
        expect((await post("/api/consent", { site: target.publicKey, visitor_id: visitorId, consent: { analytics_storage: "granted" } }, { base })).status).toBe(200);
      }
      const limited = await createTrackedSite({ rateLimit: 1000 });
      expect((await sync({ site: limited.publicKey, events: [event()] }, { base })).status).toBe(200);
    }
    const pool = getRootPool();
    const { rows: columns } = await pool.query(`
      select c.oid::regclass::text as relation, a.attname as column_name, t.typname as type_name, t.typcategory as category
        from pg_class c
        join pg_namespace n on n.oid = c.relnamespace
        join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
        join pg_type t on t.oid = a.atttypid
       where n.nspname in ('app_public', 'app_private') and c.relkind = 'r'
         and (t.typcategory in ('S', 'A', 'I') or t.typname in ('json', 'jsonb', 'bytea'))`);
    // The scan must reach partitions and the private tables, or it proves nothing.
    const relations = new Set(columns.map((c) => c.relation));
    expect(relations).toContain("app_private.rate_counters");
    expect(relations).toContain("app_public.consents");
    expect([...relations].some((r) => /^app_public\.events_p/.test(r))).toBe(true);

    const found: string[] = [];
    for (const column of columns) {
      const ident = `${quoteIdent(column.column_name)}`;
      const sql = column.type_name === "bytea"
        // Binary columns hold hashes: look for the address as text (long enough not to turn up
        // by chance in random bytes, or the whole value printable) and in its binary forms.
        ? `select count(*)::int as n from ${column.relation}
            where exists (select 1 from unnest($1::text[]) ip
                           where position(convert_to(ip, 'UTF8') in ${ident}) > 0
                             and (length(ip) >= 9 or encode(${ident}, 'escape') ~ '^[ -~]*$'))
               or position('\\x7f000001'::bytea in ${ident}) > 0
               or position('\\x00000000000000000000000000000001'::bytea in ${ident}) > 0`
        : `select count(*)::int as n from ${column.relation}
            where exists (select 1 from unnest($1::text[]) ip where strpos(${ident}::text, ip) > 0)`;
      const { rows } = await pool.query(sql, [LOOPBACK]);
      if (rows[0].n > 0) found.push(`${column.relation}.${column.column_name}`);
    }
    expect(found).toEqual([]);
  });
});

function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}
