/*
 * The revenue kernel (SPEC §6, §9): freeze_invoice writes one immutable snapshot per site and
 * month whose ledger_digest anyone can recompute (here with node:crypto, from the fixture
 * alone); the grace, period and site rules refuse with their documented codes and write
 * nothing; snapshots refuse every change for every role and are audited; reconciliation names
 * each disagreement between ledger, events and snapshot; only admins and owners may freeze or
 * reconcile; a frozen month takes no more events; the daily schedule freezes exactly the months
 * whose grace has passed. The dates assume the test clock of 2026-11-23 (partitions exist from
 * 2026-07): September and October 2026 are past their grace, November is not.
 */
import { createHash, randomUUID } from "node:crypto";
import pg from "pg";
import {
  addMember, becomeRoot, becomeUser, createApiKey, createSite, createUser, getRootPool, sqlState, unique, withRootDb,
} from "./helpers/db";
import { flushDenials, startTestService, TestService, tokenFor } from "./helpers/http";
import { loadTaskList } from "../src/worker/runner";

const SEPTEMBER = "2026-09-01";
const OCTOBER = "2026-10-01";
const EMPTY_SHA256 = createHash("sha256").update("").digest("hex");

interface LedgerRow {
  key: string; // as written into SQL; may be upper-case
  occurredAt: string; // ISO-8601, often with microseconds
  billable: boolean;
}

interface Snapshot {
  site_id: string;
  period: string;
  frozen_at: string; // text, to keep the microseconds
  billable_events: number;
  non_billable_events: number;
  ledger_digest: string;
  frozen_by: string;
}

interface Fixture {
  siteId: string;
  publicKey: string;
  ownerId: string;
  adminId: string;
  editorId: string;
  viewerId: string;
  adminKeyId: string;
  viewerKeyId: string;
  otherSiteId: string;
  otherAdminId: string;
}

/* ------------------------------------------------------------- helpers */

/** The digest's text of a timestamp: UTC, milliseconds truncated (never rounded), Z. */
function msText(iso: string): string {
  const utc = new Date(iso.replace(/\.\d+/, "")).toISOString().slice(0, 19);
  const fraction = (/\.(\d+)/.exec(iso)?.[1] ?? "").padEnd(3, "0").slice(0, 3);
  return `${utc}.${fraction}Z`;
}

const lineOf = (row: LedgerRow) => `${row.key.toLowerCase()},${msText(row.occurredAt)},${row.billable}`;
const bytewise = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/** SPEC §9, computed independently of the database. */
function expectedDigest(rows: LedgerRow[]): string {
  return createHash("sha256").update(rows.map(lineOf).sort(bytewise).map((l) => `${l}\n`).join(""), "utf8").digest("hex");
}

async function insertLedger(client: pg.ClientBase, siteId: string, rows: LedgerRow[]): Promise<void> {
  for (const row of rows) {
    await client.query(
      `insert into app_public.ingest_idempotency (site_id, idempotency_key, occurred_at, billable, reason)
       values ($1, $2, $3, $4, case when $4 then null else 'bot' end)`, [siteId, row.key, row.occurredAt, row.billable]);
  }
}

async function insertEvents(client: pg.ClientBase, siteId: string, rows: LedgerRow[]): Promise<void> {
  for (const row of rows) {
    await client.query(
      `insert into app_public.events (site_id, id, occurred_at, type, visitor_key, consent)
       values ($1, $2, $3, 'pageview', 'v_test', '{}')`, [siteId, row.key, row.occurredAt]);
  }
}

const SNAPSHOT_COLUMNS = `site_id, period::text as period, frozen_at::text as frozen_at, billable_events::int as billable_events,
  non_billable_events::int as non_billable_events, ledger_digest, frozen_by`;

async function freeze(client: pg.ClientBase, siteId: string, period: string): Promise<Snapshot> {
  const { rows } = await client.query(`select ${SNAPSHOT_COLUMNS} from app_public.freeze_invoice($1, $2::date)`, [siteId, period]);
  return rows[0];
}

async function snapshotsOf(client: pg.ClientBase, siteId: string): Promise<Snapshot[]> {
  const { rows } = await client.query(
    `select ${SNAPSHOT_COLUMNS} from app_public.invoice_snapshots where site_id = $1 order by period`, [siteId]);
  return rows;
}

async function reconcile(client: pg.ClientBase, siteId: string, period: string) {
  const { rows } = await client.query(
    `select site_id, period::text as period, ledger_billable::int as ledger_billable, ledger_non_billable::int as ledger_non_billable,
            events_stored::int as events_stored, frozen, snapshot_billable::int as snapshot_billable, snapshot_digest, ledger_digest, drift
       from app_public.billing_reconciliation($1, $2::date)`, [siteId, period]);
  return rows[0];
}

async function chainLength(client: pg.ClientBase, siteId: string): Promise<number> {
  return (await client.query("select count(*)::int as n from app_public.audit_log where site_id = $1", [siteId])).rows[0].n;
}

