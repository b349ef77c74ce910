/*
 * Group commit for POST /api/sync (src/http/ingest-coalescer.ts, app_private.ingest_requests),
 * against the real database through the authenticator role. Grouping is made deterministic by
 * holding, from the test, the advisory lock of the first request's visitor: that request waits
 * in the database, the coalescer (one call in flight) queues everything after it, and when the
 * test lets go the queue leaves as one group. Requests of one transaction share received_at
 * (now() is the transaction's start), which is how the tests see who went together; rows written
 * by one pass share their xmin, which is how they see the group's requests stored in one pass.
 */
import { randomUUID } from "node:crypto";
import { availableParallelism } from "node:os";
import pg from "pg";
import { ConfigError, readConfig } from "../src/config";
import { IngestCoalescer, IngestOutcome, IngestQueueFull, IngestRequest } from "../src/http/ingest-coalescer";
import { createUser, getRootPool, unique, waitForLockWaiters } from "./helpers/db";

const ORIGIN = "https://shop.example";

interface Site {
  id: string;
  publicKey: string;
}

let authPool: pg.Pool;
let ownerId: string;
let site: Site;

async function createTrackedSite({ rateLimit = 0, quota = null }: { rateLimit?: number; quota?: number | null } = {}): Promise<Site> {
  const { rows } = await getRootPool().query(
    `select id, public_key from app_private.create_site($1, $2, 'shop.example', consent_mode => 'implied',
       rate_limit_per_minute => $3, monthly_event_quota => $4, allowed_origins => array['https://shop.example'])`,
    [ownerId, unique("Group"), rateLimit, quota],
  );
  return { id: rows[0].id, publicKey: rows[0].public_key };
}

function event(visitorId: string, overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return { id: randomUUID(), type: "pageview", ts: new Date(Date.now() - 1000).toISOString(), visitor_id: visitorId, url: "https://shop.example/", ...overrides };
}

function request(target: Site, events: unknown[], overrides: Partial<IngestRequest> = {}): IngestRequest {
  return { site: target.publicKey, events, origin: ORIGIN, clientIp: "203.0.113.7", userAgent: "Mozilla/5.0 (test)", ...overrides };
}

/** The visitor's transaction-scoped lock, as ingest_events takes it. */
const visitorLock = (target: Site, visitorId: string) =>
  `select pg_advisory_xact_lock(hashtextextended('${target.id}' || '/' || '${visitorId}', 0))`;

/**
 * Runs `work` while the test holds the lock of one of the workhorse site's visitors, as a
 * transaction of its own; `letGo` commits it, and whatever is still held at the end is let go.
 */
async function whileVisitorHeld<T>(visitorId: string, work: (letGo: () => Promise<void>) => Promise<T>): Promise<T> {
  const holder = await getRootPool().connect();
  try {
    await holder.query("begin");
    await holder.query(visitorLock(site, visitorId));
    return await work(async () => { await holder.query("commit"); });
  } finally {
    await holder.query("rollback").catch(() => {});
    holder.release();
  }
}

/**
 * Runs `first` (a request on the workhorse site) while the test holds its visitor's lock, queues `rest` behind it in a coalescer
 * with one call in flight, then lets go: `rest` reaches the database as one group.
 */
async function groupBehind(coalescer: IngestCoalescer, first: IngestRequest, rest: IngestRequest[]): Promise<IngestOutcome[]> {
  return whileVisitorHeld((first.events[0] as { visitor_id: string }).visitor_id, async (letGo) => {
    const firstDone = coalescer.submit(first);
    await waitForLockWaiters(1);
    const restDone = rest.map((r) => coalescer.submit(r));
    await letGo();
    return Promise.all([firstDone, ...restDone]);
  });
}

/**
 * How many writing (sub)transactions stored these ledger rows. The group's shared pass writes
 * every admitted request's rows under one transaction id; requests run one by one (the fallback)
 * each write under their own subtransaction's.
 */
async function writers(ids: string[]): Promise<number> {
  const { rows } = await getRootPool().query(
    "select count(distinct xmin::text)::int as n from app_public.ingest_idempotency where idempotency_key = any($1::uuid[])", [ids]);
  return rows[0].n;
}

/** The transaction start time of each stored event id (one row per id in the ledger). */
async function receivedAt(ids: string[]): Promise<Map<string, string>> {
  const { rows } = await getRootPool().query(
    "select idempotency_key::text as id, received_at::text as at from app_public.ingest_idempotency where idempotency_key = any($1::uuid[])", [ids]);
  return new Map(rows.map((row) => [row.id, row.at]));
}

