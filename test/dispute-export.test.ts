/*
 * GET /api/billing/dispute-export.csv (SPEC §5, §9) through the real express app over real
 * HTTP. The export is the tenant's proof: its first three columns must hash, exactly as the
 * README's shell recipe does it, to the frozen invoice's ledger_digest; it must hold exactly
 * the site's rows of the month, in bytewise key order; only owners and admins may read it, and
 * every refusal is a JSON error (a denial also lands in the site's audit chain).
 * Fixtures are committed, because the service reads them on its own connections.
 */
import { execFileSync } from "node:child_process";
import { createHash, randomUUID } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { addMember, createApiKey, createUser, getRootPool, unique } from "./helpers/db";
import { flushDenials, readBody, startTestService, TestService, tokenFor } from "./helpers/http";

const HEADER = "idempotency_key,occurred_at,billable,received_at,reason";
const EMPTY_SHA256 = createHash("sha256").update("").digest("hex");
const OCTOBER = "2026-10"; // past its grace (8 days after the month's end) on 2026-11-23
const SEPTEMBER = "2026-09";
const AUGUST = "2026-08"; // no rows at all for the main site
const BIG_ROWS = 20_000;

interface LedgerRow {
  key: string; // as written into SQL; may be upper-case
  occurredAt: string; // ISO-8601 with microseconds and zone
  receivedAt: string;
  billable: boolean;
}

interface Reply {
  status: number;
  headers: Headers;
  text: string;
  body: any;
}

let service: TestService;
let tmp: string;
const fx = {} as {
  siteId: string;
  publicKey: string;
  ownerToken: string;
  adminToken: string;
  viewerId: string;
  viewerToken: string;
  adminKey: string;
  viewerKey: string;
  otherSiteId: string;
  otherOwnerToken: string;
  bigSiteId: string;
  bigOwnerToken: string;
};

/* ------------------------------------------------------------- helpers */

/** The digest's text of a timestamp: milliseconds, truncated (not rounded), UTC, Z. */
function msText(iso: string): string {
  const utc = new Date(iso.replace(/\.\d+/, "")).toISOString().slice(0, 19); // whole seconds, moved to UTC
  const fraction = (/\.(\d+)/.exec(iso)?.[1] ?? "").padEnd(3, "0").slice(0, 3);
  return `${utc}.${fraction}Z`;
}

/** The CSV line the export must write for a row: key (lower-case), occurred_at, billable, received_at, reason. */
function exportLine(row: LedgerRow): string {
  return `${row.key.toLowerCase()},${msText(row.occurredAt)},${row.billable},${msText(row.receivedAt)},${row.billable ? "" : "bot"}`;
}

/** Bytewise on ASCII: JavaScript compares UTF-16 code units, which for hex and '-' are the bytes. */
const bytewise = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

const sha256 = (text: string) => createHash("sha256").update(text, "utf8").digest("hex");

/** SPEC §9 recomputed from CSV lines: the first three columns, each line ending in \n. */
function digestOfLines(lines: string[]): string {
  return sha256(lines.map((l) => `${l.split(",").slice(0, 3).join(",")}\n`).join(""));
}

async function insertLedger(siteId: string, rows: LedgerRow[]): Promise<void> {
  for (const row of rows) {
    await getRootPool().query(
      `insert into app_public.ingest_idempotency (site_id, idempotency_key, occurred_at, received_at, billable, reason)
       values ($1, $2, $3, $4, $5, case when $5 then null else 'bot' end)`,
      [siteId, row.key, row.occurredAt, row.receivedAt, row.billable]);
  }
}

async function freeze(siteId: string, month: string): Promise<string> {
  const { rows } = await getRootPool().query("select ledger_digest from app_public.freeze_invoice($1, $2::date)", [siteId, `${month}-01`]);
  return rows[0].ledger_digest;
}

async function download(query: string, auth?: string): Promise<Reply> {
  const response = await fetch(`${service.url}/api/billing/dispute-export.csv${query}`, {
    headers: auth ? { authorization: `Bearer ${auth}` } : {},
  });
  const { text, body } = await readBody(response);
  return { status: response.status, headers: response.headers, text, body };
}

/** The data lines of a CSV body (header removed, trailing newline required). */
function dataLines(reply: Reply): string[] {
  expect(reply.text.endsWith("\n")).toBe(true);
  const [header, ...lines] = reply.text.slice(0, -1).split("\n");
  expect(header).toBe(HEADER);
  return lines;
}

