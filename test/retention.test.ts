/*
 * Retention (issue 6): a site may keep events, sessions and the personal data of calls for
 * fewer months than the default 13 (set_data_retention, admins and owners, 1 to 13); the nightly
 * retention_cleanup() removes what is older, consents after 36 months, and hashed identifiers,
 * click ids and the sales' personal links 90 days after a conversion's final state; pg_partman
 * drops whole event and session partitions after 13 months but never the ledger's. Billing still
 * accounts for every ledger row. And consent administration: a site switching to consent mode
 * 'required' stops identifying storage for visitors without consent at once.
 */
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import pg from "pg";
import retentionCleanup from "../tasks/retention_cleanup";
import { TASKS_DIR } from "../src/worker/runner";
import { addMember, becomeRoot, becomeUser, createApiKey, createUser, getRootPool, sqlState, withRootDb } from "./helpers/db";
import { readBody, startTestService, TestService, tokenFor } from "./helpers/http";
import { createTrackedSite, ORIGIN, Queryable, TrackedSite, transactionHelpers } from "./helpers/privacy";

/* ------------------------------------------------------------------ set_data_retention */

describe("set_data_retention", () => {
  async function fixture(client: pg.ClientBase) {
    const ownerId = await createUser(client);
    const site = await createTrackedSite(client, ownerId);
    const other = await createTrackedSite(client, await createUser(client));
    const ids: Record<string, string> = { owner: ownerId };
    for (const role of ["admin", "editor", "viewer"]) {
      ids[role] = await createUser(client);
      await addMember(client, site.id, ids[role], role);
    }
    const keys: Record<string, string> = {};
    for (const role of ["admin", "editor", "viewer"]) keys[role] = (await createApiKey(client, site.id, role)).id;
    return { site, other, ids, keys };
  }

  const monthsOf = async (db: Queryable, siteId: string) =>
    (await db.query("select data_retention_months as m from app_public.sites where id = $1", [siteId])).rows[0].m;

  test("a new site keeps 13 months", () =>
    withRootDb(async (client) => {
      const { site } = await fixture(client);
      expect(await monthsOf(client, site.id)).toBe(13);
    }));

  test.each([
    ["the owner", "owner", "user"], ["an admin", "admin", "user"], ["an admin API key", "admin", "key"],
  ])("%s may shorten it to 1 and restore it to 13", (_label, role, type) =>
    withRootDb(async (client) => {
      const { site, ids, keys } = await fixture(client);
      await becomeUser(client, type === "user" ? { userId: ids[role] } : { apiKeyId: keys[role] });
      const { rows: [shortened] } = await client.query("select id, data_retention_months from app_public.set_data_retention($1, 1)", [site.id]);
      expect(shortened).toEqual({ id: site.id, data_retention_months: 1 });
      await client.query("select app_public.set_data_retention($1, 13)", [site.id]);
      await becomeRoot(client);
      expect(await monthsOf(client, site.id)).toBe(13);
    }));

  test.each([
    ["an editor", "editor", "user"], ["a viewer", "viewer", "user"], ["an editor API key", "editor", "key"], ["a viewer API key", "viewer", "key"],
  ])("%s is refused with OM403 and nothing changes", (_label, role, type) =>
    withRootDb(async (client) => {
      const { site, other, ids, keys } = await fixture(client);
      await becomeUser(client, type === "user" ? { userId: ids[role] } : { apiKeyId: keys[role] });
      expect(await sqlState(client, () => client.query("select app_public.set_data_retention($1, 3)", [site.id]))).toBe("OM403");
      await becomeRoot(client);
      await becomeUser(client, { userId: ids.owner });
      // Nor may a site's owner set another site's.
      expect(await sqlState(client, () => client.query("select app_public.set_data_retention($1, 3)", [other.id]))).toBe("OM403");
      await becomeRoot(client);
      expect([await monthsOf(client, site.id), await monthsOf(client, other.id)]).toEqual([13, 13]);
    }));

  test.each([0, 14, -1, 120])("%i months is refused (sites_data_retention_months_range: 1 to 13) and nothing changes", (months) =>
    withRootDb(async (client) => {
      const { site, ids } = await fixture(client);
      await becomeUser(client, { userId: ids.admin });
      await client.query("savepoint refused");
      const error = await client.query("select app_public.set_data_retention($1, $2)", [site.id, months]).catch((e) => e);
      await client.query("rollback to savepoint refused");
      expect({ code: error.code, constraint: error.constraint }).toEqual({ code: "23514", constraint: "sites_data_retention_months_range" });
      await becomeRoot(client);
      expect(await monthsOf(client, site.id)).toBe(13);
    }));
});

