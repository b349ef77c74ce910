/*
 * Watchtower: the watchtower task's verdicts on each site (destination credentials, delivery
 * lag, event quota, erasure requests), how a verdict's status_since holds while it holds, checks that stop
 * applying disappear, and only a site's members read its verdicts through GraphQL.
 */
import { Logger, makeWorkerUtils, runOnce } from "graphile-worker";
import { readConfig } from "../src/config";
import { makePools } from "../src/db/pools";
import { loadTaskList } from "../src/worker/runner";
import { addMember, createSite, createUser, getRootPool, unique } from "./helpers/db";
import { startTestService, TestService, tokenFor } from "./helpers/http";

const root = () => getRootPool();
const silent = new Logger(() => () => undefined);

interface Verdict {
  check_name: string;
  status: string;
  detail: Record<string, unknown>;
  status_since: Date;
  checked_at: Date;
}

async function verdicts(siteId: string): Promise<Record<string, Verdict>> {
  const { rows } = await root().query<Verdict>(
    "select check_name, status, detail, status_since, checked_at from app_public.watchtower_checks where site_id = $1", [siteId]);
  return Object.fromEntries(rows.map((row) => [row.check_name, row]));
}

const runChecks = () => root().query("select app_private.run_watchtower()");

async function siteWithDestination(): Promise<{ siteId: string; destinationId: string; ownerId: string }> {
  const client = await root().connect();
  try {
    const ownerId = await createUser(client);
    const site = await createSite(client, ownerId);
    const { rows: [destination] } = await client.query(
      "select id from app_public.create_destination($1, 'google_ads', '123-456-7890', '987654321', null)", [site.id]);
    return { siteId: site.id, destinationId: destination.id, ownerId };
  } finally {
    client.release();
  }
}

async function queueConversion(siteId: string, dueFor: string): Promise<void> {
  const { rows: [sale] } = await root().query(
    `select (app_public.confirm_sale_and_enqueue(site_id => $1, external_id => $2, amount => 100, currency => 'TRY',
                                                 occurred_at => now() - interval '8 hours', gclid => 'Cj0KCQ-watch')).id`,
    [siteId, unique("order")]);
  await root().query("update app_public.offline_conversion_queue set retry_at = now() - $3::interval where site_id = $1 and sale_id = $2",
    [siteId, sale.id, dueFor]);
}

test("a healthy destination with nothing due: destination_credentials and delivery_lag ok", async () => {
  const { siteId } = await siteWithDestination();
  await runChecks();
  const seen = await verdicts(siteId);
  expect(Object.keys(seen).sort()).toEqual(["delivery_lag", "destination_credentials"]);
  expect(seen.destination_credentials).toMatchObject({ status: "ok", detail: { rail: "google_ads", status: "active" } });
  expect(seen.delivery_lag).toMatchObject({ status: "ok", detail: { due: 0, oldest_due_seconds: 0 } });
});

test("credentials Google refused: destination_credentials fails with Google's code, and recovers when they are set again", async () => {
  const { siteId, destinationId } = await siteWithDestination();
  await root().query("select app_private.mark_destination_needs_reauth($1, 'OAUTH_TOKEN_REVOKED')", [destinationId]);
  await runChecks();
  expect((await verdicts(siteId)).destination_credentials).toMatchObject({
    status: "fail", detail: { destination_id: destinationId, status: "needs_reauth", reason: "OAUTH_TOKEN_REVOKED" },
  });
  await root().query("update app_public.destinations set status = 'active', status_reason = null where id = $1", [destinationId]);
  await runChecks();
  expect((await verdicts(siteId)).destination_credentials.status).toBe("ok");
});

test.each([
  ["30 minutes", "ok"],
  ["2 hours", "warn"],
  ["7 hours", "fail"],
])("a conversion due for %s: delivery_lag %s, with the wait and the count", async (dueFor, status) => {
  const { siteId } = await siteWithDestination();
  await queueConversion(siteId, dueFor);
  await runChecks();
  const lag = (await verdicts(siteId)).delivery_lag;
  expect(lag).toMatchObject({ status, detail: { due: 1 } });
  const hours = Number.parseInt(dueFor, 10) / (dueFor.includes("minutes") ? 60 : 1);
  expect(lag.detail.oldest_due_seconds).toBeGreaterThanOrEqual(hours * 3600 - 5);
});

test("status_since holds while the verdict holds and moves when it changes; checked_at moves every run", async () => {
  const { siteId } = await siteWithDestination();
  await runChecks();
  const first = (await verdicts(siteId)).delivery_lag;
  await new Promise((resolve) => setTimeout(resolve, 20)); // the dates read here have millisecond precision
  await runChecks();
  const second = (await verdicts(siteId)).delivery_lag;
  expect(second.status_since).toEqual(first.status_since);
  expect(second.checked_at.getTime()).toBeGreaterThan(first.checked_at.getTime());

  await queueConversion(siteId, "7 hours");
  await runChecks();
  const third = (await verdicts(siteId)).delivery_lag;
  expect(third.status).toBe("fail");
  expect(third.status_since).toEqual(third.checked_at);
});