function expectRefused(reply: Reply, status: number, code: string): void {
  expect({ status: reply.status, error: reply.body?.error }).toEqual({ status, error: code });
  expect(reply.headers.get("content-type")).toMatch(/^application\/json/);
  expect(Object.keys(reply.body).sort()).toEqual(["error", "message"]);
  // A refusal must not look like (or contain) a CSV.
  expect(reply.text).not.toContain("idempotency_key");
}

/** The README recipe, run by a real shell on the downloaded file. */
function shellDigest(csv: string): string {
  const file = path.join(tmp, `${randomUUID()}.csv`);
  writeFileSync(file, csv);
  const out = execFileSync("sh", ["-c", 'tail -n +2 "$1" | cut -d, -f1-3 | sha256sum', "sh", file], { encoding: "utf8" });
  return out.split(/\s+/)[0];
}

/* ------------------------------------------------------------- fixture */

// Keys chosen so that every plausible wrong ordering differs from the bytewise one: mixed case
// as sent (B… before a… as raw text, after it in lower case), digits against letters, keys
// equal up to the last character, and occurred_at / insertion order unlike key order.
const MAIN_ROWS: LedgerRow[] = [
  { key: "B0000000-0000-4000-8000-000000000000", occurredAt: "2026-10-01T00:00:00.000000Z", receivedAt: "2026-10-01T00:00:01.000000Z", billable: true },
  { key: "a0000000-0000-4000-8000-000000000000", occurredAt: "2026-10-15T10:20:30.123999Z", receivedAt: "2026-10-15T10:20:31.456789Z", billable: true },
  { key: "9fffffff-ffff-4fff-bfff-ffffffffffff", occurredAt: "2026-10-02T00:00:00.5+03:00", receivedAt: "2026-10-02T00:00:00.999999Z", billable: false },
  { key: "AAAAAAAA-AAAA-4AAA-8AAA-AAAAAAAAAAA1", occurredAt: "2026-10-31T23:59:59.999999Z", receivedAt: "2026-11-01T00:00:02.000001Z", billable: true },
  { key: "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaa0", occurredAt: "2026-10-20T12:00:00.000999Z", receivedAt: "2026-10-20T12:00:00.001Z", billable: false },
  { key: "00000000-0000-4000-8000-00000000000f", occurredAt: "2026-10-09T08:07:06.054321Z", receivedAt: "2026-10-09T08:07:06.054321Z", billable: true },
  { key: "f0000000-0000-4000-8000-000000000000", occurredAt: "2026-10-03T03:03:03.3Z", receivedAt: "2026-10-03T03:03:03.3Z", billable: true },
  // The same key again, earlier in the month and stored later: a retry more than 8 days from the
  // first copy is a new event (README, known bounds). Equal keys go in time order, so the
  // export and the digest agree whatever order the rows sit in on disk.
  { key: "f0000000-0000-4000-8000-000000000000", occurredAt: "2026-10-01T00:00:00.000Z", receivedAt: "2026-10-12T00:00:00Z", billable: true },
];
// Rows of the same site just outside October: they must not appear in its export.
const OUTSIDE_ROWS: LedgerRow[] = [
  { key: "11111111-0000-4000-8000-000000000001", occurredAt: "2026-09-30T23:59:59.999999Z", receivedAt: "2026-10-01T00:00:00Z", billable: true },
  { key: "11111111-0000-4000-8000-000000000002", occurredAt: "2026-11-01T00:00:00.000000Z", receivedAt: "2026-11-01T00:00:00Z", billable: true },
];
// Another tenant's October rows (one shares a key with the main site: keys are per site).
const OTHER_ROWS: LedgerRow[] = [
  { key: "a0000000-0000-4000-8000-000000000000", occurredAt: "2026-10-15T10:20:30.123Z", receivedAt: "2026-10-15T10:20:31Z", billable: true },
  { key: "22222222-0000-4000-8000-000000000001", occurredAt: "2026-10-10T10:10:10Z", receivedAt: "2026-10-10T10:10:10Z", billable: true },
];

async function createSiteFor(ownerId: string, domain: string): Promise<{ id: string; publicKey: string }> {
  const { rows } = await getRootPool().query(
    `select id, public_key from app_private.create_site($1, $2, $3, rate_limit_per_minute => 0,
       allowed_origins => array['https://' || $3])`, [ownerId, unique("Shop"), domain]);
  return { id: rows[0].id, publicKey: rows[0].public_key };
}

