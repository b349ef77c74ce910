/*
 * The three pg_partman monthly sets (ledger, events, sessions; SPEC §6): rows of the month
 * ahead and of the late-arrival window land in real monthly partitions, never the default one;
 * maintenance keeps partitions months ahead, is idempotent, and leaves row-level security on
 * every partition (a child is a table of its own: the parent's policies do not guard it).
 * The worker tasks that run maintenance and housekeeping succeed through graphile-worker itself.
 */
import { randomUUID } from "node:crypto";
import { Logger, makeWorkerUtils, runOnce } from "graphile-worker";
import pg from "pg";
import { readConfig } from "../src/config";
import { makePools } from "../src/db/pools";
import { loadTaskList } from "../src/worker/runner";
import { createSite, createUser, getRootPool, withRootDb } from "./helpers/db";

const PARENTS = ["app_public.ingest_idempotency", "app_public.events", "app_public.sessions"];

interface Child {
  parent: string;
  child: string;
  isDefault: boolean;
  lower: Date | null;
  upper: Date | null;
  rls: boolean;
}

/** Every partition of the three sets, with its bounds read from the catalog (not from pg_partman). */
async function children(client: Pick<pg.ClientBase, "query">): Promise<Child[]> {
  const { rows } = await client.query(`
    select i.inhparent::regclass::text as parent, c.oid::regclass::text as child, c.relrowsecurity as rls,
           pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT' as is_default,
           (regexp_match(pg_get_expr(c.relpartbound, c.oid), $$FROM \\('([^']+)'\\)$$))[1]::timestamptz as lower,
           (regexp_match(pg_get_expr(c.relpartbound, c.oid), $$TO \\('([^']+)'\\)$$))[1]::timestamptz as upper
      from pg_inherits i join pg_class c on c.oid = i.inhrelid
     where i.inhparent = any($1::regclass[])
     order by 1, 2`, [PARENTS]);
  return rows.map((r) => ({ parent: r.parent, child: r.child, isDefault: r.is_default, lower: r.lower, upper: r.upper, rls: r.rls }));
}

/** The first instant of the UTC month `offset` months from now. */
function utcMonthStart(offset: number): Date {
  const now = new Date();
  return new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + offset, 1));
}

let siteId: string;

beforeAll(async () => {
  const client = await getRootPool().connect();
  try {
    siteId = (await createSite(client, await createUser(client))).id;
  } finally {
    client.release();
  }
});

describe("where rows land", () => {
  test.each([
    ["next month", "date_trunc('month', now() at time zone 'UTC') at time zone 'UTC' + interval '1 month 10 days'"],
    ["six days ago (late arrivals)", "now() - interval '6 days'"],
    ["now", "now()"],
  ])("ledger, event and session rows of %s go to a monthly partition that covers them, not the default", async (_name, when) => {
    await withRootDb(async (client) => {
      const { rows: [{ at }] } = await client.query(`select (${when})::timestamptz as at`);
      const id = randomUUID();
      const { rows: ledger } = await client.query(
        `insert into app_public.ingest_idempotency (site_id, idempotency_key, occurred_at, billable) values ($1, $2, $3, true)
         returning tableoid::regclass::text as relation`, [siteId, id, at]);
      const { rows: events } = await client.query(
        `insert into app_public.events (site_id, id, occurred_at, type, visitor_key, consent) values ($1, $2, $3, 'pageview', 'h:00', '{}')
         returning tableoid::regclass::text as relation`, [siteId, id, at]);
      const { rows: sessions } = await client.query(
        `insert into app_public.sessions (site_id, id, started_at, ended_at, first_event_id, last_event_id, visitor_key, event_count, attribution_tier, attribution_source)
         values ($1, $2, $3, $3, $2, $2, 'h:00', 1, 'S5', 'organic:direct') returning tableoid::regclass::text as relation`, [siteId, id, at]);
      const all = await children(client);
      for (const [parent, relation] of [[PARENTS[0], ledger[0].relation], [PARENTS[1], events[0].relation], [PARENTS[2], sessions[0].relation]]) {
        expect(relation).not.toMatch(/_default$/);
        const child = all.find((c) => c.child === relation);
        expect(child).toMatchObject({ parent, isDefault: false });
        expect(child!.lower!.getTime()).toBeLessThanOrEqual((at as Date).getTime());
        expect(child!.upper!.getTime()).toBeGreaterThan((at as Date).getTime());
      }
    });
  });
});