/** One site with a member of every role and two API keys, plus a second tenant with its own admin. */
async function makeFixture(client: pg.ClientBase): Promise<Fixture> {
  const ownerId = await createUser(client);
  const adminId = await createUser(client);
  const editorId = await createUser(client);
  const viewerId = await createUser(client);
  const { id: siteId, publicKey } = await createSite(client, ownerId);
  await addMember(client, siteId, adminId, "admin");
  await addMember(client, siteId, editorId, "editor");
  await addMember(client, siteId, viewerId, "viewer");
  const { id: adminKeyId } = await createApiKey(client, siteId, "admin");
  const { id: viewerKeyId } = await createApiKey(client, siteId, "viewer");
  const otherOwnerId = await createUser(client);
  const otherAdminId = await createUser(client);
  const { id: otherSiteId } = await createSite(client, otherOwnerId, "other.example");
  await addMember(client, otherSiteId, otherAdminId, "admin");
  return { siteId, publicKey, ownerId, adminId, editorId, viewerId, adminKeyId, viewerKeyId, otherSiteId, otherAdminId };
}

// September rows chosen against every plausible mistake: keys sent in mixed case (raw-text
// order B… < a…, lower-case order a… < b…), digits against letters, keys equal up to the last
// character, neither insertion nor occurred_at order equal to key order; microseconds that
// rounding would carry (…123999 → .123, 23:59:59.999999 on the month's last day stays in
// September as .999), a non-UTC offset, and the month's first instant.
const SEPTEMBER_ROWS: LedgerRow[] = [
  { key: "B0000000-0000-4000-8000-000000000000", occurredAt: "2026-09-01T00:00:00.000000Z", billable: true },
  { key: "a0000000-0000-4000-8000-000000000000", occurredAt: "2026-09-15T10:20:30.123999Z", billable: true },
  { key: "9fffffff-ffff-4fff-bfff-ffffffffffff", occurredAt: "2026-09-02T00:00:00.5+03:00", billable: false },
  { key: "AAAAAAAA-AAAA-4AAA-8AAA-AAAAAAAAAAA1", occurredAt: "2026-09-30T23:59:59.999999Z", billable: true },
  { key: "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaa0", occurredAt: "2026-09-20T12:00:00.000999Z", billable: false },
  { key: "00000000-0000-4000-8000-00000000000f", occurredAt: "2026-09-09T08:07:06.054321Z", billable: true },
];
// Same site, neighbouring months; and the other tenant's September: none of them in the digest.
const NEIGHBOUR_ROWS: LedgerRow[] = [
  { key: "11111111-0000-4000-8000-000000000001", occurredAt: "2026-08-31T23:59:59.999999Z", billable: true },
  { key: "11111111-0000-4000-8000-000000000002", occurredAt: "2026-10-01T00:00:00.000000Z", billable: true },
];

/* ------------------------------------------------------------- freezing */

