/*
 * Call actions (seal, junk, undo) at the SQL level as each kind of caller, and through GraphQL.
 * Sealing records the qualified conversation, a sale attributed from the call (external id
 * call:<action id>, value default 0 in the site's currency) and its queued conversion; junking
 * marks the conversation junk; undo reverts the standing decision (the sale cancelled, a pending
 * conversion cancelled, a delivered one retracted) and is nothing_to_undo when there is none;
 * a decided call refuses another decision (call_already_decided). Only editors and up of the
 * call's site may act: viewers, strangers, other tenants' editors and viewer keys get OM403 and
 * write nothing. Every action is in call_actions with its actor and in the audit log, whose rows
 * never hold the caller's number, the visitor id or the gclid. Through GraphQL the mutations
 * exist with their documented arguments, errors carry our stable codes, and the call_actions
 * table leaves the rest of the schema whole.
 */
import { randomUUID } from "node:crypto";
import pg from "pg";
import {
  addMember, becomeRoot, becomeUser, createApiKey, createUser, getRootPool, Identity, sqlState, unique, withRootDb,
} from "./helpers/db";
import { startTestService, TestService, tokenFor } from "./helpers/http";
import {
  CALLER, CallRow, createTrackedSite, newUser, HOUR, ingest, LANDING, pageview, recordCall, revenueCounts, revenueSnapshot, SessionRow,
  sessionOf, TrackedSite, uploadJob, visitorId,
} from "./helpers/revenue";

interface Action {
  id: string;
  site_id: string;
  call_id: string;
  action: string;
  value: string | null;
  currency: string | null;
  sale_id: string | null;
  undoes_id: string | null;
  actor_user_id: string | null;
  actor_api_key_id: string | null;
}

interface Fixture {
  site: TrackedSite;
  otherSite: TrackedSite;
  owner: string;
  admin: string;
  editor: string;
  viewer: string;
  stranger: string;
  otherEditor: string;
  editorKey: { id: string; key: string };
  adminKey: { id: string; key: string };
  viewerKey: { id: string; key: string };
  otherEditorKey: { id: string; key: string };
  revokedEditorKey: { id: string; key: string };
  visitor: string;
  gclid: string;
  session: SessionRow;
  /** A call tied to the visitor's Google Ads session (S1, with the gclid). */
  call: CallRow;
  otherCall: CallRow;
}

/** A TRY site with a member of every role, keys, an ad-click session and a call from it; and another tenant with a call. */
async function makeFixture(client: pg.ClientBase): Promise<Fixture> {
  const owner = await createUser(client);
  const admin = await createUser(client);
  const editor = await createUser(client);
  const viewer = await createUser(client);
  const stranger = await createUser(client);
  const otherOwner = await createUser(client);
  const otherEditor = await createUser(client);
  const site = await createTrackedSite(client, owner, { currency: "TRY" });
  const otherSite = await createTrackedSite(client, otherOwner, { currency: "EUR" });
  await addMember(client, site.id, admin, "admin");
  await addMember(client, site.id, editor, "editor");
  await addMember(client, site.id, viewer, "viewer");
  await addMember(client, otherSite.id, otherEditor, "editor");
  const visitor = visitorId("caller");
  const gclid = unique("Gclid").replace(/[^A-Za-z0-9_-]/g, "_");
  const click = pageview(visitor, Date.now() - 2 * HOUR, `${LANDING}?gclid=${gclid}`);
  await ingest(client, site, [click]);
  const session = await sessionOf(client, site, click);
  const call = await recordCall(client, site.id, { session_id: session.id, visitor_id: visitor });
  if (call.attribution_tier !== "S1" || call.click_id !== gclid) throw new Error("the fixture call is not attributed to the ad click");
  return {
    site, otherSite, owner, admin, editor, viewer, stranger, otherEditor, visitor, gclid, session, call,
    otherCall: await recordCall(client, otherSite.id),
    editorKey: await createApiKey(client, site.id, "editor"),
    adminKey: await createApiKey(client, site.id, "admin"),
    viewerKey: await createApiKey(client, site.id, "viewer"),
    otherEditorKey: await createApiKey(client, otherSite.id, "editor"),
    revokedEditorKey: await revokedKey(client, site.id, "editor"),
  };
}

async function revokedKey(client: pg.ClientBase, siteId: string, role: string): Promise<{ id: string; key: string }> {
  const key = await createApiKey(client, siteId, role);
  await client.query("update app_public.api_keys set revoked_at = now() where id = $1", [key.id]);
  return key;
}

async function seal(client: pg.ClientBase, siteId: string, callId: string, value: string | null = null, currency: string | null = null): Promise<Action> {
  const { rows } = await client.query<Action>("select * from app_public.seal_call($1, $2, $3::numeric, $4)", [siteId, callId, value, currency]);
  return rows[0];
}

