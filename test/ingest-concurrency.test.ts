/*
 * SPEC §9 under concurrency, over real HTTP: an event id is stored once however many copies
 * race, and a site's monthly quota is exact — never one billable event more, and no unit lost
 * when a racing duplicate gives its unit back. Requests go out together (Promise.all) and the
 * service's pool serves them on parallel connections.
 */
import { randomUUID } from "node:crypto";
import pg from "pg";
import { becomeUser, createUser, getRootPool, rootDbUrl, unique, waitForLockWaiters } from "./helpers/db";
import { startTestService, TestService } from "./helpers/http";

const ORIGIN = "https://shop.example";

interface Site {
  id: string;
  publicKey: string;
}

interface SyncResult {
  accepted: number;
  duplicates: number;
  rejected: Array<{ index: number; error: string; message: string }>;
}

let service: TestService;
let ownerId: string;

async function createTrackedSite(quota: number | null): Promise<Site> {
  // No rate limit: every request comes from the same loopback address.
  const { rows } = await getRootPool().query(
    `select id, public_key from app_private.create_site($1, $2, 'shop.example', consent_mode => 'required',
       monthly_event_quota => $3, rate_limit_per_minute => 0, allowed_origins => array['https://shop.example'])`,
    [ownerId, unique("Shop"), quota],
  );
  return { id: rows[0].id, publicKey: rows[0].public_key };
}

async function sync(site: Site, events: unknown[]): Promise<SyncResult> {
  const response = await fetch(`${service.url}/api/sync`, {
    method: "POST",
    headers: { "content-type": "application/json", origin: ORIGIN },
    body: JSON.stringify({ site: site.publicKey, events }),
  });
  const text = await response.text();
  if (response.status !== 200) throw new Error(`POST /api/sync answered ${response.status}: ${text}`);
  return JSON.parse(text);
}

function event(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    id: randomUUID(),
    type: "pageview",
    ts: new Date(Date.now() - 1000).toISOString(),
    visitor_id: `v_${randomUUID().slice(0, 12)}`,
    url: "https://shop.example/landing",
    ...overrides,
  };
}

const sum = (results: SyncResult[], pick: (r: SyncResult) => number) => results.reduce((total, r) => total + pick(r), 0);
const rejectedWith = (results: SyncResult[], code: string) => sum(results, (r) => r.rejected.filter((x) => x.error === code).length);

interface Stored {
  ledger: number;
  billable: number;
  events: number;
  remaining: number | null;
}

async function stored(siteId: string): Promise<Stored> {
  const { rows } = await getRootPool().query(
    `select (select count(*)::int from app_public.ingest_idempotency where site_id = $1) as ledger,
            (select count(*)::int from app_public.ingest_idempotency where site_id = $1 and billable) as billable,
            (select count(*)::int from app_public.events where site_id = $1) as events,
            (select sum(remaining)::int from app_private.quota_shards where site_id = $1) as remaining`,
    [siteId],
  );
  return rows[0];
}

beforeAll(async () => {
  const client = await getRootPool().connect();
  try {
    ownerId = await createUser(client);
  } finally {
    client.release();
  }
  service = await startTestService();
});

afterAll(async () => {
  await service?.stop();
});