describe("freeze_invoice", () => {
  test("the ledger lines truncate occurred_at to milliseconds in UTC (to_char MS), as the digest and export need", () =>
    withRootDb(async (client) => {
      // If MS rounded, 23:59:59.999999 would become the next month's first instant.
      const { rows } = await client.query(
        `select app_hidden.ledger_line('AAAAAAAA-AAAA-4AAA-8AAA-AAAAAAAAAAA1', '2026-09-30 23:59:59.999999+00', true) as a,
                app_hidden.ledger_line('a0000000-0000-4000-8000-000000000000', '2026-09-15 10:20:30.123999+00', false) as b,
                app_hidden.ledger_line('9fffffff-ffff-4fff-bfff-ffffffffffff', '2026-09-02 00:00:00.5+03', true) as c`);
      expect(rows[0]).toEqual({
        a: "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaa1,2026-09-30T23:59:59.999Z,true",
        b: "a0000000-0000-4000-8000-000000000000,2026-09-15T10:20:30.123Z,false",
        c: "9fffffff-ffff-4fff-bfff-ffffffffffff,2026-09-01T21:00:00.500Z,true",
      });
    }));

  test("the digest is SPEC §9's SHA-256 recomputed here, over exactly the site's rows of the month", () =>
    withRootDb(async (client) => {
      const fx = await makeFixture(client);
      // Inserted in an order that is neither key order nor time order.
      await insertLedger(client, fx.siteId, [...SEPTEMBER_ROWS.slice(3), ...NEIGHBOUR_ROWS, ...SEPTEMBER_ROWS.slice(0, 3)]);
      await insertLedger(client, fx.otherSiteId, [{ key: randomUUID(), occurredAt: "2026-09-10T00:00:00Z", billable: true }]);
      const snapshot = await freeze(client, fx.siteId, SEPTEMBER);
      expect(snapshot).toMatchObject({
        site_id: fx.siteId, period: SEPTEMBER, billable_events: 4, non_billable_events: 2,
        ledger_digest: expectedDigest(SEPTEMBER_ROWS), frozen_by: expect.stringMatching(/^db:/),
      });
      expect(await snapshotsOf(client, fx.siteId)).toEqual([snapshot]);
    }));

  test.each(["Pacific/Kiritimati", "America/Los_Angeles"])("the month is a UTC month in a session whose time zone is %s", (zone) =>
    withRootDb(async (client) => {
      // A date compared with a timestamptz is midnight in the session's zone: a DBA in UTC+14
      // would otherwise freeze a different set of rows (the neighbours at the month's edges).
      const fx = await makeFixture(client);
      await insertLedger(client, fx.siteId, [...SEPTEMBER_ROWS, ...NEIGHBOUR_ROWS]);
      await insertEvents(client, fx.siteId, [...SEPTEMBER_ROWS, ...NEIGHBOUR_ROWS]);
      await client.query(`set local timezone = '${zone}'`);
      expect(await reconcile(client, fx.siteId, SEPTEMBER)).toMatchObject({
        ledger_billable: 4, ledger_non_billable: 2, events_stored: SEPTEMBER_ROWS.length, drift: [],
      });
      expect(await freeze(client, fx.siteId, SEPTEMBER)).toMatchObject({
        billable_events: 4, non_billable_events: 2, ledger_digest: expectedDigest(SEPTEMBER_ROWS),
      });
    }));

  test("freezing twice returns the identical snapshot, and a ledger change in between does not alter it", () =>
    withRootDb(async (client) => {
      const fx = await makeFixture(client);
      await insertLedger(client, fx.siteId, SEPTEMBER_ROWS);
      const first = await freeze(client, fx.siteId, SEPTEMBER);
      const audited = await chainLength(client, fx.siteId);
      // A late row (written around ingest's period_closed check) must not re-open the invoice.
      await insertLedger(client, fx.siteId, [{ key: randomUUID(), occurredAt: "2026-09-05T00:00:00Z", billable: true }]);
      const second = await freeze(client, fx.siteId, SEPTEMBER);
      expect(second).toEqual(first);
      expect(await snapshotsOf(client, fx.siteId)).toEqual([first]);
      expect(await chainLength(client, fx.siteId)).toBe(audited);
    }));

  test("freezing again in a later transaction returns the same frozen_at and digest (committed)", async () => {
    // Committed on purpose: inside one transaction now() never moves, so an equal frozen_at
    // would prove nothing. The site is this test's own.
    const pool = getRootPool();
    const setup = await pool.connect();
    let siteId: string;
    try {
      siteId = (await createSite(setup, await createUser(setup), "twice.example")).id;
      await insertLedger(setup, siteId, SEPTEMBER_ROWS);
    } finally {
      setup.release();
    }
    const first = (await pool.query(`select ${SNAPSHOT_COLUMNS} from app_public.freeze_invoice($1, $2::date)`, [siteId, SEPTEMBER])).rows[0];
    await new Promise((resolve) => setTimeout(resolve, 20));
    const second = (await pool.query(`select ${SNAPSHOT_COLUMNS} from app_public.freeze_invoice($1, $2::date)`, [siteId, SEPTEMBER])).rows[0];
    expect(second).toEqual(first);
    expect(first.ledger_digest).toBe(expectedDigest(SEPTEMBER_ROWS));
    const { rows } = await pool.query("select count(*)::int as n from app_public.invoice_snapshots where site_id = $1", [siteId]);
    expect(rows[0].n).toBe(1);
  });

  test("an empty month freezes with zero events and the digest of no lines, SHA-256('')", () =>
    withRootDb(async (client) => {
      const fx = await makeFixture(client);
      await insertLedger(client, fx.siteId, NEIGHBOUR_ROWS); // August and October only
      expect(await freeze(client, fx.siteId, SEPTEMBER)).toMatchObject({
        billable_events: 0, non_billable_events: 0, ledger_digest: EMPTY_SHA256,
      });
    }));

  test.each([
    ["the current month", "date_trunc('month', now())::date"],
    ["next month", "(date_trunc('month', now()) + interval '1 month')::date"],
  ])("freezing %s (grace not over) is refused OMGRC and writes nothing", (_name, periodSql) =>
    withRootDb(async (client) => {
      const fx = await makeFixture(client);
      const { rows: [{ period }] } = await client.query(`select ${periodSql}::text as period`);
      await insertLedger(client, fx.siteId, [{ key: randomUUID(), occurredAt: `${period}T00:00:00Z`, billable: true }]);
      const audited = await chainLength(client, fx.siteId);
      expect(await sqlState(client, () => freeze(client, fx.siteId, period))).toBe("OMGRC");
      expect(await snapshotsOf(client, fx.siteId)).toEqual([]);
      expect(await chainLength(client, fx.siteId)).toBe(audited);
    }));

  test.each(["2026-09-15", "2026-09-30", "2026-10-02"])("a period that is not the first of a month (%s) is refused OMPER", (period) =>
    withRootDb(async (client) => {
      const fx = await makeFixture(client);
      await insertLedger(client, fx.siteId, SEPTEMBER_ROWS);
      expect(await sqlState(client, () => freeze(client, fx.siteId, period))).toBe("OMPER");
      expect(await sqlState(client, () => reconcile(client, fx.siteId, period))).toBe("OMPER");
      expect(await snapshotsOf(client, fx.siteId)).toEqual([]);
    }));

  test("an unknown site is refused OMNSS", () =>
    withRootDb(async (client) => {
      expect(await sqlState(client, () => freeze(client, randomUUID(), SEPTEMBER))).toBe("OMNSS");
    }));
});

