/*
 * How the ingest pass runs, not only what it stores (migration 000025): the session it extends
 * is written back by key on the plan made once per connection, never through the click id
 * index, and the per-batch answers list each batch's rejections by index.
 */
import { randomUUID } from "node:crypto";
import pg from "pg";
import { createUser, unique, withRootDb } from "./helpers/db";

const ORIGIN = "https://shop.example";

interface Site {
  id: string;
  publicKey: string;
}

async function createTrackedSite(client: pg.ClientBase): Promise<Site> {
  const owner = await createUser(client);
  const { rows } = await client.query(
    `select id, public_key from app_private.create_site($1, $2, 'shop.example', consent_mode => 'implied',
       rate_limit_per_minute => 0, allowed_origins => array[$3])`, [owner, unique("Plans"), ORIGIN]);
  return { id: rows[0].id, publicKey: rows[0].public_key };
}

function pageview(visitor: string, at: Date, url: string): Record<string, unknown> {
  return { id: randomUUID(), type: "pageview", ts: at.toISOString(), visitor_id: visitor, url, consent: { analytics_storage: "granted" } };
}

/** POST /api/sync's group call, one request per batch of events; returns each request's outcome. */
async function ingestGroup(client: pg.ClientBase, site: Site, batches: unknown[][]): Promise<Array<Record<string, unknown>>> {
  const requests = batches.map((events) => ({ site: site.publicKey, events, origin: ORIGIN, client_ip: "10.0.0.1", user_agent: "Mozilla/5.0" }));
  const { rows } = await client.query("select app_private.ingest_requests($1::jsonb, '{}') as outcomes", [JSON.stringify(requests)]);
  return rows[0].outcomes;
}

test("a session extended by a later event is written back by its key on a kept (generic) plan, never through the click id index", async () => {
  await withRootDb(async (client) => {
    const site = await createTrackedSite(client);
    // Sessions with click ids: the index on (site_id, click_id) has entries for this site.
    const start = new Date(Date.now() - 20 * 60_000);
    const visitors = Array.from({ length: 40 }, (_, i) => `v_plan_${i}`);
    const landed = await ingestGroup(client, site, visitors.map((v) => [pageview(v, start, `${ORIGIN}/landing?gclid=G_${v}`)]));
    expect(landed.every((outcome) => (outcome.result as { accepted: number }).accepted === 1)).toBe(true);

    // Every plan the session write-back runs on, as auto_explain prints it.
    const plans: string[] = [];
    const collect = (notice: { message?: string }) => {
      if (notice.message?.includes("update app_public.sessions s")) plans.push(notice.message);
    };
    client.on("notice", collect);
    try {
      await client.query("load 'auto_explain'");
      await client.query("set local auto_explain.log_min_duration = 0");
      await client.query("set local auto_explain.log_nested_statements = on");
      await client.query("set local client_min_messages = log");
      // More calls than the plan cache's five custom plans before it would settle on one.
      for (let call = 0; call < 8; call++) {
        const extended = await ingestGroup(client, site, [[pageview(visitors[call], new Date(start.getTime() + 60_000), `${ORIGIN}/next`)]]);
        expect(extended).toEqual([{ result: { accepted: 1, duplicates: 0, rejected: [] } }]);
      }
    } finally {
      await client.query("set local client_min_messages = notice");
      client.off("notice", collect);
    }

    expect(plans).toHaveLength(8);
    for (const plan of plans) {
      // A generic plan names every partition and prunes as it runs; a custom one is planned anew each time.
      expect(plan).toContain("Subplans Removed");
      expect(plan).not.toContain("click_id");
      // The index chosen (the primary key or the visitor's) is matched on all three of its columns.
      expect(plan).toMatch(/Index Cond: \(\(site_id = \$\d+\) AND \((id|visitor_key) = \$\d+\) AND \(started_at = \$\d+\)\)/);
    }
    const { rows } = await client.query<{ extended: number }>(
      "select count(*)::int as extended from app_public.sessions where site_id = $1 and event_count = 2", [site.id]);
    expect(rows[0].extended).toBe(8);
  });
});

test("a batch's rejections are listed by index, whatever order the pass met them in", async () => {
  await withRootDb(async (client) => {
    const site = await createTrackedSite(client);
    const now = new Date();
    // The pass meets invalid events sorted by visitor id: here the reverse of their indexes.
    const batch = [
      pageview("v_c", now, `${ORIGIN}/a`),
      { ...pageview("v_z", now, `${ORIGIN}/b`), ts: "yesterday" },
      pageview("v_b", now, `${ORIGIN}/c`),
      { ...pageview("v_y", now, `${ORIGIN}/d`), id: "not-a-uuid" },
      { ...pageview("v_x", now, "https://elsewhere.example/e") },
    ];
    const outcomes = await ingestGroup(client, site, [batch, [pageview("v_single", now, `${ORIGIN}/f`)]]);
    const [first, second] = outcomes as Array<{ result: { accepted: number; duplicates: number; rejected: Array<{ index: number; error: string }> } }>;
    expect(first.result.accepted).toBe(2);
    expect(first.result.rejected.map((r) => r.index)).toEqual([1, 3, 4]);
    expect(first.result.rejected.map((r) => r.error)).toEqual(["invalid_ts", "invalid_event", "url_not_on_site"]);
    expect(second.result).toEqual({ accepted: 1, duplicates: 0, rejected: [] });
  });
});