async function junk(client: pg.ClientBase, siteId: string, callId: string): Promise<Action> {
  const { rows } = await client.query<Action>("select * from app_public.junk_call($1, $2)", [siteId, callId]);
  return rows[0];
}

async function undo(client: pg.ClientBase, siteId: string, callId: string): Promise<Action> {
  const { rows } = await client.query<Action>("select * from app_public.undo_call_action($1, $2)", [siteId, callId]);
  return rows[0];
}

/** Runs fn as the identity (visitor role) and returns to the superuser afterwards. */
async function as<T>(client: pg.ClientBase, identity: Identity, fn: () => Promise<T>): Promise<T> {
  await becomeUser(client, identity);
  try {
    return await fn();
  } finally {
    await becomeRoot(client);
  }
}

async function saleOf(client: pg.ClientBase, saleId: string): Promise<Record<string, any>> {
  const { rows } = await client.query("select * from app_public.sales where id = $1", [saleId]);
  return rows[0];
}

async function conversationOf(client: pg.ClientBase, siteId: string, callId: string): Promise<Record<string, any> | undefined> {
  const { rows } = await client.query("select * from app_public.conversations where site_id = $1 and call_id = $2", [siteId, callId]);
  return rows[0];
}

async function queueOf(client: pg.ClientBase, siteId: string, saleId: string): Promise<Record<string, any>[]> {
  const { rows } = await client.query(
    "select * from app_public.offline_conversion_queue where site_id = $1 and sale_id = $2 order by kind", [siteId, saleId]);
  return rows;
}

async function actionsOf(client: pg.ClientBase, siteId: string, callId: string): Promise<Action[]> {
  const { rows } = await client.query<Action>(
    "select * from app_public.call_actions where site_id = $1 and call_id = $2 order by created_at, action", [siteId, callId]);
  return rows;
}

async function lastSeq(client: pg.ClientBase, siteId: string): Promise<number> {
  const { rows } = await client.query("select coalesce(max(seq), 0)::int as seq from app_public.audit_log where site_id = $1", [siteId]);
  return rows[0].seq;
}

async function auditSince(client: pg.ClientBase, siteId: string, seq: number): Promise<Record<string, any>[]> {
  const { rows } = await client.query(
    `select action, target_table, target_id, actor_user_id, actor_api_key_id, old_values, new_values
       from app_public.audit_log where site_id = $1 and seq > $2 order by seq`, [siteId, seq]);
  return rows;
}

/* ------------------------------------------------------------------ seal */