/* ------------------------------------------------------------- immutability and audit */

describe("invoice_snapshots is immutable", () => {
  const CHANGES: [string, string][] = [
    ["update", "update app_public.invoice_snapshots set billable_events = billable_events + 1 where site_id = $1"],
    ["delete", "delete from app_public.invoice_snapshots where site_id = $1"],
    ["truncate", "truncate app_public.invoice_snapshots"],
  ];

  async function frozenSite(client: pg.ClientBase): Promise<{ fx: Fixture; snapshot: Snapshot }> {
    const fx = await makeFixture(client);
    await insertLedger(client, fx.siteId, SEPTEMBER_ROWS);
    return { fx, snapshot: await freeze(client, fx.siteId, SEPTEMBER) };
  }

  test.each(CHANGES)("%s is refused OMIMM for the superuser", (_op, sql) =>
    withRootDb(async (client) => {
      const { fx, snapshot } = await frozenSite(client);
      expect(await sqlState(client, () => client.query(sql, sql.includes("$1") ? [fx.siteId] : []))).toBe("OMIMM");
      expect(await snapshotsOf(client, fx.siteId)).toEqual([snapshot]);
    }));

  test.each(CHANGES)("%s is refused OMIMM for the owner role that owns the table", (_op, sql) =>
    withRootDb(async (client) => {
      const { fx, snapshot } = await frozenSite(client);
      await client.query("set local role opsmantik_owner");
      expect((await client.query("select current_user::text as u")).rows[0].u).toBe("opsmantik_owner");
      expect(await sqlState(client, () => client.query(sql, sql.includes("$1") ? [fx.siteId] : []))).toBe("OMIMM");
      await client.query("reset role");
      expect(await snapshotsOf(client, fx.siteId)).toEqual([snapshot]);
    }));

  test.each([
    ...CHANGES,
    ["insert", `insert into app_public.invoice_snapshots (site_id, period, billable_events, non_billable_events, ledger_digest, frozen_by)
                values ($1, '2026-08-01', 0, 0, repeat('0', 64), 'forged')`],
  ])("%s is not even granted to the visitor role (a site owner's request)", (_op, sql) =>
    withRootDb(async (client) => {
      const { fx, snapshot } = await frozenSite(client);
      await becomeUser(client, { userId: fx.ownerId });
      expect(await sqlState(client, () => client.query(sql, sql.includes("$1") ? [fx.siteId] : []))).toBe("42501");
      await becomeRoot(client);
      expect(await snapshotsOf(client, fx.siteId)).toEqual([snapshot]);
    }));

  test("a freeze is appended to the site's audit chain (who, which period, the digest) and the chain verifies", () =>
    withRootDb(async (client) => {
      const fx = await makeFixture(client);
      await insertLedger(client, fx.siteId, SEPTEMBER_ROWS);
      const before = await chainLength(client, fx.siteId);
      await becomeUser(client, { userId: fx.adminId });
      await freeze(client, fx.siteId, SEPTEMBER);
      await becomeRoot(client);
      const { rows } = await client.query(
        `select seq::int, action, target_table, target_id, actor_user_id, new_values from app_public.audit_log
          where site_id = $1 and seq > $2 order by seq`, [fx.siteId, before]);
      expect(rows).toEqual([{
        seq: before + 1, action: "insert", target_table: "invoice_snapshots", target_id: SEPTEMBER, actor_user_id: fx.adminId,
        new_values: expect.objectContaining({ ledger_digest: expectedDigest(SEPTEMBER_ROWS), billable_events: 4, frozen_by: `user:${fx.adminId}` }),
      }]);
      const { rows: [verification] } = await client.query(
        "select ok, checked_rows::int, first_bad_seq from app_public.verify_audit_chain($1)", [fx.siteId]);
      expect(verification).toEqual({ ok: true, checked_rows: before + 1, first_bad_seq: null });
    }));
});

/* ------------------------------------------------------------- reconciliation */

