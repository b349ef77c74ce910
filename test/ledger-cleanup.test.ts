/*
 * Ledger retention (SPEC §9): ledger rows go only after their period is frozen and the
 * retention (at least 90 days after the month's end) has passed. drop_expired_ledger_partitions
 * refuses a shorter retention, keeps a partition while any site-month in it is unfrozen or its
 * month is within retention, never touches the default partition, and returns what it dropped.
 * The setting (LEDGER_RETENTION_DAYS) is checked at start-up, and the daily tasks that freeze
 * and then clean up are real graphile-worker tasks on the schedule.
 *
 * An expired partition cannot be waited for, so the tests create January 2026 themselves (it
 * ended 2026-02-01, long past 90 days on the test clock of 2026-11-23). Every other partition
 * past retention gets an unfrozen "sentinel" row, so the function's answer is about January alone.
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { parseCrontab } from "graphile-worker";
import pg from "pg";
import { ConfigError, readConfig } from "../src/config";
import { loadTaskList, TASKS_DIR } from "../src/worker/runner";
import { becomeRoot, becomeUser, createSite, createUser, sqlState, withRootDb } from "./helpers/db";

const JANUARY = "app_public.ingest_idempotency_p2026_01";
const DEFAULT_PARTITION = "app_public.ingest_idempotency_default";

interface Setup {
  siteA: string;
  siteB: string;
  ownerId: string;
}

/* ------------------------------------------------------------- helpers */

async function exists(client: pg.ClientBase, relation: string): Promise<boolean> {
  return (await client.query("select to_regclass($1) is not null as e", [relation])).rows[0].e;
}

async function drop(client: pg.ClientBase, retentionDays: number | null): Promise<string[]> {
  return (await client.query("select app_private.drop_expired_ledger_partitions($1) as dropped", [retentionDays])).rows[0].dropped;
}

async function insertLedger(client: pg.ClientBase, siteId: string, occurredAt: string, billable = true): Promise<void> {
  await client.query(
    `insert into app_public.ingest_idempotency (site_id, idempotency_key, occurred_at, billable, reason)
     values ($1, gen_random_uuid(), $2, $3, case when $3 then null else 'bot' end)`, [siteId, occurredAt, billable]);
}

/** A snapshot written directly (freeze_invoice would do the same; the grace is long past). */
async function insertSnapshot(client: pg.ClientBase, siteId: string, period: string): Promise<void> {
  await client.query(
    `insert into app_public.invoice_snapshots (site_id, period, billable_events, non_billable_events, ledger_digest, frozen_by)
     values ($1, $2, 0, 0, app_private.compute_ledger_digest($1, $2::date), 'test')`, [siteId, period]);
}

/** Freezes every site-month that has ledger rows in a partition (any site, committed or not). */
async function freezeEverythingIn(client: pg.ClientBase, relation: string): Promise<void> {
  await client.query(
    `select app_public.freeze_invoice(d.site_id, d.period)
       from (select distinct site_id, date_trunc('month', occurred_at at time zone 'UTC')::date as period from ${relation}) d`);
}

async function partitionOf(client: pg.ClientBase, month: string): Promise<string> {
  const { rows } = await client.query(
    `select i.inhrelid::regclass::text as name from pg_inherits i, partman.show_partition_info(i.inhrelid::regclass::text) p
      where i.inhparent = 'app_public.ingest_idempotency'::regclass and p.child_start_time = $1::timestamptz`, [`${month}-01 00:00:00+00`]);
  expect(rows).toHaveLength(1);
  return rows[0].name;
}

/** Days from the end of January 2026 until now (by the database's clock). */
async function daysSinceJanuaryEnded(client: pg.ClientBase): Promise<number> {
  return (await client.query("select extract(day from now() - timestamptz '2026-02-01 00:00:00+00')::int as d")).rows[0].d;
}

/**
 * January 2026 as a partition of its own (RLS on, like every partition), with rows of two
 * sites; and an unfrozen sentinel row in every other dated partition except September.
 */
async function prepare(client: pg.ClientBase): Promise<Setup> {
  await client.query(
    `create table ${JANUARY} partition of app_public.ingest_idempotency
       for values from ('2026-01-01 00:00:00+00') to ('2026-02-01 00:00:00+00')`);
  await client.query(`alter table ${JANUARY} enable row level security`);
  const ownerId = await createUser(client);
  const siteA = (await createSite(client, ownerId, "a.example")).id;
  const siteB = (await createSite(client, ownerId, "b.example")).id;
  const sentinel = (await createSite(client, ownerId, "sentinel.example")).id;
  await insertLedger(client, siteA, "2026-01-01T00:00:00Z");
  await insertLedger(client, siteA, "2026-01-31T23:59:59.999999Z", false);
  await insertLedger(client, siteB, "2026-01-15T12:00:00.123456Z");
  const { rows } = await client.query(
    `select p.child_start_time::text as start from pg_inherits i, partman.show_partition_info(i.inhrelid::regclass::text) p
      where i.inhparent = 'app_public.ingest_idempotency'::regclass
        and i.inhrelid::regclass::text not in ($1, $2)`, [JANUARY, DEFAULT_PARTITION]);
  for (const { start } of rows) {
    if (!start.startsWith("2026-09-")) await insertLedger(client, sentinel, start);
  }
  return { siteA, siteB, ownerId };
}