describe("seal", () => {
  test("an editor's seal: the action with its actor, a qualified conversation, a sale attributed from the call, its conversion and job", async () => {
    await withRootDb(async (client) => {
      const f = await makeFixture(client);
      const action = await as(client, { userId: f.editor }, () => seal(client, f.site.id, f.call.id, "1500.50"));
      expect(action).toMatchObject({
        site_id: f.site.id, call_id: f.call.id, action: "seal", value: "1500.50", currency: "TRY", undoes_id: null,
        actor_user_id: f.editor, actor_api_key_id: null, sale_id: expect.any(String),
      });
      const conversation = await conversationOf(client, f.site.id, f.call.id);
      expect(conversation).toMatchObject({ channel: "call", call_id: f.call.id, session_id: f.session.id, status: "qualified" });
      expect(await saleOf(client, action.sale_id!)).toMatchObject({
        external_id: `call:${action.id}`, amount: "1500.50", currency: "TRY", status: "confirmed", occurred_at: f.call.started_at,
        call_id: f.call.id, conversation_id: conversation!.id, session_id: f.session.id, attribution_tier: "S1",
        attribution_source: "google_ads", click_id: f.gclid, click_id_type: "gclid", created_by_user_id: f.editor, created_by_api_key_id: null,
      });
      const queued = await queueOf(client, f.site.id, action.sale_id!);
      expect(queued).toHaveLength(1);
      expect(queued[0]).toMatchObject({
        kind: "conversion", status: "pending", order_id: `call:${action.id}`, value: "1500.50", currency: "TRY",
        click_id: f.gclid, click_id_type: "gclid", conversion_at: f.call.started_at,
      });
      expect(await uploadJob(client, f.site.id)).toMatchObject({ payload: { site_id: f.site.id, provider: "google" } });
      expect(await revenueCounts(client, f.site.id)).toEqual({ sales: 1, identifiers: 0, queue: 1, jobs: 1, conversations: 1, callActions: 1 });
    });
  });

  test("without a value the sale is worth 0 in the site's currency; a given currency is upper-cased", async () => {
    await withRootDb(async (client) => {
      const f = await makeFixture(client);
      const plain = await as(client, { userId: f.editor }, () => seal(client, f.site.id, f.call.id));
      expect(plain).toMatchObject({ value: null, currency: "TRY" });
      expect(await saleOf(client, plain.sale_id!)).toMatchObject({ amount: "0", currency: "TRY" });
      const second = await recordCall(client, f.site.id);
      const euros = await as(client, { userId: f.editor }, () => seal(client, f.site.id, second.id, "99.90", "eur"));
      expect(euros).toMatchObject({ value: "99.90", currency: "EUR" });
      expect(await saleOf(client, euros.sale_id!)).toMatchObject({ amount: "99.90", currency: "EUR", attribution_tier: null, click_id: null });
      expect((await queueOf(client, f.site.id, euros.sale_id!))[0]).toMatchObject({ value: "99.90", currency: "EUR", click_id: null });
    });
  });

  test.each([
    ["a currency that is not ISO 4217", "10", "XYZ"],
    ["a negative value", "-5", null],
    ["more decimals than the currency has", "10.5", "JPY"],
  ])("%s is invalid_sale (OMSAL) and writes nothing, not even the conversation", async (_what, value, currency) => {
    await withRootDb(async (client) => {
      const f = await makeFixture(client);
      const before = await revenueSnapshot(client, f.site.id);
      const state = await as(client, { userId: f.editor }, () => sqlState(client, () => seal(client, f.site.id, f.call.id, value, currency)));
      expect(state).toBe("OMSAL");
      expect(await revenueSnapshot(client, f.site.id)).toEqual(before);
      expect(await revenueCounts(client, f.site.id)).toEqual({ sales: 0, identifiers: 0, queue: 0, jobs: 0, conversations: 0, callActions: 0 });
    });
  });

  test("a sealed call refuses another seal and a junk (call_already_decided, OMCAD), and nothing changes", async () => {
    await withRootDb(async (client) => {
      const f = await makeFixture(client);
      await as(client, { userId: f.editor }, () => seal(client, f.site.id, f.call.id, "100"));
      const before = await revenueSnapshot(client, f.site.id);
      await as(client, { userId: f.admin }, async () => {
        expect(await sqlState(client, () => seal(client, f.site.id, f.call.id, "200"))).toBe("OMCAD");
        expect(await sqlState(client, () => junk(client, f.site.id, f.call.id))).toBe("OMCAD");
      });
      expect(await revenueSnapshot(client, f.site.id)).toEqual(before);
    });
  });

  test("an unknown call, or another site's call named under this site, is unknown_call (OMUCL) for seal, junk and undo", async () => {
    await withRootDb(async (client) => {
      const f = await makeFixture(client);
      await as(client, { userId: f.editor }, async () => {
        for (const callId of [randomUUID(), f.otherCall.id]) {
          expect(await sqlState(client, () => seal(client, f.site.id, callId, "1"))).toBe("OMUCL");
          expect(await sqlState(client, () => junk(client, f.site.id, callId))).toBe("OMUCL");
          expect(await sqlState(client, () => undo(client, f.site.id, callId))).toBe("OMUCL");
        }
      });
      for (const site of [f.site, f.otherSite]) {
        expect(await revenueCounts(client, site.id)).toEqual({ sales: 0, identifiers: 0, queue: 0, jobs: 0, conversations: 0, callActions: 0 });
      }
    });
  });
});

/* ------------------------------------------------------------------ junk and undo */