describe("billing_reconciliation names every disagreement", () => {
  const billable = SEPTEMBER_ROWS.filter((r) => r.billable).length;
  const nonBillable = SEPTEMBER_ROWS.length - billable;

  test("no drift when events match the ledger and the ledger still hashes to the frozen digest", () =>
    withRootDb(async (client) => {
      const fx = await makeFixture(client);
      await insertLedger(client, fx.siteId, [...SEPTEMBER_ROWS, ...NEIGHBOUR_ROWS]);
      await insertEvents(client, fx.siteId, [...SEPTEMBER_ROWS, ...NEIGHBOUR_ROWS]);
      const open = await reconcile(client, fx.siteId, SEPTEMBER);
      expect(open).toEqual({
        site_id: fx.siteId, period: SEPTEMBER, ledger_billable: billable, ledger_non_billable: nonBillable,
        events_stored: SEPTEMBER_ROWS.length, frozen: false, snapshot_billable: null, snapshot_digest: null, ledger_digest: null, drift: [],
      });
      await freeze(client, fx.siteId, SEPTEMBER);
      expect(await reconcile(client, fx.siteId, SEPTEMBER)).toEqual({
        ...open, frozen: true, snapshot_billable: billable,
        snapshot_digest: expectedDigest(SEPTEMBER_ROWS), ledger_digest: expectedDigest(SEPTEMBER_ROWS),
      });
    }));

  test("a missing event row is named (events against ledger), frozen or not", () =>
    withRootDb(async (client) => {
      const fx = await makeFixture(client);
      await insertLedger(client, fx.siteId, SEPTEMBER_ROWS);
      await insertEvents(client, fx.siteId, SEPTEMBER_ROWS.slice(1)); // one event lost
      const open = await reconcile(client, fx.siteId, SEPTEMBER);
      expect(open.events_stored).toBe(SEPTEMBER_ROWS.length - 1);
      expect(open.drift).toEqual([expect.stringMatching(new RegExp(`events.*${SEPTEMBER_ROWS.length - 1}.*${SEPTEMBER_ROWS.length}`))]);
      await freeze(client, fx.siteId, SEPTEMBER);
      expect((await reconcile(client, fx.siteId, SEPTEMBER)).drift).toEqual(open.drift);
    }));

  test("a billable ledger row added after freezing drifts both the count and the digest", () =>
    withRootDb(async (client) => {
      const fx = await makeFixture(client);
      await insertLedger(client, fx.siteId, SEPTEMBER_ROWS);
      await insertEvents(client, fx.siteId, SEPTEMBER_ROWS);
      await freeze(client, fx.siteId, SEPTEMBER);
      const late: LedgerRow = { key: randomUUID(), occurredAt: "2026-09-12T00:00:00Z", billable: true };
      await insertLedger(client, fx.siteId, [late]);
      await insertEvents(client, fx.siteId, [late]); // events agree: only the snapshot drifts
      const result = await reconcile(client, fx.siteId, SEPTEMBER);
      expect(result).toMatchObject({
        ledger_billable: billable + 1, snapshot_billable: billable, snapshot_digest: expectedDigest(SEPTEMBER_ROWS),
        ledger_digest: expectedDigest([...SEPTEMBER_ROWS, late]),
      });
      expect(result.drift).toHaveLength(2);
      expect(result.drift).toEqual(expect.arrayContaining([
        expect.stringMatching(new RegExp(`${billable}.*${billable + 1}`)), // invoiced 4, ledger now 5
        expect.stringMatching(/digest|hash/i),
      ]));
    }));

  test("a non-billable ledger row added after freezing leaves the count but drifts the digest", () =>
    withRootDb(async (client) => {
      const fx = await makeFixture(client);
      await insertLedger(client, fx.siteId, SEPTEMBER_ROWS);
      await insertEvents(client, fx.siteId, SEPTEMBER_ROWS);
      await freeze(client, fx.siteId, SEPTEMBER);
      const late: LedgerRow = { key: randomUUID(), occurredAt: "2026-09-12T00:00:00Z", billable: false };
      await insertLedger(client, fx.siteId, [late]);
      await insertEvents(client, fx.siteId, [late]);
      const result = await reconcile(client, fx.siteId, SEPTEMBER);
      expect(result.ledger_billable).toBe(billable);
      expect(result.drift).toEqual([expect.stringMatching(/digest|hash/i)]);
    }));
});

/* ------------------------------------------------------------- access */

describe("only a site's admins and owners may freeze or reconcile", () => {
  const DENIED: [string, (fx: Fixture) => { userId?: string; apiKeyId?: string }][] = [
    ["a viewer", (fx) => ({ userId: fx.viewerId })],
    ["an editor", (fx) => ({ userId: fx.editorId })],
    ["a viewer API key", (fx) => ({ apiKeyId: fx.viewerKeyId })],
    ["another tenant's admin", (fx) => ({ userId: fx.otherAdminId })],
  ];

  test.each(DENIED)("%s is refused OM403 for both, and nothing is frozen", (_who, identity) =>
    withRootDb(async (client) => {
      const fx = await makeFixture(client);
      await insertLedger(client, fx.siteId, SEPTEMBER_ROWS);
      await becomeUser(client, identity(fx));
      expect(await sqlState(client, () => reconcile(client, fx.siteId, SEPTEMBER))).toBe("OM403");
      expect(await sqlState(client, () => freeze(client, fx.siteId, SEPTEMBER))).toBe("OM403");
      await becomeRoot(client);
      expect(await snapshotsOf(client, fx.siteId)).toEqual([]);
    }));

  test.each([
    ["owner", (fx: Fixture) => ({ userId: fx.ownerId }), (fx: Fixture) => `user:${fx.ownerId}`],
    ["admin", (fx: Fixture) => ({ userId: fx.adminId }), (fx: Fixture) => `user:${fx.adminId}`],
    ["admin API key", (fx: Fixture) => ({ apiKeyId: fx.adminKeyId }), (fx: Fixture) => `api_key:${fx.adminKeyId}`],
  ])("the %s may reconcile and freeze, and is named in frozen_by", (_who, identity, frozenBy) =>
    withRootDb(async (client) => {
      const fx = await makeFixture(client);
      await insertLedger(client, fx.siteId, SEPTEMBER_ROWS);
      await becomeUser(client, identity(fx));
      expect(await reconcile(client, fx.siteId, SEPTEMBER)).toMatchObject({ site_id: fx.siteId, ledger_billable: 4 });
      expect(await freeze(client, fx.siteId, SEPTEMBER)).toMatchObject({
        ledger_digest: expectedDigest(SEPTEMBER_ROWS), frozen_by: frozenBy(fx),
      });
      // The admin of one site is nobody on another.
      expect(await sqlState(client, () => freeze(client, fx.otherSiteId, SEPTEMBER))).toBe("OM403");
    }));
});