describe("idempotency under concurrency", () => {
  test("one event id sent 50 times at once is stored once: accepted 1, duplicates 49", async () => {
    const site = await createTrackedSite(null);
    const once = event();
    const results = await Promise.all(Array.from({ length: 50 }, () => sync(site, [once])));
    expect({ accepted: sum(results, (r) => r.accepted), duplicates: sum(results, (r) => r.duplicates), rejected: sum(results, (r) => r.rejected.length) })
      .toEqual({ accepted: 1, duplicates: 49, rejected: 0 });
    expect(await stored(site.id)).toEqual({ ledger: 1, billable: 1, events: 1, remaining: null });
  });

  test("copies of one event racing under different visitor ids are stored once, and the losers hand their quota unit back", async () => {
    // Different visitors take different visitor locks, so the copies really meet at the ledger
    // insert; every loser took a quota unit first and must give it back.
    const site = await createTrackedSite(3);
    const ts = new Date(Date.now() - 1000).toISOString();
    const id = randomUUID();
    const results = await Promise.all(Array.from({ length: 50 }, (_, i) => sync(site, [event({ id, ts, visitor_id: `v_race_${i}` })])));
    expect(sum(results, (r) => r.accepted)).toBe(1);
    expect(await stored(site.id)).toEqual({ ledger: 1, billable: 1, events: 1, remaining: 2 });
    // And the two units left are really there to use.
    const after = await sync(site, [event({ ts }), event({ ts }), event({ ts })]);
    expect(after.accepted).toBe(2);
    expect(after.rejected.map((r) => r.error)).toEqual(["quota_exceeded"]);
  });

  test("a racing copy of an event is reported as a duplicate, never as quota_exceeded, when the quota is tight", async () => {
    // The copy is stored (by its twin): telling the tracker its quota is used up for it is false.
    const site = await createTrackedSite(1);
    const ts = new Date(Date.now() - 1000).toISOString();
    const id = randomUUID();
    const results = await Promise.all(Array.from({ length: 50 }, (_, i) => sync(site, [event({ id, ts, visitor_id: `v_tight_${i}` })])));
    expect({
      accepted: sum(results, (r) => r.accepted),
      duplicates: sum(results, (r) => r.duplicates),
      rejected: results.flatMap((r) => r.rejected.map((x) => x.error)),
    }).toEqual({ accepted: 1, duplicates: 49, rejected: [] });
    expect(await stored(site.id)).toEqual({ ledger: 1, billable: 1, events: 1, remaining: 0 });
  });
});

describe("monthly quota under concurrency", () => {
  test("quota 20, 40 single-event requests at once: exactly 20 billable, 20 quota_exceeded, nothing left", async () => {
    const quota = 20;
    const site = await createTrackedSite(quota);
    const ts = new Date(Date.now() - 1000).toISOString(); // one period for all, even at a month boundary
    const results = await Promise.all(Array.from({ length: 2 * quota }, () => sync(site, [event({ ts })])));
    expect({
      accepted: sum(results, (r) => r.accepted),
      quotaExceeded: rejectedWith(results, "quota_exceeded"),
      otherRejections: sum(results, (r) => r.rejected.length) - rejectedWith(results, "quota_exceeded"),
    }).toEqual({ accepted: quota, quotaExceeded: quota, otherRejections: 0 });
    expect(await stored(site.id)).toEqual({ ledger: quota, billable: quota, events: quota, remaining: 0 });
  });

  test("quota 25, five 10-event batches at once: exactly 25 billable; ledger rows = events stored = accepted", async () => {
    const quota = 25;
    const site = await createTrackedSite(quota);
    const ts = new Date(Date.now() - 1000).toISOString();
    const batches = Array.from({ length: 5 }, () => Array.from({ length: 10 }, () => event({ ts })));
    const results = await Promise.all(batches.map((batch) => sync(site, batch)));
    const accepted = sum(results, (r) => r.accepted);
    expect({ accepted, quotaExceeded: rejectedWith(results, "quota_exceeded") }).toEqual({ accepted: quota, quotaExceeded: 50 - quota });
    expect(await stored(site.id)).toEqual({ ledger: accepted, billable: quota, events: accepted, remaining: 0 });
    // Each response accounts for every event of its batch exactly once.
    for (const result of results) {
      expect(result.accepted + result.duplicates + result.rejected.length).toBe(10);
      expect(new Set(result.rejected.map((r) => r.index)).size).toBe(result.rejected.length);
    }
  });

  test("bot events under the same race are stored but never consume quota", async () => {
    const quota = 5;
    const site = await createTrackedSite(quota);
    const ts = new Date(Date.now() - 1000).toISOString();
    const botResults = await Promise.all(Array.from({ length: 10 }, () => fetch(`${service.url}/api/sync`, {
      method: "POST",
      headers: { "content-type": "application/json", origin: ORIGIN, "user-agent": "Googlebot/2.1 (+http://www.google.com/bot.html)" },
      body: JSON.stringify({ site: site.publicKey, events: [event({ ts })] }),
    }).then((r) => r.json() as Promise<SyncResult>)));
    const humanResults = await Promise.all(Array.from({ length: 10 }, () => sync(site, [event({ ts })])));
    expect(sum(botResults, (r) => r.accepted)).toBe(10);
    expect(sum(humanResults, (r) => r.accepted)).toBe(quota);
    expect(await stored(site.id)).toEqual({ ledger: 10 + quota, billable: quota, events: 10 + quota, remaining: 0 });
  });
});