describe("maintenance", () => {
  test("pg_partman keeps premake >= 3 months for the three sets, and partitions exist at least 3 months ahead and back to the late window", async () => {
    await getRootPool().query("select app_private.maintain_partitions()");
    const { rows: config } = await getRootPool().query(
      "select parent_table, premake, partition_interval from partman.part_config where parent_table = any($1) order by 1", [PARENTS]);
    expect(config.map((r) => r.parent_table)).toEqual([...PARENTS].sort());
    for (const row of config) {
      expect(row.premake).toBeGreaterThanOrEqual(3);
      expect(row.partition_interval).toMatch(/^(1 mon|1 month|P1M)$/);
    }
    const all = await children(getRootPool());
    const lateWindowStart = new Date(Date.now() - 7 * 86_400_000);
    const needed = [new Date(Date.UTC(lateWindowStart.getUTCFullYear(), lateWindowStart.getUTCMonth(), 1)),
      utcMonthStart(0), utcMonthStart(1), utcMonthStart(2), utcMonthStart(3)];
    for (const parent of PARENTS) {
      const own = all.filter((c) => c.parent === parent && !c.isDefault);
      for (const month of needed) {
        const covering = own.find((c) => c.lower!.getTime() <= month.getTime() && c.upper!.getTime() > month.getTime());
        expect({ parent, month: month.toISOString(), covered: covering !== undefined })
          .toEqual({ parent, month: month.toISOString(), covered: true });
      }
    }
  });

  test("every partition is exactly one UTC calendar month (billing periods are UTC months)", async () => {
    const all = await children(getRootPool());
    const monthly = all.filter((c) => !c.isDefault);
    expect(monthly.length).toBeGreaterThanOrEqual(3 * 4);
    for (const c of monthly) {
      const lower = c.lower!;
      const expectedUpper = new Date(Date.UTC(lower.getUTCFullYear(), lower.getUTCMonth() + 1, 1));
      expect({ child: c.child, lower: lower.toISOString(), upper: c.upper!.toISOString() })
        .toEqual({ child: c.child, lower: new Date(Date.UTC(lower.getUTCFullYear(), lower.getUTCMonth(), 1)).toISOString(), upper: expectedUpper.toISOString() });
    }
  });

  test("maintain_partitions() is idempotent: a second run changes no partition and secures nothing", async () => {
    const pool = getRootPool();
    await pool.query("select app_private.maintain_partitions()");
    const before = await children(pool);
    const { rows } = await pool.query("select app_private.maintain_partitions() as secured");
    expect(rows[0].secured).toBe(0);
    expect(await children(pool)).toEqual(before);
  });

  test("after maintenance every partition, default ones included, has row-level security", async () => {
    await getRootPool().query("select app_private.maintain_partitions()");
    const { rows } = await getRootPool().query(`
      select c.oid::regclass::text as partition from pg_class c join pg_namespace n on n.oid = c.relnamespace
       where n.nspname in ('app_public', 'app_private') and c.relkind in ('r', 'p') and c.relispartition and not c.relrowsecurity`);
    expect(rows).toEqual([]);
    const all = await children(getRootPool());
    expect(all.filter((c) => c.isDefault).map((c) => c.parent).sort()).toEqual([...PARENTS].sort());
    expect(all.every((c) => c.rls)).toBe(true);
  });

  test("partitions that maintenance creates get row-level security, and a partition that lost it gets it back", async () => {
    await withRootDb(async (client) => {
      // A current row in each set, so pg_partman has a reference point whatever its settings.
      const id = randomUUID();
      await client.query("insert into app_public.ingest_idempotency (site_id, idempotency_key, occurred_at, billable) values ($1, $2, now(), true)", [siteId, id]);
      await client.query("insert into app_public.events (site_id, id, occurred_at, type, visitor_key, consent) values ($1, $2, now(), 'pageview', 'h:00', '{}')", [siteId, id]);
      await client.query(`insert into app_public.sessions (site_id, id, started_at, ended_at, first_event_id, last_event_id, visitor_key, event_count, attribution_tier, attribution_source)
                          values ($1, $2, now(), now(), $2, $2, 'h:00', 1, 'S5', 'organic:direct')`, [siteId, id]);
      const before = await children(client);
      // Two more months ahead than configured: pg_partman creates six new partitions, which it
      // does not secure by itself.
      await client.query("update partman.part_config set premake = premake + 2 where parent_table = any($1)", [PARENTS]);
      await client.query(`alter table ${before.find((c) => c.parent === PARENTS[1] && !c.isDefault)!.child} disable row level security`);
      const { rows } = await client.query("select app_private.maintain_partitions() as secured");
      const after = await children(client);
      const created = after.filter((c) => !before.some((b) => b.child === c.child));
      for (const parent of PARENTS) expect({ parent, created: created.filter((c) => c.parent === parent).length >= 2 }).toEqual({ parent, created: true });
      expect(rows[0].secured).toBe(created.length + 1);
      expect(after.filter((c) => !c.rls).map((c) => c.child)).toEqual([]);
    });
  });

  test("maintenance keeps partitions ahead of the calendar even when no recent rows exist (quiet or new installation)", async () => {
    // pg_partman 4 with infinite_time_partitions off only premakes ahead of the newest row; a
    // quiet spell longer than premake would then send the next events to the default partition.
    await withRootDb(async (client) => {
      await client.query("delete from app_public.events");
      await client.query("delete from app_public.sessions");
      await client.query("delete from app_public.ingest_idempotency");
      const before = await children(client);
      await client.query("update partman.part_config set premake = premake + 2 where parent_table = any($1)", [PARENTS]);
      await client.query("select app_private.maintain_partitions()");
      const { rows: [{ premake }] } = await client.query(
        "select min(premake)::int as premake from partman.part_config where parent_table = any($1)", [PARENTS]);
      const after = await children(client);
      expect(after.length).toBeGreaterThan(before.length);
      // Every month from now to `premake` months ahead of the calendar has its partition.
      for (const parent of PARENTS) {
        for (let ahead = 0; ahead <= premake; ahead += 1) {
          const month = utcMonthStart(ahead);
          const covered = after.some((c) => c.parent === parent && !c.isDefault && c.lower!.getTime() <= month.getTime() && c.upper!.getTime() > month.getTime());
          expect({ parent, month: month.toISOString(), covered }).toEqual({ parent, month: month.toISOString(), covered: true });
        }
      }
    });
  });
});