/* ------------------------------------------------------------- period_closed */

describe("a frozen month takes no more events", () => {
  async function trackedSite(client: pg.ClientBase, ownerId: string): Promise<{ id: string; publicKey: string }> {
    const { rows } = await client.query(
      `select id, public_key from app_private.create_site($1, $2, 'shop.example', rate_limit_per_minute => 0,
         allowed_origins => array['https://shop.example'])`, [ownerId, unique("Shop")]);
    return { id: rows[0].id, publicKey: rows[0].public_key };
  }

  async function insertSnapshot(client: pg.ClientBase, siteId: string, periodSql: string): Promise<void> {
    await client.query(
      `insert into app_public.invoice_snapshots (site_id, period, billable_events, non_billable_events, ledger_digest, frozen_by)
       values ($1, ${periodSql}, 0, 0, encode(digest('', 'sha256'), 'hex'), 'test')`, [siteId]);
  }

  async function ingest(client: pg.ClientBase, publicKey: string, events: unknown[]) {
    const { rows } = await client.query(
      "select app_private.ingest_events($1, $2::jsonb, 'https://shop.example', '10.0.0.1', 'Mozilla/5.0', '{}') as result",
      [publicKey, JSON.stringify(events)]);
    return rows[0].result;
  }

  async function stored(client: pg.ClientBase, siteId: string) {
    const { rows } = await client.query(
      `select (select count(*)::int from app_public.ingest_idempotency where site_id = $1) as ledger,
              (select count(*)::int from app_public.events where site_id = $1) as events,
              (select count(*)::int from app_public.sessions where site_id = $1) as sessions`, [siteId]);
    return rows[0];
  }

  const event = () => ({
    id: randomUUID(), type: "pageview", ts: new Date(Date.now() - 1000).toISOString(), visitor_id: "v_closed",
    url: "https://shop.example/landing",
  });

  test("an event of a month whose snapshot exists is rejected period_closed, by index, and nothing of it is written", () =>
    withRootDb(async (client) => {
      const site = await trackedSite(client, await createUser(client));
      await insertSnapshot(client, site.id, "date_trunc('month', now())::date");
      const result = await ingest(client, site.publicKey, [event(), event()]);
      expect(result).toEqual({
        accepted: 0, duplicates: 0,
        rejected: [
          { index: 0, error: "period_closed", message: expect.any(String) },
          { index: 1, error: "period_closed", message: expect.any(String) },
        ],
      });
      expect(await stored(client, site.id)).toEqual({ ledger: 0, events: 0, sessions: 0 });
    }));

  test("the control: another month's snapshot, or another site's snapshot of this month, closes nothing", () =>
    withRootDb(async (client) => {
      const ownerId = await createUser(client);
      const site = await trackedSite(client, ownerId);
      const neighbour = await trackedSite(client, ownerId);
      await insertSnapshot(client, site.id, "(date_trunc('month', now()) - interval '1 month')::date");
      await insertSnapshot(client, neighbour.id, "date_trunc('month', now())::date");
      const sent = event();
      expect(await ingest(client, site.publicKey, [sent])).toEqual({ accepted: 1, duplicates: 0, rejected: [] });
      expect(await stored(client, site.id)).toEqual({ ledger: 1, events: 1, sessions: 1 });
      // And the neighbour, whose month is frozen, is refused in the same transaction.
      expect((await ingest(client, neighbour.publicKey, [event()])).rejected).toEqual([
        { index: 0, error: "period_closed", message: expect.any(String) },
      ]);
    }));
});

/* ------------------------------------------------------------- the schedule */