/* ------------------------------------------------------------------ partitions */

describe("pg_partman retention", () => {
  test("events and sessions drop whole partitions after 13 months; the ledger has no partman retention (its own cleanup, after freezing)", async () => {
    const { rows } = await getRootPool().query(
      "select parent_table, retention, retention_keep_table from partman.part_config where parent_table = any($1) order by 1",
      [["app_public.events", "app_public.sessions", "app_public.ingest_idempotency"]]);
    expect(rows).toEqual([
      { parent_table: "app_public.events", retention: "13 months", retention_keep_table: false },
      { parent_table: "app_public.ingest_idempotency", retention: null, retention_keep_table: expect.any(Boolean) },
      { parent_table: "app_public.sessions", retention: "13 months", retention_keep_table: false },
    ]);
  });
});

describe("pg_partman retention at work", () => {
  test("maintenance drops event and session partitions older than 13 months with their rows, keeps younger ones and every ledger partition", () =>
    withRootDb(async (client) => {
      const site = await createTrackedSite(client, await createUser(client));
      const partitions = async (parent: string) => (await client.query(
        "select array_agg(inhrelid::regclass::text order by inhrelid::regclass::text) as p from pg_inherits where inhparent = $1::regclass", [parent])).rows[0].p as string[];
      const rows: Record<string, { event: string; session: string; ledger: string }> = {};
      for (const age of ["15 months", "12 months"]) {
        for (const parent of ["app_public.events", "app_public.sessions", "app_public.ingest_idempotency"]) {
          await client.query("select partman.create_partition_time($1, array[date_trunc('month', now() - $2::interval)])", [parent, age]);
        }
        rows[age] = await insertTracking(client, site.id, "partman", `now() - interval '${age}'`);
      }
      const { rows: [{ relation }] } = await client.query(
        "select tableoid::regclass::text as relation from app_public.events where site_id = $1 and id = $2", [site.id, rows["15 months"].event]);
      expect(relation).toMatch(/^app_public\.events_p\d{4}_\d{2}$/);
      await client.query("select app_private.maintain_partitions()");
      expect(await partitions("app_public.events")).not.toContain(relation);
      expect(await partitions("app_public.sessions")).not.toContain(relation.replace("events", "sessions"));
      expect(await partitions("app_public.ingest_idempotency")).toContain(relation.replace("events", "ingest_idempotency"));
      const state = async (row: { event: string; session: string; ledger: string }) => [
        await exists(client, "app_public.events", site.id, row.event), await exists(client, "app_public.sessions", site.id, row.session),
        (await client.query("select exists (select 1 from app_public.ingest_idempotency where site_id = $1 and idempotency_key = $2) as e", [site.id, row.ledger])).rows[0].e,
      ];
      expect(await state(rows["15 months"])).toEqual([false, false, true]);
      expect(await state(rows["12 months"])).toEqual([true, true, true]);
    }));
});

/* ------------------------------------------------------------------ retention_cleanup */