describe("a transaction that already holds a quota shard", () => {
  test("waits briefly for a busy shard that still has units, instead of refusing its event while the quota lasts", async () => {
    const site = await createTrackedSite(20);
    const ts = new Date(Date.now() - 1000).toISOString();
    const pool = getRootPool();
    await pool.query(
      "select app_private.ensure_quota_shards(s, date_trunc('month', now() at time zone 'UTC')::date) from app_public.sites s where s.id = $1", [site.id]);
    // Two sessions whose own shards differ (a session takes from shard pid % 16 first).
    const connect = async () => {
      const client = new pg.Client({ connectionString: rootDbUrl() });
      await client.connect();
      const { rows: [{ pid }] } = await client.query("select pg_backend_pid() as pid");
      return { client, own: pid % 16, pid };
    };
    const first = await connect();
    let second = await connect();
    while (second.own === first.own) {
      await second.client.end();
      second = await connect();
    }
    const ingestWith = (client: pg.Client, count: number) => client.query(
      "select app_private.ingest_events($1, $2::jsonb, $3, '10.0.0.1', 'Mozilla/5.0', '{}') as r",
      [site.publicKey, JSON.stringify(Array.from({ length: count }, () => event({ ts }))), ORIGIN]).then((result) => result.rows[0].r);
    try {
      // The month's last units: one in the first session's own shard, ten in the second's.
      await pool.query(
        "update app_private.quota_shards set remaining = case shard when $2 then 1 when $3 then 10 else 0 end where site_id = $1",
        [site.id, first.own, second.own]);
      // The second session holds its shard, as a request in flight does once it has taken a unit.
      await second.client.query("begin");
      await second.client.query("select 1 from app_private.quota_shards where site_id = $1 and shard = $2 for update", [site.id, second.own]);

      // The first takes its own last unit, then needs one more: only the held shard has any.
      const twoEvents = ingestWith(first.client, 2);
      let waited = false;
      // Up to 10 s to get there (a new connection plans ingestion first); the wait itself lasts at most 200 ms.
      for (let i = 0; i < 2000 && !waited; i++) {
        const { rows } = await pool.query("select wait_event_type from pg_stat_activity where pid = $1", [first.pid]);
        waited = rows[0]?.wait_event_type === "Lock";
        if (!waited) await new Promise((resolve) => setTimeout(resolve, 5));
      }
      // Before migration 000049 it never waited: its second event was refused as quota_exceeded.
      expect(waited).toBe(true);
      await second.client.query("commit");
      expect(await twoEvents).toMatchObject({ accepted: 2, rejected: [] });
      expect(await stored(site.id)).toEqual({ ledger: 2, billable: 2, events: 2, remaining: 9 });
    } finally {
      await second.client.query("rollback").catch(() => undefined);
      await Promise.all([first.client.end(), second.client.end()]);
    }
  });
});