describe("freeze_due_invoices(now)", () => {
  async function allSnapshots(client: pg.ClientBase): Promise<number> {
    return (await client.query("select count(*)::int as n from app_public.invoice_snapshots")).rows[0].n;
  }

  test("freezes every unfrozen site-month with ledger rows whose grace has passed at `now`, only those, once", () =>
    withRootDb(async (client) => {
      const fx = await makeFixture(client);
      const quiet = await createSite(client, fx.ownerId, "quiet.example"); // no ledger rows: nothing to freeze
      const { rows: [{ current }] } = await client.query("select date_trunc('month', now())::date::text as current");
      const a = {
        old: [{ key: randomUUID(), occurredAt: "2025-06-15T00:00:00Z", billable: true }], // the default partition
        september: SEPTEMBER_ROWS,
        october: [{ key: randomUUID(), occurredAt: "2026-10-31T23:59:59.999999Z", billable: true }],
        current: [{ key: randomUUID(), occurredAt: `${current}T00:00:00Z`, billable: true }],
      };
      for (const rows of Object.values(a)) await insertLedger(client, fx.siteId, rows);
      await insertLedger(client, fx.otherSiteId, [
        { key: randomUUID(), occurredAt: "2026-09-03T00:00:00Z", billable: true },
        { key: randomUUID(), occurredAt: "2026-10-03T00:00:00Z", billable: false },
      ]);
      // Already frozen (with a digest freeze_invoice would never write): must be left alone.
      await client.query(
        `insert into app_public.invoice_snapshots (site_id, period, billable_events, non_billable_events, ledger_digest, frozen_by)
         values ($1, $2, 7, 0, repeat('7', 64), 'earlier')`, [fx.otherSiteId, SEPTEMBER]);
      const mine = async () => (await client.query(
        `select site_id, period::text as period, frozen_by, ledger_digest from app_public.invoice_snapshots
          where site_id = any($1) order by site_id = $2 desc, period`, [[fx.siteId, fx.otherSiteId, quiet.id], fx.siteId])).rows;

      // One millisecond before October's grace ends (2026-11-09): September and older only.
      const before = await allSnapshots(client);
      const { rows: [{ n: first }] } = await client.query("select app_private.freeze_due_invoices('2026-11-08T23:59:59.999Z') as n");
      const afterFirst = await allSnapshots(client);
      expect(first).toBe(afterFirst - before); // the count is what it wrote (other suites' committed sites included)
      expect(await mine()).toEqual([
        { site_id: fx.siteId, period: "2025-06-01", frozen_by: "schedule", ledger_digest: expectedDigest(a.old) },
        { site_id: fx.siteId, period: SEPTEMBER, frozen_by: "schedule", ledger_digest: expectedDigest(SEPTEMBER_ROWS) },
        { site_id: fx.otherSiteId, period: SEPTEMBER, frozen_by: "earlier", ledger_digest: "7".repeat(64) },
      ]);

      // The instant October's grace ends: October too; the current month never.
      const { rows: [{ n: second }] } = await client.query("select app_private.freeze_due_invoices('2026-11-09T00:00:00Z') as n");
      expect(second).toBe((await allSnapshots(client)) - afterFirst);
      expect(second).toBeGreaterThanOrEqual(2);
      expect((await mine()).map((s) => `${s.site_id === fx.siteId ? "a" : "b"} ${s.period} ${s.frozen_by}`)).toEqual([
        "a 2025-06-01 schedule", `a ${SEPTEMBER} schedule`, `a ${OCTOBER} schedule`,
        `b ${SEPTEMBER} earlier`, `b ${OCTOBER} schedule`,
      ]);

      // Nothing left that is due today.
      const { rows: [{ n: third }] } = await client.query("select app_private.freeze_due_invoices() as n");
      expect(third).toBe(0);
    }));

  test("the freeze_invoices task runs the schedule (frozen_by 'schedule') and checks its payload", () =>
    withRootDb(async (client) => {
      const fx = await makeFixture(client);
      await insertLedger(client, fx.siteId, SEPTEMBER_ROWS);
      const task = loadTaskList().freeze_invoices!;
      const helpers = {
        query: (text: string, values?: unknown[]) => client.query(text, values),
        logger: { info: () => {}, debug: () => {}, warn: () => {}, error: () => {} },
      } as any;
      await expect(Promise.resolve(task(null as any, helpers))).rejects.toThrow(/payload/);
      await task({}, helpers);
      expect(await snapshotsOf(client, fx.siteId)).toEqual([
        expect.objectContaining({ period: SEPTEMBER, frozen_by: "schedule", ledger_digest: expectedDigest(SEPTEMBER_ROWS) }),
      ]);
    }));
});

/* ------------------------------------------------------------- GraphQL */