describe("junk and undo", () => {
  test("junk: the conversation is junk, no sale, nothing queued; seal and junk are then refused", async () => {
    await withRootDb(async (client) => {
      const f = await makeFixture(client);
      const action = await as(client, { userId: f.editor }, () => junk(client, f.site.id, f.call.id));
      expect(action).toMatchObject({ action: "junk", value: null, currency: null, sale_id: null, undoes_id: null, actor_user_id: f.editor });
      expect(await conversationOf(client, f.site.id, f.call.id)).toMatchObject({ channel: "call", status: "junk", session_id: f.session.id });
      expect(await revenueCounts(client, f.site.id)).toEqual({ sales: 0, identifiers: 0, queue: 0, jobs: 0, conversations: 1, callActions: 1 });
      await as(client, { userId: f.editor }, async () => {
        expect(await sqlState(client, () => seal(client, f.site.id, f.call.id, "5"))).toBe("OMCAD");
        expect(await sqlState(client, () => junk(client, f.site.id, f.call.id))).toBe("OMCAD");
      });
      expect(await revenueCounts(client, f.site.id)).toMatchObject({ sales: 0, conversations: 1, callActions: 1 });
    });
  });

  test("undo of a seal: the sale is cancelled, its pending conversion cancelled, the conversation open; undo again is OMNUN", async () => {
    await withRootDb(async (client) => {
      const f = await makeFixture(client);
      const sealed = await as(client, { userId: f.editor }, () => seal(client, f.site.id, f.call.id, "700"));
      const undone = await as(client, { userId: f.admin }, () => undo(client, f.site.id, f.call.id));
      expect(undone).toMatchObject({ action: "undo", undoes_id: sealed.id, sale_id: null, value: null, actor_user_id: f.admin });
      expect(await saleOf(client, sealed.sale_id!)).toMatchObject({ status: "cancelled", amount: "700" });
      expect(await queueOf(client, f.site.id, sealed.sale_id!)).toEqual([
        expect.objectContaining({ kind: "conversion", status: "cancelled", last_error_code: "SALE_UNDONE" }),
      ]);
      expect(await conversationOf(client, f.site.id, f.call.id)).toMatchObject({ status: "open" });
      expect((await actionsOf(client, f.site.id, f.call.id)).map((a) => a.action)).toEqual(["seal", "undo"]);

      const before = await revenueSnapshot(client, f.site.id);
      expect(await as(client, { userId: f.editor }, () => sqlState(client, () => undo(client, f.site.id, f.call.id)))).toBe("OMNUN");
      expect(await revenueSnapshot(client, f.site.id)).toEqual(before);
    });
  });

  test("undo on a call nobody decided is nothing_to_undo (OMNUN) and writes nothing", async () => {
    await withRootDb(async (client) => {
      const f = await makeFixture(client);
      expect(await as(client, { userId: f.editor }, () => sqlState(client, () => undo(client, f.site.id, f.call.id)))).toBe("OMNUN");
      expect(await revenueCounts(client, f.site.id)).toEqual({ sales: 0, identifiers: 0, queue: 0, jobs: 0, conversations: 0, callActions: 0 });
    });
  });

  test("after an undo, sealing again is a new sale with its own external id and conversion; the undone one stays cancelled", async () => {
    await withRootDb(async (client) => {
      const f = await makeFixture(client);
      const first = await as(client, { userId: f.editor }, () => seal(client, f.site.id, f.call.id, "100"));
      await as(client, { userId: f.editor }, () => undo(client, f.site.id, f.call.id));
      const second = await as(client, { userId: f.editor }, () => seal(client, f.site.id, f.call.id, "250"));
      expect(second.sale_id).not.toBe(first.sale_id);
      expect(await saleOf(client, second.sale_id!)).toMatchObject({ external_id: `call:${second.id}`, amount: "250", status: "confirmed", click_id: f.gclid });
      expect(await saleOf(client, first.sale_id!)).toMatchObject({ external_id: `call:${first.id}`, status: "cancelled" });
      expect(await queueOf(client, f.site.id, second.sale_id!)).toEqual([expect.objectContaining({ status: "pending", order_id: `call:${second.id}` })]);
      expect(await queueOf(client, f.site.id, first.sale_id!)).toEqual([expect.objectContaining({ status: "cancelled" })]);
      // One conversation per call, qualified again.
      expect(await revenueCounts(client, f.site.id)).toMatchObject({ conversations: 1, sales: 2, queue: 2, callActions: 3 });
      expect(await conversationOf(client, f.site.id, f.call.id)).toMatchObject({ status: "qualified" });
      // And the new seal can itself be undone.
      const undone = await as(client, { userId: f.editor }, () => undo(client, f.site.id, f.call.id));
      expect(undone.undoes_id).toBe(second.id);
    });
  });

  test("undo of a junk reopens the conversation, and the call can then be sealed", async () => {
    await withRootDb(async (client) => {
      const f = await makeFixture(client);
      const junked = await as(client, { userId: f.editor }, () => junk(client, f.site.id, f.call.id));
      const undone = await as(client, { userId: f.editor }, () => undo(client, f.site.id, f.call.id));
      expect(undone.undoes_id).toBe(junked.id);
      expect(await conversationOf(client, f.site.id, f.call.id)).toMatchObject({ status: "open" });
      const sealed = await as(client, { userId: f.editor }, () => seal(client, f.site.id, f.call.id, "80"));
      expect(await conversationOf(client, f.site.id, f.call.id)).toMatchObject({ status: "qualified" });
      expect(await saleOf(client, sealed.sale_id!)).toMatchObject({ amount: "80", status: "confirmed" });
    });
  });

  test("undo after delivery leaves the accepted conversion and queues its retraction with an upload job", async () => {
    await withRootDb(async (client) => {
      const f = await makeFixture(client);
      const sealed = await as(client, { userId: f.editor }, () => seal(client, f.site.id, f.call.id, "300"));
      await client.query("update app_public.offline_conversion_queue set status = 'accepted', accepted_at = now() where sale_id = $1", [sealed.sale_id]);
      await client.query("select graphile_worker.remove_job('upload_conversions:google:' || $1)", [f.site.id]);
      await as(client, { userId: f.editor }, () => undo(client, f.site.id, f.call.id));
      expect(await saleOf(client, sealed.sale_id!)).toMatchObject({ status: "cancelled" });
      const rows = await queueOf(client, f.site.id, sealed.sale_id!);
      expect(rows.map((r) => [r.kind, r.status, r.order_id])).toEqual([
        ["conversion", "accepted", `call:${sealed.id}`], ["retraction", "pending", `call:${sealed.id}`],
      ]);
      expect(await uploadJob(client, f.site.id)).toBeDefined();
    });
  });
});