async function insertTracking(db: Queryable, siteId: string, label: string, at: string): Promise<{ event: string; session: string; ledger: string }> {
  const id = randomUUID();
  const visitor = `v_${label}_${id.slice(0, 8)}`;
  await db.query(
    `insert into app_public.ingest_idempotency (site_id, idempotency_key, occurred_at, billable) values ($1, $2, ${at}, true)`, [siteId, id]);
  await db.query(
    `insert into app_public.sessions (site_id, id, started_at, ended_at, first_event_id, last_event_id, visitor_key, visitor_id, event_count,
                                      landing_url, attribution_tier, attribution_source)
     values ($1, $2, ${at}, ${at}, $2, $2, $3, $3, 1, 'https://shop.example/?email=old%40example.com', 'S5', 'organic:direct')`, [siteId, id, visitor]);
  await db.query(
    `insert into app_public.events (site_id, id, occurred_at, type, visitor_key, visitor_id, session_id, url, props, device, consent)
     values ($1, $2, ${at}, 'pageview', $3, $3, $2, 'https://shop.example/?email=old%40example.com', '{"email": "old@example.com"}',
             '{"ua": "Mozilla"}', '{"analytics_storage": "granted"}')`, [siteId, id, visitor]);
  return { event: id, session: id, ledger: id };
}

async function exists(db: Queryable, table: string, siteId: string, id: string): Promise<boolean> {
  return (await db.query(`select exists (select 1 from ${table} where site_id = $1 and id = $2) as e`, [siteId, id])).rows[0].e;
}

async function insertCall(db: Queryable, siteId: string, at: string): Promise<string> {
  const callId = `call_${randomUUID().slice(0, 12)}`;
  const { rows: [{ call }] } = await db.query("select app_private.record_call_event($1, $2::jsonb) as call", [siteId, JSON.stringify({
    call_id: callId, status: "answered", caller: "+905551234567", tracking_number: "+902125550000",
    started_at: new Date(Date.now() - 60_000).toISOString(), visitor_id: `v_${callId}`, gclid: `G_${callId}`, duration_s: 30,
  })]);
  await db.query(`update app_public.calls set started_at = ${at} where site_id = $1 and id = $2`, [siteId, call.id]);
  return call.id;
}

async function callOf(db: Queryable, siteId: string, id: string) {
  return (await db.query("select caller, visitor_id, gclid, click_id, click_id_type, session_id, status, duration_s from app_public.calls where site_id = $1 and id = $2",
    [siteId, id])).rows[0];
}

/** Runs fn with triggers off (the updated_at toucher and the audit), so timestamps can be set back. */
async function withoutTriggers(client: pg.ClientBase, fn: () => Promise<unknown>): Promise<void> {
  await client.query("set local session_replication_role = replica");
  try {
    await fn();
  } finally {
    await client.query("set local session_replication_role = origin");
  }
}