beforeAll(async () => {
  tmp = mkdtempSync(path.join(tmpdir(), "dispute-export-"));
  const client = await getRootPool().connect();
  let ownerId: string, adminId: string, otherOwnerId: string, bigOwnerId: string;
  try {
    ownerId = await createUser(client);
    adminId = await createUser(client);
    fx.viewerId = await createUser(client);
    otherOwnerId = await createUser(client);
    bigOwnerId = await createUser(client);
  } finally {
    client.release();
  }
  const main = await createSiteFor(ownerId, "shop.example");
  fx.siteId = main.id;
  fx.publicKey = main.publicKey;
  fx.otherSiteId = (await createSiteFor(otherOwnerId, "other.example")).id;
  fx.bigSiteId = (await createSiteFor(bigOwnerId, "big.example")).id;
  const client2 = await getRootPool().connect();
  try {
    await addMember(client2, fx.siteId, adminId, "admin");
    await addMember(client2, fx.siteId, fx.viewerId, "viewer");
    fx.adminKey = (await createApiKey(client2, fx.siteId, "admin")).key;
    fx.viewerKey = (await createApiKey(client2, fx.siteId, "viewer")).key;
  } finally {
    client2.release();
  }
  [fx.ownerToken, fx.adminToken, fx.viewerToken, fx.otherOwnerToken, fx.bigOwnerToken] =
    await Promise.all([ownerId, adminId, fx.viewerId, otherOwnerId, bigOwnerId].map((id) => tokenFor(id)));

  await insertLedger(fx.siteId, [...MAIN_ROWS, ...OUTSIDE_ROWS]);
  await insertLedger(fx.otherSiteId, OTHER_ROWS);
  await freeze(fx.siteId, OCTOBER);
  await freeze(fx.siteId, AUGUST); // an empty month, frozen

  // A large month: random keys and microsecond timestamps, one row in ten a bot.
  await getRootPool().query(
    `insert into app_public.ingest_idempotency (site_id, idempotency_key, occurred_at, received_at, billable, reason)
     select $1, gen_random_uuid(), timestamptz '2026-09-01 00:00:00+00' + random() * interval '29 days 23 hours',
            timestamptz '2026-10-01 00:00:00+00', g % 10 <> 0, case when g % 10 = 0 then 'bot' end
       from generate_series(1, $2::int) g`, [fx.bigSiteId, BIG_ROWS]);
  await freeze(fx.bigSiteId, SEPTEMBER);

  service = await startTestService();
});