/* ------------------------------------------------------------------ who may act */

describe("who may act", () => {
  type Who = [string, (f: Fixture) => Identity];
  const refused: Who[] = [
    ["a viewer", (f) => ({ userId: f.viewer })],
    ["a signed-in stranger", (f) => ({ userId: f.stranger })],
    ["another tenant's editor", (f) => ({ userId: f.otherEditor })],
    ["a viewer API key", (f) => ({ apiKeyId: f.viewerKey.id })],
    ["another tenant's editor API key", (f) => ({ apiKeyId: f.otherEditorKey.id })],
    ["a revoked editor API key", (f) => ({ apiKeyId: f.revokedEditorKey.id })],
    ["nobody (no identity)", () => ({})],
  ];

  test.each(refused)("%s gets OM403 for seal, junk and undo, and nothing is written", async (_who, identity) => {
    await withRootDb(async (client) => {
      const f = await makeFixture(client);
      const undecided = await recordCall(client, f.site.id);
      // A standing seal to undo, made by the owner's own session.
      await seal(client, f.site.id, f.call.id, "10");
      const before = await revenueSnapshot(client, f.site.id);
      const seqBefore = await lastSeq(client, f.site.id);
      await as(client, identity(f), async () => {
        expect(await sqlState(client, () => seal(client, f.site.id, undecided.id, "10"))).toBe("OM403");
        expect(await sqlState(client, () => junk(client, f.site.id, undecided.id))).toBe("OM403");
        expect(await sqlState(client, () => undo(client, f.site.id, f.call.id))).toBe("OM403");
        // The refusal comes before the call is looked up: it does not tell whether a call exists.
        expect(await sqlState(client, () => seal(client, f.site.id, randomUUID(), "10"))).toBe("OM403");
      });
      expect(await revenueSnapshot(client, f.site.id)).toEqual(before);
      expect(await lastSeq(client, f.site.id)).toBe(seqBefore);
    });
  });

  type Allowed = [string, (f: Fixture) => Identity, (f: Fixture) => { actor_user_id: string | null; actor_api_key_id: string | null }];
  const allowed: Allowed[] = [
    ["an editor", (f) => ({ userId: f.editor }), (f) => ({ actor_user_id: f.editor, actor_api_key_id: null })],
    ["an admin", (f) => ({ userId: f.admin }), (f) => ({ actor_user_id: f.admin, actor_api_key_id: null })],
    ["the owner", (f) => ({ userId: f.owner }), (f) => ({ actor_user_id: f.owner, actor_api_key_id: null })],
    ["an editor API key", (f) => ({ apiKeyId: f.editorKey.id }), (f) => ({ actor_user_id: null, actor_api_key_id: f.editorKey.id })],
    ["an admin API key", (f) => ({ apiKeyId: f.adminKey.id }), (f) => ({ actor_user_id: null, actor_api_key_id: f.adminKey.id })],
  ];

  test.each(allowed)("%s may seal, undo and junk, and is recorded as the actor of each", async (_who, identity, actor) => {
    await withRootDb(async (client) => {
      const f = await makeFixture(client);
      const sealed = await as(client, identity(f), () => seal(client, f.site.id, f.call.id, "42"));
      const undone = await as(client, identity(f), () => undo(client, f.site.id, f.call.id));
      const junked = await as(client, identity(f), () => junk(client, f.site.id, f.call.id));
      expect([sealed.action, undone.action, junked.action]).toEqual(["seal", "undo", "junk"]);
      for (const action of await actionsOf(client, f.site.id, f.call.id)) expect(action).toMatchObject(actor(f));
      const sale = await saleOf(client, sealed.sale_id!);
      expect({ user: sale.created_by_user_id, key: sale.created_by_api_key_id }).toEqual({ user: actor(f).actor_user_id, key: actor(f).actor_api_key_id });
    });
  });

  test("two people sealing the same call at once take turns: one sale, the other is told the call is decided", async () => {
    const pool = getRootPool();
    const owner = await newUser(pool);
    const site = await createTrackedSite(pool, owner);
    const call = await recordCall(pool, site.id);
    const [first, second] = [await pool.connect(), await pool.connect()];
    try {
      await first.query("begin");
      await second.query("begin");
      await seal(first, site.id, call.id, "10");
      // The second waits for the first's lock on the call…
      const waiting = sqlState(second, () => seal(second, site.id, call.id, "20"));
      await new Promise((resolve) => setTimeout(resolve, 200));
      await first.query("commit");
      // …and then sees its decision.
      expect(await waiting).toBe("OMCAD");
      await second.query("commit");
      expect(await revenueCounts(pool, site.id)).toMatchObject({ sales: 1, queue: 1, callActions: 1, conversations: 1 });
    } finally {
      for (const c of [first, second]) {
        await c.query("rollback").catch(() => {});
        c.release();
      }
      await pool.query("select graphile_worker.remove_job('upload_conversions:google:' || $1)", [site.id]);
      await pool.query("delete from app_public.sites where id = $1", [site.id]);
    }
  });
});