async function januaryRows(client: pg.ClientBase): Promise<number> {
  return (await client.query(
    "select count(*)::int as n from app_public.ingest_idempotency where occurred_at >= '2026-01-01 00:00:00+00' and occurred_at < '2026-02-01 00:00:00+00'",
  )).rows[0].n;
}

/* ------------------------------------------------------------- the database function */

describe("drop_expired_ledger_partitions", () => {
  test.each([89, 30, 0, -1, null])("a retention of %p days is refused OMRET, and nothing is dropped", (days) =>
    withRootDb(async (client) => {
      const { siteA, siteB } = await prepare(client);
      await insertSnapshot(client, siteA, "2026-01-01");
      await insertSnapshot(client, siteB, "2026-01-01");
      expect(await sqlState(client, () => drop(client, days))).toBe("OMRET");
      expect(await exists(client, JANUARY)).toBe(true);
      // The control: the same state with the minimum retention is dropped.
      expect(await drop(client, 90)).toHaveLength(1);
      expect(await exists(client, JANUARY)).toBe(false);
    }));

  test("a partition with one unfrozen site-month is kept; once every site's month is frozen it is dropped and returned", () =>
    withRootDb(async (client) => {
      const { siteA, siteB } = await prepare(client);
      await insertSnapshot(client, siteA, "2026-01-01");
      expect(await drop(client, 90)).toEqual([]);
      expect(await exists(client, JANUARY)).toBe(true);
      expect(await januaryRows(client)).toBe(3);

      await insertSnapshot(client, siteB, "2026-01-01");
      // The partition's name, as the task logs it (not a dangling OID of the table just dropped).
      expect(await drop(client, 90)).toEqual([JANUARY]);
      expect(await exists(client, JANUARY)).toBe(false);
      expect(await januaryRows(client)).toBe(0);
      // The invoices outlive the ledger rows they summarise.
      const { rows } = await client.query(
        "select count(*)::int as n from app_public.invoice_snapshots where period = '2026-01-01' and site_id = any($1)", [[siteA, siteB]]);
      expect(rows[0].n).toBe(2);
      // Idempotent: nothing more to drop.
      expect(await drop(client, 90)).toEqual([]);
    }));

  test("retention counts from the month's end: a frozen month is kept until retention_days have passed", () =>
    withRootDb(async (client) => {
      const { siteA, siteB } = await prepare(client);
      await insertSnapshot(client, siteA, "2026-01-01");
      await insertSnapshot(client, siteB, "2026-01-01");
      const days = await daysSinceJanuaryEnded(client);
      expect(days).toBeGreaterThan(100);
      expect(await drop(client, days + 1)).toEqual([]);
      expect(await exists(client, JANUARY)).toBe(true);
      expect(await drop(client, days - 1)).toHaveLength(1);
      expect(await exists(client, JANUARY)).toBe(false);
    }));

  test("a frozen partition within retention (September) is kept while an expired one is dropped", () =>
    withRootDb(async (client) => {
      const { siteA, siteB } = await prepare(client);
      const september = await partitionOf(client, "2026-09");
      await insertLedger(client, siteA, "2026-09-10T00:00:00Z");
      await freezeEverythingIn(client, september); // only retention can keep it now
      await insertSnapshot(client, siteA, "2026-01-01");
      await insertSnapshot(client, siteB, "2026-01-01");
      // January only (its returned name is checked above): it did run, and kept September.
      expect(await drop(client, 90)).toHaveLength(1);
      expect(await exists(client, JANUARY)).toBe(false);
      expect(await exists(client, september)).toBe(true);
      const { rows } = await client.query(`select count(*)::int as n from ${september} where site_id = $1`, [siteA]);
      expect(rows[0].n).toBe(1);
    }));

  test("the default partition is never dropped, even with every row in it frozen and long expired", () =>
    withRootDb(async (client) => {
      const { siteA, siteB } = await prepare(client);
      await insertLedger(client, siteA, "2025-06-15T00:00:00Z"); // no partition for 2025: the default holds it
      const { rows: [{ n: inDefault }] } = await client.query(
        `select count(*)::int as n from ${DEFAULT_PARTITION} where site_id = $1`, [siteA]);
      expect(inDefault).toBe(1);
      await freezeEverythingIn(client, DEFAULT_PARTITION);
      await insertSnapshot(client, siteA, "2026-01-01");
      await insertSnapshot(client, siteB, "2026-01-01");
      // January only: it did run, and kept the default.
      expect(await drop(client, 90)).toHaveLength(1);
      expect(await exists(client, JANUARY)).toBe(false);
      expect(await exists(client, DEFAULT_PARTITION)).toBe(true);
      const { rows: [{ n: after }] } = await client.query(
        `select count(*)::int as n from ${DEFAULT_PARTITION} where site_id = $1`, [siteA]);
      expect(after).toBe(1);
    }));

  test("the visitor role (even a site owner's request) cannot call the cleanup or the schedule", () =>
    withRootDb(async (client) => {
      const { ownerId } = await prepare(client);
      await becomeUser(client, { userId: ownerId });
      expect(await sqlState(client, () => drop(client, 90))).toBe("42501");
      expect(await sqlState(client, () => client.query("select app_private.freeze_due_invoices()"))).toBe("42501");
      await becomeRoot(client);
      expect(await exists(client, JANUARY)).toBe(true);
    }));
});