afterAll(async () => {
  await service?.stop();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

/**
 * The service's database sessions that are busy or inside a transaction. Between requests
 * every one of them is idle; an export that ended (well or not) leaves none behind.
 */
async function busyServiceSessions(): Promise<number> {
  const { rows } = await getRootPool().query(
    `select count(*)::int as n from pg_stat_activity
      where datname = current_database() and usename = 'opsmantik_authenticator' and state is distinct from 'idle'`);
  return rows[0].n;
}

/** Polls until no service session is busy (or five seconds have passed); returns the last count. */
async function settledBusySessions(): Promise<number> {
  let busy = await busyServiceSessions();
  for (let waited = 0; busy > 0 && waited < 5000; waited += 50) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    busy = await busyServiceSessions();
  }
  return busy;
}

/* ------------------------------------------------------------- content */

describe("the export's content is the digest's input", () => {
  test("an owner gets 200 text/csv with exactly the header, then the site's month in bytewise key order (equal keys by time)", async () => {
    const reply = await download(`?period=${OCTOBER}&site=${fx.siteId}`, fx.ownerToken);
    expect(reply.status).toBe(200);
    expect(reply.headers.get("content-type")).toMatch(/^text\/csv\b/);
    expect(reply.text.split("\n")[0]).toBe(HEADER);
    const expected = MAIN_ROWS.map(exportLine).sort(bytewise);
    // Exactly these lines: no neighbouring month (OUTSIDE_ROWS), no other tenant (OTHER_ROWS),
    // milliseconds truncated (…30.123999 → .123; 23:59:59.999999 stays in October as .999),
    // zone moved to UTC, and reason 'bot' on exactly the non-billable rows.
    expect(dataLines(reply)).toEqual(expected);
  });

  test("the first three columns hash to the frozen snapshot's digest and to the X-Invoice-Ledger-Digest header", async () => {
    const reply = await download(`?period=${OCTOBER}&site=${fx.siteId}`, fx.ownerToken);
    expect(reply.status).toBe(200);
    const { rows: [snapshot] } = await getRootPool().query(
      "select ledger_digest, billable_events::int, non_billable_events::int from app_public.invoice_snapshots where site_id = $1 and period = $2",
      [fx.siteId, `${OCTOBER}-01`]);
    const lines = dataLines(reply);
    expect(digestOfLines(lines)).toBe(snapshot.ledger_digest);
    expect(reply.headers.get("x-invoice-ledger-digest")).toBe(snapshot.ledger_digest);
    // And the digest is the SPEC's, computed here from the fixture alone, not from anything the server wrote.
    const specLines = MAIN_ROWS.map((r) => `${r.key.toLowerCase()},${msText(r.occurredAt)},${r.billable}`).sort(bytewise);
    expect(snapshot.ledger_digest).toBe(sha256(specLines.map((l) => `${l}\n`).join("")));
    expect(snapshot).toMatchObject({ billable_events: 6, non_billable_events: 2 });
  });

  test("the README's shell recipe (tail | cut | sha256sum) reproduces the digest from the downloaded file", async () => {
    const reply = await download(`?period=${OCTOBER}&site=${fx.siteId}`, fx.ownerToken);
    expect(reply.status).toBe(200);
    expect(shellDigest(reply.text)).toBe(reply.headers.get("x-invoice-ledger-digest"));
  });

  test("an admin API key needs no site parameter: its site is implied", async () => {
    const reply = await download(`?period=${OCTOBER}`, fx.adminKey);
    expect(reply.status).toBe(200);
    expect(dataLines(reply)).toEqual(MAIN_ROWS.map(exportLine).sort(bytewise));
  });

  test("an admin (not only the owner) may export", async () => {
    const reply = await download(`?period=${OCTOBER}&site=${fx.siteId.toUpperCase()}`, fx.adminToken);
    expect(reply.status).toBe(200);
    expect(dataLines(reply)).toHaveLength(MAIN_ROWS.length);
  });

  test("a month without rows is the header alone, and a frozen empty month's digest is SHA-256 of nothing", async () => {
    const reply = await download(`?period=${AUGUST}&site=${fx.siteId}`, fx.ownerToken);
    expect(reply.status).toBe(200);
    expect(reply.text).toBe(`${HEADER}\n`);
    expect(reply.headers.get("x-invoice-ledger-digest")).toBe(EMPTY_SHA256);
    expect(shellDigest(reply.text)).toBe(EMPTY_SHA256);
  });

  test("an unfrozen month exports without a digest header; a bot's event (through ingest) carries reason 'bot'", async () => {
    // The current month, through the real ingest path: one visitor, one bot.
    const now = Date.now() - 1000;
    const human = { id: randomUUID(), type: "pageview", ts: new Date(now).toISOString(), visitor_id: "v_human", url: "https://shop.example/" };
    const bot = { id: randomUUID(), type: "pageview", ts: new Date(now).toISOString(), visitor_id: "v_bot", url: "https://shop.example/" };
    for (const [event, ua] of [[human, "Mozilla/5.0"], [bot, "Googlebot/2.1"]] as const) {
      const { rows: [{ result }] } = await getRootPool().query(
        "select app_private.ingest_events($1, $2::jsonb, 'https://shop.example', '10.0.0.1', $3, '{}') as result",
        [fx.publicKey, JSON.stringify([event]), ua]);
      expect(result).toMatchObject({ accepted: 1, rejected: [] });
    }
    const month = new Date(now).toISOString().slice(0, 7);
    const reply = await download(`?period=${month}&site=${fx.siteId}`, fx.ownerToken);
    expect(reply.status).toBe(200);
    expect(reply.headers.get("x-invoice-ledger-digest")).toBeNull();
    const byKey = new Map(dataLines(reply).map((l) => [l.split(",")[0], l.split(",")]));
    expect(byKey.get(human.id)).toEqual([human.id, expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/), "true", expect.any(String), ""]);
    expect(byKey.get(bot.id)).toEqual([bot.id, expect.any(String), "false", expect.stringMatching(/Z$/), "bot"]);
    // Even unfrozen, the export hashes to what freezing would write now.
    const { rows: [{ digest }] } = await getRootPool().query(
      "select app_private.compute_ledger_digest($1, $2::date) as digest", [fx.siteId, `${month}-01`]);
    expect(digestOfLines(dataLines(reply))).toBe(digest);
  });

  test("a reason with a comma or a quote is quoted as CSV; the first three columns and the recipe are unaffected", async () => {
    const key = "33333333-0000-4000-8000-000000000001";
    await getRootPool().query(
      `insert into app_public.ingest_idempotency (site_id, idempotency_key, occurred_at, received_at, billable, reason)
       values ($1, $2, '2026-06-10T10:00:00Z', '2026-06-10T10:00:01Z', false, 'import, "legacy"')`, [fx.siteId, key]);
    const digest = await freeze(fx.siteId, "2026-06");
    const reply = await download(`?period=2026-06&site=${fx.siteId}`, fx.ownerToken);
    expect(reply.status).toBe(200);
    expect(reply.text).toBe(`${HEADER}\n${key},2026-06-10T10:00:00.000Z,false,2026-06-10T10:00:01.000Z,"import, ""legacy"""\n`);
    expect(shellDigest(reply.text)).toBe(digest);
    expect(reply.headers.get("x-invoice-ledger-digest")).toBe(digest);
    expect(digest).toBe(sha256(`${key},2026-06-10T10:00:00.000Z,false\n`));
  });

  test(`a large month (${BIG_ROWS} rows) streams completely, in order, and hashes to its snapshot`, async () => {
    const reply = await download(`?period=${SEPTEMBER}&site=${fx.bigSiteId}`, fx.bigOwnerToken);
    expect(reply.status).toBe(200);
    const lines = dataLines(reply);
    expect(lines).toHaveLength(BIG_ROWS);
    const keys = lines.map((l) => l.split(",")[0]);
    expect(keys).toEqual([...keys].sort(bytewise));
    expect(lines.filter((l) => l.endsWith(",false,2026-10-01T00:00:00.000Z,bot"))).toHaveLength(BIG_ROWS / 10);
    const { rows: [snapshot] } = await getRootPool().query(
      "select ledger_digest from app_public.invoice_snapshots where site_id = $1 and period = '2026-09-01'", [fx.bigSiteId]);
    expect(digestOfLines(lines)).toBe(snapshot.ledger_digest);
    expect(reply.headers.get("x-invoice-ledger-digest")).toBe(snapshot.ledger_digest);
    expect(shellDigest(reply.text)).toBe(snapshot.ledger_digest);
  });

  test("a client that gives up before the first byte does not leave the export's transaction open", async () => {
    // The same leak, made deterministic: the handler is held (a lock on invoice_snapshots) in its
    // queries before the header is written while the client hangs up; then it is let go. A
    // write to the closed socket returns false and 'drain' never comes: a handler that waits
    // for it without also watching 'close' hangs with its transaction open.
    const blocker = await getRootPool().connect();
    try {
      await blocker.query("begin");
      await blocker.query("lock table app_public.invoice_snapshots in access exclusive mode");
      const controller = new AbortController();
      const pending = fetch(`${service.url}/api/billing/dispute-export.csv?period=${SEPTEMBER}&site=${fx.bigSiteId}`,
        { headers: { authorization: `Bearer ${fx.bigOwnerToken}` }, signal: controller.signal }).catch(() => "aborted");
      let waiting = 0;
      for (let waited = 0; waiting === 0 && waited < 5000; waited += 50) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        waiting = (await getRootPool().query(
          `select count(*)::int as n from pg_stat_activity
            where datname = current_database() and usename = 'opsmantik_authenticator' and wait_event_type = 'Lock'
              and query like 'select ledger_digest from app_public.invoice_snapshots%'`)).rows[0].n;
      }
      expect(waiting).toBe(1); // the handler is inside its transaction, before the first byte
      controller.abort();
      expect(await pending).toBe("aborted");
      await new Promise((resolve) => setTimeout(resolve, 200)); // let the server see the close
    } finally {
      await blocker.query("rollback");
      blocker.release();
    }
    expect(await settledBusySessions()).toBe(0);
  });

  test("a client that hangs up mid-export does not leave the database connection in an open transaction", async () => {
    // Backpressure waits for 'drain'; a socket that closes never drains. Unless the handler also
    // stops on 'close', it keeps its pooled connection (in a read-only transaction whose locks on
    // the ledger partitions block ledger_cleanup) forever, and the service cannot stop.
    for (let attempt = 0; attempt < 10; attempt++) {
      const controller = new AbortController();
      const response = await fetch(`${service.url}/api/billing/dispute-export.csv?period=${SEPTEMBER}&site=${fx.bigSiteId}`,
        { headers: { authorization: `Bearer ${fx.bigOwnerToken}` }, signal: controller.signal });
      expect(response.status).toBe(200);
      const reader = response.body!.getReader();
      await reader.read(); // the first chunk only
      controller.abort();
      await reader.cancel().catch(() => {});
      expect({ attempt, busy: await settledBusySessions() }).toEqual({ attempt, busy: 0 });
    }
    // And the service still answers an export afterwards.
    const reply = await download(`?period=${SEPTEMBER}&site=${fx.bigSiteId}`, fx.bigOwnerToken);
    expect(dataLines(reply)).toHaveLength(BIG_ROWS);
  });
});