describe("worker tasks", () => {
  const silent = new Logger(() => () => undefined);

  test("tasks/ holds the maintenance tasks as graphile-worker tasks", () => {
    const tasks = loadTaskList();
    expect(typeof tasks.partition_maintenance).toBe("function");
    expect(typeof tasks.ingest_cleanup).toBe("function");
  });

  test("partition_maintenance and ingest_cleanup run through graphile-worker as the owner and do their work", async () => {
    const root = getRootPool();
    // The owner's pool, as the worker runs in production (tasks must not need a superuser).
    const pools = makePools(readConfig(), { max: 4 });
    const ownerPool = pools.owner;
    const rateSite = randomUUID();
    const partition = (await children(root)).find((c) => c.parent === PARENTS[0] && !c.isDefault)!.child;
    try {
      // Work for both tasks: a partition without RLS, spent and current rate counters, old and recent salts.
      await root.query(`alter table ${partition} disable row level security`);
      await root.query(`
        insert into app_private.rate_counters (site_id, ip_hash, window_start, slot, hits) values
          ($1, '\\x01', date_trunc('minute', now()) - interval '5 minutes', 0, 1),
          ($1, '\\x02', date_trunc('minute', now()) - interval '3 minutes', 0, 1),
          ($1, '\\x03', date_trunc('minute', now()), 0, 1)`, [rateSite]);
      await root.query(`
        insert into app_private.daily_salts (day)
        select (now() at time zone 'UTC')::date - d from unnest(array[0, 1, 7, 9, 30]) d
        on conflict (day) do nothing`);

      const utils = await makeWorkerUtils({ pgPool: ownerPool, logger: silent });
      try {
        await utils.addJob("partition_maintenance", {}, { jobKey: `partition_maintenance:test-${rateSite}`, maxAttempts: 1 });
        await utils.addJob("ingest_cleanup", {}, { jobKey: `ingest_cleanup:test-${rateSite}`, maxAttempts: 1 });
      } finally {
        await utils.release();
      }
      await runOnce({ pgPool: ownerPool, taskList: loadTaskList(), logger: silent });

      // Both jobs completed: graphile-worker deletes a job only when its task succeeded (a
      // failure stays, with last_error). runOnce can resolve just before the last completion is
      // written, so wait briefly for the queue to settle.
      let jobs: Array<{ task_identifier: string; last_error: string | null }> = [];
      for (let waited = 0; waited < 10_000; waited += 100) {
        ({ rows: jobs } = await root.query(
          "select task_identifier, last_error from graphile_worker.jobs where key like $1", [`%:test-${rateSite}`]));
        if (jobs.length === 0 || jobs.some((job) => job.last_error !== null)) break;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      expect(jobs).toEqual([]);

      const { rows: [{ rls }] } = await root.query("select relrowsecurity as rls from pg_class where oid = $1::regclass", [partition]);
      expect(rls).toBe(true);
      const { rows: counters } = await root.query(
        "select encode(ip_hash, 'hex') as ip from app_private.rate_counters where site_id = $1 order by 1", [rateSite]);
      expect(counters.map((r) => r.ip)).toEqual(["03"]);
      const { rows: salts } = await root.query(`
        select d as age, exists (select 1 from app_private.daily_salts s where s.day = (now() at time zone 'UTC')::date - d) as kept
          from unnest(array[0, 1, 7, 9, 30]) d order by d`);
      expect(salts).toEqual([
        { age: 0, kept: true }, { age: 1, kept: true }, { age: 7, kept: true }, { age: 9, kept: false }, { age: 30, kept: false },
      ]);
    } finally {
      await root.query(`alter table ${partition} enable row level security`);
      await root.query("delete from app_private.rate_counters where site_id = $1", [rateSite]);
      await pools.end();
    }
  });

  test("ingest_cleanup() reports what it deleted and deletes nothing on a second run", async () => {
    await withRootDb(async (client) => {
      const site = randomUUID();
      await client.query(`
        insert into app_private.rate_counters (site_id, ip_hash, window_start, slot, hits) values
          ($1, '\\x01', date_trunc('minute', now()) - interval '10 minutes', 0, 1),
          ($1, '\\x02', date_trunc('minute', now()), 0, 1)`, [site]);
      await client.query("insert into app_private.daily_salts (day) values ((now() at time zone 'UTC')::date - 12) on conflict do nothing");
      const { rows: [first] } = await client.query("select app_private.ingest_cleanup() as result");
      expect(first.result.rate_counters).toBeGreaterThanOrEqual(1);
      expect(first.result.daily_salts).toBeGreaterThanOrEqual(1);
      const { rows: [second] } = await client.query("select app_private.ingest_cleanup() as result");
      expect(second.result).toEqual({ rate_counters: 0, daily_salts: 0 });
      const { rows } = await client.query("select count(*)::int as n from app_private.rate_counters where site_id = $1", [site]);
      expect(rows[0].n).toBe(1);
    });
  });
});