describe("GraphQL: freezeInvoice and billingReconciliation over HTTP", () => {
  let service: TestService;
  const g = {} as { siteId: string; ownerId: string; viewerId: string; ownerToken: string; viewerToken: string };

  const FREEZE = `mutation ($siteId: UUID!, $period: Date!) {
    freezeInvoice(input: { siteId: $siteId, period: $period }) {
      result { siteId period billableEvents nonBillableEvents ledgerDigest frozenBy }
    }
  }`;
  const RECONCILE = `query ($siteId: UUID!, $period: Date!) {
    billingReconciliation(siteId: $siteId, period: $period) {
      siteId period ledgerBillable ledgerNonBillable eventsStored frozen snapshotBillable snapshotDigest ledgerDigest drift
    }
  }`;

  beforeAll(async () => {
    // Committed: the service reads with its own connections.
    const client = await getRootPool().connect();
    try {
      g.ownerId = await createUser(client);
      g.viewerId = await createUser(client);
      g.siteId = (await createSite(client, g.ownerId, "graphql.example")).id;
      await addMember(client, g.siteId, g.viewerId, "viewer");
      await insertLedger(client, g.siteId, SEPTEMBER_ROWS);
      await insertEvents(client, g.siteId, SEPTEMBER_ROWS);
      const october = SEPTEMBER_ROWS.map((r, i) => ({ ...r, key: randomUUID(), occurredAt: `2026-10-1${i}T00:00:00.000123Z` }));
      await insertLedger(client, g.siteId, october);
    } finally {
      client.release();
    }
    [g.ownerToken, g.viewerToken] = await Promise.all([tokenFor(g.ownerId), tokenFor(g.viewerId)]);
    service = await startTestService();
  });

  afterAll(async () => {
    await service?.stop();
  });

  test("the owner freezes a month and reads its reconciliation", async () => {
    const frozen = await service.graphql(FREEZE, { siteId: g.siteId, period: SEPTEMBER }, g.ownerToken);
    expect(frozen.body.errors).toBeUndefined();
    expect(frozen.body.data.freezeInvoice.result).toEqual({
      siteId: g.siteId, period: SEPTEMBER, billableEvents: "4", nonBillableEvents: "2",
      ledgerDigest: expectedDigest(SEPTEMBER_ROWS), frozenBy: `user:${g.ownerId}`,
    });
    const reconciled = await service.graphql(RECONCILE, { siteId: g.siteId, period: SEPTEMBER }, g.ownerToken);
    expect(reconciled.body.errors).toBeUndefined();
    expect(reconciled.body.data.billingReconciliation).toEqual({
      siteId: g.siteId, period: SEPTEMBER, ledgerBillable: "4", ledgerNonBillable: "2", eventsStored: "6", frozen: true,
      snapshotBillable: "4", snapshotDigest: expectedDigest(SEPTEMBER_ROWS), ledgerDigest: expectedDigest(SEPTEMBER_ROWS), drift: [],
    });
  });

  test("a viewer is refused with extensions.code 'forbidden', nothing is frozen, and the denial is audited", async () => {
    const { rows: [{ n: before }] } = await getRootPool().query(
      "select count(*)::int as n from app_public.audit_log where site_id = $1 and action like 'denied:%'", [g.siteId]);
    const frozen = await service.graphql(FREEZE, { siteId: g.siteId, period: OCTOBER }, g.viewerToken);
    expect(frozen.body.data?.freezeInvoice ?? null).toBeNull();
    expect(frozen.body.errors).toEqual([expect.objectContaining({ extensions: { code: "forbidden" } })]);
    const reconciled = await service.graphql(RECONCILE, { siteId: g.siteId, period: OCTOBER }, g.viewerToken);
    expect(reconciled.body.data?.billingReconciliation ?? null).toBeNull();
    expect(reconciled.body.errors).toEqual([expect.objectContaining({ extensions: { code: "forbidden" } })]);

    const { rows } = await getRootPool().query(
      "select count(*)::int as n from app_public.invoice_snapshots where site_id = $1 and period = $2", [g.siteId, OCTOBER]);
    expect(rows[0].n).toBe(0);
    await flushDenials();
    const { rows: denials } = await getRootPool().query(
      `select action, target_table, actor_user_id from app_public.audit_log
        where site_id = $1 and action like 'denied:%' order by action offset 0`, [g.siteId]);
    expect(denials).toHaveLength(before + 2);
    expect(denials).toEqual(expect.arrayContaining([
      { action: "denied:freeze", target_table: "invoice_snapshots", actor_user_id: g.viewerId },
      { action: "denied:reconcile", target_table: "invoice_snapshots", actor_user_id: g.viewerId },
    ]));
  });

  test.each([
    ["a month still in its grace", "current"],
    ["a date that is not the first of a month", "2026-10-15"],
  ])("the owner freezing %s gets a named refusal, not 'internal'", async (_name, which) => {
    // OMGRC / OMPER are documented refusals a dashboard must be able to explain to its user;
    // masked as 'internal' they read as an outage and are logged as one.
    const { rows: [{ current }] } = await getRootPool().query("select date_trunc('month', now())::date::text as current");
    const period = which === "current" ? current : which;
    const reply = await service.graphql(FREEZE, { siteId: g.siteId, period }, g.ownerToken);
    expect(reply.body.data?.freezeInvoice ?? null).toBeNull();
    expect(reply.body.errors).toHaveLength(1);
    expect(reply.body.errors[0].extensions?.code).toEqual(expect.any(String));
    expect(reply.body.errors[0].extensions.code).not.toBe("internal");
    expect(JSON.stringify(reply.body)).not.toMatch(/OMGRC|OMPER|app_(public|private)|freeze_invoice\(/);
  });
});