/* ------------------------------------------------------------- refusals */

describe("who may export, and malformed requests", () => {
  test("a viewer is refused 403 forbidden, and the denial is appended to the site's audit chain", async () => {
    const chain = async () => (await getRootPool().query(
      "select seq::int, action, target_table, target_id, actor_user_id from app_public.audit_log where site_id = $1 order by seq desc limit 1",
      [fx.siteId])).rows[0];
    const before = await chain();
    const reply = await download(`?period=${OCTOBER}&site=${fx.siteId}`, fx.viewerToken);
    expectRefused(reply, 403, "forbidden");
    await flushDenials();
    const after = await chain();
    expect(after).toEqual({
      seq: before.seq + 1, action: "denied:dispute_export", target_table: "ingest_idempotency", target_id: fx.siteId,
      actor_user_id: fx.viewerId,
    });
    const { rows: [verification] } = await getRootPool().query(
      "select ok, first_bad_seq from app_public.verify_audit_chain($1)", [fx.siteId]);
    expect(verification).toEqual({ ok: true, first_bad_seq: null });
  });

  test("a viewer API key (site implied) is refused 403", async () => {
    expectRefused(await download(`?period=${OCTOBER}`, fx.viewerKey), 403, "forbidden");
  });

  test("another tenant's owner is refused 403 for this site, and the site's admin key for the other tenant", async () => {
    expectRefused(await download(`?period=${OCTOBER}&site=${fx.siteId}`, fx.otherOwnerToken), 403, "forbidden");
    expectRefused(await download(`?period=${OCTOBER}&site=${fx.otherSiteId}`, fx.adminKey), 403, "forbidden");
    // The control: the other tenant's owner may read their own month.
    const own = await download(`?period=${OCTOBER}&site=${fx.otherSiteId}`, fx.otherOwnerToken);
    expect(own.status).toBe(200);
    expect(dataLines(own)).toHaveLength(OTHER_ROWS.length);
  });

  test("a site id that does not exist is refused like a foreign one (403), revealing nothing", async () => {
    expectRefused(await download(`?period=${OCTOBER}&site=${randomUUID()}`, fx.ownerToken), 403, "forbidden");
  });

  test("no credentials: 401 unauthenticated", async () => {
    expectRefused(await download(`?period=${OCTOBER}&site=${fx.siteId}`), 401, "unauthenticated");
  });

  test.each([
    ["month 13", "?period=2026-13"],
    ["a one-digit month", "?period=2026-1"],
    ["a full date", "?period=2026-10-01"],
    ["month 00", "?period=2026-00"],
    ["no period", ""],
  ])("a bad period (%s) is 400 invalid_period", async (_name, query) => {
    const sep = query ? "&" : "?";
    expectRefused(await download(`${query}${sep}site=${fx.siteId}`, fx.ownerToken), 400, "invalid_period");
  });

  test.each([
    ["not a UUID", "&site=shop.example"],
    ["SQL", "&site=1'%20or%20'1'='1"],
    ["missing (for a user, who has no implied site)", ""],
  ])("a bad site (%s) is 400 invalid_site", async (_name, query) => {
    expectRefused(await download(`?period=${OCTOBER}${query}`, fx.ownerToken), 400, "invalid_site");
  });
});