/* ------------------------------------------------------------------ audit */

describe("audit", () => {
  test("seal, undo and junk are each audited (call_actions, sales, conversations) with the actor, and no row holds the caller's number, visitor id or gclid", async () => {
    await withRootDb(async (client) => {
      const f = await makeFixture(client);
      const start = await lastSeq(client, f.site.id);

      const sealed = await as(client, { userId: f.editor }, () => seal(client, f.site.id, f.call.id, "1200"));
      const afterSeal = await auditSince(client, f.site.id, start);
      const conversation = await conversationOf(client, f.site.id, f.call.id);
      expect(afterSeal.map((r) => [r.action, r.target_table, r.target_id]).sort()).toEqual([
        ["insert", "call_actions", sealed.id], ["insert", "conversations", conversation!.id], ["insert", "sales", sealed.sale_id],
      ].sort());
      for (const row of afterSeal) expect(row).toMatchObject({ actor_user_id: f.editor, actor_api_key_id: null });
      expect(afterSeal.find((r) => r.target_table === "call_actions")!.new_values).toMatchObject({ action: "seal", value: 1200, sale_id: sealed.sale_id });
      const saleAudit = afterSeal.find((r) => r.target_table === "sales")!.new_values;
      expect(saleAudit).toMatchObject({ id: sealed.sale_id, amount: 1200, status: "confirmed" });
      // A CRM's external id may be an email or phone number: the audit log keeps the sale's id instead.
      expect(saleAudit).not.toHaveProperty("external_id");

      const midSeq = await lastSeq(client, f.site.id);
      const undone = await as(client, { apiKeyId: f.editorKey.id }, () => undo(client, f.site.id, f.call.id));
      const afterUndo = await auditSince(client, f.site.id, midSeq);
      expect(afterUndo.map((r) => [r.action, r.target_table, r.target_id]).sort()).toEqual([
        ["insert", "call_actions", undone.id], ["update", "conversations", conversation!.id], ["update", "sales", sealed.sale_id],
      ].sort());
      for (const row of afterUndo) expect(row).toMatchObject({ actor_user_id: null, actor_api_key_id: f.editorKey.id });
      const saleUpdate = afterUndo.find((r) => r.target_table === "sales")!;
      expect([saleUpdate.old_values.status, saleUpdate.new_values.status]).toEqual(["confirmed", "cancelled"]);
      const conversationUpdate = afterUndo.find((r) => r.target_table === "conversations")!;
      expect([conversationUpdate.old_values.status, conversationUpdate.new_values.status]).toEqual(["qualified", "open"]);

      const lateSeq = await lastSeq(client, f.site.id);
      const junked = await as(client, { userId: f.admin }, () => junk(client, f.site.id, f.call.id));
      const afterJunk = await auditSince(client, f.site.id, lateSeq);
      expect(afterJunk.map((r) => [r.action, r.target_table, r.target_id]).sort()).toEqual([
        ["insert", "call_actions", junked.id], ["update", "conversations", conversation!.id],
      ].sort());

      const everything = JSON.stringify(await auditSince(client, f.site.id, start));
      for (const secret of [CALLER, CALLER.slice(1), f.visitor, f.gclid]) expect({ secret, found: everything.includes(secret) }).toEqual({ secret, found: false });
      const { rows: [verification] } = await client.query("select * from app_public.verify_audit_chain($1)", [f.site.id]);
      expect(verification).toMatchObject({ ok: true, problem: null });
    });
  });

  test("call_actions is append-only: an update is refused even for the superuser", async () => {
    await withRootDb(async (client) => {
      const f = await makeFixture(client);
      const sealed = await seal(client, f.site.id, f.call.id, "5");
      expect(await sqlState(client, () => client.query("update app_public.call_actions set value = 6 where id = $1", [sealed.id]))).toBe("OMIMM");
    });
  });
});

/* ------------------------------------------------------------------ GraphQL */