describe("retention_cleanup()", () => {
  test("a site keeping 1 month loses older events and sessions (and counts them for billing); recent ones and 13-month sites stay", () =>
    withRootDb(async (client) => {
      const owner = await createUser(client);
      const short = await createTrackedSite(client, owner);
      const full = await createTrackedSite(client, owner);
      await client.query("select app_public.set_data_retention($1, 1)", [short.id]);
      const old = await insertTracking(client, short.id, "old", "now() - interval '2 months'");
      const older = await insertTracking(client, short.id, "older", "now() - interval '20 months'"); // before any partition: the default one
      const recent = await insertTracking(client, short.id, "recent", "now() - interval '14 days'");
      const keptOld = await insertTracking(client, full.id, "full", "now() - interval '2 months'");
      const keptAncient = await insertTracking(client, full.id, "full", "now() - interval '12 months' + interval '1 day'");
      const { rows: [{ relation }] } = await client.query(
        "select tableoid::regclass::text as relation from app_public.events where site_id = $1 and id = $2", [short.id, older.event]);
      expect(relation).toBe("app_public.events_default");
      const { rows: [{ period }] } = await client.query(
        "select to_char(date_trunc('month', (now() - interval '2 months') at time zone 'UTC'), 'YYYY-MM-DD') as period");
      const reconcile = async () => (await client.query(
        "select events_stored::int, events_removed::int, ledger_billable::int, drift from app_public.billing_reconciliation($1, $2::date)",
        [short.id, period])).rows[0];
      expect(await reconcile()).toEqual({ events_stored: 1, events_removed: 0, ledger_billable: 1, drift: [] });

      const { rows: [{ result }] } = await client.query("select app_private.retention_cleanup() as result");
      expect(result.events_deleted).toBeGreaterThanOrEqual(2);
      expect(result.sessions_deleted).toBeGreaterThanOrEqual(2);

      const state = async (site: TrackedSite, row: { event: string; session: string }) =>
        [await exists(client, "app_public.events", site.id, row.event), await exists(client, "app_public.sessions", site.id, row.session)];
      expect(await state(short, old)).toEqual([false, false]);
      expect(await state(short, older)).toEqual([false, false]);
      expect(await state(short, recent)).toEqual([true, true]);
      expect(await state(full, keptOld)).toEqual([true, true]);
      expect(await state(full, keptAncient)).toEqual([true, true]);
      // The ledger keeps its rows; reconciliation counts the removed events instead of calling them drift.
      const { rows: [{ ledger }] } = await client.query("select count(*)::int as ledger from app_public.ingest_idempotency where site_id = $1", [short.id]);
      expect(ledger).toBe(3);
      expect(await reconcile()).toEqual({ events_stored: 0, events_removed: 1, ledger_billable: 1, drift: [] });

      // A second run finds nothing more of these sites.
      const { rows: [{ again }] } = await client.query("select app_private.retention_cleanup() as again");
      expect(again).toMatchObject({ events_deleted: 0, sessions_deleted: 0 });
      expect(await reconcile()).toEqual({ events_stored: 0, events_removed: 1, ledger_billable: 1, drift: [] });
    }));

  test("events older than 13 months are gone after maintenance and cleanup even when they sit in the default partition", () =>
    withRootDb(async (client) => {
      const full = await createTrackedSite(client, await createUser(client));
      const ancient = await insertTracking(client, full.id, "ancient", "now() - interval '14 months'");
      const { rows: [{ relation }] } = await client.query(
        "select tableoid::regclass::text as relation from app_public.events where site_id = $1 and id = $2", [full.id, ancient.event]);
      expect(relation).toBe("app_public.events_default");
      await client.query("select app_private.maintain_partitions()");
      await client.query("select app_private.retention_cleanup()");
      expect([await exists(client, "app_public.events", full.id, ancient.event), await exists(client, "app_public.sessions", full.id, ancient.session)])
        .toEqual([false, false]);
    }));

  test("calls older than the site's months lose caller, visitor id, gclid, click id and session; the call itself and newer calls stay", () =>
    withRootDb(async (client) => {
      const owner = await createUser(client);
      const short = await createTrackedSite(client, owner);
      const full = await createTrackedSite(client, owner);
      await client.query("select app_public.set_data_retention($1, 3)", [short.id]);
      // Each call carries a gclid (and so a click id), as the provider reported it.
      const oldShort = await insertCall(client, short.id, "now() - interval '4 months'");
      const newShort = await insertCall(client, short.id, "now() - interval '2 months'");
      const oldFull = await insertCall(client, full.id, "now() - interval '14 months'");
      const newFull = await insertCall(client, full.id, "now() - interval '4 months'");
      for (const [site, id] of [[short, oldShort], [short, newShort], [full, oldFull], [full, newFull]] as const) {
        expect(await callOf(client, site.id, id)).toMatchObject({ caller: "+905551234567", gclid: expect.stringMatching(/^G_/), click_id: expect.stringMatching(/^G_/) });
      }
      await client.query("select app_private.retention_cleanup()");
      const stripped = { caller: null, visitor_id: null, gclid: null, click_id: null, click_id_type: null, session_id: null, status: "answered", duration_s: 30 };
      expect(await callOf(client, short.id, oldShort)).toEqual(stripped);
      expect(await callOf(client, full.id, oldFull)).toEqual(stripped);
      expect(await callOf(client, short.id, newShort)).toMatchObject({ caller: "+905551234567", click_id: expect.stringMatching(/^G_/) });
      expect(await callOf(client, full.id, newFull)).toMatchObject({ caller: "+905551234567", click_id: expect.stringMatching(/^G_/) });
    }));

  test("consents are kept 36 months as proof, then deleted", () =>
    withRootDb(async (client) => {
      const site = await createTrackedSite(client, await createUser(client));
      const ids: Record<string, string> = {};
      for (const [label, age] of [["37 months", "37 months"], ["35 months", "35 months"], ["today", "0 days"]]) {
        const { rows: [row] } = await client.query(
          `insert into app_public.consents (site_id, visitor_hash, recorded_at, analytics_storage, ad_storage, ad_user_data, ad_personalization)
           values ($1, gen_random_bytes(32), now() - $2::interval, 'granted', 'denied', 'denied', 'denied') returning id`, [site.id, age]);
        ids[label] = row.id;
      }
      const { rows: [{ result }] } = await client.query("select app_private.retention_cleanup() as result");
      expect(result.consents_deleted).toBeGreaterThanOrEqual(1);
      const { rows } = await client.query("select id from app_public.consents where site_id = $1", [site.id]);
      expect(rows.map((r) => r.id).sort()).toEqual([ids["35 months"], ids.today].sort());
    }));

  describe("identifiers and click ids, 90 days after a conversion's final state", () => {
    interface Case {
      label: string;
      status: string;
      requestId?: string;
      daysAgo: number;
      retraction?: string;
      email?: boolean;
      gone: boolean;
    }
    const CASES: Case[] = [
      { label: "accepted 91 days ago", status: "accepted", daysAgo: 91, gone: true },
      { label: "accepted 89 days ago", status: "accepted", daysAgo: 89, gone: false },
      { label: "failed 91 days ago", status: "failed", daysAgo: 91, gone: true },
      { label: "cancelled 91 days ago", status: "cancelled", daysAgo: 91, gone: true },
      { label: "sent to Google's CSV import 91 days ago", status: "sent", requestId: "csv", daysAgo: 91, gone: true },
      { label: "sent (awaiting Google's answer) 91 days ago", status: "sent", requestId: "req-1", daysAgo: 91, gone: false },
      { label: "pending for 91 days", status: "pending", daysAgo: 91, gone: false },
      { label: "processing for 91 days", status: "processing", daysAgo: 91, gone: false },
    ];

    async function seedCase(client: pg.ClientBase, site: TrackedSite, c: Case, withIdentifiers = true) {
      const visitor = `v_${randomUUID().slice(0, 8)}`;
      const gclid = `G_${randomUUID().slice(0, 8)}`;
      const { rows: [sale] } = await client.query(
        `select id from app_public.confirm_sale_and_enqueue($1, $2, 10, 'TRY', now() - interval '100 days', visitor_id => $3, gclid => $4,
           email => $5, phone => $6)`,
        [site.id, `CRM-${randomUUID().slice(0, 8)}`, visitor, gclid, withIdentifiers ? `${visitor}@example.com` : null, withIdentifiers ? "+905551112233" : null]);
      await withoutTriggers(client, async () => {
        await client.query(
          `update app_public.offline_conversion_queue set status = $3, request_id = $4, updated_at = now() - make_interval(days => $5)
            where site_id = $1 and sale_id = $2`, [site.id, sale.id, c.status, c.requestId ?? null, c.daysAgo]);
        if (c.retraction) {
          await client.query(
            `insert into app_public.offline_conversion_queue (site_id, sale_id, kind, status, order_id, click_id, click_id_type, conversion_at, value, currency,
                                                              ad_user_data, ad_personalization)
             select site_id, sale_id, 'retraction', $3, order_id, click_id, click_id_type, conversion_at, value, currency, ad_user_data, ad_personalization
               from app_public.offline_conversion_queue where site_id = $1 and sale_id = $2`, [site.id, sale.id, c.retraction]);
        }
      });
      return { saleId: sale.id as string, visitor, gclid };
    }

    async function stateOf(client: pg.ClientBase, siteId: string, saleId: string) {
      const { rows: [row] } = await client.query(
        `select (select count(*)::int from app_private.sale_identifiers where site_id = $1 and sale_id = $2) as identifiers,
                (select array_agg(coalesce(click_id, '-') order by kind) from app_public.offline_conversion_queue where site_id = $1 and sale_id = $2) as click_ids,
                (select jsonb_build_object('visitor_id', visitor_id, 'gclid', gclid, 'click_id', click_id) from app_public.sales where site_id = $1 and id = $2) as sale`,
        [siteId, saleId]);
      return row;
    }

    test.each(CASES)("$label: identifiers, the queue's click ids and the sale's links are gone: $gone", (c) =>
      withRootDb(async (client) => {
        const site = await createTrackedSite(client, await createUser(client));
        const { saleId, visitor, gclid } = await seedCase(client, site, c);
        const before = await stateOf(client, site.id, saleId);
        expect(before).toEqual({
          identifiers: 1, click_ids: c.retraction ? [gclid, gclid] : [gclid], sale: { visitor_id: visitor, gclid, click_id: gclid },
        });
        await client.query("select app_private.retention_cleanup()");
        const after = await stateOf(client, site.id, saleId);
        if (c.gone) {
          expect(after).toEqual({ identifiers: 0, click_ids: ["-"], sale: { visitor_id: null, gclid: null, click_id: null } });
        } else {
          expect(after).toEqual(before);
        }
      }));

    test("a conversion accepted 91 days ago whose retraction is still pending keeps the identifiers and the retraction's click id", () =>
      withRootDb(async (client) => {
        // The retraction goes by order id; the accepted row's own click id may go, the identifiers wait for the retraction.
        const site = await createTrackedSite(client, await createUser(client));
        const { saleId, visitor, gclid } = await seedCase(client, site, { label: "", status: "accepted", daysAgo: 91, retraction: "pending", gone: false });
        await client.query("select app_private.retention_cleanup()");
        expect(await stateOf(client, site.id, saleId)).toEqual({ identifiers: 1, click_ids: ["-", gclid], sale: { visitor_id: visitor, gclid, click_id: gclid } });
      }));

    test("a sale without email or phone loses its visitor id and click ids 90 days after its conversion's final state too", () =>
      withRootDb(async (client) => {
        // Its identifiers row never existed, so nothing about deleting one may be what triggers the stripping.
        const site = await createTrackedSite(client, await createUser(client));
        const { saleId, visitor, gclid } = await seedCase(client, site, CASES[0], false);
        expect(await stateOf(client, site.id, saleId)).toEqual({ identifiers: 0, click_ids: [gclid], sale: { visitor_id: visitor, gclid, click_id: gclid } });
        await client.query("select app_private.retention_cleanup()");
        expect(await stateOf(client, site.id, saleId)).toEqual({ identifiers: 0, click_ids: ["-"], sale: { visitor_id: null, gclid: null, click_id: null } });
      }));
  });

  test("the retention_cleanup task runs it and a second pass finds nothing", () =>
    withRootDb(async (client) => {
      const site = await createTrackedSite(client, await createUser(client));
      await client.query("select app_public.set_data_retention($1, 1)", [site.id]);
      const old = await insertTracking(client, site.id, "task", "now() - interval '3 months'");
      await retentionCleanup({}, transactionHelpers(client));
      expect(await exists(client, "app_public.events", site.id, old.event)).toBe(false);
      const { rows: [{ result }] } = await client.query("select app_private.retention_cleanup() as result");
      expect(result).toEqual({
        events_deleted: 0, sessions_deleted: 0, calls_stripped: 0, consents_deleted: 0, sale_identifiers_deleted: 0, conversion_click_ids_stripped: 0, sales_stripped: 0,
      });
      await expect(retentionCleanup([] as never, transactionHelpers(client))).rejects.toThrow("payload must be an object");
    }));

  test("the crontab runs retention_cleanup nightly", () => {
    const lines = readFileSync(`${TASKS_DIR}/crontab`, "utf8").split("\n").filter((l) => !l.startsWith("#") && l.trim() !== "");
    expect(lines.some((l) => /^\S+ \S+ \* \* \* retention_cleanup\b/.test(l))).toBe(true);
  });
});

