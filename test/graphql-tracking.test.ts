/*
 * What a dashboard reads about tracking, through the real GraphQL endpoint: sessions, events
 * and the ledger for members of the site, with aggregates on, so "sessions by attribution
 * tier, last 30 days" is one query.
 */
import { randomUUID } from "node:crypto";
import { addMember, createSite, createUser, getRootPool } from "./helpers/db";
import { startTestService, TestService, tokenFor } from "./helpers/http";

let service: TestService;
let viewerToken: string;
let outsiderToken: string;
let siteId: string;

const TIERS_QUERY = `query($since: Datetime!) {
  allSessions(filter: {startedAt: {greaterThanOrEqualTo: $since}}) {
    totalCount
    groupedAggregates(groupBy: [ATTRIBUTION_TIER]) { keys distinctCount { rowId } }
  }
  allIngestIdempotencies { aggregates { distinctCount { idempotencyKey } } }
  allEvents { totalCount }
}`;

beforeAll(async () => {
  const client = await getRootPool().connect();
  try {
    const owner = await createUser(client);
    const viewer = await createUser(client);
    const outsider = await createUser(client);
    const site = await createSite(client, owner, "tiers.example");
    siteId = site.id;
    await addMember(client, site.id, viewer, "viewer");
    await client.query("update app_public.sites set allowed_origins = '{https://tiers.example}' where id = $1", [site.id]);
    const { rows: [{ now }] } = await client.query("select now() - interval '2 hours' as now");
    // Three visitors: a Google Ads click (S1), a paid-social click (S4) and a direct visit (S5),
    // and the S1 visitor returning an hour later without a click (S3).
    const at = (minutes: number) => new Date(now.getTime() + minutes * 60_000).toISOString();
    const event = (visitor: string, minutes: number, query: string) => ({
      id: randomUUID(), type: "pageview", ts: at(minutes), visitor_id: visitor,
      url: `https://tiers.example/${query}`, consent: { analytics_storage: "granted" },
    });
    const events = [
      event("ads", 0, "?gclid=G1"), event("ads", 5, "pricing"), event("ads", 60, ""),
      event("social", 1, "?ttclid=T1"), event("direct", 2, ""),
    ];
    const { rows: [{ result }] } = await client.query(
      "select app_private.ingest_events($1, $2::jsonb, 'https://tiers.example', '10.0.0.2', 'Mozilla/5.0', '{}') as result",
      [site.publicKey, JSON.stringify(events)]);
    expect(result).toEqual({ accepted: 5, duplicates: 0, rejected: [] });
    viewerToken = await tokenFor(viewer);
    outsiderToken = await tokenFor(outsider);
  } finally {
    client.release();
  }
  service = await startTestService();
});

afterAll(async () => {
  await service?.stop();
});

test("a viewer gets sessions by attribution tier for the last 30 days in one query", async () => {
  const since = new Date(Date.now() - 30 * 86_400_000).toISOString();
  const { status, body } = await service.graphql(TIERS_QUERY, { since }, viewerToken);
  expect(status).toBe(200);
  expect(body.errors).toBeUndefined();
  const byTier = Object.fromEntries(body.data.allSessions.groupedAggregates.map((g: any) => [g.keys[0], Number(g.distinctCount.rowId)]));
  expect(byTier).toEqual({ S1: 1, S3: 1, S4: 1, S5: 1 });
  expect(body.data.allSessions.totalCount).toBe(4);
  expect(Number(body.data.allIngestIdempotencies.aggregates.distinctCount.idempotencyKey)).toBe(5);
  expect(body.data.allEvents.totalCount).toBe(5);
});

test("someone who is not a member sees none of it, without an error", async () => {
  const since = new Date(Date.now() - 30 * 86_400_000).toISOString();
  const { status, body } = await service.graphql(TIERS_QUERY, { since }, outsiderToken);
  expect(status).toBe(200);
  expect(body.errors).toBeUndefined();
  expect(body.data.allSessions.totalCount).toBe(0);
  expect(body.data.allSessions.groupedAggregates).toEqual([]);
  expect(body.data.allEvents.totalCount).toBe(0);
});

test("the ledger row of every event is readable by members, with billable and reason", async () => {
  const { body } = await service.graphql(
    `{ allIngestIdempotencies(condition: {siteId: ${JSON.stringify(siteId)}}) { nodes { billable reason } } }`, undefined, viewerToken);
  expect(body.data.allIngestIdempotencies.nodes).toHaveLength(5);
  expect(body.data.allIngestIdempotencies.nodes.every((n: any) => n.billable === true && n.reason === null)).toBe(true);
});