test.each([
  [0, "ok", 10],
  [9, "warn", 1],
  [10, "fail", 0],
])("quota 10 with %i events taken this month: event_quota %s, with what is left", async (taken, status, left) => {
  const { siteId } = await siteWithDestination();
  await root().query("update app_public.sites set monthly_event_quota = 10 where id = $1", [siteId]);
  // Units taken the way ingestion takes them: the month's shards, then one unit per billable event.
  const month = "date_trunc('month', now() at time zone 'UTC')::date";
  await root().query(`select app_private.ensure_quota_shards(s, ${month}) from app_public.sites s where s.id = $1`, [siteId]);
  const { rows: [took] } = await root().query(
    `select count(*) filter (where app_private.take_quota(s, ${month}))::int as n
       from app_public.sites s cross join generate_series(1, $2) where s.id = $1`, [siteId, taken]);
  expect(took.n).toBe(taken);
  await runChecks();
  expect((await verdicts(siteId)).event_quota).toMatchObject({ status, detail: { quota: 10, left } });
});

test("a site without a quota has no event_quota verdict; one with a quota and no event yet this month is ok", async () => {
  const { siteId } = await siteWithDestination();
  await runChecks();
  expect((await verdicts(siteId)).event_quota).toBeUndefined();
  await root().query("update app_public.sites set monthly_event_quota = 0 where id = $1", [siteId]);
  await runChecks();
  expect((await verdicts(siteId)).event_quota).toMatchObject({ status: "fail", detail: { quota: 0, left: 0 } });
  await root().query("update app_public.sites set monthly_event_quota = 500 where id = $1", [siteId]);
  await runChecks();
  const verdict = (await verdicts(siteId)).event_quota;
  expect(verdict).toMatchObject({ status: "ok", detail: { quota: 500, left: 500 } });
  expect(verdict.detail.period).toMatch(/^\d{4}-\d{2}-01$/);
});

test("an erasure request waiting more than a day fails erasure_requests; a fresh one does not", async () => {
  const { siteId } = await siteWithDestination();
  const insert = (age: string) => root().query(
    `insert into app_public.erasure_requests (site_id, subject_kind, subject_hash, requested_at)
     values ($1, 'email', encode(sha256(gen_random_bytes(8)), 'hex'), now() - $2::interval)`, [siteId, age]);
  await insert("2 hours");
  await runChecks();
  expect((await verdicts(siteId)).erasure_requests).toMatchObject({ status: "ok", detail: { open: 1, overdue: 0 } });
  await insert("25 hours");
  await runChecks();
  expect((await verdicts(siteId)).erasure_requests).toMatchObject({ status: "fail", detail: { open: 2, overdue: 1 } });
});

test("a paused destination's checks are no longer shown", async () => {
  const { siteId, destinationId } = await siteWithDestination();
  await runChecks();
  expect(Object.keys(await verdicts(siteId))).toHaveLength(2);
  await root().query("update app_public.destinations set status = 'paused' where id = $1", [destinationId]);
  await runChecks();
  expect(await verdicts(siteId)).toEqual({});
});

test("the watchtower task, run by graphile-worker as the owner, writes the verdicts", async () => {
  const { siteId } = await siteWithDestination();
  // The owner's pool, as the worker runs in production (the task must not need a superuser).
  const pools = makePools(readConfig(), { max: 4 });
  try {
    const utils = await makeWorkerUtils({ pgPool: pools.owner, logger: silent });
    try {
      await utils.addJob("watchtower", {}, { jobKey: `watchtower:test-${siteId}`, maxAttempts: 1 });
    } finally {
      await utils.release();
    }
    // Only the watchtower task: other suites' jobs stay where they are.
    await runOnce({ pgPool: pools.owner, taskList: { watchtower: loadTaskList().watchtower }, logger: silent });
  } finally {
    await pools.end();
  }
  expect((await verdicts(siteId)).destination_credentials?.status).toBe("ok");
});

describe("through GraphQL", () => {
  let service: TestService;
  beforeAll(async () => {
    service = await startTestService();
  });
  afterAll(async () => {
    await service?.stop();
  });

  const QUERY = "{ allWatchtowerChecks { nodes { siteId checkName status } } }";

  test("a member reads their site's verdicts; someone else reads none; there is nothing to write", async () => {
    const { siteId, ownerId } = await siteWithDestination();
    const viewer = await createUser(root());
    const client = await root().connect();
    try {
      await addMember(client, siteId, viewer, "viewer");
    } finally {
      client.release();
    }
    await runChecks();

    for (const userId of [ownerId, viewer]) {
      const { body } = await service.graphql(QUERY, {}, await tokenFor(userId));
      expect(body.errors).toBeUndefined();
      expect(body.data.allWatchtowerChecks.nodes.map((n: { checkName: string }) => n.checkName).sort()).toEqual(["delivery_lag", "destination_credentials"]);
      expect(new Set(body.data.allWatchtowerChecks.nodes.map((n: { siteId: string }) => n.siteId))).toEqual(new Set([siteId]));
    }
    const { body: stranger } = await service.graphql(QUERY, {}, await tokenFor(await createUser(root())));
    expect(stranger.data.allWatchtowerChecks.nodes).toEqual([]);

    const { body: mutations } = await service.graphql('{ __type(name: "Mutation") { fields { name } } }', {});
    expect(mutations.data.__type.fields.map((f: { name: string }) => f.name).filter((name: string) => /watchtower/i.test(name))).toEqual([]);
  });
});