describe("through GraphQL", () => {
  let service: TestService;
  let f: Fixture;
  let editorToken: string;
  const INTERNALS = /app_(private|public|hidden)|sql|select|\bat .+:\d+|detail/i;
  const SQLSTATE = /\bOM[A-Z0-9]{3}\b/;

  beforeAll(async () => {
    const client = await getRootPool().connect();
    try {
      f = await makeFixture(client);
    } finally {
      client.release();
    }
    service = await startTestService();
    editorToken = await tokenFor(f.editor);
  });

  afterAll(async () => {
    await service?.stop();
    const pool = getRootPool();
    for (const site of [f.site, f.otherSite]) {
      await pool.query("select graphile_worker.remove_job('upload_conversions:google:' || $1)", [site.id]);
      await pool.query("delete from app_public.sites where id = $1", [site.id]);
    }
  });

  async function fieldsOf(typeName: string): Promise<string[]> {
    const { body } = await service.graphql(`query($n: String!) { __type(name: $n) { fields { name } inputFields { name } } }`, { n: typeName }, editorToken);
    expect(body.errors).toBeUndefined();
    const type = body.data.__type;
    return (type?.fields ?? type?.inputFields ?? []).map((x: { name: string }) => x.name);
  }

  test("the mutations exist with their documented arguments", async () => {
    const mutations = await fieldsOf("Mutation");
    expect(mutations).toEqual(expect.arrayContaining(["sealCall", "junkCall", "undoCallAction", "confirmSaleAndEnqueue", "updateOfflineConversionQueueAttribution"]));
    expect((await fieldsOf("SealCallInput")).sort()).toEqual(["callId", "clientMutationId", "currency", "siteId", "value"]);
    expect((await fieldsOf("JunkCallInput")).sort()).toEqual(["callId", "clientMutationId", "siteId"]);
    expect((await fieldsOf("UndoCallActionInput")).sort()).toEqual(["callId", "clientMutationId", "siteId"]);
    expect((await fieldsOf("ConfirmSaleAndEnqueueInput")).sort()).toEqual([
      "amount", "callId", "clientMutationId", "consent", "currency", "email", "externalId", "gclid", "occurredAt", "phone", "sessionId", "siteId", "visitorId",
    ]);
  });

  test("the call_actions table leaves the rest of the schema whole: sites and members are still queryable and writable", async () => {
    // call_actions refers to itself (an undo points at what it undid) under a unique key; the
    // relation names this produces must not collide and knock other types out of the schema.
    const query = await fieldsOf("Query");
    expect(query).toEqual(expect.arrayContaining([
      "allSites", "allSiteMembers", "allCallActions", "allSales", "allConversations", "allOfflineConversionQueues", "allCalls",
    ]));
    const mutations = await fieldsOf("Mutation");
    expect(mutations).toEqual(expect.arrayContaining(["createSite", "updateSiteSettings", "addSiteMember", "removeSiteMember", "deleteSite"]));
    const { body } = await service.graphql("{ allSites { nodes { rowId } } }", undefined, editorToken);
    expect(body).toEqual({ data: { allSites: { nodes: [{ rowId: f.site.id }] } } });
  });

  const SEAL = `mutation($s: UUID!, $c: UUID!, $v: BigFloat, $cur: String) {
    sealCall(input: {siteId: $s, callId: $c, value: $v, currency: $cur}) { result { rowId action value currency saleId actorUserId } } }`;
  const JUNK = `mutation($s: UUID!, $c: UUID!) { junkCall(input: {siteId: $s, callId: $c}) { result { rowId action actorApiKeyId } } }`;
  const UNDO = `mutation($s: UUID!, $c: UUID!) { undoCallAction(input: {siteId: $s, callId: $c}) { result { rowId action undoesId } } }`;

  function expectCode(body: any, field: string, code: string): void {
    expect(body.data?.[field] ?? null).toBeNull();
    expect(body.errors).toHaveLength(1);
    expect(body.errors[0].extensions).toEqual({ code });
    expect(JSON.stringify(body)).not.toMatch(INTERNALS);
    expect(JSON.stringify(body)).not.toMatch(SQLSTATE);
  }

  test("seal, seal again, undo, undo again: the rows, then call_already_decided and nothing_to_undo", async () => {
    const call = await recordCall(getRootPool(), f.site.id);
    const sealed = await service.graphql(SEAL, { s: f.site.id, c: call.id, v: "450.00", cur: "usd" }, editorToken);
    expect(sealed.body.errors).toBeUndefined();
    const action = sealed.body.data.sealCall.result;
    expect(action).toMatchObject({ action: "seal", value: "450.00", currency: "USD", actorUserId: f.editor, saleId: expect.any(String) });

    const again = await service.graphql(SEAL, { s: f.site.id, c: call.id, v: "1" }, editorToken);
    expectCode(again.body, "sealCall", "call_already_decided");

    const undone = await service.graphql(UNDO, { s: f.site.id, c: call.id }, editorToken);
    expect(undone.body).toEqual({ data: { undoCallAction: { result: { rowId: expect.any(String), action: "undo", undoesId: action.rowId } } } });
    const { rows: [sale] } = await getRootPool().query("select status from app_public.sales where id = $1", [action.saleId]);
    expect(sale.status).toBe("cancelled");

    const nothing = await service.graphql(UNDO, { s: f.site.id, c: call.id }, editorToken);
    expectCode(nothing.body, "undoCallAction", "nothing_to_undo");
    expect((await getRootPool().query("select count(*)::int as n from app_public.call_actions where call_id = $1", [call.id])).rows[0].n).toBe(2);
  });

  test("an editor API key junks; a viewer is forbidden; an unknown call is unknown_call; a bad currency is invalid_sale", async () => {
    const call = await recordCall(getRootPool(), f.site.id);
    const junked = await service.graphql(JUNK, { s: f.site.id, c: call.id }, f.editorKey.key);
    expect(junked.body).toEqual({ data: { junkCall: { result: { rowId: expect.any(String), action: "junk", actorApiKeyId: f.editorKey.id } } } });

    const fresh = await recordCall(getRootPool(), f.site.id);
    const before = await revenueCounts(getRootPool(), f.site.id);
    expectCode((await service.graphql(SEAL, { s: f.site.id, c: fresh.id, v: "5" }, await tokenFor(f.viewer))).body, "sealCall", "forbidden");
    expectCode((await service.graphql(SEAL, { s: f.site.id, c: fresh.id, v: "5" }, f.viewerKey.key)).body, "sealCall", "forbidden");
    expectCode((await service.graphql(SEAL, { s: f.site.id, c: fresh.id, v: "5" }, await tokenFor(f.otherEditor))).body, "sealCall", "forbidden");
    expectCode((await service.graphql(SEAL, { s: f.site.id, c: randomUUID(), v: "5" }, editorToken)).body, "sealCall", "unknown_call");
    const invalid = await service.graphql(SEAL, { s: f.site.id, c: fresh.id, v: "5", cur: "XYZ" }, editorToken);
    expectCode(invalid.body, "sealCall", "invalid_sale");
    expect(invalid.body.errors[0].message).toMatch(/currency/);
    expect(await revenueCounts(getRootPool(), f.site.id)).toEqual(before);
  });

  test("updateOfflineConversionQueueAttribution: an editor gets the count, a viewer is forbidden", async () => {
    const REFRESH = "mutation($s: UUID!) { updateOfflineConversionQueueAttribution(input: {siteId: $s}) { result } }";
    expect((await service.graphql(REFRESH, { s: f.site.id }, editorToken)).body).toEqual({ data: { updateOfflineConversionQueueAttribution: { result: 0 } } });
    expectCode((await service.graphql(REFRESH, { s: f.site.id }, f.viewerKey.key)).body, "updateOfflineConversionQueueAttribution", "forbidden");
  });

  test("confirmSaleAndEnqueue: the sale, then sale_exists for its external_id, unknown_session for another site's session", async () => {
    const CONFIRM = `mutation($s: UUID!, $e: String!, $a: BigFloat!, $c: String!, $t: Datetime!, $session: UUID, $g: String) {
      confirmSaleAndEnqueue(input: {siteId: $s, externalId: $e, amount: $a, currency: $c, occurredAt: $t, sessionId: $session, gclid: $g}) {
        result { rowId externalId amount currency attributionTier clickId createdByUserId } } }`;
    const externalId = unique("GQL");
    const at = new Date(Date.now() - HOUR).toISOString();
    const created = await service.graphql(CONFIRM, { s: f.site.id, e: externalId, a: "75.25", c: "TRY", t: at, session: f.session.id }, editorToken);
    expect(created.body.errors).toBeUndefined();
    expect(created.body.data.confirmSaleAndEnqueue.result).toEqual({
      rowId: expect.any(String), externalId, amount: "75.25", currency: "TRY", attributionTier: "S1", clickId: f.gclid, createdByUserId: f.editor,
    });
    const before = await revenueSnapshot(getRootPool(), f.site.id);
    expectCode((await service.graphql(CONFIRM, { s: f.site.id, e: externalId, a: "1", c: "TRY", t: at }, editorToken)).body,
      "confirmSaleAndEnqueue", "sale_exists");
    const { rows: [theirs] } = await getRootPool().query(
      "select id from app_public.sessions where site_id = $1 limit 1", [f.site.id]);
    expect(theirs.id).toBe(f.session.id);
    // A session of this site named under the other tenant's site is unknown there.
    const otherToken = await tokenFor(f.otherEditor);
    expectCode((await service.graphql(CONFIRM, { s: f.otherSite.id, e: unique("GQL"), a: "1", c: "EUR", t: at, session: f.session.id }, otherToken)).body,
      "confirmSaleAndEnqueue", "unknown_session");
    expectCode((await service.graphql(CONFIRM, { s: f.site.id, e: unique("GQL"), a: "1", c: "TRY", t: at }, await tokenFor(f.viewer))).body,
      "confirmSaleAndEnqueue", "forbidden");
    expect(await revenueSnapshot(getRootPool(), f.site.id)).toEqual(before);
    expect(await revenueCounts(getRootPool(), f.otherSite.id)).toMatchObject({ sales: 0, queue: 0, jobs: 0 });
  });
});