/* ------------------------------------------------------------------ consent administration */

describe("consent mode 'required' takes effect at once", () => {
  const eventFor = (visitor: string, extra: Record<string, unknown> = {}) => ({
    id: randomUUID(), type: "pageview", ts: new Date(Date.now() - 1000).toISOString(), visitor_id: visitor,
    url: `${ORIGIN}/landing`, device: { ua: "Mozilla/5.0", screen: "390x844" }, ...extra,
  });

  async function ingest(db: Queryable, site: TrackedSite, events: Record<string, unknown>[]) {
    const { rows: [{ r }] } = await db.query("select app_private.ingest_events($1, $2::jsonb, $3, '10.0.0.1', 'Mozilla/5.0', '{}') as r",
      [site.publicKey, JSON.stringify(events), ORIGIN]);
    expect(r.accepted).toBe(events.length);
  }

  async function stored(db: Queryable, siteId: string, id: string) {
    const { rows: [row] } = await db.query(
      `select e.visitor_key, e.visitor_id, e.device, s.visitor_key as session_key, s.visitor_id as session_visitor
         from app_public.events e left join app_public.sessions s on s.site_id = e.site_id and s.id = e.session_id
        where e.site_id = $1 and e.id = $2`, [siteId, id]);
    return row;
  }

  const hashedKey = async (db: Queryable, siteId: string, visitor: string) => (await db.query(
    `select 'h:' || encode(substr(public.hmac(convert_to($1::uuid::text || '/' || $2, 'UTF8'), app_private.daily_salt((now() at time zone 'UTC')::date), 'sha256'), 1, 16), 'hex') as k`,
    [siteId, visitor])).rows[0].k;

  test("after update_site_settings(consent_mode => 'required') the very next event without consent keeps no visitor id or device", () =>
    withRootDb(async (client) => {
      const ownerId = await createUser(client);
      const adminId = await createUser(client);
      const site = await createTrackedSite(client, ownerId, "implied");
      await addMember(client, site.id, adminId, "admin");
      const visitor = `v_${randomUUID().slice(0, 8)}`;
      const consented = `v_${randomUUID().slice(0, 8)}`;
      await client.query("select app_private.record_consent($1, $2, '{\"analytics_storage\": \"granted\"}', $3, '10.0.0.1')", [site.publicKey, consented, ORIGIN]);
      const first = eventFor(visitor);
      await ingest(client, site, [first]);
      expect(await stored(client, site.id, first.id)).toMatchObject({ visitor_key: visitor, visitor_id: visitor, device: first.device });

      await becomeUser(client, { userId: adminId });
      await client.query("select app_public.update_site_settings($1, consent_mode => 'required')", [site.id]);
      await becomeRoot(client);

      const next = eventFor(visitor);
      const withOwnConsent = eventFor(`v_${randomUUID().slice(0, 8)}`, { consent: { analytics_storage: "granted" } });
      const withRecordedConsent = eventFor(consented);
      await ingest(client, site, [next, withOwnConsent, withRecordedConsent]);
      const key = await hashedKey(client, site.id, visitor);
      expect(await stored(client, site.id, next.id)).toEqual({ visitor_key: key, visitor_id: null, device: null, session_key: key, session_visitor: null });
      // Visitors who did consent (in the event or on the banner) are still identified.
      expect(await stored(client, site.id, withOwnConsent.id)).toMatchObject({ visitor_id: withOwnConsent.visitor_id, device: withOwnConsent.device });
      expect(await stored(client, site.id, withRecordedConsent.id)).toMatchObject({ visitor_id: consented, device: withRecordedConsent.device });
    }));

  describe("through GraphQL and POST /api/sync", () => {
    let service: TestService;
    let site: TrackedSite;
    let adminId: string;
    let editorId: string;

    beforeAll(async () => {
      const client = await getRootPool().connect();
      try {
        site = await createTrackedSite(client, await createUser(client), "implied");
        adminId = await createUser(client);
        editorId = await createUser(client);
        await addMember(client, site.id, adminId, "admin");
        await addMember(client, site.id, editorId, "editor");
      } finally {
        client.release();
      }
      service = await startTestService();
    });

    afterAll(async () => {
      await service?.stop();
    });

    async function sync(events: Record<string, unknown>[]) {
      const response = await fetch(`${service.url}/api/sync`, {
        method: "POST", headers: { "content-type": "application/json", origin: ORIGIN }, body: JSON.stringify({ site: site.publicKey, events }),
      });
      const { body } = await readBody(response);
      expect({ status: response.status, accepted: body.accepted }).toEqual({ status: 200, accepted: events.length });
    }

    test("an admin sees the consent mode and history and switches to required; the next tracker event is hashed; an editor cannot switch", async () => {
      const admin = await tokenFor(adminId);
      const visitor = `v_${randomUUID().slice(0, 8)}`;
      await fetch(`${service.url}/api/consent`, {
        method: "POST", headers: { "content-type": "application/json", origin: ORIGIN },
        body: JSON.stringify({ site: site.publicKey, visitor_id: `v_${randomUUID().slice(0, 8)}`, consent: { analytics_storage: "denied" } }),
      });
      const before = eventFor(visitor);
      await sync([before]);
      expect(await stored(getRootPool(), site.id, before.id)).toMatchObject({ visitor_id: visitor });

      const SITE = `query($s: UUID!) { siteByRowId(rowId: $s) { consentMode dataRetentionMonths consentsBySiteId { nodes { analyticsStorage recordedAt } } } }`;
      const seen = await service.graphql(SITE, { s: site.id }, admin);
      expect(seen.body.errors).toBeUndefined();
      expect(seen.body.data.siteByRowId).toMatchObject({ consentMode: "implied", dataRetentionMonths: 13 });
      expect(seen.body.data.siteByRowId.consentsBySiteId.nodes).toEqual([{ analyticsStorage: "denied", recordedAt: expect.any(String) }]);

      const SWITCH = `mutation($s: UUID!) { updateSiteSettings(input: {siteId: $s, consentMode: "required"}) { result { consentMode } } }`;
      const refused = await service.graphql(SWITCH, { s: site.id }, await tokenFor(editorId));
      expect(refused.body.errors).toEqual([expect.objectContaining({ extensions: { code: "forbidden" } })]);
      const switched = await service.graphql(SWITCH, { s: site.id }, admin);
      expect(switched.body.errors).toBeUndefined();
      expect(switched.body.data.updateSiteSettings.result).toEqual({ consentMode: "required" });

      const after = eventFor(visitor);
      await sync([after]);
      const key = await hashedKey(getRootPool(), site.id, visitor);
      expect(await stored(getRootPool(), site.id, after.id)).toEqual({ visitor_key: key, visitor_id: null, device: null, session_key: key, session_visitor: null });

      const retention = await service.graphql(`mutation($s: UUID!) { setDataRetention(input: {siteId: $s, months: 6}) { result { dataRetentionMonths } } }`,
        { s: site.id }, admin);
      expect(retention.body.errors).toBeUndefined();
      expect(retention.body.data.setDataRetention.result).toEqual({ dataRetentionMonths: 6 });
    });
  });
});