const idOf = (r: IngestRequest, index = 0) => (r.events[index] as { id: string }).id;

beforeAll(async () => {
  ownerId = await createUser(getRootPool());
  site = await createTrackedSite();
  authPool = new pg.Pool({ connectionString: readConfig().authDatabaseUrl, max: 4 });
});

afterAll(async () => {
  await authPool?.end();
});

describe("requests that queue go to the database together and keep their own outcomes", () => {
  test("a lone request goes alone; the queue behind it leaves as one transaction; refusals and rejections stay per request", async () => {
    const coalescer = new IngestCoalescer(authPool, [], { concurrency: 1 });
    const limited = await createTrackedSite({ rateLimit: 1 });
    const first = request(site, [event("v_first")]);
    const good = request(site, [event("v_good")]);
    const pair = request(site, [event("v_pair"), event("v_pair", { ts: new Date(Date.now() - 500).toISOString() })]);
    const unknownSite = request({ id: "", publicKey: "pk_no_such_site" }, [event("v_unknown")]);
    const badOrigin = request(site, [event("v_origin")], { origin: "https://evil.example" });
    const withBadEvent = request(site, [event("v_mixed"), { ...event("v_mixed"), url: "javascript:alert(1)" }]);
    const withinLimit = request(limited, [event("v_limit_1")]);
    const overLimit = request(limited, [event("v_limit_2")]);

    const outcomes = await groupBehind(coalescer, first, [good, pair, unknownSite, badOrigin, withBadEvent, withinLimit, overLimit]);
    const [firstOut, goodOut, pairOut, unknownOut, originOut, mixedOut, withinOut, overOut] = outcomes;

    expect(firstOut).toEqual({ result: { accepted: 1, duplicates: 0, rejected: [] } });
    expect(goodOut).toEqual({ result: { accepted: 1, duplicates: 0, rejected: [] } });
    expect(pairOut).toEqual({ result: { accepted: 2, duplicates: 0, rejected: [] } });
    expect(unknownOut).toMatchObject({ code: "OMUSK" });
    expect(originOut).toMatchObject({ code: "OMORG" });
    expect(mixedOut).toMatchObject({ result: { accepted: 1, rejected: [{ index: 1, error: "invalid_event" }] } });
    expect(withinOut).toEqual({ result: { accepted: 1, duplicates: 0, rejected: [] } });
    // The rate limit counts requests one by one inside the group; the refusal carries Retry-After's seconds.
    expect(overOut).toMatchObject({ code: "OM429", detail: expect.stringMatching(/^\d+$/) });

    const stored = await receivedAt([idOf(first), idOf(good), idOf(pair), idOf(pair, 1), idOf(unknownSite), idOf(badOrigin), idOf(withBadEvent), idOf(withinLimit), idOf(overLimit)]);
    expect([...stored.keys()].sort()).toEqual([idOf(first), idOf(good), idOf(pair), idOf(pair, 1), idOf(withBadEvent), idOf(withinLimit)].sort());
    const groupTime = stored.get(idOf(good));
    for (const id of [idOf(pair), idOf(pair, 1), idOf(withBadEvent), idOf(withinLimit)]) expect(stored.get(id)).toBe(groupTime);
    expect(stored.get(idOf(first))).not.toBe(groupTime);
    // One pass stored the whole group (both sites), not one ingest_events call per request.
    expect(await writers([idOf(good), idOf(pair), idOf(pair, 1), idOf(withBadEvent), idOf(withinLimit)])).toBe(1);
  });

  test("in the shared pass each request gets what it would alone: duplicates across requests, one visitor's session, bots, quota", async () => {
    const coalescer = new IngestCoalescer(authPool, [], { concurrency: 1 });
    const quotaSite = await createTrackedSite({ quota: 1 });
    const twice = event("v_twice");
    const start = Date.now() - 60_000;
    const firstVisit = event("v_same", { ts: new Date(start).toISOString() });
    const secondVisit = event("v_same", { ts: new Date(start + 30_000).toISOString(), type: "scroll" });
    const members = [
      request(site, [twice]),
      request(site, [twice]),
      request(site, [firstVisit]),
      request(site, [secondVisit]),
      request(site, [event("v_bot")], { userAgent: "Googlebot/2.1 (+http://www.google.com/bot.html)" }),
      request(quotaSite, [event("v_quota_1")]),
      request(quotaSite, [event("v_quota_2")]),
    ];
    const [, ...outcomes] = await groupBehind(coalescer, request(site, [event("v_lead_same")]), members);
    const results = outcomes.map((o) => ("result" in o ? o.result : o)) as Array<{ accepted: number; duplicates: number; rejected: Array<{ error: string }> }>;
    expect(results.slice(0, 2).map((r) => [r.accepted, r.duplicates]).sort()).toEqual([[0, 1], [1, 0]]);
    expect(results.slice(2, 5).map((r) => r.accepted)).toEqual([1, 1, 1]);
    expect(results.slice(5).map((r) => r.accepted + r.rejected.length)).toEqual([1, 1]);
    expect(results.slice(5).flatMap((r) => r.rejected.map((x) => x.error))).toEqual(["quota_exceeded"]);
    expect(await writers(members.slice(0, 6).map((m) => idOf(m)))).toBe(1);

    const pool = getRootPool();
    const { rows: sessions } = await pool.query(
      "select event_count from app_public.sessions where site_id = $1 and visitor_key = 'v_same'", [site.id]);
    expect(sessions).toEqual([{ event_count: 2 }]);
    const bot = idOf(members[4]);
    const { rows: [ledger] } = await pool.query(
      "select billable, reason from app_public.ingest_idempotency where idempotency_key = $1", [bot]);
    expect(ledger).toEqual({ billable: false, reason: "bot" });
    const { rows: [botEvent] } = await pool.query("select session_id from app_public.events where id = $1", [bot]);
    expect(botEvent).toEqual({ session_id: null });
    const { rows: [quota] } = await pool.query(
      "select count(*)::int as ledger, count(*) filter (where billable)::int as billable from app_public.ingest_idempotency where site_id = $1", [quotaSite.id]);
    expect(quota).toEqual({ ledger: 1, billable: 1 });
  });

  test("a request whose ledger write fails inside a group leaves nothing, and the rest of the group is stored", async () => {
    const coalescer = new IngestCoalescer(authPool, [], { concurrency: 1 });
    const poisoned = randomUUID();
    const pool = getRootPool();
    await pool.query(`
      create function app_private.test_group_fail() returns trigger language plpgsql as $$
      begin
        if new.idempotency_key = '${poisoned}' then raise exception 'test-only failure'; end if;
        return new;
      end $$`);
    try {
      await pool.query(`create trigger _999_test_group_fail before insert on app_public.ingest_idempotency
                          for each row execute function app_private.test_group_fail()`);
      const before = request(site, [event("v_before")]);
      // The poisoned request writes a good event first (visitors sort a < m): it must go too.
      const failing = request(site, [event("a_good_first"), event("m_poisoned", { id: poisoned })]);
      const after = request(site, [event("v_after")]);
      const [, beforeOut, failingOut, afterOut] = await groupBehind(coalescer, request(site, [event("v_lead")]), [before, failing, after]);
      expect(beforeOut).toMatchObject({ result: { accepted: 1 } });
      expect(failingOut).toMatchObject({ code: "P0001", message: "test-only failure" });
      expect(afterOut).toMatchObject({ result: { accepted: 1 } });
      const stored = await receivedAt([idOf(before), idOf(failing), poisoned, idOf(after)]);
      expect([...stored.keys()].sort()).toEqual([idOf(before), idOf(after)].sort());
      // The shared pass failed as a whole, so each request ran alone: two writers, not one.
      expect(await writers([idOf(before), idOf(after)])).toBe(2);
      const { rows } = await pool.query("select count(*)::int as n from app_public.events where site_id = $1 and id = any($2::uuid[])",
        [site.id, [idOf(failing), poisoned]]);
      expect(rows[0].n).toBe(0);
    } finally {
      await pool.query("drop trigger if exists _999_test_group_fail on app_public.ingest_idempotency");
      await pool.query("drop function if exists app_private.test_group_fail()");
    }
  });

  test("a request that loses a serialization conflict in the shared pass and again alone in its group is sent on its own and stored once", async () => {
    const coalescer = new IngestCoalescer(authPool, [], { concurrency: 1 });
    const unlucky = randomUUID();
    const pool = getRootPool();
    // A sequence is not rolled back with the subtransaction, so the failure happens exactly twice:
    // in the group's shared pass, then when the group runs the request alone.
    await pool.query("create sequence app_private.test_conflict_once");
    await pool.query(`
      create function app_private.test_conflict() returns trigger language plpgsql security definer set search_path = pg_catalog as $$
      begin
        if new.idempotency_key = '${unlucky}' and nextval('app_private.test_conflict_once') <= 2 then
          raise exception using errcode = '40001', message = 'test-only serialization failure';
        end if;
        return new;
      end $$`);
    try {
      await pool.query(`create trigger _999_test_conflict before insert on app_public.ingest_idempotency
                          for each row execute function app_private.test_conflict()`);
      const loser = request(site, [event("v_loser", { id: unlucky })]);
      const other = request(site, [event("v_other")]);
      const [, loserOut, otherOut] = await groupBehind(coalescer, request(site, [event("v_lead2")]), [loser, other]);
      expect(loserOut).toEqual({ result: { accepted: 1, duplicates: 0, rejected: [] } });
      expect(otherOut).toEqual({ result: { accepted: 1, duplicates: 0, rejected: [] } });
      const stored = await receivedAt([unlucky, idOf(other)]);
      expect(stored.size).toBe(2);
      expect(stored.get(unlucky)).not.toBe(stored.get(idOf(other))); // a transaction of its own
      expect((await pool.query("select last_value::int as n from app_private.test_conflict_once")).rows[0].n).toBe(3);
    } finally {
      await pool.query("drop trigger if exists _999_test_conflict on app_public.ingest_idempotency");
      await pool.query("drop function if exists app_private.test_conflict()");
      await pool.query("drop sequence if exists app_private.test_conflict_once");
    }
  });

  test("when the group's connection dies, every request of the group is refused and none of it is stored", async () => {
    const coalescer = new IngestCoalescer(authPool, [], { concurrency: 1 });
    // Hold a visitor of the group itself, so the group's call is the one left waiting.
    await whileVisitorHeld("v_group_blocked", async (letGo) => {
      const members = [request(site, [event("v_group_a")]), request(site, [event("v_group_blocked")])];
      const lead = request(site, [event("v_lead3")]);
      const leadDone = coalescer.submit(lead);
      const membersDone = members.map((m) => coalescer.submit(m).then(() => "stored", (error: Error) => error.message));
      expect(await leadDone).toMatchObject({ result: { accepted: 1 } });
      await waitForLockWaiters(1);
      await getRootPool().query(`select pg_terminate_backend(pid) from pg_locks where locktype = 'advisory' and not granted`);
      const refusals = await Promise.all(membersDone);
      expect(refusals.every((r) => r !== "stored")).toBe(true);
      await letGo();
      expect((await receivedAt(members.map((m) => idOf(m)))).size).toBe(0);
    });
  });

  test("a group takes at most 32 requests and 200 events; the rest leave in the next group", async () => {
    const coalescer = new IngestCoalescer(authPool, [], { concurrency: 1 });
    const singles = Array.from({ length: 40 }, (_, i) => request(site, [event(`v_many_${i}`)]));
    const big = Array.from({ length: 3 }, (_, i) => request(site, Array.from({ length: 100 }, (_, j) => event(`v_big_${i}_${j}`))));
    const outcomes = await groupBehind(coalescer, request(site, [event("v_lead_limits")]), [...singles, ...big]);
    expect(outcomes.every((o) => "result" in o)).toBe(true);
    const stored = await receivedAt([...singles, ...big].flatMap((r) => r.events.map((e) => (e as { id: string }).id)));
    const transactionOf = (r: IngestRequest) => stored.get(idOf(r));
    // 32 singles; the other 8 singles and the first 100-event request (108 events); then 100 + 100; then nothing left.
    const groups = [singles.slice(0, 32), [...singles.slice(32), big[0]], [big[1], big[2]]].map((g) => new Set(g.map(transactionOf)));
    expect(groups.map((g) => g.size)).toEqual([1, 1, 1]);
    expect(new Set(groups.map((g) => [...g][0])).size).toBe(3);
  });

  test("past the queue limit a request is refused at once and stores nothing; those already waiting go through", async () => {
    const coalescer = new IngestCoalescer(authPool, [], { concurrency: 1, queueLimit: 2 });
    const lead = request(site, [event("v_lead_queue")]);
    const queued = [request(site, [event("v_queued_1")]), request(site, [event("v_queued_2")])];
    const turnedAway = request(site, [event("v_turned_away")]);
    await whileVisitorHeld("v_lead_queue", async (letGo) => {
      const leadDone = coalescer.submit(lead);
      await waitForLockWaiters(1);
      const queuedDone = queued.map((r) => coalescer.submit(r));
      await expect(coalescer.submit(turnedAway)).rejects.toBeInstanceOf(IngestQueueFull);
      await letGo();
      const outcomes = await Promise.all([leadDone, ...queuedDone]);
      expect(outcomes.every((o) => "result" in o && (o.result as { accepted: number }).accepted === 1)).toBe(true);
    });
    const stored = await receivedAt([lead, ...queued, turnedAway].map((r) => idOf(r)));
    expect([lead, ...queued].every((r) => stored.has(idOf(r)))).toBe(true);
    expect(stored.has(idOf(turnedAway))).toBe(false);
    // Once the queue has drained, the next request is taken again.
    expect(await coalescer.submit(turnedAway)).toMatchObject({ result: { accepted: 1 } });
  });

  test("while a call is in flight, a free connection waits for a worthwhile group; fewer events wait for the call to finish", async () => {
    const coalescer = new IngestCoalescer(authPool, [], { concurrency: 2, minGroupEvents: 3 });
    const lead = request(site, [event("v_lead_min")]);
    const trio = [1, 2, 3].map((i) => request(site, [event(`v_min_${i}`)]));
    const single = request(site, [event("v_min_single")]);
    const pair = request(site, [event("v_min_pair"), event("v_min_pair", { ts: new Date(Date.now() - 900).toISOString() })]);
    const last = request(site, [event("v_min_last")]);
    await whileVisitorHeld("v_lead_min", async (letGo) => {
      let leadAnswered = false;
      const leadDone = coalescer.submit(lead).then((outcome) => { leadAnswered = true; return outcome; });
      await waitForLockWaiters(1);

      // One call in flight, one connection free: two one-event requests are not worth a call yet, a third is.
      const trioDone = trio.slice(0, 2).map((r) => coalescer.submit(r));
      expect(coalescer.queued).toBe(2);
      trioDone.push(coalescer.submit(trio[2]));
      expect(coalescer.queued).toBe(0);
      expect((await Promise.all(trioDone)).every((o) => "result" in o && (o.result as { accepted: number }).accepted === 1)).toBe(true);

      // Events count, not requests: a one-event request and a two-event one leave together.
      const singleDone = coalescer.submit(single);
      expect(coalescer.queued).toBe(1);
      const pairDone = coalescer.submit(pair);
      expect(coalescer.queued).toBe(0);
      expect(await singleDone).toMatchObject({ result: { accepted: 1 } });
      expect(await pairDone).toMatchObject({ result: { accepted: 2 } });

      // A lone request waits for the call in flight, however long it takes.
      const lastDone = coalescer.submit(last);
      expect(coalescer.queued).toBe(1);
      expect(leadAnswered).toBe(false);
      await letGo();
      expect(await leadDone).toMatchObject({ result: { accepted: 1 } });
      expect(await lastDone).toMatchObject({ result: { accepted: 1 } });
    });
    const stored = await receivedAt([lead, ...trio, single, pair, last].map((r) => idOf(r)));
    const transactions = [trio.map((r) => stored.get(idOf(r))), [single, pair].map((r) => stored.get(idOf(r)))].map((t) => new Set(t));
    expect(transactions.map((t) => t.size)).toEqual([1, 1]);
    expect(new Set([...transactions.flatMap((t) => [...t]), stored.get(idOf(lead)), stored.get(idOf(last))]).size).toBe(4);
  });

  test("ingest_requests refuses a body that is not an array of requests", async () => {
    await expect(authPool.query("select app_private.ingest_requests('{}'::jsonb, '{}')")).rejects.toMatchObject({ code: "OMENV" });
  });
});

describe("INGEST_CONCURRENCY", () => {
  test("defaults to one call per core, at most 8, and takes a whole number from 1 to 8", () => {
    const { INGEST_CONCURRENCY: _unset, ...env } = process.env;
    expect(readConfig(env).ingestConcurrency).toBe(Math.min(8, Math.max(1, availableParallelism())));
    expect(readConfig({ ...env, INGEST_CONCURRENCY: "1" }).ingestConcurrency).toBe(1);
    expect(readConfig({ ...env, INGEST_CONCURRENCY: "8" }).ingestConcurrency).toBe(8);
  });

  test.each(["0", "9", "2.5", "-1", "many"])("INGEST_CONCURRENCY=%s stops start-up with a ConfigError naming it", (value) => {
    expect(() => readConfig({ ...process.env, INGEST_CONCURRENCY: value })).toThrow(ConfigError);
    expect(() => readConfig({ ...process.env, INGEST_CONCURRENCY: value })).toThrow(/INGEST_CONCURRENCY/);
  });
});