describe("a monthly quota changed mid-month", () => {
  /** As the site's owner, the way a dashboard changes it (update_site_settings, visitor role). */
  async function setQuota(siteId: string, quota: number): Promise<void> {
    const client = await getRootPool().connect();
    try {
      await client.query("begin");
      await becomeUser(client, { userId: ownerId });
      await client.query("select app_public.update_site_settings($1, monthly_event_quota => $2)", [siteId, quota]);
      await client.query("commit");
    } catch (error) {
      await client.query("rollback");
      throw error;
    } finally {
      client.release();
    }
  }
  const accepted = async (site: Site, count: number, ts: string) => {
    const result = await sync(site, Array.from({ length: count }, () => event({ ts })));
    return { accepted: result.accepted, refused: result.rejected.map((r) => r.error) };
  };

  test("applies at once: raised, the new room is there; lowered below what is used, nothing more goes; set again, recounted from the ledger", async () => {
    const site = await createTrackedSite(2);
    const ts = new Date(Date.now() - 1000).toISOString();
    expect(await accepted(site, 3, ts)).toEqual({ accepted: 2, refused: ["quota_exceeded"] });

    await setQuota(site.id, 5);
    expect((await stored(site.id)).remaining).toBe(3);
    expect(await accepted(site, 4, ts)).toEqual({ accepted: 3, refused: ["quota_exceeded"] });

    await setQuota(site.id, 4);
    expect((await stored(site.id)).remaining).toBe(0);
    expect(await accepted(site, 1, ts)).toEqual({ accepted: 0, refused: ["quota_exceeded"] });

    // Unlimited for a while (no quota, shards untouched), then a quota again: what is left is
    // counted from the ledger, not from the shards' stale figures.
    await getRootPool().query("update app_public.sites set monthly_event_quota = null where id = $1", [site.id]);
    expect(await accepted(site, 3, ts)).toEqual({ accepted: 3, refused: [] });
    await setQuota(site.id, 10);
    expect(await stored(site.id)).toEqual({ ledger: 8, billable: 8, events: 8, remaining: 2 });
    expect(await accepted(site, 3, ts)).toEqual({ accepted: 2, refused: ["quota_exceeded"] });
  });

  test("raised while events race for the last units: never one billable event over the new quota", async () => {
    const site = await createTrackedSite(10);
    const ts = new Date(Date.now() - 1000).toISOString();
    const racing = Promise.all(Array.from({ length: 30 }, () => sync(site, [event({ ts })])));
    await setQuota(site.id, 20);
    const results = await racing;
    const taken = sum(results, (r) => r.accepted);
    expect(sum(results, (r) => r.rejected.length)).toBe(30 - taken);
    expect(await stored(site.id)).toEqual({ ledger: taken, billable: taken, events: taken, remaining: 20 - taken });
    expect(taken).toBeLessThanOrEqual(20);
    expect(taken).toBeGreaterThanOrEqual(10);
  });
});

describe("group commit over HTTP", () => {
  test("requests that wait for a connection are stored in one transaction and each is answered for itself", async () => {
    // One call in flight: the lead request is held in the database by the test's lock on its
    // visitor, everything sent meanwhile queues in the service and leaves as one group.
    const grouped = await startTestService({ env: { INGEST_CONCURRENCY: "1" } });
    const site = await createTrackedSite(null);
    const holder = await getRootPool().connect();
    const post = (body: unknown, origin = ORIGIN) => fetch(`${grouped.url}/api/sync`, {
      method: "POST", headers: { "content-type": "application/json", origin }, body: JSON.stringify(body),
    }).then(async (response) => ({ status: response.status, body: (await response.json()) as { accepted?: number; error?: string } }));
    try {
      await holder.query("begin");
      await holder.query(`select pg_advisory_xact_lock(hashtextextended($1 || '/v_lead', 0))`, [site.id]);
      const lead = post({ site: site.publicKey, events: [event({ visitor_id: "v_lead" })] });
      await waitForLockWaiters(1);
      const goodEvents = Array.from({ length: 4 }, (_, i) => event({ visitor_id: `v_member_${i}` }));
      const replies = Promise.all([
        ...goodEvents.map((e) => post({ site: site.publicKey, events: [e] })),
        post({ site: "pk_no_such_site", events: [event()] }),
        post({ site: site.publicKey, events: [event()] }, "https://evil.example"),
      ]);
      await new Promise((resolve) => setTimeout(resolve, 500)); // let them all arrive and queue
      await holder.query("commit");
      expect(await lead).toMatchObject({ status: 200, body: { accepted: 1 } });
      const answered = await replies;
      expect(answered.map((r) => r.status)).toEqual([200, 200, 200, 200, 403, 403]);
      expect(answered.slice(0, 4).map((r) => r.body.accepted)).toEqual([1, 1, 1, 1]);
      expect(answered.slice(4).map((r) => r.body.error)).toEqual(["unknown_site", "origin_not_allowed"]);
      expect(await stored(site.id)).toEqual({ ledger: 5, billable: 5, events: 5, remaining: null });
      const { rows } = await getRootPool().query(
        "select count(distinct received_at)::int as transactions from app_public.ingest_idempotency where idempotency_key = any($1::uuid[])",
        [goodEvents.map((e) => e.id)]);
      expect(rows[0].transactions).toBe(1);
    } finally {
      await holder.query("rollback").catch(() => {});
      holder.release();
      await grouped.stop();
    }
  });
});