/* ------------------------------------------------------------- configuration */

describe("LEDGER_RETENTION_DAYS", () => {
  const withRetention = (value: string | undefined) => {
    const env = { ...process.env };
    if (value === undefined) delete env.LEDGER_RETENTION_DAYS; else env.LEDGER_RETENTION_DAYS = value;
    return env;
  };

  test.each(["30", "89", "abc", "-100", "90.5", "1e3"])("%p is refused at start-up with a ConfigError naming the setting", (value) => {
    expect(() => readConfig(withRetention(value))).toThrow(ConfigError);
    expect(() => readConfig(withRetention(value))).toThrow(/LEDGER_RETENTION_DAYS/);
  });

  test.each([["120", 120], ["90", 90], [undefined, 90]] as const)("%p is accepted as %p days", (value, days) => {
    expect(readConfig(withRetention(value)).ledgerRetentionDays).toBe(days);
  });
});

/* ------------------------------------------------------------- the tasks */

describe("the freeze_invoices and ledger_cleanup tasks", () => {
  test("load through loadTaskList() as task functions", () => {
    const tasks = loadTaskList();
    expect(typeof tasks.freeze_invoices).toBe("function");
    expect(typeof tasks.ledger_cleanup).toBe("function");
  });

  test("are scheduled in tasks/crontab (which graphile-worker parses)", () => {
    const items = parseCrontab(readFileSync(path.join(TASKS_DIR, "crontab"), "utf8"));
    const scheduled = items.map((item) => item.task);
    expect(scheduled).toEqual(expect.arrayContaining(["freeze_invoices", "ledger_cleanup"]));
    // Every scheduled task exists as a task file.
    const tasks = loadTaskList();
    for (const task of scheduled) expect(typeof tasks[task]).toBe("function");
  });

  const saved = process.env.LEDGER_RETENTION_DAYS;
  afterEach(() => {
    if (saved === undefined) delete process.env.LEDGER_RETENTION_DAYS; else process.env.LEDGER_RETENTION_DAYS = saved;
  });

  function helpersOn(client: pg.ClientBase, calls: unknown[][]) {
    return {
      query: (text: string, values?: unknown[]) => {
        calls.push(values ?? []);
        return client.query(text, values);
      },
      logger: { info: () => {}, debug: () => {}, warn: () => {}, error: () => {} },
    } as any;
  }

  test("ledger_cleanup passes the configured retention to the database and drops what is due", () =>
    withRootDb(async (client) => {
      const { siteA, siteB } = await prepare(client);
      await insertSnapshot(client, siteA, "2026-01-01");
      await insertSnapshot(client, siteB, "2026-01-01");
      const days = await daysSinceJanuaryEnded(client);
      const calls: unknown[][] = [];
      // A retention longer than January's age keeps it: the setting, not a default, decides.
      process.env.LEDGER_RETENTION_DAYS = String(days + 1);
      await loadTaskList().ledger_cleanup!({}, helpersOn(client, calls));
      expect(calls).toEqual([[days + 1]]);
      expect(await exists(client, JANUARY)).toBe(true);
      process.env.LEDGER_RETENTION_DAYS = "120";
      await loadTaskList().ledger_cleanup!({}, helpersOn(client, calls));
      expect(calls).toEqual([[days + 1], [120]]);
      expect(await exists(client, JANUARY)).toBe(false);
    }));

  test("ledger_cleanup with a retention below 90 fails before touching the database", () =>
    withRootDb(async (client) => {
      await prepare(client);
      const calls: unknown[][] = [];
      process.env.LEDGER_RETENTION_DAYS = "30";
      await expect(Promise.resolve(loadTaskList().ledger_cleanup!({}, helpersOn(client, calls)))).rejects.toThrow(/LEDGER_RETENTION_DAYS/);
      expect(calls).toEqual([]);
      await expect(Promise.resolve(loadTaskList().ledger_cleanup!(null as any, helpersOn(client, calls)))).rejects.toThrow(/payload/);
      expect(await exists(client, JANUARY)).toBe(true);
    }));
});
